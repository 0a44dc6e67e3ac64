"""Plots of experiment rows (batch-size histograms and stop reasons, side by side) and of
``ptebatch cost`` rows (batched/unbatched ratio against folio size).

matplotlib is an optional dependency: ``pip install 'ptebatch[plot]'``.
"""

from __future__ import annotations

import os

import numpy as np

from .._io import atomic_write
from ..results import SCAN_REASONS

__all__ = ["plot_cost", "plot_rows", "plot_suffix", "require_matplotlib", "INSTALL_HINT"]

INSTALL_HINT = "plotting needs matplotlib: pip install 'ptebatch[plot]' (or pip install matplotlib)"
_FORMATS = (".png", ".svg", ".pdf")
_REASONS = SCAN_REASONS
# finding columns noted beside a row's stop-reason bar (old rows have only table_overruns)
_NOTES = (
    ("table_overruns", "read past table"),
    ("find_vma_overrun", "read past VMA"),
    ("find_past_folio", "past folio"),
    ("find_spread", "spread"),
    ("find_uffd_wp", "mixed uffd-wp"),
)


def require_matplotlib():
    """Import matplotlib with a file-only backend.

    Raises
    ------
    ImportError
        matplotlib is not installed; the message says how to install it.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ImportError(INSTALL_HINT) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _labels(rows: list[dict]) -> list[str]:
    """Name each row by the columns that differ between rows.

    Rows written before callers existed have no ``caller`` column; where the
    caller varies it names the series (with the kernel) and the walk, which
    it implies, is left out.
    """
    skip = {
        "batch_size_hist",
        "seconds",
        "batches",
        "ptes_batched",
        "mean_batch",
        "multi_batches",
        "mean_multi_batch",
        "table_overruns",
        "vma_overruns",
    }
    keys: list[str] = []
    for r in rows:
        keys += [
            k for k in r if k not in keys and k not in skip and not k.startswith(("stop_", "find_"))
        ]
    if "caller" in keys and "walk" in keys:  # next to the walk, even when old rows came first
        keys.remove("caller")
        keys.insert(keys.index("walk") + 1, "caller")
    varying = [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]
    if "caller" in varying:
        if "walk" in varying:
            varying.remove("walk")
        if "kernel" not in varying:
            varying.insert(varying.index("caller") + 1, "kernel")
    if not varying:
        varying = ["caller" if "caller" in keys else "walk", "kernel"]
    out = []
    for r in rows:
        parts = []
        for k in varying:
            v = r.get(k)
            if k == "caller" and v is None:  # an old row: its walk says as much
                parts.append(str(r.get("walk", "")))
            elif k in ("walk", "caller", "kernel", "space"):
                parts.append(str(v))
            elif k == "clamp":
                parts.append("" if v == "-" else f"clamp={v}")
            else:
                parts.append(f"{k}={v}")
        out.append(" ".join(p for p in parts if p))
    return out


# Series styles: every series gets its own colour and its own (marker, line style) pair, so
# lines that lie on top of each other (settings that batch alike) still show, and the plot
# reads without colour too.  Markers are hollow so that stacked points stay visible.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = (
    "-",
    (0, (6, 2)),  # dashed
    (0, (1.5, 1.5)),  # dotted
    (0, (6, 2, 1.5, 2)),  # dash-dot
    (0, (6, 2, 1.5, 2, 1.5, 2)),  # dash-dot-dot
    (0, (12, 3)),  # long dash
)
# one colour family per group (caller), shaded per member (kernel)
_FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys", "YlOrBr", "PuRd")
# flat palette when the series do not group: tab10 then Dark2 (18 colours)
_FLAT = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#000000",
)


def _styles(labels: list[str], plt) -> list[dict]:
    """Line keywords (``color``, ``marker``, ``ls``, ``markersize``) per series.

    Series whose labels start with the same word (the first setting that
    varies, e.g. the caller) form a group: one colour family and one marker
    per group, a shade and a line style per member (e.g. the kernel).  So 4
    callers x 4 kernels give 16 colours and 16 distinct marker and line-style
    pairs, with caller and kernel readable from them; a group's markers shrink
    member by member, so equal counts show as concentric rings.  Otherwise each series
    takes the next colour of a flat palette and the next marker/line pair.
    """
    heads = [label.split(" ", 1)[0] for label in labels]
    groups = list(dict.fromkeys(heads))
    members: dict[str, list[int]] = {g: [] for g in groups}
    for i, h in enumerate(heads):
        members[h].append(i)
    size = max(len(m) for m in members.values())
    grouped = (
        1 < len(groups) <= len(_FAMILIES)
        and 1 < size <= len(_LINESTYLES)
        and len(groups) <= len(_MARKERS)
        and len(labels) > 4
    )
    out: list[dict] = [{} for _ in labels]
    if grouped:
        for g, idx in enumerate(members.values()):
            cmap = plt.get_cmap(_FAMILIES[g])
            for k, i in enumerate(idx):
                # dark to light, never so light that it fades into the background
                shade = 0.95 - 0.5 * k / max(size - 1, 1)
                out[i] = {
                    "color": cmap(shade),
                    "marker": _MARKERS[g],
                    "ls": _LINESTYLES[k],
                    # hollow and shrinking: equal points of one group show as concentric rings
                    "markersize": 4.5 + 2.0 * (size - 1 - k),
                }
        return out
    for i in range(len(labels)):
        out[i] = {
            "color": _FLAT[i % len(_FLAT)],
            "marker": _MARKERS[i % len(_MARKERS)],
            "ls": _LINESTYLES[(i // len(_MARKERS)) % len(_LINESTYLES)],
            "markersize": 6.0,
        }
    return out


def plot_suffix(path) -> str:
    """The image format of ``path`` (``.png``, ``.svg`` or ``.pdf``).

    Raises
    ------
    ValueError
        Any other suffix.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FORMATS:
        raise ValueError(f"output: must end in {', '.join(_FORMATS)}, got {path!r}")
    return suffix


def plot_cost(rows: list[dict], path, *, title: str | None = None) -> None:
    """Draw ``ptebatch cost`` rows: unbatched / batched per operation against folio size.

    One panel per operation, one line per caller and architecture (the colour
    family is the caller, the line style the architecture); folio size on a
    log2 axis, the ratio on a log2 axis.  A ratio that does not exist
    (nothing counted batched, e.g. mprotect's folio updates) is left out.

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`ptebatch.workloads.cost.cost`.
    path : str or os.PathLike
        Output file, ``.png``, ``.svg`` or ``.pdf``; written atomically.
    title : str, optional
        Figure title.

    Raises
    ------
    ValueError
        No rows, or an unsupported file suffix.
    ImportError
        matplotlib is missing (the message says how to install it).
    """
    from .cost import OPS

    suffix = plot_suffix(path)
    if not rows:
        raise ValueError("rows: nothing to plot")
    plt = require_matplotlib()
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(f"{r['caller']} {r['arch']}", []).append(r)
    labels = list(series)
    styles = _styles(labels, plt)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), sharex=True, layout="constrained")
    for ax, op in zip(axes.flat, OPS):
        drawn = False
        for label, style in zip(labels, styles):
            pts = sorted((r["folio_kb"], r["ratio"][op]) for r in series[label] if r["ratio"][op])
            if not pts:
                continue
            kb, ratio = zip(*pts)
            ax.plot(kb, ratio, markerfacecolor="none", lw=1.4, label=label, **style)
            drawn = True
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(op.replace("_", " "))
        ax.grid(True, which="major", alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not counted by these callers", ha="center", transform=ax.transAxes)
    sizes = sorted({r["folio_kb"] for r in rows})
    names_kb = [f"{kb // 1024}M" if kb >= 1024 else f"{kb}K" for kb in sizes]
    for ax in axes[-1]:
        ax.set_xticks(sizes, names_kb, fontsize="small")
        ax.set_xlabel("folio size")
    for ax in axes[:, 0]:
        ax.set_ylabel("unbatched / batched")
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="outside right center", fontsize="small", handlelength=3.5)
    fig.suptitle(title or "What batching saves: operations unbatched / batched")
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format=suffix[1:], dpi=110))
    finally:
        plt.close(fig)


def plot_rows(rows: list[dict], path, *, title: str | None = None) -> None:
    """Draw the rows' batch-size histograms and stop reasons to an image file.

    Parameters
    ----------
    rows : list of dict
        Rows from :func:`ptebatch.experiment` (each with ``batch_size_hist``
        and ``stop_<reason>`` counts; rows saved before the ``caller`` and
        ``find_<detector>`` columns existed plot too).
    path : str or os.PathLike
        Output file, ``.png``, ``.svg`` or ``.pdf``; written atomically.
    title : str, optional
        Figure title.

    Raises
    ------
    ValueError
        No rows, or an unsupported file suffix.
    ImportError
        matplotlib is missing (the message says how to install it).
    """
    suffix = plot_suffix(path)
    if not rows:
        raise ValueError("rows: nothing to plot")
    plt = require_matplotlib()
    labels = _labels(rows)
    styles = _styles(labels, plt)
    # the histogram's legend sits to its right, outside the data: widen the figure for it
    legend_w = 0.8 + 0.075 * max(len(label) for label in labels)
    fig, (ax_h, ax_s) = plt.subplots(
        1,
        2,
        figsize=(13 + legend_w, 1.4 + max(4.0, 0.45 * len(rows))),
        gridspec_kw={"width_ratios": [1.2 + legend_w / 7, 1]},
        layout="constrained",
    )

    # Left: batch-size histogram, log-log (sizes 1..512, counts spanning decades).
    for r, label, style in zip(rows, labels, styles):
        h = r["batch_size_hist"]
        if not h:
            continue
        top = max(int(k) for k in h)
        # dense, with gaps (NaN) where no batch had that size, so steps never bridge them
        counts = np.full(top + 1, np.nan)
        for k, c in h.items():
            counts[int(k)] = c if c else np.nan
        sizes = np.arange(1, top + 1)
        ax_h.plot(
            sizes,
            counts[1:],
            drawstyle="steps-mid",
            markerfacecolor="none",
            markeredgewidth=1.2,
            lw=1.4,
            label=label,
            alpha=0.9,
            **style,
        )
    ax_h.set_xscale("log", base=2)
    ax_h.set_yscale("log")
    ax_h.set_xlabel("batch size (PTEs)")
    ax_h.set_ylabel("batches")
    ax_h.set_title("batch-size histogram")
    ax_h.grid(True, which="major", alpha=0.3)
    ax_h.legend(
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        handlelength=3.5,
        frameon=False,
    )

    # Right: stop-reason breakdown, fraction of each setting's batches.
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    cmap = plt.get_cmap("tab10")
    for j, reason in enumerate(_REASONS):
        counts = np.array([r.get(f"stop_{reason}", 0) for r in rows], dtype=np.float64)
        if not counts.any():
            continue
        total = np.array([max(r["batches"], 1) for r in rows], dtype=np.float64)
        frac = counts / total
        ax_s.barh(y, frac, left=left, color=cmap(j), label=reason)
        left += frac
    for i, r in enumerate(rows):
        notes = [f"{r[col]:,} {what}" for col, what in _NOTES if r.get(col)]
        if notes:
            ax_s.text(1.01, i, "; ".join(notes), va="center", fontsize="small", color="crimson")
    ax_s.set_yticks(y, labels, fontsize="small")
    ax_s.invert_yaxis()
    ax_s.set_xlim(0, 1)
    ax_s.set_xlabel("fraction of batches")
    ax_s.set_title("why batches stopped")
    ax_s.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    if title:
        fig.suptitle(title)

    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format=suffix[1:], dpi=120))
    finally:
        plt.close(fig)
