"""How large folios are mapped in live processes: a thpmaps-compatible report (issue 14).

The kernel's own ``tools/mm/thpmaps`` (added by "tools/mm: add thpmaps script
to dump THP usage info", v6.9) reports, per VMA of one or more processes, a
cgroup or the whole system, how much anonymous and file memory is in
transparent huge pages of each size and how it is mapped.  This module gives
the same counters, with the same names and the same numbers, and reads
``/proc/PID/pagemap`` and ``/proc/kpageflags`` in large vectorised blocks.
With ``batching`` it also runs the caller presets of :mod:`ptebatch.callers`
over what it read (see :func:`thpmaps`).

The rules (our words; docs/model.md section 9 has the details)
-------------------------------------------------------------
Only VMAs with at least one of r/w/x and a non-zero smaps ``Rss`` are
scanned.  Of their present pages, those whose kpageflags has THP (any large
folio that is not hugetlb) are kept and cut into *ranges*: runs in which both
the virtual and the physical page number go up by one.

* Pages of a range before its first folio head are ``{anon,file}-thp-pte-partial``.
* When the page just after a range (by PFN) is a compound tail, the range's
  last folio is cut short: its pages are partial too.  (The anon/file side of
  those pages is taken from the page before that folio's head; when the head
  is the VMA's first THP page, from the VMA's last THP page, as the tool does.)
* Every other folio head of the range starts a whole folio running to the
  next head or the range's end; ``n`` pages give order ``floor(log2 n)``, and
  ``2**order`` pages are counted as ``-aligned-<size>kB`` when the folio's
  first virtual page number is a multiple of ``2**order``, else
  ``-unaligned-<size>kB``.  Orders 0 and 1 are counted nowhere.
* PMD-mapped THPs look like 512 aligned pages in pagemap: smaps'
  ``AnonHugePages`` (anon) and ``ShmemPmdMapped + FilePmdMapped`` (file) are
  subtracted from the PTE-mapped PMD-size counter (floored at 0) and reported
  as ``{anon,file}-thp-pmd-aligned-<PMD size>kB``.
* ``--cont SIZE``: aligned blocks of SIZE inside a range whose virtual and
  physical page numbers agree modulo SIZE, with no folio head after the
  block's first page, are ``{anon,file}-cont-pte-aligned-<size>kB`` (minus
  the PMD-mapped pages, floored at 0); ``-cont-pmd-aligned-`` is the smaps
  PMD-mapped figure.
* Percentages are of the VMA's (or the rollup's) ``Anonymous`` and
  ``Rss - Anonymous``.
* Processes that vanish (or cannot be read) during a cgroup or system-wide
  scan are skipped; with explicit pids they are an error.
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass, field

import numpy as np

from .. import reasons
from ..arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE
from ..progress import as_hook
from .procfs import (
    KPAGEFLAGS,
    KPF_ANON,
    KPF_BLOCK,
    KPF_BLOCK_SHIFT,
    KPF_COMPOUND_HEAD,
    KPF_COMPOUND_TAIL,
    KPF_NOPAGE,
    KPF_THP,
    PAGEMAP_BLOCK,
    PM_PFN_MASK,
    PM_PRESENT,
    ProcessExitedError,
    Vma,
    _open,
    _pread_into,
    _proc,
    _read_text,
    _stat,
    read_kpageflags,
    read_pagemap,
    read_smaps,
)

__all__ = [
    "thpmaps",
    "ThpReport",
    "ProcessReport",
    "VmaReport",
    "parse_cont",
    "counter_labels",
    "count_thp",
    "default_presets",
    "running_release",
    "DEFAULT_CALLERS",
]

PMD_ORDER = (PMD_SIZE // PAGE_SIZE).bit_length() - 1
MIN_ORDER = 2  # the tool's smallest reported size (16 kB); order-1 folios are in no counter
_ORDERS = 64  # order slots counted (a folio above PMD order is counted, never shown)
_POW2 = np.left_shift(np.int64(1), np.arange(_ORDERS - 1, dtype=np.int64))
_U0, _U1 = np.uint64(0), np.uint64(1)
_HEAD = np.uint64(1 << KPF_COMPOUND_HEAD)
_TAIL = np.uint64(1 << KPF_COMPOUND_TAIL)
_ANON = np.uint64(1 << KPF_ANON)
_THP = np.uint64(1 << KPF_THP)

# smaps fields the tool adds up with --inc-smaps (printed in smaps' order)
SMAPS_FIELDS = frozenset(
    (
        "Size",
        "Rss",
        "Pss",
        "Pss_Dirty",
        "Shared_Clean",
        "Shared_Dirty",
        "Private_Clean",
        "Private_Dirty",
        "Referenced",
        "Anonymous",
        "KSM",
        "LazyFree",
        "AnonHugePages",
        "ShmemPmdMapped",
        "FilePmdMapped",
        "Shared_Hugetlb",
        "Private_Hugetlb",
        "Swap",
        "SwapPss",
        "Locked",
    )
)
HEADER = "       PID             START              END PROT   OFFSET   DEV    INODE OBJECT"
LABEL_WIDTH = 32
DEFAULT_CALLERS = ("zap", "fork-private", "lazyfree", "mprotect")


def _kb(order: int) -> int:
    return (PAGE_SIZE << order) >> 10


def _pages_to_kb(pages):
    return (pages << PAGE_SHIFT) >> 10


# -- arguments -----------------------------------------------------------------

_SIZE_RE = re.compile(r"(\d+)([kKmMgG]?)")


def parse_cont(size) -> int:
    """The order of a ``--cont`` block size: ``"64K"``, ``"2M"``, ``"65536"``, or an int (bytes).

    Raises
    ------
    ValueError
        Not a size, fewer than 2 pages, not a power of two pages, or above PMD size.
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        nbytes = int(size)
    else:
        m = _SIZE_RE.fullmatch(str(size).strip())
        if m is None:
            raise ValueError(
                f"cont: {size!r} is not a size (an integer with an optional K, M or G, e.g. 64K)"
            )
        nbytes = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]
    pages = nbytes // PAGE_SIZE
    if nbytes % PAGE_SIZE or pages < 2:
        raise ValueError(f"cont: {size!r} must be at least 2 pages ({2 * PAGE_SIZE} bytes)")
    if pages & (pages - 1):
        raise ValueError(f"cont: {size!r} is {pages} pages, not a power of two pages")
    order = pages.bit_length() - 1
    if order > PMD_ORDER:
        raise ValueError(f"cont: {size!r} is above the PMD size ({_kb(PMD_ORDER)} kB)")
    return order


def counter_labels(cont_orders=()) -> list:
    """The counters in the tool's order, as ``(label, kind)``, kind ``"anon"`` or ``"file"``."""
    pmd_kb = _kb(PMD_ORDER)
    out = [
        (f"anon-thp-pmd-aligned-{pmd_kb}kB", "anon"),
        (f"file-thp-pmd-aligned-{pmd_kb}kB", "file"),
    ]
    for kind in ("anon", "file"):
        for how in ("aligned", "unaligned"):
            out += [
                (f"{kind}-thp-pte-{how}-{_kb(o)}kB", kind) for o in range(MIN_ORDER, PMD_ORDER + 1)
            ]
        out.append((f"{kind}-thp-pte-partial", kind))
    for c in _unique(cont_orders):
        kb = _kb(c)
        out += [
            (f"anon-cont-pmd-aligned-{kb}kB", "anon"),
            (f"file-cont-pmd-aligned-{kb}kB", "file"),
            (f"anon-cont-pte-aligned-{kb}kB", "anon"),
            (f"file-cont-pte-aligned-{kb}kB", "file"),
        ]
    return out


def _unique(orders) -> list:
    seen: list = []
    for o in orders:
        if o not in seen:
            seen.append(int(o))
    return seen


def _kind(label: str):
    return label.split("-", 1)[0] if label.startswith(("anon-", "file-")) else None


# -- the counters ----------------------------------------------------------------


@dataclass
class Counts:
    """Pages per VMA (``[kind, vma]``, kind 0 anon, 1 file), PMD-mapped memory not yet taken off."""

    aligned: np.ndarray  # [2, n_vmas, _ORDERS]
    unaligned: np.ndarray  # [2, n_vmas, _ORDERS]
    partial: np.ndarray  # [2, n_vmas]
    cont: dict  # order -> [2, n_vmas]


def _add(shape: tuple, idx: tuple, values) -> np.ndarray:
    """Sum ``values`` into a zero int64 array of ``shape`` at the index tuples ``idx``."""
    out = np.zeros(int(np.prod(shape)), dtype=np.int64)
    if len(idx[0]):
        flat = np.ravel_multi_index(tuple(np.asarray(i, dtype=np.intp) for i in idx), shape)
        np.add.at(out, flat, np.asarray(values, dtype=np.int64))
    return out.reshape(shape)


def count_thp(vfn, pfn, flags, next_flags, vma, n_vmas: int, cont_orders=()) -> Counts:
    """Count THP pages per VMA by the tool's rules (see the module notes).

    Parameters
    ----------
    vfn, pfn, flags : numpy.ndarray of uint64
        Virtual page number, PFN and kpageflags of each present page, in
        address order.
    next_flags : numpy.ndarray of uint64
        kpageflags of each page's PFN + 1 (a range whose last page is followed
        by a compound tail ends in a cut folio).
    vma : numpy.ndarray of intp
        Index of each page's VMA (non-decreasing).
    n_vmas : int
    cont_orders : sequence of int

    Returns
    -------
    Counts
    """
    keep = (np.asarray(flags, dtype=np.uint64) & _THP) != _U0
    vfn = np.asarray(vfn, dtype=np.uint64)[keep]
    pfn = np.asarray(pfn, dtype=np.uint64)[keep]
    fl = np.asarray(flags, dtype=np.uint64)[keep]
    nfl = np.asarray(next_flags, dtype=np.uint64)[keep]
    vma = np.asarray(vma, dtype=np.intp)[keep]
    kind = ((fl & _ANON) == _U0).astype(np.intp)  # 0 anon, 1 file
    head = (fl & _HEAD) != _U0
    n = vfn.size
    shape = (2, n_vmas, _ORDERS)
    cont_orders = _unique(cont_orders)
    if n == 0:
        z = np.zeros((2, n_vmas), dtype=np.int64)
        return Counts(
            np.zeros(shape, np.int64),
            np.zeros(shape, np.int64),
            z,
            {c: z.copy() for c in cont_orders},
        )

    # ranges: virtual and physical page numbers both go up by one, inside one VMA
    new = np.ones(n, dtype=bool)
    new[1:] = (vma[1:] != vma[:-1]) | (vfn[1:] != vfn[:-1] + _U1) | (pfn[1:] != pfn[:-1] + _U1)
    rs = np.flatnonzero(new)
    re_ = np.append(rs[1:], n)
    rid = np.cumsum(new) - 1
    rvma = vma[rs]
    vma_ids = np.arange(n_vmas)
    vma_lo = np.searchsorted(vma, vma_ids, side="left")
    vma_hi = np.searchsorted(vma, vma_ids, side="right")

    heads = np.flatnonzero(head)
    k = np.searchsorted(heads, rs)
    has = k < heads.size
    has[has] = heads[k[has]] < re_[has]
    first = np.where(has, heads[np.minimum(k, max(heads.size - 1, 0))] if heads.size else 0, re_)
    last = np.where(has, heads[np.searchsorted(heads, re_) - 1] if heads.size else 0, 0)

    # the range's last folio runs on past the range when the next PFN is a tail
    cut = np.zeros(rs.size, dtype=bool)
    if has.any():
        cut[has] = (nfl[re_[has] - 1] & _TAIL) != _U0
    # kind of the cut pages: the page before the cut folio's head, wrapping to the VMA's last
    before = last - 1
    wrap = before < vma_lo[rvma]
    before = np.where(wrap, vma_hi[rvma] - 1, before)
    partial = _add((2, n_vmas), (kind[rs], rvma), first - rs) + _add(
        (2, n_vmas), (kind[before[cut]], rvma[cut]), (re_ - last)[cut]
    )
    end = np.where(cut, last, re_)

    # whole folios: from each remaining head to the next head or the range's (cut) end
    hr = rid[heads]
    whole = ~(cut[hr] & (heads == last[hr]))
    nxt = np.append(heads[1:], n)
    size = (np.minimum(nxt, end[hr]) - heads)[whole]
    h = heads[whole]
    order = np.searchsorted(_POW2, size, side="right") - 1
    nr = _POW2[order]
    al = (vfn[h] & (nr.astype(np.uint64) - _U1)) == _U0
    aligned = _add(shape, (kind[h][al], vma[h][al], order[al]), nr[al])
    unaligned = _add(shape, (kind[h][~al], vma[h][~al], order[~al]), nr[~al])

    # --cont: aligned blocks inside a range with equal offsets, no head after the first page
    heads_before = np.concatenate(([0], np.cumsum(head)))
    cont = {}
    for c in cont_orders:
        m = np.uint64(1 << c)
        same = (pfn[rs] & (m - _U1)) == (vfn[rs] & (m - _U1))
        start = np.flatnonzero(((vfn & (m - _U1)) == _U0) & same[rid])
        start = start[start + (1 << c) <= re_[rid[start]]]
        inner = heads_before[start + (1 << c)] - heads_before[start + 1]
        start = start[inner == 0]
        cont[c] = _add((2, n_vmas), (kind[start], vma[start]), np.full(start.size, 1 << c))
    return Counts(aligned, unaligned, partial, cont)


def counter_table(counts: Counts, pmd_kb: np.ndarray, cont_orders) -> np.ndarray:
    """The tool's counters (kB) of every VMA: one row per VMA, columns as :func:`counter_labels`.

    ``pmd_kb[:, 0]`` / ``pmd_kb[:, 1]``: anon / file kB mapped by PMDs (smaps'
    ``AnonHugePages``; ``ShmemPmdMapped + FilePmdMapped``).
    """
    pmd_kb = np.asarray(pmd_kb, dtype=np.int64).reshape(-1, 2)
    pmd_pages = (pmd_kb << 10) >> PAGE_SHIFT
    cols = [pmd_kb[:, 0], pmd_kb[:, 1]]
    for k in (0, 1):
        aligned = counts.aligned[k, :, MIN_ORDER : PMD_ORDER + 1].copy()
        # PMD-mapped THPs show as aligned PMD-size folios in pagemap: taken off, floored at 0
        aligned[:, -1] = np.maximum(0, aligned[:, -1] - pmd_pages[:, k])
        cols += list(aligned.T)
        cols += list(counts.unaligned[k, :, MIN_ORDER : PMD_ORDER + 1].T)
        cols.append(counts.partial[k])
    kb_cols = [c if i < 2 else _pages_to_kb(c) for i, c in enumerate(cols)]
    for c in _unique(cont_orders):
        kb_cols += [pmd_kb[:, 0], pmd_kb[:, 1]]
        for k in (0, 1):
            kb_cols.append(_pages_to_kb(np.maximum(0, counts.cont[c][k] - pmd_pages[:, k])))
    return np.column_stack(kb_cols) if kb_cols[0].size else np.zeros((0, len(kb_cols)), np.int64)


def _vma_counters(counts: Counts, i: int, pmd_kb: tuple, cont_orders) -> dict:
    """The tool's counters (kB) of VMA ``i`` as a dict (see :func:`counter_table`)."""
    one = Counts(
        counts.aligned[:, i : i + 1],
        counts.unaligned[:, i : i + 1],
        counts.partial[:, i : i + 1],
        {c: v[:, i : i + 1] for c, v in counts.cont.items()},
    )
    row = counter_table(one, np.array([pmd_kb]), cont_orders)[0]
    return dict(zip([label for label, _ in counter_labels(cont_orders)], row.tolist()))


# -- reports ----------------------------------------------------------------------


@dataclass
class VmaReport:
    """One VMA of the report.

    Attributes
    ----------
    vma : Vma
    smaps : dict
        The additive smaps fields (kB), in smaps' order.
    scanned : bool
        Readable or writable or executable, with a non-zero ``Rss``.
    counters : dict
        Counter label to kB (empty when not scanned).
    anon_kb, file_kb : int
        smaps ``Anonymous`` and ``Rss - Anonymous`` (0 when not scanned): the
        bases of the percentages.
    batching : list of dict or None
        Per caller preset, what it does on this VMA (with ``batching``).
    """

    vma: Vma
    smaps: dict
    scanned: bool
    counters: dict = field(default_factory=dict)
    anon_kb: int = 0
    file_kb: int = 0
    batching: list | None = None

    def stats(self, inc_smaps: bool) -> dict:
        """What the tool prints for this VMA: label to ``(kind, kB)``."""
        out = {k: (None, v) for k, v in self.smaps.items()} if inc_smaps else {}
        out.update({k: (_kind(k), v) for k, v in self.counters.items()})
        return out

    def to_json(self, inc_smaps: bool = False) -> dict:
        v = self.vma
        out = {
            "start": f"{v.start:#x}",
            "end": f"{v.end:#x}",
            "perms": v.perms,
            "offset": v.offset,
            "dev": v.dev,
            "inode": v.inode,
            "path": v.path,
            "scanned": self.scanned,
            "anon_kb": self.anon_kb,
            "file_kb": self.file_kb,
            "counters": dict(self.counters),
        }
        if inc_smaps:
            out["smaps"] = dict(self.smaps)
        if self.batching is not None:
            out["batching"] = [dict(b) for b in self.batching]
        return out


@dataclass
class ProcessReport:
    """One process: its pid, name and VMAs (and, with batching, notes on the snapshot)."""

    pid: int
    comm: str
    vmas: list
    notes: list = field(default_factory=list)


@dataclass
class ThpReport:
    """Result of :func:`thpmaps`.

    Attributes
    ----------
    processes : list of ProcessReport
        In pid order (processes with no VMA, such as kernel threads, are left out).
    skipped : list of (int, str)
        Processes of a cgroup or system-wide scan that vanished or could not be read.
    cont : list of int
        The ``--cont`` orders.
    scope : str
        ``"pid"``, ``"cgroup"`` or ``"system"``.
    presets : list of (str, str)
        ``(caller, kernel)`` of the batching figures (empty without batching).
    seconds : float
    """

    processes: list
    skipped: list
    cont: list
    scope: str
    presets: list = field(default_factory=list)
    seconds: float = 0.0

    def rollup(self, inc_smaps: bool = False) -> tuple:
        """Sum over every VMA: ``(stats, anon_kb, file_kb)``, as :meth:`VmaReport.stats`."""
        total: dict = {}
        anon = file = 0
        for p in self.processes:
            for v in p.vmas:
                for k, (kind, val) in v.stats(inc_smaps).items():
                    total[k] = (kind, total[k][1] + val) if k in total else (kind, val)
                anon += v.anon_kb
                file += v.file_kb
        return total, anon, file

    def batching_rollup(self) -> list | None:
        """Batching figures summed over every VMA, per preset (None without batching)."""
        if not self.presets:
            return None
        rows = [v.batching for p in self.processes for v in p.vmas if v.batching]
        return [_sum_batching([r[i] for r in rows], c, k) for i, (c, k) in enumerate(self.presets)]

    def format(
        self, *, rollup: bool = False, inc_empty: bool = False, inc_smaps: bool = False
    ) -> str:
        """The report as the tool prints it (plus the batching lines, when run with batching)."""
        lines: list = []
        if rollup:
            stats, anon, file = self.rollup(inc_smaps)
            lines += format_stats(stats, anon, file, inc_empty)
            lines += _batching_lines(self.batching_rollup(), inc_empty)
            return "\n".join(lines)
        lines.append(HEADER)
        for p in self.processes:
            for v in p.vmas:
                lines.append(format_vma(p.pid, v.vma))
                lines += format_stats(v.stats(inc_smaps), v.anon_kb, v.file_kb, inc_empty)
                if v.scanned:
                    lines += _batching_lines(v.batching, inc_empty)
        return "\n".join(lines)

    def to_json(self, *, rollup: bool = False, inc_smaps: bool = False) -> dict:
        """JSON-ready: the rollup; every VMA unless ``rollup`` (then one entry per process)."""
        stats, anon, file = self.rollup(inc_smaps)
        out = {
            "scope": self.scope,
            "cont": [f"{_kb(c)}kB" for c in self.cont],
            "seconds": round(self.seconds, 3),
            "rollup": {
                "anon_kb": anon,
                "file_kb": file,
                "counters": {k: v for k, (kind, v) in stats.items() if kind is not None},
            },
            "processes": [],
            "skipped": [{"pid": pid, "reason": why} for pid, why in self.skipped],
        }
        if inc_smaps:
            out["rollup"]["smaps"] = {k: v for k, (kind, v) in stats.items() if kind is None}
        if self.presets:
            out["batching_presets"] = [{"caller": c, "kernel": k} for c, k in self.presets]
            out["rollup"]["batching"] = self.batching_rollup()
        for p in self.processes:
            entry = {"pid": p.pid, "comm": p.comm, "vmas": len(p.vmas)}
            if not rollup:
                entry["vmas"] = [v.to_json(inc_smaps) for v in p.vmas]
            if p.notes:
                entry["notes"] = list(p.notes)
            out["processes"].append(entry)
        return out


def format_vma(pid: int, v: Vma) -> str:
    """The VMA line: pid, range, protection, offset, device, inode and path."""
    major, _, minor = v.dev.partition(":")
    prot = v.perms[:3] + ("p" if v.perms[3:4] == "p" else "s")
    return (
        f"{pid:010d}: {v.start:016x}-{v.end:016x} {prot} {v.offset:08x} "
        f"{int(major, 16):02x}:{int(minor or '0', 16):02x} {v.inode:08d} {v.path}"
    )


def format_stats(stats: dict, anon_kb: int, file_kb: int, inc_empty: bool) -> list:
    """One line per counter: ``label:`` padded, kB, and the percentage of its kind's total."""
    lines = []
    for label, (kind, value) in stats.items():
        if not (value or inc_empty):
            continue
        base = anon_kb if kind == "anon" else file_kb if kind == "file" else 0
        percent = f" ({value / base:3.0%})" if base > 0 else ""
        pad = " " * max(0, LABEL_WIDTH - len(label) - 1)
        lines.append(f"{label}:{pad}{value:8} kB{percent}")
    return lines


# -- batching --------------------------------------------------------------------


def _findings():
    return reasons.FINDINGS


def running_release() -> str:
    """The running kernel's release as ``major.minor.patch`` (``6.18.44-fc`` gives ``6.18.44``)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", platform.release())
    if m is None:
        raise ValueError(f"kernel: cannot read a release from {platform.release()!r}")
    return ".".join(g for g in m.groups() if g is not None)


def newest_release() -> str:
    """The newest release any caller preset or generation models (a caller row's first release)."""
    from ..callers import CALLERS
    from ..releases import parse_version

    best = max(parse_version(r.since) for c in CALLERS.values() for r in c.rules)
    return ".".join(str(x) for x in (best if best[2] else best[:2]))


def default_presets(callers=None, kernels=None) -> list:
    """``(caller, kernel)`` pairs: by default zap, fork-private, lazyfree and mprotect on the
    running kernel's release and on the newest modelled release.

    Raises
    ------
    ValueError
        Unknown caller, or a release that is not modelled.
    """
    from ..callers import get_caller
    from ..releases import resolve_kernel

    callers = list(callers) if callers else list(DEFAULT_CALLERS)
    if not kernels:
        kernels = [newest_release()]
        try:
            resolve_kernel(running_release())
            kernels.insert(0, running_release())
        except ValueError:
            pass  # older than the modelled releases: the newest only
    out = []
    for k in kernels:
        name = resolve_kernel(k).name
        for c in callers:
            pair = (get_caller(c, "caller").name, name)
            if pair not in out:
                out.append(pair)
    return out


def _batching_for(cap_space, piece_start, piece_to_vma, n_vmas, presets) -> list:
    """Per VMA, per preset: batches, PTEs, PTEs batched and taken one by one, overruns, findings."""
    from .. import engine
    from ..callers import Walk, get_caller

    per_vma = [[] for _ in range(n_vmas)]
    for caller, kernel in presets:
        walk = engine.scan if get_caller(caller).walk == Walk.SCAN else engine.unmap
        if cap_space.n_tables:
            r = walk(cap_space, caller=caller, kernel=kernel, rows=True)
            va, nr, fnd = r.va, r.nr.astype(np.int64), r.findings
            where = piece_to_vma[np.searchsorted(piece_start, va, side="right") - 1]
        else:
            va = nr = fnd = where = np.zeros(0, dtype=np.int64)

        def per(mask, weights=None, where=where):
            w = None if weights is None else weights[mask]
            return np.bincount(where[mask], weights=w, minlength=n_vmas).astype(np.int64)

        ones = np.ones(nr.size, dtype=bool)
        batches, ptes = per(ones), per(ones, nr)
        multi = nr > 1
        multi_b, multi_p = per(multi), per(multi, nr)
        single = per(nr == 1)
        found = {name: per((fnd & bit) != 0) for name, bit in _findings()}
        for i in range(n_vmas):
            per_vma[i].append(
                _batching_entry(
                    caller,
                    kernel,
                    int(batches[i]),
                    int(ptes[i]),
                    int(multi_b[i]),
                    int(multi_p[i]),
                    int(single[i]),
                    {k: int(v[i]) for k, v in found.items()},
                )
            )
    return per_vma


def _batching_entry(caller, kernel, batches, ptes, multi_b, multi_p, single, findings) -> dict:
    return {
        "caller": caller,
        "kernel": kernel,
        "batches": batches,
        "ptes": ptes,
        "ptes_per_batch": round(ptes / batches, 4) if batches else 0.0,
        "multi_batches": multi_b,
        "ptes_batched": multi_p,
        "ptes_single": single,
        "table_overruns": findings["table_overrun"],
        "vma_overruns": findings["vma_overrun"],
        "findings": findings,
    }


def _sum_batching(rows: list, caller: str, kernel: str) -> dict:
    keys = ("batches", "ptes", "multi_batches", "ptes_batched", "ptes_single")
    tot = {k: sum(r[k] for r in rows) for k in keys}
    names = [name for name, _ in _findings()]
    found = {n: sum(r["findings"][n] for r in rows) for n in names}
    return _batching_entry(
        caller,
        kernel,
        tot["batches"],
        tot["ptes"],
        tot["multi_batches"],
        tot["ptes_batched"],
        tot["ptes_single"],
        found,
    )


def _batching_lines(entries, inc_empty: bool) -> list:
    if not entries:
        return []
    lines = []
    for b in entries:
        if not (b["batches"] or inc_empty):
            continue
        found = ", ".join(f"{k} {v}" for k, v in b["findings"].items() if v) or "none"
        label = f"batching-{b['caller']}-{b['kernel']}"
        pad = " " * max(0, LABEL_WIDTH - len(label) - 1)
        lines.append(
            f"{label}:{pad}{b['batches']:8} batches, {b['ptes_per_batch']:.2f} PTEs/batch, "
            f"{b['ptes_batched']} PTEs batched, {b['ptes_single']} one by one, "
            f"{b['table_overruns']} table / {b['vma_overruns']} VMA overruns, findings: {found}"
        )
    return lines


# -- reading a process --------------------------------------------------------------


def _flags_at(blocks: np.ndarray, kflags: np.ndarray, pfns: np.ndarray) -> np.ndarray:
    """kpageflags of ``pfns`` from the blocks read (KPF_NOPAGE for a PFN outside them)."""
    b = pfns >> np.uint64(KPF_BLOCK_SHIFT)
    bi = np.searchsorted(blocks, b)
    ok = bi < blocks.size
    ok[ok] = blocks[bi[ok]] == b[ok]
    out = np.full(pfns.size, np.uint64(1 << KPF_NOPAGE), dtype=np.uint64)
    col = (pfns & np.uint64(KPF_BLOCK - 1)).astype(np.intp)
    out[ok] = kflags[bi[ok], col[ok]]
    return out


MERGE_GAP = 64  # PFN runs closer than this are read in one pread (64 extra entries = 512 B)
READ_MAX = 1 << 18  # entries per pread (2 MiB)


def read_flags(kfd: int, pfn: np.ndarray) -> tuple:
    """kpageflags of every page and of the PFN after it, one ``pread`` per stretch of PFNs.

    Pages whose PFNs go up by one in address order form runs (a THP is one run);
    each run, with the PFN after it, is a stretch of PFNs to read.  The stretches
    are sorted and merged where they overlap or nearly touch, so a PFN mapped
    many times (the zero page) is read once, and each page's flags are found by
    its offset in the merged stretch: no per-page search.

    Parameters
    ----------
    kfd : int
        ``os.open("/proc/kpageflags", os.O_RDONLY)``.
    pfn : numpy.ndarray of uint64

    Returns
    -------
    flags, flags_next : numpy.ndarray of uint64
        kpageflags of ``pfn`` and of ``pfn + 1`` (``KPF_NOPAGE`` past the end of memory).
    """
    n = pfn.size
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    new = np.ones(n, dtype=bool)
    new[1:] = pfn[1:] != pfn[:-1] + _U1
    rs = np.flatnonzero(new)
    lo = pfn[rs]
    hi = np.append(pfn[rs[1:] - 1], pfn[-1]) + _U1  # the PFN after the run, inclusive
    order = np.argsort(lo, kind="stable")
    slo, shi = lo[order], hi[order]
    # merge sorted stretches that overlap or lie within MERGE_GAP of the furthest end so far
    reach = np.maximum.accumulate(shi)
    start_ext = np.ones(slo.size, dtype=bool)
    start_ext[1:] = slo[1:] > reach[:-1] + np.uint64(MERGE_GAP)
    ext = np.cumsum(start_ext) - 1
    e_lo = slo[start_ext]
    e_hi = np.maximum.reduceat(shi, np.flatnonzero(start_ext))
    e_len = (e_hi - e_lo + _U1).astype(np.int64)
    e_off = np.concatenate(([0], np.cumsum(e_len)[:-1]))
    buf = np.full(int(e_len.sum()), np.uint64(1 << KPF_NOPAGE), dtype=np.uint64)
    for a, off, ln in zip(e_lo.tolist(), e_off.tolist(), e_len.tolist()):
        for k in range(0, ln, READ_MAX):
            m = min(READ_MAX, ln - k)
            _pread_into(kfd, buf[off + k : off + k + m], (a + k) * 8)
    # each run's offset in buf, then each page's
    run_ext = np.empty(rs.size, dtype=np.int64)
    run_ext[order] = ext
    base = e_off[run_ext] - e_lo[run_ext].astype(np.int64)
    pos = np.repeat(base, np.diff(np.append(rs, n))) + pfn.astype(np.int64)
    return buf[pos], buf[pos + 1]


def _read_entries(pid, pfd, vmas, report) -> tuple:
    """Present pages of ``vmas``: virtual page numbers, raw pagemap entries, VMA index."""
    vfn_parts, pm_parts, of_parts = [], [], []
    buf = np.empty(PAGEMAP_BLOCK, dtype=np.uint64)
    total = sum(v.end - v.start for v in vmas)
    done = 0
    for k, v in enumerate(vmas):
        for a in range(v.start, v.end, PAGEMAP_BLOCK * PAGE_SIZE):
            b = min(v.end, a + PAGEMAP_BLOCK * PAGE_SIZE)
            e = read_pagemap(pfd, a, b, out=buf[: (b - a) >> PAGE_SHIFT])
            keep = np.flatnonzero(e & PM_PRESENT)
            if keep.size:
                vfn_parts.append(np.uint64(a >> PAGE_SHIFT) + keep.astype(np.uint64))
                pm_parts.append(e[keep].copy())
                of_parts.append(np.full(keep.size, k, dtype=np.intp))
            done += b - a
            report(done, total)
    if not vfn_parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.intp)
    return np.concatenate(vfn_parts), np.concatenate(pm_parts), np.concatenate(of_parts)


def _scan_process(pid: int, kfd: int, cont, presets, report) -> ProcessReport:
    t0 = time.perf_counter()
    st = _stat(pid)
    if st is None:
        raise ProcessExitedError(f"pid: no process {pid}")
    try:
        pfd = _open(_proc(pid, "pagemap"), "pagemap")
    except ProcessLookupError:
        if _stat(pid) is None:
            raise ProcessExitedError(f"pid: process {pid} exited") from None
        return ProcessReport(pid, "", [])  # a kernel thread: no user address space
    try:
        comm = _read_text(pid, "comm").strip()
        smaps = read_smaps(pid)
        scanned = [
            i for i, (v, f) in enumerate(smaps) if v.perms[:3] != "---" and f.get("Rss", 0) > 0
        ]
        vmas = [smaps[i][0] for i in scanned]
        vfn, pm, of = _read_entries(pid, pfd, vmas, report)
    finally:
        os.close(pfd)
    pfn = pm & PM_PFN_MASK
    if np.any(pfn == _U0):
        raise PermissionError(
            f"pagemap: present pages of process {pid} read PFN 0: the kernel hides PFNs "
            f"from readers without CAP_SYS_ADMIN; run as root"
        )
    if presets:
        # whole aligned blocks: the capture finds folio boundaries beyond the mapped pages
        edge = pfn[(pfn & np.uint64(KPF_BLOCK - 1)) == np.uint64(KPF_BLOCK - 1)] + _U1
        blocks, kflags = read_kpageflags(kfd, np.concatenate((pfn, edge)))
        flags = _flags_at(blocks, kflags, pfn)
        next_flags = _flags_at(blocks, kflags, pfn + _U1)
    else:
        flags, next_flags = read_flags(kfd, pfn)
    counts = count_thp(vfn, pfn, flags, next_flags, of, len(vmas), cont)
    pmd_kb = np.array(
        [
            (f.get("AnonHugePages", 0), f.get("ShmemPmdMapped", 0) + f.get("FilePmdMapped", 0))
            for f in (smaps[i][1] for i in scanned)
        ],
        dtype=np.int64,
    )
    rows = counter_table(counts, pmd_kb, cont).tolist()
    labels = [label for label, _ in counter_labels(cont)]
    reports = []
    pos = {i: k for k, i in enumerate(scanned)}
    for i, (v, f) in enumerate(smaps):
        smaps_fields = {k: val for k, val in f.items() if k in SMAPS_FIELDS}
        if i not in pos:
            reports.append(VmaReport(v, smaps_fields, False))
            continue
        anon = f.get("Anonymous", 0)
        counters = dict(zip(labels, rows[pos[i]]))
        reports.append(VmaReport(v, smaps_fields, True, counters, anon, f.get("Rss", 0) - anon))
    proc = ProcessReport(pid, comm, reports)
    if presets:
        _attach_batching(proc, st[1], vmas, scanned, vfn, pm, of, blocks, kflags, presets, t0)
    return proc


def _attach_batching(proc, start_time, vmas, scanned, vfn, pm, of, blocks, kflags, presets, t0):
    """Build the process's AddressSpace from what was read and run every preset over it."""
    from .capture import _select, build_capture

    pieces, skipped = _select(vmas, None, False, None)
    keep_vma = np.zeros(len(vmas), dtype=bool)
    index = {id(v): k for k, v in enumerate(vmas)}
    piece_vma = np.array([index[id(v)] for v, _, _ in pieces], dtype=np.intp)
    keep_vma[piece_vma] = True
    piece_of_vma = np.full(len(vmas), -1, dtype=np.intp)
    piece_of_vma[piece_vma] = np.arange(piece_vma.size)
    sel = keep_vma[of] if of.size else np.zeros(0, dtype=bool)
    read = (
        vfn[sel] << np.uint64(PAGE_SHIFT),
        pm[sel],
        piece_of_vma[of[sel]],
        blocks,
        kflags,
    )
    total = sum(b - a for _, a, b in pieces)
    if pieces:
        cap = build_capture(
            proc.pid, proc.comm, start_time, pieces, skipped, total, read, "skip", t0
        )
        proc.notes = list(cap.problems) + list(cap.notes)
        space = cap.space
        starts = np.array([a for _, a, _ in pieces], dtype=np.uint64)
        per_piece = _batching_for(space, starts, np.arange(len(pieces)), len(pieces), presets)
    else:
        per_piece = []
    empty = _batching_for_empty(presets)
    scanned_reports = [r for r in proc.vmas if r.scanned]
    for k, r in enumerate(scanned_reports):
        p = piece_of_vma[k]
        r.batching = per_piece[p] if p >= 0 else [dict(e) for e in empty]
    for v, why in skipped:
        proc.notes.append(f"batching skips {v.describe()}: {why}")


def _batching_for_empty(presets) -> list:
    names = [name for name, _ in _findings()]
    return [_batching_entry(c, k, 0, 0, 0, 0, 0, dict.fromkeys(names, 0)) for c, k in presets]


# -- which processes ------------------------------------------------------------------


def cgroup_pids(path: str) -> list:
    """Pids of a cgroup (v1 or v2) and of every cgroup below it.

    Raises
    ------
    ValueError
        ``path`` is not a cgroup directory (no ``cgroup.procs``).
    """
    if not os.path.isfile(os.path.join(path, "cgroup.procs")):
        raise ValueError(
            f"cgroup: {path!r} is not a cgroup directory (no cgroup.procs in it); give a "
            f"path under /sys/fs/cgroup"
        )
    pids: set = set()
    for folder, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(folder, "cgroup.procs")) as fh:
                pids.update(int(x) for x in fh.read().split())
        except FileNotFoundError:
            continue  # removed while we walked
    return sorted(pids)


def _all_pids() -> list:
    return sorted(int(d) for d in os.listdir("/proc") if d.isdigit())


def thpmaps(pids=None, *, cgroup=None, cont=(), batching=None, progress=None) -> ThpReport:
    """How transparent huge pages are mapped, per VMA, with the kernel tool's counters.

    Parameters
    ----------
    pids : int or sequence of int, optional
        The processes to scan; any that cannot be read is an error.
    cgroup : str, optional
        A cgroup directory (v1 or v2): every process in it and below it.
        Processes that vanish or cannot be read are skipped.
    cont : sequence of str or int
        ``--cont`` block sizes, such as ``"64K"`` or ``65536`` (bytes): a
        power-of-two number of pages from 2 pages to the PMD size.
    batching : bool or sequence of (str, str), optional
        ``True``: run :func:`default_presets`; a sequence of ``(caller,
        kernel)`` runs those.  Each VMA then gets, per preset, its batches,
        PTEs per batch, PTEs batched and taken one by one, table and VMA
        overruns and detector findings (PMD-mapped THPs are left out: the
        walkers take them by their PMD).
    progress : callable, optional
        ``progress(task, done, total, note)`` (see :mod:`ptebatch.progress`).

    With neither ``pids`` nor ``cgroup`` the whole system is scanned, skipping
    processes that vanish or cannot be read.

    Returns
    -------
    ThpReport

    Raises
    ------
    ProcessExitedError, PermissionError
        A process named in ``pids`` is gone or cannot be read.
    CaptureError
        /proc/kpageflags is missing.
    ValueError
        Both ``pids`` and ``cgroup``, a bad ``cont`` size, a bad cgroup path,
        an unknown caller or release.
    """
    t0 = time.perf_counter()
    if pids is not None and cgroup is not None:
        raise ValueError("pids: give pids or a cgroup, not both")
    orders = _unique(parse_cont(c) for c in cont)
    presets = []
    if batching is True:
        presets = default_presets()
    elif batching:
        presets = _check_presets(batching)
    if pids is not None:
        pids = [pids] if isinstance(pids, (int, np.integer)) else list(pids)
        for p in pids:
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p <= 0:
                raise ValueError(f"pid: must be a positive integer, got {p!r}")
        todo, strict, scope = sorted({int(p) for p in pids}), True, "pid"
    elif cgroup is not None:
        todo, strict, scope = cgroup_pids(str(cgroup)), False, "cgroup"
    else:
        todo, strict, scope = _all_pids(), False, "system"
    hook = as_hook(progress)
    kfd = _open(KPAGEFLAGS, "kpageflags")
    processes, skipped = [], []
    try:
        for n, pid in enumerate(todo):
            hook("thpmaps", n, len(todo), f"pid {pid}")

            def report(done, total, pid=pid):
                hook("thpmaps: pagemap", done >> 20, total >> 20, f"pid {pid}, MiB")

            try:
                p = _scan_process(pid, kfd, orders, presets, report)
            except (ProcessExitedError, PermissionError, FileNotFoundError) as exc:
                if strict:
                    raise
                skipped.append((pid, str(exc).splitlines()[0]))
                continue
            if p.vmas:
                processes.append(p)
        hook("thpmaps", len(todo), len(todo), "")
    finally:
        os.close(kfd)
    return ThpReport(processes, skipped, orders, scope, presets, time.perf_counter() - t0)


def _check_presets(pairs) -> list:
    """Check ``(caller, kernel)`` pairs: the caller's canonical name and the release's name."""
    from ..callers import get_caller
    from ..releases import resolve_kernel

    out = []
    for c, k in pairs:
        pair = (get_caller(c, "caller").name, resolve_kernel(k).name)
        if pair not in out:
            out.append(pair)
    return out
