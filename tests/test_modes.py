"""Each CI pass really runs in its mode."""

import os

import numpy as np
import pytest

import ptebatch as pb
from ptebatch._jit import zap_pte_range as K
from ptebatch._jit.config import WALK_BATCH, RowFilter
from ptebatch._jit.config import make_config as make_cfg


@pytest.mark.skipif(
    os.environ.get("NUMBA_BOUNDSCHECK") != "1", reason="only in the NUMBA_BOUNDSCHECK=1 pass"
)
def test_boundscheck_is_on():
    # A walk told it has room for 512 rows in a 1-row buffer must raise, not scribble.
    flat = np.full(512, np.uint64(0x1001), dtype=np.uint64)  # present PFN-1 entries, order-0
    g0, g1 = np.array([0]), np.array([512])
    va, vma = np.array([0], dtype=np.uint64), np.array([0])
    vma_end, reason = np.array([1 << 21], dtype=np.uint64), np.array([1])
    out = [np.empty(1, dtype=d) for d in (np.uint64, np.uint32, np.uint8, np.uint8)]
    empty = np.zeros(0, dtype=np.uint64)
    preset = pb.resolve_caller("zap", "6.16")
    cfg = make_cfg(pb.X86_64, preset.profile, preset.flags)
    with pytest.raises(IndexError):
        K.zap_segments(
            flat,
            g0,
            g1,
            va,
            vma,
            vma_end,
            reason,
            np.zeros(1, dtype=np.bool_),
            0,
            1,
            np.uint64(0),
            -1,
            empty,
            empty,
            np.zeros(1, dtype=np.int64),
            np.uint64(0),
            np.uint64(9),
            np.zeros(0, dtype=np.int8),
            np.uint64(0),
            np.uint64(0),
            cfg,
            WALK_BATCH,
            False,
            False,
            RowFilter(*(np.uint64(v) for v in (1, 1, (1 << 16) - 1, 0, 0, (1 << 64) - 1))),
            np.zeros((len(pb.reasons.NAMES), 513), dtype=np.int64),
            np.zeros(8, dtype=np.int64),
            *out,
            0,
            512,
        )


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") != "1", reason="only in the NUMBA_DISABLE_JIT=1 pass"
)
def test_jit_is_off():
    assert not hasattr(K.zap_segments, "overloads")


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1" or os.environ.get("NUMBA_BOUNDSCHECK") == "1",
    reason="only in the plain jitted pass",
)
def test_jit_is_on_and_unchecked():
    assert hasattr(K.zap_segments, "overloads")
    assert K.zap_segments.targetoptions.get("boundscheck") is None  # left to NUMBA_BOUNDSCHECK
