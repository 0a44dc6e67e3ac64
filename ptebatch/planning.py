"""How the compiled walks' work is laid out: segments, chunks, indexes, output buffers.

Plain NumPy around the compiled walks of :mod:`ptebatch._jit`:

* :func:`segments` -- every VMA cut where ``pmd_addr_end`` cuts it (table
  boundaries), the ranges a page-table walk visits;
* :func:`folio_index` and :func:`order_table` -- the PFN lookups the walks use;
* :func:`chunk_bounds` and :func:`drive` -- independent chunks for threads,
  and output buffers sized by rows written, not by PTEs.
"""

from __future__ import annotations

import numpy as np

from . import reasons as R
from ._jit import num_threads
from .arch import PAGE_SHIFT, PMD_SIZE, PTRS_PER_PTE
from .space import AddressSpace


def derived(space: AddressSpace, name: str, build):
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
    g0, g1, lo, vma, vma_end, reason = table_segments(space)
    shift = move_by % PMD_SIZE
    if not shift:
        return g0, g1, lo, vma, vma_end, reason
    # the one destination boundary inside each segment, if any
    cut_va = lo + (
        (np.uint64(PMD_SIZE) - ((lo + np.uint64(shift)) & np.uint64(PMD_SIZE - 1)))
        & np.uint64(PMD_SIZE - 1)
    )
    cut_g = g0 + ((cut_va - lo) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    cut = (cut_g > g0) & (cut_g < g1)
    n = g0.size + int(np.count_nonzero(cut))
    first = np.arange(g0.size) + np.cumsum(cut) - cut  # row of each segment's first piece
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


def table_segments(space: AddressSpace):
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
    # Offsets from the table's start, never end addresses: the last table's end, 2**64,
    # wraps to 0 in uint64.  Every table here starts below its VMA's end (searchsorted).
    ve_off = ve[vma] - tv
    hi_off = np.minimum(ve_off, pmd)
    lo_off = lo - tv
    keep = lo_off < hi_off
    t, tv, lo, lo_off, hi_off, vma, ve_off = (
        a[keep] for a in (t, tv, lo, lo_off, hi_off, vma, ve_off)
    )
    base = t * PTRS_PER_PTE
    g0 = base + (lo_off >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    g1 = base + (hi_off >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    vma_end = ve[vma]
    reason = np.where(ve_off <= pmd, R.VMA_END, R.PMD_END).astype(np.int64)
    return g0, g1, lo, vma, vma_end, reason


def chunk_bounds(
    weights: np.ndarray, n_chunks: int, allowed: np.ndarray | None = None
) -> np.ndarray:
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


def unmap_components(run_g, run_len, run_reach, by_folio, item_r0) -> np.ndarray:
    """Which folios of the unmap must be walked together, in PFN order: a label per item.

    An unmap clears the entries it takes, so two folios whose walks can touch
    a common entry depend on their order.  A run's window is every entry a
    walk from it can read or clear: the run itself up to ``run_reach`` (the
    longest batch from any of its entries), widened to whole 16-entry blocks
    (the contpte gather reads the whole block; 16 entries are 2 whole bytes of
    the cleared bitmap, so two components never write the same byte).  Runs
    are in flat order, so runs whose windows overlap form contiguous groups (an
    interval graph); a folio with runs in several groups joins them.  The
    label of an item (a walked folio, ascending: ``by_folio`` orders the runs by
    folio, and ``item_r0`` is where each folio's runs start in that order) is
    the smallest group of its component.  Components are independent: each can run
    on its own thread, in PFN order inside, and the result is the walk of all
    folios in PFN order.
    """
    n = run_g.size
    if n == 0:
        return np.zeros(item_r0.size, dtype=np.int64)
    block = np.int64(15)
    lo = run_g & ~block
    hi = (np.maximum(run_g + run_len, run_reach) + block) & ~block
    reach = np.maximum.accumulate(hi)
    del hi
    new_group = np.empty(n, dtype=np.bool_)
    new_group[0] = True
    np.greater_equal(lo[1:], reach[:-1], out=new_group[1:])
    del lo, reach
    group = np.cumsum(new_group) - 1  # per run, flat order
    g_first = np.flatnonzero(new_group)
    del new_group
    f_first = item_r0
    label = np.arange(g_first.size, dtype=np.int64)  # per group
    while True:
        # a folio takes the smallest label of its groups, a group the smallest of its folios
        f_label = np.minimum.reduceat(label[group][by_folio], f_first)
        r_label = np.empty(n, dtype=np.int64)
        r_label[by_folio] = np.repeat(f_label, np.diff(np.append(f_first, n)))
        new = np.minimum.reduceat(r_label, g_first)
        del r_label
        new = new[new]  # pointer jumping: labels are group ids no larger than the group
        if np.array_equal(new, label):
            return f_label
        label = new


# Below this much work (entries, or mapped pages for unmap) threads cost more than they save.
PARALLEL_MIN_WORK = 1 << 16


def use_threads(parallel: bool, work: int) -> bool:
    return parallel and work >= PARALLEL_MIN_WORK and num_threads() > 1


def n_chunks(parallel: bool, n_items: int) -> int:
    if not parallel:
        return 1
    return max(1, min(n_items, 8 * num_threads()))


def drive(
    run_round, bounds: np.ndarray, starts: np.ndarray, ends: np.ndarray, dtypes, report=None
) -> list:
    """Run chunks to completion in rounds, growing output buffers as needed.

    ``run_round(ch_pos, ch_end, ch_o, ch_o_end, bufs, active)`` advances every
    chunk in ``active`` from ``ch_pos`` and writes rows into ``bufs``.  A chunk
    stops before an item whose worst case (``bounds``) would not fit, so the
    buffers are sized by rows written, not by PTEs.  Returns the output arrays
    in chunk order.  ``report(done, total)``, if given, hears the work done
    after each round.
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
        if report is not None:
            report(int(np.sum(cum[pos] - cum[starts])), int(cum[-1]))
    flat_pieces = [p for chunk in pieces for p in chunk]
    if not flat_pieces:
        return [np.empty(0, dtype=dt) for dt in dtypes]
    return [np.concatenate([p[i] for p in flat_pieces]) for i in range(len(dtypes))]


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: Numba types read-only arrays apart, so walks always get them, and a
    memory-mapped snapshot (read-only) uses the same compiled code as one in memory."""
    v = a.view()
    v.flags.writeable = False
    return v


def run_counts_only(
    run_round,
    bounds: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    dtypes,
    report=None,
    after_group=None,
) -> list:
    """Run every chunk once to its end with no row buffer (counts mode): returns empty rows.

    With ``report(done, total)`` or ``after_group(first_chunk, end_chunk)`` the
    chunks run in groups (two per thread), and each hears about every group.
    """
    bufs = [np.empty(0, dtype=dt) for dt in dtypes]
    cum = np.concatenate(([0], np.cumsum(bounds, dtype=np.int64)))
    grouped = report is not None or after_group is not None
    group = max(1, 2 * num_threads() if grouped else starts.size)
    for lo in range(0, starts.size, group):
        active = np.arange(lo, min(lo + group, starts.size))
        no_rows = np.zeros(active.size, dtype=np.int64)
        unbounded = np.full(active.size, np.iinfo(np.int64).max // 2, dtype=np.int64)
        run_round(starts[active].copy(), ends[active].copy(), no_rows, unbounded, bufs, active)
        if after_group is not None:
            after_group(int(active[0]), int(active[-1]) + 1)
        if report is not None:
            report(int(cum[ends[active[-1]]]), int(cum[-1]))
    return bufs


class PageReleaser:
    """Drop the pages of tables already walked from a memory-mapped snapshot's mapping.

    A counts-mode scan reads each table once, in address order.  After each
    group of chunks it tells the kernel (``MADV_DONTNEED``) that this process
    no longer needs those pages: they stay in the page cache, a later read maps
    them again, and the process holds only the tables in flight, so a space
    larger than memory can be scanned.  Does nothing for arrays in memory.
    """

    def __init__(self, ptes: np.ndarray):
        import mmap

        mm = ptes.base
        self.active = isinstance(mm, mmap.mmap) and hasattr(mm, "madvise")
        if self.active:
            self.mm = mm
            self.page = mmap.PAGESIZE
            start = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
            self.offset = ptes.ctypes.data - start  # of entry 0 in the mapping

    def release(self, g_lo: int, g_hi: int) -> None:
        """Release the whole pages inside entries ``[g_lo, g_hi)``."""
        if not self.active or g_hi <= g_lo:
            return
        lo = -(-(self.offset + 8 * g_lo) // self.page) * self.page
        hi = (self.offset + 8 * g_hi) // self.page * self.page
        if hi > lo:
            import mmap

            self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def hist_bins(space: AddressSpace) -> int:
    """Length bins of a walk's histogram: no batch is longer than a table or a folio."""
    longest = int(space.folio_nr.max()) if space.folio_nr.size else 1
    return max(PTRS_PER_PTE, longest) + 1


def folio_index(space: AddressSpace):
    """Folio arrays plus a bucket index over PFNs for the compiled walks' lookups.

    Buckets are at least 512 PFNs and there are at most about 2 per folio, so
    the index costs O(F) memory and a lookup searches one bucket.
    """
    fpfn, fnr = readonly(space.folio_pfn), readonly(space.folio_nr)
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
ORDER_TABLE_MIN_BYTES = 1 << 20  # always allowed, however few the folios
ORDER_TABLE_FOLIOS_PER_STEP = 1 << 16


def order_table(space: AddressSpace):
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
    sizes = np.unique(ln)
    order = np.array([int(n).bit_length() - 1 for n in sizes], dtype=np.int8)
    # a few folios at a time: the bucket indexes of all folios at once would be
    # 16 bytes per bucket, several times the table itself
    for lo in range(0, lp.size, ORDER_TABLE_FOLIOS_PER_STEP):
        p_, n_ = (
            lp[lo : lo + ORDER_TABLE_FOLIOS_PER_STEP],
            ln[lo : lo + ORDER_TABLE_FOLIOS_PER_STEP],
        )
        per = (n_ >> np.uint64(shift)).astype(np.int64)  # buckets per folio
        first = ((p_ >> np.uint64(shift)) - np.uint64(base)).astype(np.int64)
        rep = np.repeat(first - (np.cumsum(per) - per), per) + np.arange(int(per.sum()))
        table[rep] = np.repeat(order[np.searchsorted(sizes, n_)], per)
    return table, np.uint64(base << shift), np.uint64(shift)
