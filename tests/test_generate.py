"""The synthetic generator: schema, requested fractions, determinism, placement, errors."""

import os
import tracemalloc

import numba
import numpy as np
import pytest

import ptebatch as pb
from ptebatch import _gen_kernels as GK
from ptebatch.generate import PRESETS, parse_sizes
from ptebatch.space import FOLIO_ANON, FOLIO_SWAPBACKED

X86 = pb.X86_64
NOJIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
ARRAYS = ("ptes", "table_va", "vma_start", "vma_end", "folio_pfn", "folio_nr", "folio_flags")


def revalidate(s):
    """Build the space again from copies: every schema rule is checked once more."""
    return pb.AddressSpace(*(getattr(s, n).copy() for n in ARRAYS), arch=s.arch)


def present_pages(s):
    """(virtual page, PTE) of every present entry."""
    flat = s.ptes.reshape(-1)
    idx = np.flatnonzero(flat & np.uint64(X86.present))
    page = (s.table_va[idx // 512] >> np.uint64(12)) + (idx % 512).astype(np.uint64)
    return page, flat[idx]


def folio_of(s, pfn):
    """Index of the listed folio holding each PFN, and whether there is one."""
    if not s.n_folios:
        return np.zeros(pfn.size, dtype=np.intp), np.zeros(pfn.size, dtype=bool)
    f = np.maximum(np.searchsorted(s.folio_pfn, pfn, side="right") - 1, 0)
    return f, (pfn >= s.folio_pfn[f]) & (pfn < s.folio_pfn[f] + s.folio_nr[f])


def vma_pages(s):
    return (s.vma_start >> np.uint64(12)), (s.vma_end >> np.uint64(12))


KNOBS = [
    {},
    {"sizes": "4k"}, {"sizes": "thp", "moved": 0.5}, {"sizes": "mthp64", "moved": 1.0, "straddle": 1.0},
    {"sizes": {0: 1, 9: 1}, "shuffle_pfn": False},
    {"sizes": "0:1,3:2", "partial": 0.5, "moved": 0.5, "holes": 0.2},
    {"sizes": "all", "vma_split": 0.5, "vma_tables": 1, "mixed_write": 1.0, "uffd_wp": 0.5},
    {"moved": 0.0, "write": 0.0, "young": 1.0, "dirty": 1.0, "soft_dirty": 1.0, "lazyfree": 1.0},
]


@pytest.mark.parametrize("kw", KNOBS, ids=[str(i) for i in range(len(KNOBS))])
def test_schema_valid_and_ptes_consistent(kw):
    s = pb.generate(1500, seed=3, **kw)
    assert revalidate(s) == s
    page, pte = present_pages(s)
    # every present entry lies in a VMA
    vs, ve = vma_pages(s)
    j = np.searchsorted(vs, page, side="right") - 1
    assert (j >= 0).all() and (page < ve[j]).all()
    # a present entry of a listed folio maps the page at its offset in the folio, and folios
    # mapped by PTEs stay whole in VA: pfn - folio_pfn == va_page - (va of the folio's page 0)
    pfn = X86.pte_pfn(pte)
    f, inside = folio_of(s, pfn)
    k = pfn[inside] - s.folio_pfn[f[inside]]
    base = page[inside] - k
    first = np.full(s.n_folios, np.iinfo(np.uint64).max, dtype=np.uint64)
    np.minimum.at(first, f[inside], base)
    assert (first[f[inside]] == base).all(), "a folio's pages are not at one virtual offset"
    # no PFN is mapped twice
    assert np.unique(pfn).size == pfn.size


def test_same_seed_same_bytes_on_any_thread_count():
    kw = dict(seed=11, moved=0.3, partial=0.2, holes=0.05, vma_split=0.2, mixed_write=0.3)
    a = pb.generate(3000, **kw)
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        b = pb.generate(3000, **kw)
    finally:
        numba.set_num_threads(n)
    assert a == b
    assert a != pb.generate(3000, **{**kw, "seed": 12})


def test_size_mix_is_followed():
    s = pb.generate(20000, seed=1, sizes="mixed", moved=0.0, holes=0.0)
    mix = PRESETS["mixed"]
    n_order0 = 20000 - s.n_folios
    counts = {0: n_order0, **{int(np.log2(int(k))): v for k, v in s.info()["folio_sizes"].items()}}
    for order, w in mix.items():
        assert abs(counts.get(order, 0) / 20000 - w) < 0.02, (order, counts)
    # every PTE-mapped page is present: pages = sum of sizes
    assert s.info()["present_ptes"] == n_order0 + int(s.folio_nr.sum())
    assert pb.generate(500, sizes="thp").folio_nr.tolist() == [512] * 500
    assert pb.generate(500, sizes="4k").n_folios == 0


def test_unmoved_folios_are_naturally_aligned_and_shuffled():
    s = pb.generate(5000, seed=2, sizes="mixed", moved=0.0)
    page, pte = present_pages(s)
    pfn = X86.pte_pfn(pte)
    f, big = folio_of(s, pfn)
    k = pfn[big] - s.folio_pfn[f[big]]
    assert ((page[big] - k) % s.folio_nr[f[big]] == 0).all()
    # sizes are mixed inside tables: most tables without a THP hold several folio sizes
    sizes_in_table = {}
    nr = np.where(big, s.folio_nr[f], 1)
    for t, n in zip((page >> np.uint64(9)).tolist(), nr.tolist()):
        sizes_in_table.setdefault(t, set()).add(n)
    small = [v for v in sizes_in_table.values() if 512 not in v]
    assert len(small) > 20 and np.mean([len(v) >= 3 for v in small]) > 0.9
    # PFNs shuffled: the entry after a large folio's last page rarely maps the next PFN
    def next_pfn_after_folio_end(sp):
        page, pte = present_pages(sp)
        pfn = X86.pte_pfn(pte)
        f, big = folio_of(sp, pfn)
        last = big & (pfn + np.uint64(1) == sp.folio_pfn[f] + sp.folio_nr[f])
        pick = last[:-1] & (page[1:] == page[:-1] + np.uint64(1))
        return np.mean(pfn[1:][pick] == pfn[:-1][pick] + np.uint64(1))
    assert next_pfn_after_folio_end(s) < 0.1
    same = pb.generate(5000, seed=2, sizes="mixed", moved=0.0, shuffle_pfn=False)
    assert next_pfn_after_folio_end(same) > 0.9
    page2, pte2 = present_pages(same)
    d = X86.pte_pfn(pte2).astype(np.int64) - page2.astype(np.int64)
    assert np.unique(d).size == 1  # PFN follows VA exactly


@pytest.mark.parametrize("moved", [0.1, 0.5])
def test_moved_fraction_one_vma_each(moved):
    n = 10000
    s = pb.generate(n, seed=5, sizes="mthp16", moved=moved, vma_tables=100000)
    # one VMA for the unmoved folios, one per moved folio
    assert abs((s.n_vmas - 1) / n - moved) < 0.02
    vs, ve = vma_pages(s)
    assert ((ve[1:] - vs[1:]) == 4).all()  # a moved folio's VMA is exactly the folio


@pytest.mark.parametrize("straddle", [0.0, 0.3, 1.0])
def test_straddling_fraction_really_straddles(straddle):
    s = pb.generate(4000, seed=6, sizes="mthp64", moved=1.0, straddle=straddle)
    vs, ve = vma_pages(s)
    crosses = (vs >> np.uint64(9)) != ((ve - np.uint64(1)) >> np.uint64(9))
    assert abs(crosses.mean() - straddle) < 0.03
    # and the others sit at many different page offsets
    if straddle < 1.0:
        assert np.unique(vs[~crosses] % np.uint64(512)).size > 300
    if straddle == 1.0:  # every moved folio makes 6.15 unmap of a lazyfree one read past its table
        u = pb.unmap(pb.generate(300, seed=6, sizes="mthp64", moved=1.0, straddle=1.0, lazyfree=1.0),
                     kernel="6.15")
        assert u.table_overruns == 300


def test_partial_mapping_fraction():
    s = pb.generate(6000, seed=7, sizes="mthp32", moved=1.0, partial=0.4, straddle=0.0)
    vs, ve = vma_pages(s)
    flat = s.ptes.reshape(-1)
    # first entry of each VMA -> its folio
    row = np.searchsorted(s.table_va >> np.uint64(21), vs >> np.uint64(9))
    pfn = X86.pte_pfn(flat[row * 512 + (vs % np.uint64(512)).astype(np.int64)])
    f = np.searchsorted(s.folio_pfn, pfn, side="right") - 1
    mapped = ve - vs
    part = mapped < s.folio_nr[f]
    assert abs(part.mean() - 0.4) < 0.03
    assert (mapped >= 1).all()
    # partial ones start or end mid-folio, about half each
    starts_mid = pfn[part] != s.folio_pfn[f[part]]
    assert 0.4 < starts_mid.mean() < 0.6


def test_holes_and_bit_rates():
    s = pb.generate(20000, seed=8, sizes="mthp16", moved=0.0, holes=0.1, write=0.7, young=0.4,
                    dirty=0.2, soft_dirty=0.3, uffd_wp=0.25, lazyfree=0.6)
    _, pte = present_pages(s)
    assert abs(pte.size / (20000 * 4) - 0.9) < 0.01
    for name, rate in (("write", 0.7), ("young", 0.4), ("dirty", 0.2), ("soft_dirty", 0.3),
                       ("uffd_wp", 0.25)):
        got = getattr(X86, f"pte_{name}")(pte).mean()
        assert abs(got - rate) < 0.02, (name, got)
    lazy = (s.folio_flags & (FOLIO_ANON | FOLIO_SWAPBACKED)) == FOLIO_ANON
    assert abs(lazy.mean() - 0.6) < 0.02


def test_write_soft_dirty_uffd_are_per_folio_and_mixed_write_makes_bug5():
    s = pb.generate(3000, seed=9, sizes="mthp16", moved=0.0, write=0.5, soft_dirty=0.5, uffd_wp=0.5)
    flat = s.ptes.reshape(-1)
    for name in ("write", "soft_dirty", "uffd_wp"):
        bits = getattr(X86, f"pte_{name}")(flat).reshape(-1, 4)  # folios are aligned groups of 4
        present = X86.pte_present(flat).reshape(-1, 4).all(axis=1)
        b = bits[present]
        assert (b.all(axis=1) | ~b.any(axis=1)).all(), name
    s = pb.generate(2000, seed=9, sizes="mthp16", moved=0.0, write=1.0, mixed_write=1.0)
    w = X86.pte_write(s.ptes.reshape(-1)).reshape(-1, 4)[X86.pte_present(s.ptes.reshape(-1)).reshape(-1, 4).all(axis=1)]
    assert w[:, 0].all() and not w[:, 3].any()          # writable head, read-only tail
    assert (np.diff(w.astype(np.int8), axis=1) <= 0).all()
    # 7.0 respects write in lazyfree unmap: more, smaller batches than 6.16
    lazy = pb.generate(2000, seed=9, sizes="mthp16", moved=0.0, write=1.0, mixed_write=1.0, lazyfree=1.0)
    assert pb.unmap(lazy, kernel="7.0").batches > pb.unmap(lazy, kernel="6.16").batches


def test_vma_split_cuts_folios():
    s = pb.generate(4000, seed=10, sizes="mthp64", moved=0.0, vma_split=0.25, vma_tables=1000)
    vs, ve = vma_pages(s)
    cuts = vs[1:][vs[1:] == ve[:-1]]               # adjacent VMAs: a split
    assert abs(cuts.size / 4000 - 0.25) < 0.03
    assert (cuts % np.uint64(16) != 0).all()        # each split is inside a folio
    r = pb.scan(s, kernel="6.16")
    assert r.stop_reasons["vma_end"] == cuts.size


@pytest.mark.skipif(NOJIT, reason="tracemalloc over the plain-Python kernels takes a minute")
def test_peak_memory_close_to_the_result():
    pb.generate(100, seed=0)  # compile first
    tracemalloc.start()
    try:
        s = pb.generate(60000, seed=1, moved=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(getattr(s, n).nbytes for n in ARRAYS)
    assert peak < 1.5 * size, (peak, size)


@pytest.mark.parametrize("kw,needle", [
    ({"moved": -0.1}, "moved: must be a fraction from 0 to 1"),
    ({"straddle": 1.5}, "straddle: must be a fraction"),
    ({"holes": float("nan")}, "holes: must be a fraction"),
    ({"partial": True}, "partial: must be a fraction"),
    ({"young": "0.5"}, "young: must be a fraction"),
    ({"sizes": "mthp128"}, "sizes: unknown preset 'mthp128'"),
    ({"sizes": {10: 1.0}}, "sizes: orders must be integers 0 to 9"),
    ({"sizes": {4: -1.0}}, "sizes: weights must be finite and >= 0"),
    ({"sizes": {4: 0.0}}, "sizes: at least one order"),
    ({"sizes": "4:x"}, "sizes: '4:x' is not order:weight"),
    ({"vma_tables": 0}, "vma_tables: must be an integer >= 1"),
    ({"seed": -1}, "seed: must be an integer >= 0"),
])
def test_bad_knobs(kw, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        pb.generate(100, **kw)


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_bad_folio_count(n):
    with pytest.raises(ValueError, match="n_folios: must be a positive integer"):
        pb.generate(n)


def test_sizes_that_do_not_fit_memory():
    with pytest.raises(ValueError, match="n_folios: .* GiB available"):
        pb.generate(10**12, sizes="thp")


def test_parse_sizes():
    assert parse_sizes("mthp64") == {4: 1.0}
    assert parse_sizes("0:1,4:3,4:1") == {0: 1.0, 4: 4.0}
    assert parse_sizes({2: 1, 3: 0}) == {2: 1.0}


@pytest.mark.skipif(NOJIT, reason="NUMBA_DISABLE_JIT=1: no compiled kernels to inspect")
def test_generator_kernels_have_no_float_types():
    pb.generate(500, seed=1, moved=0.5, partial=0.5, shuffle_pfn=False)
    pb.generate(500, seed=1, moved=0.5)
    bad = {}
    for name, d in GK.DISPATCHERS.items():
        if d.targetoptions.get("inline") == "always":
            continue
        assert d.overloads, f"{name} never compiled"
        for cres in d.overloads.values():
            floats = [f"{v}: {t}" for v, t in cres.type_annotation.typemap.items() if "float" in str(t)]
            if floats:
                bad[name] = floats
    assert not bad, bad


def test_changing_one_knob_leaves_the_other_draws_alone():
    a = pb.generate(2000, seed=3, lazyfree=0.1, moved=0.2)
    b = pb.generate(2000, seed=3, lazyfree=0.9, moved=0.2)
    assert np.array_equal(a.ptes, b.ptes) and np.array_equal(a.folio_pfn, b.folio_pfn)
    assert not np.array_equal(a.folio_flags, b.folio_flags)
    c = pb.generate(2000, seed=3, lazyfree=0.1, moved=0.2, holes=0.2)
    assert np.array_equal(a.table_va, c.table_va) and np.array_equal(a.vma_start, c.vma_start)
    pa, pc = X86.pte_present(a.ptes), X86.pte_present(c.ptes)
    assert (pc <= pa).all() and np.array_equal(a.ptes[pc], c.ptes[pc])
