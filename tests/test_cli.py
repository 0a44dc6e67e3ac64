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
    ],
)
def test_bad_input_prints_one_line_and_exits_2(capsys, tmp_path, snapshot, argv, needle):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    subst = {"SNAP": str(snapshot), "BAD": str(bad), "x.npz": str(tmp_path / "x.npz")}
    try:
        code = main([subst.get(a, a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptebatch: error:") and needle in lines[0], err
    assert not (tmp_path / "x.npz").exists()


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
