"""Small layouts from real bugs, built from their description."""

from __future__ import annotations

import numpy as np

from .arch import PAGE_SIZE, PMD_SIZE, get_arch
from .space import FOLIO_ANON, FOLIO_SWAPBACKED, AddressSpace

__all__ = ["thread_layout"]

# The reproducer in the LKML thread moved its folio to 4 KiB below this boundary.
THREAD_BOUNDARY = 0x10000200000
THREAD_PFN = 0x113AA0


def thread_layout(folio_nr: int = 16, before_boundary: int = 1, *, lazyfree: bool = True,
                  pfn: int = THREAD_PFN, boundary: int = THREAD_BOUNDARY,
                  arch: str = "x86_64") -> AddressSpace:
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
    return AddressSpace.from_entries(va, ptes, [start], [start + folio_nr * PAGE_SIZE],
                                     [pfn], [folio_nr], [flags], arch=arch)
