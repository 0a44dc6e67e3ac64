"""Commands on one snapshot and the model's tables: scan, unmap, callers, corpus, info, demo."""

from __future__ import annotations

import os
import time

import ptebatch as pb

from ..callers import CALLERS, callers_table
from ..shards import ShardedSpace
from ..space import read_info
from ..workloads.corpus import NOT_EXPRESSED, check_all
from ..workloads.demo import run_demo
from ._cluster import add_cluster_args, executor_for
from ._registry import command, int_arg, make_progress, print_json, table


def _walk_args(p, *, scan: bool) -> None:
    walk = "scan" if scan else "unmap"
    names = [c.name for c in CALLERS.values() if str(c.walk) == walk]
    p.add_argument(
        "file",
        help="snapshot (.npz) written by AddressSpace.save or 'ptebatch generate', or a "
        "sharded space (directory), walked shard by shard",
    )
    p.add_argument(
        "--caller",
        default=names[0],
        choices=names,
        help="the kernel caller whose flags and rules apply; 'ptebatch callers' lists "
        "them (default: %(default)s)",
    )
    p.add_argument(
        "--kernel",
        default="6.16",
        help="kernel release (6.9 .. 7.0, e.g. 6.15, 6.15.7, 6.18), gen1/gen1b/gen2, or "
        "gen2:RELEASE for a release newer than 7.0 (default: %(default)s)",
    )
    p.add_argument(
        "--flags",
        default=None,
        help="FPB_* flags joined by '|' in the release's vocabulary "
        "(default: the flags the caller passes in that release)",
    )
    if scan:
        p.add_argument(
            "--clamp",
            choices=("pmd", "folio"),
            default="pmd",
            help="max_nr cut at pmd_addr_end(addr, vma_end) (pmd), or the folio size as "
            "a caller that forgot to clamp (folio) (default: %(default)s)",
        )
        p.add_argument(
            "--move-by",
            type=int_arg("move_by"),
            default=0,
            metavar="BYTES",
            help="mremap: destination minus source address, page-aligned, may be "
            "negative (--move-by -0x1ff000 or --move-by=-0x1ff000), e.g. 0x1ff000 (default: 0)",
        )
    p.add_argument(
        "--oob",
        choices=("none", "adjacent"),
        default="none",
        help="what a read past entry 511 sees: none (0) or the next table row "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--no-detectors",
        action="store_true",
        help="skip the spread and uffd-wp detectors (the overrun and past-folio "
        "detectors cost nothing and stay on)",
    )
    p.add_argument(
        "--impl",
        choices=("jit", "serial", "naive"),
        default="jit",
        help="JIT on all threads, JIT on one thread, or the naive reference (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_cluster_args(p)
    rows = p.add_argument_group(
        "rows", "counts are computed inside the walk; rows are written only with --rows"
    )
    rows.add_argument(
        "--rows",
        metavar="FILE",
        default=None,
        help="also write the selected batches to FILE: .csv, or .npz (columns)",
    )
    rows.add_argument(
        "--min-nr",
        type=int_arg("min_nr"),
        default=None,
        metavar="N",
        help="rows of at least N PTEs",
    )
    rows.add_argument(
        "--reason",
        default=None,
        metavar="NAMES",
        help="rows that stopped for one of these reasons, comma-separated (default: every "
        "reason but order0: single PTEs of 4 KiB folios are rows only when asked for)",
    )
    rows.add_argument(
        "--flagged",
        default=None,
        metavar="DETECTORS",
        help="rows that tripped one of these detectors, comma-separated "
        "(table_overrun, vma_overrun, past_folio, spread, uffd_wp)",
    )
    rows.add_argument(
        "--va",
        default=None,
        metavar="LO-HI",
        help="rows whose first address is in [LO, HI), e.g. 0x100000000000-0x100000200000",
    )


def _row_filter(a):
    """``rows=`` for the walk: False unless --rows; the filter options otherwise."""
    if a.rows is None:
        for opt in ("min_nr", "reason", "flagged", "va"):
            if getattr(a, opt) is not None:
                raise ValueError(f"--{opt.replace('_', '-')}: selects rows; give --rows FILE too")
        return False
    spec = {"reasons": [r for r in pb.reasons.NAMES if r != "order0"]}
    if a.reason is not None:
        spec["reasons"] = [w.strip() for w in a.reason.split(",") if w.strip()]
    if a.min_nr is not None:
        spec["min_nr"] = a.min_nr
    if a.flagged is not None:
        spec["findings"] = [w.strip() for w in a.flagged.split(",") if w.strip()]
    if a.va is not None:
        lo, sep, hi = a.va.partition("-")
        if not sep:
            raise ValueError(f"--va: expected LO-HI, got {a.va!r}")
        spec["va"] = (int_arg("--va")(lo), int_arg("--va")(hi))
    return spec


def _impl(name: str):
    if name == "naive":
        return pb.naive, {}
    return pb, {"parallel": name == "jit"}


def _print_summary(s: dict) -> None:
    for key, value in s.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={v}" for k, v in value.items() if v) or "-"
            print(f"{key:16} {inner}")
        elif isinstance(value, list):
            print(f"{key:16} {'|'.join(value) or '0'}")
        else:
            print(f"{key:16} {value}")


def _need_sharded(space, file) -> None:
    if not isinstance(space, ShardedSpace):
        raise ValueError(
            f"workers: the shards of a sharded space run on workers; {file} is one snapshot "
            "('ptebatch shard' cuts one)"
        )


def _run_walk(a, walk: str) -> int:
    space = pb.load(a.file)
    mod, kw = _impl(a.impl)
    if mod is pb.naive and isinstance(space, ShardedSpace):
        raise ValueError(
            f"impl: the naive walk takes one snapshot, not the sharded space {a.file} "
            "('ptebatch unshard' writes one)"
        )
    if walk == "scan":
        kw.update(clamp=a.clamp, move_by=a.move_by)

    rows = _row_filter(a)

    def run(sp, rows=False, progress=None, **extra):
        return getattr(mod, walk)(
            sp,
            rows=rows,
            progress=progress,
            **extra,
            caller=a.caller,
            kernel=a.kernel,
            flags=a.flags,
            oob=a.oob,
            detectors=not a.no_detectors,
            **kw,
        )

    compile_s = None
    if mod is not pb.naive:
        # compile (or load from the cache) on a tiny space, so "seconds" is the walk alone
        t = time.perf_counter()
        run(pb.thread_layout())
        compile_s = time.perf_counter() - t
    if a.workers is not None or a.scheduler is not None:
        _need_sharded(space, a.file)
    with executor_for(a) as ex:
        extra = {} if ex is None else {"executor": ex}
        t = time.perf_counter()
        with make_progress(a) as prog:
            r = run(space, rows, prog, **extra)
    s = r.summary()
    s["seconds"] = round(time.perf_counter() - t, 6)
    if compile_s is not None:
        s["compile_seconds"] = round(compile_s, 6)
    if a.rows is not None:
        s["rows"] = {"file": a.rows, "written": r.save_batches(a.rows)}
    print_json(s) if a.json else _print_summary(s)
    return 0


@command("scan", "page-table walk (zap, fork, mprotect, mremap, ...) of every VMA of a snapshot")
def _scan_args(p):
    _walk_args(p, scan=True)


@_scan_args
def _scan(a) -> int:
    return _run_walk(a, "scan")


@command("unmap", "reclaim's try_to_unmap_one over every mapped large folio of a snapshot")
def _unmap_args(p):
    _walk_args(p, scan=False)


@_unmap_args
def _unmap(a) -> int:
    return _run_walk(a, "unmap")


@command("callers", "list the kernel callers of folio_pte_batch, their flags and sources")
def _callers_args(p):
    p.add_argument(
        "--kernel",
        default=None,
        help="show each caller as it is in this release (default: every release row)",
    )
    p.add_argument("--json", action="store_true", help="print as a JSON list")


@_callers_args
def _callers(a) -> int:
    rows = callers_table(a.kernel)
    if a.json:
        print_json(rows)
        return 0
    for r in rows:
        r["flags"] = "|".join(f.removeprefix("FPB_") for f in r["flags"]) or "0"
        if not r["batches"]:
            r["flags"] = "(no batching)"
        extra = [
            r.get("unmap", ""),
            "hint>1" if r.get("need_hint") else "",
            "dst-pmd" if r.get("dst_clamp") else "",
            "spreads " + "+".join(r["spread"]) if r["spread"] else "",
        ]
        r["rules"] = ", ".join(e for e in extra if e)
    cols = ["caller", "since" if a.kernel is None else "kernel", "walk", "flags", "rules", "source"]
    print(table(rows, cols))
    return 0


@command("corpus", "run the real-bug regression corpus: buggy releases must trip, fixed must not")
def _corpus_args(p):
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="check the committed snapshots in DIR (e.g. data/) instead of building "
        "the layouts in memory",
    )
    p.add_argument(
        "--impl",
        choices=("jit", "naive"),
        default="jit",
        help="the JIT engine or the naive reference (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the results as a JSON list")


@_corpus_args
def _corpus(a) -> int:
    if a.data is not None and not os.path.isdir(a.data):
        raise ValueError(f"--data: {a.data!r} is not a directory")
    rows = check_all(data_dir=a.data, impl=pb.naive if a.impl == "naive" else pb.engine)
    if a.json:
        print_json(rows)
    else:
        for r in rows:
            r["buggy kernels"] = " ".join(f"{k}:{v}" for k, v in r["buggy"].items())
            r["fixed kernels"] = " ".join(f"{k}:{v}" for k, v in r["fixed"].items())
            r["verdict"] = "ok" if r["ok"] else "REGRESSION"
        print(
            table(rows, ["name", "caller", "detector", "buggy kernels", "fixed kernels", "verdict"])
        )
        print(
            "\nnot expressible in the model: "
            + "; ".join(f"#{n}" for n in NOT_EXPRESSED)
            + " (see data/README.md)"
        )
    return 0 if all(r["ok"] for r in rows) else 1


@command("info", "describe a snapshot")
def _info_args(p):
    p.add_argument("file", help="snapshot (.npz), or a sharded space (directory)")
    p.add_argument(
        "--present",
        action="store_true",
        help="also count present PTEs (reads every table; without it, only the metadata is "
        "read and present_ptes is null)",
    )
    p.add_argument("--json", action="store_true", help="print as one JSON object")


@_info_args
def _info(a) -> int:
    if os.path.isdir(a.file):
        if a.present:
            raise ValueError("present: counting present PTEs reads one snapshot, not a directory")
        info = ShardedSpace(a.file).info()
    else:
        info = read_info(a.file, present=a.present)
    print_json(info) if a.json else _print_summary(info)
    return 0


@command(
    "demo", "the thread's layout and a synthetic space under 6.15 and 6.16, and the real-bug corpus"
)
def _demo_args(p):
    p.add_argument(
        "--folios",
        type=int_arg("n_folios"),
        default=100_000,
        help="folios in the synthetic space (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int_arg("seed"), default=0, help="random seed (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


@_demo_args
def _demo(a) -> int:
    report = run_demo(a.folios, a.seed)
    if a.json:
        print_json(report)
        return 0
    print(
        f"ptebatch demo: folio_pte_batch rules on the LKML thread's layout and on a seeded "
        f"space of {a.folios:,} folios (seed {a.seed})\n"
    )
    print(
        table(
            report["rows"],
            [
                "space",
                "walk",
                "kernel",
                "clamp",
                "oob",
                "batches",
                "mean_batch",
                "table_overruns",
                "vma_overruns",
            ],
        )
    )
    t = report["timing"]
    print(
        f"\nJIT vs naive on a sample of {t['sample_tables']:,} tables "
        f"({t['sample_ptes']:,} present "
        f"PTEs), scan, kernel 6.16:"
    )
    print(
        f"  naive {t['naive_s']:.3f} s, JIT serial {t['jit_serial_s']:.4f} s, "
        f"JIT parallel {t['jit_parallel_s']:.4f} s ({t['threads']} threads)"
    )
    print(
        f"  the JIT walk is {t['serial_speedup']:.0f}x faster than the naive reference on one "
        f"thread and {t['parallel_speedup']:.0f}x on {t['threads']}; results identical: "
        f"{t['identical']}"
    )
    print(
        f"  first call {t['compile_s']:.1f} s: compiling, or loading the compiled code from "
        f"Numba's cache after the first run on this machine"
    )
    th = report["thread"]
    print(
        f"\nThe thread's folio ({th['folio_nr']} pages at {th['va']}) straddles a 2 MiB boundary:"
    )
    print(
        f"  6.15 unmap read past the table: {th['unmap_6_15_overruns']} time(s); "
        f"6.16 batches {th['unmap_6_16_batches']} with no overrun."
    )
    print("\nReal bugs (ptebatch corpus): batches flagged under the buggy -> the fixed releases:")
    for r in report["corpus"]:
        buggy = ", ".join(f"{k} {v}" for k, v in r["buggy"].items())
        fixed = ", ".join(f"{k} {v}" for k, v in r["fixed"].items())
        print(
            f"  #{r['bug']} {r['arch']:6} {r['caller']:8} {r['detector']:13} {buggy} -> {fixed}"
            f"  {'ok' if r['ok'] else 'REGRESSION'}"
        )
    return 0 if all(r["ok"] for r in report["corpus"]) else 1
