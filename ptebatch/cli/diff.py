"""The diff command: two settings of one walk on a snapshot, address by address."""

from __future__ import annotations

import itertools
import sys

import ptebatch as pb

from ..workloads.diff import COMPARES, SETTING_KEYS, Batch, DiffResult, diff, parse_setting
from ._cluster import add_cluster_args, executor_for
from ._registry import command, print_json, table

_LINES_PER_SIDE = 8  # batch lines shown per side and range; --json and -o give all


def _settings(a) -> tuple[dict, dict]:
    """The two settings from --caller/--kernels and --a/--b; a key is given once."""
    base_a: dict = {}
    base_b: dict = {}
    shorthand = {}
    if a.caller is not None:
        base_a["caller"] = a.caller
        shorthand["caller"] = "--caller"
    if a.kernels is not None:
        kernels = [k.strip() for k in a.kernels.split(",")]
        if len(kernels) != 2 or not all(kernels):
            raise ValueError(
                f"kernels: expected two releases A,B (e.g. 6.15,6.16), got {a.kernels!r}"
            )
        base_a["kernel"], base_b["kernel"] = kernels
        shorthand["kernel"] = "--kernels"
    if a.kernels is None and a.b is None:
        raise ValueError(
            "b: nothing differs from a; give --kernels A,B or --b key=value,... "
            f"(keys: {', '.join(SETTING_KEYS)})"
        )
    sides = []
    for name, base, text in (("a", base_a, a.a), ("b", base_b, a.b)):
        given = parse_setting(text, name) if text is not None else {}
        for key in given:
            if key in shorthand:
                raise ValueError(f"{name}.{key}: given by {shorthand[key]} too; give it once")
        sides.append({**base, **given})
    return sides[0], sides[1]


def _lines(batches: tuple[Batch, ...]) -> list[str]:
    """One line per batch; equal batches (size, reason, findings) back to back are one line,
    ``xK``.  At most ``_LINES_PER_SIDE`` lines."""
    runs: list[list] = []  # [first batch, count, end of the last]
    for b in batches:
        last = runs[-1] if runs else None
        if (
            last is not None
            and b.va == last[2]
            and (b.nr, b.reason, b.findings) == (last[0].nr, last[0].reason, last[0].findings)
        ):
            last[1] += 1
            last[2] = b.end
        else:
            runs.append([b, 1, b.end])
    out = [str(first) + (f" x{n}" if n > 1 else "") for first, n, _ in runs]
    if len(out) > _LINES_PER_SIDE:
        more = len(out) - (_LINES_PER_SIDE - 1)
        out = out[: _LINES_PER_SIDE - 1] + [f"... {more} more lines"]
    return out


def _setting_text(s: dict) -> str:
    parts = [f"{s['caller']} {s['kernel']}"]
    parts.append("flags " + ("|".join(f.removeprefix("FPB_") for f in s["flags"]) or "0"))
    if "clamp" in s:
        parts.append(f"clamp {s['clamp']}")
    parts.append(f"oob {s['oob']}")
    if s.get("move_by"):
        parts.append(f"move_by {s['move_by']:#x}")
    return ", ".join(parts)


def _print_diff(d: DiffResult, file: str, max_ranges: int) -> None:
    s = d.summary()
    fields = ["address", "size"]
    fields += ["stop reason", "findings"] if d.compare == "row" else []
    fields += ["folio"] if d.walk == "unmap" else []
    head = [
        ("space", file),
        ("walk", f"{d.walk}; rows match when equal in {', '.join(fields)}"),
        ("a", _setting_text(d.a)),
        ("b", _setting_text(d.b)),
        ("ranges", f"{s['ranges']:,}"),
        (
            "rows differing",
            f"a {s['rows_a']:,} of {s['batches_a']:,}, b {s['rows_b']:,} of {s['batches_b']:,}",
        ),
        (
            "PTEs",
            f"{s['ptes']:,} in ranges ({s['ptes_a']:,} in a's differing rows, "
            f"{s['ptes_b']:,} in b's)",
        ),
    ]
    for key, value in head:
        print(f"{key:16} {value}")
    if not len(d):
        print("\nno differences: every row of a is a row of b")
        return
    la, lb = d.labels()
    col_a, col_b = f"a: {la}", f"b: {lb}"
    rows = []
    for r in d.iter_ranges(max_ranges):
        lines_a, lines_b = _lines(r.a), _lines(r.b)
        for i, (x, y) in enumerate(itertools.zip_longest(lines_a, lines_b)):
            rows.append(
                {
                    "range": f"{r.lo:#x}-{r.hi:#x}" if i == 0 else None,
                    "ptes": r.ptes if i == 0 else None,
                    col_a: x,
                    col_b: y,
                }
            )
    print()
    if rows:
        print(table(rows, ["range", "ptes", col_a, col_b]))
    print("(va+nr stop_reason [findings]; xK: K such batches back to back)")
    if len(d) > max_ranges:
        print(
            f"... {len(d) - max_ranges:,} more range(s): --ranges N shows more, --json or "
            "-o FILE.csv gives every one"
        )


@command("diff", "compare two settings of one walk on a snapshot, address by address")
def _diff_args(p):
    p.add_argument(
        "file",
        help="snapshot (.npz) written by AddressSpace.save or 'ptebatch generate', or a "
        "sharded space (directory): each side is walked shard by shard and merged",
    )
    p.add_argument(
        "--caller",
        default=None,
        help="caller preset for both sides ('ptebatch callers'); it decides the walk, scan "
        "or unmap (default: zap, a scan)",
    )
    p.add_argument(
        "--kernels",
        default=None,
        metavar="A,B",
        help="the two kernel releases, when only the kernel differs (e.g. 6.15,6.16)",
    )
    p.add_argument(
        "--a",
        "--walk-a",
        dest="a",
        default=None,
        metavar="KEY=VALUE,...",
        help=f"side a's setting; keys: {', '.join(SETTING_KEYS)} (clamp and move_by: scan "
        "callers only; flags joined by |), e.g. kernel=6.15,clamp=folio",
    )
    p.add_argument(
        "--b",
        "--walk-b",
        dest="b",
        default=None,
        metavar="KEY=VALUE,...",
        help="side b's setting; keys it leaves out are side a's, e.g. clamp=pmd",
    )
    p.add_argument(
        "--compare",
        choices=COMPARES,
        default="row",
        help="rows are equal when address, size, stop reason and findings are (row), or "
        "address and size (batch); unmap rows also compare the folio (default: %(default)s)",
    )
    p.add_argument(
        "--ranges",
        type=int,
        default=20,
        metavar="N",
        help="ranges to print (default: %(default)s)",
    )
    p.add_argument(
        "--no-detectors",
        action="store_true",
        help="skip the spread and uffd-wp detectors on both sides",
    )
    p.add_argument(
        "--json", action="store_true", help="print the counts and every range as one JSON object"
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE.csv",
        help="also write every differing row (range, side, va, nr, reason, findings; "
        "unmap: folio_pfn) as CSV, atomically",
    )
    add_cluster_args(p)


@_diff_args
def _diff(a) -> int:
    if a.ranges < 0:
        raise ValueError(f"ranges: must be 0 or more, got {a.ranges}")
    if a.output is not None and not a.output.lower().endswith(".csv"):
        raise ValueError(f"output: must end in .csv, got {a.output!r}")
    set_a, set_b = _settings(a)
    space = pb.load(a.file)
    if (a.workers is not None or a.scheduler is not None) and not isinstance(
        space, pb.ShardedSpace
    ):
        raise ValueError(
            f"workers: the shards of a sharded space run on workers; {a.file} is one "
            "snapshot ('ptebatch shard' cuts one)"
        )
    with executor_for(a) as ex:
        d = diff(space, set_a, set_b, compare=a.compare, detectors=not a.no_detectors, executor=ex)
    written = d.write_csv(a.output) if a.output is not None else None
    if a.json:
        print_json(d.to_dict())
    else:
        _print_diff(d, a.file, a.ranges)
    if written is not None:
        out = sys.stderr if a.json else sys.stdout
        print(f"wrote {a.output} ({written:,} differing rows)", file=out)
    return 0
