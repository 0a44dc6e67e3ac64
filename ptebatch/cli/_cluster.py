"""``--workers`` / ``--scheduler`` / ``--memory-limit``: where a sharded run's shards are walked."""

from __future__ import annotations

import argparse
import contextlib

from ._registry import int_arg


def add_cluster_args(p) -> None:
    """The Dask options of a command that walks a sharded directory."""
    g = p.add_argument_group(
        "sharded runs on Dask (a sharded directory only; needs pip install 'ptebatch[dask]')"
    )
    x = g.add_mutually_exclusive_group()
    x.add_argument(
        "--workers",
        type=_positive("workers"),
        metavar="N",
        help="walk the shards on a new local Dask cluster of N worker processes",
    )
    x.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="walk the shards on an existing Dask cluster (tcp://host:8786); its workers must "
        "see the shards at the same path",
    )
    g.add_argument(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        help="memory per local worker, e.g. 1GiB (default: the machine's memory over the "
        "workers); a worker above it is restarted by Dask and its shard retried",
    )


def _positive(field: str):
    parse_int = int_arg(field)

    def parse(text: str) -> int:
        n = parse_int(text)
        if n < 1:
            raise argparse.ArgumentTypeError(f"{field}: must be at least 1; got {text!r}")
        return n

    return parse


@contextlib.contextmanager
def executor_for(a):
    """``None`` (walk in this process) or a Dask executor for ``map_shards``, per the options."""
    workers = getattr(a, "workers", None)
    scheduler = getattr(a, "scheduler", None)
    memory_limit = getattr(a, "memory_limit", None)
    if workers is None and scheduler is None:
        if memory_limit is not None:
            raise ValueError("--memory-limit: only with --workers (a local cluster)")
        yield None
        return
    if scheduler is not None and memory_limit is not None:
        raise ValueError("--memory-limit: only with --workers; a scheduler's workers set their own")
    from ..distributed import DaskExecutor, cluster, require, stderr_line

    require()
    with cluster(workers, scheduler, memory_limit or "auto", say=stderr_line) as client:
        yield DaskExecutor(client)
