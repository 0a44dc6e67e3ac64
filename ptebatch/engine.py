"""Public JIT-backed entry points: ``folio_pte_batch``, ``scan`` and ``unmap``.

Argument checking and the layout of work (segments, chunks, output buffers)
are plain NumPy here; every per-PTE loop is in :mod:`ptebatch._kernels`.
"""

from __future__ import annotations

import numpy as np

from ._jit import walks as K
from . import reasons as R
from ._jit.options import num_threads, threads
from .arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, Arch, get_arch
from .results import BatchResult, ScanResult, UnmapResult
from .space import FOLIO_ANON, FOLIO_SWAPBACKED, AddressSpace
from .callers import (RMAP, UNMAP_ALL_OR_NOTHING, UNMAP_CLAMPED, UNMAP_SINGLE, WALK, Preset,
                      resolve_caller)
from .releases import KernelProfile, normaliser, resolve_flags, resolve_kernel

__all__ = ["folio_pte_batch", "scan", "unmap", "make_cfg", "check_walk_args"]

CLAMPS = ("pmd", "folio")
OOBS = ("none", "adjacent")
_UNMAP_MODE = {UNMAP_SINGLE: K.UNMAP_SINGLE, UNMAP_ALL_OR_NOTHING: K.UNMAP_ALL_OR_NOTHING,
               UNMAP_CLAMPED: K.UNMAP_CLAMPED}


def _mkdirty_masks(arch: Arch) -> tuple[int, int, int]:
    """``pte_mkdirty`` as (bits set, condition, bits cleared if the condition holds)."""
    set_, cond, clear = 0, 0, 0
    for cs, cc, s, c in arch.ops["mkdirty"]:
        if not (cs or cc) and not c:
            set_ |= s
        elif cs and not cc and not s and not cond:
            cond, clear = cs, c
        else:
            raise NotImplementedError(f"{arch.name}: pte_mkdirty has a step the kernels cannot express")
    return set_, cond, clear


def make_cfg(arch: Arch, profile: KernelProfile, flags: int, spread=(), uffd_wp: bool = True) -> tuple:
    """The kernels' configuration for one (architecture, generation, flags).

    ``spread`` names the properties a write-back caller stamps from the first
    PTE (the ``spread`` detector); ``uffd_wp`` turns the uffd-wp detector on.
    A tuple of ``np.uint64``, not an array: Numba passes it by value, so LLVM
    knows no output store can change it and keeps it in registers (an array
    here made the serial scan about 7x slower).
    """
    gen = profile.generation
    norm = normaliser(arch, gen, flags)
    cfg = np.zeros(K.N_CFG, dtype=np.uint64)
    cfg[K.C_COND_SET] = norm.cond_set
    cfg[K.C_COND_CLEAR] = norm.cond_clear
    cfg[K.C_COND_OR] = norm.cond_or
    cfg[K.C_KEEP] = norm.keep
    cfg[K.C_SET] = norm.set
    cfg[K.C_PRESENT] = arch.present
    cfg[K.C_PFN_MASK] = arch.pfn_mask
    cfg[K.C_CUT] = int(gen.cut_at_folio_end)
    cfg[K.C_PFN_CHECK] = int(gen.pfn_check_in_loop)
    cfg[K.C_WRITE] = arch.write
    cfg[K.C_YOUNG] = arch.young
    cfg[K.C_DIRTY] = arch.dirty_any
    cfg[K.C_DIRTY_HW_SET] = arch.dirty_hw[0]
    cfg[K.C_DIRTY_HW_CLEAR] = arch.dirty_hw[1]
    cfg[K.C_CONT] = arch.cont
    cfg[K.C_SPECIAL] = arch.special
    cfg[K.C_MKDIRTY_SET], cfg[K.C_MKDIRTY_IF], cfg[K.C_MKDIRTY_CLEAR] = _mkdirty_masks(arch)
    prop_bits = {"write": arch.write, "soft_dirty": arch.soft_dirty}
    cfg[K.C_SPREAD] = sum(prop_bits.get(p, 0) for p in set(spread))
    cfg[K.C_SPREAD_DIRTY] = int("dirty" in spread)
    cfg[K.C_UFFD_WP] = arch.uffd_wp if uffd_wp else 0
    return tuple(np.uint64(v) for v in cfg)


def _as_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    return int(value)


def check_batch_args(ptes, index, max_nr, folio_pfn, folio_nr, arch: Arch, max_nr_limit: int):
    """Validate a single-batch call; returns (index, max_nr, folio_pfn, folio_nr, pte)."""
    if not isinstance(ptes, np.ndarray):
        raise TypeError(f"ptes: expected a numpy.ndarray of uint64, got {type(ptes).__name__}")
    if ptes.dtype != np.uint64:
        raise TypeError(f"ptes: dtype must be uint64, got {ptes.dtype}")
    if ptes.ndim != 1:
        raise ValueError(f"ptes: must be one-dimensional (one table, or space.ptes.reshape(-1) with "
                         f"index = table * 512 + entry), got shape {ptes.shape}")
    if not ptes.flags.c_contiguous:
        raise ValueError("ptes: must be C-contiguous (use np.ascontiguousarray)")
    index = _as_int("index", index)
    max_nr = _as_int("max_nr", max_nr)
    folio_pfn = _as_int("folio_pfn", folio_pfn)
    folio_nr = _as_int("folio_nr", folio_nr)
    if not 0 <= index < ptes.shape[0]:
        raise ValueError(f"index: {index} is outside the array of {ptes.shape[0]} entries")
    if max_nr < 1:
        raise ValueError(f"max_nr: must be at least 1, got {max_nr}")
    if max_nr > max_nr_limit:
        raise ValueError(f"max_nr: {max_nr} does not fit the kernel's max_nr type (at most {max_nr_limit})")
    if folio_nr < 2 or folio_nr & (folio_nr - 1):
        raise ValueError(f"folio_nr: must be a power of two >= 2 (folio_pte_batch is only called "
                         f"for large folios), got {folio_nr}")
    if folio_pfn < 0 or folio_pfn % folio_nr or folio_pfn + folio_nr - 1 > arch.max_pfn:
        raise ValueError(f"folio_pfn: must be aligned to folio_nr and fit the PFN field, "
                         f"got {folio_pfn:#x} with {folio_nr} pages")
    pte = int(ptes[index])
    if not pte & arch.present:
        raise ValueError(f"ptes[{index}]: the first PTE must be present, got {pte:#x}")
    pfn = (pte & arch.pfn_mask) >> PAGE_SHIFT
    if not folio_pfn <= pfn < folio_pfn + folio_nr:
        raise ValueError(f"ptes[{index}]: the first PTE maps PFN {pfn:#x}, outside the folio "
                         f"[{folio_pfn:#x}, {folio_pfn + folio_nr:#x})")
    return index, max_nr, folio_pfn, folio_nr, pte


def batch_outputs(arch: Arch, profile: KernelProfile, flags: int, pte: int,
                  any_writable: bool, any_young: bool, any_dirty: bool) -> dict:
    """The generation's extra outputs from the accumulated bits."""
    gen = profile.generation
    if gen.outputs == "any":
        return dict(any_writable=bool(any_writable), any_young=bool(any_young),
                    any_dirty=bool(any_dirty))
    merged, v = pte, profile.version
    if flags & gen.flags["FPB_MERGE_WRITE"] and any_writable:
        merged = arch.apply("mkwrite", merged, v)
    if flags & gen.flags["FPB_MERGE_YOUNG_DIRTY"]:
        if any_young:
            merged = arch.apply("mkyoung", merged, v)
        if any_dirty:
            merged = arch.apply("mkdirty", merged, v)
    return dict(pte=merged)


def folio_pte_batch(ptes, index, max_nr, folio_pfn, folio_nr, *, flags=0, kernel="6.16",
                    arch="x86_64") -> BatchResult:
    """Count the PTEs from ``ptes[index]`` that map consecutive pages of one folio.

    Parameters
    ----------
    ptes : numpy.ndarray of uint64, 1-D, C-contiguous
        Entries to scan: one table, or ``space.ptes.reshape(-1)`` with a flat
        index.  Nothing outside this array is ever read.
    index : int
        Entry holding the first PTE, which must be present and map a page of
        the folio.
    max_nr : int
        The caller's limit, at least 1.  A limit that crosses the array's end
        is reported (``crosses_end``), and entries past the end read as none.
    folio_pfn, folio_nr : int
        The large folio: first PFN and size (a power of two, at least 2).
        On arm64 the first PTE is read as ``ptep_get`` does: a contpte entry
        with the young and dirty bits of its 16-entry block.
    flags : int, str or sequence of str
        ``FPB_*`` flags in the vocabulary of the kernel's generation
        (``FPB_IGNORE_*`` up to 6.16, ``FPB_RESPECT_*``/``FPB_MERGE_*`` from 6.17).
    kernel : str
        Release (``"6.14"``, ``"6.16"``, ``"6.18"``) or generation (``"gen1b"``).
    arch : str
        PTE encoding.

    Returns
    -------
    BatchResult
    """
    arch = get_arch(arch)
    profile = resolve_kernel(kernel)
    fl = resolve_flags(flags, profile.generation, 0)
    index, max_nr, folio_pfn, folio_nr, pte = check_batch_args(
        ptes, index, max_nr, folio_pfn, folio_nr, arch, profile.generation.max_nr_limit)
    cfg = make_cfg(arch, profile, fl)
    nr, stop, last, w, y, d, pte = K.folio_pte_batch_one(ptes, np.int64(index), np.int64(max_nr),
                                                         np.uint64(folio_pfn), np.uint64(folio_nr),
                                                         cfg)
    nr, stop, last, pte = int(nr), int(stop), int(last), int(pte)
    pfn = (pte & arch.pfn_mask) >> PAGE_SHIFT
    reason = R.FOLIO_END if pfn + nr == folio_pfn + folio_nr else stop
    return BatchResult(nr=nr, reason=R.NAMES[reason], last_read=last,
                       crosses_end=index + max_nr > ptes.shape[0],
                       read_past_end=last >= ptes.shape[0],
                       **batch_outputs(arch, profile, fl, pte, w, y, d))


# -- walks -------------------------------------------------------------------

def check_walk_args(space, walk, caller, kernel, flags, clamp, oob, move_by=0):
    """Shared argument checks of scan/unmap (JIT and naive).

    Returns ``(preset, flags, clamp, move_by)``: explicit ``flags`` replace the
    preset's; ``clamp=None`` is ``"pmd"``, as every page-table walker cuts.
    """
    if not isinstance(space, AddressSpace):
        raise TypeError(f"space: expected an AddressSpace, got {type(space).__name__}")
    preset = resolve_caller(caller, kernel, walk=walk)
    fl = resolve_flags(flags, preset.profile.generation, preset.flags)
    clamp = "pmd" if clamp is None else clamp
    if clamp not in CLAMPS:
        raise ValueError(f"clamp: must be one of {', '.join(CLAMPS)}, got {clamp!r}")
    if oob not in OOBS:
        raise ValueError(f"oob: must be one of {', '.join(OOBS)}, got {oob!r}")
    move_by = _as_int("move_by", move_by)
    if move_by % PAGE_SIZE:
        raise ValueError(f"move_by: must be a multiple of 4096 (a page), got {move_by}")
    if move_by and not preset.caller.takes_move_by:
        raise ValueError(f"move_by: only a caller that moves entries to a destination (mremap) "
                         f"takes it, not {preset.name}")
    return preset, fl, clamp, move_by


def _derived(space: AddressSpace, name: str, build):
    """Cache an index derived from a space's arrays on the space (it is a value)."""
    cache = space.__dict__.setdefault("_derived", {})
    if name not in cache:
        cache[name] = build(space)
    return cache[name]


def segments(space: AddressSpace, move_by: int = 0):
    """Split every VMA at table boundaries: the ranges a page-table walk visits.

    Returns int64/uint64 arrays ``g0, g1`` (flat entry range), ``va`` (address
    of g0), ``vma``, ``vma_end`` and ``reason`` (what ``pmd_addr_end`` cut at
    ``g1``: ``vma_end`` when the VMA ends inside or at the end of the table).
    VMA parts with no table have nothing mapped and give no segment.  With
    ``move_by`` (mremap), a segment is also cut where its destination
    ``va + move_by`` crosses a 2 MiB boundary (reason ``dst_pmd_end``).
    """
    g0, g1, lo, vma, vma_end, reason = _segments(space)
    shift = move_by % PMD_SIZE
    if not shift:
        return g0, g1, lo, vma, vma_end, reason
    # the one destination boundary inside each segment, if any
    cut_va = lo + ((np.uint64(PMD_SIZE) - ((lo + np.uint64(shift)) & np.uint64(PMD_SIZE - 1)))
                   & np.uint64(PMD_SIZE - 1))
    cut_g = g0 + ((cut_va - lo) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    cut = (cut_g > g0) & (cut_g < g1)
    n = g0.size + int(np.count_nonzero(cut))
    first = np.arange(g0.size) + np.cumsum(cut) - cut      # row of each segment's first piece
    out = [np.empty(n, dtype=a.dtype) for a in (g0, g1, lo, vma, vma_end, reason)]
    for o, a in zip(out, (g0, g1, lo, vma, vma_end, reason)):
        o[first] = a
    c = np.flatnonzero(cut)
    second = first[c] + 1
    out[1][first[c]] = cut_g[c]
    out[5][first[c]] = R.DST_PMD_END
    out[0][second], out[1][second], out[2][second] = cut_g[c], g1[c], cut_va[c]
    out[3][second], out[4][second], out[5][second] = vma[c], vma_end[c], reason[c]
    return tuple(out)


def _segments(space: AddressSpace):
    tva = space.table_va
    vs, ve = space.vma_start, space.vma_end
    pmd = np.uint64(PMD_SIZE)
    t_first = np.searchsorted(tva, vs & ~np.uint64(PMD_SIZE - 1), side="left")
    t_last = np.searchsorted(tva, ve, side="left")
    count = np.maximum(t_last - t_first, 0)
    vma = np.repeat(np.arange(vs.size, dtype=np.int64), count)
    # table index: t_first[v] + position within the VMA's run of tables
    starts = np.cumsum(count) - count
    t = np.repeat(t_first, count) + (np.arange(vma.size) - np.repeat(starts, count))
    t = t.astype(np.int64)
    tv = tva[t]
    lo = np.maximum(vs[vma], tv)
    hi = np.minimum(ve[vma], tv + pmd)
    keep = lo < hi
    t, tv, lo, hi, vma = t[keep], tv[keep], lo[keep], hi[keep], vma[keep]
    base = t * PTRS_PER_PTE
    g0 = base + ((lo - tv) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    g1 = base + ((hi - tv) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    vma_end = ve[vma]
    reason = np.where(vma_end <= tv + pmd, R.VMA_END, R.PMD_END).astype(np.int64)
    return g0, g1, lo, vma, vma_end, reason


def _chunk_bounds(weights: np.ndarray, n_chunks: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Split items into about n_chunks contiguous ranges of similar weight.

    ``allowed[i]`` says whether a chunk may start at item i.  Returns the start
    of each chunk plus the end (length n_chunks' + 1).
    """
    n = weights.size
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    csum = np.cumsum(weights, dtype=np.float64)
    targets = csum[-1] * np.arange(1, n_chunks) / n_chunks
    cuts = np.searchsorted(csum, targets, side="right")
    if allowed is not None:
        ok = np.flatnonzero(allowed)
        cuts = ok[np.minimum(np.searchsorted(ok, cuts), ok.size - 1)]
    cuts = np.unique(np.concatenate(([0], cuts[(cuts > 0) & (cuts < n)], [n])))
    return cuts.astype(np.int64)


# Below this much work (entries, or mapped pages for unmap) threads cost more than they save.
PARALLEL_MIN_WORK = 1 << 16


def _use_threads(parallel: bool, work: int) -> bool:
    return parallel and work >= PARALLEL_MIN_WORK and num_threads() > 1


def _n_chunks(parallel: bool, n_items: int) -> int:
    if not parallel:
        return 1
    return max(1, min(n_items, 8 * num_threads()))


def _drive(run_round, bounds: np.ndarray, starts: np.ndarray, ends: np.ndarray, dtypes) -> list:
    """Run chunks to completion in rounds, growing output buffers as needed.

    ``run_round(ch_pos, ch_end, ch_o, ch_o_end, bufs, active)`` advances every
    chunk in ``active`` from ``ch_pos`` and writes rows into ``bufs``.  A chunk
    stops before an item whose worst case (``bounds``) would not fit, so the
    buffers are sized by rows written, not by PTEs.  Returns the output arrays
    in chunk order.
    """
    n_ch = starts.size
    pos = starts.copy()
    cum = np.concatenate(([0], np.cumsum(bounds, dtype=np.int64)))
    pieces: list[list] = [[] for _ in range(n_ch)]
    done_rows = np.zeros(n_ch, dtype=np.int64)
    ratio = np.full(n_ch, 1.0 / 8.0)  # first guess: 8 PTEs per row
    while True:
        active = np.flatnonzero(pos < ends)
        if active.size == 0:
            break
        remaining = cum[ends[active]] - cum[pos[active]]
        biggest = np.array([bounds[p:e].max() for p, e in zip(pos[active], ends[active])])
        caps = np.maximum((remaining * ratio[active] * 1.25).astype(np.int64) + 1024, biggest)
        caps = np.minimum(caps, remaining)
        offs = np.concatenate(([0], np.cumsum(caps)))
        bufs = [np.empty(int(offs[-1]), dtype=dt) for dt in dtypes]
        ch_pos = pos[active].copy()
        ch_o = offs[:-1].astype(np.int64).copy()
        ch_o_end = offs[1:].astype(np.int64)
        run_round(ch_pos, ends[active].copy(), ch_o, ch_o_end, bufs, active)
        for j, k in enumerate(active):
            lo, hi = int(offs[j]), int(ch_o[j])
            pieces[k].append([b[lo:hi] for b in bufs])
            covered = cum[ch_pos[j]] - cum[pos[k]]
            done_rows[k] += hi - lo
            if covered > 0:
                ratio[k] = max(done_rows[k] / max(cum[ch_pos[j]] - cum[starts[k]], 1), 1.0 / 512)
            pos[k] = ch_pos[j]
    flat_pieces = [p for chunk in pieces for p in chunk]
    if not flat_pieces:
        return [np.empty(0, dtype=dt) for dt in dtypes]
    return [np.concatenate([p[i] for p in flat_pieces]) for i in range(len(dtypes))]


def _folio_arrays(space: AddressSpace):
    """Folio arrays plus a bucket index over PFNs for the kernels' lookups.

    Buckets are at least 512 PFNs and there are at most about 2 per folio, so
    the index costs O(F) memory and a lookup searches one bucket.
    """
    fpfn, fnr = space.folio_pfn, space.folio_nr
    if fpfn.size == 0:
        return fpfn, fnr, np.zeros(1, dtype=np.int64), np.uint64(0), np.uint64(0)
    base = int(fpfn[0])
    span = int(fpfn[-1]) - base + 1
    shift = max(9, (span // max(2 * fpfn.size, 1)).bit_length())
    nb = (span >> shift) + 1
    edges = np.uint64(base) + (np.arange(nb + 1, dtype=np.uint64) << np.uint64(shift))
    fidx = np.searchsorted(fpfn, edges, side="left").astype(np.int64)
    return fpfn, fnr, fidx, np.uint64(base), np.uint64(shift)


# An order table costs one byte per bucket; past this many bytes per listed folio
# (very sparse PFNs) the kernels search the folio arrays instead.
ORDER_TABLE_BYTES_PER_FOLIO = 64
ORDER_TABLE_MIN_BYTES = 1 << 20   # always allowed, however few the folios


def _order_table(space: AddressSpace):
    """Direct PFN -> large-folio-order table for zap's lookups, or an empty one.

    Buckets are as small as the smallest large folio, so each bucket lies in
    at most one folio; -1 marks buckets with no large folio.
    """
    fpfn, fnr = space.folio_pfn, space.folio_nr
    large = fnr > 1
    empty = (np.zeros(0, dtype=np.int8), np.uint64(0), np.uint64(0))
    if not large.any():
        return empty
    lp, ln = fpfn[large], fnr[large]
    shift = int(ln.min()).bit_length() - 1
    base = int(lp[0]) >> shift
    nb = ((int(lp[-1]) + int(ln[-1])) >> shift) - base
    if nb > max(ORDER_TABLE_BYTES_PER_FOLIO * int(lp.size), ORDER_TABLE_MIN_BYTES):
        return empty
    table = np.full(nb, -1, dtype=np.int8)
    per = (ln >> np.uint64(shift)).astype(np.int64)          # buckets per folio
    first = ((lp >> np.uint64(shift)) - np.uint64(base)).astype(np.int64)
    rep = np.repeat(first - (np.cumsum(per) - per), per) + np.arange(int(per.sum()))
    order = np.array([int(n).bit_length() - 1 for n in np.unique(ln)], dtype=np.int8)
    table[rep] = np.repeat(order[np.searchsorted(np.unique(ln), ln)], per)
    return table, np.uint64(base << shift), np.uint64(shift)


def _walk_mode(preset: Preset) -> int:
    if not preset.rule.batches:
        return K.WALK_NONE
    return K.WALK_HINT if preset.rule.need_hint else K.WALK_BATCH


def scan(space: AddressSpace, *, caller="zap", kernel="6.16", flags=None, clamp=None, oob="none",
         move_by: int = 0, detectors: bool = True, parallel: bool = True) -> ScanResult:
    """Walk every VMA as a page-table walker does and record each batch.

    Parameters
    ----------
    space : AddressSpace
    caller : str
        The walker (see :data:`ptebatch.callers.CALLERS` or ``ptebatch
        callers``): ``"zap"`` (munmap), ``"fork-private"``, ``"mprotect"``,
        ``"mremap"``, ``"madvise-free"``, ``"mlock"``...  It sets the flags,
        whether and when it batches, and the detectors that apply.
    kernel : str
        Release (``"6.14"``, ``"6.16"``, ``"6.18"``) or generation (``"gen2"``).
    flags : None, int, str or sequence of str
        ``None``: the flags the caller passes in that release.
    clamp : {None, "pmd", "folio"}
        ``None``/``"pmd"``: ``max_nr = (pmd_addr_end(addr, vma_end) - addr) >> 12``
        as every page-table walker does.  ``"folio"``: ``max_nr`` is the folio's
        size, as a caller that forgot to clamp (the 6.15 lazyfree bug).
    move_by : int
        mremap only: destination minus source address (bytes, page-aligned,
        may be negative); ``max_nr`` is also cut at the destination's next
        2 MiB boundary.  With a multiple of 2 MiB, a VMA's whole tables move
        by their PMD entries and give no batches (``tables_moved``).
    detectors : bool
        Run the ``spread`` and ``uffd_wp`` detectors, which re-read the
        entries of a batch where they apply (a caller that stamps bits, or an
        arch with contpte).  False skips that pass; the overrun and
        ``past_folio`` bits cost nothing and are always set.
    oob : {"none", "adjacent"}
        What a read past entry 511 returns: none (0), or the same entry of the
        next row of ``ptes`` (0 past the last row), as if the next page-table
        page followed in memory.  Such reads are counted either way.
    parallel : bool
        Walk independent chunks of tables on all Numba threads (spaces under
        65,536 entries are walked on one).  The result is identical to the
        serial walk.

    Returns
    -------
    ScanResult
        One row per batch, with its detector bits (``findings``).
    """
    preset, fl, clamp, move_by = check_walk_args(space, WALK, caller, kernel, flags, clamp, oob,
                                                 move_by)
    profile = preset.profile
    arch = get_arch(space.arch)
    cfg = make_cfg(arch, profile, fl, preset.rule.spread if detectors else (), detectors)
    walk = _walk_mode(preset)
    flat = space.ptes.reshape(-1)
    shift = move_by % PMD_SIZE if preset.rule.dst_clamp else 0
    g0, g1, va, vma, vma_end, seg_reason = _derived(space, ("segments", shift),
                                                    lambda sp: segments(sp, shift))
    if preset.caller.moves_tables and move_by % PMD_SIZE == 0:
        # mremap moves a whole table by its PMD when source and destination are aligned
        seg_move = (g1 - g0 == PTRS_PER_PTE) & (g0 % PTRS_PER_PTE == 0)
    else:
        seg_move = np.zeros(g0.size, dtype=np.bool_)
    weights = g1 - g0
    parallel = _use_threads(parallel, int(weights.sum()))
    clamp_folio = clamp == "folio"
    allowed = None
    if clamp_folio:
        # a batch may run into the next segment of its VMA: chunk at VMA starts only
        allowed = np.concatenate(([True], vma[1:] != vma[:-1]))
    bounds_ = _chunk_bounds(weights.astype(np.float64), _n_chunks(parallel, weights.size), allowed)
    starts, ends = bounds_[:-1], bounds_[1:]
    carry_va = np.zeros(starts.size, dtype=np.uint64)
    carry_vma = np.full(starts.size, -1, dtype=np.int64)
    present = np.zeros(starts.size, dtype=np.int64)
    moved = np.zeros(starts.size, dtype=np.int64)
    fpfn, fnr, fidx, fbase, fshift = _derived(space, "folio_index", _folio_arrays)
    forder, obase, oshift = _derived(space, "order_table", _order_table)

    def run_round(ch_pos, ch_end, ch_o, ch_o_end, bufs, active):
        cva, cvm = carry_va[active], carry_vma[active]
        pres, mov = np.zeros(active.size, dtype=np.int64), np.zeros(active.size, dtype=np.int64)
        with threads(parallel):
            K.zap_chunks(flat, g0, g1, va, vma, vma_end, seg_reason, seg_move, ch_pos, ch_end, cva,
                         cvm, ch_o, ch_o_end, pres, mov, fpfn, fnr, fidx, fbase, fshift, forder,
                         obase, oshift, cfg, walk, clamp_folio, oob == "adjacent", *bufs)
        carry_va[active], carry_vma[active] = cva, cvm
        present[active] += pres
        moved[active] += mov

    out_va, out_nr, out_reason, out_over = _drive(
        run_round, weights, starts, ends, (np.uint64, np.uint32, np.uint8, np.uint8))
    return ScanResult(caller=preset.name, kernel=profile.name, generation=profile.generation.name,
                      flags=profile.generation.describe_flags(fl), oob=oob, va=out_va, nr=out_nr,
                      reason=out_reason, findings=out_over, clamp=clamp,
                      present_ptes=int(present.sum()), tables_moved=int(moved.sum()))


def unmap(space: AddressSpace, *, caller="lazyfree", kernel="6.16", flags=None, oob="none",
          detectors: bool = True, parallel: bool = True) -> UnmapResult:
    """Model reclaim's try_to_unmap_one for every mapped large folio.

    Folios are taken in PFN order; each is unmapped from every VMA that maps
    it, in address order.  Lazyfree folios (anon, not swapbacked) batch by the
    release's rule: none before 6.15; 6.15.0-6.15.6 only from the folio's
    first page with ``max_nr`` = folio size and no table clamp, all or
    nothing; 6.15.7+/6.16+ clamped at ``pmd_addr_end(addr, vma_end)``, partial
    batches allowed; from 7.0 file folios too.  A batch covering the whole
    folio ends that VMA's walk.  Other folios are unmapped one PTE at a time.

    Parameters
    ----------
    space : AddressSpace
    caller : str
        The reverse-map caller: ``"lazyfree"`` (the only one that batches).
    kernel : str
        Release, e.g. ``"6.15"`` (buggy), ``"6.15.7"`` or ``"6.16"`` (fixed).
    flags : None, int, str or sequence of str
        ``None``: the flags the caller passes in that release.
    oob : {"none", "adjacent"}
        What a read past entry 511 returns, as in :func:`scan`.
    detectors : bool
        As in :func:`scan`.
    parallel : bool
        Process independent chunks of folios on all Numba threads.

    Returns
    -------
    UnmapResult

    Notes
    -----
    Every folio is evaluated against the snapshot as given: entries cleared by
    an earlier folio's unmap are not cleared here, which changes no batch (an
    entry of another folio never matches) but can name a stop ``pfn_gap``
    where the kernel would then see ``not_present``.
    """
    preset, fl, _, _ = check_walk_args(space, RMAP, caller, kernel, flags, None, oob)
    profile = preset.profile
    arch = get_arch(space.arch)
    cfg = make_cfg(arch, profile, fl, preset.rule.spread if detectors else (), detectors)
    flat = space.ptes.reshape(-1)
    g0, g1, va, vma, vma_end, _ = _derived(space, ("segments", 0), segments)
    fpfn, fnr, fidx, fbase, fshift = _derived(space, "folio_index", _folio_arrays)

    # 1. runs of entries mapping one large folio, per segment (two passes)
    counts = np.zeros(g0.size, dtype=np.int64)
    dummy_i = np.zeros(0, dtype=np.int64)
    with threads(parallel):
        K.folio_runs(flat, g0, g1, fpfn, fnr, fidx, fbase, fshift, cfg, counts, counts,
                     dummy_i, dummy_i, dummy_i, dummy_i, False)
    offsets = np.concatenate(([0], np.cumsum(counts)))[:-1].astype(np.int64)
    n_runs = int(counts.sum())
    run_g = np.empty(n_runs, dtype=np.int64)
    run_len = np.empty(n_runs, dtype=np.int64)
    run_f = np.empty(n_runs, dtype=np.int64)
    run_seg = np.empty(n_runs, dtype=np.int64)
    with threads(parallel):
        K.folio_runs(flat, g0, g1, fpfn, fnr, fidx, fbase, fshift, cfg, counts, offsets,
                     run_g, run_len, run_f, run_seg, True)

    # 2. group runs by folio, keeping address order inside each folio
    order = np.argsort(run_f, kind="stable")
    run_g, run_len, run_f, run_seg = run_g[order], run_len[order], run_f[order], run_seg[order]
    item_f, item_r0 = np.unique(run_f, return_index=True)
    item_r0 = item_r0.astype(np.int64)
    item_r1 = np.concatenate((item_r0[1:], [n_runs])).astype(np.int64)
    item_bound = np.add.reduceat(run_len, item_r0) if n_runs else np.zeros(0, dtype=np.int64)
    item_f = item_f.astype(np.int64)

    parallel = _use_threads(parallel, int(item_bound.sum()))
    bounds_ = _chunk_bounds(item_bound.astype(np.float64), _n_chunks(parallel, item_f.size))
    starts, ends = bounds_[:-1], bounds_[1:]
    mode = _UNMAP_MODE[preset.rule.unmap if preset.rule.batches else UNMAP_SINGLE]

    def run_round(ch_pos, ch_end, ch_o, ch_o_end, bufs, active):
        with threads(parallel):
            K.unmap_chunks(flat, g0, va, vma, vma_end, run_g, run_len, run_seg, item_f, item_r0,
                           item_r1, item_bound, ch_pos, ch_end, ch_o, ch_o_end, fpfn, fnr,
                           space.folio_flags, space.vma_flags, cfg, mode, preset.rule.file_folios,
                           preset.rule.skip_uffd_wp_vmas, oob == "adjacent",
                           *bufs)

    out_pfn, out_va, out_nr, out_reason, out_over = _drive(
        run_round, item_bound, starts, ends, (np.uint64, np.uint64, np.uint32, np.uint8, np.uint8))
    lazy = (space.folio_flags[item_f] & np.uint8(FOLIO_ANON | FOLIO_SWAPBACKED)) == FOLIO_ANON
    return UnmapResult(caller=preset.name, kernel=profile.name, generation=profile.generation.name,
                       flags=profile.generation.describe_flags(fl), oob=oob, va=out_va, nr=out_nr,
                       reason=out_reason, findings=out_over, folio_pfn=out_pfn,
                       folios=int(item_f.size), lazyfree_folios=int(np.count_nonzero(lazy)))
