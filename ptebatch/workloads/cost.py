"""What batching saves, in the kernel's own operations (``ptebatch cost``).

A walk's operations follow from its batches (docs/model.md section 10): the
compiled walks and the naive twin count the entries every ``ptep_get`` reads
(:attr:`ptebatch.ScanResult.pte_reads`); PTE writes are a fixed number per PTE
and the folio, rmap and TLB operations a fixed number per batch, by caller.
Each walk is set next to the same caller in the same release with batching
switched off (``scan(..., batching=False)``, ``unmap(..., batching=False)``).

The scenarios are the published microbenchmarks' setup: a 1 GiB region of
folios of one size, mapped by PTEs (lazyfree: MADV_FREE'd anon folios, every
folio mapped once, unmapped by reclaim).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch import PAGE_SIZE, PMD_SIZE, get_arch
from ..callers import CALLERS, Walk
from ..space import FOLIO_ANON, FOLIO_SWAPBACKED, AddressSpace

__all__ = [
    "CALLER_OPS",
    "FEATURES",
    "OPS",
    "PUBLISHED",
    "SCENARIO_CALLERS",
    "SIZES_KB",
    "OpRule",
    "Published",
    "calibration",
    "cost",
    "features",
    "fit_nnls",
    "region",
    "walk_ops",
]

GIB = 1 << 30
REGION_VA = 1 << 40  # 1 TiB: a 1 GiB-aligned base far from address 0
SIZES_KB = (4, 16, 32, 64, 128, 256, 512, 1024, 2048)
CONT_PTES = 16  # arm64 contpte block (4 KiB granule)

OPS = (
    "pte_reads",
    "pte_writes",
    "folio_ref_updates",
    "mapcount_updates",
    "rmap_calls",
    "tlb_flush_ranges",
)


@dataclass(frozen=True)
class OpRule:
    """Operations of one caller: ``writes`` per PTE; the rest per batch (per PTE unbatched).

    Attributes
    ----------
    writes : int
        PTE stores per PTE (clears included).
    folio_ref, mapcount, rmap, tlb : int
        Folio reference-count updates, mapcount updates, rmap calls and TLB
        flush ranges recorded, per batch.
    source : str
        The kernel functions the rule comes from.
    """

    writes: int
    folio_ref: int
    mapcount: int
    rmap: int
    tlb: int
    source: str


# docs/model.md section 10 derives each row.
CALLER_OPS: dict[str, OpRule] = {
    "zap": OpRule(
        1,
        1,
        1,
        1,
        1,
        "zap_present_ptes: get_and_clear_full_ptes, tlb_remove_tlb_entries, "
        "folio_remove_rmap_ptes, tlb_remove_folio_ptes",
    ),
    "fork-private": OpRule(
        2,
        1,
        1,
        1,
        0,
        "copy_present_ptes: folio_ref_add, folio_try_dup_anon_rmap_ptes, "
        "wrprotect_ptes (parent), set_ptes (child); the TLB is flushed once per fork",
    ),
    "mprotect": OpRule(
        1,
        0,
        0,
        0,
        1,
        "change_pte_range: modify_prot_start_ptes/modify_prot_commit_ptes, "
        "tlb_flush_pte_range; no folio reference or mapcount change",
    ),
    "lazyfree": OpRule(
        1,
        1,
        1,
        1,
        1,
        "try_to_unmap_one (folio_unmap_pte_batch): get_and_clear_full_ptes, one flushed "
        "range (flush_tlb_range or set_tlb_ubc_flush_pending), folio_remove_rmap_ptes, "
        "folio_put_refs",
    ),
}

# The published benchmarks' callers, as scan or unmap presets.
SCENARIO_CALLERS = {
    "fork": "fork-private",
    "munmap": "zap",
    "mprotect": "mprotect",
    "lazyfree": "lazyfree",
}


def walk_ops(result) -> dict:
    """The operations of one walk (a :class:`ptebatch.ScanResult` or
    :class:`ptebatch.UnmapResult` of a caller in :data:`CALLER_OPS`), as a dict
    keyed by :data:`OPS`.

    Parameters
    ----------
    result : ScanResult or UnmapResult

    Returns
    -------
    dict
    """
    rule = CALLER_OPS.get(result.caller)
    if rule is None:
        raise ValueError(
            f"caller: operation counts are defined for {', '.join(CALLER_OPS)}, "
            f"not {result.caller!r}"
        )
    batches, ptes = result.batches, result.ptes_batched
    return {
        "pte_reads": int(result.pte_reads),
        "pte_writes": rule.writes * ptes,
        "folio_ref_updates": rule.folio_ref * batches,
        "mapcount_updates": rule.mapcount * batches,
        "rmap_calls": rule.rmap * batches,
        "tlb_flush_ranges": rule.tlb * batches,
    }


def region(
    folio_kb: int, arch: str = "x86_64", size: int = GIB, lazyfree: bool = False
) -> AddressSpace:
    """``size`` bytes of anonymous folios of ``folio_kb`` KiB, mapped by PTEs in one VMA.

    Every PTE is present, writable, young and dirty; folios are naturally aligned in
    both virtual and physical address, so on arm64 every aligned 16-page run of a
    folio of 64 KiB or more is a contpte block (as ``contpte_try_fold`` leaves it).

    Parameters
    ----------
    folio_kb : int
        Folio size, a power of two from 4 (order 0) to 2048 (PMD size).
    arch : str
    size : int
        Bytes, a positive multiple of 2 MiB.
    lazyfree : bool
        The folios are lazyfree (anon, not swapbacked: after MADV_FREE) rather
        than ordinary anon (swapbacked).

    Returns
    -------
    AddressSpace
    """
    a = get_arch(arch)
    kind = FOLIO_ANON if lazyfree else FOLIO_ANON | FOLIO_SWAPBACKED
    if folio_kb not in SIZES_KB:
        raise ValueError(
            f"folio_kb: must be one of {', '.join(map(str, SIZES_KB))}, got {folio_kb}"
        )
    if size <= 0 or size % PMD_SIZE:
        raise ValueError(f"size: must be a positive multiple of 2 MiB, got {size}")
    nr = folio_kb * 1024 // PAGE_SIZE
    n = size // PAGE_SIZE
    pfn0 = 1 << 20  # 4 GiB physical: aligned for every folio size
    pfn = pfn0 + np.arange(n, dtype=np.uint64)
    extra = 0
    if a.cont and nr >= CONT_PTES:
        extra = np.uint64(a.cont)
    ptes = a.make_pte(pfn, write=True, young=True, dirty=True, extra=extra)
    tables = n // 512
    table_va = REGION_VA + PMD_SIZE * np.arange(tables, dtype=np.uint64)
    large = nr > 1
    n_folios = n // nr if large else 0
    return AddressSpace(
        ptes.reshape(tables, 512),
        table_va,
        np.array([REGION_VA], dtype=np.uint64),
        np.array([REGION_VA + size], dtype=np.uint64),
        pfn0 + nr * np.arange(n_folios, dtype=np.uint64),
        np.full(n_folios, nr, dtype=np.uint64),
        np.full(n_folios, kind, dtype=np.uint8),
        arch=a.name,
    )


def _ratio(unbatched: int, batched: int) -> float | None:
    return round(unbatched / batched, 4) if batched else None


def cost(
    sizes=SIZES_KB,
    arches=("x86_64", "arm64"),
    callers=tuple(SCENARIO_CALLERS),
    kernel: str = "6.18",
    size: int = GIB,
    impl=None,
) -> list[dict]:
    """Operation counts of every scenario, batched and unbatched, with their ratios.

    Parameters
    ----------
    sizes : sequence of int
        Folio sizes in KiB (:data:`SIZES_KB`).
    arches : sequence of str
    callers : sequence of str
        Keys of :data:`SCENARIO_CALLERS` (``fork``, ``munmap``, ``mprotect``,
        ``lazyfree``).
    kernel : str
        Release; every scenario caller batches from 6.17.  In a release where a
        caller does not batch yet (lazyfree before 6.15), batched equals unbatched.
    size : int
        Region size in bytes (1 GiB, as the published benchmarks).
    impl : module, optional
        ``ptebatch`` (default) or ``ptebatch.naive``.

    Returns
    -------
    list of dict
        One row per (arch, caller, size): ``batched`` and ``unbatched`` op
        dicts, and ``ratio`` (unbatched / batched, ``None`` when batched is 0).
        Lazyfree at 4 KiB counts nothing: the unmap model walks large folios
        only (an order-0 folio has nothing to batch), so its ratios are ``None``.
    """
    if impl is None:
        from .. import engine as impl
    for c in callers:
        if c not in SCENARIO_CALLERS:
            raise ValueError(f"callers: must be among {', '.join(SCENARIO_CALLERS)}, got {c!r}")
    rows = []
    for arch in arches:
        for kb in sizes:
            spaces = {}
            for c in callers:
                preset = SCENARIO_CALLERS[c]
                unmaps = CALLERS[preset].walk == Walk.UNMAP
                if unmaps not in spaces:
                    spaces[unmaps] = region(kb, arch, size, lazyfree=unmaps)
                walk = impl.unmap if unmaps else impl.scan
                ops = {}
                for mode in (True, False):
                    r = walk(
                        spaces[unmaps], caller=preset, kernel=kernel, rows=False, batching=mode
                    )
                    ops[mode] = walk_ops(r)
                rows.append(
                    {
                        "arch": get_arch(arch).name,
                        "caller": c,
                        "preset": preset,
                        "kernel": kernel,
                        "folio_kb": kb,
                        "batched": ops[True],
                        "unbatched": ops[False],
                        "ratio": {k: _ratio(ops[False][k], ops[True][k]) for k in OPS},
                    }
                )
    return rows


# -- calibration: a linear model from operation counts to time ------------------

FEATURES = ("pte_ops", "folio_ops", "tlb_flush_ranges", "walk")


def features(ops: dict) -> np.ndarray:
    """The model's regressors for one walk's operations (a dict keyed by :data:`OPS`).

    ``pte_ops`` = PTE reads + writes, ``folio_ops`` = folio reference and mapcount
    updates + rmap calls, ``tlb_flush_ranges``, and 1 for the walk itself.

    Parameters
    ----------
    ops : dict

    Returns
    -------
    numpy.ndarray of float64, shape (4,)
    """
    return np.array(
        [
            ops["pte_reads"] + ops["pte_writes"],
            ops["folio_ref_updates"] + ops["mapcount_updates"] + ops["rmap_calls"],
            ops["tlb_flush_ranges"],
            1,
        ],
        dtype=np.float64,
    )


def fit_nnls(x, y) -> np.ndarray:
    """Non-negative least squares: the ``c >= 0`` minimising ``|x @ c - y|``.

    Exact for the few columns of this model: every subset of columns is solved
    unconstrained (``numpy.linalg.lstsq``), and the best solution with no
    negative coefficient wins (the NNLS optimum is the unconstrained optimum on
    its set of positive coefficients).  Columns are scaled to unit norm first,
    so counts in the millions and a per-walk 1 sit side by side.

    Parameters
    ----------
    x : array_like, shape (n, k)
        One row of regressors per timing; ``k`` at most 12.
    y : array_like, shape (n,)
        The timings.

    Returns
    -------
    numpy.ndarray of float64, shape (k,)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x, y: need shapes (n, k) and (n,), got {x.shape} and {y.shape}")
    k = x.shape[1]
    if not 1 <= k <= 12:
        raise ValueError(f"x: 1 to 12 columns, got {k}")
    norm = np.linalg.norm(x, axis=0)
    norm[norm == 0] = 1.0
    xs = x / norm
    best, best_res = np.zeros(k), float(np.sum(y**2))
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        c, *_ = np.linalg.lstsq(xs[:, cols], y, rcond=None)
        if np.any(c < 0):
            continue
        res = float(np.sum((xs[:, cols] @ c - y) ** 2))
        if res < best_res - 1e-15 * max(best_res, 1.0):
            best_res = res
            best = np.zeros(k)
            best[cols] = c
    return best / norm


@dataclass(frozen=True)
class Published:
    """One published before/after timing of a batching series.

    Attributes
    ----------
    caller, arch : str
        Scenario caller (:data:`SCENARIO_CALLERS`) and architecture.
    folio_kb, size_mib : int
        Folio size and the benchmark's region size.
    unbatched_s, batched_s : float or None
        Seconds before and after the series; ``None`` where the source read
        gives no figure.
    speedup : float or None
        The speedup the source states, where it states one rather than timings.
    source : str
        Where the figure was read; ``""`` when it was not verified.
    """

    caller: str
    arch: str
    folio_kb: int
    size_mib: int
    unbatched_s: float | None = None
    batched_s: float | None = None
    speedup: float | None = None
    source: str = ""

    @property
    def published_speedup(self) -> float | None:
        if self.unbatched_s is not None and self.batched_s:
            return self.unbatched_s / self.batched_s
        return self.speedup


_MPROTECT_SRC = (
    'Dev Jain, "[PATCH v5 0/7] Optimize mprotect() for large folios", linux-arm-kernel, '
    "18 July 2025 (lists.infradead.org/pipermail/linux-arm-kernel/2025-July/1046225.html); "
    "Apple M3, 1 GiB toggled read-only/read-write 40 times"
)
_LAZYFREE_SRC = (
    'Barry Song, "[PATCH v4 0/4] mm: batched unmap lazyfree large folios during '
    'reclamation", 14 Feb 2025, as quoted by Lorenzo Stoakes (linux-riscv, 25 June 2025): '
    '"reclaiming 64KiB lazyfree large folios is now 2.5x faster"; patch 3/4 reclaims '
    "128 MB (the architecture is not stated in the text read)"
)

# Every figure here was read in the source named; fork and munmap were not found in a
# source that could be read (their setups, x86-64 Xeon Silver 4210R for munmap, were).
PUBLISHED = (
    Published("mprotect", "arm64", 4, 1024, 1.0, 1.1, source=_MPROTECT_SRC),
    Published("mprotect", "arm64", 64, 1024, 2.0, 0.7, source=_MPROTECT_SRC),
    Published("mprotect", "arm64", 2048, 1024, 2.1, 0.65, source=_MPROTECT_SRC),
    Published("lazyfree", "arm64", 64, 128, speedup=2.5, source=_LAZYFREE_SRC),
    Published("lazyfree", "x86_64", 64, 128, speedup=2.5, source=_LAZYFREE_SRC),
    Published("fork", "x86_64", 16, 1024),
    Published("fork", "x86_64", 64, 1024),
    Published("fork", "x86_64", 2048, 1024),
    Published("munmap", "x86_64", 16, 1024),
    Published("munmap", "x86_64", 64, 1024),
    Published("munmap", "x86_64", 2048, 1024),
)


def calibration(kernel: str = "6.18", scale: float = 1.0, impl=None) -> dict:
    """Fit the linear model on the verified timings of one caller (arm64 mprotect) and
    predict every :data:`PUBLISHED` speedup from its counts.

    Parameters
    ----------
    kernel : str
        Release whose batched walks are counted.
    scale : float
        Region size relative to the benchmark's (tests use less than 1; the walk
        term makes predictions depend on it a little).
    impl : module, optional
        ``ptebatch`` (default) or ``ptebatch.naive``.

    Returns
    -------
    dict
        ``coef`` (per :data:`FEATURES`, in seconds of the fitted benchmark run),
        ``fit_on`` (how many timings), and ``rows``: one per published figure with
        ``published`` and ``predicted`` speedups (``published`` ``None`` when not verified).
    """
    counted = {}
    for p in PUBLISHED:
        size = max(PMD_SIZE, int(p.size_mib * scale) // 2 * PMD_SIZE)
        (row,) = cost(
            sizes=(p.folio_kb,),
            arches=(p.arch,),
            callers=(p.caller,),
            kernel=kernel,
            size=size,
            impl=impl,
        )
        counted[p] = row
    fit = [p for p in PUBLISHED if p.caller == "mprotect" and p.unbatched_s is not None]
    x = [features(counted[p][mode]) for p in fit for mode in ("unbatched", "batched")]
    y = [t for p in fit for t in (p.unbatched_s, p.batched_s)]
    coef = fit_nnls(x, y)
    rows = []
    for p in PUBLISHED:
        r = counted[p]
        before = float(features(r["unbatched"]) @ coef)
        after = float(features(r["batched"]) @ coef)
        rows.append(
            {
                "caller": p.caller,
                "arch": p.arch,
                "folio_kb": p.folio_kb,
                "size_mib": p.size_mib,
                "published": None if p.published_speedup is None else round(p.published_speedup, 2),
                "predicted": round(before / after, 2) if after > 0 else None,
                "fitted_on": p in fit,
                "source": p.source or "not verified",
            }
        )
    return {
        "features": list(FEATURES),
        "coef": dict(zip(FEATURES, (float(c) for c in coef))),
        "fit_on": len(y),
        "rows": rows,
    }
