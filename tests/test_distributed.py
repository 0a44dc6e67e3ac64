"""Sharded runs on Dask: the executor on a 2-process LocalCluster (issue 13).

Dask is an optional extra: without ``distributed`` these tests skip with the reason, and the
CLI's ``--workers`` is a one-line error (tested here by hiding the module).
"""

import os
import sys

import pytest

from ptebatch.cli import main
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
        with cluster(scheduler="tcp://127.0.0.1:9"):
            pass


def test_without_dask_the_cli_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    rc = main(["scan", str(tmp_path), "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "ptebatch[dask]" in err
