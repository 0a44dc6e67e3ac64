"""Small layouts from real bugs, built from their description."""

from __future__ import annotations

import numpy as np

from ..arch import PAGE_SIZE, PMD_SIZE, get_arch
from ..space import FOLIO_ANON, FOLIO_SWAPBACKED, AddressSpace

__all__ = [
    "thread_layout",
    "lazyfree_restore_layout",
    "mremap_write_layout",
    "folio_end_layout",
    "xen_pv_layout",
]

CORPUS_BASE = 0x10000000000  # 1 TiB, a 2 MiB boundary

# The reproducer in the LKML thread moved its folio to 4 KiB below this boundary.
THREAD_BOUNDARY = 0x10000200000
THREAD_PFN = 0x113AA0


def thread_layout(
    folio_nr: int = 16,
    before_boundary: int = 1,
    *,
    lazyfree: bool = True,
    pfn: int = THREAD_PFN,
    boundary: int = THREAD_BOUNDARY,
    arch: str = "x86_64",
) -> AddressSpace:
    """The LKML thread's layout: one large folio moved across a 2 MiB boundary.

    Parameters
    ----------
    folio_nr : int
        Folio size in pages (the thread: 16, a 64 KiB mTHP).
    before_boundary : int
        Pages of the folio below the boundary (the thread: 1, so page 0 is in
        entry 511 of table A and pages 1-15 in entries 0-14 of table B).
    lazyfree : bool
        Anon and not swapbacked (after MADV_FREE), as in CVE-2025-38447.
    pfn, boundary : int
        First PFN (aligned to ``folio_nr``) and the 2 MiB boundary.

    Returns
    -------
    AddressSpace
        Two tables, one VMA exactly covering the folio, one folio; the PTEs are
        present, writable, user, clean and old (MADV_FREE cleans them).
    """
    if boundary % PMD_SIZE:
        raise ValueError("boundary: must be a multiple of 2 MiB")
    if not 0 < before_boundary < folio_nr:
        raise ValueError("before_boundary: must leave pages on both sides of the boundary")
    a = get_arch(arch)
    start = boundary - before_boundary * PAGE_SIZE
    va = start + PAGE_SIZE * np.arange(folio_nr, dtype=np.uint64)
    ptes = a.make_pte(pfn + np.arange(folio_nr, dtype=np.uint64), write=True)
    flags = FOLIO_ANON if lazyfree else FOLIO_ANON | FOLIO_SWAPBACKED
    return AddressSpace.from_entries(
        va, ptes, [start], [start + folio_nr * PAGE_SIZE], [pfn], [folio_nr], [flags], arch=arch
    )


def lazyfree_restore_layout(arch: str = "x86_64") -> AddressSpace:
    """Real bug #5 (fixed in 7.0): one 16-page lazyfree folio in entries 16-31 of a
    table, the first 8 PTEs writable and the last 8 read-only.

    Reclaim before 7.0 ignores write, batches all 16 and, when it must abort
    (the folio was redirtied), writes the first PTE back to all 16: the
    read-only half becomes writable.  On arm64 the two halves differ in
    attributes, so no contpte block forms.
    """
    a = get_arch(arch)
    va = CORPUS_BASE + PAGE_SIZE * (16 + np.arange(16, dtype=np.uint64))
    pfn = 0x200000 + np.arange(16, dtype=np.uint64)
    ptes = a.make_pte(pfn, write=np.arange(16) < 8)
    return AddressSpace.from_entries(
        va,
        ptes,
        [int(va[0])],
        [int(va[-1]) + PAGE_SIZE],
        [0x200000],
        [16],
        [FOLIO_ANON],
        arch=a.name,
    )


def mremap_write_layout(arch: str = "arm64") -> AddressSpace:
    """Real bug #4 (6.17, fixed in 6.18): a 32-page anon folio in entries 0-31, a
    writable contpte block followed by a read-only contpte block.

    mremap batches only when ``pte_batch_hint`` is above 1, so this needs an
    architecture with contpte (on x86-64 mremap never batches and the layout
    is harmless).  6.17 ignores write: one batch of 32, and the move stamps
    the first (writable) PTE on all 32.  6.18 respects write: 16 and 16.
    """
    a = get_arch(arch)
    va = CORPUS_BASE + PAGE_SIZE * np.arange(32, dtype=np.uint64)
    pfn = 0x500000 + np.arange(32, dtype=np.uint64)
    ptes = a.make_pte(pfn, write=np.arange(32) < 16, young=True, extra=a.cont)
    return AddressSpace.from_entries(
        va,
        ptes,
        [CORPUS_BASE],
        [CORPUS_BASE + 32 * PAGE_SIZE],
        [0x500000],
        [32],
        [FOLIO_ANON | FOLIO_SWAPBACKED],
        arch=a.name,
    )


def folio_end_layout(arch: str = "x86_64") -> AddressSpace:
    """A 16-page folio (entries 0-15) followed in entry 16 by the physically next PFN
    (an order-0 page) with the same bits: only the folio-end check stops the batch."""
    a = get_arch(arch)
    va = CORPUS_BASE + PAGE_SIZE * np.arange(17, dtype=np.uint64)
    ptes = a.make_pte(0x300000 + np.arange(17, dtype=np.uint64), write=True, young=True)
    return AddressSpace.from_entries(
        va,
        ptes,
        [CORPUS_BASE],
        [CORPUS_BASE + 17 * PAGE_SIZE],
        [0x300000],
        [16],
        [FOLIO_ANON | FOLIO_SWAPBACKED],
        arch=a.name,
    )


def xen_pv_layout(arch: str = "x86_64") -> AddressSpace:
    """Real bug #2's layout: a 4-page folio in entries 453-456, entry 457 empty
    (the XEN PV PTE encoding that made entry 457 match is not modelled)."""
    a = get_arch(arch)
    va = CORPUS_BASE + PAGE_SIZE * (453 + np.arange(4, dtype=np.uint64))
    ptes = a.make_pte(0x400000 + np.arange(4, dtype=np.uint64), write=True)
    return AddressSpace.from_entries(
        va,
        ptes,
        [CORPUS_BASE + 448 * PAGE_SIZE],
        [CORPUS_BASE + 464 * PAGE_SIZE],
        [0x400000],
        [4],
        [FOLIO_ANON | FOLIO_SWAPBACKED],
        arch=a.name,
    )
