"""pytest-benchmark suite, fed by the registry in ptebatch.bench.

Run the timings with::

    .venv/bin/python -m pytest benchmarks --benchmark-enable --benchmark-group-by=param:case \
        --benchmark-columns=min,median,rounds          # small and medium spaces
    PTEBATCH_BENCH_TIER=large .venv/bin/python -m pytest benchmarks --benchmark-enable ...

In the ordinary test run (``--benchmark-disable``) each benchmark runs once, as
a smoke test; equality of every implementation with the reference is checked
in tests/test_registry.py on the same cases.
"""

import os

import numpy as np
import pytest

from ptebatch import engine, naive
from ptebatch.bench import CASES, IMPLS, cases_up_to, space_for

pytestmark = pytest.mark.slow  # PTEBATCH_SLOW=1 runs it (CI does)

TIER = os.environ.get("PTEBATCH_BENCH_TIER", "medium")
CASE_NAMES = cases_up_to(TIER)


def _walk_params(walk):
    for case in CASE_NAMES:
        for name, impl in IMPLS.items():
            if walk == "unmap" and impl.unmap is None:
                continue
            if CASES[case].arch not in impl.arches:
                continue
            # the naive walk on big spaces takes minutes: time it on the small ones
            if name == "naive" and CASES[case].tier != "small":
                continue
            yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.mark.parametrize("impl,case", list(_walk_params("scan")))
def test_scan(benchmark, impl, case):
    space = space_for(case)
    fn = IMPLS[impl].scan
    fn(space)  # compile outside the timing
    benchmark.extra_info["present_ptes"] = space.info()["present_ptes"]
    r = benchmark(fn, space)
    assert r.batches > 0


@pytest.mark.parametrize("impl,case", list(_walk_params("unmap")))
def test_unmap(benchmark, impl, case):
    space = space_for(case)
    fn = IMPLS[impl].unmap
    fn(space)
    r = benchmark(fn, space)
    assert r.batches > 0 or r.folios == 0  # an all-4 KiB space has no large folio to unmap


@pytest.mark.parametrize("impl", ["naive", "jit"])
def test_single_batch(benchmark, impl):
    space = space_for("thp-1k")
    flat = space.ptes.reshape(-1)
    g = int(np.flatnonzero(flat)[0])
    pfn = int(flat[g] >> np.uint64(12)) & ((1 << 40) - 1)
    i = int(np.searchsorted(space.folio_pfn, pfn, side="right")) - 1
    fn = naive.folio_pte_batch if impl == "naive" else engine.folio_pte_batch
    args = (flat, g, 512 - g % 512, int(space.folio_pfn[i]), int(space.folio_nr[i]))
    fn(*args)
    r = benchmark(fn, *args)
    assert r.nr >= 1


GEN_SIZES = {
    "small": [10_000],
    "medium": [10_000, 100_000],
    "large": [100_000, 1_000_000],
    "huge": [1_000_000, 10_000_000],
}[TIER]


@pytest.mark.parametrize("n_folios", GEN_SIZES)
def test_generate(benchmark, n_folios):
    from ptebatch import generate

    generate(1000, seed=1)  # compile outside the timing
    space = benchmark(generate, n_folios, seed=1)
    assert space.info()["folios"] > 0
