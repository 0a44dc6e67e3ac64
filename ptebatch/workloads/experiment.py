"""Experiment runs: sweep kernels, callers, clamps and generator knobs (``ptebatch run|plot``).

:func:`experiment` returns a tidy table, one row (a dict) per setting, with the
walk's counts and detector findings; :func:`write_rows` saves it as JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from .. import engine
from .._io import atomic_write
from ..arch import get_arch
from ..callers import DEFAULT, Walk, get_caller
from ..checks import CLAMPS, OOBS
from ..progress import as_hook
from ..reasons import FINDINGS
from ..releases import resolve_kernel
from ..results import SCAN_REASONS
from ..shards import ShardedSpace
from ..space import MAX_FOLIO_NR, AddressSpace, load
from .generator import generate
from .layouts import thread_layout

__all__ = [
    "experiment",
    "write_rows",
    "read_rows",
    "rows_to_csv",
    "atomic_write",
    "ROW_COLUMNS",
    "STOP_COLUMNS",
    "FINDING_COLUMNS",
    "GENERATOR_KNOBS",
]

# Generator knobs that run/experiment can sweep (besides n_folios, as "folios").
GENERATOR_KNOBS = (
    "sizes",
    "moved",
    "straddle",
    "partial",
    "holes",
    "shuffle_pfn",
    "vma_tables",
    "vma_split",
    "lazyfree",
    "write",
    "young",
    "dirty",
    "soft_dirty",
    "uffd_wp",
    "mixed_write",
    "arch",
    "contpte",
)
# every reason a scan or an unmap can stop for (unmap's are a subset of scan's)
STOP_COLUMNS = tuple(f"stop_{r}" for r in SCAN_REASONS)
# batches that tripped each detector (ptebatch.reasons.FINDINGS)
FINDING_COLUMNS = tuple(f"find_{name}" for name, _ in FINDINGS)
COUNT_COLUMNS = (
    ("batches", "ptes_batched", "multi_batches", "table_overruns", "vma_overruns")
    + STOP_COLUMNS
    + FINDING_COLUMNS
)
ID_COLUMNS = ("space", "seeds", "walk", "caller", "kernel", "clamp", "oob")
# the columns after the identity ones (and the swept knobs), in row order
_COUNT_ORDER = (
    ("batches", "ptes_batched", "mean_batch", "multi_batches", "mean_multi_batch")
    + STOP_COLUMNS
    + ("table_overruns", "vma_overruns")
    + FINDING_COLUMNS
    + ("seconds",)
)
ROW_COLUMNS = ID_COLUMNS + _COUNT_ORDER


def _as_list(name: str, value) -> list:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Iterable)
        or isinstance(value, Mapping)
    ):
        return [value]
    out = list(value)
    if not out:
        raise ValueError(f"{name}: give at least one value")
    return out


def _walk_row(r, walk: str) -> dict:
    s = r.summary()
    multi = r.multi_batches
    row = {
        "batches": s["batches"],
        "ptes_batched": s["ptes_batched"],
        "multi_batches": multi,
        "table_overruns": s["table_overruns"],
        "vma_overruns": s["vma_overruns"],
    }
    for col in STOP_COLUMNS:
        row[col] = int(s["stop_reasons"].get(col[5:], 0))
    for col in FINDING_COLUMNS:
        row[col] = int(s["findings"][col[5:]])
    row["hist"] = r.hist
    return row


def _finish(row: dict) -> dict:
    import numpy as np

    h = row.pop("hist")
    b, p = row["batches"], row["ptes_batched"]
    row["mean_batch"] = round(p / b, 6) if b else 0.0
    multi_ptes = int(np.dot(np.arange(h.size, dtype=np.int64)[2:], h[2:])) if h.size > 2 else 0
    row["mean_multi_batch"] = (
        round(multi_ptes / row["multi_batches"], 6) if row["multi_batches"] else 0.0
    )
    row["seconds"] = round(row["seconds"], 6)
    row["batch_size_hist"] = {str(n): int(c) for n, c in enumerate(h) if c}
    # identity columns (space, seeds, knobs, walk, caller, kernel, clamp, oob) first, then counts
    first = [c for c in row if c not in _COUNT_ORDER and c != "batch_size_hist"]
    return {c: row[c] for c in first + list(_COUNT_ORDER) + ["batch_size_hist"]}


def _add_hist(a, b):
    import numpy as np

    n = max(a.size, b.size)
    return np.pad(a, (0, n - a.size)) + np.pad(b, (0, n - b.size))


def experiment(
    spaces=None,
    *,
    kernels: Sequence[str] | str = ("6.15", "6.16"),
    walks: Sequence[str] | str = ("scan", "unmap"),
    callers: Sequence[str] | str | None = None,
    clamps: Sequence[str] | str = ("pmd",),
    oob: Sequence[str] | str = ("none",),
    seeds: Sequence[int] | int = (0,),
    folios: Sequence[int] | int = 100_000,
    by_seed: bool = False,
    parallel: bool = True,
    move_by: int = 0,
    progress: Callable[[str], None] | None = None,
    executor=None,
    **knobs,
) -> list[dict]:
    """Run walks over spaces for every combination of settings; one row per setting.

    Parameters
    ----------
    spaces : None, AddressSpace, path, list of those, or mapping name -> those
        Spaces to walk; a sharded space (:class:`~ptebatch.shards.ShardedSpace` or its
        directory) is walked shard by shard, its results merged.  ``None`` generates them
        with :func:`ptebatch.generate` for every seed and every combination of ``folios``
        and ``knobs``.
    kernels : str or sequence of str
        Kernel releases (``"6.15"``, ``"6.16"``, ...).
    walks : str or sequence of {"scan", "unmap"}
        Without ``callers``: the scan (as the ``zap`` caller) and/or reclaim's
        unmap (as ``lazyfree``).  With ``callers``: only a check; every
        caller's walk must be one of ``walks`` (the default allows all).
    callers : None, str or sequence of str
        Caller presets (see :data:`ptebatch.callers.CALLERS` or ``ptebatch
        callers``), in the order given; each runs under its own walk.
    clamps : str or sequence of {"pmd", "folio"}
        Scan callers only: clamp ``max_nr`` at ``pmd_addr_end`` or not (folio
        size).  Unmap rows show ``"-"``.
    oob : str or sequence of {"none", "adjacent"}
        What a read past entry 511 sees.
    seeds : int or sequence of int
        Generator seeds (generated spaces only).
    folios : int or sequence of int
        Folios per generated space.
    by_seed : bool
        One row per seed instead of counts summed over the seeds.
    move_by : int
        mremap rows only: destination minus source address (see
        :func:`ptebatch.scan`).  A multiple of 2 MiB (the default 0 too) moves
        whole tables by their PMD entry: they give no batches.
    parallel : bool
        Walk on all threads (the results are the same either way).
    progress : callable, optional
        ``progress(task, done, total, note)`` before each step (see
        :mod:`ptebatch.progress`); a one-argument callable gets the step's description.
    executor : callable or dask.distributed.Client, optional
        Sharded spaces only: how the shards run (:func:`ptebatch.shards.map_shards`).
    **knobs
        Generator knobs (see :func:`ptebatch.generate`), ``arch`` and
        ``contpte`` included; a list sweeps them.

    Returns
    -------
    list of dict
        Tidy rows: ``space``, ``seeds``, the swept knobs, ``walk``, ``caller``,
        ``kernel``, ``clamp``, ``oob``, ``batches``, ``ptes_batched``,
        ``mean_batch`` (PTEs per batch), ``multi_batches`` and
        ``mean_multi_batch`` (batches of more than one PTE), ``stop_<reason>``
        counts, ``table_overruns``, ``vma_overruns``, ``find_<detector>``
        counts (batches that tripped each detector of
        :data:`ptebatch.reasons.FINDINGS`; ``find_table_overrun`` and
        ``find_vma_overrun`` equal the two overrun columns), ``seconds`` (walk
        time) and ``batch_size_hist`` (``{"n": batches of n PTEs}``).

    Raises
    ------
    ValueError
        Unknown walk, caller, kernel, clamp, architecture or knob, a caller
        whose walk is not in ``walks``, or knobs given with ``spaces``.
    """
    hook = as_hook(progress)
    pairs = _caller_pairs(walks, callers)
    kernels_l, clamps_l, oob_l = _check_settings(kernels, clamps, oob, knobs)
    jobs = _space_jobs(spaces, seeds, folios, knobs)
    settings = []
    for walk, caller in pairs:
        if walk == "scan":
            settings += [
                (walk, caller, k, c, o) for k in kernels_l for c in clamps_l for o in oob_l
            ]
        else:
            settings += [(walk, caller, k, "-", o) for k in kernels_l for o in oob_l]
    # steps: one compile (or cache load) per setting, then per space its load and its walks
    total = len(settings) + len(jobs) * (1 + len(settings))
    step = 0

    def say(note: str) -> None:
        nonlocal step
        hook("run", step, total, note)
        step += 1

    # compile the walks outside the timed calls
    tiny = thread_layout()
    for walk, caller, k, c, o in settings:
        say(f"compiling {caller} {k}")
        _walk(tiny, walk, caller, k, c, o, parallel, move_by)

    rows: dict[tuple, dict] = {}
    for j, (name, seed, setting, loader) in enumerate(jobs):
        say(
            f"space {j + 1}/{len(jobs)}: loading"
            if seed is None
            else f"space {j + 1}/{len(jobs)}: generating (seed {seed})"
        )
        space = loader()
        for walk, caller, k, c, o in settings:
            say(f"space {j + 1}/{len(jobs)}: {caller} {k} {c} {o}")
            t = time.perf_counter()
            r = _walk(space, walk, caller, k, c, o, parallel, move_by, executor)
            dt = time.perf_counter() - t
            # given spaces never merge (two files may share a name); generated ones merge over seeds
            ident = (
                j
                if seed is None
                else (tuple((kk, str(v)) for kk, v in setting.items()), seed if by_seed else None)
            )
            _accumulate(
                rows, (ident, walk, caller, k, c, o), name, seed, setting, _walk_row(r, walk), dt
            )
        del space
    hook("run", total, total, "done")
    return [_finish(row) for row in rows.values()]


def _caller_pairs(walks, callers) -> list[tuple[str, str]]:
    """(walk, caller) in run order: each walk's default caller, or the callers given."""
    walks_l = [str(w) for w in _as_list("walks", walks)]
    for w in walks_l:
        if w not in ("scan", "unmap"):
            raise ValueError(f"walks: must be scan or unmap, got {w!r}")
    if callers is None:
        # each walk as its default caller, scans first
        return [(w, DEFAULT[Walk(w)]) for w in ("scan", "unmap") if w in walks_l]
    pairs = []
    for name in _as_list("callers", callers):
        c = get_caller(name, "callers")
        key, walk = c.name, str(c.walk)
        if walk not in walks_l:
            raise ValueError(
                f"walks: with callers, every caller's walk must be in walks "
                f"({key!r} runs under {walk}, walks is {','.join(walks_l)}); "
                f"leave walks at its default"
            )
        if (walk, key) not in pairs:
            pairs.append((walk, key))
    return pairs


def _check_settings(kernels, clamps, oob, knobs) -> tuple[list, list, list]:
    """Kernels, clamps and oob modes as lists, each checked before any work."""
    kernels_l = [str(k) for k in _as_list("kernels", kernels)]
    for k in kernels_l:
        resolve_kernel(k)
    clamps_l = _as_list("clamps", clamps)
    for c in clamps_l:
        if c not in CLAMPS:
            raise ValueError(f"clamps: must be pmd or folio, got {c!r}")
    oob_l = _as_list("oob", oob)
    for o in oob_l:
        if o not in OOBS:
            raise ValueError(f"oob: must be none or adjacent, got {o!r}")
    for name in knobs:
        if name not in GENERATOR_KNOBS:
            raise ValueError(
                f"{name}: not a generator knob (known: folios, seeds, {', '.join(GENERATOR_KNOBS)})"
            )
    for a in _as_list("arch", knobs.get("arch", "x86_64")):
        get_arch(a)  # refuse an unknown one before any work
    return kernels_l, clamps_l, oob_l


def _space_jobs(spaces, seeds, folios, knobs) -> list[tuple]:
    """(name, seed, knob settings, loader) for every space to walk."""
    jobs = []
    if spaces is None:
        seeds_l = [int(s) for s in _as_list("seeds", seeds)]
        swept = {"folios": _as_list("folios", folios)}
        swept.update({k: _as_list(k, v) for k, v in knobs.items()})
        names = list(swept)
        for combo in itertools.product(*swept.values()):
            setting = dict(zip(names, combo))
            kw = {k: v for k, v in setting.items() if k != "folios"}
            for seed in seeds_l:
                jobs.append(
                    (
                        "generated",
                        seed,
                        setting,
                        lambda f=setting["folios"], s=seed, kw=kw: generate(f, seed=s, **kw),
                    )
                )
        return jobs
    if knobs:
        raise ValueError(
            f"{next(iter(knobs))}: generator knobs apply only when no spaces are given"
        )
    if isinstance(spaces, Mapping):
        items = list(spaces.items())
    else:
        items = []
        for sp in _as_list("spaces", spaces):
            items.append(
                (
                    os.path.basename(os.fspath(sp))
                    if not isinstance(sp, (AddressSpace, ShardedSpace))
                    else f"space{len(items)}",
                    sp,
                )
            )
    for name, sp in items:
        given = isinstance(sp, (AddressSpace, ShardedSpace))
        loader = (lambda sp=sp: sp) if given else (lambda sp=sp: load(sp))
        jobs.append((str(name), None, {}, loader))
    return jobs


def _accumulate(
    rows: dict, key: tuple, name: str, seed, setting: dict, cells: dict, dt: float
) -> None:
    """Add one walk's counts to its row (a new row, or the sum over seeds)."""
    walk, caller, k, c, o = key[1:]
    if key not in rows:
        row = {"space": name, "seeds": "" if seed is None else str(seed)}
        row.update(
            {
                kk: (str(v) if kk == "sizes" and not isinstance(v, str) else v)
                for kk, v in setting.items()
            }
        )
        row.update(
            {"walk": walk, "caller": caller, "kernel": k, "clamp": c, "oob": o, "seconds": 0.0}
        )
        row.update(cells)
        row["seconds"] = dt
        rows[key] = row
        return
    row = rows[key]
    for col in COUNT_COLUMNS:
        row[col] += cells[col]
    row["hist"] = _add_hist(row["hist"], cells["hist"])
    row["seconds"] += dt
    row["seeds"] += f",{seed}"


def _walk(space, walk, caller, kernel, clamp, oob, parallel, move_by=0, executor=None):
    if walk == "scan":
        return engine.scan(
            space,
            executor=executor,
            rows=False,
            caller=caller,
            kernel=kernel,
            clamp=clamp,
            oob=oob,
            move_by=move_by if get_caller(caller).takes_move_by else 0,
            parallel=parallel,
        )
    return engine.unmap(
        space,
        rows=False,
        caller=caller,
        kernel=kernel,
        oob=oob,
        parallel=parallel,
        executor=executor,
    )


def columns(rows: list[dict], *, hist: bool) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for c in r:
            if c not in cols and (hist or c != "batch_size_hist"):
                cols.append(c)
    return cols


def rows_to_csv(rows: list[dict]) -> str:
    """The rows as CSV text (no histogram column)."""
    buf = io.StringIO()
    w = csv.DictWriter(
        buf, fieldnames=columns(rows, hist=False), extrasaction="ignore", lineterminator="\n"
    )
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_rows(rows: list[dict], path) -> None:
    """Write rows atomically: CSV if ``path`` ends in ``.csv``, JSON otherwise.

    Parameters
    ----------
    rows : list of dict
        As returned by :func:`experiment`.
    path : str or os.PathLike
    """
    path = os.fspath(path)
    text = rows_to_csv(rows) if path.lower().endswith(".csv") else json.dumps(rows, indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


def read_rows(path) -> list[dict]:
    """Read rows written by :func:`write_rows` as JSON (or ``ptebatch run --json``).

    Rows saved before the ``caller``, ``find_<detector>`` and
    ``stop_dst_pmd_end`` columns existed are accepted as they are.

    Raises
    ------
    ValueError
        The file is not a JSON list of result rows with histograms.
    """
    path = os.fspath(path)
    with open(path) as fh:
        try:
            rows = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON written by 'ptebatch run' ({exc})") from None
    if (
        not isinstance(rows, list)
        or not rows
        or not all(isinstance(r, dict) and "batch_size_hist" in r and "walk" in r for r in rows)
    ):
        raise ValueError(
            f"{path}: expected the JSON list of rows that 'ptebatch run --json' prints"
        )
    for i, r in enumerate(rows):
        problem = _row_problem(r)
        if problem:
            raise ValueError(f"{path}: row {i}: {problem}")
    return rows


# The count columns of a row, besides stop_* and find_*: non-negative integers.
_COUNT_KEYS = ("batches", "multi_batches", "table_overruns", "vma_overruns")


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _row_problem(r: dict) -> str | None:
    """What breaks the rules of a saved row (None when nothing does)."""
    if not isinstance(r["walk"], str):
        return f"walk: expected a string, got {r['walk']!r}"
    if "batches" not in r:
        return "batches: missing (every row counts its batches)"
    for k, v in r.items():
        if (k in _COUNT_KEYS or k.startswith(("stop_", "find_"))) and not _is_count(v):
            return f"{k}: expected a count (an integer >= 0), got {v!r}"
    hist = r["batch_size_hist"]
    if not isinstance(hist, dict):
        return f"batch_size_hist: expected an object {{size: batches}}, got {type(hist).__name__}"
    for k, v in hist.items():
        if not (k.isascii() and k.isdigit() and 1 <= int(k) <= MAX_FOLIO_NR):
            return (
                f"batch_size_hist: sizes must be integers from 1 to {MAX_FOLIO_NR} (no batch "
                f"is longer than a folio), got {k!r}"
            )
        if not _is_count(v):
            return f"batch_size_hist: counts must be integers >= 0, got {v!r} for size {k}"
    return None
