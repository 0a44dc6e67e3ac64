"""JIT equals naive: the proof by difference."""

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import KERNELS, batch_calls, spaces

import ptebatch as pb
from ptebatch import planning

SCAN_FIELDS = ("va", "nr", "reason", "findings")
WALKERS = [c.name for c in pb.CALLERS.values() if c.walk == "scan"]
RMAPS = [c.name for c in pb.CALLERS.values() if c.walk == "unmap"]


@contextlib.contextmanager
def engine_settings(**values):
    old = {k: getattr(planning, k) for k in values}
    for k, v in values.items():
        setattr(planning, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(planning, k, v)


def threads_even_for_small_spaces():
    # The engine walks small spaces on one thread; these tests need the chunked path.
    return engine_settings(PARALLEL_MIN_WORK=0)


UNMAP_FIELDS = ("folio_pfn", "va", "nr", "reason", "findings")


def assert_same(a, b, fields):
    for f in fields:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype, f
        np.testing.assert_array_equal(x, y, err_msg=f)
    assert a.summary() == b.summary()


@given(batch_calls())
def test_folio_pte_batch_jit_equals_naive(call):
    arr, index, max_nr, folio_pfn, folio_nr, flags, kernel, arch = call
    a = pb.folio_pte_batch(
        arr, index, max_nr, folio_pfn, folio_nr, flags=flags, kernel=kernel, arch=arch
    )
    b = pb.naive.folio_pte_batch(
        arr, index, max_nr, folio_pfn, folio_nr, flags=flags, kernel=kernel, arch=arch
    )
    assert a == b
    assert 1 <= a.nr <= max_nr


@given(
    spaces(),
    st.sampled_from(KERNELS),
    st.sampled_from(["pmd", "folio"]),
    st.sampled_from(["none", "adjacent"]),
    st.booleans(),
    st.booleans(),
)
def test_scan_jit_equals_naive(space, kernel, clamp, oob, parallel, order_table):
    # order_table=False forces zap's fallback folio search (used for very sparse PFNs)
    limits = {} if order_table else dict(ORDER_TABLE_MIN_BYTES=0, ORDER_TABLE_BYTES_PER_FOLIO=0)
    with threads_even_for_small_spaces(), engine_settings(**limits):
        a = pb.scan(space, kernel=kernel, clamp=clamp, oob=oob, parallel=parallel)
    b = pb.naive.scan(space, kernel=kernel, clamp=clamp, oob=oob)
    assert_same(a, b, SCAN_FIELDS)


@given(spaces(), st.sampled_from(KERNELS), st.data())
def test_scan_with_explicit_flags_jit_equals_naive(space, kernel, data):
    gen = pb.resolve_kernel(kernel).generation
    flags = data.draw(st.lists(st.sampled_from(sorted(gen.flags)), unique=True))
    a = pb.scan(space, kernel=kernel, flags=flags)
    b = pb.naive.scan(space, kernel=kernel, flags=flags)
    assert_same(a, b, SCAN_FIELDS)


@given(spaces(), st.sampled_from(KERNELS), st.sampled_from(["none", "adjacent"]), st.booleans())
def test_unmap_jit_equals_naive(space, kernel, oob, parallel):
    with threads_even_for_small_spaces():
        a = pb.unmap(space, kernel=kernel, oob=oob, parallel=parallel)
    b = pb.naive.unmap(space, kernel=kernel, oob=oob)
    assert_same(a, b, UNMAP_FIELDS)


@given(
    spaces(),
    st.sampled_from(WALKERS),
    st.sampled_from(KERNELS),
    st.sampled_from([0, 0x1000, 0x1FF000, -0x3000, 0x200000]),
    st.booleans(),
)
def test_every_walker_preset_jit_equals_naive(space, caller, kernel, move_by, parallel):
    preset = pb.resolve_caller(caller, kernel)
    move_by = move_by if preset.rule.dst_clamp else 0
    with threads_even_for_small_spaces():
        a = pb.scan(space, caller=caller, kernel=kernel, move_by=move_by, parallel=parallel)
    b = pb.naive.scan(space, caller=caller, kernel=kernel, move_by=move_by)
    assert_same(a, b, SCAN_FIELDS)


@given(spaces(), st.sampled_from(RMAPS), st.sampled_from(KERNELS), st.booleans())
def test_every_rmap_preset_jit_equals_naive(space, caller, kernel, parallel):
    with threads_even_for_small_spaces():
        a = pb.unmap(space, caller=caller, kernel=kernel, parallel=parallel)
    b = pb.naive.unmap(space, caller=caller, kernel=kernel)
    assert_same(a, b, UNMAP_FIELDS)


@pytest.mark.parametrize("kernel", ["6.14", "6.15", "6.16", "6.18"])
@pytest.mark.parametrize("clamp,oob", [("pmd", "none"), ("folio", "none"), ("folio", "adjacent")])
def test_generated_space_all_implementations_agree(kernel, clamp, oob):
    space = pb.generate(3000, seed=7, moved=0.2, holes=0.01)
    ser = pb.scan(space, kernel=kernel, clamp=clamp, oob=oob, parallel=False)
    par = pb.scan(space, kernel=kernel, clamp=clamp, oob=oob, parallel=True)
    nai = pb.naive.scan(space, kernel=kernel, clamp=clamp, oob=oob)
    assert_same(ser, par, SCAN_FIELDS)
    assert_same(ser, nai, SCAN_FIELDS)
    assert ser.batches > 1000  # the space is not trivially small


@pytest.mark.parametrize("kernel", ["6.14", "6.15", "6.16", "7.0"])
def test_generated_space_unmap_agrees(kernel):
    space = pb.generate(3000, seed=8, moved=0.3, lazyfree=0.6)
    ser = pb.unmap(space, kernel=kernel, parallel=False)
    par = pb.unmap(space, kernel=kernel, parallel=True)
    nai = pb.naive.unmap(space, kernel=kernel)
    assert_same(ser, par, UNMAP_FIELDS)
    assert_same(ser, nai, UNMAP_FIELDS)


def _row_filters():
    names = list(pb.reasons.NAMES)
    detectors = [n for n, _ in pb.reasons.FINDINGS]
    return st.one_of(
        st.just(False),
        st.fixed_dictionaries(
            {},
            optional={
                "min_nr": st.integers(1, 17),
                "reasons": st.lists(st.sampled_from(names), min_size=1, unique=True),
                "findings": st.lists(st.sampled_from(detectors), min_size=1, unique=True),
                "va": st.tuples(st.integers(0, 1 << 44), st.integers(1, 1 << 44)).filter(
                    lambda t: t[0] < t[1]
                ),
            },
        ),
    )


@given(
    spaces(),
    st.sampled_from(KERNELS),
    st.sampled_from(["pmd", "folio"]),
    st.sampled_from(WALKERS),
    _row_filters(),
    st.booleans(),
)
def test_scan_rows_filter_and_counts_jit_equal_naive(space, kernel, clamp, caller, rows, parallel):
    # counts inside the walk and the filter applied inside the walk; the naive twin builds
    # every row, counts them and filters them afterwards
    with threads_even_for_small_spaces():
        a = pb.scan(space, caller=caller, kernel=kernel, clamp=clamp, rows=rows, parallel=parallel)
    b = pb.naive.scan(space, caller=caller, kernel=kernel, clamp=clamp, rows=rows)
    full = pb.naive.scan(space, caller=caller, kernel=kernel, clamp=clamp)
    assert a.summary() == b.summary() == full.summary()
    np.testing.assert_array_equal(a.length_hist, b.length_hist)
    if rows is False:
        assert a.nr is None and b.nr is None
    else:
        assert_same(a, b, SCAN_FIELDS)
        assert a.nr.size <= full.nr.size


@given(spaces(), st.sampled_from(RMAPS), st.sampled_from(KERNELS), _row_filters(), st.booleans())
def test_unmap_rows_filter_and_counts_jit_equal_naive(space, caller, kernel, rows, parallel):
    with threads_even_for_small_spaces():
        a = pb.unmap(space, caller=caller, kernel=kernel, rows=rows, parallel=parallel)
    b = pb.naive.unmap(space, caller=caller, kernel=kernel, rows=rows)
    assert a.summary() == b.summary()
    np.testing.assert_array_equal(a.length_hist, b.length_hist)
    if rows is not False:
        assert_same(a, b, UNMAP_FIELDS)


def test_a_row_filter_selects_exactly_the_matching_rows():
    # derived from the full rows, independently of both filters
    space = pb.generate(3000, seed=7, moved=0.3, lazyfree=0.8)
    full = pb.unmap(space, kernel="6.15")
    lo, hi = int(full.va.min()), int(np.median(full.va))
    want = (full.nr >= 1) & ((full.findings & pb.reasons.OVER_TABLE) != 0)
    want &= (full.va >= lo) & (full.va < hi)
    got = pb.unmap(space, kernel="6.15", rows={"findings": "table_overrun", "va": (lo, hi)})
    np.testing.assert_array_equal(got.va, full.va[want])
    assert 0 < got.nr.size < full.nr.size and got.batches == full.batches


def _crossed_pairs(n_pairs=64):
    """Pairs of 16-page lazyfree folios, one with a low PFN (X) and one with a high
    PFN (Y), far apart in PFN order: Y_j's pages 0-7 in entries 32j..32j+7, then
    X_(n-1-j)'s page 0 in entry 32j+8.  Y's batch stops at that entry."""
    base, lo_pfn, hi_pfn = 0x7F0000000000, 0x40000, 0x80000
    va, ptes = [], []
    for j in range(n_pairs):
        for k in range(8):
            va.append(base + (32 * j + k) * 4096)
            ptes.append(int(pb.X86_64.make_pte(hi_pfn + 16 * j + k, write=True)))
        va.append(base + (32 * j + 8) * 4096)
        ptes.append(int(pb.X86_64.make_pte(lo_pfn + 16 * (n_pairs - 1 - j), write=True)))
    folio_pfn = [lo_pfn + 16 * j for j in range(n_pairs)] + [
        hi_pfn + 16 * j for j in range(n_pairs)
    ]
    end = base + 32 * n_pairs * 4096
    return pb.AddressSpace.from_entries(
        va, ptes, [base], [end], folio_pfn, [16] * (2 * n_pairs), [1] * (2 * n_pairs)
    )


def test_unmap_chunks_keep_folios_whose_walks_meet_in_order():
    # Folios are walked in PFN order, so every X is unmapped before every Y: Y's
    # batch (6.16: max_nr 8 would reach entry 32j+8, the pages after 7 are not
    # there) reads entry 32j+8 after X's walk cleared it, so it stops not_present,
    # not pfn_gap.  Chunked by PFN rank alone, the chunks holding the last Xs
    # and the first Ys would run at once and the Ys would see the Xs still mapped.
    space = _crossed_pairs()
    with threads_even_for_small_spaces():
        par = pb.unmap(space, kernel="6.16", parallel=True)
    nai = pb.naive.unmap(space, kernel="6.16")
    assert_same(par, nai, UNMAP_FIELDS)
    ys = par.folio_pfn >= 0x80000
    assert set(par.reason_names()[ys].tolist()) == {"not_present"}
    assert par.nr[ys].tolist() == [8] * 64


@pytest.mark.parametrize("kernel", ["6.15", "6.16"])
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_unmap_clearing_serial_equals_parallel_with_many_chunks(kernel, arch):
    # VMA splits inside folios, partial mappings and holes: batches that take the
    # next VMA's entries (6.15) and stops at entries other folios' walks cleared.
    space = pb.generate(
        2000, seed=12, vma_split=0.5, partial=0.3, holes=0.02, lazyfree=0.8, arch=arch
    )
    with threads_even_for_small_spaces():
        par = pb.unmap(space, kernel=kernel, parallel=True)
    ser = pb.unmap(space, kernel=kernel, parallel=False)
    nai = pb.naive.unmap(space, kernel=kernel)
    assert_same(ser, par, UNMAP_FIELDS)
    assert_same(ser, nai, UNMAP_FIELDS)
    if kernel == "6.15":
        # some whole-folio batch ran past its VMA's end: the case the clearing is for
        assert ser.vma_overruns > 0 or arch == "arm64"
