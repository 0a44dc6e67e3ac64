"""Compiled loops of the synthetic generator (:mod:`ptebatch.workloads.generator`).

All random numbers are drawn in NumPy before these run, or come from a
stateless hash of (key, folio, page), so the bytes never depend on thread
scheduling.  Integer arithmetic only; PTE/PFN/VA values are uint64 and every
constant mixed with them is a ``np.uint64``.
"""

from __future__ import annotations

import numpy as np

from .options import jit, prange

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U9 = np.uint64(9)
_U511 = np.uint64(511)
_U512 = np.uint64(512)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S10 = np.uint64(10)
_S12 = np.uint64(12)
_S21 = np.uint64(21)
_S42 = np.uint64(42)
_M21 = np.uint64((1 << 21) - 1)
_U15 = np.uint64(15)
_U16 = np.uint64(16)
_S16 = np.uint64(16)
_B64K = np.uint64(1 << 16)


@jit(inline=True)
def mix64(x):
    """splitmix64 finaliser: a stateless hash of one uint64."""
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


@jit()
def pack_tables(order):
    """Pack folios, in the order given, into 2 MiB tables; returns (table, offset, tables).

    Folios fill the current table until the next one does not fit; then a new
    table starts.  Folios of 512 KiB and more (order >= 7) fill tables of
    their own, so a small folio never strands most of a table.  Inside a
    table, folios go largest first, so every offset is aligned to its folio's
    size.  ``table`` numbers tables in the order they were opened.
    """
    n = order.shape[0]
    acc = np.empty(n, dtype=np.int64)
    cur = np.zeros(2, dtype=np.int64)
    fill = np.full(2, 512, dtype=np.int64)
    n_acc = 0
    for i in range(n):
        c = 1 if order[i] >= 7 else 0
        size = np.int64(1) << np.int64(order[i])
        if fill[c] + size > 512:
            cur[c] = n_acc
            n_acc += 1
            fill[c] = 0
        acc[i] = cur[c]
        fill[c] += size
    start = np.zeros((n_acc, 10), dtype=np.int64)
    for i in range(n):
        start[acc[i], order[i]] += 1
    for t in range(n_acc):
        s = np.int64(0)
        for o in range(9, -1, -1):
            c = start[t, o]
            start[t, o] = s
            s += c << np.int64(o)
    off = np.empty(n, dtype=np.uint64)
    for i in range(n):
        t = acc[i]
        o = order[i]
        off[i] = np.uint64(start[t, o])
        start[t, o] += np.int64(1) << np.int64(o)
    return acc, off, n_acc


@jit(parallel=True)
def shuffle_within_tables(off, order, key):
    """Swap sibling blocks below 2 MiB at random (a hash of the block's prefix).

    A folio of order k moves as a unit (only levels >= k apply to it), so
    folios stay aligned and never collide; nothing leaves its 512-page block.
    """
    out = np.empty_like(off)
    for i in prange(off.shape[0]):
        x = off[i]
        for level in range(np.int64(order[i]), 9):
            lv = np.uint64(level)
            h = mix64((off[i] >> (lv + _U1)) * _GOLDEN + key + lv)
            if (h & _U1) == _U1:
                x ^= _U1 << lv
        out[i] = x
    return out


@jit()
def place_moved(m, straddle, gap, before, spread, start):
    """Start page of each moved folio's mapped part, packed after ``start``.

    ``m`` pages are mapped.  A straddling one gets ``before`` pages below the
    next 2 MiB boundary after ``gap`` free pages; any other one starts ``gap``
    pages after the previous VMA, or ``spread`` pages into the next table when
    that would cross a boundary.  Returns (starts, first free page).
    """
    n = m.shape[0]
    out = np.empty(n, dtype=np.uint64)
    cur = start
    for i in range(n):
        s = cur + gap[i]
        mi = m[i]
        if straddle[i]:
            b = (s + before[i] + _U511) & ~_U511
            s = b - before[i]
        elif (s & _U511) + mi > _U512:
            s = ((s + _U511) & ~_U511) + spread[i]
        out[i] = s
        cur = s + mi
    return out, cur


@jit(inline=True)
def apply_steps(pte, steps):
    """Apply masked steps (rows ``cond_set, cond_clear, set, clear`` of a uint64
    array, as in :class:`ptebatch.arch.Arch`) to one PTE."""
    for s in range(steps.shape[0]):
        cs = steps[s, 0]
        if (pte & cs) == cs and (pte & steps[s, 1]) == _U0:
            pte = (pte | steps[s, 2]) & ~steps[s, 3]
    return pte


@jit(parallel=True)
def fill_ptes(
    flat,
    rank,
    first_table,
    vbase,
    pfn,
    lo,
    hi,
    wp_from,
    fbits,
    key,
    t_hole,
    t_young,
    t_dirty,
    young_bit,
    dirty_steps,
    wp_steps,
):
    """Write every mapped PTE of every folio into the flat table array.

    Folio i maps its pages lo[i]..hi[i]-1; page k is at virtual page
    ``vbase[i] + k`` and PFN ``pfn[i] + k``.  One hash per page decides a hole
    (entry left 0), accessed and dirty.  Each entry starts from the folio's
    bits (write included), gets accessed, then dirty by ``dirty_steps`` (the
    architecture's ``make_dirty``), then, from page ``wp_from[i]`` on,
    ``wp_steps`` (``pte_wrprotect``).  Dirty before write-protect: such a page
    was written while writable and then write-protected (hardware cannot dirty
    a read-only arm64 PTE), so on arm64 ``pte_wrprotect`` saves the hardware
    dirty state (read-only clear) in the software dirty bit.  With arm64's
    ``make_dirty`` (software dirty on a read-only entry) the other order gives
    the same bytes; on x86-64 the two steps touch different bits.
    Folios own disjoint entries, so the parallel loop is race free.
    """
    for i in prange(vbase.shape[0]):
        vb = vbase[i]
        pf = pfn[i]
        fb = fbits[i]
        wf = np.uint64(wp_from[i])
        fi = np.uint64(i) << _S10
        for kk in range(np.int64(lo[i]), np.int64(hi[i])):
            k = np.uint64(kk)
            h = mix64((fi | k) * _GOLDEN + key)
            if (h & _M21) < t_hole:
                continue
            pte = ((pf + k) << _S12) | fb
            if ((h >> _S21) & _M21) < t_young:
                pte |= young_bit
            if ((h >> _S42) & _M21) < t_dirty:
                pte = apply_steps(pte, dirty_steps)
            if k >= wf:
                pte = apply_steps(pte, wp_steps)
            v = vb + k
            row = rank[np.int64((v >> _U9) - first_table)]
            flat[row * 512 + np.int64(v & _U511)] = pte


@jit(parallel=True)
def fold_contpte(
    flat,
    table_va,
    vma_start,
    vma_end,
    folio_pfn,
    folio_nr,
    present,
    special,
    pfn_mask,
    norm_steps,
    cont_bit,
    key,
    t_fold,
):
    """Set the contiguous bit on every eligible aligned 16-entry block chosen by the hash.

    Block b is entries 16b..16b+15 of the flat array (64 KiB of VA, aligned;
    32 blocks per table).  It is eligible, as for arm64's ``contpte_try_fold``,
    when all 16 entries are present and not special, map PFNs p..p+15 with
    p % 16 == 0 inside one listed folio of at least 16 pages, are equal after
    ``norm_steps`` (``pte_mkold(pte_mkclean())``) outside the PFN, and the
    whole 64 KiB lies in one VMA (byte addresses, sorted, disjoint).  A block
    is chosen when ``mix64(va >> 16, key)`` is below ``t_fold`` (of 2**21).
    Young and dirty of each entry are left as they are.  Blocks own disjoint
    entries, so the parallel loop is race free.
    """
    keep = ~pfn_mask
    for b in prange(flat.shape[0] >> 4):
        e = b * 16
        p0 = flat[e]
        if (p0 & present) == _U0 or (p0 & special) != _U0:
            continue
        pfn0 = (p0 & pfn_mask) >> _S12
        if (pfn0 & _U15) != _U0:
            continue
        va = table_va[b >> 5] + (np.uint64(b & 31) << _S16)
        if (mix64((va >> _S16) * _GOLDEN + key) & _M21) >= t_fold:
            continue
        norm0 = apply_steps(p0, norm_steps) & keep
        ok = True
        for j in range(1, 16):
            q = flat[e + j]
            if (
                (q & present) == _U0
                or (q & special) != _U0
                or ((q & pfn_mask) >> _S12) != pfn0 + np.uint64(j)
                or (apply_steps(q, norm_steps) & keep) != norm0
            ):
                ok = False
                break
        if not ok:
            continue
        f = np.int64(np.searchsorted(folio_pfn, pfn0, side="right")) - 1
        if f < 0 or folio_nr[f] < _U16 or pfn0 + _U16 > folio_pfn[f] + folio_nr[f]:
            continue
        v = np.int64(np.searchsorted(vma_start, va, side="right")) - 1
        if v < 0 or va + _B64K > vma_end[v]:
            continue
        for j in range(16):
            flat[e + j] |= cont_bit
