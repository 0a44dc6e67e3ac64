"""vm_normal_folio for the walks: which listed large folio a PFN belongs to.

Folios are the space's sorted ``folio_pfn``/``folio_nr`` arrays; the indexes
(``fidx`` buckets, the order table) are built by :mod:`ptebatch.planning`.
"""

from __future__ import annotations

import numpy as np

from .options import jit
from .pte import ONE, ZERO


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
def order_bucket(pte, pfn, cfg, obase, oshift, n):
    """Index of ``pfn``'s entry in an order table of ``n`` entries (``forder[(pfn - obase)
    >> oshift]`` = order of the large folio there, -1 for none), or -1 when it has none:
    outside the table, or a special PTE (it maps no folio)."""
    if (pte & cfg.special) != ZERO or pfn < obase:
        return -1
    b = np.int64((pfn - obase) >> oshift)
    if b < n:
        return b
    return -1


@jit(inline=True)
def folio_of_order(pfn, order):
    """vm_normal_folio from an order-table entry: ``(first pfn, pages)`` of the large
    folio holding ``pfn``, or pages 0 (order -1: none).  Folios are naturally aligned, so
    the order gives the start."""
    if order < 0:
        return ZERO, ZERO
    n = ONE << np.uint64(order)
    return pfn & ~(n - ONE), n


@jit(inline=True)
def folio_of_pte(pte, pfn, cfg, folio_pfn, folio_nr, hint, fidx, fbase, fshift):
    """vm_normal_folio for zap without an order table: ``(first pfn, pages, hint)`` of the
    large folio the PTE maps, or pages 0 (order-0 or special); it searches the folio arrays."""
    if (pte & cfg.special) != ZERO:
        return ZERO, ZERO, hint
    f = folio_lookup(folio_pfn, folio_nr, pfn, hint, fidx, fbase, fshift)
    if f >= 0 and folio_nr[f] > ONE:
        return folio_pfn[f], folio_nr[f], f
    return ZERO, ZERO, hint


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
