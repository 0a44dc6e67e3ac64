"""PTE accessors as the kernel names them, on uint64 entries of a flat table view.

``ptep_get`` returns 0 (none) for any index at or past ``limit``, which is
the end of the table for ``oob="none"`` and the end of the array for
``oob="adjacent"``, and for any entry an unmap has cleared (its bit set in
``gone``, one bit per flat entry; a scan passes an empty ``gone``); on
arm64 it returns a contpte entry with the young and dirty bits of its
16-entry block (``contpte_ptep_get``), and ``pte_batch_hint`` lets a batch
jump over the rest of the block.
"""

from __future__ import annotations

import numpy as np

from .options import jit

ZERO = np.uint64(0)
ONE = np.uint64(1)
PAGE_SHIFT = np.uint64(12)
PMD_SIZE = np.uint64(1 << 21)
PMD_MASK = np.uint64(((1 << 64) - 1) ^ ((1 << 21) - 1))
PTRS_PER_PTE = 512
CONT_PTES = 16


@jit(inline=True)
def pte_pfn(pte, cfg):
    return (pte & cfg.pfn_mask) >> PAGE_SHIFT


@jit(inline=True)
def pte_advance_pfn(pte, nr):
    return pte + (np.uint64(nr) << PAGE_SHIFT)


@jit(inline=True)
def pte_batch_clear_ignored(pte, cfg):
    """__pte_batch_clear_ignored: clear the bits this call ignores."""
    cond = cfg.cond_set
    if cond != ZERO and (pte & cond) == cond and (pte & cfg.cond_clear) == ZERO:
        pte = pte | cfg.cond_or
    return (pte & cfg.keep) | cfg.set


@jit(inline=True)
def pte_dirty(pte, cfg):
    if (pte & cfg.dirty) != ZERO:
        return True
    hw = cfg.dirty_hw_set
    return hw != ZERO and (pte & hw) == hw and (pte & cfg.dirty_hw_clear) == ZERO


@jit(inline=True)
def pte_batch_hint(g, pte, cfg):
    """Entries the scan may skip: 1, or to the end of a contiguous block."""
    cont = cfg.cont
    if cont != ZERO and (pte & cfg.present) != ZERO and (pte & cont) != ZERO:
        return CONT_PTES - (g & (CONT_PTES - 1))
    return 1


@jit(inline=True)
def is_gone(gone, g):
    """Whether an unmap already cleared entry g (never, with an empty ``gone``)."""
    return gone.shape[0] != 0 and (gone[g >> 3] >> np.uint8(g & 7)) & np.uint8(1) != np.uint8(0)


@jit(inline=True)
def pte_read(flat, gone, g, limit):
    """The raw entry (what __ptep_get reads); 0 at or past ``limit`` or once cleared."""
    if g < limit and not is_gone(gone, g):
        return flat[g]
    return ZERO


@jit(inline=True)
def pte_valid_cont(pte, cfg):
    cont = cfg.cont
    return cont != ZERO and (pte & cfg.present) != ZERO and (pte & cont) != ZERO


@jit(inline=True)
def pte_mkdirty(pte, cfg):
    pte = pte | cfg.mkdirty_set
    cond = cfg.mkdirty_if
    if cond != ZERO and (pte & cond) == cond:
        pte = pte & ~cfg.mkdirty_clear
    return pte


@jit()  # not inlined: only contpte entries get here, and inlining cost 1.3 s of compile
def contpte_ptep_get(flat, gone, g, limit, orig, cfg):
    """Young and dirty of a contpte entry are those of its whole 16-entry block:
    the MMU updates only the entry it used."""
    young = False
    dirty = False
    b = g - (g & (CONT_PTES - 1))
    for k in range(b, b + CONT_PTES):
        raw = pte_read(flat, gone, k, limit)
        young |= (raw & cfg.young) != ZERO
        dirty |= pte_dirty(raw, cfg)
    if dirty:
        orig = pte_mkdirty(orig, cfg)
    if young:
        orig = orig | cfg.young
    return orig


@jit(inline=True)
def ptep_get(flat, gone, g, limit, cfg):
    """ptep_get: the entry, with arm64's contpte gather; 0 at or past ``limit``
    (a block never crosses ``limit``: tables and arrays are whole blocks) and
    where an unmap cleared it."""
    pte = pte_read(flat, gone, g, limit)
    if pte_valid_cont(pte, cfg):
        return contpte_ptep_get(flat, gone, g, limit, pte, cfg)
    return pte


@jit(inline=True)
def pmd_addr_end(addr, end):
    """Next 2 MiB boundary above addr, or end if that is lower (end 0 = top).

    The kernel compares ``boundary - 1 < end - 1`` so that a boundary that wraps to 0 counts
    as the top.  Comparing distances from ``addr`` decides the same, and wraps only for
    ``end`` 0, which no walk passes (NumPy warns on a wrap when the JIT is off): a boundary
    at 2**64 is never closer than ``end``.  Minus one, as in the kernel, so that a distance
    of 0 (``addr`` 0, ``end`` 0) is the whole space."""
    left = PMD_SIZE - (addr & (PMD_SIZE - ONE))  # bytes to the next boundary, 4 KiB to 2 MiB
    if left - ONE < end - addr - ONE:
        return addr + left
    return end
