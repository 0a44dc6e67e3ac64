"""Commands on sharded spaces: shard and unshard (the walks take a directory as they take a
snapshot)."""

from __future__ import annotations

from .. import shards
from ._registry import command, int_arg, print_json


@command("shard", "cut a snapshot into a sharded space (a directory of snapshots and a manifest)")
def _shard_args(p):
    p.add_argument("file", help="snapshot (.npz) to cut; memory-mapped, one shard copied at a time")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="directory to write (atomically; an existing "
        "sharded space there is replaced, anything else is refused)",
    )
    p.add_argument(
        "--tables",
        type=int_arg("tables"),
        required=True,
        help="tables per shard: each cut goes at the first boundary at least this many tables "
        "past the previous one where no VMA and no listed folio spans it (else the shard grows)",
    )
    p.add_argument("--json", action="store_true", help="print the manifest's summary as JSON")


@_shard_args
def _shard(a) -> int:
    ss = shards.shard(a.file, a.output, tables=a.tables)
    _report(a, ss)
    return 0


def _report(a, ss) -> None:
    if getattr(a, "json", False):
        print_json(ss.info())
    else:
        print(f"wrote {ss.path}: {ss!r}")


@command("unshard", "write a sharded space as one snapshot (.npz)")
def _unshard_args(p):
    p.add_argument("dir", help="sharded space (a directory with manifest.json)")
    p.add_argument("-o", "--output", required=True, help="snapshot file to write, atomically")


@_unshard_args
def _unshard(a) -> int:
    ss = shards.ShardedSpace(a.dir)
    shards.unshard(ss, a.output)
    print(f"wrote {a.output}: {ss.n_tables} tables, {ss.n_vmas} VMAs, {ss.n_folios} folios")
    return 0
