"""``ptebatch demo``: the main job on an embedded default."""

from __future__ import annotations

import time

import numpy as np

from .. import engine, naive
from .._jit import num_threads
from ..space import AddressSpace
from .generator import generate
from .layouts import thread_layout

__all__ = ["run_demo", "sample"]


def sample(space: AddressSpace, n_tables: int) -> AddressSpace:
    """The first ``n_tables`` tables of a space, with the VMAs and folios they use."""
    n = min(n_tables, space.n_tables)
    if n == space.n_tables:
        return space
    end = space.table_va[n]  # first address past the sample
    keep = space.vma_start < end
    vma_start, vma_end = space.vma_start[keep], np.minimum(space.vma_end[keep], end)
    return AddressSpace(
        np.ascontiguousarray(space.ptes[:n]),
        space.table_va[:n].copy(),
        vma_start.copy(),
        vma_end.copy(),
        space.folio_pfn,
        space.folio_nr,
        space.folio_flags,
        arch=space.arch,
        vma_flags=space.vma_flags[keep].copy(),
    )


def _row(space_name, walk, kernel, clamp, oob, r) -> dict:
    return {
        "space": space_name,
        "walk": walk,
        "kernel": kernel,
        "clamp": clamp,
        "oob": oob,
        "batches": r.batches,
        "mean_batch": round(r.mean_batch, 3),
        "table_overruns": r.table_overruns,
        "vma_overruns": r.vma_overruns,
    }


def _same(a, b) -> bool:
    return (
        all(
            np.array_equal(getattr(a, f), getattr(b, f)) for f in ("va", "nr", "reason", "findings")
        )
        and a.summary() == b.summary()
    )


def run_demo(n_folios: int = 100_000, seed: int = 0) -> dict:
    """Run the demo; returns a JSON-ready report (rows, timing, the thread's case)."""
    rows = []
    thread = thread_layout()
    t0 = time.perf_counter()
    u15 = engine.unmap(thread, kernel="6.15")  # first calls compile the kernels
    engine.scan(thread, parallel=False)
    engine.scan(thread, parallel=True)
    compile_s = time.perf_counter() - t0
    u16 = engine.unmap(thread, kernel="6.16")
    for kernel, r in (("6.15", u15), ("6.16", u16)):
        rows.append(_row("thread", "unmap", kernel, "-", "none", r))
    for kernel, r in (
        ("6.15", engine.unmap(thread, kernel="6.15", oob="adjacent")),
        ("6.16", engine.unmap(thread, kernel="6.16", oob="adjacent")),
    ):
        rows.append(_row("thread", "unmap", kernel, "-", "adjacent", r))

    space = generate(n_folios, seed=seed, moved=0.1, straddle=0.5, lazyfree=0.5)
    name = f"synthetic-{n_folios // 1000}k"
    for kernel in ("6.15", "6.16"):
        for clamp, oob in (("pmd", "none"), ("folio", "adjacent")):
            rows.append(
                _row(
                    name,
                    "scan",
                    kernel,
                    clamp,
                    oob,
                    engine.scan(space, kernel=kernel, clamp=clamp, oob=oob),
                )
            )
        rows.append(_row(name, "unmap", kernel, "-", "none", engine.unmap(space, kernel=kernel)))

    # JIT vs naive on a sample (the naive walk would take minutes on the whole space).
    small = sample(space, 256)
    t0 = time.perf_counter()
    nv = naive.scan(small, kernel="6.16")
    naive_s = time.perf_counter() - t0

    def best(fn, reps=20):
        fn()  # warm up: first calls pay for buffers and threads
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    ser_s, ser = best(lambda: engine.scan(small, kernel="6.16", parallel=False))
    par_s, par = best(lambda: engine.scan(small, kernel="6.16", parallel=True))
    timing = {
        "sample_tables": small.n_tables,
        "sample_ptes": nv.present_ptes,
        "naive_s": naive_s,
        "jit_serial_s": ser_s,
        "jit_parallel_s": par_s,
        "threads": num_threads(),
        "serial_speedup": naive_s / ser_s,
        "parallel_speedup": naive_s / par_s,
        "identical": _same(nv, ser) and _same(ser, par),
        "compile_s": compile_s,
    }
    from .corpus import check_all

    return {
        "rows": rows,
        "timing": timing,
        "corpus": check_all(),
        "thread": {
            "folio_nr": int(thread.folio_nr[0]),
            "va": hex(int(thread.vma_start[0])),
            "unmap_6_15_overruns": u15.table_overruns,
            "unmap_6_16_batches": u16.nr.tolist(),
        },
        "space": space.info(),
    }
