"""The bench command: same-run speed ratios, optionally gated on floors."""

from __future__ import annotations

import json
import math
import sys

from .._jit import num_threads
from ..bench import compile_times, measure_ratios, peak_memory
from ._registry import command, make_progress, print_json, table

# What each ratio compares, as (faster, slower): "A / B" is B's time over A's, how many times
# as fast A runs, except "detectors off / on", which is off's time over on's (the speed kept
# with the detectors on).  Higher is better for all.  Ratios not listed here are described
# from their names as "A / B".
_SIDES = {
    "scan jit-serial / naive": ("the serial JIT scan", "the naive reference"),
    "unmap jit-serial / naive": ("the serial JIT unmap", "the naive reference"),
    "arm64 scan jit-serial / naive": ("the serial JIT arm64 scan", "the naive reference"),
    "scan jit-parallel / jit-serial": ("the parallel JIT scan", "the serial one"),
    "unmap jit-parallel / jit-serial": ("the parallel JIT unmap", "the serial one"),
    "scan jit-serial / streaming read": (
        "the serial JIT scan",
        "a plain streaming read of the same tables (1.0 would be memory-bound)",
    ),
    "scan jit-serial / numpy": ("the serial JIT scan", "the vectorised NumPy scan"),
    "scan counts jit-serial / streaming read": (
        "the serial JIT scan keeping counts only (rows=False)",
        "a plain streaming read of the same tables",
    ),
    "scan counts jit-parallel / jit-serial": (
        "the parallel counts-only scan",
        "the serial one",
    ),
    "unmap counts jit-parallel / jit-serial": (
        "the parallel counts-only unmap",
        "the serial one",
    ),
    "streaming read threads / one thread": (
        "a streaming read of the tables on all threads",
        "the same read on one (the ceiling of the parallel ratios on this machine)",
    ),
    "unmap detectors off / on": (
        "unmap with the detectors on",
        "unmap with them off (1.00: the detectors cost nothing)",
    ),
}


def _times(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def _target_status(r: dict) -> str:
    """``met``/``missed`` against the ratio's target; ``-`` without one."""
    if r.get("target") is None:
        return "-"
    return "met" if r["measured"] >= r["target"] else "missed"


def _meaning(r: dict) -> str:
    """One line: the ratio, what it means, and its target."""
    m = r["measured"]
    first, second = _SIDES.get(r["name"], (None, None))
    if first is None:
        left, _, right = r["name"].partition(" / ")
        first, second = left or r["name"], right or "the reference"
    if r["name"] == "unmap detectors off / on":
        # measured = time off / time on: the speed kept with the detectors on
        text = f"{first} runs at {m:.2f} of the speed of {second}"
    elif m >= 1:
        text = f"{first} is {_times(m)} times as fast as {second}"
    else:
        text = f"{first} runs at {m:.2f} of the speed of {second}"
    line = f"{r['name']} {_times(m)}x: {text}"
    status = _target_status(r)
    if status == "met":
        line += f"; target {_times(r['target'])}x met"
    elif status == "missed":
        short = 100.0 * (1.0 - m / r["target"])
        line += f"; target {_times(r['target'])}x missed ({short:.0f}% short)"
    return line


def _read_floors(path: str) -> dict:
    """The ``floors`` object of a gate file: ``{"floors": {ratio name: floor}}``, checked before
    anything is measured."""
    with open(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--gate: {path} is not JSON ({exc})") from None
    floors = data.get("floors") if isinstance(data, dict) else None
    if not isinstance(floors, dict):
        raise ValueError(
            f'--gate: {path} needs a "floors" object of ratio names and floors, '
            f'e.g. {{"floors": {{"scan jit-serial / naive": 50}}}}'
        )
    for name, floor in floors.items():
        if (
            isinstance(floor, bool)
            or not isinstance(floor, (int, float))
            or not (math.isfinite(floor) and floor > 0)
        ):
            raise ValueError(
                f"--gate: {path}: the floor of {name!r} must be a finite number above 0, "
                f"got {floor!r}"
            )
    return floors


@command(
    "bench", "measure speed ratios (JIT vs naive, parallel vs serial) and optionally gate them"
)
def _bench_args(p):
    p.add_argument(
        "--full",
        action="store_true",
        help="use the 1M-folio space for parallel and throughput ratios (default: 100k)",
    )
    p.add_argument(
        "--gate",
        metavar="FLOORS.json",
        help="fail (exit 1) when a ratio is below its floor in this JSON file",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time first-call compilation and cache loading in fresh processes",
    )
    p.add_argument(
        "--memory", action="store_true", help="also report peak memory of scan and unmap"
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")


@_bench_args
def _bench(a) -> int:
    floors = _read_floors(a.gate) if a.gate else {}
    with make_progress(a) as prog:
        rows = measure_ratios(quick=not a.full, progress=prog)
    failed = []
    for r in rows:
        floor = floors.get(r["name"])
        r["floor"] = floor
        r["status"] = "-" if floor is None else ("pass" if r["measured"] >= floor else "FAIL")
        r["target_status"] = _target_status(r)
        r["meaning"] = _meaning(r)
        if r["status"] == "FAIL":
            failed.append(r["name"])
    missing = sorted(set(floors) - {r["name"] for r in rows})
    report = {"ratios": rows, "threads": num_threads()}
    if a.compile:
        report["compile_seconds"] = compile_times()
    if a.memory:
        report["memory"] = peak_memory()
    if a.json:
        print_json(report)
    else:
        # "status" here judges the target; the gate's pass/FAIL (JSON "status") is "gate"
        shown = [
            {
                **r,
                "measured": round(r["measured"], 2),
                "status": _target_status(r),
                "gate": r["status"],
            }
            for r in rows
        ]
        print(table(shown, ["name", "measured", "target", "status", "floor", "gate", "note"]))
        for r in rows:
            if r["floor"] is not None:
                print(
                    f"gate: {r['name']}: measured {r['measured']:.2f}x, floor {r['floor']}x, "
                    f"{r['status']}"
                )
        print("\nWhat each ratio says (two timings from this run; higher is better):")
        for r in rows:
            print("  " + _meaning(r))
        if a.compile:
            c = report["compile_seconds"]
            print(
                "first call, fresh cache (compile): "
                + ", ".join(f"{k} {v:.2f} s" for k, v in c["compile"].items())
            )
            print(
                "first call, cache written (load):  "
                + ", ".join(f"{k} {v:.2f} s" for k, v in c["cache_load"].items())
            )
        if a.memory:
            m = report["memory"]
            for walk in ("scan", "unmap"):
                w = m[walk]
                print(
                    f"memory {walk} ({m['case']}): peak {w['peak_bytes'] / 2**20:.1f} MiB = "
                    f"{w['peak_over_input']:.3f} x input ({m['input_bytes'] / 2**20:.0f} MiB), "
                    f"{w['bytes_per_batch']:.0f} B per batch"
                )
    if missing:
        sys.stderr.write(f"ptebatch: error: floors name unknown ratios: {', '.join(missing)}\n")
        return 2
    return 1 if failed else 0
