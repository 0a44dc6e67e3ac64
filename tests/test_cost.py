"""Operation counts (docs/model.md section 10): JIT equals naive, golden values, done-when.

Golden values are derived by hand from the rules of section 10: the walker
``ptep_get``s every entry it visits, folio_pte_batch's loop reads from the
first entry's hint up to the entry that ended the batch, a contpte gather
reads 16 entries, and each caller's writes/folio/rmap/TLB operations are a
fixed number per PTE or per batch (``CALLER_OPS``).
"""

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import KERNELS, spaces

import ptebatch as pb
from ptebatch.bench import cases_up_to, space_for
from ptebatch.cli import main
from ptebatch.space import FOLIO_ANON, FOLIO_SWAPBACKED
from ptebatch.workloads import cost as C

IMPLS = [pytest.param(pb, id="jit"), pytest.param(pb.naive, id="naive")]
WALKERS = [c.name for c in pb.CALLERS.values() if c.walk == "scan"]
NO_JIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
BASE = 1 << 32  # 2 MiB aligned


def one_folio(arch: str, vma_pages: int = 16, flags=FOLIO_ANON | FOLIO_SWAPBACKED):
    """One 16-page folio at BASE (folded into a contpte block on arm64), in a VMA of
    ``vma_pages`` pages; the entries past the folio are empty."""
    a = pb.get_arch(arch)
    pfn = 0x1000 + np.arange(16, dtype=np.uint64)
    ptes = a.make_pte(pfn, write=True, young=True, dirty=True, extra=a.cont)
    va = BASE + 4096 * np.arange(16, dtype=np.uint64)
    return pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE],
        [BASE + 4096 * vma_pages],
        [0x1000],
        [16],
        [flags],
        arch=arch,
    )


def ops(impl, space, caller, kernel, batching):
    r = impl.scan(space, caller=caller, kernel=kernel, rows=False, batching=batching)
    return C.walk_ops(r)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "arch,batched_reads,unbatched_reads",
    [
        # x86-64: the walker reads entry 0, the loop entries 1-15; max_nr (cut to the
        # 16 pages left in the folio) ends the loop without another read.  Unbatched:
        # one ptep_get per entry.
        ("x86_64", 16, 16),
        # arm64: ptep_get of entry 0 gathers its block (16 reads) and the hint (16)
        # reaches max_nr.  Unbatched: each of the 16 ptep_gets gathers 16.
        ("arm64", 16, 16 * 16),
    ],
)
def test_one_16_page_folio_zap_golden(impl, arch, batched_reads, unbatched_reads):
    space = one_folio(arch)
    b = ops(impl, space, "zap", "6.18", True)
    u = ops(impl, space, "zap", "6.18", False)
    # zap: one clear per PTE either way; one batch of 16, or 16 batches of 1
    assert b == dict(
        pte_reads=batched_reads,
        pte_writes=16,
        folio_ref_updates=1,
        mapcount_updates=1,
        rmap_calls=1,
        tlb_flush_ranges=1,
    )
    assert u == dict(
        pte_reads=unbatched_reads,
        pte_writes=16,
        folio_ref_updates=16,
        mapcount_updates=16,
        rmap_calls=16,
        tlb_flush_ranges=16,
    )


def unmap_ops(impl, space, kernel, batching):
    r = impl.unmap(space, caller="lazyfree", kernel=kernel, rows=False, batching=batching)
    return C.walk_ops(r)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "arch,batched_reads,unbatched_reads",
    [
        # x86-64: page_vma_mapped_walk reads entry 0; folio_unmap_pte_batch's max_nr is
        # pmd_addr_end (the VMA end, 16 pages), cut to the 16 pages left in the folio,
        # so the loop reads entries 1-15 and stops at max_nr: 1 + 15.  The batch is the
        # whole folio, so the walk ends there.  Unbatched: 16 steps, one read each.
        ("x86_64", 16, 16),
        # arm64: the first ptep_get gathers the contpte block (16) and its hint (16)
        # reaches max_nr, so the loop reads nothing.  Unbatched: each of the 16 steps
        # gathers the block again (16 x 16; cleared entries read as none but are read).
        ("arm64", 16, 16 * 16),
    ],
)
def test_one_16_page_folio_lazyfree_golden(impl, arch, batched_reads, unbatched_reads):
    space = one_folio(arch, flags=FOLIO_ANON)  # anon, not swapbacked: lazyfree
    b = unmap_ops(impl, space, "6.18", True)
    u = unmap_ops(impl, space, "6.18", False)
    # try_to_unmap_one: get_and_clear_full_ptes clears each PTE once either way; per
    # batch one folio_put_refs, one folio_remove_rmap_ptes (mapcount and rmap call) and
    # one flushed range: 1 batch of 16, or 16 of 1
    assert b == dict(
        pte_reads=batched_reads,
        pte_writes=16,
        folio_ref_updates=1,
        mapcount_updates=1,
        rmap_calls=1,
        tlb_flush_ranges=1,
    )
    assert u == dict(
        pte_reads=unbatched_reads,
        pte_writes=16,
        folio_ref_updates=16,
        mapcount_updates=16,
        rmap_calls=16,
        tlb_flush_ranges=16,
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_lazyfree_before_6_15_does_not_batch(impl):
    # the release's own rule: 6.14 reclaim takes a lazyfree folio one PTE at a time,
    # so batched and unbatched walks are the same
    space = one_folio("x86_64", flags=FOLIO_ANON)
    b = unmap_ops(impl, space, "6.14", True)
    assert b == unmap_ops(impl, space, "6.14", False)
    assert b["rmap_calls"] == 16


@pytest.mark.parametrize("impl", IMPLS)
def test_lazyfree_partial_batch_rereads_cleared_entries(impl):
    # The folio is split by the VMA end after page 8 and page 8.. are in a second VMA
    # (6.18 clamps at vma_end): the first batch takes 8 entries; no whole-folio batch,
    # so the walk goes on.  Entries 0-7: read 0 (1), loop 1-7 (7), then
    # page_vma_mapped_walk steps over 1-7, now none, reading each (7).  Second VMA: read
    # 8 (1), loop 9-15 (7), and 9-15 again (7): the batch is not the whole folio either.
    # Total 2 x (1 + 7 + 7) = 30, two batches.
    a = pb.get_arch("x86_64")
    pfn = 0x1000 + np.arange(16, dtype=np.uint64)
    ptes = a.make_pte(pfn, write=True, young=True, dirty=True)
    va = BASE + 4096 * np.arange(16, dtype=np.uint64)
    space = pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE, BASE + 8 * 4096],
        [BASE + 8 * 4096, BASE + 16 * 4096],
        [0x1000],
        [16],
        [FOLIO_ANON],
        arch="x86_64",
    )
    ops_ = unmap_ops(impl, space, "6.18", True)
    assert (ops_["pte_reads"], ops_["rmap_calls"]) == (30, 2)


@given(spaces(), st.sampled_from(KERNELS), st.booleans(), st.booleans())
def test_unmap_reads_jit_equal_naive(space, kernel, batching, parallel):
    a = pb.unmap(space, kernel=kernel, batching=batching, parallel=parallel)
    b = pb.naive.unmap(space, kernel=kernel, batching=batching)
    assert a.pte_reads == b.pte_reads
    assert a.summary() == b.summary()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kernel,reads",
    [
        # gen 1: max_nr runs to the VMA end (32), so the loop also reads entry 16 (none)
        # before it stops: 1 + 15 + 1, then the walker reads entries 16-31 (16).
        ("6.14", 33),
        # gen 1b/2: max_nr is cut at the folio end: 1 + 15, then 16.
        ("6.16", 32),
        ("6.18", 32),
    ],
)
def test_gen1_rereads_the_entry_after_the_folio(impl, kernel, reads):
    space = one_folio("x86_64", vma_pages=32)
    assert ops(impl, space, "zap", kernel, True)["pte_reads"] == reads
    # unbatched, each of the 32 entries is read once, whatever the generation
    assert ops(impl, space, "zap", kernel, False)["pte_reads"] == 32


@pytest.mark.parametrize("impl", IMPLS)
def test_fork_and_mprotect_rules_on_one_folio(impl):
    space = one_folio("x86_64")
    fork = ops(impl, space, "fork-private", "6.18", True)
    # fork: wrprotect_ptes on the parent and set_ptes on the child (2 per PTE); one
    # folio_ref_add and one dup-rmap call for the batch; no per-batch TLB range
    assert (fork["pte_writes"], fork["folio_ref_updates"], fork["rmap_calls"]) == (32, 1, 1)
    assert fork["tlb_flush_ranges"] == 0
    mp = ops(impl, space, "mprotect", "6.18", False)
    # mprotect touches no folio count; one TLB range per PTE when it does not batch
    assert (mp["folio_ref_updates"], mp["mapcount_updates"], mp["tlb_flush_ranges"]) == (0, 0, 16)


def test_walk_ops_refuses_a_caller_without_rules():
    r = pb.scan(one_folio("x86_64"), caller="mremap", kernel="6.18", rows=False)
    with pytest.raises(ValueError, match="caller: operation counts are defined for"):
        C.walk_ops(r)


def test_batching_must_be_a_bool():
    with pytest.raises(TypeError, match="batching"):
        pb.scan(one_folio("x86_64"), batching="no")


@given(spaces(), st.sampled_from(WALKERS), st.sampled_from(KERNELS), st.booleans(), st.booleans())
def test_reads_jit_equal_naive(space, caller, kernel, batching, parallel):
    a = pb.scan(space, caller=caller, kernel=kernel, batching=batching, parallel=parallel)
    b = pb.naive.scan(space, caller=caller, kernel=kernel, batching=batching)
    assert a.pte_reads == b.pte_reads
    assert a.summary() == b.summary()


# The default run takes the two layouts with the most batch kinds (mixed sizes, 2 MiB);
# the others (all 4 KiB, straddling mTHP, arm64: 40 s of naive walks) run under the slow
# marker, as CI does.  test_registry.py walks every small case in the default run.
DEFAULT_CASES = ("mixed-10k", "thp-1k")
REGISTRY_CASES = [
    c if c in DEFAULT_CASES else pytest.param(c, marks=pytest.mark.slow)
    for c in cases_up_to("small")
]


@pytest.mark.parametrize("case", REGISTRY_CASES)
@pytest.mark.parametrize("caller", [p for p in C.CALLER_OPS if pb.CALLERS[p].walk == "scan"])
@pytest.mark.parametrize("batching", [True, False])
def test_registry_cases_ops_jit_equal_naive(case, caller, batching):
    space = space_for(case)
    kw = dict(caller=caller, kernel="6.18", rows=False, batching=batching)
    a, b = pb.scan(space, **kw), pb.naive.scan(space, **kw)
    assert C.walk_ops(a) == C.walk_ops(b)
    assert a.summary() == b.summary()


@pytest.mark.parametrize("case", REGISTRY_CASES)
@pytest.mark.parametrize("batching", [True, False])
def test_registry_cases_unmap_ops_jit_equal_naive(case, batching):
    space = space_for(case)
    kw = dict(caller="lazyfree", kernel="6.18", rows=False, batching=batching)
    a, b = pb.unmap(space, **kw), pb.naive.unmap(space, **kw)
    assert C.walk_ops(a) == C.walk_ops(b)
    assert a.summary() == b.summary()


def test_unbatched_walk_has_one_batch_per_present_pte():
    # batching=False is the caller's release without batching: every present PTE alone
    space = space_for(cases_up_to("small")[0])
    r = pb.scan(space, caller="zap", kernel="6.18", rows=False, batching=False)
    assert r.batches == r.present_ptes == r.ptes_batched and not r.batching


def _check_done_when(size):
    # 2 MiB folios: 512 PTEs each, one per table, so batched fork takes one reference
    # per folio and unbatched one per PTE: 512x.
    rows = C.cost(sizes=(2048,), size=size)
    by = {(r["arch"], r["caller"]): r for r in rows}
    for arch in ("x86_64", "arm64"):
        fork = by[(arch, "fork")]
        assert fork["unbatched"]["folio_ref_updates"] == size // 4096
        assert fork["ratio"]["folio_ref_updates"] == 512
    # arm64: every entry is in a contpte block; batched, one gather of 16 per block
    # (1 read per entry), unbatched one gather per entry (16): 16x.  x86-64: 1x.
    assert by[("arm64", "mprotect")]["batched"]["pte_reads"] == size // 4096
    assert by[("arm64", "mprotect")]["ratio"]["pte_reads"] == 16
    assert by[("x86_64", "mprotect")]["ratio"]["pte_reads"] == 1


def test_done_when_on_a_small_region():
    _check_done_when(16 << 20)


@pytest.mark.slow
@pytest.mark.skipif(NO_JIT, reason="1 GiB walks in pure Python take minutes")
def test_done_when_on_1_gib():
    _check_done_when(1 << 30)


def test_region_contpte_only_from_64k():
    # 16 KiB and 32 KiB folios are smaller than a contpte block: no fold, 1 read per entry
    for kb, want in ((32, 1), (64, 16)):
        rows = C.cost(sizes=(kb,), arches=("arm64",), callers=("munmap",), size=2 << 20)
        assert rows[0]["ratio"]["pte_reads"] == want


@pytest.mark.parametrize("bad", [dict(folio_kb=8), dict(size=4096)])
def test_region_refuses_bad_input(bad):
    kw = dict(folio_kb=64, arch="x86_64", size=2 << 20) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        C.region(**kw)


def test_cli_cost_json(capsys):
    code = main(["cost", "--json", "--sizes", "4,2048", "--size-mib", "4"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)["rows"]
    # 2 sizes x 2 arches x 4 callers
    assert len(rows) == 16
    fork = [r for r in rows if r["caller"] == "fork" and r["folio_kb"] == 2048]
    assert {r["ratio"]["folio_ref_updates"] for r in fork} == {512}
    # lazyfree: one whole-folio batch per 2 MiB folio, one per PTE unbatched: 512x; at
    # 4 KiB the unmap walks no large folio, so there is nothing to count
    lazy = {r["folio_kb"]: r for r in rows if r["caller"] == "lazyfree" and r["arch"] == "arm64"}
    assert lazy[2048]["ratio"]["rmap_calls"] == 512
    assert lazy[2048]["ratio"]["pte_reads"] == 16  # a gather per entry vs per block
    assert lazy[4]["batched"]["pte_writes"] == 0 and lazy[4]["ratio"]["rmap_calls"] is None


def test_cli_cost_table(capsys):
    code = main(["cost", "--sizes", "64", "--size-mib", "2", "--arch", "arm64"])
    out = capsys.readouterr().out
    assert code == 0 and "mprotect" in out and "pte_reads" in out


def test_cli_cost_bad_size_is_one_line(capsys):
    code = main(["cost", "--sizes", "8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sizes" in err


def test_cli_cost_plot_writes_png_and_svg(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, svg = tmp_path / "c.png", tmp_path / "c.svg"
    args = ["cost", "--sizes", "16,64", "--size-mib", "2", "--arch", "arm64"]
    assert main([*args, "--plot", str(png)]) == 0
    assert main([*args, "--plot", str(svg)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the PNG signature
    assert b"<svg" in svg.read_bytes()[:1000]


def test_cli_cost_plot_bad_suffix_is_one_line(tmp_path, capsys):
    code = main(["cost", "--sizes", "64", "--size-mib", "2", "--plot", str(tmp_path / "c.txt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "output: must end in" in err
    assert not (tmp_path / "c.txt").exists()


def test_cli_cost_plot_without_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    code = main(["cost", "--sizes", "64", "--size-mib", "2", "--plot", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "matplotlib" in err


def test_fit_nnls_recovers_known_coefficients():
    # synthetic timings from known non-negative coefficients (one of them 0): the fit
    # must give them back, whatever the scale of each column
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [rng.uniform(1e5, 5e6, 12), rng.uniform(0, 1e4, 12), rng.uniform(1e2, 3e5, 12), np.ones(12)]
    )
    want = np.array([2.5e-7, 0.0, 1.5e-6, 0.5])
    np.testing.assert_allclose(C.fit_nnls(x, x @ want), want, rtol=1e-9, atol=1e-12)


def test_fit_nnls_clamps_a_negative_direction_to_zero():
    # y falls as column 1 grows: least squares would give it a negative coefficient;
    # NNLS sets it to 0 and fits the mean with the constant column (2, 2 -> mean 2)
    x = np.array([[1.0, 1.0], [2.0, 1.0]])
    y = np.array([3.0, 1.0])
    np.testing.assert_allclose(C.fit_nnls(x, y), [0.0, 2.0])


def test_fit_nnls_refuses_bad_shapes():
    with pytest.raises(ValueError, match="x, y"):
        C.fit_nnls(np.ones((3, 2)), np.ones(2))


def test_calibration_fits_mprotect_and_reports_unverified():
    cal = C.calibration(scale=1 / 64)
    rows = cal["rows"]
    fitted = [r for r in rows if r["fitted_on"]]
    # the six arm64 mprotect timings (three sizes, before and after)
    assert cal["fit_on"] == 6 and {r["folio_kb"] for r in fitted} == {4, 64, 2048}
    assert all(v >= 0 for v in cal["coef"].values())
    # mprotect touches no folio: nothing in the fit constrains b, which NNLS leaves at 0
    assert cal["coef"]["folio_ops"] == 0
    # 4 KiB: batching changes no count, so the model predicts no change at all, while the
    # series measured 1.0 s -> 1.1 s (a speedup of 1/1.1): the order-0 slowdown it cannot see
    small = next(r for r in fitted if r["folio_kb"] == 4)
    assert small["predicted"] == 1.0 and small["published"] == round(1.0 / 1.1, 2)
    assert {r["source"] for r in rows if r["caller"] in ("fork", "munmap")} == {"not verified"}
    assert all(r["published"] is None for r in rows if r["caller"] in ("fork", "munmap"))


def test_cli_cost_calibration_table(capsys, monkeypatch):
    real = C.calibration
    monkeypatch.setattr(
        "ptebatch.cli.cost.calibration", lambda kernel: real(kernel=kernel, scale=1 / 64)
    )
    assert main(["cost", "--calibration"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fitted on 6 timings") and "not verified" in out
