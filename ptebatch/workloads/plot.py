"""Plots of experiment rows: batch-size histograms and stop reasons, side by side.

matplotlib is an optional dependency: ``pip install 'ptebatch[plot]'``.
"""

from __future__ import annotations

import os

import numpy as np

from .._io import atomic_write

__all__ = ["plot_rows", "require_matplotlib", "INSTALL_HINT"]

INSTALL_HINT = "plotting needs matplotlib: pip install 'ptebatch[plot]' (or pip install matplotlib)"
_FORMATS = (".png", ".svg", ".pdf")
_REASONS = (
    "folio_end",
    "pmd_end",
    "vma_end",
    "dst_pmd_end",
    "not_present",
    "pfn_gap",
    "bit_mismatch",
    "order0",
    "single",
)
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
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FORMATS:
        raise ValueError(f"output: must end in {', '.join(_FORMATS)}, got {path!r}")
    if not rows:
        raise ValueError("rows: nothing to plot")
    plt = require_matplotlib()
    labels = _labels(rows)
    fig, (ax_h, ax_s) = plt.subplots(
        1, 2, figsize=(13, 0.9 + max(4.0, 0.45 * len(rows))), gridspec_kw={"width_ratios": [1.2, 1]}
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    # Left: batch-size histogram, log-log (sizes 1..512, counts spanning decades).
    styles = ("-", "--", ":", "-.")
    for i, (r, label) in enumerate(zip(rows, labels)):
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
            marker=".",
            markersize=4,
            lw=1.2,
            ls=styles[(i // len(colors)) % len(styles)]
            if len(rows) > len(colors)
            else styles[i % 2],
            color=colors[i % len(colors)],
            label=label,
            alpha=0.85,
        )
    ax_h.set_xscale("log", base=2)
    ax_h.set_yscale("log")
    ax_h.set_xlabel("batch size (PTEs)")
    ax_h.set_ylabel("batches")
    ax_h.set_title("batch-size histogram")
    ax_h.grid(True, which="major", alpha=0.3)
    ax_h.legend(fontsize="small")

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
    fig.tight_layout()

    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format=suffix[1:], dpi=120))
    finally:
        plt.close(fig)
