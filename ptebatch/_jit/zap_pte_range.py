"""``zap_pte_range`` and the other page-table walkers: the scan walk over segments.

A segment is one VMA's part of one table (``pmd_addr_end`` already applied,
see :func:`ptebatch.planning.segments`).
"""

from __future__ import annotations

import numpy as np

from .. import reasons as R
from .config import WALK_HINT, WALK_NONE
from .folio_lookup import folio_of_order, folio_of_pte, order_bucket
from .folio_pte_batch import (
    batch_findings,
    batch_reason,
    findings_reread,
    folio_pte_batch,
    loop_reads,
    overrun_bits,
    past_folio,
    read_cost,
)
from .options import jit, prange
from .pte import (
    ONE,
    PAGE_SHIFT,
    PTRS_PER_PTE,
    ZERO,
    contpte_ptep_get,
    pte_batch_hint,
    pte_pfn,
    pte_valid_cont,
)
from .simd import LANES, pte_none_run
from .tally import count_batch, keep_row

# A compiled constant: unlike an array allocated in the walk, it has no reference count to
# update each time the walk passes it to an inlined helper.
NOTHING_CLEARED = np.zeros(0, dtype=np.uint8)


@jit()
def zap_segments(
    flat,
    seg_g0,
    seg_g1,
    seg_va,
    seg_vma,
    seg_vma_end,
    seg_reason,
    seg_move,
    s,
    s_end,
    carry_va,
    carry_vma,
    folio_pfn,
    folio_nr,
    fidx,
    fbase,
    fshift,
    forder,
    obase,
    oshift,
    cfg,
    walk,
    clamp_folio,
    oob_adjacent,
    flt,
    hist,
    found,
    out_va,
    out_nr,
    out_reason,
    out_over,
    o,
    o_end,
):
    """A page-table walk (zap_pte_range and the other walkers) over segments s..s_end-1.

    ``walk`` is WALK_NONE (the caller does not batch in this release),
    WALK_BATCH, or WALK_HINT (batch only when pte_batch_hint > 1: mremap).

    A segment is one VMA's part of one table; ``seg_g1`` is where
    pmd_addr_end(addr, vma_end) falls.  Batches go to out[o:o_end]; the walk
    stops before a segment whose worst case (one batch per entry) would not
    fit, and returns where to resume: ``(s, o, carry_va, carry_vma, present, moved)``.
    ``carry_va`` is where the walk continues when a batch ran past its segment
    (``clamp="folio"``): the next segment of the same VMA starts there.
    A segment with ``seg_move`` set that the walk enters at its start is a
    whole table mremap moves by its PMD: no PTE is looked at (``moved`` counts them).

    Longer than 80 lines on purpose: it is the scan's hot loop, and its state
    (output cursor, carry, folio hint) lives in registers across segments;
    split into functions, that state would travel through arguments.
    """
    present = 0
    moved = 0
    reads = 0
    hint = -1
    gone = NOTHING_CLEARED  # a page-table walk reads the snapshot as given
    n_flat = flat.shape[0]
    pmask = cfg.present
    while s < s_end:
        g0 = seg_g0[s]
        g1 = seg_g1[s]
        if o + (g1 - g0) > o_end:
            break
        va0 = seg_va[s]
        vma = seg_vma[s]
        vma_end = seg_vma_end[s]
        seg_end_va = va0 + (np.uint64(g1 - g0) << PAGE_SHIFT)
        g = g0
        next_carry = ZERO
        if vma == carry_vma and carry_va > va0:
            # entries a previous batch already covered
            if carry_va >= seg_end_va:
                g = g1
                next_carry = carry_va
            else:
                g = g0 + np.int64((carry_va - va0) >> PAGE_SHIFT)
            for k in range(g0, g):
                if (flat[k] & pmask) != ZERO:
                    present += 1
        tbl_end = (g0 // PTRS_PER_PTE + 1) * PTRS_PER_PTE
        limit = n_flat if oob_adjacent else tbl_end
        if seg_move[s] and g == g0:
            # move_pgt_entry(NORMAL_PMD): the whole table moves, no PTE is read
            for k in range(g0, g1):
                if (flat[k] & pmask) != ZERO:
                    present += 1
            moved += 1
            g = g1
        while g < g1:
            pte = flat[g]
            if (pte & pmask) == ZERO:
                # entries that are not present come in runs: step over them 8 at a time
                # (a constant step while all 8 are none, so loads need not wait)
                g_none = g
                g += 1
                while g + LANES <= g1:
                    n = pte_none_run(flat, g, pmask)
                    if n != LANES:
                        g += n
                        break
                    g += LANES
                reads += g - g_none  # the walker's ptep_get of each
                continue
            reads += read_cost(pte, cfg)
            va = va0 + (np.uint64(g - g0) << PAGE_SHIFT)
            pfn = pte_pfn(pte, cfg)
            if forder.shape[0] > 0:
                # the order table read here, not in a helper: an inlined helper taking
                # arrays costs an atomic reference count pair per call
                b = order_bucket(pte, pfn, cfg, obase, oshift, forder.shape[0])
                fp, fn = folio_of_order(pfn, forder[b] if b >= 0 else np.int8(-1))
            else:
                fp, fn, hint = folio_of_pte(
                    pte, pfn, cfg, folio_pfn, folio_nr, hint, fidx, fbase, fshift
                )
            nr = 1
            reason = R.ORDER0
            over = 0
            if fn > ONE:
                # ptep_get: flat[g] is in the table and a scan clears nothing
                if pte_valid_cont(pte, cfg):
                    pte = contpte_ptep_get(flat, gone, g, limit, pte, cfg)
                if walk == WALK_NONE or (walk == WALK_HINT and pte_batch_hint(g, pte, cfg) == 1):
                    reason = R.SINGLE
                else:
                    if clamp_folio:
                        max_nr = np.int64(fn)
                    else:
                        max_nr = g1 - g
                    stop = R.MAX_NR
                    last = g
                    if max_nr != 1:  # callers batch only a large folio with max_nr > 1
                        nr, stop, last, _w, _y, _d = folio_pte_batch(
                            flat, gone, g, limit, pte, max_nr, fp, fn, cfg
                        )
                        # (calls taking arrays only where needed: each costs an atomic
                        # reference count pair)
                        if cfg.cont == ZERO:
                            reads += last - g  # every entry up to last_read was read once
                        else:
                            reads += loop_reads(flat, gone, g, last, limit, cfg)
                    reason = batch_reason(stop, pfn, nr, fp + fn, seg_reason[s])
                    over = overrun_bits(last, tbl_end, g, va, vma_end)
                    if findings_reread(nr, cfg):
                        over |= batch_findings(flat, gone, g, nr, limit, pfn, fp + fn, cfg)
                    else:
                        over |= past_folio(pfn, nr, fp + fn)
            count_batch(hist, found, reason, nr, over)
            if keep_row(flt, va, nr, reason, over):
                out_va[o] = va
                out_nr[o] = nr
                out_reason[o] = reason
                out_over[o] = over
                o += 1
            n_in = min(nr, g1 - g)
            if cfg.cont == ZERO:
                present += n_in  # every batched entry was read and is present
            else:
                # a contpte jump may batch entries it never read (a malformed block)
                for k in range(g, g + n_in):
                    if (flat[k] & pmask) != ZERO:
                        present += 1
            g += nr
        if g > g1:
            # a batch past the last table of the space covers up to 2**64: saturate
            # (va0 + span would wrap to a low address)
            span = np.uint64(g - g0) << PAGE_SHIFT
            next_carry = va0 + span if span <= ~va0 else ~ZERO
        carry_va = next_carry
        carry_vma = vma
        s += 1
    return s, o, carry_va, carry_vma, present, moved, reads


@jit(parallel=True)
def zap_chunks(
    flat,
    seg_g0,
    seg_g1,
    seg_va,
    seg_vma,
    seg_vma_end,
    seg_reason,
    seg_move,
    ch_s,
    ch_end,
    ch_carry_va,
    ch_carry_vma,
    ch_o,
    ch_o_end,
    ch_present,
    ch_moved,
    ch_reads,
    folio_pfn,
    folio_nr,
    fidx,
    fbase,
    fshift,
    forder,
    obase,
    oshift,
    cfg,
    walk,
    clamp_folio,
    oob_adjacent,
    flt,
    ch_hist,
    ch_found,
    out_va,
    out_nr,
    out_reason,
    out_over,
):
    """Every chunk of segments in parallel; one output range per chunk, no shared state."""
    # One output slot per chunk: chunks never share state or output ranges.
    for k in prange(ch_s.shape[0]):
        s, o, cva, cvma, present, moved, reads = zap_segments(
            flat,
            seg_g0,
            seg_g1,
            seg_va,
            seg_vma,
            seg_vma_end,
            seg_reason,
            seg_move,
            ch_s[k],
            ch_end[k],
            ch_carry_va[k],
            ch_carry_vma[k],
            folio_pfn,
            folio_nr,
            fidx,
            fbase,
            fshift,
            forder,
            obase,
            oshift,
            cfg,
            walk,
            clamp_folio,
            oob_adjacent,
            flt,
            ch_hist[k],
            ch_found[k],
            out_va,
            out_nr,
            out_reason,
            out_over,
            ch_o[k],
            ch_o_end[k],
        )
        ch_s[k] = s
        ch_o[k] = o
        ch_carry_va[k] = cva
        ch_carry_vma[k] = cvma
        ch_present[k] += present
        ch_moved[k] += moved
        ch_reads[k] += reads
