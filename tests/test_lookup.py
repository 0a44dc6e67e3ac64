"""The kernels' folio lookup (bucket index + search) against np.searchsorted."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import ptebatch as pb
from ptebatch._jit import folio_lookup as K
from ptebatch.planning import folio_index as _folio_arrays


@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3)), min_size=0, max_size=300),
    st.integers(0, 2**20),
    st.integers(0, 2**32),
)
def test_folio_lookup_matches_searchsorted(folios, base, probe_seed):
    pfns, nrs, cursor = [], [], base
    for order, gap in folios:
        nr = 1 << order
        cursor = (cursor + nr - 1) // nr * nr + gap * nr * 7
        pfns.append(cursor)
        nrs.append(nr)
        cursor += nr
    sp = pb.AddressSpace(
        np.zeros((0, 512), dtype=np.uint64),
        np.zeros(0, dtype=np.uint64),
        np.zeros(0, dtype=np.uint64),
        np.zeros(0, dtype=np.uint64),
        np.array(pfns, dtype=np.uint64),
        np.array(nrs, dtype=np.uint64),
        np.zeros(len(pfns), dtype=np.uint8),
    )
    fpfn, fnr, fidx, fbase, fshift = _folio_arrays(sp)
    rng = np.random.default_rng(probe_seed)
    hi = (pfns[-1] + nrs[-1] + 600) if pfns else base + 600
    probes = np.unique(
        np.concatenate(
            [
                rng.integers(0, hi, 200),
                np.array(pfns, dtype=np.int64),
                np.array(pfns, dtype=np.int64) + np.array(nrs) - 1,
                np.array(pfns, dtype=np.int64) + np.array(nrs),
            ]
        )
    ).astype(np.uint64)
    for pfn in probes:
        i = int(np.searchsorted(fpfn, pfn, side="right")) - 1
        want = i if i >= 0 and pfn < fpfn[i] + fnr[i] else -1
        for hint in (-1, 0, want, max(want - 1, -1)):
            assert K.folio_lookup(fpfn, fnr, pfn, hint, fidx, fbase, fshift) == want
        f, lo, hi_ = K.folio_span(fpfn, fnr, pfn, fidx, fbase, fshift)
        assert f == want and lo <= pfn < hi_


@given(st.lists(st.integers(0, 40), max_size=300), st.integers(0, 5))
def test_group_stable_is_a_stable_argsort(keys, spare):
    # the unmap groups its runs by folio, and its folios by component, with this counting sort
    from ptebatch._jit.try_to_unmap import group_stable

    arr = np.array(keys, dtype=np.int64)
    n_keys = (max(keys) + 1 if keys else 0) + spare
    assert group_stable(arr, n_keys).tolist() == np.argsort(arr, kind="stable").tolist()
