"""Commands that make and sweep workloads: generate, run, plot."""

from __future__ import annotations

import inspect
import sys

import ptebatch as pb

from ..arch import ARCHES
from ..shards import is_sharded
from ..workloads.experiment import (
    FINDING_COLUMNS,
    ROW_COLUMNS,
    STOP_COLUMNS,
    columns,
    experiment,
    read_rows,
    rows_to_csv,
    write_rows,
)
from ..workloads.generator import CONTPTE_HELP, PRESET_HELP, RATE_KNOBS, generate
from ._cluster import add_cluster_args, executor_for
from ._registry import command, int_arg, make_progress, print_json, table


def _add_knobs(p, *, sweep: bool) -> None:
    """Generator knobs; with ``sweep`` each takes a comma-separated list."""
    many = " (comma-separated values sweep)" if sweep else ""
    kind = str if sweep else float
    presets = "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())
    p.add_argument(
        "--sizes",
        default=None if sweep else "mixed",
        metavar="MIX",
        help=f"folio size mix: a preset or order:weight pairs such as 0:0.5,4:0.5 "
        f"(order 0 = 4 KiB ... 9 = 2 MiB)"
        f"{' (presets separated by /, e.g. 4k/mthp64, sweep)' if sweep else ''}. "
        f"Presets: {presets} (default: mixed)",
    )
    # one source of truth for the defaults: generate's signature
    defaults = {k: v.default for k, v in inspect.signature(generate).parameters.items()}
    for name in RATE_KNOBS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None if sweep else defaults[name],
            metavar="FRACTION",
            help=f"{RATE_KNOBS[name]} (0-1, default: {defaults[name]}){many}",
        )
    p.add_argument(
        "--vma-tables",
        dest="vma_tables",
        type=str if sweep else int_arg("vma_tables"),
        default=None if sweep else defaults["vma_tables"],
        metavar="TABLES",
        help=f"page tables (2 MiB each) per VMA where folios were faulted; VMAs there are "
        f"separated by a 2 MiB gap (count, default: {defaults['vma_tables']}){many}",
    )
    p.add_argument(
        "--pfn-order",
        dest="pfn_order",
        choices=("shuffled", "virtual"),
        default=None if sweep else "shuffled",
        help="physical order of the folios: shuffled, or following the virtual order so "
        "virtual neighbours are often physical neighbours (default: shuffled)",
    )
    if sweep:
        p.add_argument(
            "--arch",
            default=None,
            metavar="ARCH",
            help=f"PTE encoding: {', '.join(ARCHES)} (default: x86_64){many}",
        )
    else:
        p.add_argument(
            "--arch",
            choices=tuple(ARCHES),
            default="x86_64",
            help="PTE encoding (default: %(default)s)",
        )
    p.add_argument(
        "--contpte",
        type=kind,
        default=None,
        metavar="FRACTION",
        help=f"{CONTPTE_HELP} (0-1, default: 1 with --arch arm64, 0 otherwise){many}",
    )


def _knobs_from(a, *, sweep: bool) -> dict:
    out = {}
    if a.sizes is not None:
        out["sizes"] = a.sizes.split("/") if sweep else a.sizes
    for name in RATE_KNOBS:
        v = getattr(a, name)
        if v is not None:
            out[name] = _floats(name, v) if sweep else v
    if a.vma_tables is not None:
        out["vma_tables"] = _ints("vma_tables", a.vma_tables) if sweep else a.vma_tables
    if a.pfn_order is not None:
        out["shuffle_pfn"] = a.pfn_order == "shuffled"
    if a.arch is not None:
        out["arch"] = _words(a.arch) if sweep else a.arch
    if a.contpte is not None:
        out["contpte"] = _floats("contpte", a.contpte) if sweep else a.contpte
    return out


def _floats(name: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _ints(name: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated integers, got {text!r}") from None


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


@command("generate", "write a seeded synthetic snapshot")
def _gen_args(p):
    p.add_argument(
        "--folios",
        type=int_arg("n_folios"),
        required=True,
        help="folios to map (count), 4 KiB order-0 ones included. Only the large folios are "
        "listed in the snapshot's folio arrays (and in 'ptebatch info'); an order-0 folio is "
        "implied by a present PTE whose PFN is in no listed folio. With the default size mix "
        "(55%% order 0), --folios 1000000 lists about 450,000 large folios",
    )
    p.add_argument(
        "--seed",
        type=int_arg("seed"),
        default=0,
        help="random seed; same seed, same bytes (default: %(default)s)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="snapshot file to write (.npz), written atomically; with --shard-tables a directory",
    )
    p.add_argument(
        "--shard-tables",
        type=int_arg("shard_tables"),
        default=None,
        metavar="T",
        help="write a sharded space to the directory -o, block by block (blocks of about T "
        "tables, each seeded from the seed and its number), never holding the whole space: "
        "a different space from the unsharded one of the same seed",
    )
    _add_knobs(p, sweep=False)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (--no-progress)")


@_gen_args
def _generate(a) -> int:
    prog = make_progress(a)
    knobs = _knobs_from(a, sweep=False)
    try:
        if a.shard_tables is not None:
            space = pb.generate(
                a.folios,
                seed=a.seed,
                progress=prog,
                shard_tables=a.shard_tables,
                out=a.output,
                **knobs,
            )
        else:
            space = pb.generate(a.folios, seed=a.seed, progress=prog, **knobs)
            space.save(a.output)
    finally:
        prog.close()
    print(f"wrote {a.output}: {space!r}")
    return 0


def _run_args_common(p, *, plot: bool = False) -> None:
    p.add_argument(
        "spaces",
        nargs="*",
        metavar="SNAPSHOT",
        help="snapshots (.npz) or sharded spaces (directories) to walk; without any, spaces "
        "are generated from the knobs"
        + (" (plot also takes the .json rows that 'ptebatch run -o' wrote)" if plot else ""),
    )
    p.add_argument(
        "--kernels",
        default="6.15,6.16",
        help="kernel releases, comma-separated (6.9 .. 7.0, e.g. 6.14,6.15,6.15.7,6.16,6.18; "
        "gen1/gen1b/gen2; gen2:RELEASE for a release newer than 7.0) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--walks",
        default="scan,unmap",
        help="scan (zap walk of every VMA) and/or unmap (reclaim, per large folio), "
        "comma-separated; with --callers only a check that each caller's walk is "
        "listed (default: %(default)s)",
    )
    p.add_argument(
        "--callers",
        default=None,
        metavar="CALLERS",
        help="caller presets, comma-separated, each under its own walk (e.g. "
        "zap,fork-private,mremap,lazyfree; 'ptebatch callers' lists them) "
        "(default: zap for scan, lazyfree for unmap)",
    )
    p.add_argument(
        "--move-by",
        type=int_arg("move_by"),
        default=0,
        metavar="BYTES",
        help="mremap rows: destination minus source address, page-aligned, may be negative "
        "(--move-by -0x1ff000); a multiple of 2 MiB, the default 0 too, moves whole tables by "
        "their PMD (default: 0)",
    )
    p.add_argument(
        "--clamps",
        default="pmd",
        help="scan max_nr clamp: pmd (pmd_addr_end, as the kernel does) and/or folio (a "
        "caller that forgot to clamp), comma-separated; unmap callers show - "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--oob",
        default="none",
        help="what a read past entry 511 sees: none (0) and/or adjacent (the next table "
        "row), comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--folios",
        default="100000",
        help="folios per generated space (count, 4 KiB order-0 ones included, though only "
        "large folios are listed in a snapshot's folio arrays; comma-separated values sweep) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        default="0",
        help="generator seeds, comma-separated; counts are summed over them (default: %(default)s)",
    )
    p.add_argument("--by-seed", action="store_true", help="one row per seed instead of sums")
    _add_knobs(p, sweep=True)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (--no-progress)")
    add_cluster_args(p)


def _experiment_from(a) -> list[dict]:
    prog = make_progress(a)
    knobs = _knobs_from(a, sweep=True)
    callers = None
    if a.callers is not None:
        callers = _words(a.callers)
        if not callers:
            raise ValueError("callers: give at least one caller name")
    common = dict(
        kernels=_words(a.kernels),
        walks=_words(a.walks),
        callers=callers,
        clamps=_words(a.clamps),
        oob=_words(a.oob),
        move_by=a.move_by,
        progress=prog,
    )
    try:
        if a.spaces:
            if knobs:
                raise ValueError(
                    f"{next(iter(knobs))}: generator knobs apply only when no snapshot is given"
                )
            if a.workers is not None or a.scheduler is not None:
                for path in a.spaces:
                    if not is_sharded(path):
                        raise ValueError(
                            f"workers: only sharded spaces (directories) run on workers; "
                            f"{path} is not one ('ptebatch shard' cuts one)"
                        )
            with executor_for(a) as ex:
                return experiment(a.spaces, executor=ex, **common)
        if getattr(a, "workers", None) is not None or getattr(a, "scheduler", None) is not None:
            raise ValueError(
                "workers: only sharded spaces run on workers; give their directories "
                "('ptebatch generate --shard-tables' writes one)"
            )
        return experiment(
            seeds=_ints("seeds", a.seeds),
            folios=_ints("folios", a.folios),
            by_seed=a.by_seed,
            **common,
            **knobs,
        )
    finally:
        prog.close()


_TABLE_COLS = [
    "space",
    "seeds",
    "walk",
    "caller",
    "kernel",
    "clamp",
    "oob",
    "batches",
    "mean_batch",
    "multi_batches",
    "mean_multi_batch",
    "table_overruns",
    "vma_overruns",
    "seconds",
]
# the overrun detectors already have their columns in the main table
_EXTRA_FINDINGS = tuple(
    c for c in FINDING_COLUMNS if c not in ("find_table_overrun", "find_vma_overrun")
)


def _print_rows(rows: list[dict]) -> None:
    fixed = set(ROW_COLUMNS) | {"batch_size_hist"}
    knob_cols = [c for c in columns(rows, hist=False) if c not in fixed]
    cols = _TABLE_COLS[:2] + knob_cols + _TABLE_COLS[2:]
    print(table(rows, cols))
    numbered = [{**r, "#": i + 1} for i, r in enumerate(rows)]
    ident = ["#", "walk", "caller", "kernel", "clamp", "oob"]
    stops = [c for c in STOP_COLUMNS if any(r.get(c) for r in rows)]
    if stops:
        print("\nstop reasons (batches):")
        print(table(numbered, ident + stops))
    found = [c for c in _EXTRA_FINDINGS if any(r.get(c) for r in rows)]
    if found:
        print("\nfindings (batches that tripped a detector):")
        print(table(numbered, ident + found))


@command("run", "sweep kernels, callers, clamps and generator knobs; one row per setting")
def _run_args(p):
    _run_args_common(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the rows as JSON (with histograms)")
    out.add_argument(
        "--csv", action="store_true", help="print the rows as CSV (without histograms)"
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="also write the rows to this file: CSV if it ends in .csv, JSON otherwise "
        "(the JSON is what 'ptebatch plot' reads)",
    )


@_run_args
def _run(a) -> int:
    rows = _experiment_from(a)
    if a.output:
        write_rows(rows, a.output)
    if a.json:
        print_json(rows)
    elif a.csv:
        sys.stdout.write(rows_to_csv(rows))
    else:
        _print_rows(rows)
        if a.output:
            print(f"\nwrote {a.output}")
    return 0


@command("plot", "batch-size histograms and stop reasons of the settings compared, to a PNG/SVG")
def _plot_args(p):
    _run_args_common(p, plot=True)
    p.add_argument(
        "--results",
        default=None,
        metavar="JSON",
        help="plot rows saved by 'ptebatch run -o FILE.json' (or --json) instead of "
        "running the walks",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="image to write: .png, .svg or .pdf, written atomically",
    )
    p.add_argument("--title", default=None, help="figure title")


@_plot_args
def _plot(a) -> int:
    from ..workloads.plot import plot_rows, require_matplotlib

    try:
        require_matplotlib()
    except ImportError as exc:  # the CLI's error handler does not catch ImportError
        sys.stderr.write(f"ptebatch: error: {exc}\n")
        return 2
    results = [a.results] if a.results else []
    if a.spaces and all(str(s).lower().endswith(".json") for s in a.spaces):
        results, a.spaces = results + a.spaces, []
    if results:
        if a.spaces:
            raise ValueError("results: give either result files (.json) or snapshots, not both")
        rows = [r for path in results for r in read_rows(path)]
    else:
        rows = _experiment_from(a)
    plot_rows(rows, a.output, title=a.title)
    print(f"wrote {a.output} ({len(rows)} settings)")
    return 0
