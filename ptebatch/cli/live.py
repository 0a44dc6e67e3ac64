"""Commands on live processes: capture, reproduce."""

from __future__ import annotations

import json
import math
import sys
import time

from .. import shards
from ..live import capture as live_capture
from ..live.capture import DEFAULT_MAX_BYTES, PartialCaptureError
from ..live.reproduce import format_report, reproduce_thread
from ._registry import command, int_arg, make_progress, real_arg


@command("capture", "capture a live process's page tables from /proc into a snapshot")
def _capture_args(p):
    p.add_argument("--pid", type=int_arg("pid"), required=True, help="process to capture")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="snapshot file to write (.npz); with --shard-tables a directory",
    )
    p.add_argument(
        "--shard-tables",
        type=int_arg("shard_tables"),
        default=None,
        metavar="T",
        help="write a sharded space (directory -o) of shards of about T tables ('ptebatch shard')",
    )
    p.add_argument("--anon", action="store_true", help="only anonymous VMAs")
    p.add_argument(
        "--start",
        type=int_arg("start"),
        default=None,
        help="only addresses from here (0x... or decimal)",
    )
    p.add_argument("--end", type=int_arg("end"), default=None, help="only addresses below this")
    p.add_argument("--name", default=None, help="only VMAs whose path contains this text")
    p.add_argument(
        "--pmd",
        choices=("pte", "skip"),
        default="pte",
        help="PMD-mapped THPs as full PTE tables of one 512-page folio, or left out "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the snapshot even if something changed during the capture "
        "(then exit 3 and list the problems on stderr)",
    )
    p.add_argument(
        "--max-gib",
        type=real_arg("max_gib", 0, 2**34, "a number of GiB (2**34 GiB spans the 64-bit space)"),
        default=DEFAULT_MAX_BYTES / 2**30,
        help="refuse to scan more virtual memory than this many GiB, at most 2**34 "
        "(default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (--no-progress)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@_capture_args
def _capture(a) -> int:
    with make_progress(a) as prog:
        return _capture_with(a, prog)


def _capture_with(a, prog) -> int:
    cap = live_capture.capture_detailed(
        a.pid,
        anon_only=a.anon,
        start=a.start,
        end=a.end,
        name=a.name,
        pmd=a.pmd,
        max_bytes=int(a.max_gib * 2**30),
        progress=lambda done, total: prog("capture: pagemap", done >> 20, total >> 20, "MiB"),
    )
    if cap.partial and not a.allow_partial:
        raise PartialCaptureError(
            f"capture of process {a.pid} is partial: {cap.problems[0]}; "
            f"nothing written (--allow-partial keeps it)",
            cap,
        )
    if a.shard_tables is not None:
        # the directory is 0700: it holds physical frame numbers
        shards.shard(cap.space, a.output, tables=a.shard_tables, private=True)
    else:
        cap.save(a.output)  # 0600: it holds physical frame numbers
    s = cap.summary()
    s["output"] = a.output
    if a.json:
        json.dump(s, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        st = cap.stats
        print(f"wrote {a.output}: {cap.space!r}")
        print(
            f"pid {cap.pid} ({cap.comm}): {st['vmas']} VMAs, "
            f"{st['virtual_bytes'] / 2**20:,.1f} MiB "
            f"virtual, {st['present']:,} present pages, {st['large_folios']:,} large folios "
            f"({st['pages_in_large_folios']:,} pages), {st['pmd_mapped']} PMD-mapped THPs, "
            f"{st['seconds']:.2f} s"
        )
        for n in cap.notes:
            print(f"note: {n}")
    if cap.partial:
        for p in cap.problems:
            sys.stderr.write(f"ptebatch: warning: PARTIAL snapshot: {p}\n")
        return 3
    return 0


def _bytes(field: str, text: str) -> int:
    """A byte count such as ``2M``, ``64K``, ``4096`` or ``0x1000``; errors name ``field``."""
    t = text.strip().lower()
    bad = ValueError(
        f"{field}: {text!r} is not a byte count (a finite number of bytes, e.g. 2M, 64K, 4096)"
    )
    for suffix, mult in (("kib", 1 << 10), ("mib", 1 << 20), ("k", 1 << 10), ("m", 1 << 20)):
        if t.endswith(suffix):
            try:
                value = float(t[: -len(suffix)])
            except ValueError:
                raise bad from None
            if not math.isfinite(value):
                raise bad
            return int(value * mult)
    try:
        return int(t, 0)
    except ValueError:
        raise bad from None


@command(
    "reproduce",
    "build the thread's layout with a real THP on this kernel, capture it, "
    "and run unmap 6.15 / 6.16 over it",
)
def _reproduce_args(p):
    p.add_argument(
        "--size",
        default="2M",
        help="bytes of the 2 MiB folio to move, from its first page (4K multiple, at most "
        "2M; default: %(default)s)",
    )
    p.add_argument(
        "--below",
        default="4K",
        help="bytes of the moved part below the 2 MiB boundary (default: %(default)s)",
    )
    p.add_argument(
        "--no-lazyfree",
        action="store_true",
        help="do not MADV_FREE the folio (reclaim then does not batch it)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


@_reproduce_args
def _reproduce(a) -> int:
    size, below = _bytes("size", a.size), _bytes("below", a.below)
    r = reproduce_thread(size, below, lazyfree=not a.no_lazyfree)
    if a.json:
        json.dump(r, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_report(r))
    return 0


@command(
    "thpmaps",
    "how transparent huge pages are mapped in live processes: the kernel's tools/mm/thpmaps "
    "counters, with batching on top",
)
def _thpmaps_args(p):
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--pid",
        type=int,
        action="append",
        default=None,
        metavar="PID",
        help="a process to scan (repeat for more); default: every process on the system",
    )
    who.add_argument(
        "--cgroup",
        default=None,
        metavar="PATH",
        help="every process of this cgroup directory (v1 or v2) and of the cgroups below it",
    )
    p.add_argument(
        "--rollup", action="store_true", help="one sum over every VMA instead of a block per VMA"
    )
    p.add_argument(
        "--cont",
        action="append",
        default=[],
        metavar="SIZE",
        help="also count memory mapped in aligned contiguous blocks of SIZE (e.g. 64K; a "
        "power-of-two number of pages up to the PMD size; repeatable)",
    )
    p.add_argument("--inc-smaps", action="store_true", help="also show the additive smaps fields")
    p.add_argument("--inc-empty", action="store_true", help="also show counters that are 0")
    p.add_argument(
        "--periodic",
        type=int,
        default=None,
        metavar="MS",
        help="report again every MS milliseconds until interrupted",
    )
    p.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="with --periodic: stop after N reports",
    )
    p.add_argument(
        "--batching",
        action="store_true",
        help="add, per VMA and in the rollup, what each caller preset does on these mappings",
    )
    p.add_argument(
        "--caller",
        action="append",
        default=None,
        metavar="NAME",
        help="with --batching: a caller preset (repeatable; default: zap, fork-private, "
        "lazyfree, mprotect)",
    )
    p.add_argument(
        "--kernel",
        action="append",
        default=None,
        metavar="RELEASE",
        help="with --batching: a release (repeatable; default: the running kernel's and the "
        "newest modelled)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (--no-progress)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (with --periodic: one per line)",
    )


@_thpmaps_args
def _thpmaps(a) -> int:
    from ..live.thpmaps import default_presets, thpmaps

    if (a.caller or a.kernel) and not a.batching:
        raise ValueError("--caller/--kernel: choose batching presets; give --batching too")
    if a.periodic is not None and a.periodic <= 0:
        raise ValueError(f"--periodic: must be a positive number of milliseconds, got {a.periodic}")
    if a.count is not None and (a.periodic is None or a.count <= 0):
        raise ValueError("--count: must be positive, and only goes with --periodic")
    presets = default_presets(a.caller, a.kernel) if a.batching else None
    done = 0
    while True:
        with make_progress(a) as prog:
            r = thpmaps(a.pid, cgroup=a.cgroup, cont=a.cont, batching=presets, progress=prog)
        if a.json:
            obj = r.to_json(rollup=a.rollup, inc_smaps=a.inc_smaps)
            if a.periodic is None:
                json.dump(obj, sys.stdout, indent=2)
            else:
                json.dump(obj, sys.stdout, separators=(",", ":"))
            sys.stdout.write("\n")
        else:
            text = r.format(rollup=a.rollup, inc_empty=a.inc_empty, inc_smaps=a.inc_smaps)
            if text:
                print(text)
            if a.periodic is not None:
                print()
        sys.stdout.flush()
        if not (a.quiet or a.json):
            for pid, why in r.skipped:
                sys.stderr.write(f"ptebatch: note: skipped pid {pid}: {why}\n")
        done += 1
        if a.periodic is None or (a.count is not None and done >= a.count):
            return 0
        time.sleep(a.periodic / 1000)
