"""Every implementation in the benchmark registry gives the reference's result.

The same registry (ptebatch.bench.IMPLS x CASES) feeds the benchmarks, so no
implementation is timed that is not also checked here.
"""

import os
from functools import cache

import numpy as np
import pytest

from ptebatch.bench import CASES, IMPLS, cases_up_to, space_for

FIELDS = ("va", "nr", "reason", "findings")
NO_JIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
SETTINGS = [
    dict(kernel="6.15", clamp="pmd"),
    dict(kernel="6.16", clamp="folio", oob="adjacent"),
    dict(kernel="6.18", clamp="pmd", flags="FPB_RESPECT_DIRTY"),
    dict(caller="mremap", kernel="6.17", move_by=0x1FF000),
]


@cache
def _reference(walk, case, items):
    return getattr(IMPLS["naive"], walk)(space_for(case), **dict(items))


def assert_same(a, b, fields):
    # a counts-mode result has no rows: its counts must equal those of the reference's rows
    if a.has_rows:
        for f in fields:
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.summary() == b.summary()
    np.testing.assert_array_equal(a.hist, b.hist)


def test_registry_is_not_empty():
    assert {"naive", "jit-serial", "jit-parallel", "numpy", "jit-serial-counts"} <= set(IMPLS)
    assert len(cases_up_to("small")) >= 4 and len(CASES) >= 10


@pytest.mark.parametrize("case", cases_up_to("small"))
@pytest.mark.parametrize("impl", [n for n in IMPLS if n != "naive"])
@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_scan_equals_naive(case, impl, kw):
    space = space_for(case)
    if not IMPLS[impl].supports(space, kw):
        pytest.skip(f"{impl} supports {IMPLS[impl].limits} on {IMPLS[impl].arches} only")
    assert_same(IMPLS[impl].scan(space, **kw), _reference("scan", case, tuple(kw.items())), FIELDS)


@pytest.mark.parametrize("case", cases_up_to("small"))
@pytest.mark.parametrize("impl", [n for n in IMPLS if n != "naive" and IMPLS[n].unmap])
# The default run takes 6.15 (the first release whose reclaim batches, all or nothing) and 7.0;
# 6.14 (no batching) and 6.16 run under the slow marker, as CI does.
@pytest.mark.parametrize(
    "kernel",
    [pytest.param("6.14", marks=pytest.mark.slow), "6.15"]
    + [pytest.param("6.16", marks=pytest.mark.slow), "7.0"],
)
def test_unmap_equals_naive(case, impl, kernel):
    space = space_for(case)
    assert_same(
        IMPLS[impl].unmap(space, kernel=kernel),
        _reference("unmap", case, (("kernel", kernel),)),
        FIELDS + ("folio_pfn",),
    )


@pytest.mark.skipif(NO_JIT, reason="medium spaces are too slow for kernels run as plain Python")
@pytest.mark.parametrize("case", [n for n in cases_up_to("medium") if CASES[n].tier == "medium"])
def test_medium_spaces_all_fast_implementations_agree(case):
    space = space_for(case)
    ref = IMPLS["jit-serial"].scan(space)
    for name, impl in IMPLS.items():
        if name != "naive" and impl.supports(space, {}):
            assert_same(impl.scan(space), ref, FIELDS)
    assert_same(
        IMPLS["jit-parallel"].unmap(space),
        IMPLS["jit-serial"].unmap(space),
        FIELDS + ("folio_pfn",),
    )
