"""``folio_pte_batch`` (mm/internal.h): the hot loop, and what a batch reports.

Type discipline: every PTE value, mask and PFN is uint64 and every constant
mixed into them is ``np.uint64`` (Numba turns uint64 op int64 into int64 or
float64, which corrupts bit 63).  Flat entry indices are int64 and never
negative.  ``tests/test_types.py`` checks that no compiled function's types
contain float64.
"""

from __future__ import annotations

import numpy as np

from .. import reasons as R
from .options import jit
from .pte import (
    CONT_PTES,
    PAGE_SHIFT,
    ZERO,
    is_gone,
    pte_advance_pfn,
    pte_batch_clear_ignored,
    pte_batch_hint,
    pte_dirty,
    pte_pfn,
    pte_read,
    pte_valid_cont,
    ptep_get,
)
from .simd import LANES, pte_match_run

PFN_1 = np.uint64(1 << 12)  # pte_advance_pfn steps of the 4-entry fast path
PFN_2 = np.uint64(2 << 12)
PFN_3 = np.uint64(3 << 12)
PFN_4 = np.uint64(4 << 12)
PFN_8 = np.uint64(LANES << 12)
LAST_LANE = np.uint64(LANES - 1)


@jit(inline=True)
def folio_pte_batch(flat, gone, g0, limit, pte, max_nr, folio_pfn, folio_nr, cfg):
    """One batch from flat[g0] (whose value is ``pte``); entries set in ``gone``
    (cleared by an unmap) read as none.

    Returns ``(nr, stop, last_read, any_writable, any_young, any_dirty)``:
    ``stop`` is a reason code (MAX_NR when the loop used up max_nr),
    ``last_read`` the highest index the loop read (g0 if it read none), and
    the ``any_*`` flags OR the raw bits of the batched entries after the first.
    """
    folio_end = folio_pfn + folio_nr
    if cfg.cut != ZERO:
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
    plain = cfg.cont == ZERO and gone.shape[0] == 0
    if cfg.cont == ZERO and cfg.cond_set == ZERO and cfg.dirty_hw_set == ZERO:
        # Fast path for plain-mask encodings (x86-64): eight, then four entries per
        # step.  It commits only entries the loop below would also have read and
        # accepted; at a mismatch, the read limit or gen 1's folio end, the loop
        # takes over.
        keep = cfg.keep
        set_ = cfg.set
        fence = min(end, limit)
        if gone.shape[0] != 0:
            # the fast path reads flat directly: stop it before the first cleared entry
            for k in range(g, fence):
                if is_gone(gone, k):
                    fence = k
                    break
        # Eight entries per vector compare first; a partial match commits the lanes before
        # the mismatch, and the loop below then reads the mismatching entry itself.
        last8 = fence - LANES
        matched = True
        while g <= last8:
            if cfg.pfn_check != ZERO and pte_pfn(expected, cfg) + LAST_LANE >= folio_end:
                break
            k, bits = pte_match_run(flat, g, keep, set_, expected)
            any_writable |= (bits & cfg.write) != ZERO
            any_young |= (bits & cfg.young) != ZERO
            any_dirty |= (bits & cfg.dirty) != ZERO
            if k != LANES:
                if k != 0:
                    expected = pte_advance_pfn(expected, k)
                    g += k
                    last_read = g - 1
                matched = False
                break
            # a constant step, not g += k: the next load's address must not wait for
            # this compare (measured: a data-dependent step made the scan slower)
            expected = expected + PFN_8
            g += LANES
            last_read = g - 1
        last4 = fence - 4 if matched else g - 1
        while g <= last4:
            r0 = flat[g]
            r1 = flat[g + 1]
            r2 = flat[g + 2]
            r3 = flat[g + 3]
            diff = (
                (((r0 & keep) | set_) ^ expected)
                | (((r1 & keep) | set_) ^ (expected + PFN_1))
                | (((r2 & keep) | set_) ^ (expected + PFN_2))
                | (((r3 & keep) | set_) ^ (expected + PFN_3))
            )
            if diff != ZERO or (
                cfg.pfn_check != ZERO and pte_pfn(expected, cfg) + np.uint64(3) >= folio_end
            ):
                break
            bits = r0 | r1 | r2 | r3
            any_writable |= (bits & cfg.write) != ZERO
            any_young |= (bits & cfg.young) != ZERO
            any_dirty |= (bits & cfg.dirty) != ZERO
            expected = expected + PFN_4
            g += 4
            last_read = g - 1
    while g < end:
        if plain and g < limit:
            raw = flat[g]
        else:
            raw = ptep_get(flat, gone, g, limit, cfg)
        last_read = g
        if pte_batch_clear_ignored(raw, cfg) != expected:
            if (raw & cfg.present) == ZERO:
                stop = R.NOT_PRESENT
            elif pte_pfn(raw, cfg) != pte_pfn(expected, cfg):
                stop = R.PFN_GAP
            else:
                stop = R.BIT_MISMATCH
            break
        if cfg.pfn_check != ZERO and pte_pfn(raw, cfg) >= folio_end:
            # gen 1: the next PFN may belong to another folio
            stop = R.FOLIO_END
            break
        any_writable |= (raw & cfg.write) != ZERO
        any_young |= (raw & cfg.young) != ZERO
        any_dirty |= pte_dirty(raw, cfg)
        step = pte_batch_hint(g, raw, cfg)
        expected = pte_advance_pfn(expected, step)
        g += step
    nr = g - g0
    if nr > max_nr:
        nr = max_nr
    return nr, stop, last_read, any_writable, any_young, any_dirty


@jit(inline=True)
def read_cost(pte, cfg):
    """Entries one ``ptep_get`` of ``pte`` reads: arm64's contpte gather reads its whole
    16-entry block (docs/model.md section 10)."""
    if pte_valid_cont(pte, cfg):
        return CONT_PTES
    return 1


@jit()  # once per batch; not inlined, like batch_findings
def loop_reads(flat, gone, g0, last_read, limit, cfg):
    """Entries read by the ``ptep_get`` calls of folio_pte_batch's loop for a batch from
    ``g0`` whose last read was ``last_read`` (0 when the loop read nothing).

    The loop reads at ``g0 + hint``, then steps by each read's hint, up to
    ``last_read``; without contpte every entry in between was read once."""
    if cfg.cont == ZERO:
        return last_read - g0
    n = 0
    g = g0 + pte_batch_hint(g0, pte_read(flat, gone, g0, limit), cfg)
    while g <= last_read:
        raw = pte_read(flat, gone, g, limit)
        n += read_cost(raw, cfg)
        g += pte_batch_hint(g, raw, cfg)
    return n


@jit(inline=True)
def overrun_bits(last_read, table_end, g, va, vma_end):
    """Overrun bits of a batch from g (at va) whose loop read up to last_read."""
    over = 0
    if last_read >= table_end:
        over |= R.OVER_TABLE
    # va < vma_end: compare offsets, since va + offset wraps past the top of the space
    if (np.uint64(last_read - g) << PAGE_SHIFT) >= vma_end - va:
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
def past_folio(first_pfn, nr, folio_end):
    """PAST_FOLIO if a batch of ``nr`` pages from ``first_pfn`` covers a page past its folio."""
    if first_pfn + np.uint64(nr) > folio_end:
        return R.PAST_FOLIO
    return 0


@jit(inline=True)
def findings_reread(nr, cfg):
    """Whether :func:`batch_findings` re-reads a batch's entries (a detector applies)."""
    return nr > 1 and (
        cfg.spread != ZERO or cfg.spread_dirty != ZERO or (cfg.uffd_wp != ZERO and cfg.cont != ZERO)
    )


@jit()  # once per batch; not inlined, which saves compile time at no measured cost
def batch_findings(flat, gone, g, nr, limit, first_pfn, folio_end, cfg):
    """Detector bits of a batch of ``nr`` entries from ``g`` beyond the overruns.

    PAST_FOLIO: it covers a page past its folio.  SPREAD: its entries differ in
    a bit a write-back caller stamps from the first PTE.  UFFD_WP: its entries
    differ in uffd-wp (possible only for entries a contpte hint skipped).  The
    entries are checked raw, every one of them, whether the loop read it or not.
    """
    found = past_folio(first_pfn, nr, folio_end)
    spread = cfg.spread
    uffd = cfg.uffd_wp
    dirty = cfg.spread_dirty != ZERO
    if findings_reread(nr, cfg):
        first = pte_read(flat, gone, g, limit)
        d0 = pte_dirty(first, cfg)
        for k in range(g + 1, g + nr):
            raw = pte_read(flat, gone, k, limit)
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
    gone = np.zeros(0, dtype=np.uint8)  # nothing cleared
    pte = ptep_get(arr, gone, index, limit, cfg)
    nr, stop, last, w, y, d = folio_pte_batch(
        arr, gone, index, limit, pte, max_nr, folio_pfn, folio_nr, cfg
    )
    return nr, stop, last, w, y, d, pte
