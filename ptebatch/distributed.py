"""Sharded runs on Dask (``dask.distributed``): an executor for :func:`ptebatch.shards.map_shards`.

A batch never crosses a page table, and a sharded space is cut where no VMA walk and no folio's
rmap walk crosses a cut, so each shard is walked on its own and the per-shard counts merge
exactly.  This module only moves that work to a Dask cluster: :class:`DaskExecutor` submits one
task per shard and gathers the results in shard order; :func:`cluster` starts a
``LocalCluster`` (or connects to a scheduler) for the CLI's ``--workers``/``--scheduler``.

Dask is an optional extra (``pip install 'ptebatch[dask]'``); nothing here imports it until a
function is called, and :func:`require` names the extra when it is missing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence

from .progress import as_hook

__all__ = ["DaskExecutor", "cluster", "parse_memory_limit", "require"]

# A task that raises is run again this many times; a worker that dies is a separate count,
# kept by the scheduler (distributed.scheduler.allowed-failures, default 3).
RETRIES = 2


def require():
    """The ``distributed`` module, or an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "dask: sharded runs on workers need dask.distributed: pip install 'ptebatch[dask]'"
        ) from exc
    return distributed


def parse_memory_limit(text) -> int | str:
    """``--memory-limit``: ``auto`` or a size such as ``1GiB``, ``512MB``, ``2e9`` (bytes)."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    if isinstance(text, str):
        from dask.utils import parse_bytes  # dask is there: require() came first

        try:
            n = parse_bytes(text)
        except (ValueError, TypeError):
            raise ValueError(
                f"memory_limit: {text!r} is not a size (use e.g. 1GiB, 512MB or auto)"
            ) from None
    else:
        n = text
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"memory_limit: {text!r} must be a positive number of bytes or auto")
    return n


class DaskExecutor:
    """Run one task per shard on a Dask client; results come back in shard order.

    Parameters
    ----------
    client : distributed.Client
        Any client: a ``LocalCluster``'s or one connected to a remote scheduler.
    retries : int
        Times a task that raised is run again.  A worker that dies mid-task is
        handled by the scheduler, which runs the task elsewhere.

    Notes
    -----
    The task and its arguments must pickle (top-level functions, paths, plain
    data).  Each worker compiles the walks once, from the Numba cache when it
    has one.  The first task error cancels the others and is raised as it was
    raised on the worker (a bad shard's ``SnapshotError`` names the shard).
    """

    def __init__(self, client, *, retries: int = RETRIES):
        require()
        self.client = client
        self.retries = retries

    def __call__(self, task: Callable, arg_tuples: Sequence[tuple], progress=None) -> list:
        distributed = require()
        hook = as_hook(progress)
        name = getattr(task, "__name__", "task").strip("_")
        run = uuid.uuid4().hex[:8]
        futures = [
            self.client.submit(
                task, *args, key=f"ptebatch-{name}-{run}-{i}", retries=self.retries, pure=False
            )
            for i, args in enumerate(arg_tuples)
        ]
        total = len(futures)
        try:
            for done, fut in enumerate(distributed.as_completed(futures), 1):
                if fut.status == "error":
                    fut.result()  # raises the worker's exception here
                hook("shards", done, total, f"{done}/{total} shards")
            return self.client.gather(futures)
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()


@contextlib.contextmanager
def cluster(
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit="auto",
    *,
    say: Callable[[str], None] | None = None,
    timeout: str = "20s",
) -> Iterator:
    """A Dask client: a new ``LocalCluster`` of ``workers`` processes, or ``scheduler``'s.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a local cluster, one thread each (each walk is
        serial there; the workers are the parallelism).
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``); its workers
        must reach the shards by the same path (shared storage).
    memory_limit : int or "auto"
        Bytes per local worker (``auto``: the machine's memory over the workers).
    say : callable, optional
        Gets one line: where the dashboard is.
    timeout : str
        How long to keep trying to reach ``scheduler``.

    Yields
    ------
    distributed.Client
    """
    distributed = require()
    if (workers is None) == (scheduler is None):
        raise ValueError("workers/scheduler: give exactly one of them")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: {workers!r} must be a positive integer")
        local = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=parse_memory_limit(memory_limit),
            dashboard_address=":0",  # any free port: 8787 may be taken
            silence_logs=logging.ERROR,
            # one Numba thread per worker: the workers are the parallelism
            env={"NUMBA_NUM_THREADS": "1"},
        )
        stack = contextlib.ExitStack()
        with stack:
            stack.enter_context(local)
            client = stack.enter_context(distributed.Client(local))
            _announce(client, say)
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"scheduler: cannot reach {scheduler!r}: {exc}") from None
    with client:
        _announce(client, say)
        yield client


def _announce(client, say) -> None:
    if say is None:
        return
    link = getattr(client, "dashboard_link", None)
    n = len(client.scheduler_info().get("workers", {}))
    say(f"dask: {n} workers, dashboard {link}" if link else f"dask: {n} workers")


def stderr_line(text: str) -> None:
    """The default ``say`` of the CLI: one line on stderr."""
    sys.stderr.write(text + "\n")
