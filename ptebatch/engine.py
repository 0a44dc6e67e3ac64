"""The public JIT-backed entry points: ``folio_pte_batch``, ``scan`` and ``unmap``.

Arguments are checked in :mod:`ptebatch.checks`, the work is laid out in
:mod:`ptebatch.planning`, and every per-PTE loop runs in :mod:`ptebatch._jit`.
"""

from __future__ import annotations

import numpy as np

from . import reasons as R
from ._jit import compiled
from ._jit.config import RowFilter, make_config
from .arch import PAGE_SHIFT, PMD_SIZE, PTRS_PER_PTE, Arch, get_arch
from .callers import Walk
from .checks import RowSpec, check_batch_args, check_bool, check_rows, check_walk_args
from .planning import (
    PageReleaser,
    chunk_bounds,
    derived,
    drive,
    folio_index,
    hist_bins,
    n_chunks,
    order_table,
    readonly,
    run_counts_only,
    segments,
    unmap_components,
    use_threads,
)
from .progress import as_hook
from .releases import KernelProfile, resolve_flags, resolve_kernel
from .results import N_DETECTORS, BatchResult, ScanResult, UnmapResult
from .shards import open_sharded, run_walk
from .space import FOLIO_ANON, FOLIO_SWAPBACKED, AddressSpace

# Loaded on first use, so that importing ptebatch does not import Numba.
FPB = compiled("folio_pte_batch")
try_to_unmap = compiled("try_to_unmap")
zap_pte_range = compiled("zap_pte_range")
_options = compiled("options")


def threads(parallel: bool):
    """:func:`ptebatch._jit.options.threads`, without importing Numba before a walk."""
    return _options.threads(parallel)


__all__ = ["folio_pte_batch", "scan", "unmap"]


def batch_outputs(
    arch: Arch,
    profile: KernelProfile,
    flags: int,
    pte: int,
    any_writable: bool,
    any_young: bool,
    any_dirty: bool,
) -> dict:
    """The generation's extra outputs from the accumulated bits."""
    gen = profile.generation
    if gen.outputs == "any":
        return dict(
            any_writable=bool(any_writable), any_young=bool(any_young), any_dirty=bool(any_dirty)
        )
    merged, v = pte, profile.version
    if flags & gen.flags["FPB_MERGE_WRITE"] and any_writable:
        merged = arch.apply("mkwrite", merged, v)
    if flags & gen.flags["FPB_MERGE_YOUNG_DIRTY"]:
        if any_young:
            merged = arch.apply("mkyoung", merged, v)
        if any_dirty:
            merged = arch.apply("mkdirty", merged, v)
    return dict(pte=merged)


def folio_pte_batch(
    ptes, index, max_nr, folio_pfn, folio_nr, *, flags=0, kernel="6.16", arch="x86_64"
) -> BatchResult:
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
        Release (``"6.14"``, ``"6.16"``, ``"6.18"``) or generation (``"gen1b"``);
        the grammar is :func:`ptebatch.resolve_kernel`'s.
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
        ptes, index, max_nr, folio_pfn, folio_nr, arch, profile.generation.max_nr_limit
    )
    cfg = make_config(arch, profile, fl)
    nr, stop, last, w, y, d, pte = FPB.folio_pte_batch_one(
        readonly(ptes),
        np.int64(index),
        np.int64(max_nr),
        np.uint64(folio_pfn),
        np.uint64(folio_nr),
        cfg,
    )
    nr, stop, last, pte = int(nr), int(stop), int(last), int(pte)
    pfn = (pte & arch.pfn_mask) >> PAGE_SHIFT
    reason = R.FOLIO_END if pfn + nr == folio_pfn + folio_nr else stop
    return BatchResult(
        nr=nr,
        reason=R.NAMES[reason],
        last_read=last,
        crosses_end=index + max_nr > ptes.shape[0],
        read_past_end=last >= ptes.shape[0],
        **batch_outputs(arch, profile, fl, pte, w, y, d),
    )


# -- walks -------------------------------------------------------------------


def _sharded(space, executor):
    """The sharded space ``space`` is, or ``None``; an executor needs a sharded space."""
    sharded = open_sharded(space)
    if sharded is None and executor is not None:
        raise ValueError(
            "executor: only the shards of a sharded space run on an executor; "
            "this is one AddressSpace (ptebatch.shards.shard cuts one)"
        )
    return sharded


def scan(
    space: AddressSpace,
    *,
    caller="zap",
    kernel="6.16",
    flags=None,
    clamp=None,
    oob="none",
    move_by: int = 0,
    detectors: bool = True,
    parallel: bool = True,
    rows=True,
    progress=None,
    batching: bool = True,
    executor=None,
) -> ScanResult:
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
        may be negative, at most 2**64 - 4096 either way); ``max_nr`` is also
        cut at the destination's next 2 MiB boundary.  With a multiple of 2 MiB,
        a VMA's whole tables move by their PMD entries and give no batches
        (``tables_moved``).
    detectors : bool
        ``True`` or ``False`` only.  Run the ``spread`` and ``uffd_wp``
        detectors, which re-read the entries of a batch where they apply (a
        caller that stamps bits, or an arch with contpte).  False skips that
        pass; the overrun and ``past_folio`` bits cost nothing and are always set.
    oob : {"none", "adjacent"}
        What a read past entry 511 returns: none (0), or the same entry of the
        next row of ``ptes`` (0 past the last row), as if the next page-table
        page followed in memory.  Such reads are counted either way.
    parallel : bool
        Walk independent chunks of tables on all Numba threads (spaces under
        65,536 entries are walked on one).  The result is identical to the
        serial walk.
    rows : bool or dict
        ``True``: one row per batch.  ``False``: counts only, computed
        inside the walk with nothing written per batch (the totals, stop
        reasons, findings and ``length_hist`` are the same).  A dict keeps
        only the rows that match all its keys, counting every batch:
        ``min_nr`` (int), ``reasons`` (stop reason names), ``findings``
        (detector names: rows that tripped any), ``va`` (``(lo, hi)``).
    progress : callable, optional
        ``progress(task, done, total, note)`` as a large walk advances (see
        :mod:`ptebatch.progress`); results do not depend on it.
    batching : bool
        ``True`` or ``False`` only.  False walks as the caller does in a
        release where it does not batch (one PTE at a time), everything else
        unchanged: the baseline of :mod:`ptebatch.workloads.cost`.
    executor : callable or dask.distributed.Client, optional
        Sharded spaces only: how the shards are run (:func:`ptebatch.shards.map_shards`);
        ``None`` walks them in this process, one at a time.

    Returns
    -------
    ScanResult
        One row per batch, with its detector bits (``findings``).  For a sharded space
        (a :class:`~ptebatch.shards.ShardedSpace` or its directory), the shards' results
        merged: equal to the walk of the whole space.
    """
    sharded = _sharded(space, executor)
    if sharded is not None:
        kw = dict(
            caller=caller,
            kernel=kernel,
            flags=flags,
            clamp=clamp,
            oob=oob,
            move_by=move_by,
            detectors=detectors,
            parallel=parallel,
            rows=rows,
            batching=batching,
        )
        return run_walk("scan", sharded, kw, executor=executor, progress=progress)
    preset, fl, clamp, move_by = check_walk_args(
        space, Walk.SCAN, caller, kernel, flags, clamp, oob, move_by, batching
    )
    batching = check_bool("batching", batching)
    detectors = check_bool("detectors", detectors)
    profile = preset.profile
    arch = get_arch(space.arch)
    cfg = make_config(arch, profile, fl, preset.rule.spread if detectors else (), detectors)
    flat = readonly(space.ptes.reshape(-1))
    segs = _scan_segments(space, preset, move_by)
    g0, g1, vma = segs[0], segs[1], segs[3]
    weights = g1 - g0
    parallel = use_threads(parallel, int(weights.sum()))
    clamp_folio = clamp == "folio"
    allowed = None
    if clamp_folio:
        # a batch may run into the next segment of its VMA: chunk at VMA starts only
        allowed = np.concatenate(([True], vma[1:] != vma[:-1]))
    tally = _Tally(rows, space, progress, "scan")
    pages = PageReleaser(space.ptes)
    n_ch = tally.chunks(parallel, weights.size, int(weights.sum()), pages.active)
    bounds_ = chunk_bounds(weights.astype(np.float64), n_ch, allowed)
    starts, ends = bounds_[:-1], bounds_[1:]
    carry_va = np.zeros(starts.size, dtype=np.uint64)
    carry_vma = np.full(starts.size, -1, dtype=np.int64)
    present = np.zeros(starts.size, dtype=np.int64)
    moved = np.zeros(starts.size, dtype=np.int64)
    reads = np.zeros(starts.size, dtype=np.int64)
    lookup = derived(space, "folio_index", folio_index) + derived(space, "order_table", order_table)
    modes = (cfg, int(preset.rule.batching), clamp_folio, oob == "adjacent")

    def run_round(ch_pos, ch_end, ch_o, ch_o_end, bufs, active):
        cva, cvm = carry_va[active], carry_vma[active]
        pres, mov, rd = (np.zeros(active.size, dtype=np.int64) for _ in range(3))
        chunks = (ch_pos, ch_end, cva, cvm, ch_o, ch_o_end, pres, mov, rd)
        counts = tally.round_arrays(active.size)
        with threads(parallel):
            zap_pte_range.zap_chunks(flat, *segs, *chunks, *lookup, *modes, *counts, *bufs)
        tally.add(counts)
        carry_va[active], carry_vma[active] = cva, cvm
        present[active] += pres
        moved[active] += mov
        reads[active] += rd

    def release(c0: int, c1: int) -> None:
        # segments are in address order: the chunks' first and last entries bound the tables
        pages.release(int(g0[starts[c0]]), int(g1[ends[c1 - 1] - 1]))

    out_va, out_nr, out_reason, out_over = tally.run(
        run_round,
        weights,
        starts,
        ends,
        (np.uint64, np.uint32, np.uint8, np.uint8),
        release if pages.active else None,
    )
    return ScanResult(
        caller=preset.name,
        kernel=profile.name,
        generation=profile.generation.name,
        flags=profile.generation.describe_flags(fl),
        oob=oob,
        va=out_va if tally.spec.rows else None,
        nr=out_nr if tally.spec.rows else None,
        reason=out_reason if tally.spec.rows else None,
        findings=out_over if tally.spec.rows else None,
        **tally.result_fields(),
        clamp=clamp,
        present_ptes=int(present.sum()),
        tables_moved=int(moved.sum()),
        pte_reads=int(reads.sum()),
        batching=batching,
    )


def unmap(
    space: AddressSpace,
    *,
    caller="lazyfree",
    kernel="6.16",
    flags=None,
    oob="none",
    detectors: bool = True,
    parallel: bool = True,
    rows=True,
    progress=None,
    batching: bool = True,
    executor=None,
) -> UnmapResult:
    """Model reclaim's try_to_unmap_one for every mapped large folio.

    Folios are taken in PFN order; each is unmapped from every VMA that maps
    it, in address order, until none of its pages is mapped
    (``folio_not_mapped``).  Every batch clears the entries it takes, so later
    walks (of this folio in another VMA, and of other folios) see none there;
    the space itself is not modified (docs/model.md section 5, "What an unmap
    clears").  Lazyfree folios (anon, not swapbacked) batch by the
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
    rows : bool or dict
        ``True``: one row per batch.  ``False``: counts only, computed
        inside the walk with nothing written per batch (the totals, stop
        reasons, findings and ``length_hist`` are the same).  A dict keeps
        only the rows that match all its keys, counting every batch:
        ``min_nr`` (int), ``reasons`` (stop reason names), ``findings``
        (detector names: rows that tripped any), ``va`` (``(lo, hi)``).
    progress : callable, optional
        ``progress(task, done, total, note)`` as a large walk advances (see
        :mod:`ptebatch.progress`); results do not depend on it.
    batching : bool
        ``True`` or ``False`` only.  False unmaps as reclaim does in a release
        where it does not batch (one PTE at a time): the baseline of
        :mod:`ptebatch.workloads.cost`.
    executor : callable or dask.distributed.Client, optional
        As in :func:`scan`.

    Returns
    -------
    UnmapResult
        For a sharded space, the shards' results merged, as in :func:`scan`.

    Notes
    -----
    The walk order changes results only where a batch takes entries outside
    the VMA or table being walked: 6.15.0-6.15.6 lazyfree (no VMA clamp) on a
    folio split across two VMAs, an arm64 contpte block past ``vm_end`` under
    those releases, and the table overrun with ``oob="adjacent"``.  It also
    names the stop at an entry of a folio unmapped earlier ``not_present``.
    Threads give the same result: folios whose walks can touch a common entry
    form one unit of work, walked in PFN order, and units share no entry
    (docs/model.md section 5).
    """
    sharded = _sharded(space, executor)
    if sharded is not None:
        kw = dict(
            caller=caller,
            kernel=kernel,
            flags=flags,
            oob=oob,
            detectors=detectors,
            parallel=parallel,
            rows=rows,
            batching=batching,
        )
        return run_walk("unmap", sharded, kw, executor=executor, progress=progress)
    preset, fl, _, _ = check_walk_args(
        space, Walk.UNMAP, caller, kernel, flags, None, oob, 0, batching
    )
    batching = check_bool("batching", batching)
    detectors = check_bool("detectors", detectors)
    profile = preset.profile
    arch = get_arch(space.arch)
    cfg = make_config(arch, profile, fl, preset.rule.spread if detectors else (), detectors)
    flat = readonly(space.ptes.reshape(-1))
    g0, g1, va, vma, vma_end, _ = derived(space, ("segments", 0), segments)
    fpfn, fnr, fidx, fbase, fshift = derived(space, "folio_index", folio_index)
    orders = derived(space, "order_table", order_table)

    pages = PageReleaser(space.ptes)
    run_g, run_len, run_f, run_reach, run_seg = _folio_runs(
        flat, g0, g1, (fpfn, fnr, fidx, fbase, fshift, *orders), cfg, parallel, pages
    )
    item_f, item_r0, item_r1, item_bound, run_order = _group_by_folio(run_f, run_len)
    # clearing makes folios that touch common entries depend on their order: each
    # component of such folios is one work unit, walked in PFN order
    comp = unmap_components(run_g, run_len, run_reach, run_order, item_r0)
    del run_reach, run_f
    # one gather at a time, so at most one array is held twice
    run_g = run_g[run_order]
    run_len = run_len[run_order]
    run_seg = run_seg[run_order]
    del run_order
    # the lowest entry each folio's walk reads: tables below every unwalked folio's are done
    item_lo = np.minimum.reduceat(run_g, item_r0) if run_g.size else item_r0
    # PFN order kept inside a component
    by_comp = try_to_unmap.group_stable(comp, int(comp.max()) + 1 if comp.size else 0)
    regrouped = bool(np.any(by_comp[1:] < by_comp[:-1]))
    if regrouped:
        comp = comp[by_comp]
        item_f, item_r0, item_r1, item_bound, item_lo = (
            a[by_comp] for a in (item_f, item_r0, item_r1, item_bound, item_lo)
        )
    del by_comp
    allowed = np.concatenate(([True], comp[1:] != comp[:-1])) if comp.size else comp
    del comp
    parallel = use_threads(parallel, int(item_bound.sum()))
    tally = _Tally(rows, space, progress, "unmap")
    n_ch = tally.chunks(parallel, item_f.size, int(item_bound.sum()), pages.active)
    bounds_ = chunk_bounds(item_bound.astype(np.float64), n_ch, allowed)
    starts, ends = bounds_[:-1], bounds_[1:]
    # components go in the address order of their first entries, so the walk moves up the
    # tables: after each group of chunks, the tables below every later folio's are released
    later_lo = np.minimum.accumulate(item_lo[::-1])[::-1] if item_lo.size else item_lo
    del item_lo
    mode = int(preset.rule.unmap_mode)
    # the entries unmapped so far, one bit each (the snapshot itself is never written)
    gone = np.zeros((flat.shape[0] + 7) // 8, dtype=np.uint8)
    reads = np.zeros(starts.size, dtype=np.int64)

    def run_round(ch_pos, ch_end, ch_o, ch_o_end, bufs, active):
        counts = tally.round_arrays(active.size)
        rd = np.zeros(active.size, dtype=np.int64)
        with threads(parallel):
            try_to_unmap.unmap_chunks(
                flat,
                gone,
                g0,
                va,
                vma,
                vma_end,
                run_g,
                run_len,
                run_seg,
                item_f,
                item_r0,
                item_r1,
                item_bound,
                ch_pos,
                ch_end,
                ch_o,
                ch_o_end,
                fpfn,
                fnr,
                readonly(space.folio_flags),
                readonly(space.vma_flags),
                cfg,
                mode,
                preset.rule.file_folios,
                preset.rule.skip_uffd_wp_vmas,
                oob == "adjacent",
                rd,
                *counts,
                *bufs,
            )
        tally.add(counts)
        reads[active] += rd

    released = 0  # entries below this were released

    def release(c0: int, c1: int) -> None:
        # a later read of a released table maps it again: only memory depends on this
        nonlocal released
        hi = int(later_lo[starts[c1]]) if c1 < starts.size else flat.shape[0]
        pages.release(released, hi)
        released = max(released, hi)

    out_pfn, out_va, out_nr, out_reason, out_over = tally.run(
        run_round,
        item_bound,
        starts,
        ends,
        (np.uint64, np.uint64, np.uint32, np.uint8, np.uint8),
        release if pages.active else None,
    )
    if regrouped and tally.spec.rows:
        # rows in the walk's order: folios by PFN, each folio's rows as its walk wrote them
        o = np.argsort(out_pfn, kind="stable")
        out_pfn, out_va, out_nr, out_reason, out_over = (
            a[o] for a in (out_pfn, out_va, out_nr, out_reason, out_over)
        )
    lazy = (space.folio_flags[item_f] & np.uint8(FOLIO_ANON | FOLIO_SWAPBACKED)) == FOLIO_ANON
    return UnmapResult(
        caller=preset.name,
        kernel=profile.name,
        generation=profile.generation.name,
        flags=profile.generation.describe_flags(fl),
        oob=oob,
        va=out_va if tally.spec.rows else None,
        nr=out_nr if tally.spec.rows else None,
        reason=out_reason if tally.spec.rows else None,
        findings=out_over if tally.spec.rows else None,
        folio_pfn=out_pfn if tally.spec.rows else None,
        **tally.result_fields(),
        folios=int(item_f.size),
        lazyfree_folios=int(np.count_nonzero(lazy)),
        pte_reads=int(reads.sum()),
        batching=batching,
    )


def _folio_runs(flat, g0, g1, index, cfg, parallel, pages):
    """Runs of entries that map one large folio, per segment: count, then write (two passes).

    ``index`` is the folio index and the order table.  Each pass reads every table in
    address order; with a memory-mapped snapshot it goes a group of segments at a time
    and releases the tables behind it.
    """
    counts = np.zeros(g0.size, dtype=np.int64)
    dummy_i = np.zeros(0, dtype=np.int64)
    groups = _segment_groups(g0, g1, pages.active)
    # chunks of similar numbers of entries (segments range from 1 entry to 512)
    chunks = [
        chunk_bounds((g1[lo:hi] - g0[lo:hi]).astype(np.float64), n_chunks(parallel, hi - lo))
        for lo, hi in groups
    ]
    for (lo, hi), ch in zip(groups, chunks):
        with threads(parallel):
            try_to_unmap.folio_runs(
                flat,
                g0[lo:hi],
                g1[lo:hi],
                ch,
                *index,
                cfg,
                counts[lo:hi],
                counts,
                *[dummy_i] * 5,
                False,
            )
        if pages.active and hi > lo:  # no segment: nothing was read
            pages.release(int(g0[lo]), int(g1[hi - 1]))
    offsets = np.concatenate(([0], np.cumsum(counts)))[:-1].astype(np.int64)
    n_runs = int(counts.sum())
    runs = [np.empty(n_runs, dtype=np.int64) for _ in range(5)]  # g, len, folio, reach, segment
    for (lo, hi), ch in zip(groups, chunks):
        with threads(parallel):
            try_to_unmap.folio_runs(
                flat,
                g0[lo:hi],
                g1[lo:hi],
                ch,
                *index,
                cfg,
                counts,
                offsets[lo:hi],
                *runs,
                True,
            )
        if lo:
            # the kernel numbers segments from the group's first
            r0, r1 = offsets[lo], offsets[hi - 1] + counts[hi - 1]
            runs[4][r0:r1] += lo
        if pages.active and hi > lo:  # no segment: nothing was read
            pages.release(int(g0[lo]), int(g1[hi - 1]))
    return runs


# Entries a group of segments covers between two releases of walked tables (64 MiB of PTEs).
RELEASE_ENTRIES = 1 << 23


def _segment_groups(g0, g1, grouped: bool) -> list[tuple[int, int]]:
    """Segment ranges of about RELEASE_ENTRIES entries each (one range unless ``grouped``)."""
    if not grouped or g0.size == 0:
        return [(0, int(g0.size))]
    cuts = np.searchsorted(g0, np.arange(0, int(g1[-1]), RELEASE_ENTRIES)[1:])
    edges = np.unique(np.concatenate(([0], cuts, [g0.size])))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _group_by_folio(run_f, run_len):
    """The unmap's work items: folios in PFN order, each with its runs (address order
    kept inside each), and the order that groups the runs so."""
    n_runs = run_f.size
    order = try_to_unmap.group_stable(run_f, int(run_f.max()) + 1 if n_runs else 0)
    grouped_f = run_f[order]
    item_r0 = np.flatnonzero(np.concatenate(([True], grouped_f[1:] != grouped_f[:-1])))
    item_f = grouped_f[item_r0] if n_runs else grouped_f
    del grouped_f
    item_r0 = item_r0.astype(np.int64)
    item_r1 = np.concatenate((item_r0[1:], [n_runs])).astype(np.int64)
    item_bound = np.add.reduceat(run_len[order], item_r0) if n_runs else np.zeros(0, dtype=np.int64)
    return item_f.astype(np.int64), item_r0, item_r1, item_bound, order


def _scan_segments(space: AddressSpace, preset, move_by: int) -> tuple:
    """The segments a scan visits: ``g0, g1, va, vma, vma_end, reason, move`` (``move``:
    a whole aligned table that mremap moves by its PMD, reading no PTE)."""
    shift = move_by % PMD_SIZE if preset.rule.dst_clamp else 0
    g0, g1, va, vma, vma_end, seg_reason = derived(
        space, ("segments", shift), lambda sp: segments(sp, shift)
    )
    if preset.caller.moves_tables and move_by % PMD_SIZE == 0:
        # mremap moves a whole table by its PMD when source and destination are aligned
        seg_move = (g1 - g0 == PTRS_PER_PTE) & (g0 % PTRS_PER_PTE == 0)
    else:
        seg_move = np.zeros(g0.size, dtype=np.bool_)
    return g0, g1, va, vma, vma_end, seg_reason, seg_move


# Work (entries, or mapped pages for unmap) above which a walk reports progress.
PROGRESS_MIN_WORK = 1 << 24


class _Tally:
    """The counts every walk keeps, and whether and which rows it writes (``rows=``)."""

    def __init__(self, rows, space: AddressSpace, progress=None, task: str = "scan"):
        self.hook = as_hook(progress)
        self.reporting = progress is not None
        self.task = task
        self.spec = check_rows(rows)
        self.flt = RowFilter(*(np.uint64(int(v)) for v in self.spec))
        self.bins = hist_bins(space)
        self.hist = np.zeros((len(R.NAMES), self.bins), dtype=np.int64)
        self.found = np.zeros(N_DETECTORS, dtype=np.int64)

    def round_arrays(self, n_chunks: int) -> tuple:
        """The filter and one set of counters per chunk of a round (no sharing between threads)."""
        return (
            self.flt,
            np.zeros((n_chunks, len(R.NAMES), self.bins), dtype=np.int64),
            np.zeros((n_chunks, N_DETECTORS), dtype=np.int64),
        )

    def add(self, counts: tuple) -> None:
        self.hist += counts[1].sum(axis=0)
        self.found += counts[2].sum(axis=0)

    def chunks(self, parallel: bool, n_items: int, work: int, mapped: bool = False) -> int:
        """How many chunks to cut the work into: more when progress is reported, or when
        walked tables are released (a memory-mapped counts-mode scan)."""
        more = (self.reporting or (mapped and not self.spec.rows)) and work >= PROGRESS_MIN_WORK
        return n_chunks(parallel, n_items) * (8 if more else 1)

    def run(self, run_round, bounds, starts, ends, dtypes, after_group=None) -> list:
        """Rows mode: rounds with growing buffers; counts mode: one pass, no buffer."""
        report = None
        if self.reporting and int(np.sum(bounds)) >= PROGRESS_MIN_WORK:

            def report(done, total):
                self.hook(self.task, done, total, "entries" if self.task == "scan" else "pages")

        if self.spec.rows:
            return drive(run_round, bounds, starts, ends, dtypes, report)
        if after_group is not None and int(np.sum(bounds)) < PROGRESS_MIN_WORK:
            after_group = None  # small: one pass
        return run_counts_only(run_round, bounds, starts, ends, dtypes, report, after_group)

    def result_fields(self) -> dict:
        return dict(
            length_hist=self.hist,
            found=self.found,
            rows_filtered=self.spec != RowSpec(True),
        )
