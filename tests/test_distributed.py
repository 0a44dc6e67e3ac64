"""Sharded runs on Dask: the executor on a 2-process LocalCluster (issue 13).

Dask is an optional extra: without ``distributed`` these tests skip with the reason, and the
CLI's ``--workers`` is a one-line error (tested here by hiding the module).
"""

import json
import os
import sys

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import shards
from ptebatch.cli import main
from ptebatch.results import ScanResult
from ptebatch.space import SnapshotError

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'ptebatch[dask]')"
)
import cloudpickle  # noqa: E402  (a dependency of distributed)

from ptebatch.distributed import DaskExecutor, cluster, parse_memory_limit  # noqa: E402

# The tasks below are defined in this test module, which the workers cannot import by name:
# send them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    # The workers may cache what they compile (this process does not: tests/conftest.py), so
    # the CLI's clusters below load it; under NUMBA_BOUNDSCHECK=1 ptebatch caches nothing.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTEBATCH_NUMBA_CACHE", "1")
        with cluster(workers=2, memory_limit="1GiB") as c:
            yield c


def _square_plus(x, y):
    return x * x + y


def _fails_on(x, bad):
    if x == bad:
        raise SnapshotError(f"shard-{x:05d}.npz: checksum does not match the manifest")
    return x


def _dies_once(x, marker_dir):
    """Kill the worker process the first time shard ``x == 1`` runs; run normally after."""
    marker = os.path.join(marker_dir, f"died-{x}")
    if x == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies mid-task, as after an OOM kill
    return (x, os.getpid())


def test_results_come_back_in_shard_order_with_progress(client):
    seen = []
    ex = DaskExecutor(client)
    args = [(i, 3) for i in range(12)]
    out = ex(_square_plus, args, lambda task, done, total, note="": seen.append((done, total)))
    assert out == [i * i + 3 for i in range(12)]
    assert [d for d, _ in seen] == list(range(1, 13)) and {t for _, t in seen} == {12}


def test_both_workers_take_shards(client):
    assert len(client.scheduler_info()["workers"]) == 2


def test_a_task_error_is_raised_as_the_worker_raised_it(client):
    ex = DaskExecutor(client, retries=0)
    with pytest.raises(SnapshotError, match=r"shard-00003\.npz: checksum"):
        ex(_fails_on, [(i, 3) for i in range(6)])


def test_a_worker_that_dies_is_replaced_and_the_shard_rerun(client, tmp_path):
    ex = DaskExecutor(client)
    out = ex(_dies_once, [(i, str(tmp_path)) for i in range(4)])
    assert [x for x, _ in out] == [0, 1, 2, 3]
    assert (tmp_path / "died-1").exists()  # it did die once, and the run is still whole


@pytest.mark.parametrize(
    ("text", "want"),
    [("1GiB", 1 << 30), ("512MB", 512 * 10**6), ("auto", "auto"), (2_000_000_000, 2 * 10**9)],
)
def test_memory_limit_parses(text, want):
    assert parse_memory_limit(text) == want


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", 0, True])
def test_memory_limit_rejects(text):
    with pytest.raises(ValueError, match="memory_limit"):
        parse_memory_limit(text)


def test_cluster_needs_exactly_one_of_workers_and_scheduler():
    with pytest.raises(ValueError, match="workers/scheduler"), cluster():
        pass
    with pytest.raises(ValueError, match="workers: 0"), cluster(workers=0):
        pass


def test_unreachable_scheduler_is_one_line(capsys, tmp_path):
    # a port nothing listens on; the error names the scheduler
    with pytest.raises(ConnectionError, match="scheduler"):
        with cluster(scheduler="tcp://127.0.0.1:9", timeout="2s"):
            pass


# -- sharded walks on the cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """A small mixed space (moved and straddling folios, lazyfree, VMA splits), whole and cut
    into about a dozen shards: (whole AddressSpace, its .npz, the sharded directory)."""
    d = tmp_path_factory.mktemp("dask")
    whole = pb.generate(
        1500, seed=5, moved=0.2, straddle=0.2, lazyfree=0.5, vma_split=0.2, vma_tables=2
    )
    whole.save(d / "whole.npz")
    shards.shard(whole, d / "S", tables=2)
    assert len(pb.load(d / "S")) >= 6  # enough shards for both workers to take several
    return whole, d / "whole.npz", d / "S"


def _same(whole, part, rows=False):
    assert part.summary() == whole.summary()
    assert np.array_equal(part.length_hist, whole.length_hist)
    assert np.array_equal(part.found, whole.found)
    if rows:
        keys = ("va", "nr", "reason", "findings")
        keys += ("folio_pfn",) if isinstance(whole, pb.UnmapResult) else ()
        for k in keys:
            assert np.array_equal(getattr(part, k), getattr(whole, k)), k


SETTINGS = [
    ("scan", dict(caller="zap", kernel="6.15", clamp="folio", oob="adjacent")),
    ("scan", dict(caller="fork-private", kernel="6.16")),
    ("scan", dict(caller="mremap", kernel="6.18", move_by=0x1FF000)),
    ("scan", dict(caller="zap", kernel="6.18", batching=False)),
    ("unmap", dict(caller="lazyfree", kernel="6.15", oob="adjacent")),
    ("unmap", dict(caller="lazyfree", kernel="7.0")),
]


@pytest.mark.slow  # each worker process compiles every walk: 40 s (CI runs it)
@pytest.mark.parametrize(("walk", "kw"), SETTINGS)
def test_sharded_walk_on_workers_equals_the_whole_space(client, space, walk, kw):
    whole, _, d = space
    want = getattr(pb, walk)(whole, rows=False, **kw)
    got = getattr(pb, walk)(d, rows=False, executor=DaskExecutor(client), **kw)
    _same(want, got)
    _same(want, getattr(pb, walk)(d, rows=False, executor=client, **kw))  # a Client will do
    # and the in-process sharded run, for the same space
    _same(want, getattr(pb, walk)(d, rows=False, **kw))


@pytest.mark.parametrize("walk", ["scan", "unmap"])
def test_rows_come_back_merged_as_the_whole_walk_writes_them(client, space, walk):
    whole, _, d = space
    kw = dict(kernel="6.15", oob="adjacent")
    want = getattr(pb, walk)(whole, **kw)
    _same(want, getattr(pb, walk)(d, executor=DaskExecutor(client), **kw), rows=True)


def test_experiment_and_diff_on_workers(client, space):
    whole, path, d = space
    kw = dict(kernels=["6.15", "6.16"], walks=["scan", "unmap"], oob=["none", "adjacent"])
    on_workers = pb.experiment([str(d)], executor=DaskExecutor(client), **kw)
    in_process = pb.experiment([str(path)], **kw)
    strip = lambda rows: [
        {k: v for k, v in r.items() if k not in ("space", "seconds")} for r in rows
    ]
    assert strip(on_workers) == strip(in_process) and len(on_workers) == 8
    a, b = {"caller": "lazyfree", "kernel": "6.15"}, {"kernel": "6.16"}
    got = pb.diff(d, a, b, executor=DaskExecutor(client))
    want = pb.diff(whole, a, b)
    assert got.summary() == want.summary()
    assert [r.to_dict() for r in got] == [r.to_dict() for r in want]


def _walk_dies_once(file, record, walk, kwargs, marker_dir):
    """shards.walk_task, but the worker process dies the first time it takes shard 1."""
    marker = os.path.join(marker_dir, "died")
    if record["index"] == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return shards.walk_task(file, record, walk, kwargs)


def test_a_worker_dying_mid_walk_still_gives_the_exact_result(client, space, tmp_path):
    whole, _, d = space
    kw = dict(caller="zap", kernel="6.15", clamp="folio", rows=False)
    parts = shards.map_shards(
        d, _walk_dies_once, ("scan", kw, str(tmp_path)), executor=DaskExecutor(client)
    )
    assert (tmp_path / "died").exists()
    _same(pb.scan(whole, **kw), ScanResult.merge(parts))


def test_a_corrupt_shard_on_a_worker_names_the_shard(client, space, tmp_path):
    import shutil

    _, _, d = space
    bad = tmp_path / "S"
    shutil.copytree(d, bad)
    victim = sorted(bad.glob("shard-*.npz"))[2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match=victim.name):
        pb.scan(bad, rows=False, executor=DaskExecutor(client))


def _cli_json(capsys, *argv):
    rc = main([str(x) for x in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out), err


@pytest.mark.slow  # 35 s, mostly the workers' compiles (CI runs it)
def test_cli_run_with_workers_agrees_with_the_api(client, space, capsys, monkeypatch):
    _, _, d = space
    monkeypatch.setenv("PTEBATCH_NUMBA_CACHE", "1")  # load what the fixture's workers compiled
    rows, err = _cli_json(capsys, "run", d, "--workers", "2", "--memory-limit", "1GiB", "--json")
    assert "dask: 2 workers, dashboard http" in err
    api = pb.experiment([str(d)])
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(rows) == json.loads(json.dumps(strip(api))) and len(rows) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "{npz}", "--workers", "2"], "workers: the shards of a sharded space"),
        (["run", "--workers", "2", "--folios", "100"], "workers: only sharded spaces"),
        (["scan", "{dir}", "--memory-limit", "1GiB"], "--memory-limit: only with --workers"),
        (["scan", "{dir}", "--workers", "0"], "workers: must be at least 1"),
        (["scan", "{dir}", "--workers", "2", "--memory-limit", "lots"], "memory_limit"),
        (["scan", "{dir}", "--workers", "2", "--scheduler", "tcp://x:1"], "not allowed with"),
    ],
)
def test_cli_cluster_errors_are_one_line(space, capsys, argv, message):
    _, path, d = space
    try:
        rc = main([x.format(npz=path, dir=d) for x in argv])
    except SystemExit as exc:  # argparse's own errors exit from the parser
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err


def test_without_dask_the_cli_says_how_to_install(space, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    rc = main(["scan", str(space[2]), "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "ptebatch[dask]" in err


def test_an_executor_needs_a_sharded_space(client, space):
    whole, _, _ = space
    for walk in (pb.scan, pb.unmap):
        with pytest.raises(ValueError, match="executor: only the shards of a sharded space"):
            walk(whole, rows=False, executor=client)
