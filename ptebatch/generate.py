"""Seeded synthetic address spaces, built with vectorised NumPy (no per-folio loop)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .arch import PMD_SIZE, PTRS_PER_PTE, PAGE_SHIFT, get_arch
from .space import FOLIO_ANON, FOLIO_SWAPBACKED, AddressSpace

__all__ = ["generate", "PRESETS"]

# Folio size mixes: probability of each order (0 = 4 KiB ... 9 = 2 MiB).
PRESETS: dict[str, dict[int, float]] = {
    "4k": {0: 1.0},
    "mthp16": {2: 1.0},
    "mthp32": {3: 1.0},
    "mthp64": {4: 1.0},
    "thp": {9: 1.0},
    "mixed": {0: 0.55, 2: 0.1, 3: 0.1, 4: 0.2, 9: 0.05},
}

_BASE_VA = 0x10000000000   # 1 TiB, as in the thread's reproducer
_BASE_PFN = 0x100000
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a stateless hash of uint64 values."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _tree_permute(offset: np.ndarray, order: np.ndarray, levels: int, key: int) -> np.ndarray:
    """Move aligned blocks to other aligned slots: swap sibling subtrees at random.

    A folio of order k keeps its pages in order and moves as a unit, since only
    levels >= k apply to it; different folios never collide.
    """
    out = offset.copy()
    for level in range(levels):
        prefix = offset >> np.uint64(level + 1)
        h = _mix64(prefix * _GOLDEN + np.uint64(key * 64 + level))
        flip = ((h & np.uint64(1)) == np.uint64(1)) & (order <= level)
        out ^= np.where(flip, np.uint64(1 << level), np.uint64(0))
    return out


def _check_rate(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be a fraction from 0 to 1, got {value!r}")
    return float(value)


def generate(n_folios: int, *, seed: int = 0, sizes: str | Mapping[int, float] = "mixed",
             moved: float = 0.05, straddle: float = 0.5, holes: float = 0.0,
             shuffle_pfn: bool = True, lazyfree: float = 0.3, write: float = 0.9,
             young: float = 0.5, dirty: float = 0.3, soft_dirty: float = 0.2, uffd_wp: float = 0.0,
             vma_tables: int = 32, arch: str = "x86_64") -> AddressSpace:
    """Make a seeded synthetic address space.

    Parameters
    ----------
    n_folios : int
        Folios to map (order-0 ones included; only large folios are listed).
    seed : int
        Same seed, same bytes.
    sizes : str or mapping
        Preset name (``"4k"``, ``"mthp16"``, ``"mthp32"``, ``"mthp64"``, ``"thp"``,
        ``"mixed"``) or ``{order: weight}`` for orders 0-9.
    moved : float
        Fraction of folios moved by mremap to their own VMA at a page offset.
    straddle : float
        Of the moved large folios, the fraction placed across a 2 MiB boundary.
    holes : float
        Fraction of mapped entries cleared (not present).
    shuffle_pfn : bool
        Physical order unrelated to virtual order; otherwise VA neighbours are
        PFN neighbours.
    lazyfree : float
        Fraction of folios that are lazyfree (anon, not swapbacked).
    write, young, dirty, soft_dirty, uffd_wp : float
        Rates: write and soft-dirty and uffd-wp per folio, young and dirty per
        entry (hardware sets those page by page).
    vma_tables : int
        Tables per VMA in the unmoved region (VMAs are separated by a 2 MiB gap).

    Returns
    -------
    AddressSpace
    """
    if isinstance(n_folios, bool) or not isinstance(n_folios, (int, np.integer)) or n_folios < 1:
        raise ValueError(f"n_folios: must be a positive integer, got {n_folios!r}")
    for name, v in (("moved", moved), ("straddle", straddle), ("holes", holes),
                    ("lazyfree", lazyfree), ("write", write), ("young", young), ("dirty", dirty),
                    ("soft_dirty", soft_dirty), ("uffd_wp", uffd_wp)):
        _check_rate(name, v)
    if isinstance(sizes, str):
        if sizes not in PRESETS:
            raise ValueError(f"sizes: unknown preset {sizes!r} (known: {', '.join(PRESETS)})")
        mix = PRESETS[sizes]
    else:
        mix = dict(sizes)
    if not mix or any(not 0 <= int(o) <= 9 for o in mix) or any(w < 0 for w in mix.values()) \
            or sum(mix.values()) <= 0:
        raise ValueError("sizes: weights must be >= 0 for orders 0 to 9, with a positive sum")
    if vma_tables < 1:
        raise ValueError("vma_tables: must be at least 1")
    a = get_arch(arch)
    n = int(n_folios)
    rng = np.random.default_rng(seed)
    orders_k = np.array(sorted(mix), dtype=np.int64)
    p = np.array([mix[o] for o in orders_k], dtype=np.float64)
    order = np.sort(rng.choice(orders_k, size=n, p=p / p.sum()))[::-1].astype(np.uint64)
    nr = np.uint64(1) << order
    # Largest first: every prefix sum is aligned to the next folio's size.
    offset = np.cumsum(nr) - nr
    total = int(offset[-1] + nr[-1])
    levels = max(int(total - 1).bit_length(), 1)
    va_off = _tree_permute(offset, order, levels, seed * 2 + 1)
    pfn_off = _tree_permute(offset, order, levels, seed * 2 + 2) if shuffle_pfn else va_off
    pfn = np.uint64(_BASE_PFN) + pfn_off

    # Unmoved folios: VMAs of vma_tables tables, each followed by a 2 MiB gap.
    span = np.uint64(vma_tables * PTRS_PER_PTE)
    va_page = (va_off // span) * (span + np.uint64(PTRS_PER_PTE)) + va_off % span
    va_page += np.uint64(_BASE_VA >> PAGE_SHIFT)
    vma_idx = va_off // span
    n_main_vmas = int(vma_idx.max()) + 1
    main_start = np.uint64(_BASE_VA) + np.arange(n_main_vmas, dtype=np.uint64) * (span + np.uint64(PTRS_PER_PTE)) * np.uint64(4096)
    main_end = main_start + span * np.uint64(4096)
    # trim each VMA to the pages it really holds (keeps VMA ends meaningful)
    used_end = np.zeros(n_main_vmas, dtype=np.uint64)
    np.maximum.at(used_end, vma_idx.astype(np.intp), (va_page + nr) << np.uint64(PAGE_SHIFT))
    main_end = np.minimum(main_end, used_end)

    # Moved folios: each in its own VMA, in its own 4 MiB window, at a page offset.
    is_moved = rng.random(n) < moved
    m = np.flatnonzero(is_moved)
    m_nr = nr[m]
    strad = (rng.random(m.size) < straddle) & (m_nr > 1)
    lo = np.where(strad, np.uint64(PTRS_PER_PTE) - m_nr + np.uint64(1), np.uint64(0))
    hi = np.where(strad, np.uint64(PTRS_PER_PTE - 1), np.uint64(PTRS_PER_PTE) - m_nr)
    hi = np.maximum(hi, lo)
    off = lo + (rng.random(m.size) * (hi - lo + np.uint64(1)).astype(np.float64)).astype(np.uint64)
    off = np.minimum(off, hi)
    moved_base = (int(main_end.max()) + 2 * PMD_SIZE + PMD_SIZE - 1) // PMD_SIZE * PMD_SIZE
    win = np.uint64(moved_base >> PAGE_SHIFT) + np.arange(m.size, dtype=np.uint64) * np.uint64(2 * PTRS_PER_PTE)
    va_page[m] = win + off
    m_start = va_page[m] << np.uint64(PAGE_SHIFT)
    m_end = (va_page[m] + m_nr) << np.uint64(PAGE_SHIFT)
    # VMAs of unmoved folios only cover what is left there
    vma_start = np.concatenate((main_start, m_start))
    vma_end = np.concatenate((main_end, m_end))

    # Per-page arrays.
    starts = np.cumsum(nr) - nr
    fid = np.repeat(np.arange(n, dtype=np.int64), nr.astype(np.int64))
    k = np.arange(fid.size, dtype=np.uint64) - starts[fid]
    page_va = (va_page[fid] + k) << np.uint64(PAGE_SHIFT)
    page_pfn = pfn[fid] + k
    f_write = rng.random(n) < write
    f_sd = rng.random(n) < soft_dirty
    f_uffd = rng.random(n) < uffd_wp
    ptes = a.make_pte(page_pfn, write=f_write[fid], young=rng.random(fid.size) < young,
                      dirty=rng.random(fid.size) < dirty, soft_dirty=f_sd[fid], uffd_wp=f_uffd[fid])
    if holes:
        ptes[rng.random(fid.size) < holes] = 0

    keep_vma = vma_start < vma_end
    vma_start, vma_end = vma_start[keep_vma], vma_end[keep_vma]
    o = np.argsort(vma_start, kind="stable")
    large = nr > 1
    f_order = np.argsort(pfn[large], kind="stable")
    flags = np.where(rng.random(n) < lazyfree, FOLIO_ANON, FOLIO_ANON | FOLIO_SWAPBACKED).astype(np.uint8)
    return AddressSpace.from_entries(page_va, ptes, vma_start[o], vma_end[o], pfn[large][f_order],
                                     nr[large][f_order], flags[large][f_order], arch=arch)
