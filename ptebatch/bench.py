"""Benchmark registry, ratio measurements and the ``ptebatch bench`` command.

One registry (:data:`IMPLS` x :data:`CASES`) feeds the equality tests
(``tests/test_registry.py``), the pytest-benchmark suite (``benchmarks/``) and
the CI gate (``ptebatch bench --gate benchmarks/floors.json``).  The gate uses
only ratios measured in the same run, never absolute times: the machine is
shared and noisy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import engine, naive
from ._jit import num_threads
from .progress import as_hook
from .space import AddressSpace
from .workloads.generator import generate

__all__ = ["IMPLS", "CASES", "Case", "space_for", "measure_ratios", "compile_times"]


@dataclass(frozen=True)
class Impl:
    """One implementation of the walks: ``scan(space, **kw)``, ``unmap(space, **kw)``."""

    name: str
    scan: Callable
    unmap: Callable | None
    limits: dict = field(default_factory=dict)  # keyword values it supports, if restricted
    arches: tuple = ("x86_64", "arm64")  # space encodings it supports
    rows: bool = True  # False: counts only (compare summaries, not rows)

    def supports(self, space: AddressSpace, kw: dict) -> bool:
        """Whether it models ``space`` walked with keywords ``kw``."""
        defaults = {"clamp": "pmd", "caller": "zap"}
        return space.arch in self.arches and all(
            kw.get(k, defaults.get(k)) in allowed for k, allowed in self.limits.items()
        )


def _jit(parallel: bool, rows: bool = True) -> Impl:
    name = ("jit-parallel" if parallel else "jit-serial") + ("" if rows else "-counts")
    return Impl(
        name=name,
        scan=lambda space, **kw: engine.scan(space, parallel=parallel, rows=rows, **kw),
        unmap=lambda space, **kw: engine.unmap(space, parallel=parallel, rows=rows, **kw),
        rows=rows,
    )


def _numpy_impl() -> Impl:
    from .vectorized import scan as np_scan

    return Impl(
        name="numpy",
        scan=np_scan,
        unmap=None,
        limits={"clamp": ("pmd",), "caller": ("zap",)},
        arches=("x86_64",),
    )


IMPLS: dict[str, Impl] = {
    "naive": Impl("naive", naive.scan, naive.unmap),
    "jit-serial": _jit(False),
    "jit-parallel": _jit(True),
    "jit-serial-counts": _jit(False, rows=False),
    "jit-parallel-counts": _jit(True, rows=False),
}
try:  # the vectorised NumPy scan is optional: it covers clamp="pmd" only
    IMPLS["numpy"] = _numpy_impl()
except ImportError:  # pragma: no cover
    pass


@dataclass(frozen=True)
class Case:
    """A seeded space: ``generate(n_folios, seed=seed, **knobs)``."""

    name: str
    n_folios: int
    knobs: tuple = ()
    seed: int = 1
    tier: str = "small"  # small: every test pass; medium: jitted passes; large/huge: benchmarks

    @property
    def arch(self) -> str:
        return dict(self.knobs).get("arch", "x86_64")

    def build(self) -> AddressSpace:
        return generate(self.n_folios, seed=self.seed, **dict(self.knobs))


def _case(name, n, tier, **knobs) -> Case:
    return Case(name, n, tuple(sorted(knobs.items())), tier=tier)


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        _case("mixed-10k", 10_000, "small", sizes="mixed", moved=0.1),
        _case("4k-10k", 10_000, "small", sizes="4k"),
        _case("thp-1k", 1_000, "small", sizes="thp", moved=0.2),
        _case(
            "straddle-10k", 10_000, "small", sizes="mthp64", moved=0.5, straddle=1.0, lazyfree=0.5
        ),
        _case("mixed-100k", 100_000, "medium", sizes="mixed", moved=0.1),
        _case("mthp16-100k", 100_000, "medium", sizes="mthp16", moved=0.1, holes=0.01),
        _case("mixed-1m", 1_000_000, "large", sizes="mixed", moved=0.1),
        _case("4k-1m", 1_000_000, "large", sizes="4k"),
        _case("thp-100k", 100_000, "large", sizes="thp", moved=0.1),
        _case(
            "straddle-1m", 1_000_000, "large", sizes="mthp64", moved=0.5, straddle=1.0, lazyfree=0.5
        ),
        _case("mixed-10m", 10_000_000, "huge", sizes="mixed", moved=0.1),
        # arm64 with contpte blocks (the generator folds every eligible aligned 16-page run)
        _case(
            "arm64-10k", 10_000, "small", sizes="mixed", moved=0.1, arch="arm64", mixed_write=0.2
        ),
        _case("arm64-1m", 1_000_000, "large", sizes="mixed", moved=0.1, arch="arm64"),
    ]
}

TIERS = ("small", "medium", "large", "huge")


@lru_cache(maxsize=4)
def space_for(case_name: str) -> AddressSpace:
    """The case's space, built once per process."""
    return CASES[case_name].build()


def cases_up_to(tier: str) -> list[str]:
    """Case names whose tier is at most ``tier``."""
    top = TIERS.index(tier)
    return [n for n, c in CASES.items() if TIERS.index(c.tier) <= top]


# -- measurements ----------------------------------------------------------------


def _best(fn, repeat: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def _stream(space: AddressSpace):
    # A streaming read of the whole table array, the memory-bound floor.
    np.bitwise_or.reduce(space.ptes.reshape(-1))


def _stream_threads(space: AddressSpace, pool, n: int):
    # The same read split between n threads (NumPy's reduce releases the GIL): what the
    # machine gives a memory-bound loop on n threads, the ceiling of the parallel ratios.
    flat = space.ptes.reshape(-1)
    cuts = [flat.shape[0] * k // n for k in range(n + 1)]
    parts = [flat[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    list(pool.map(np.bitwise_or.reduce, parts))


# rows measure_ratios reports (the progress bar's total)
N_RATIOS = 12


def measure_ratios(quick: bool = True, progress=None) -> list[dict]:
    """Speed ratios measured in one run (best of several repeats for each).

    Returns rows ``{name, measured, target, note}``; ``measured`` is a ratio.
    ``progress(task, done, total, note)`` hears each ratio as it is measured.
    Longer than 80 lines on purpose: each ratio's two timings sit next to each
    other, on spaces built once, in the order the rows are reported.
    """
    small = space_for("mixed-10k")
    big = space_for("mixed-100k" if quick else "mixed-1m")
    reps = 5 if quick else 10
    rows: list[dict] = []
    hook = as_hook(progress)

    def add(row: dict) -> None:
        rows.append(row)
        hook("bench", len(rows), N_RATIOS, row["name"])

    engine.scan(small, parallel=False)
    engine.scan(small, parallel=True)
    engine.unmap(small, parallel=False)

    t_naive = _best(lambda: naive.scan(small), 2 if quick else 3)
    t_ser = _best(lambda: engine.scan(small, parallel=False), reps * 4)
    add(
        {
            "name": "scan jit-serial / naive",
            "measured": t_naive / t_ser,
            "target": 200.0,
            "note": f"mixed-10k, {small.info()['present_ptes']:,} present PTEs",
        }
    )
    t_naive_u = _best(lambda: naive.unmap(small), 2 if quick else 3)
    t_ser_u = _best(lambda: engine.unmap(small, parallel=False), reps * 4)
    add(
        {
            "name": "unmap jit-serial / naive",
            "measured": t_naive_u / t_ser_u,
            "target": 100.0,
            "note": "mixed-10k",
        }
    )

    engine.scan(big, parallel=False)
    t_s = _best(lambda: engine.scan(big, parallel=False), reps)
    t_p = _best(lambda: engine.scan(big, parallel=True), reps)
    add(
        {
            "name": "scan jit-parallel / jit-serial",
            "measured": t_s / t_p,
            "target": 1.8,
            "note": f"{'mixed-100k' if quick else 'mixed-1m'}, {num_threads()} threads",
        }
    )
    t_su = _best(lambda: engine.unmap(big, parallel=False), reps)
    t_pu = _best(lambda: engine.unmap(big, parallel=True), reps)
    add(
        {
            "name": "unmap jit-parallel / jit-serial",
            "measured": t_su / t_pu,
            "target": 1.5,
            "note": "same space",
        }
    )
    t_stream = _best(lambda: _stream(big), reps)
    present = big.info()["present_ptes"]
    add(
        {
            "name": "scan jit-serial / streaming read",
            "measured": t_stream / t_s,
            "target": None,
            "note": f"serial {present / t_s / 1e9:.2f} G present PTEs/s, "
            f"{big.ptes.size / t_s / 1e9:.2f} G entries/s; stream "
            f"{big.ptes.size / t_stream / 1e9:.2f} G entries/s",
        }
    )
    if "numpy" in IMPLS:
        t_np = _best(lambda: IMPLS["numpy"].scan(big), max(2, reps // 2))
        add(
            {
                "name": "scan jit-serial / numpy",
                "measured": t_np / t_s,
                "target": None,
                "note": "vectorised NumPy scan, clamp=pmd",
            }
        )

    # counts mode: the same walk with nothing written per batch (the CLI's default)
    engine.scan(big, parallel=False, rows=False)
    t_cs = _best(lambda: engine.scan(big, parallel=False, rows=False), reps)
    t_cp = _best(lambda: engine.scan(big, parallel=True, rows=False), reps)
    add(
        {
            "name": "scan counts jit-serial / streaming read",
            "measured": t_stream / t_cs,
            "target": 0.35,
            "note": f"rows=False: serial {present / t_cs / 1e9:.2f} G present PTEs/s",
        }
    )
    add(
        {
            "name": "scan counts jit-parallel / jit-serial",
            "measured": t_cs / t_cp,
            "target": 1.8,
            "note": f"rows=False, {num_threads()} threads",
        }
    )

    engine.unmap(big, parallel=False, rows=False)
    t_cus = _best(lambda: engine.unmap(big, parallel=False, rows=False), reps)
    t_cup = _best(lambda: engine.unmap(big, parallel=True, rows=False), reps)
    add(
        {
            "name": "unmap counts jit-parallel / jit-serial",
            "measured": t_cus / t_cup,
            "target": 1.8,
            "note": f"rows=False, {num_threads()} threads",
        }
    )

    n_thr = num_threads()
    with ThreadPoolExecutor(n_thr) as pool:
        _stream_threads(big, pool, n_thr)
        t_st1 = _best(lambda: _stream_threads(big, pool, 1), reps)
        t_stn = _best(lambda: _stream_threads(big, pool, n_thr), reps)
    add(
        {
            "name": "streaming read threads / one thread",
            "measured": t_st1 / t_stn,
            "target": None,
            "note": f"{n_thr} threads: the machine's ceiling for the parallel ratios",
        }
    )

    # arm64 with contpte: the hint jumps whole blocks
    a64 = space_for("arm64-10k")
    engine.scan(a64, parallel=False)
    t_na = _best(lambda: naive.scan(a64), 2 if quick else 3)
    t_sa = _best(lambda: engine.scan(a64, parallel=False), reps * 4)
    add(
        {
            "name": "arm64 scan jit-serial / naive",
            "measured": t_na / t_sa,
            "target": 200.0,
            "note": f"arm64-10k, contpte, {a64.info()['present_ptes']:,} present PTEs",
        }
    )

    # what the per-batch detectors cost where they re-read a batch's entries
    kw = dict(kernel="6.16", parallel=False)
    engine.unmap(big, detectors=False, **kw)
    t_off = _best(lambda: engine.unmap(big, detectors=False, **kw), reps)
    t_on = _best(lambda: engine.unmap(big, **kw), reps)
    add(
        {
            "name": "unmap detectors off / on",
            "measured": t_off / t_on,
            "target": None,
            "note": "lazyfree 6.16 re-reads every batch for the spread detector",
        }
    )
    return rows


def peak_memory(case_name: str = "mixed-100k") -> dict:
    """Peak bytes NumPy allocates during one scan and one unmap, against the input size."""
    space = space_for(case_name)
    engine.scan(space)
    engine.unmap(space)
    out = {"case": case_name, "input_bytes": int(space.ptes.nbytes)}
    for walk, fn in (("scan", engine.scan), ("unmap", engine.unmap)):
        tracemalloc.start()
        r = fn(space)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[walk] = {
            "peak_bytes": int(peak),
            "batches": r.batches,
            "peak_over_input": round(peak / space.ptes.nbytes, 4),
            "bytes_per_batch": round(peak / max(r.batches, 1), 1),
        }
    return out


_COMPILE_SNIPPET = """
import time, json
t0 = time.perf_counter()
import ptebatch as pb
sp = pb.thread_layout()
t1 = time.perf_counter(); pb.scan(sp)
t2 = time.perf_counter(); pb.unmap(sp)
t3 = time.perf_counter(); pb.folio_pte_batch(sp.ptes.reshape(-1), 511, 1, int(sp.folio_pfn[0]), 16)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "scan": t2 - t1, "unmap": t3 - t2,
                  "folio_pte_batch": t4 - t3}))
"""


def compile_times(cache_dir: str | None = None) -> dict:
    """First-call times of each entry point in fresh processes: compile, then cache load.

    Runs the snippet twice with a fresh ``NUMBA_CACHE_DIR``: the first process
    compiles and writes the cache, the second loads it.
    """
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir or tmp, PTEBATCH_NUMBA_CACHE="1")
        for label in ("compile", "cache_load"):
            p = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            out[label] = json.loads(p.stdout.strip().splitlines()[-1])
    return out
