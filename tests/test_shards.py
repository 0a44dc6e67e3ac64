"""Sharded spaces: the format, the cut rule, and walks over shards equal to the whole space's."""

import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ptebatch as pb
from ptebatch import shards
from ptebatch.arch import PAGE_SIZE, PMD_SIZE, get_arch
from ptebatch.shards import ShardedSpace, SnapshotError
from ptebatch.space import FOLIO_ANON
from tests.strategies import spaces

ROW_KEYS = ("va", "nr", "reason", "findings")
X = 0x7F0000000000


def assert_same(whole, part, rows: bool) -> None:
    """Field by field: the summary dict, the count arrays, and the rows when kept."""
    assert part.summary() == whole.summary()
    assert np.array_equal(part.length_hist, whole.length_hist)
    assert part.length_hist.shape == whole.length_hist.shape
    assert np.array_equal(part.found, whole.found)
    keys = ROW_KEYS + (("folio_pfn",) if isinstance(whole, pb.UnmapResult) else ())
    for k in keys:
        if rows:
            assert np.array_equal(getattr(part, k), getattr(whole, k)), k
            assert getattr(part, k).dtype == getattr(whole, k).dtype, k
        else:
            assert getattr(part, k) is None


@st.composite
def cuttable_spaces(draw):
    """The equivalence strategy's spaces, often with VMAs inside single tables so that
    cuts are allowed (the strategy's common one VMA over every table allows none)."""
    sp = draw(spaces(max_tables=5))
    if sp.n_tables > 1 and draw(st.booleans()):
        a = get_arch(sp.arch)
        ptes = sp.ptes.copy()
        starts, ends = [], []
        for t, va in enumerate(sp.table_va.tolist()):
            large = np.flatnonzero(sp.folio_nr >= 2)
            if t < sp.n_tables - 1 and large.size and draw(st.booleans()):
                # a large folio's first page alone in entry 511: its batch can read past it
                f = int(large[draw(st.integers(0, large.size - 1))])
                ptes[t, 511] = np.uint64(int(a.make_pte(int(sp.folio_pfn[f]), write=True)))
            if t and not ptes[t, 0] and draw(st.booleans()):
                # a page in entry 0, where a read past the previous row's entry 511 lands
                ptes[t, 0] = np.uint64(int(a.make_pte(7 + t, write=True)))
            if draw(st.booleans()):
                lo = draw(st.integers(0, 256)) * PAGE_SIZE
                end = st.integers(lo // PAGE_SIZE + 1, 512)
                hi = draw(st.one_of(st.just(512), end)) * PAGE_SIZE  # often to the table's end
                starts.append(va + lo)
                ends.append(va + hi)
        if starts:
            sp = pb.AddressSpace(
                ptes,
                sp.table_va,
                np.array(starts, dtype=np.uint64),
                np.array(ends, dtype=np.uint64),
                sp.folio_pfn,
                sp.folio_nr,
                sp.folio_flags,
                arch=sp.arch,
            )
    return sp


SCAN_SETTINGS = st.fixed_dictionaries(
    {
        "caller": st.sampled_from(["zap", "fork-private", "mprotect", "mremap"]),
        "kernel": st.sampled_from(["6.15", "6.16", "7.0"]),
        "clamp": st.sampled_from(["pmd", "folio"]),
        "oob": st.sampled_from(["none", "adjacent"]),
        "move_by": st.sampled_from([0, PAGE_SIZE, 5 * PAGE_SIZE, PMD_SIZE, -3 * PAGE_SIZE]),
    }
)
UNMAP_SETTINGS = st.fixed_dictionaries(
    {
        "kernel": st.sampled_from(["6.15", "6.16", "7.0"]),
        "oob": st.sampled_from(["none", "adjacent"]),
    }
)


@given(
    cuttable_spaces(),
    st.integers(1, 3),
    SCAN_SETTINGS,
    UNMAP_SETTINGS,
    st.booleans(),
)
def test_sharded_walks_equal_the_whole_space(sp, tables, scan_kw, unmap_kw, rows):
    if scan_kw["caller"] != "mremap":
        scan_kw["move_by"] = 0
    with tempfile.TemporaryDirectory() as d:
        ss = shards.shard(sp, os.path.join(d, "s"), tables=tables)
        # the drawn setting, serial too, and always the one that reads past entry 511
        edge = dict(kernel="6.15", clamp="folio", oob="adjacent")
        for kw in (scan_kw, {**scan_kw, "parallel": False}, edge):
            assert_same(pb.scan(sp, rows=rows, **kw), pb.scan(ss, rows=rows, **kw), rows)
        assert_same(pb.unmap(sp, rows=rows, **unmap_kw), pb.unmap(ss, rows=rows, **unmap_kw), rows)


def test_thread_layout_at_every_allowed_cut(tmp_path):
    # the thread's layout: one VMA over the folio, which spans the 2 MiB boundary, so the
    # only boundary (before table 1) is refused by both rules: one shard
    sp = pb.thread_layout()
    assert shards.allowed_cuts(sp).tolist() == []
    ss = shards.shard(sp, tmp_path / "s", tables=1)
    assert len(ss) == 1 and not ss.shards[0].halo
    for kernel in ("6.15", "6.16"):
        for oob in ("none", "adjacent"):
            assert_same(
                pb.unmap(sp, kernel=kernel, oob=oob), pb.unmap(ss, kernel=kernel, oob=oob), True
            )
            assert_same(
                pb.scan(sp, kernel=kernel, oob=oob, clamp="folio"),
                pb.scan(ss, kernel=kernel, oob=oob, clamp="folio"),
                True,
            )


def overrun_layout(other_pfn: int) -> pb.AddressSpace:
    """A cut with a read past entry 511 across it.

    Table A (at X) holds only page 0 of a 16-page lazyfree folio F (PFN 0x1000) in entry 511;
    table B (at X + 2 MiB) maps a 16-page folio G at ``other_pfn`` in entries 0-15.  One VMA
    per table, so the cut before B is allowed (no VMA and no folio spans it).
    """
    a = get_arch("x86_64")
    va = [X + 511 * PAGE_SIZE] + [X + PMD_SIZE + i * PAGE_SIZE for i in range(16)]
    pte = [int(a.make_pte(0x1000, write=True))]
    pte += [int(a.make_pte(other_pfn + i, write=True)) for i in range(16)]
    fol = sorted([0x1000, other_pfn])
    return pb.AddressSpace.from_entries(
        np.array(va, dtype=np.uint64),
        np.array(pte, dtype=np.uint64),
        [X, X + PMD_SIZE],
        [X + PMD_SIZE, X + 2 * PMD_SIZE],
        fol,
        [16, 16],
        [FOLIO_ANON, FOLIO_ANON],
    )


@pytest.mark.parametrize("other_pfn", [0x800, 0x2000])
def test_halo_is_needed_for_a_read_past_entry_511(tmp_path, other_pfn):
    sp = overrun_layout(other_pfn)
    assert shards.allowed_cuts(sp).tolist() == [1]
    ss = shards.shard(sp, tmp_path / "s", tables=1)
    assert len(ss) == 2 and ss.shards[0].halo and ss.open(0).n_tables == 2
    bare = shards.shard(sp, tmp_path / "bare", tables=1, halo=False)
    assert bare.open(0).n_tables == 1
    # zap without the table clamp (clamp="folio", max_nr = 16) from F's page in entry 511:
    # the loop reads entry 512, which oob="adjacent" takes from the next row, B's entry 0,
    # G's page 0: its PFN is not F's next (0x1001), so the batch of 1 stops at pfn_gap.
    # Without a halo the shard has no next row and the read sees none: not_present.
    kw = dict(kernel="6.15", oob="adjacent", clamp="folio")
    whole = pb.scan(sp, **kw)
    assert whole.stop_reasons["pfn_gap"] == 1 and whole.stop_reasons["not_present"] == 0
    assert whole.table_overruns == 1
    assert_same(whole, pb.scan(ss, **kw), True)
    without = pb.scan(bare, **kw)
    assert without.stop_reasons["not_present"] == 1 and without.stop_reasons["pfn_gap"] == 0
    # 6.15 lazyfree reclaim: the all-or-nothing batch from F's first page (max_nr = 16, no
    # clamp) also reads entry 512 and is abandoned whatever it finds there (G's page, or
    # none); F is unmapped one PTE at a time (one "single" row), the overrun counted once.
    # G is walked before F (lower PFN) or after; either way the result is the whole space's.
    # With G at 0x800 the second shard's folio comes first: the unmap rows must be merged by
    # folio PFN, not concatenated in shard order (this case fails if they are).
    for oob in ("none", "adjacent"):
        w = pb.unmap(sp, kernel="6.15", oob=oob)
        assert w.table_overruns == 1  # counted whatever the read sees
        assert w.summary()["stop_reasons"]["single"] == 1
        assert_same(w, pb.unmap(ss, kernel="6.15", oob=oob), True)


# -- round trips and the format -----------------------------------------------------------


@given(cuttable_spaces(), st.integers(1, 4))
def test_shard_unshard_round_trip(sp, tables):
    with tempfile.TemporaryDirectory() as d:
        ss = shards.shard(sp, os.path.join(d, "s"), tables=tables)
        assert (ss.n_tables, ss.n_vmas, ss.n_folios) == (sp.n_tables, sp.n_vmas, sp.n_folios)
        shards.unshard(ss, os.path.join(d, "u.npz"))
        assert pb.load(os.path.join(d, "u.npz")) == sp


def test_manifest_fields(tmp_path):
    sp = pb.generate(2000, seed=3, vma_tables=2)
    ss = shards.shard(sp, tmp_path / "s", tables=4)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["format"] == "ptebatch-shards" and m["version"] == 1 and m["arch"] == "x86_64"
    assert (m["n_tables"], m["n_vmas"], m["n_folios"]) == (sp.n_tables, sp.n_vmas, sp.n_folios)
    assert len(ss) == len(m["shards"]) > 2
    for i, (s, rec) in enumerate(zip(ss.shards, m["shards"])):
        assert rec["file"] == f"shard-{i:05d}.npz" and s.file == str(tmp_path / "s" / rec["file"])
        last = i == len(ss) - 1
        assert s.halo == (not last)
        part = ss.open(i)
        assert part.n_tables == s.table_hi - s.table_lo + int(s.halo)
        assert (part.n_vmas, part.n_folios) == (s.n_vmas, s.n_folios)
        assert s.va_lo == (0 if i == 0 else int(sp.table_va[s.table_lo]))
        assert s.va_hi == (2**64 if last else int(sp.table_va[s.table_hi]))
        if s.halo:  # the next shard's first table, at its own VA
            assert np.array_equal(part.ptes[-1], sp.ptes[s.table_hi])
            assert int(part.table_va[-1]) == int(sp.table_va[s.table_hi])
        # every cut is an allowed one, at least 4 tables after the previous one
        if i:
            assert s.table_lo in shards.allowed_cuts(sp).tolist()
            assert s.table_lo - ss.shards[i - 1].table_lo >= 4
        assert s.bytes == os.path.getsize(s.file)
    info = ss.info()
    assert (info["tables"], info["vmas"], info["folios"]) == (sp.n_tables, sp.n_vmas, sp.n_folios)
    assert isinstance(pb.load(tmp_path / "s"), ShardedSpace)
    assert "shards=" in repr(ss)


def test_cut_rule_vma_and_folio_spanning(tmp_path):
    a = get_arch("x86_64")
    # three adjacent tables; a folio of 16 pages mapped at the end of table 0 and the start
    # of table 1 (8 + 8 pages) refuses the cut before 1; a VMA from table 1 into table 2
    # refuses the cut before 2.  Each table has its own VMA otherwise.
    va = [X + (504 + i) * PAGE_SIZE for i in range(16)]
    pte = [int(a.make_pte(0x1000 + i, write=True)) for i in range(16)]
    va += [X + 2 * PMD_SIZE + PAGE_SIZE]
    pte += [int(a.make_pte(0x5000, write=True))]
    sp = pb.AddressSpace.from_entries(
        np.array(va, dtype=np.uint64),
        np.array(pte, dtype=np.uint64),
        [X, X + PMD_SIZE],
        [X + PMD_SIZE, X + 3 * PMD_SIZE - PAGE_SIZE],
        [0x1000],
        [16],
        [FOLIO_ANON],
    )
    assert sp.n_tables == 3
    assert shards.allowed_cuts(sp).tolist() == []  # before 1: the folio; before 2: the VMA
    ss = shards.shard(sp, tmp_path / "s", tables=1)
    assert len(ss) == 1  # the shard grows
    # unmapping the folio's second half frees the cut before table 1
    ptes = sp.ptes.copy()
    ptes[1, :8] = 0
    sp2 = pb.AddressSpace(
        ptes, sp.table_va, sp.vma_start, sp.vma_end, sp.folio_pfn, sp.folio_nr, sp.folio_flags
    )
    assert shards.allowed_cuts(sp2).tolist() == [1]
    # a listed folio mapped nowhere goes to the last shard
    sp3 = pb.AddressSpace(
        ptes,
        sp.table_va,
        sp.vma_start,
        sp.vma_end,
        np.array([0x1000, 0x9000], dtype=np.uint64),
        np.array([16, 4], dtype=np.uint64),
        np.array([FOLIO_ANON, 0], dtype=np.uint8),
    )
    ss3 = shards.shard(sp3, tmp_path / "s3", tables=1)
    assert [s.n_folios for s in ss3.shards] == [1, 1]
    assert ss3.open(1).folio_pfn.tolist() == [0x9000]


def test_write_is_atomic(tmp_path, monkeypatch):
    sp = pb.generate(1000, seed=1, vma_tables=2)
    real = pb.AddressSpace.save
    calls = []

    def failing(self, path, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk gone")
        real(self, path, **kw)

    monkeypatch.setattr(pb.AddressSpace, "save", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        shards.shard(sp, tmp_path / "s", tables=2)
    assert os.listdir(tmp_path) == []  # no target, no temporary directory
    monkeypatch.setattr(pb.AddressSpace, "save", real)
    # an existing file or plain directory is refused and left alone; a sharded space replaced
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="not a ptebatch sharded space"):
        shards.shard(sp, tmp_path / "f", tables=2)
    assert (tmp_path / "f").read_text() == "x"
    shards.shard(sp, tmp_path / "s", tables=2)
    ss = shards.shard(sp, tmp_path / "s", tables=4)
    assert len(ss) == len(os.listdir(tmp_path / "s")) - 1
    assert sorted(os.listdir(tmp_path)) == ["f", "s"]


def test_missing_and_corrupt_shards(tmp_path):
    sp = pb.generate(1000, seed=2, vma_tables=2)
    ss = shards.shard(sp, tmp_path / "s", tables=2)
    victim = ss.shards[1].file
    data = bytearray(open(victim, "rb").read())
    data[len(data) // 2] ^= 0x40  # one flipped bit in the page tables
    open(victim, "wb").write(bytes(data))
    with pytest.raises(SnapshotError, match=r"shard-00001\.npz: shard 1 fails its SHA-256"):
        pb.scan(pb.load(tmp_path / "s"))
    os.truncate(victim, 100)
    with pytest.raises(SnapshotError, match=r"shard-00001\.npz: shard 1 has 100 bytes"):
        ss.open(1, verify=False)
    os.remove(victim)
    with pytest.raises(SnapshotError, match=r"shard-00001\.npz: shard 1 is missing"):
        pb.load(tmp_path / "s")
    m = tmp_path / "s" / "manifest.json"
    bad = json.loads(m.read_text())
    del bad["shards"][0]["sha256"]
    m.write_text(json.dumps(bad))
    with pytest.raises(SnapshotError, match=r"manifest\.json: shard 0: missing field 'sha256'"):
        pb.load(tmp_path / "s")
    os.remove(m)
    with pytest.raises(SnapshotError, match=r"manifest\.json: missing manifest"):
        ShardedSpace(tmp_path / "s")
    with pytest.raises(SnapshotError, match=r"s: not a ptebatch snapshot \(a directory"):
        pb.load(tmp_path / "s")  # a directory without a manifest is neither


def test_map_shards_executor_and_progress(tmp_path):
    sp = pb.generate(1000, seed=4, vma_tables=2)
    ss = shards.shard(sp, tmp_path / "s", tables=3)
    seen = []

    def executor(task, calls, progress):
        seen.append(len(calls))
        return [task(*c) for c in calls]

    steps = []
    r = pb.scan(ss, executor=executor, rows=False)
    assert seen == [len(ss)]
    assert_same(pb.scan(sp, rows=False), r, False)
    pb.unmap(tmp_path / "s", rows=False, progress=lambda *a: steps.append(a))
    assert steps == [("shards", i + 1, len(ss), "shard") for i in range(len(ss))]


def test_merge_refuses_mixed_settings(tmp_path):
    sp = pb.generate(500, seed=1)
    with pytest.raises(ValueError, match="kernel differs"):
        pb.ScanResult.merge([pb.scan(sp, kernel="6.15"), pb.scan(sp, kernel="6.16")])
    with pytest.raises(ValueError, match="nothing to merge"):
        pb.UnmapResult.merge([])


# -- streaming generate --------------------------------------------------------------------


def test_sharded_generate_memory_is_bounded(tmp_path):
    import tracemalloc

    kw = dict(seed=5, shard_tables=20, vma_split=0.1, partial=0.1, lazyfree=0.5)
    pb.generate(500, out=tmp_path / "warm", **kw)  # compiling allocates too: not measured

    def peak(n: int):
        tracemalloc.start()
        try:
            ss = pb.generate(n, out=tmp_path / f"g{n}", **kw)
            return ss, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, small_peak = peak(1200)
    big, big_peak = peak(6000)
    assert len(small) <= 5 and len(big) >= 20
    # the page tables alone, were they held at once: 5 times more for the big space
    whole = big.n_tables * 512 * 8
    assert whole > 4 * small.n_tables * 512 * 8
    # yet the peak (about two blocks and one block's temporaries) does not grow with it
    assert big_peak < 1.25 * small_peak, (small_peak, big_peak)
    assert big_peak < whole, (big_peak, whole)


def test_sharded_generate_equals_its_unshard(tmp_path):
    kw = dict(seed=5, shard_tables=10, vma_split=0.1, partial=0.1, lazyfree=0.5, moved=0.2)
    ss = pb.generate(3000, out=tmp_path / "g", **kw)
    assert len(ss) >= 5
    # the same seed and knobs give the same bytes
    again = pb.generate(3000, out=tmp_path / "g2", **kw)
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in ss.shards]
    shards.unshard(ss, tmp_path / "u.npz")
    u = pb.load(tmp_path / "u.npz")
    assert ss.n_folios == u.n_folios and ss.n_tables == u.n_tables
    # every block boundary is an allowed cut of the whole
    cuts = set(shards.allowed_cuts(u).tolist())
    assert {s.table_lo for s in ss.shards[1:]} <= cuts
    for skw in (dict(), dict(kernel="6.15", clamp="folio", oob="adjacent")):
        assert_same(pb.scan(u, rows=False, **skw), pb.scan(ss, rows=False, **skw), False)
    for ukw in (dict(kernel="6.15", oob="adjacent"), dict(kernel="7.0")):
        assert_same(pb.unmap(u, rows=True, **ukw), pb.unmap(ss, rows=True, **ukw), True)


def test_sharded_generate_moves_blocks_keeping_other_bits(tmp_path):
    from ptebatch.workloads.generator import _block_seed, block_counts

    ss = pb.generate(3000, seed=9, shard_tables=20, out=tmp_path / "g", sizes="mthp16")
    a = get_arch("x86_64")
    mask = np.uint64(a.pfn_mask)
    per = block_counts(3000, 20, "mthp16", 32)[1]
    block1 = pb.generate(per, seed=_block_seed(9, 1), sizes="mthp16")
    got = ss.open(1)
    own = got.ptes[: ss.shards[1].table_hi - ss.shards[1].table_lo]
    assert own.shape == block1.ptes.shape
    assert np.array_equal(own & ~mask, block1.ptes & ~mask)  # every other bit kept
    present = (block1.ptes & np.uint64(a.present)) != 0
    moved = (own[present] >> np.uint64(12)).astype(np.int64) - (
        block1.ptes[present] >> np.uint64(12)
    ).astype(np.int64)
    assert np.unique(moved).size == 1 and int(moved[0]) % 512 == 0  # one move, 2 MiB aligned
    dva = (got.table_va[:1].astype(np.int64) - block1.table_va[:1].astype(np.int64))[0]
    assert dva > 0 and dva % PMD_SIZE == 0
    # the gap: block 0's last VMA ends at least 2 MiB below block 1's first table
    assert int(ss.open(0).vma_end[-1]) + PMD_SIZE <= int(got.table_va[0])


# -- the command line ----------------------------------------------------------------------


def cli(capsys, *argv):
    from ptebatch.cli import main

    code = main([str(x) for x in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_on_a_sharded_directory(tmp_path, capsys):
    src = tmp_path / "g.npz"
    assert cli(capsys, "generate", "--folios", "3000", "--seed", "2", "-o", src)[0] == 0
    sp = pb.load(src)
    code, out, _ = cli(capsys, "shard", src, "-o", tmp_path / "S", "--tables", "6")
    assert code == 0 and "ShardedSpace" in out
    ss = pb.load(tmp_path / "S")
    assert len(ss) > 2
    code, out, _ = cli(capsys, "info", tmp_path / "S", "--json")
    info = json.loads(out)
    assert (info["tables"], info["folios"], info["shards"]) == (sp.n_tables, sp.n_folios, len(ss))
    for walk, extra, kw in (
        ("scan", ["--clamp", "folio", "--oob", "adjacent"], dict(clamp="folio", oob="adjacent")),
        ("unmap", ["--kernel", "6.15", "--oob", "adjacent"], dict(kernel="6.15", oob="adjacent")),
    ):
        code, out, _ = cli(capsys, walk, tmp_path / "S", "--json", *extra)
        got = json.loads(out)
        want = getattr(pb, walk)(sp, rows=False, **kw).summary()
        assert {k: got[k] for k in want} == json.loads(json.dumps(want))
    code, out, _ = cli(capsys, "run", tmp_path / "S", src, "--kernels", "6.15", "--json")
    rows = json.loads(out)
    by = {(r["space"], r["walk"]): r for r in rows}
    for walk in ("scan", "unmap"):
        a, b = dict(by[("S", walk)]), dict(by[("g.npz", walk)])
        for r in (a, b):
            r.pop("space"), r.pop("seconds")
        assert a == b
    code, out, _ = cli(capsys, "diff", tmp_path / "S", "--kernels", "6.15,6.16", "--json")
    d_sharded = json.loads(out)
    code, out, _ = cli(capsys, "diff", src, "--kernels", "6.15,6.16", "--json")
    assert d_sharded == json.loads(out)
    code, out, _ = cli(capsys, "unshard", tmp_path / "S", "-o", tmp_path / "u.npz")
    assert code == 0 and pb.load(tmp_path / "u.npz") == sp
    gen = tmp_path / "G"
    code, out, _ = cli(
        capsys, "generate", "--folios", "3000", "--shard-tables", "10", "-o", gen, "--quiet"
    )
    assert code == 0 and len(pb.load(gen)) > 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    src = tmp_path / "g.npz"
    cli(capsys, "generate", "--folios", "500", "-o", src)
    cases = [
        (("shard", src, "-o", src, "--tables", "2"), "not a ptebatch sharded space"),
        (("scan", tmp_path), "not a ptebatch snapshot (a directory"),
        (("unshard", tmp_path, "-o", tmp_path / "x.npz"), "missing manifest"),
        (("shard", src, "-o", tmp_path / "S", "--tables", "0"), "tables: must be"),
    ]
    cli(capsys, "shard", src, "-o", tmp_path / "T", "--tables", "1")
    os.remove(tmp_path / "T" / "shard-00000.npz")
    cases.append((("unmap", tmp_path / "T"), "shard 0 is missing"))
    cases.append((("scan", tmp_path / "T", "--impl", "naive"), "shard 0 is missing"))
    for argv, msg in cases:
        code, out, err = cli(capsys, *argv)
        assert code == 2, argv
        assert err.count("\n") == 1 and err.startswith("ptebatch: error: ") and msg in err, err


def _same_diff(whole, part) -> None:
    assert part.summary() == whole.summary()
    assert part.to_dict() == whole.to_dict()  # every range, both sides' rows in it
    rw, rp = whole.rows(), part.rows()
    assert rw.keys() == rp.keys()
    for k in rw:
        assert np.array_equal(rp[k], rw[k]), k


@given(
    cuttable_spaces(),
    st.integers(1, 3),
    SCAN_SETTINGS,
    st.sampled_from(["6.15", "6.16", "7.0"]),
    st.sampled_from(["row", "batch"]),
)
def test_sharded_diff_equals_the_whole_space(sp, tables, scan_kw, kernel_b, compare):
    # each shard is diffed alone and sends back only its differing rows (DiffResult.merge)
    if scan_kw["caller"] != "mremap":
        scan_kw["move_by"] = 0
    with tempfile.TemporaryDirectory() as d:
        ss = shards.shard(sp, os.path.join(d, "s"), tables=tables)
        for a, b in (
            (scan_kw, {"kernel": kernel_b, "clamp": "pmd"}),
            ({"caller": "lazyfree", "kernel": "6.15", "oob": "adjacent"}, {"kernel": kernel_b}),
        ):
            _same_diff(pb.diff(sp, a, b, compare=compare), pb.diff(ss, a, b, compare=compare))


def test_a_range_touching_a_cut_joins_its_neighbour_across_it(tmp_path):
    # Two VMAs meeting at a 2 MiB boundary B, one table each, so the space can be cut at B.
    # Folio F (16 pages at PFN 0x1000) has only its first page mapped, in entry 511 below B;
    # folio G (16 pages at PFN 0x2000) is mapped from entry 0 above B, in a VMA one page long.
    # zap 6.15 with clamp="folio" lets F's batch read past entry 511 (a table overrun) and G's
    # past its VMA's end (a VMA overrun); with clamp="pmd" neither reads past.  So each side
    # has a differing row ending at B and one starting at B: they touch, and the whole diff
    # has ONE range, from B - 4 KiB to the end of G's unclamped batch, all 16 of its pages
    # (B + 64 KiB).  Sharded at B, each shard sees half of it; the merge must join them again.
    a = get_arch("x86_64")
    b_va = X + PMD_SIZE
    va = [b_va - PAGE_SIZE] + [b_va + k * PAGE_SIZE for k in range(16)]
    pte = [a.make_pte(0x1000, write=True)] + [a.make_pte(0x2000 + k, write=True) for k in range(16)]
    sp = pb.AddressSpace.from_entries(
        va, pte, [X, b_va], [b_va, b_va + PAGE_SIZE], [0x1000, 0x2000], [16, 16], [FOLIO_ANON] * 2
    )
    ss = shards.shard(sp, tmp_path / "s", tables=1)
    assert len(ss) == 2
    side_a, side_b = {"kernel": "6.15", "clamp": "folio"}, {"clamp": "pmd"}
    whole = pb.diff(sp, side_a, side_b)
    assert [(r.lo, r.hi) for r in whole] == [(b_va - PAGE_SIZE, b_va + 16 * PAGE_SIZE)]
    _same_diff(whole, pb.diff(ss, side_a, side_b))
