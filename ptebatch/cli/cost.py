"""``ptebatch cost``: what batching saves, in the kernel's own operations."""

from __future__ import annotations

import sys

from ..arch import ARCHES
from ..workloads.cost import OPS, SCENARIO_CALLERS, SIZES_KB, calibration, cost
from ._registry import command, print_json, table


def _size_list(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s not in SIZES_KB for s in sizes):
        raise ValueError(
            f"sizes: comma-separated folio sizes in KiB among {', '.join(map(str, SIZES_KB))}, "
            f"got {text!r}"
        )
    return sizes


def _configure(p) -> None:
    p.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES_KB)),
        metavar="KB,...",
        help=f"folio sizes in KiB (default: all of {','.join(map(str, SIZES_KB))})",
    )
    p.add_argument(
        "--arch", choices=sorted(ARCHES), default=None, help="one architecture (default: both)"
    )
    p.add_argument(
        "--callers",
        default=",".join(SCENARIO_CALLERS),
        metavar="NAME,...",
        help=f"scenario callers among {', '.join(SCENARIO_CALLERS)} "
        f"(presets: {', '.join(f'{k}={v}' for k, v in SCENARIO_CALLERS.items())})",
    )
    p.add_argument("--kernel", default="6.18", help="release (default: 6.18)")
    p.add_argument(
        "--size-mib",
        type=int,
        default=1024,
        metavar="MIB",
        help="region size in MiB, a multiple of 2 (default: 1024, as the published benchmarks)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--calibration",
        action="store_true",
        help="fit cost = a*PTE ops + b*folio ops + c*flush ranges + d per walk on the verified "
        "arm64 mprotect timings and print predicted next to published speedups "
        "(only --kernel and --json apply)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="also draw the ratios against folio size to FILE (.png, .svg or .pdf; "
        "needs matplotlib)",
    )


@command("cost", "operation counts of the published benchmarks' scenarios, batched vs not")(
    _configure
)
def run_cost(a) -> int:
    if a.calibration:
        return _run_calibration(a)
    if a.plot is not None:
        from ..workloads.plot import plot_suffix, require_matplotlib

        plot_suffix(a.plot)  # before the walks: a bad name costs nothing
        require_matplotlib()
    rows = cost(
        sizes=_size_list(a.sizes),
        arches=(a.arch,) if a.arch else ("x86_64", "arm64"),
        callers=tuple(c for c in a.callers.split(",")),
        kernel=a.kernel,
        size=a.size_mib << 20,
    )
    if a.plot is not None:
        from ..workloads.plot import plot_cost

        plot_cost(rows, a.plot, title=f"What batching saves ({a.kernel}, {a.size_mib} MiB)")
        sys.stderr.write(f"wrote {a.plot}\n")
    if a.json:
        print_json({"size_mib": a.size_mib, "ops": list(OPS), "rows": rows})
        return 0
    flat = []
    for r in rows:
        for op in OPS:
            flat.append(
                {
                    "arch": r["arch"],
                    "caller": r["caller"],
                    "folio": f"{r['folio_kb']}K",
                    "op": op,
                    "batched": r["batched"][op],
                    "unbatched": r["unbatched"][op],
                    "ratio": r["ratio"][op],
                }
            )
    cols = ["arch", "caller", "folio", "op", "batched", "unbatched", "ratio"]
    sys.stdout.write(table(flat, cols) + "\n")
    return 0


def _run_calibration(a) -> int:
    cal = calibration(kernel=a.kernel)
    if a.json:
        print_json(cal)
        return 0
    coef = ", ".join(f"{k}={v:.3g}" for k, v in cal["coef"].items())
    print(f"fitted on {cal['fit_on']} timings (arm64 mprotect): {coef}")
    flat = [
        {
            "caller": r["caller"],
            "arch": r["arch"],
            "folio": f"{r['folio_kb']}K",
            "MiB": r["size_mib"],
            "published": "not verified" if r["published"] is None else r["published"],
            "predicted": r["predicted"],
            "fit": "yes" if r["fitted_on"] else "",
        }
        for r in cal["rows"]
    ]
    cols = ["caller", "arch", "folio", "MiB", "published", "predicted", "fit"]
    sys.stdout.write(table(flat, cols) + "\n")
    return 0
