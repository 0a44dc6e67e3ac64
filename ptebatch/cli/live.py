"""Commands on live processes: capture, reproduce."""

from __future__ import annotations

import json
import sys

from ..live import capture as live_capture
from ..live.capture import DEFAULT_MAX_BYTES, PartialCaptureError
from ..live.reproduce import format_report, reproduce_thread
from ._registry import command, int_arg, make_progress


@command("capture", "capture a live process's page tables from /proc into a snapshot")
def _capture_args(p):
    p.add_argument("--pid", type=int, required=True, help="process to capture")
    p.add_argument("-o", "--output", required=True, help="snapshot file to write (.npz)")
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
        type=float,
        default=DEFAULT_MAX_BYTES / 2**30,
        help="refuse to scan more virtual memory than this (default: %(default)s)",
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


def _bytes(text: str) -> int:
    t = text.strip().lower()
    for suffix, mult in (("kib", 1 << 10), ("mib", 1 << 20), ("k", 1 << 10), ("m", 1 << 20)):
        if t.endswith(suffix):
            try:
                return int(float(t[: -len(suffix)]) * mult)
            except ValueError:
                break
    try:
        return int(t, 0)
    except ValueError:
        raise ValueError(f"size: {text!r} is not a byte count (e.g. 2M, 64K, 4096)") from None


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
    r = reproduce_thread(_bytes(a.size), _bytes(a.below), lazyfree=not a.no_lazyfree)
    if a.json:
        json.dump(r, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_report(r))
    return 0
