"""Private Numba kernels.  Names follow the kernel's (mm/internal.h, mm/memory.c,
mm/rmap.c); the public wrappers live in :mod:`ptebatch.engine`.

Type discipline: every PTE value, mask and PFN is uint64 and every constant
mixed into them is ``np.uint64`` (Numba turns uint64 op int64 into int64 or
float64, which corrupts bit 63).  Flat entry indices are int64 and never
negative.  A test checks that no kernel's types contain float64.

Page tables are read through one flat view ``flat = ptes.reshape(-1)``: entry
``i`` of table ``t`` is ``flat[t * 512 + i]``.  ``ptep_get`` returns 0 (none)
for any index at or past ``limit``, which is the end of the table for
``oob="none"`` and the end of the array for ``oob="adjacent"``; on arm64 it
returns a contpte entry with the young and dirty bits of its 16-entry block
(``contpte_ptep_get``), and ``pte_batch_hint`` lets the loop jump over the
rest of the block.  Architecture, generation, flags, caller and detectors
all reach the kernels as one configuration tuple (``engine.make_cfg``).
"""

from __future__ import annotations

import numpy as np

from .. import reasons as R
from .options import jit, prange

# Slots of the configuration vector built by engine.make_cfg.
C_COND_SET = 0      # normaliser: conditional step, tested bits that must be set (0: no step)
C_COND_CLEAR = 1    # ... tested bits that must be clear
C_COND_OR = 2       # ... bits it sets
C_KEEP = 3          # normaliser: bits kept
C_SET = 4           # normaliser: bits set
C_PRESENT = 5
C_PFN_MASK = 6
C_CUT = 7           # 1: cut max_nr to the pages left in the folio (gen 1b, 2)
C_PFN_CHECK = 8     # 1: stop on a matching PTE past the folio end (gen 1)
C_WRITE = 9
C_YOUNG = 10
C_DIRTY = 11        # pte_dirty: any of these bits ...
C_DIRTY_HW_SET = 12  # ... or all of these set (0: unused) ...
C_DIRTY_HW_CLEAR = 13  # ... and none of these
C_CONT = 14         # contiguous bit for pte_batch_hint (0: hint is always 1)
C_SPECIAL = 15      # pte_special: maps no folio, never batched
C_MKDIRTY_SET = 16  # pte_mkdirty, used by the contpte gather: OR these bits, then ...
C_MKDIRTY_IF = 17   # ... if all of these are set (0: never) ...
C_MKDIRTY_CLEAR = 18  # ... clear these (arm64: read-only, when writable)
C_SPREAD = 19       # detector: bits a write-back caller stamps from the first PTE
C_SPREAD_DIRTY = 20  # detector: 1 if it stamps the dirty state too
C_UFFD_WP = 21      # detector: the uffd-wp bit (0: not checked)
N_CFG = 22

ZERO = np.uint64(0)
ONE = np.uint64(1)
PAGE_SHIFT = np.uint64(12)
PFN_1 = np.uint64(1 << 12)   # pte_advance_pfn steps of the 4-entry fast path
PFN_2 = np.uint64(2 << 12)
PFN_3 = np.uint64(3 << 12)
PFN_4 = np.uint64(4 << 12)
PMD_SIZE = np.uint64(1 << 21)
PMD_MASK = np.uint64(((1 << 64) - 1) ^ ((1 << 21) - 1))
PTRS_PER_PTE = 512
CONT_PTES = 16

UNMAP_SINGLE = 0
UNMAP_ALL_OR_NOTHING = 1
UNMAP_CLAMPED = 2

WALK_NONE = 0    # the walker does not batch
WALK_BATCH = 1
WALK_HINT = 2    # batches only when pte_batch_hint > 1


@jit(inline=True)
def pte_pfn(pte, cfg):
    return (pte & cfg[C_PFN_MASK]) >> PAGE_SHIFT


@jit(inline=True)
def pte_advance_pfn(pte, nr):
    return pte + (np.uint64(nr) << PAGE_SHIFT)


@jit(inline=True)
def pte_batch_clear_ignored(pte, cfg):
    """__pte_batch_clear_ignored: clear the bits this call ignores."""
    cond = cfg[C_COND_SET]
    if cond != ZERO and (pte & cond) == cond and (pte & cfg[C_COND_CLEAR]) == ZERO:
        pte = pte | cfg[C_COND_OR]
    return (pte & cfg[C_KEEP]) | cfg[C_SET]


@jit(inline=True)
def pte_dirty(pte, cfg):
    if (pte & cfg[C_DIRTY]) != ZERO:
        return True
    hw = cfg[C_DIRTY_HW_SET]
    return hw != ZERO and (pte & hw) == hw and (pte & cfg[C_DIRTY_HW_CLEAR]) == ZERO


@jit(inline=True)
def pte_batch_hint(g, pte, cfg):
    """Entries the scan may skip: 1, or to the end of a contiguous block."""
    cont = cfg[C_CONT]
    if cont != ZERO and (pte & cfg[C_PRESENT]) != ZERO and (pte & cont) != ZERO:
        return CONT_PTES - (g & (CONT_PTES - 1))
    return 1


@jit(inline=True)
def pte_read(flat, g, limit):
    """The raw entry (what __ptep_get reads); 0 at or past ``limit``."""
    if g < limit:
        return flat[g]
    return ZERO


@jit(inline=True)
def pte_valid_cont(pte, cfg):
    cont = cfg[C_CONT]
    return cont != ZERO and (pte & cfg[C_PRESENT]) != ZERO and (pte & cont) != ZERO


@jit(inline=True)
def pte_mkdirty(pte, cfg):
    pte = pte | cfg[C_MKDIRTY_SET]
    cond = cfg[C_MKDIRTY_IF]
    if cond != ZERO and (pte & cond) == cond:
        pte = pte & ~cfg[C_MKDIRTY_CLEAR]
    return pte


@jit()  # not inlined: only contpte entries get here, and inlining cost 1.3 s of compile
def contpte_ptep_get(flat, g, limit, orig, cfg):
    """Young and dirty of a contpte entry are those of its whole 16-entry block:
    the MMU updates only the entry it used."""
    young = False
    dirty = False
    b = g - (g & (CONT_PTES - 1))
    for k in range(b, b + CONT_PTES):
        raw = pte_read(flat, k, limit)
        young |= (raw & cfg[C_YOUNG]) != ZERO
        dirty |= pte_dirty(raw, cfg)
    if dirty:
        orig = pte_mkdirty(orig, cfg)
    if young:
        orig = orig | cfg[C_YOUNG]
    return orig


@jit(inline=True)
def ptep_get(flat, g, limit, cfg):
    """ptep_get: the entry, with arm64's contpte gather; 0 at or past ``limit``
    (a block never crosses ``limit``: tables and arrays are whole blocks)."""
    pte = pte_read(flat, g, limit)
    if pte_valid_cont(pte, cfg):
        return contpte_ptep_get(flat, g, limit, pte, cfg)
    return pte


@jit(inline=True)
def pmd_addr_end(addr, end):
    """Next 2 MiB boundary above addr, or end if that is lower (end 0 = top)."""
    boundary = (addr + PMD_SIZE) & PMD_MASK
    if boundary - ONE < end - ONE:
        return boundary
    return end


@jit(inline=True)
def folio_pte_batch(flat, g0, limit, pte, max_nr, folio_pfn, folio_nr, cfg):
    """One batch from flat[g0] (whose value is ``pte``).

    Returns ``(nr, stop, last_read, any_writable, any_young, any_dirty)``:
    ``stop`` is a reason code (MAX_NR when the loop used up max_nr),
    ``last_read`` the highest index the loop read (g0 if it read none), and
    the ``any_*`` flags OR the raw bits of the batched entries after the first.
    """
    folio_end = folio_pfn + folio_nr
    if cfg[C_CUT] != ZERO:
        # gen 1b/2: never look past the folio's last page
        left = np.int64(folio_end - pte_pfn(pte, cfg))
        if left < max_nr:
            max_nr = left
    nr = pte_batch_hint(g0, pte, cfg)
    expected = pte_batch_clear_ignored(pte_advance_pfn(pte, nr), cfg)
    g = g0 + nr
    end = g0 + max_nr
    stop = R.MAX_NR
    last_read = g0
    any_writable = False
    any_young = False
    any_dirty = False
    if cfg[C_CONT] == ZERO and cfg[C_COND_SET] == ZERO and cfg[C_DIRTY_HW_SET] == ZERO:
        # Fast path for plain-mask encodings (x86-64): four entries per step
        # while all four match.  It commits only entries the loop below would
        # also have read and accepted; at a mismatch, the read limit or gen 1's
        # folio end, the loop takes over.
        keep = cfg[C_KEEP]
        set_ = cfg[C_SET]
        last4 = min(end, limit) - 4
        while g <= last4:
            r0 = flat[g]
            r1 = flat[g + 1]
            r2 = flat[g + 2]
            r3 = flat[g + 3]
            diff = ((((r0 & keep) | set_) ^ expected)
                    | (((r1 & keep) | set_) ^ (expected + PFN_1))
                    | (((r2 & keep) | set_) ^ (expected + PFN_2))
                    | (((r3 & keep) | set_) ^ (expected + PFN_3)))
            if diff != ZERO or (cfg[C_PFN_CHECK] != ZERO
                                and pte_pfn(expected, cfg) + np.uint64(3) >= folio_end):
                break
            bits = r0 | r1 | r2 | r3
            any_writable |= (bits & cfg[C_WRITE]) != ZERO
            any_young |= (bits & cfg[C_YOUNG]) != ZERO
            any_dirty |= (bits & cfg[C_DIRTY]) != ZERO
            expected = expected + PFN_4
            g += 4
            last_read = g - 1
    while g < end:
        raw = ptep_get(flat, g, limit, cfg)
        last_read = g
        if pte_batch_clear_ignored(raw, cfg) != expected:
            if (raw & cfg[C_PRESENT]) == ZERO:
                stop = R.NOT_PRESENT
            elif pte_pfn(raw, cfg) != pte_pfn(expected, cfg):
                stop = R.PFN_GAP
            else:
                stop = R.BIT_MISMATCH
            break
        if cfg[C_PFN_CHECK] != ZERO and pte_pfn(raw, cfg) >= folio_end:
            # gen 1: the next PFN may belong to another folio
            stop = R.FOLIO_END
            break
        any_writable |= (raw & cfg[C_WRITE]) != ZERO
        any_young |= (raw & cfg[C_YOUNG]) != ZERO
        any_dirty |= pte_dirty(raw, cfg)
        step = pte_batch_hint(g, raw, cfg)
        expected = pte_advance_pfn(expected, step)
        g += step
    nr = g - g0
    if nr > max_nr:
        nr = max_nr
    return nr, stop, last_read, any_writable, any_young, any_dirty


@jit(inline=True)
def overrun_bits(last_read, table_end, g, va, vma_end):
    """Overrun bits of a batch from g (at va) whose loop read up to last_read."""
    over = 0
    if last_read >= table_end:
        over |= R.OVER_TABLE
    if va + (np.uint64(last_read - g) << PAGE_SHIFT) >= vma_end:
        over |= R.OVER_VMA
    return over


@jit(inline=True)
def batch_reason(stop, first_pfn, nr, folio_end, limit_reason):
    """What limited a batch (see ptebatch.reasons)."""
    if first_pfn + np.uint64(nr) == folio_end:
        return R.FOLIO_END
    if stop == R.MAX_NR:
        return limit_reason
    return stop


@jit(inline=True)
def folio_search(folio_pfn, pfn, fidx, fbase, fshift):
    """Index of the last folio starting at or below pfn (-1 if none).

    ``fidx`` buckets PFNs by ``(pfn - fbase) >> fshift``: ``fidx[b]`` is the
    first folio starting in bucket b or later, so the search is one bucket
    plus the folio just before it (a large folio may span buckets).
    """
    n = folio_pfn.shape[0]
    if n == 0 or pfn < fbase:
        return -1
    b = np.int64((pfn - fbase) >> fshift)
    nb = fidx.shape[0] - 1
    if b >= nb:
        lo = fidx[nb]
        hi = n
    else:
        lo = fidx[b]
        hi = fidx[b + 1]
    if lo > 0:
        lo -= 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if folio_pfn[mid] <= pfn:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@jit(inline=True)
def folio_lookup(folio_pfn, folio_nr, pfn, hint, fidx, fbase, fshift):
    """Index of the listed folio holding ``pfn``, or -1 (an order-0 folio)."""
    n = folio_pfn.shape[0]
    # Walks mostly stay in one folio or move to the next one in PFN order.
    if hint >= 0 and hint < n and folio_pfn[hint] <= pfn:
        if pfn - folio_pfn[hint] < folio_nr[hint]:
            return hint
        nxt = hint + 1
        if nxt < n and folio_pfn[nxt] <= pfn and pfn - folio_pfn[nxt] < folio_nr[nxt]:
            return nxt
    i = folio_search(folio_pfn, pfn, fidx, fbase, fshift)
    if i >= 0 and pfn - folio_pfn[i] < folio_nr[i]:
        return i
    return -1


@jit(inline=True)
def folio_of_pte(pte, pfn, cfg, folio_pfn, folio_nr, hint, fidx, fbase, fshift, forder, obase,
                 oshift):
    """vm_normal_folio for zap: ``(first pfn, pages, hint)`` of the large folio the
    PTE maps, or pages 0 (order-0 or special).

    With an order table (``forder[(pfn - obase) >> oshift]`` = folio order, -1
    for none) this is one small load: folios are naturally aligned, so the
    order gives the start.  Otherwise it searches the folio arrays.
    """
    if (pte & cfg[C_SPECIAL]) != ZERO:
        return ZERO, ZERO, hint
    if forder.shape[0] > 0:
        if pfn >= obase:
            b = np.int64((pfn - obase) >> oshift)
            if b < forder.shape[0] and forder[b] >= 0:
                n = ONE << np.uint64(forder[b])
                return pfn & ~(n - ONE), n, hint
        return ZERO, ZERO, hint
    f = folio_lookup(folio_pfn, folio_nr, pfn, hint, fidx, fbase, fshift)
    if f >= 0 and folio_nr[f] > ONE:
        return folio_pfn[f], folio_nr[f], f
    return ZERO, ZERO, hint


@jit()  # once per batch; not inlined, which saves compile time at no measured cost
def batch_findings(flat, g, nr, limit, first_pfn, folio_end, cfg):
    """Detector bits of a batch of ``nr`` entries from ``g`` beyond the overruns.

    PAST_FOLIO: it covers a page past its folio.  SPREAD: its entries differ in
    a bit a write-back caller stamps from the first PTE.  UFFD_WP: its entries
    differ in uffd-wp (possible only for entries a contpte hint skipped).  The
    entries are checked raw, every one of them, whether the loop read it or not.
    """
    found = 0
    if first_pfn + np.uint64(nr) > folio_end:
        found |= R.PAST_FOLIO
    spread = cfg[C_SPREAD]
    uffd = cfg[C_UFFD_WP]
    dirty = cfg[C_SPREAD_DIRTY] != ZERO
    if nr > 1 and (spread != ZERO or dirty or (uffd != ZERO and cfg[C_CONT] != ZERO)):
        first = pte_read(flat, g, limit)
        d0 = pte_dirty(first, cfg)
        for k in range(g + 1, g + nr):
            raw = pte_read(flat, k, limit)
            if ((raw ^ first) & spread) != ZERO or (dirty and pte_dirty(raw, cfg) != d0):
                found |= R.SPREAD
            if ((raw ^ first) & uffd) != ZERO:
                found |= R.UFFD_WP
    return found


@jit()
def folio_pte_batch_one(arr, index, max_nr, folio_pfn, folio_nr, cfg):
    """Entry point of the public single-batch call: reads only inside ``arr``.
    The first PTE is read with ptep_get, as every caller does."""
    limit = arr.shape[0]
    pte = ptep_get(arr, index, limit, cfg)
    nr, stop, last, w, y, d = folio_pte_batch(arr, index, limit, pte, max_nr, folio_pfn, folio_nr,
                                              cfg)
    return nr, stop, last, w, y, d, pte


@jit()
def zap_segments(flat, seg_g0, seg_g1, seg_va, seg_vma, seg_vma_end, seg_reason, seg_move,
                 s, s_end, carry_va, carry_vma, folio_pfn, folio_nr, fidx, fbase, fshift,
                 forder, obase, oshift, cfg, walk,
                 clamp_folio, oob_adjacent, out_va, out_nr, out_reason, out_over, o, o_end):
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
    """
    present = 0
    moved = 0
    hint = -1
    n_flat = flat.shape[0]
    pmask = cfg[C_PRESENT]
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
                g += 1
                continue
            va = va0 + (np.uint64(g - g0) << PAGE_SHIFT)
            pfn = pte_pfn(pte, cfg)
            fp, fn, hint = folio_of_pte(pte, pfn, cfg, folio_pfn, folio_nr, hint, fidx, fbase,
                                        fshift, forder, obase, oshift)
            nr = 1
            reason = R.ORDER0
            over = 0
            if fn > ONE:
                pte = ptep_get(flat, g, limit, cfg)
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
                            flat, g, limit, pte, max_nr, fp, fn, cfg)
                    reason = batch_reason(stop, pfn, nr, fp + fn, seg_reason[s])
                    over = (overrun_bits(last, tbl_end, g, va, vma_end)
                            | batch_findings(flat, g, nr, limit, pfn, fp + fn, cfg))
            out_va[o] = va
            out_nr[o] = nr
            out_reason[o] = reason
            out_over[o] = over
            o += 1
            n_in = min(nr, g1 - g)
            if cfg[C_CONT] == ZERO:
                present += n_in   # every batched entry was read and is present
            else:
                # a contpte jump may batch entries it never read (a malformed block)
                for k in range(g, g + n_in):
                    if (flat[k] & pmask) != ZERO:
                        present += 1
            g += nr
        if g > g1:
            next_carry = va0 + (np.uint64(g - g0) << PAGE_SHIFT)
        carry_va = next_carry
        carry_vma = vma
        s += 1
    return s, o, carry_va, carry_vma, present, moved


def _zap_chunks(flat, seg_g0, seg_g1, seg_va, seg_vma, seg_vma_end, seg_reason, seg_move,
                ch_s, ch_end, ch_carry_va, ch_carry_vma, ch_o, ch_o_end, ch_present, ch_moved,
                folio_pfn, folio_nr, fidx, fbase, fshift, forder, obase, oshift, cfg, walk,
                clamp_folio, oob_adjacent, out_va, out_nr, out_reason, out_over):
    # One output slot per chunk: chunks never share state or output ranges.
    for k in prange(ch_s.shape[0]):
        s, o, cva, cvma, present, moved = zap_segments(
            flat, seg_g0, seg_g1, seg_va, seg_vma, seg_vma_end, seg_reason, seg_move,
            ch_s[k], ch_end[k], ch_carry_va[k], ch_carry_vma[k], folio_pfn, folio_nr, fidx, fbase,
            fshift, forder, obase, oshift, cfg, walk,
            clamp_folio, oob_adjacent, out_va, out_nr, out_reason, out_over, ch_o[k], ch_o_end[k])
        ch_s[k] = s
        ch_o[k] = o
        ch_carry_va[k] = cva
        ch_carry_vma[k] = cvma
        ch_present[k] += present
        ch_moved[k] += moved


zap_chunks = jit(parallel=True)(_zap_chunks)


@jit(inline=True)
def folio_span(folio_pfn, folio_nr, pfn, fidx, fbase, fshift):
    """``(f, lo, hi)``: the listed folio holding pfn and its PFN range [lo, hi),
    or ``f = -1`` and the gap between listed folios that holds pfn."""
    i = folio_search(folio_pfn, pfn, fidx, fbase, fshift)
    gap_lo = ZERO
    if i >= 0:
        end = folio_pfn[i] + folio_nr[i]
        if pfn < end:
            return i, folio_pfn[i], end
        gap_lo = end
    gap_hi = folio_pfn[i + 1] if i + 1 < folio_pfn.shape[0] else ~ZERO
    return -1, gap_lo, gap_hi


@jit()
def _runs_in_segment(flat, g0, g1, folio_pfn, folio_nr, fidx, fbase, fshift, cfg, out_g, out_len,
                     out_f, o, write):
    """Maximal runs of entries in [g0, g1) that map the same large folio.

    The PFN range of the last folio (or gap between folios) is remembered, so
    entries of one folio cost no search.
    """
    pmask = cfg[C_PRESENT]
    n = 0
    cur_f = -1      # folio of the open run, -1 when none is open
    run_start = 0
    span_f = -1     # folio (or -1: a gap) whose PFN range is [span_lo, span_hi)
    span_lo = ONE
    span_hi = ZERO
    for g in range(g0, g1 + 1):
        f = -1
        if g < g1:
            pte = flat[g]
            if (pte & pmask) != ZERO and (pte & cfg[C_SPECIAL]) == ZERO:
                pfn = pte_pfn(pte, cfg)
                if not (span_lo <= pfn and pfn < span_hi):
                    span_f, span_lo, span_hi = folio_span(folio_pfn, folio_nr, pfn, fidx, fbase, fshift)
                f = span_f
                if f >= 0 and folio_nr[f] == ONE:
                    f = -1
        if f != cur_f:
            if cur_f >= 0:
                if write:
                    out_g[o + n] = run_start
                    out_len[o + n] = g - run_start
                    out_f[o + n] = cur_f
                n += 1
            cur_f = f
            run_start = g
    return n


def _folio_runs(flat, seg_g0, seg_g1, folio_pfn, folio_nr, fidx, fbase, fshift, cfg, counts,
                offsets, out_g, out_len, out_f, out_seg, write):
    for s in prange(seg_g0.shape[0]):
        n = _runs_in_segment(flat, seg_g0[s], seg_g1[s], folio_pfn, folio_nr, fidx, fbase, fshift,
                             cfg, out_g, out_len, out_f, offsets[s], write)
        if write:
            for k in range(offsets[s], offsets[s] + n):
                out_seg[k] = s
        else:
            counts[s] = n


folio_runs = jit(parallel=True)(_folio_runs)


@jit()
def unmap_folios(flat, seg_g0, seg_va, seg_vma, seg_vma_end, run_g, run_len, run_seg,
                 item_f, item_r0, item_r1, item_bound, i, i_end,
                 folio_pfn, folio_nr, folio_flags, vma_flags, cfg, mode, batch_file, skip_uffd_vma,
                 oob_adjacent, out_pfn, out_va, out_nr, out_reason, out_over, o, o_end):
    """try_to_unmap_one over folios i..i_end-1, each over its VMAs in address order.

    Runs ``item_r0[i]:item_r1[i]`` (already in address order) are where folio
    ``item_f[i]`` is mapped.  Stops before a folio whose worst case would not
    fit in out[o:o_end]; returns ``(i, o)``.
    """
    n_flat = flat.shape[0]
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
        cur_vma = -1
        cursor = ZERO
        vma_done = False
        batch_here = batchable
        for r in range(item_r0[i], item_r1[i]):
            s = run_seg[r]
            vma = seg_vma[s]
            if vma != cur_vma:
                cur_vma = vma
                cursor = ZERO
                vma_done = False
                # 7.0: no batching in a VMA registered for uffd-wp
                batch_here = batchable and not (skip_uffd_vma
                                                and (vma_flags[vma] & np.uint8(1)) != np.uint8(0))
            if vma_done:
                continue
            g = run_g[r]
            length = run_len[r]
            va0 = seg_va[s] + (np.uint64(g - seg_g0[s]) << PAGE_SHIFT)
            vma_end = seg_vma_end[s]
            tbl_end = (g // PTRS_PER_PTE + 1) * PTRS_PER_PTE
            limit = n_flat if oob_adjacent else tbl_end
            k = 0
            if cursor > va0:
                k = min(length, np.int64((cursor - va0) >> PAGE_SHIFT))
            while k < length:
                gk = g + k
                va = va0 + (np.uint64(k) << PAGE_SHIFT)
                pte = ptep_get(flat, gk, limit, cfg)
                pfn = pte_pfn(pte, cfg)
                nr = 1
                reason = R.SINGLE
                last = gk
                if batch_here and mode == UNMAP_ALL_OR_NOTHING:
                    # 6.15.0-6.15.6: from the folio's first page only, max_nr = folio size
                    if pfn == fpfn:
                        n, stop, last, _w, _y, _d = folio_pte_batch(
                            flat, gk, limit, pte, np.int64(fnr), fpfn, fnr, cfg)
                        if n == np.int64(fnr):
                            nr = n
                            reason = R.FOLIO_END
                elif batch_here and mode == UNMAP_CLAMPED:
                    end = pmd_addr_end(va, vma_end)
                    limit_reason = R.VMA_END if end == vma_end else R.PMD_END
                    n, stop, last, _w, _y, _d = folio_pte_batch(
                        flat, gk, limit, pte, np.int64((end - va) >> PAGE_SHIFT), fpfn, fnr, cfg)
                    nr = n
                    reason = batch_reason(stop, pfn, n, fend, limit_reason)
                over = overrun_bits(last, tbl_end, gk, va, vma_end)
                if nr > 1:
                    over |= batch_findings(flat, gk, nr, limit, pfn, fend, cfg)
                out_pfn[o] = fpfn
                out_va[o] = va
                out_nr[o] = nr
                out_reason[o] = reason
                out_over[o] = over
                o += 1
                if nr == np.int64(fnr):
                    vma_done = True  # the whole folio went in one batch: walk done
                    break
                cursor = va + (np.uint64(nr) << PAGE_SHIFT)
                k += nr
        i += 1
    return i, o


def _unmap_chunks(flat, seg_g0, seg_va, seg_vma, seg_vma_end, run_g, run_len, run_seg,
                  item_f, item_r0, item_r1, item_bound, ch_i, ch_end, ch_o, ch_o_end,
                  folio_pfn, folio_nr, folio_flags, vma_flags, cfg, mode, batch_file, skip_uffd_vma,
                  oob_adjacent, out_pfn, out_va, out_nr, out_reason, out_over):
    for k in prange(ch_i.shape[0]):
        i, o = unmap_folios(flat, seg_g0, seg_va, seg_vma, seg_vma_end, run_g, run_len, run_seg,
                            item_f, item_r0, item_r1, item_bound, ch_i[k], ch_end[k],
                            folio_pfn, folio_nr, folio_flags, vma_flags, cfg, mode, batch_file,
                            skip_uffd_vma, oob_adjacent, out_pfn, out_va, out_nr, out_reason,
                            out_over, ch_o[k], ch_o_end[k])
        ch_i[k] = i
        ch_o[k] = o


unmap_chunks = jit(parallel=True)(_unmap_chunks)

# Every dispatcher, for the type-hygiene test and for compile-time measurements.
DISPATCHERS = {name: obj for name, obj in list(globals().items())
               if hasattr(obj, "overloads") and hasattr(obj, "py_func")}
