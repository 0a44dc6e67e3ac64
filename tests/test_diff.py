"""ptebatch.workloads.diff and `ptebatch diff`: two settings of one walk, address by address."""

import csv
import json

import numpy as np
import pytest

import ptebatch as pb
from ptebatch.callers import Walk
from ptebatch.cli import main
from ptebatch.workloads import diff as D
from ptebatch.workloads.diff import diff, parse_setting

PAGE = 4096
FOLIO_VA = 0x100001FF000  # the thread's folio: page 0 in entry 511 of table A
BOUNDARY = 0x10000200000  # the 2 MiB boundary; pages 1-15 in entries 0-14 of table B


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def thread_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("diff") / "thread.npz"
    pb.thread_layout().save(path)
    return path


# -- the golden case: the LKML thread's layout, lazyfree reclaim 6.15 vs 6.16 --------------


def test_thread_layout_unmap_rows_are_what_the_golden_diff_assumes():
    # The rows the diff below is built from, straight from pb.unmap.
    a = pb.unmap(pb.thread_layout(), kernel="6.15")
    b = pb.unmap(pb.thread_layout(), kernel="6.16")
    assert a.va.tolist() == [FOLIO_VA + i * PAGE for i in range(16)]
    assert a.nr.tolist() == [1] * 16 and set(a.reason_names()) == {"single"}
    assert a.findings.tolist() == [pb.reasons.OVER_TABLE] + [0] * 15
    assert b.va.tolist() == [FOLIO_VA, BOUNDARY]
    assert b.nr.tolist() == [1, 15] and b.reason_names().tolist() == ["pmd_end", "folio_end"]
    assert b.findings.tolist() == [0, 0]


def test_golden_thread_diff():
    d = diff(pb.thread_layout(), {"caller": "lazyfree", "kernel": "6.15"}, {"kernel": "6.16"})
    # Why, per the model: 6.15.0-6.15.6 reclaim asks folio_pte_batch for the whole folio (16)
    # from its first page, entry 511 of table A, with no table clamp, all or nothing.  Entry
    # 512 is past the table (none in the default oob mode), so the batch fails and reclaim
    # unmaps all 16 PTEs one by one; the first step carries the read past the table
    # (table_overrun).  6.16 clamps max_nr at pmd_addr_end: 1 PTE up to the 2 MiB boundary
    # (pmd_end), then the 15 in table B (folio_end).  The first step is 0x100001ff000+1 on
    # both sides but differs in its stop reason and overrun, so the one range starts at the
    # folio and spans all 16 pages.
    assert (d.walk, d.n_ranges, d.n_rows_a, d.n_rows_b, d.ptes) == ("unmap", 1, 16, 2, 16)
    (r,) = d.ranges
    assert (r.lo, r.hi, r.ptes) == (FOLIO_VA, FOLIO_VA + 16 * PAGE, 16)
    assert [(x.va, x.nr, x.reason, x.findings) for x in r.a] == [
        (FOLIO_VA, 1, "single", ("table_overrun",))
    ] + [(FOLIO_VA + i * PAGE, 1, "single", ()) for i in range(1, 16)]
    assert [(x.va, x.nr, x.reason, x.findings) for x in r.b] == [
        (FOLIO_VA, 1, "pmd_end", ()),
        (BOUNDARY, 15, "folio_end", ()),
    ]
    assert {x.folio_pfn for x in r.a + r.b} == {0x113AA0}
    assert d.a["kernel"] == "6.15" and d.b["kernel"] == "6.16" and d.b["caller"] == "lazyfree"


def test_golden_thread_diff_by_batch_only():
    # compare="batch" looks at address and size only: the first step (0x100001ff000+1) is the
    # same on both sides, so the range starts at the boundary and the overrun is not shown.
    d = diff(
        pb.thread_layout(),
        {"caller": "lazyfree", "kernel": "6.15"},
        {"kernel": "6.16"},
        compare="batch",
    )
    (r,) = d.ranges
    assert (r.lo, r.hi, d.n_rows_a, d.n_rows_b) == (BOUNDARY, FOLIO_VA + 16 * PAGE, 15, 1)


def test_golden_thread_diff_cli(capsys, thread_file):
    code, out, err = run(
        capsys, "diff", thread_file, "--caller", "lazyfree", "--kernels", "6.15,6.16"
    )
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[4].split() == ["ranges", "1"]  # counts come before the table
    assert "a 16 of 16, b 2 of 2" in out
    ranges = [ln for ln in lines if ln.startswith("0x")]
    assert len(ranges) == 1
    assert ranges[0].split()[:2] == ["0x100001ff000-0x1000020f000", "16"]
    assert "0x100001ff000+1 single [table_overrun]" in ranges[0]
    assert "0x100001ff000+1 pmd_end" in ranges[0]
    assert "0x10000200000+1 single x15" in out and "0x10000200000+15 folio_end" in out


def test_cli_json_and_csv_hold_every_row(capsys, thread_file, tmp_path):
    out_csv = tmp_path / "rows.csv"
    code, out, err = run(
        capsys,
        "diff",
        thread_file,
        "--caller",
        "lazyfree",
        "--kernels",
        "6.15,6.16",
        "--json",
        "-o",
        out_csv,
    )
    assert code == 0 and "wrote" in err
    got = json.loads(out)
    d = diff(pb.thread_layout(), {"caller": "lazyfree", "kernel": "6.15"}, {"kernel": "6.16"})
    assert got == json.loads(json.dumps(d.to_dict()))
    assert got["ranges"] == 1 and got["range_list"][0]["lo"] == FOLIO_VA
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18 and [r["side"] for r in rows].count("b") == 2
    assert rows[0] == {
        "range": "0",
        "side": "a",
        "va": hex(FOLIO_VA),
        "nr": "1",
        "reason": "single",
        "findings": "table_overrun",
        "folio_pfn": "0x113aa0",
    }
    assert rows[1]["side"] == "b" and rows[1]["reason"] == "pmd_end"


# -- identical settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b",
    [
        ({"caller": "lazyfree", "kernel": "6.15"}, {}),
        ({"caller": "lazyfree", "kernel": "6.16"}, {"kernel": "6.16.0"}),
        ({"kernel": "6.15", "clamp": "folio", "oob": "adjacent"}, {}),
        ({"caller": "mprotect", "kernel": "6.17"}, {"caller": "mprotect"}),
    ],
)
def test_identical_settings_give_no_ranges(a, b):
    space = pb.generate(2000, seed=3, moved=0.3)
    d = diff(space, a, b)
    assert (d.n_ranges, d.n_rows_a, d.n_rows_b, d.ptes, len(d.ranges)) == (0, 0, 0, 0, 0)
    assert d.summary()["batches_a"] == d.summary()["batches_b"] > 0


def test_identical_settings_cli(capsys, thread_file):
    code, out, _ = run(capsys, "diff", thread_file, "--kernels", "6.16,6.16")
    assert code == 0 and "no differences" in out and "ranges           0" in out


# -- a property that must hold on random spaces ---------------------------------------------


def _pte_keys(res, walk: str, compare: str) -> dict:
    """Each PTE address -> the key of the row that covers it (brute force, per PTE)."""
    out = {}
    pfn = res.folio_pfn if walk == "unmap" else None
    for j in range(res.va.size):
        key = (int(res.va[j]), int(res.nr[j]))
        key += (int(pfn[j]),) if pfn is not None else ()
        key += (int(res.reason[j]), int(res.findings[j])) if compare == "row" else ()
        for p in range(int(res.nr[j])):
            va = int(res.va[j]) + p * PAGE
            assert va not in out  # one row per PTE on one side
            out[va] = key
    return out


CASES = [
    # (setting a, setting b, compare, differences expected on every seed)
    ({"caller": "mprotect", "kernel": "6.14"}, {"kernel": "6.17"}, "row", True),
    ({"caller": "mempolicy", "kernel": "6.14"}, {"kernel": "6.17"}, "batch", True),
    ({"kernel": "6.14"}, {"kernel": "6.17"}, "row", False),  # zap: the same batches
    ({"caller": "lazyfree", "kernel": "6.15"}, {"kernel": "6.16"}, "row", True),
    ({"caller": "lazyfree", "kernel": "6.15"}, {"kernel": "6.16"}, "batch", True),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("a,b,compare,differ", CASES)
def test_ranges_are_exactly_the_ptes_batched_differently(seed, a, b, compare, differ):
    space = pb.generate(3000, seed=seed, moved=0.2)
    d = diff(space, a, b, compare=compare)
    ka = _pte_keys(d.result_a, d.walk, compare)
    kb = _pte_keys(d.result_b, d.walk, compare)
    # A PTE differs when the rows covering it on the two sides differ (or one side has none).
    differing = {va for va in ka.keys() | kb.keys() if ka.get(va) != kb.get(va)}
    covered = set()
    seen_a = seen_b = 0
    prev_hi = -1
    for r in d:  # iterates lazily
        assert r.lo > prev_hi  # sorted, disjoint and not touching (touching rows merge)
        prev_hi = r.hi
        pages = set(range(r.lo, r.hi, PAGE))
        assert not pages & covered
        covered |= pages
        # each side's differing rows tile the range exactly: both walks cover the same PTEs
        # (same space, same VMAs, clamped at the table), only grouped differently
        for side in (r.a, r.b):
            tiles = [va for x in side for va in range(x.va, x.end, PAGE)]
            assert len(tiles) == len(set(tiles)) == r.ptes and set(tiles) == pages
            assert [x.va for x in side] == sorted(x.va for x in side)
        seen_a, seen_b = seen_a + len(r.a), seen_b + len(r.b)
    assert covered == differing
    assert (seen_a, seen_b) == (d.n_rows_a, d.n_rows_b)
    assert d.ptes == d.ptes_a == d.ptes_b == len(differing)
    assert (d.n_ranges > 0) == differ


def test_lookup_by_address_agrees_with_the_full_merge_and_handles_repeats():
    # The fast path needs one row per address; rows that repeat an address take the merge of
    # every key, matched as multisets.  Both must agree with a brute-force count.
    rng = np.random.default_rng(7)
    for trial in range(200):
        n_a, n_b = rng.integers(0, 30, size=2)
        unique = trial % 2 == 0

        def keys(n, unique=unique):
            if unique:
                va = rng.choice(np.arange(40, dtype=np.uint64), size=n, replace=False)
            else:
                va = rng.integers(0, 12, size=n).astype(np.uint64)
            return [va * np.uint64(PAGE), rng.integers(1, 3, size=n).astype(np.uint64)]

        ka, kb = keys(n_a), keys(n_b)
        want_a, want_b = [], []
        pool_b = [tuple(int(c[j]) for c in kb) for j in range(n_b)]
        used = [False] * n_b
        for i in range(n_a):
            t = tuple(int(c[i]) for c in ka)
            j = next((j for j in range(n_b) if not used[j] and pool_b[j] == t), None)
            if j is None:
                want_a.append(i)
            else:
                used[j] = True
        want_b = [j for j in range(n_b) if not used[j]]
        for fn in (D._unmatched, D._unmatched_sorted):
            idx, side = fn(ka, kb)
            # duplicates may pair differently, but what is left over is the same multiset
            left_a = sorted(tuple(int(c[i]) for c in ka) for i in idx[side == 0])
            left_b = sorted(tuple(int(c[j]) for c in kb) for j in idx[side == 1])
            assert left_a == sorted(tuple(int(c[i]) for c in ka) for i in want_a), fn.__name__
            assert left_b == sorted(pool_b[j] for j in want_b), fn.__name__
            # by address, as the ranges are built
            got = [int(ka[0][i]) if s_ == 0 else int(kb[0][i]) for i, s_ in zip(idx.tolist(), side)]
            assert got == sorted(got) and len(got) == len(want_a) + len(want_b)


def test_ranges_by_index_and_limit():
    space = pb.generate(3000, seed=1, moved=0.2)
    d = diff(space, {"caller": "mprotect", "kernel": "6.14"}, {"kernel": "6.17"})
    assert len(d) > 3
    first = list(d.iter_ranges(3))
    assert len(first) == 3 and first[0] == d[0] and first[2] == d[2] and d[-1] == d[len(d) - 1]
    with pytest.raises(IndexError):
        d[len(d)]
    assert len(d.to_dict(max_ranges=2)["range_list"]) == 2


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b,exc,needle",
    [
        ({"kernel": "6.15"}, {"bogus": 1}, ValueError, "b: unknown key 'bogus'"),
        ({"kernel": "6.15"}, {"caller": "lazyfree"}, ValueError, "both sides must be one walk"),
        ({"caller": "lazyfree"}, {"clamp": "folio"}, ValueError, "b.clamp:"),
        ({"caller": "lazyfree"}, {"move_by": 4096}, ValueError, "b.move_by:"),
        ({"kernel": "5.1"}, {}, ValueError, "a.kernel:"),
        ({"kernel": "6.15"}, {"oob": "far"}, ValueError, "b.oob:"),
        ({"caller": "nope"}, {}, ValueError, "a.caller: unknown caller"),
        ("kernel=6.15", {}, TypeError, "a: expected a dict"),
    ],
)
def test_bad_settings_name_the_side_and_key(a, b, exc, needle):
    with pytest.raises(exc, match=None) as info:
        diff(pb.thread_layout(), a, b)
    assert needle in str(info.value)


def test_bad_compare():
    with pytest.raises(ValueError, match="compare:"):
        diff(pb.thread_layout(), {}, {}, compare="pte")


def test_parse_setting():
    assert parse_setting("caller=mremap, kernel=6.17,move_by=0x1ff000") == {
        "caller": "mremap",
        "kernel": "6.17",
        "move_by": 0x1FF000,
    }
    assert parse_setting("flags=FPB_IGNORE_DIRTY|FPB_IGNORE_SOFT_DIRTY")["flags"] == (
        "FPB_IGNORE_DIRTY|FPB_IGNORE_SOFT_DIRTY"
    )
    for text, needle in [
        ("kernel", "is not key=value"),
        ("colour=red", "unknown key 'colour'"),
        ("move_by=x", "a.move_by:"),
        ("kernel=6.15,kernel=6.16", "a.kernel: given twice"),
    ]:
        with pytest.raises(ValueError, match=None) as info:
            parse_setting(text, "a")
        assert needle in str(info.value)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--kernels", "6.15"], "kernels: expected two releases"),
        (["--caller", "lazyfree", "--a", "kernel=6.15"], "b: nothing differs from a"),
        (["--kernels", "6.15,6.16", "--a", "kernel=6.14"], "a.kernel: given by --kernels"),
        (["--caller", "lazyfree", "--kernels", "6.15,6.16", "--b", "clamp=folio"], "b.clamp:"),
        (["--a", "kernel=6.15", "--b", "caller=lazyfree"], "both sides must be one walk"),
        (["--kernels", "6.15,6.16", "--b", "colour=red"], "b: unknown key 'colour'"),
        (["--kernels", "6.15,9.x"], "b.kernel:"),
        (["--kernels", "6.15,6.16", "--ranges", "-1"], "ranges:"),
        (["--kernels", "6.15,6.16", "-o", "rows.txt"], "output: must end in .csv"),
        (["--kernels", "6.15,6.16", "--compare", "pte"], "invalid choice"),
    ],
)
def test_cli_bad_input_prints_one_line_and_exits_2(capsys, thread_file, argv, needle):
    code, out, err = run(capsys, "diff", thread_file, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptebatch: error:") and needle in lines[0], err


def test_cli_missing_file_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "diff", tmp_path / "none.npz", "--kernels", "6.15,6.16")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_library_does_not_import_the_cli():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(D))
    names = [
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert not any("cli" in n.split(".") for n in names), names
    assert Walk.SCAN == "scan"  # the walk names the result reports
