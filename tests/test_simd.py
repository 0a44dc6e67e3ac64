"""The vector compares of ptebatch._jit.simd against plain Python ints.

In the jitted pass this checks the LLVM IR; under NUMBA_DISABLE_JIT=1 and NUMBA_BOUNDSCHECK=1
the plain twins run instead, and it checks those.  The walks that use them are compared with
the naive twin in test_registry.py and test_equivalence.py.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ptebatch._jit.simd import LANES, pte_runs_at

U64 = (1 << 64) - 1
PAGE = 1 << 12
YOUNG_DIRTY = (1 << 5) | (1 << 6)


def match_run(flat, g, keep, set_, expected):
    n, bits = 0, 0
    while n < LANES and ((int(flat[g + n]) & keep) | set_) == (expected + n * PAGE) & U64:
        bits |= int(flat[g + n])
        n += 1
    return n, bits


def none_run(flat, g, present):
    n = 0
    while n < LANES and int(flat[g + n]) & present == 0:
        n += 1
    return n


@st.composite
def windows(draw):
    """A window of entries around a run that matches ``expected`` for a while: each entry is the
    next expected PTE with ignored bits flipped, or something else (none, a PFN gap, another
    bit), and NX (bit 63) and the top of the PFN field are reachable."""
    expected = (
        draw(st.sampled_from([0, 1 << 63, U64 & ~(PAGE - 1)]))
        | draw(st.integers(0, U64)) & ~YOUNG_DIRTY
    )
    start = draw(st.integers(0, 4))
    flat = [draw(st.integers(0, U64)) for _ in range(start)]
    for k in range(LANES + draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["match"] * 6 + ["none", "gap", "bit", "random"]))
        want = (expected + k * PAGE) & U64
        if kind == "match":
            flat.append(want | draw(st.integers(0, 3)) << 5)
        elif kind == "none":
            flat.append(draw(st.sampled_from([0, 1 << 63, 2])))
        elif kind == "gap":
            flat.append((want + PAGE * draw(st.integers(1, 8))) & U64)
        elif kind == "bit":
            flat.append(want ^ (1 << draw(st.sampled_from([0, 1, 2, 7, 8, 52, 62, 63]))))
        else:
            flat.append(draw(st.integers(0, U64)))
    keep = draw(st.sampled_from([U64 & ~YOUNG_DIRTY, U64, U64 & ~(1 << 63)]))
    set_ = draw(st.sampled_from([0, 1 << 63]))
    return np.array(flat, dtype=np.uint64), start, keep, set_, (expected & keep) | set_


@given(windows(), st.sampled_from([1, 1 << 0 | 1 << 1, 1 << 63]))
def test_runs_match_plain_ints(window, present):
    flat, start, keep, set_, expected = window
    for g in range(0, flat.shape[0] - LANES + 1):
        n, bits, none = pte_runs_at(
            flat, g, np.uint64(keep), np.uint64(set_), np.uint64(expected), np.uint64(present)
        )
        assert (int(n), int(bits)) == match_run(flat, g, keep, set_, expected)
        assert int(none) == none_run(flat, g, present)


def test_a_full_run_and_none_at_all():
    expected = (1 << 63) | 0x1234_5000 | 1
    flat = np.array([expected + k * PAGE for k in range(LANES)], dtype=np.uint64)
    keep, set_ = np.uint64(U64), np.uint64(0)
    n, bits, none = pte_runs_at(flat, 0, keep, set_, np.uint64(expected), np.uint64(1))
    assert (int(n), int(bits), int(none)) == (LANES, int(np.bitwise_or.reduce(flat)), 0)
    flat[3] = 0
    n, bits, none = pte_runs_at(flat, 0, keep, set_, np.uint64(expected), np.uint64(1))
    assert (int(n), int(none)) == (3, 0)
    zeros = np.zeros(LANES, dtype=np.uint64)
    assert int(pte_runs_at(zeros, 0, keep, set_, np.uint64(expected), np.uint64(1))[2]) == LANES
