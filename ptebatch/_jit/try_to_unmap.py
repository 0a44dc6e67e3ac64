"""``try_to_unmap_one`` (mm/rmap.c): reclaim's per-folio unmap over the VMAs that map it.

First the runs of entries that map one large folio are found per segment
(``folio_runs``, two passes: count, then write); the engine groups them by
folio; ``unmap_chunks`` then unmaps folio by folio.
"""

from __future__ import annotations

import numpy as np

from .. import reasons as R
from .config import UNMAP_ALL_OR_NOTHING, UNMAP_CLAMPED
from .folio_lookup import folio_span, order_bucket
from .folio_pte_batch import (
    batch_findings,
    batch_reason,
    folio_pte_batch,
    loop_reads,
    overrun_bits,
    read_cost,
)
from .options import jit, prange
from .pte import ONE, PAGE_SHIFT, PTRS_PER_PTE, ZERO, is_gone, pmd_addr_end, pte_pfn, ptep_get
from .simd import LANES, pte_none_run
from .tally import count_batch, keep_row


@jit()
def runs_in_segments(
    flat,
    seg_g0,
    seg_g1,
    s0,
    s1,
    folio_pfn,
    folio_nr,
    fidx,
    fbase,
    fshift,
    forder,
    obase,
    oshift,
    cfg,
    counts,
    offsets,
    out_g,
    out_len,
    out_f,
    out_reach,
    out_seg,
    write,
):
    """Maximal runs of entries that map the same large folio, in segments s0..s1-1.

    Counts each segment's runs into ``counts`` (``write`` false), or writes them from
    ``offsets[s]`` (``write`` true).  One call per chunk of segments, not per segment:
    every call taking arrays updates their reference counts atomically, and two
    threads doing that on the same arrays made this pass no faster on 2 threads.

    The PFN range of the last folio (or gap between folios) is remembered, so
    entries of one folio cost no search, and the order table answers "no large
    folio here" without one.  ``out_reach`` is the end of what a batch from any
    entry of the run can read or clear: an entry mapping page p of a folio ending
    at PFN e gives ``g + (e - p)`` (max_nr is cut at the folio's end from 6.15 on,
    the first release whose reclaim batches).
    """
    pmask = cfg.present
    n_order = forder.shape[0]
    for s in range(s0, s1):
        g0 = seg_g0[s]
        g1 = seg_g1[s]
        o = offsets[s] if write else 0
        n = 0
        cur_f = -1  # folio of the open run, -1 when none is open
        run_start = 0
        reach = 0
        span_f = -1  # folio (or -1: a gap) whose PFN range is [span_lo, span_hi)
        span_lo = ONE
        span_hi = ZERO
        g = g0
        while g <= g1:
            f = -1
            far = 0  # end of the longest batch from entry g
            none = False
            if g < g1:
                pte = flat[g]
                none = (pte & pmask) == ZERO
                if not none and (pte & cfg.special) == ZERO:
                    pfn = pte_pfn(pte, cfg)
                    small = False
                    if not (span_lo <= pfn and pfn < span_hi):
                        if n_order > 0:
                            b = order_bucket(pte, pfn, cfg, obase, oshift, n_order)
                            small = b < 0 or forder[b] < 0
                        if not small:
                            span_f, span_lo, span_hi = folio_span(
                                folio_pfn, folio_nr, pfn, fidx, fbase, fshift
                            )
                    if not small:
                        f = span_f
                        if f >= 0 and folio_nr[f] == ONE:
                            f = -1
                        far = g + np.int64(span_hi - pfn)
            if f != cur_f:
                if cur_f >= 0:
                    if write:
                        out_g[o + n] = run_start
                        out_len[o + n] = g - run_start
                        out_f[o + n] = cur_f
                        out_reach[o + n] = reach
                        out_seg[o + n] = s
                    n += 1
                cur_f = f
                run_start = g
                reach = g
            if f >= 0 and far > reach:
                reach = far
            g += 1
            if none:
                # no run is open now, and the none entries after this one change nothing
                # (the scan's walker has the same loop; as a helper taking flat it would cost
                # an atomic reference count pair per call)
                while g + LANES <= g1:
                    k = pte_none_run(flat, g, pmask)
                    if k != LANES:
                        g += k
                        break
                    g += LANES
        if not write:
            counts[s] = n


@jit(parallel=True)
def folio_runs(
    flat,
    seg_g0,
    seg_g1,
    ch_bounds,
    folio_pfn,
    folio_nr,
    fidx,
    fbase,
    fshift,
    forder,
    obase,
    oshift,
    cfg,
    counts,
    offsets,
    out_g,
    out_len,
    out_f,
    out_reach,
    out_seg,
    write,
):
    """Runs of every segment, chunks of segments (``ch_bounds``, cut by entries) in
    parallel: counts (``write`` false), then the runs."""
    for c in prange(ch_bounds.shape[0] - 1):
        runs_in_segments(
            flat,
            seg_g0,
            seg_g1,
            ch_bounds[c],
            ch_bounds[c + 1],
            folio_pfn,
            folio_nr,
            fidx,
            fbase,
            fshift,
            forder,
            obase,
            oshift,
            cfg,
            counts,
            offsets,
            out_g,
            out_len,
            out_f,
            out_reach,
            out_seg,
            write,
        )


@jit()
def group_stable(keys, n_keys):
    """The order that groups ``keys`` (each in [0, n_keys)) by value, keeping their order
    inside each group: ``np.argsort(keys, kind="stable")``, as a counting sort (linear,
    where the argsort was the largest serial step of a parallel unmap)."""
    start = np.zeros(n_keys + 1, dtype=np.int64)
    for i in range(keys.shape[0]):
        start[keys[i] + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    order = np.empty(keys.shape[0], dtype=np.int64)
    for i in range(keys.shape[0]):
        k = keys[i]
        order[start[k]] = i
        start[k] += 1
    return order


@jit()
def clear_ptes(gone, g0, nr, run_g, run_len, r, r1):
    """get_and_clear_full_ptes: entries g0..g0+nr-1, read or skipped, are none from
    now on.  Returns how many of them were still-mapped rmap entries of the folio
    (runs r..r1-1, in flat order), what its mapped count loses."""
    lost = 0
    rr = r
    for g in range(g0, g0 + nr):
        if is_gone(gone, g):
            continue
        gone[g >> 3] |= np.uint8(1 << (g & 7))
        while rr < r1 and run_g[rr] + run_len[rr] <= g:
            rr += 1
        if rr < r1 and run_g[rr] <= g:
            lost += 1
    return lost


@jit()
def unmap_folios(
    flat,
    gone,
    seg_g0,
    seg_va,
    seg_vma,
    seg_vma_end,
    run_g,
    run_len,
    run_seg,
    item_f,
    item_r0,
    item_r1,
    item_bound,
    i,
    i_end,
    folio_pfn,
    folio_nr,
    folio_flags,
    vma_flags,
    cfg,
    mode,
    batch_file,
    skip_uffd_vma,
    oob_adjacent,
    flt,
    hist,
    found,
    out_pfn,
    out_va,
    out_nr,
    out_reason,
    out_over,
    o,
    o_end,
):
    """try_to_unmap_one over folios i..i_end-1, each over its VMAs in address order.

    Runs ``item_r0[i]:item_r1[i]`` (already in address order) are where folio
    ``item_f[i]`` is mapped.  Every batch clears its entries in ``gone`` (one
    bit per flat entry), so later walks read none there; a folio's walk ends
    when none of its rmap entries is left (folio_not_mapped).  Stops before a
    folio whose worst case would not fit in out[o:o_end]; returns ``(i, o, reads)``,
    ``reads`` the entries its ``ptep_get`` calls read (docs/model.md section 10).
    """
    n_flat = flat.shape[0]
    reads = 0
    while i < i_end:
        if o + item_bound[i] > o_end:
            break
        f = item_f[i]
        fpfn = folio_pfn[f]
        fnr = folio_nr[f]
        fend = fpfn + fnr
        kind = folio_flags[f] & np.uint8(3)
        # lazyfree (anon, not swapbacked); from 7.0 also file folios (not anon)
        batchable = kind == np.uint8(1) or (batch_file and (kind & np.uint8(1)) == np.uint8(0))
        r1 = item_r1[i]
        # folio_mapped(): its rmap entries less those its own batches cleared (an
        # entry another folio's batch cleared first keeps it "mapped": the walk
        # then visits VMAs where it finds nothing, which changes no row)
        mapped = item_bound[i]
        cur_vma = -1
        vma_done = False
        batch_here = batchable
        for r in range(item_r0[i], r1):
            s = run_seg[r]
            vma = seg_vma[s]
            if vma != cur_vma:
                if mapped == 0:
                    break  # rmap_walk's done(): folio_not_mapped, no VMA left to visit
                cur_vma = vma
                vma_done = False
                # 7.0: no batching in a VMA registered for uffd-wp
                batch_here = batchable and not (
                    skip_uffd_vma and (vma_flags[vma] & np.uint8(1)) != np.uint8(0)
                )
            if vma_done:
                continue
            g = run_g[r]
            length = run_len[r]
            va0 = seg_va[s] + (np.uint64(g - seg_g0[s]) << PAGE_SHIFT)
            vma_end = seg_vma_end[s]
            tbl_end = (g // PTRS_PER_PTE + 1) * PTRS_PER_PTE
            limit = n_flat if oob_adjacent else tbl_end
            k = 0
            while k < length:
                gk = g + k
                pte = ptep_get(flat, gone, gk, limit, cfg)
                reads += read_cost(pte, cfg)  # page_vma_mapped_walk's, present or not
                if (pte & cfg.present) == ZERO:
                    k += 1  # cleared by an earlier batch: page_vma_mapped_walk skips it
                    continue
                va = va0 + (np.uint64(k) << PAGE_SHIFT)
                pfn = pte_pfn(pte, cfg)
                nr = 1
                reason = R.SINGLE
                last = gk
                if batch_here and mode == UNMAP_ALL_OR_NOTHING:
                    # 6.15.0-6.15.6: from the folio's first page only, max_nr = folio size
                    if pfn == fpfn:
                        n, stop, last, _w, _y, _d = folio_pte_batch(
                            flat, gone, gk, limit, pte, np.int64(fnr), fpfn, fnr, cfg
                        )
                        reads += loop_reads(flat, gone, gk, last, limit, cfg)
                        if n == np.int64(fnr):
                            nr = n
                            reason = R.FOLIO_END
                elif batch_here and mode == UNMAP_CLAMPED:
                    end = pmd_addr_end(va, vma_end)
                    limit_reason = R.VMA_END if end == vma_end else R.PMD_END
                    max_nr = np.int64((end - va) >> PAGE_SHIFT)
                    n, stop, last, _w, _y, _d = folio_pte_batch(
                        flat, gone, gk, limit, pte, max_nr, fpfn, fnr, cfg
                    )
                    reads += loop_reads(flat, gone, gk, last, limit, cfg)
                    nr = n
                    reason = batch_reason(stop, pfn, n, fend, limit_reason)
                over = overrun_bits(last, tbl_end, gk, va, vma_end)
                if nr > 1:
                    over |= batch_findings(flat, gone, gk, nr, limit, pfn, fend, cfg)
                count_batch(hist, found, reason, nr, over)
                if keep_row(flt, va, nr, reason, over):
                    out_pfn[o] = fpfn
                    out_va[o] = va
                    out_nr[o] = nr
                    out_reason[o] = reason
                    out_over[o] = over
                    o += 1
                if cfg.cont == ZERO and k + nr <= length:
                    # every entry of the batch is in this run and was read present
                    for gc in range(gk, gk + nr):
                        gone[gc >> 3] |= np.uint8(1 << (gc & 7))
                    mapped -= nr
                else:
                    mapped -= clear_ptes(gone, gk, nr, run_g, run_len, r, r1)
                if nr == np.int64(fnr):
                    vma_done = True  # the whole folio went in one batch: walk done
                    break
                # page_vma_mapped_walk steps on one entry at a time and reads the ones
                # this batch cleared (none now, one read each) before the next present one
                if nr > 1:
                    reads += min(nr, length - k) - 1
                k += nr
        i += 1
    return i, o, reads


@jit(parallel=True)
def unmap_chunks(
    flat,
    gone,
    seg_g0,
    seg_va,
    seg_vma,
    seg_vma_end,
    run_g,
    run_len,
    run_seg,
    item_f,
    item_r0,
    item_r1,
    item_bound,
    ch_i,
    ch_end,
    ch_o,
    ch_o_end,
    folio_pfn,
    folio_nr,
    folio_flags,
    vma_flags,
    cfg,
    mode,
    batch_file,
    skip_uffd_vma,
    oob_adjacent,
    ch_reads,
    flt,
    ch_hist,
    ch_found,
    out_pfn,
    out_va,
    out_nr,
    out_reason,
    out_over,
):
    """Every chunk of folios in parallel; one output range per chunk."""
    for k in prange(ch_i.shape[0]):
        i, o, reads = unmap_folios(
            flat,
            gone,
            seg_g0,
            seg_va,
            seg_vma,
            seg_vma_end,
            run_g,
            run_len,
            run_seg,
            item_f,
            item_r0,
            item_r1,
            item_bound,
            ch_i[k],
            ch_end[k],
            folio_pfn,
            folio_nr,
            folio_flags,
            vma_flags,
            cfg,
            mode,
            batch_file,
            skip_uffd_vma,
            oob_adjacent,
            flt,
            ch_hist[k],
            ch_found[k],
            out_pfn,
            out_va,
            out_nr,
            out_reason,
            out_over,
            ch_o[k],
            ch_o_end[k],
        )
        ch_i[k] = i
        ch_o[k] = o
        ch_reads[k] += reads
