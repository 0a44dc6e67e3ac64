"""Experiment runs, ``ptebatch generate|run|plot`` round trips, committed data, errors."""

import csv
import io
import json
import os
import sys

import pytest

import ptebatch as pb
from ptebatch.cli import main
from ptebatch.experiment import STOP_COLUMNS, Progress, experiment, read_rows

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "space.npz"
    assert main(["generate", "--folios", "3000", "--seed", "2", "--sizes", "mthp64", "--moved", "0.2",
                 "--partial", "0.1", "--holes", "0.01", "--vma-split", "0.1", "--lazyfree", "0.5",
                 "--quiet", "-o", str(path)]) == 0
    return path


def test_generate_cli_knobs_match_the_api(snapshot):
    assert pb.load(snapshot) == pb.generate(3000, seed=2, sizes="mthp64", moved=0.2, partial=0.1,
                                            holes=0.01, vma_split=0.1, lazyfree=0.5)


@pytest.mark.parametrize("kernel", ["6.15", "6.16"])
def test_generate_then_scan_json_matches_the_api(capsys, snapshot, kernel):
    code, out, _ = run(capsys, "scan", snapshot, "--kernel", kernel, "--clamp", "folio", "--json")
    got = json.loads(out)
    got.pop("seconds")
    assert code == 0 and got == pb.scan(pb.load(snapshot), kernel=kernel, clamp="folio").summary()


def test_experiment_rows_shape_and_sums(snapshot):
    rows = experiment([snapshot], kernels=["6.15", "6.16"], clamps=["pmd", "folio"], walks=["scan", "unmap"])
    assert [(r["walk"], r["kernel"], r["clamp"]) for r in rows] == [
        ("scan", "6.15", "pmd"), ("scan", "6.15", "folio"), ("scan", "6.16", "pmd"),
        ("scan", "6.16", "folio"), ("unmap", "6.15", "-"), ("unmap", "6.16", "-")]
    space = pb.load(snapshot)
    for r in rows:
        assert r["space"] == "space.npz"
        api = (pb.scan(space, kernel=r["kernel"], clamp=r["clamp"]) if r["walk"] == "scan"
               else pb.unmap(space, kernel=r["kernel"])).summary()
        for k in ("batches", "ptes_batched", "table_overruns", "vma_overruns", "batch_size_hist"):
            assert r[k] == api[k], k
        assert sum(r[c] for c in STOP_COLUMNS) == r["batches"]
        assert sum(r["batch_size_hist"].values()) == r["batches"]
        assert r["mean_batch"] == pytest.approx(r["ptes_batched"] / r["batches"])
        multi = {int(k): v for k, v in r["batch_size_hist"].items() if int(k) > 1}
        assert r["multi_batches"] == sum(multi.values())
        assert r["seconds"] >= 0
    # 6.15's unmap reads past a table for moved lazyfree folios; 6.16's does not
    assert rows[4]["table_overruns"] > 0 and rows[5]["table_overruns"] == 0
    json.dumps(rows)  # JSON-ready


def test_experiment_sweeps_knobs_and_sums_seeds():
    kw = dict(kernels="6.16", walks="unmap", folios=800, sizes="mthp16", moved=[0.0, 0.5], lazyfree=1.0)
    rows = experiment(seeds=[1, 2], **kw)
    assert [(r["moved"], r["seeds"]) for r in rows] == [(0.0, "1,2"), (0.5, "1,2")]
    per_seed = experiment(seeds=[1, 2], by_seed=True, **kw)
    assert [(r["moved"], r["seeds"]) for r in per_seed] == [(0.0, "1"), (0.0, "2"), (0.5, "1"), (0.5, "2")]
    for r in rows:
        parts = [p for p in per_seed if p["moved"] == r["moved"]]
        for col in ("batches", "ptes_batched", "multi_batches", "table_overruns") + STOP_COLUMNS:
            assert r[col] == sum(p[col] for p in parts)
    one = pb.unmap(pb.generate(800, seed=2, sizes="mthp16", moved=0.5, lazyfree=1.0), kernel="6.16")
    assert per_seed[3]["batches"] == one.batches


@pytest.mark.parametrize("kw,needle", [
    ({"walks": "fork"}, "walks: must be scan or unmap"),
    ({"clamps": "none"}, "clamps: must be pmd or folio"),
    ({"oob": "wrap"}, "oob: must be none or adjacent"),
    ({"kernels": "5.4"}, "kernel"),
    ({"bogus": 1}, "bogus: not a generator knob"),
    ({"moved": [0.1, 2.0]}, "moved: must be a fraction"),
])
def test_experiment_bad_arguments(kw, needle):
    with pytest.raises(ValueError, match=needle):
        experiment(folios=100, **kw)


def test_run_json_csv_and_table(capsys, snapshot, tmp_path):
    code, out, _ = run(capsys, "run", snapshot, "--kernels", "6.15,6.16", "--json", "--quiet")
    rows = json.loads(out)
    assert code == 0 and rows == [{**r, "seconds": rows[i]["seconds"]} for i, r in
                                  enumerate(experiment([snapshot], kernels=["6.15", "6.16"]))]
    code, out, _ = run(capsys, "run", snapshot, "--kernels", "6.16", "--walks", "scan", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 1 and int(table[0]["batches"]) == rows[1]["batches"]
    assert "batch_size_hist" not in table[0]
    target = tmp_path / "results.json"
    code, out, err = run(capsys, "run", "--folios", "500", "--seeds", "0,1", "--moved", "0,0.2",
                         "--sizes", "4k/mthp64", "--walks", "unmap", "--kernels", "6.15", "-o", target)
    assert code == 0 and "moved" in out and "stop reasons" in out and err == ""  # no progress: not a tty
    saved = read_rows(target)
    assert [(r["sizes"], r["moved"]) for r in saved] == [("4k", 0.0), ("4k", 0.2), ("mthp64", 0.0),
                                                         ("mthp64", 0.2)]
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o600)


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (pip install 'ptebatch[plot]')")
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_plot_from_results_and_from_snapshot(capsys, snapshot, tmp_path, suffix, magic):
    results = tmp_path / "r.json"
    assert run(capsys, "run", snapshot, "--kernels", "6.15,6.16", "-o", results)[0] == 0
    img = tmp_path / ("a" + suffix)
    code, out, _ = run(capsys, "plot", results, "-o", img, "--title", "t")
    assert code == 0 and img.read_bytes().startswith(magic) and "4 settings" in out
    img2 = tmp_path / ("b" + suffix)
    code, out, _ = run(capsys, "plot", snapshot, "--kernels", "6.16", "--walks", "unmap", "-o", img2)
    assert code == 0 and img2.read_bytes().startswith(magic) and "1 settings" in out


def test_plot_without_matplotlib_says_how_to_install(capsys, snapshot, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(capsys, "plot", snapshot, "-o", tmp_path / "x.png")
    assert code == 2 and err.count("\n") == 1 and "pip install 'ptebatch[plot]'" in err


def test_progress_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out, err = Tty(), Tty()
    monkeypatch.setattr(sys, "stdout", out)
    p = Progress("run", delay=0.0, stream=err)
    p("step 1")
    p.done()
    assert "ptebatch run: step 1" in err.getvalue()
    err2 = Tty()
    q = Progress("run", delay=0.0, stream=err2, quiet=True)
    q("step 1")
    assert err2.getvalue() == ""
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # stdout redirected: silent
    err3 = Tty()
    Progress("run", delay=0.0, stream=err3)("step 1")
    assert err3.getvalue() == ""


@pytest.mark.parametrize("argv,needle", [
    (["generate", "--folios", "10", "--moved", "-0.5", "-o", "x.npz"], "moved: must be a fraction from 0 to 1"),
    (["generate", "--folios", "10", "--straddle", "1.5", "-o", "x.npz"], "straddle: must be a fraction"),
    (["generate", "--folios", "10", "--sizes", "huge", "-o", "x.npz"], "sizes: unknown preset 'huge'"),
    (["generate", "--folios", "10", "--sizes", "12:1", "-o", "x.npz"], "sizes: orders must be integers 0 to 9"),
    (["generate", "--folios", "1000000000000", "--sizes", "thp", "-o", "x.npz"], "GiB available"),
    (["generate", "--folios", "10", "--vma-tables", "0", "-o", "x.npz"], "vma_tables: must be"),
    (["run", "--folios", "100", "--walks", "fork"], "walks: must be scan or unmap"),
    (["run", "--folios", "100", "--holes", "0.1,x"], "holes: expected comma-separated numbers"),
    (["run", "--folios", "100", "--lazyfree", "0.5,1.2"], "lazyfree: must be a fraction"),
    (["run", "--folios", "100", "--kernels", "5.4"], "kernel"),
    (["run", "SNAP", "--moved", "0.1"], "moved: generator knobs apply only"),
    (["plot", "SNAP", "-o", "x.gif"], "output: must end in .png"),
    (["plot", "BAD.json", "-o", "x.png"], "not JSON written by 'ptebatch run'"),
])
def test_bad_input_prints_one_line_and_exits_2(capsys, tmp_path, snapshot, argv, needle):
    if "plot" in argv and not HAVE_MPL:
        pytest.skip("matplotlib not installed")
    bad = tmp_path / "BAD.json"
    bad.write_text("{not json")
    argv = [str(snapshot) if a == "SNAP" else str(bad) if a == "BAD.json" else
            str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("ptebatch: error: ") and needle in err, err


@pytest.mark.parametrize("cmd", ["generate", "run", "plot"])
def test_help_explains_every_knob_with_its_unit(capsys, cmd):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for knob in ("--moved", "--straddle", "--partial", "--holes", "--vma-split", "--lazyfree", "--write",
                 "--young", "--dirty", "--soft-dirty", "--uffd-wp", "--mixed-write", "--vma-tables",
                 "--pfn-order", "--sizes", "--quiet"):
        assert knob in text
    assert "0-1" in text and "2 MiB" in text and "KiB" in text


# -- committed data -------------------------------------------------------------

def test_data_snapshots_load_and_show_their_bugs():
    thread = pb.load(os.path.join(DATA, "thread.npz"))
    assert thread == pb.thread_layout()
    assert pb.unmap(thread, kernel="6.15").table_overruns == 1
    assert pb.unmap(thread, kernel="6.16").nr.tolist() == [1, 15]
    restore = pb.load(os.path.join(DATA, "lazyfree_restore.npz"))
    assert pb.unmap(restore, kernel="6.16").nr.tolist() == [16]
    assert pb.unmap(restore, kernel="7.0").nr.tolist() == [8, 8]
    end = pb.load(os.path.join(DATA, "folio_end.npz"))
    r = pb.scan(end, kernel="6.14")
    assert r.nr.tolist() == [16, 1] and r.reason_names().tolist() == ["folio_end", "order0"]
    xen = pb.load(os.path.join(DATA, "xen_pv.npz"))
    assert (xen.ptes[0, 453:457] != 0).all() and xen.ptes[0, 457] == 0
    assert pb.scan(xen, kernel="6.14").nr.tolist() == [4]


def test_data_mixed_mthp_is_what_its_readme_command_makes():
    assert pb.load(os.path.join(DATA, "mixed_mthp.npz")) == pb.generate(
        2000, seed=1, sizes="mthp-mixed", moved=0.1, partial=0.05, holes=0.01)
    readme = open(os.path.join(DATA, "README.md")).read()
    for name in ("thread.npz", "lazyfree_restore.npz", "folio_end.npz", "xen_pv.npz", "mixed_mthp.npz"):
        assert f"`{name}`" in readme
    assert ("ptebatch generate --folios 2000 --seed 1 --sizes mthp-mixed --moved 0.1 --partial 0.05 "
            "--holes 0.01 -o data/mixed_mthp.npz") in readme
