"""The command line: round trips against the Python API, and one-line errors."""

import json
import subprocess
import sys

import pytest

import ptebatch as pb
from ptebatch.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "space.npz"
    assert (
        main(["generate", "--folios", "2000", "--seed", "4", "--moved", "0.3", "-o", str(path)])
        == 0
    )
    return path


def test_generate_writes_what_generate_returns(snapshot):
    assert pb.load(snapshot) == pb.generate(2000, seed=4, moved=0.3)


@pytest.mark.parametrize("kernel", ["6.15", "6.16", "6.18"])
@pytest.mark.parametrize(
    "extra,kw",
    [([], {}), (["--clamp", "folio", "--oob", "adjacent"], {"clamp": "folio", "oob": "adjacent"})],
)
def test_scan_json_matches_the_api(capsys, snapshot, kernel, extra, kw):
    code, out, _ = run(capsys, "scan", str(snapshot), "--kernel", kernel, "--json", *extra)
    assert code == 0
    got = json.loads(out)
    got.pop("seconds")
    assert got.pop("compile_seconds") >= 0  # compile or cache load, timed apart from the walk
    assert got == pb.scan(pb.load(snapshot), kernel=kernel, **kw).summary()


@pytest.mark.parametrize("impl", ["serial", "naive"])
def test_scan_impls_agree(capsys, snapshot, impl):
    _, out_jit, _ = run(capsys, "scan", str(snapshot), "--json")
    _, out_other, _ = run(capsys, "scan", str(snapshot), "--json", "--impl", impl)
    a, b = json.loads(out_jit), json.loads(out_other)
    for r in (a, b):
        r.pop("seconds"), r.pop("compile_seconds", None)
    assert a == b


def test_unmap_json_matches_the_api(capsys, snapshot):
    code, out, _ = run(capsys, "unmap", str(snapshot), "--kernel", "6.15", "--json")
    got = json.loads(out)
    got.pop("seconds")
    assert got.pop("compile_seconds") >= 0
    assert code == 0 and got == pb.unmap(pb.load(snapshot), kernel="6.15").summary()


def test_info(capsys, snapshot):
    # metadata only by default; --present also counts the present PTEs
    code, out, _ = run(capsys, "info", str(snapshot), "--json")
    assert code == 0 and json.loads(out) == pb.load(snapshot).info(present=False)
    code, out, _ = run(capsys, "info", str(snapshot), "--json", "--present")
    assert code == 0 and json.loads(out) == pb.load(snapshot).info()


def test_human_output(capsys, snapshot):
    code, out, _ = run(capsys, "scan", str(snapshot))
    assert code == 0 and "batches" in out and "stop_reasons" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["scan", "missing.npz"], "missing.npz"),
        (["scan", "SNAP", "--kernel", "5.4"], "kernel: '5.4' predates"),
        (["scan", "SNAP", "--kernel", "6.18", "--flags", "FPB_IGNORE_DIRTY"], "flags:"),
        (["scan", "SNAP", "--clamp", "never"], "invalid choice"),
        (["unmap", "BAD"], "truncated or corrupt snapshot"),
        (["generate", "--folios", "0", "-o", "x.npz"], "n_folios: must be a positive integer"),
        (
            ["generate", "--folios", "10", "--moved", "1.5", "-o", "x.npz"],
            "moved: must be a fraction",
        ),
        (["bogus"], "invalid choice"),
        # issue 12, findings 4 and 5: each used to end in a traceback or an unclear message
        (
            ["generate", "--folios", "10", "--vma-tables", "4611686018427387904", "-o", "x.npz"],
            "vma_tables: must be an integer from 1 to 66,584,576",
        ),
        (
            ["generate", "--folios", "10", "--vma-tables", "0", "-o", "x.npz"],
            "vma_tables: must be an integer from 1 to",
        ),
        (["generate", "--folios", "1e3", "-o", "x.npz"], "n_folios: '1e3' is not an integer"),
        (
            ["capture", "--pid", "1", "--max-gib", "1e300", "-o", "x.npz"],
            "max_gib: must be a number of GiB",
        ),
        (["capture", "--pid", "1", "--max-gib", "nan", "-o", "x.npz"], "got 'nan'"),
        (["capture", "--pid", "1", "--max-gib", "-1", "-o", "x.npz"], "got '-1'"),
        (["capture", "--pid", "0", "-o", "x.npz"], "pid: must be a positive integer"),
        (["reproduce", "--size", "1e400K"], "size: '1e400K' is not a byte count"),
        (["reproduce", "--below", "infK"], "below: 'infK' is not a byte count"),
        (["bench", "--gate", "NOFLOORS"], 'NOFLOORS needs a "floors" object'),
        (["bench", "--gate", "NANFLOOR"], "the floor of 'scan jit-serial / naive' must be a"),
        (["scan", "SNAP", "--kernel", "v6.16"], "kernel: 'v6.16' is not a release version"),
        (["scan", "SNAP", "--kernel", "7.1"], "'gen2:7.1'"),
        (["scan", "SNAP", "--flags", "|"], "flags: '|' has an empty flag name"),
        (["scan", "SNAP", "--min-nr", "0", "--rows", "x.csv"], "rows.min_nr: must be at least 1"),
        (
            ["scan", "SNAP", "--caller", "mremap", "--kernel", "6.18", "--move-by", "-0x1"],
            "move_by: must be a multiple of 4096",
        ),
        (["plot", "ROWS", "-o", "x.png"], "row 0: batch_size_hist: sizes must be integers"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(capsys, tmp_path, snapshot, argv, needle):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "NOFLOORS").write_text('{"ratios": []}')
    (tmp_path / "NANFLOOR").write_text('{"floors": {"scan jit-serial / naive": NaN}}')
    (tmp_path / "rows.json").write_text(
        json.dumps([{"walk": "scan", "batches": 1, "batch_size_hist": {"99999999999": 1}}])
    )
    subst = {"SNAP": str(snapshot), "BAD": str(bad), "ROWS": str(tmp_path / "rows.json")}
    subst.update({n: str(tmp_path / n) for n in ("x.npz", "x.png", "x.csv")})
    subst.update({n: str(tmp_path / n) for n in ("NOFLOORS", "NANFLOOR")})
    try:
        code = main([subst.get(a, a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptebatch: error:") and needle in lines[0], err
    assert not any((tmp_path / n).exists() for n in ("x.npz", "x.png", "x.csv"))


@pytest.mark.parametrize(
    "argv",
    [["--move-by", "-0x1ff000"], ["--move-by=-0x1ff000"], ["--move-by", "-2093056"]],
    ids=["separate", "equals", "decimal"],
)
def test_a_negative_move_by_is_a_value_not_an_option(capsys, snapshot, argv):
    # argparse took "-0x1ff000" for an option ("expected one argument"); the README allows it
    code, out, err = run(
        capsys, "scan", str(snapshot), "--caller", "mremap", "--kernel", "6.18", "--json", *argv
    )
    assert code == 0, err
    api = pb.scan(pb.load(snapshot), caller="mremap", kernel="6.18", move_by=-0x1FF000)
    assert json.loads(out)["batches"] == api.batches


def test_only_the_signed_options_are_joined():
    from ptebatch.cli._registry import join_signed_values

    assert join_signed_values(["run", "--move-by", "-0x3000", "--seeds", "1"]) == [
        "run",
        "--move-by=-0x3000",
        "--seeds",
        "1",
    ]
    # not a number, another option, or after "--": left to argparse
    assert join_signed_values(["--move-by", "-x"]) == ["--move-by", "-x"]
    assert join_signed_values(["--min-nr", "-3"]) == ["--min-nr", "-3"]
    assert join_signed_values(["--", "--move-by", "-4096"]) == ["--", "--move-by", "-4096"]


def test_module_entry_point_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("nope")
    p = subprocess.run(
        [sys.executable, "-m", "ptebatch", "scan", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_demo_runs_small(capsys):
    code, out, _ = run(capsys, "demo", "--folios", "3000", "--json")
    report = json.loads(out)
    assert code == 0
    rows = {(r["space"], r["walk"], r["kernel"], r["oob"]): r for r in report["rows"]}
    assert rows[("thread", "unmap", "6.15", "none")]["table_overruns"] == 1
    assert rows[("thread", "unmap", "6.16", "none")]["table_overruns"] == 0
    assert report["thread"]["unmap_6_16_batches"] == [1, 15]
    assert report["timing"]["identical"] is True
