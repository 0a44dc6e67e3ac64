"""Experiment runs, ``ptebatch generate|run|plot`` round trips, committed data, errors."""

import csv
import io
import json
import os
import sys
import time

import pytest

import ptebatch as pb
from ptebatch.cli import main
from ptebatch.workloads.experiment import (
    FINDING_COLUMNS,
    STOP_COLUMNS,
    experiment,
    read_rows,
    write_rows,
)

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
    assert (
        main(
            [
                "generate",
                "--folios",
                "3000",
                "--seed",
                "2",
                "--sizes",
                "mthp64",
                "--moved",
                "0.2",
                "--partial",
                "0.1",
                "--holes",
                "0.01",
                "--vma-split",
                "0.1",
                "--lazyfree",
                "0.5",
                "--quiet",
                "-o",
                str(path),
            ]
        )
        == 0
    )
    return path


def test_generate_cli_knobs_match_the_api(snapshot):
    assert pb.load(snapshot) == pb.generate(
        3000,
        seed=2,
        sizes="mthp64",
        moved=0.2,
        partial=0.1,
        holes=0.01,
        vma_split=0.1,
        lazyfree=0.5,
    )


@pytest.mark.parametrize("kernel", ["6.15", "6.16"])
def test_generate_then_scan_json_matches_the_api(capsys, snapshot, kernel):
    t = time.perf_counter()
    code, out, _ = run(capsys, "scan", snapshot, "--kernel", kernel, "--clamp", "folio", "--json")
    wall = time.perf_counter() - t
    got = json.loads(out)
    # both are measured inside the command, one after the other: each took some time (more
    # than the 1 us they are rounded to) and together no more than the whole command
    walk, compile_s = got.pop("seconds"), got.pop("compile_seconds")
    assert walk > 0 and compile_s > 0 and walk + compile_s <= wall
    assert code == 0 and got == pb.scan(pb.load(snapshot), kernel=kernel, clamp="folio").summary()


def test_experiment_rows_shape_and_sums(snapshot):
    t = time.perf_counter()
    rows = experiment(
        [snapshot], kernels=["6.15", "6.16"], clamps=["pmd", "folio"], walks=["scan", "unmap"]
    )
    wall = time.perf_counter() - t
    assert [(r["walk"], r["kernel"], r["clamp"]) for r in rows] == [
        ("scan", "6.15", "pmd"),
        ("scan", "6.15", "folio"),
        ("scan", "6.16", "pmd"),
        ("scan", "6.16", "folio"),
        ("unmap", "6.15", "-"),
        ("unmap", "6.16", "-"),
    ]
    space = pb.load(snapshot)
    for r in rows:
        assert r["space"] == "space.npz"
        # without callers: each walk as its default caller, in a column next to the walk
        assert r["caller"] == {"scan": "zap", "unmap": "lazyfree"}[r["walk"]]
        keys = list(r)
        assert keys[keys.index("walk") + 1] == "caller"
        api = (
            pb.scan(space, kernel=r["kernel"], clamp=r["clamp"])
            if r["walk"] == "scan"
            else pb.unmap(space, kernel=r["kernel"])
        ).summary()
        for k in ("batches", "ptes_batched", "table_overruns", "vma_overruns", "batch_size_hist"):
            assert r[k] == api[k], k
        assert {c[5:]: r[c] for c in FINDING_COLUMNS} == api["findings"]
        assert (r["find_table_overrun"], r["find_vma_overrun"]) == (
            r["table_overruns"],
            r["vma_overruns"],
        )
        assert sum(r[c] for c in STOP_COLUMNS) == r["batches"]
        assert sum(r["batch_size_hist"].values()) == r["batches"]
        assert r["mean_batch"] == pytest.approx(r["ptes_batched"] / r["batches"])
        multi = {int(k): v for k, v in r["batch_size_hist"].items() if int(k) > 1}
        assert r["multi_batches"] == sum(multi.values())
        assert r["seconds"] > 0  # a walk of 3,000 folios takes more than the 1 us it is rounded to
    # each row times its own walk, inside the one call
    assert sum(r["seconds"] for r in rows) <= wall
    # 6.15's unmap reads past a table for moved lazyfree folios; 6.16's does not
    assert rows[4]["table_overruns"] > 0 and rows[5]["table_overruns"] == 0
    json.dumps(rows)  # JSON-ready


def test_experiment_sweeps_knobs_and_sums_seeds():
    kw = dict(
        kernels="6.16", walks="unmap", folios=800, sizes="mthp16", moved=[0.0, 0.5], lazyfree=1.0
    )
    rows = experiment(seeds=[1, 2], **kw)
    assert [(r["moved"], r["seeds"]) for r in rows] == [(0.0, "1,2"), (0.5, "1,2")]
    per_seed = experiment(seeds=[1, 2], by_seed=True, **kw)
    assert [(r["moved"], r["seeds"]) for r in per_seed] == [
        (0.0, "1"),
        (0.0, "2"),
        (0.5, "1"),
        (0.5, "2"),
    ]
    for r in rows:
        parts = [p for p in per_seed if p["moved"] == r["moved"]]
        for col in (
            ("batches", "ptes_batched", "multi_batches", "table_overruns")
            + STOP_COLUMNS
            + FINDING_COLUMNS
        ):
            assert r[col] == sum(p[col] for p in parts)
    one = pb.unmap(pb.generate(800, seed=2, sizes="mthp16", moved=0.5, lazyfree=1.0), kernel="6.16")
    assert per_seed[3]["batches"] == one.batches


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"walks": "fork"}, "walks: must be scan or unmap"),
        ({"clamps": "none"}, "clamps: must be pmd or folio"),
        ({"oob": "wrap"}, "oob: must be none or adjacent"),
        ({"kernels": "5.4"}, "kernel"),
        ({"bogus": 1}, "bogus: not a generator knob"),
        ({"moved": [0.1, 2.0]}, "moved: must be a fraction"),
        ({"callers": ["zap", "fork"]}, "callers: unknown caller 'fork'"),
        ({"callers": []}, "callers: give at least one value"),
        (
            {"callers": "lazyfree", "walks": "scan"},
            "walks: with callers, every caller's walk must be in walks",
        ),
        ({"callers": ["zap", "mremap"], "walks": ["unmap"]}, "'zap' runs under scan"),
        ({"arch": "sparc"}, "arch: unknown architecture 'sparc'"),
        ({"contpte": 0.5}, "contpte"),  # x86-64 has no contiguous bit
        ({"arch": "arm64", "soft_dirty": 0.1}, "soft_dirty"),  # arm64 has no soft-dirty bit
    ],
)
def test_experiment_bad_arguments(kw, needle):
    with pytest.raises(ValueError, match=needle):
        experiment(folios=100, **kw)


def test_experiment_callers_one_row_per_caller_kernel_and_clamp(snapshot):
    rows = experiment(
        [snapshot],
        callers=["lazyfree", "Zap", "mremap"],
        kernels=["6.16", "7.0"],
        clamps=["pmd", "folio"],
        parallel=False,
    )
    assert [(r["caller"], r["walk"], r["kernel"], r["clamp"]) for r in rows] == [
        ("lazyfree", "unmap", "6.16", "-"),
        ("lazyfree", "unmap", "7.0", "-"),
        ("zap", "scan", "6.16", "pmd"),
        ("zap", "scan", "6.16", "folio"),
        ("zap", "scan", "7.0", "pmd"),
        ("zap", "scan", "7.0", "folio"),
        ("mremap", "scan", "6.16", "pmd"),
        ("mremap", "scan", "6.16", "folio"),
        ("mremap", "scan", "7.0", "pmd"),
        ("mremap", "scan", "7.0", "folio"),
    ]
    space = pb.load(snapshot)
    for r in rows:
        res = (
            pb.scan(space, caller=r["caller"], kernel=r["kernel"], clamp=r["clamp"])
            if r["walk"] == "scan"
            else pb.unmap(space, caller=r["caller"], kernel=r["kernel"])
        )
        api = res.summary()
        assert api["caller"] == r["caller"]
        for k in ("batches", "ptes_batched", "batch_size_hist"):
            assert r[k] == api[k], (r["caller"], k)
        assert {c[5:]: r[c] for c in STOP_COLUMNS if c[5:] in api["stop_reasons"]} == api[
            "stop_reasons"
        ]
        assert {c[5:]: r[c] for c in FINDING_COLUMNS} == res.finding_counts
    # mremap batches only where pte_batch_hint > 1, never on x86-64: every large-folio PTE alone
    assert all(
        r["multi_batches"] == 0 and r["stop_single"] > 0 for r in rows if r["caller"] == "mremap"
    )
    # walks may restrict callers to their own walk; duplicates run once
    scan_only = experiment(
        [snapshot], callers=["zap", "zap", "mremap"], walks="scan", kernels="6.16"
    )
    assert [(r["caller"], r["walk"]) for r in scan_only] == [("zap", "scan"), ("mremap", "scan")]


def test_experiment_finding_columns_show_the_lazyfree_restore_bug():
    kw = dict(mixed_write=0.5, lazyfree=0.8)
    rows = experiment(callers=["lazyfree"], kernels=["6.16", "7.0"], folios=3000, **kw)
    assert [(r["caller"], r["kernel"]) for r in rows] == [("lazyfree", "6.16"), ("lazyfree", "7.0")]
    # 6.16's restore path stamps the first PTE's write bit over a mixed-write folio; 7.0 respects it
    assert rows[0]["find_spread"] > 0 and rows[1]["find_spread"] == 0
    space = pb.generate(3000, seed=0, **kw)
    for r in rows:
        counts = pb.unmap(space, caller="lazyfree", kernel=r["kernel"]).finding_counts
        assert {c[5:]: r[c] for c in FINDING_COLUMNS} == counts
    assert all(r["stop_dst_pmd_end"] == 0 for r in rows)


def test_experiment_arm64_knobs():
    rows = experiment(
        callers=["zap", "mremap"],
        kernels="6.18",
        folios=400,
        sizes="mthp64",
        arch="arm64",
        contpte=[0.0, 1.0],
    )
    assert [(r["arch"], r["contpte"], r["caller"]) for r in rows] == [
        ("arm64", 0.0, "zap"),
        ("arm64", 0.0, "mremap"),
        ("arm64", 1.0, "zap"),
        ("arm64", 1.0, "mremap"),
    ]
    for r in rows:
        space = pb.generate(400, sizes="mthp64", arch="arm64", contpte=r["contpte"])
        assert space.arch == "arm64"
        api = pb.scan(space, caller=r["caller"], kernel="6.18").summary()
        assert (
            r["batch_size_hist"] == api["batch_size_hist"]
            and r["stop_single"] == api["stop_reasons"]["single"]
        )
    # mremap batches only where pte_batch_hint > 1: in contpte blocks
    mremap = {r["contpte"]: r for r in rows if r["caller"] == "mremap"}
    assert mremap[0.0]["multi_batches"] == 0 and mremap[1.0]["multi_batches"] > 0
    # soft_dirty left at None: 0 on arm64, 0.2 on x86-64, so both arches sweep together
    both = experiment(
        walks="scan", kernels="6.16", folios=300, arch=["x86_64", "arm64"], soft_dirty=None
    )
    assert [r["arch"] for r in both] == ["x86_64", "arm64"]


def test_run_callers_and_arch_from_the_command_line(capsys, tmp_path):
    argv = [
        "run",
        "--folios",
        "3000",
        "--callers",
        "lazyfree,zap",
        "--kernels",
        "6.16,7.0",
        "--mixed-write",
        "0.5",
        "--lazyfree",
        "0.8",
    ]
    code, out, _ = run(capsys, *argv, "--json")
    rows = json.loads(out)
    api = experiment(
        callers=["lazyfree", "zap"],
        kernels=["6.16", "7.0"],
        folios=[3000],
        mixed_write=[0.5],
        lazyfree=[0.8],
    )
    assert code == 0 and rows == [{**r, "seconds": rows[i]["seconds"]} for i, r in enumerate(api)]
    code, out, _ = run(capsys, *argv)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:9] == [
        "space",
        "seeds",
        "folios",
        "lazyfree",
        "mixed_write",
        "walk",
        "caller",
        "kernel",
        "clamp",
    ]
    assert (
        "stop reasons (batches):" in lines
        and "findings (batches that tripped a detector):" in lines
    )
    findings = lines[lines.index("findings (batches that tripped a detector):") + 1 :]
    assert findings[0].split() == ["#", "walk", "caller", "kernel", "clamp", "oob", "find_spread"]
    assert "find_uffd_wp" not in out  # columns that are all zero stay out of the table
    code, out, _ = run(capsys, *argv, "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [t["caller"] for t in table] == ["lazyfree", "lazyfree", "zap", "zap"]
    for col in FINDING_COLUMNS + ("stop_dst_pmd_end", "table_overruns", "vma_overruns"):
        assert [int(t[col]) for t in table] == [r[col] for r in rows], col
    code, out, _ = run(
        capsys,
        "run",
        "--folios",
        "300",
        "--sizes",
        "mthp64",
        "--walks",
        "scan",
        "--kernels",
        "6.16",
        "--arch",
        "arm64",
        "--contpte",
        "0.5",
        "--json",
    )
    rows = json.loads(out)
    assert code == 0 and [(r["arch"], r["contpte"], r["caller"]) for r in rows] == [
        ("arm64", 0.5, "zap")
    ]
    assert (
        rows[0]["batches"]
        == pb.scan(
            pb.generate(300, sizes="mthp64", arch="arm64", contpte=0.5), kernel="6.16"
        ).batches
    )
    target = tmp_path / "arm.npz"
    code, out, _ = run(
        capsys,
        "generate",
        "--folios",
        "200",
        "--arch",
        "arm64",
        "--contpte",
        "0.5",
        "--quiet",
        "-o",
        target,
    )
    assert code == 0 and pb.load(target) == pb.generate(200, arch="arm64", contpte=0.5)


def test_run_json_csv_and_table(capsys, snapshot, tmp_path):
    code, out, _ = run(capsys, "run", snapshot, "--kernels", "6.15,6.16", "--json", "--quiet")
    rows = json.loads(out)
    assert code == 0 and rows == [
        {**r, "seconds": rows[i]["seconds"]}
        for i, r in enumerate(experiment([snapshot], kernels=["6.15", "6.16"]))
    ]
    code, out, _ = run(capsys, "run", snapshot, "--kernels", "6.16", "--walks", "scan", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 1 and int(table[0]["batches"]) == rows[1]["batches"]
    assert "batch_size_hist" not in table[0]
    target = tmp_path / "results.json"
    code, out, err = run(
        capsys,
        "run",
        "--folios",
        "500",
        "--seeds",
        "0,1",
        "--moved",
        "0,0.2",
        "--sizes",
        "4k/mthp64",
        "--walks",
        "unmap",
        "--kernels",
        "6.15",
        "-o",
        target,
    )
    assert (
        code == 0 and "moved" in out and "stop reasons" in out and err == ""
    )  # no progress: not a tty
    saved = read_rows(target)
    assert [(r["sizes"], r["moved"]) for r in saved] == [
        ("4k", 0.0),
        ("4k", 0.2),
        ("mthp64", 0.0),
        ("mthp64", 0.2),
    ]
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
    code, out, _ = run(
        capsys, "plot", snapshot, "--kernels", "6.16", "--walks", "unmap", "-o", img2
    )
    assert code == 0 and img2.read_bytes().startswith(magic) and "1 settings" in out


def _old_format(rows):
    """Rows as 'ptebatch run -o' wrote them before callers and detectors existed."""
    new = {"caller", "stop_dst_pmd_end", *FINDING_COLUMNS}
    return [{k: v for k, v in r.items() if k not in new} for r in rows]


def test_plot_labels_name_callers_and_old_rows_by_walk():
    from ptebatch.workloads.plot import _labels

    rows = experiment(callers=["zap", "mremap"], kernels="6.17", folios=200, walks="scan")
    assert _labels(rows) == ["zap 6.17", "mremap 6.17"]
    rows = experiment(kernels=["6.15", "6.16"], folios=200)
    assert _labels(rows) == [
        "zap 6.15 clamp=pmd",
        "zap 6.16 clamp=pmd",
        "lazyfree 6.15",
        "lazyfree 6.16",
    ]
    old = _old_format(rows)
    assert _labels(old) == [
        "scan 6.15 clamp=pmd",
        "scan 6.16 clamp=pmd",
        "unmap 6.15",
        "unmap 6.16",
    ]
    assert _labels(old[:2] + rows[2:]) == [
        "scan 6.15 clamp=pmd",
        "scan 6.16 clamp=pmd",
        "lazyfree 6.15",
        "lazyfree 6.16",
    ]


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (pip install 'ptebatch[plot]')")
def test_plot_reads_old_results_files_and_several_callers(capsys, snapshot, tmp_path):
    rows = experiment([snapshot], callers=["zap", "mremap", "lazyfree"], kernels=["6.15", "6.17"])
    old = tmp_path / "old.json"
    write_rows(_old_format(rows), old)
    assert read_rows(old) == _old_format(rows)
    for name, path in (("old", old), ("new", tmp_path / "new.json")):
        if name == "new":
            write_rows(rows, path)
        img = tmp_path / f"{name}.png"
        code, out, _ = run(capsys, "plot", path, "-o", img)
        assert code == 0 and img.read_bytes().startswith(b"\x89PNG") and "6 settings" in out
    img = tmp_path / "direct.svg"
    code, out, _ = run(
        capsys, "plot", snapshot, "--callers", "mremap,lazyfree", "--kernels", "6.17", "-o", img
    )
    assert code == 0 and "2 settings" in out


def test_plot_without_matplotlib_says_how_to_install(capsys, snapshot, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(capsys, "plot", snapshot, "-o", tmp_path / "x.png")
    assert code == 2 and err.count("\n") == 1 and "pip install 'ptebatch[plot]'" in err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["generate", "--folios", "10", "--moved", "-0.5", "-o", "x.npz"],
            "moved: must be a fraction from 0 to 1",
        ),
        (
            ["generate", "--folios", "10", "--straddle", "1.5", "-o", "x.npz"],
            "straddle: must be a fraction",
        ),
        (
            ["generate", "--folios", "10", "--sizes", "huge", "-o", "x.npz"],
            "sizes: unknown preset 'huge'",
        ),
        (
            ["generate", "--folios", "10", "--sizes", "12:1", "-o", "x.npz"],
            "sizes: orders must be integers 0 to 9",
        ),
        (
            ["generate", "--folios", "1000000000000", "--sizes", "thp", "-o", "x.npz"],
            "GiB available",
        ),
        (["generate", "--folios", "10", "--vma-tables", "0", "-o", "x.npz"], "vma_tables: must be"),
        (["run", "--folios", "100", "--walks", "fork"], "walks: must be scan or unmap"),
        (["run", "--folios", "100", "--holes", "0.1,x"], "holes: expected comma-separated numbers"),
        (["run", "--folios", "100", "--lazyfree", "0.5,1.2"], "lazyfree: must be a fraction"),
        (["run", "--folios", "100", "--kernels", "5.4"], "kernel"),
        (["run", "SNAP", "--moved", "0.1"], "moved: generator knobs apply only"),
        (["run", "--folios", "100", "--callers", "zap,fork"], "callers: unknown caller 'fork'"),
        (["run", "--folios", "100", "--callers", ","], "callers: give at least one"),
        (
            ["run", "--folios", "100", "--callers", "lazyfree", "--walks", "scan"],
            "walks: with callers",
        ),
        (["run", "--folios", "100", "--arch", "arm64,sparc"], "arch: unknown architecture 'sparc'"),
        (["run", "--folios", "100", "--contpte", "0.5"], "contpte"),
        (
            ["run", "--folios", "100", "--arch", "arm64", "--contpte", "x"],
            "contpte: expected comma-separated",
        ),
        (["run", "SNAP", "--arch", "arm64"], "arch: generator knobs apply only"),
        (["plot", "SNAP", "--callers", "bogus", "-o", "x.png"], "callers: unknown caller 'bogus'"),
        (["plot", "SNAP", "-o", "x.gif"], "output: must end in .png"),
        (["plot", "BAD.json", "-o", "x.png"], "not JSON written by 'ptebatch run'"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(capsys, tmp_path, snapshot, argv, needle):
    if "plot" in argv and not HAVE_MPL:
        pytest.skip("matplotlib not installed")
    bad = tmp_path / "BAD.json"
    bad.write_text("{not json")
    argv = [
        str(snapshot)
        if a == "SNAP"
        else str(bad)
        if a == "BAD.json"
        else str(tmp_path / a)
        if a.startswith("x.")
        else a
        for a in argv
    ]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("ptebatch: error: ") and needle in err, err


@pytest.mark.parametrize("cmd", ["generate", "run", "plot"])
def test_help_explains_every_knob_with_its_unit(capsys, cmd):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for knob in (
        "--moved",
        "--straddle",
        "--partial",
        "--holes",
        "--vma-split",
        "--lazyfree",
        "--write",
        "--young",
        "--dirty",
        "--soft-dirty",
        "--uffd-wp",
        "--mixed-write",
        "--vma-tables",
        "--pfn-order",
        "--sizes",
        "--arch",
        "--contpte",
        "--quiet",
    ):
        assert knob in text
    if cmd != "generate":
        assert "--callers" in text
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
        2000, seed=1, sizes="mthp-mixed", moved=0.1, partial=0.05, holes=0.01
    )
    readme = open(os.path.join(DATA, "README.md")).read()
    for name in (
        "thread.npz",
        "lazyfree_restore.npz",
        "folio_end.npz",
        "xen_pv.npz",
        "mixed_mthp.npz",
    ):
        assert f"`{name}`" in readme
    assert (
        "ptebatch generate --folios 2000 --seed 1 --sizes mthp-mixed --moved 0.1 --partial 0.05 "
        "--holes 0.01 -o data/mixed_mthp.npz"
    ) in readme


def test_experiment_move_by_reaches_mremap_rows_only():
    kw = dict(callers=["mremap", "zap"], kernels=["6.18"], folios=2000, arch="arm64", seeds=[3])
    aligned = {r["caller"]: r for r in pb.experiment(**kw)}
    moved = {r["caller"]: r for r in pb.experiment(move_by=0x1000, **kw)}
    space = pb.generate(2000, seed=3, arch="arm64")
    for rows, move_by in ((aligned, 0), (moved, 0x1000)):
        want = pb.scan(space, caller="mremap", kernel="6.18", move_by=move_by)
        assert rows["mremap"]["batches"] == want.batches
        assert rows["zap"]["batches"] == pb.scan(space, caller="zap", kernel="6.18").batches
    # an aligned move takes whole tables by their PMD: far fewer batches than a 4 KiB shift
    assert aligned["mremap"]["batches"] < moved["mremap"]["batches"]
