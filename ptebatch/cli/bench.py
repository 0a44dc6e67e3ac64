"""The bench command: same-run speed ratios, optionally gated on floors."""

from __future__ import annotations

import json
import sys

from .._jit.options import num_threads
from ..bench import compile_times, measure_ratios, peak_memory
from ._registry import command, print_json, table


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
    floors = {}
    if a.gate:
        with open(a.gate) as fh:
            floors = json.load(fh)["floors"]
    rows = measure_ratios(quick=not a.full)
    failed = []
    for r in rows:
        floor = floors.get(r["name"])
        r["floor"] = floor
        r["status"] = "-" if floor is None else ("pass" if r["measured"] >= floor else "FAIL")
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
        shown = [{**r, "measured": round(r["measured"], 2)} for r in rows]
        print(table(shown, ["name", "measured", "target", "floor", "status", "note"]))
        for r in rows:
            if r["floor"] is not None:
                print(
                    f"gate: {r['name']}: measured {r['measured']:.2f}x, floor {r['floor']}x, "
                    f"{r['status']}"
                )
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
