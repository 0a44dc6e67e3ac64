"""Capture a live process's page tables from /proc into an :class:`AddressSpace`.

What is read
------------
``/proc/PID/smaps``
    The VMAs (the same header lines as ``/proc/PID/maps``) plus, per VMA,
    ``VmFlags`` (to recognise hugetlb, PFN-map and I/O areas) and
    ``AnonHugePages``/``ShmemPmdMapped``/``FilePmdMapped`` (bytes mapped by
    PMDs, to confirm which 2 MiB runs are PMD-mapped THPs).
``/proc/PID/pagemap``
    One u64 per page, read in blocks of 64 Ki entries: present (63), swapped
    (62), uffd-wp (57), exclusively mapped (56), soft-dirty (55), PFN (0-54).
``/proc/kpageflags``
    One u64 per PFN, read only for the 1024-page aligned blocks that hold a
    mapped PFN (sorted, coalesced, one ``pread`` per run): compound head (15)
    and tail (16) give folio boundaries, THP (22), anon (12), swapbacked (14).

How each PTE is encoded (x86-64)
--------------------------------
* present page: PFN from pagemap; user bit; soft-dirty from pagemap bit 55;
  uffd-wp from bit 57; NX when the VMA is not executable.
* write: pagemap does not expose it.  Filled as the kernel most likely has it:
  set when the VMA is writable and either shared, or the page is anonymous
  (kpageflags ANON) and exclusively mapped (pagemap bit 56).  A private page
  not yet written after fork, or a clean page of a shared file mapping, may
  be read-only in the real table.
* accessed (young) and dirty: not exposed; both cleared, as MADV_FREE and
  reclaim's aging leave them.  Generation 1/1b batching ignores write and
  accessed, and zap and lazyfree unmap ignore dirty, so these guesses only
  matter for callers that respect them (7.0 unmap: write).
* swapped, guard-region or not-present pages: a zero (none) PTE.

Folios: a head page followed by its tail pages; the run must be a power of
two and the head aligned to it, else the pages are reported as inconsistent
(the snapshot is then partial) rather than turned into an invented folio.
PFNs with neither flag are order-0 folios (not listed).

PMD-mapped THPs (and the huge zero folio) show in pagemap as 512 present
pages.  Every table in the model is a PTE table, so by default they are
represented as what reclaim sees after ``split_huge_pmd``: a full table of 512
PTEs mapping one 512-page folio in order (``pmd="pte"``); ``pmd="skip"``
leaves those entries none instead.  Either way they are listed in the notes.

Skipped VMAs (listed in the notes, not in the snapshot): hugetlb (``ht``,
mapped by PMD/PUD entries, never batched by ``folio_pte_batch``), PFN-map and
I/O areas (``pf``/``io``: no struct page, never batched) and ``[vsyscall]``
(not in the process's page tables).

The capture is not atomic: pages can change between reads.  A process that
exits, a VMA that vanishes or changes, or kpageflags that contradict
themselves make the capture partial: :func:`capture` raises
:class:`PartialCaptureError` unless ``allow_partial=True``, and the
:class:`Capture` from :func:`capture_detailed` has ``partial`` and ``problems``.
"""

from __future__ import annotations

import bisect
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, X86_64
from ..space import FOLIO_ANON, FOLIO_SWAPBACKED, VMA_UFFD_WP, AddressSpace
from .procfs import (
    KPAGEFLAGS,
    KPF_ANON,
    KPF_BLOCK,
    KPF_BLOCK_SHIFT,
    KPF_COMPOUND_HEAD,
    KPF_COMPOUND_TAIL,
    KPF_NOPAGE,
    KPF_SWAPBACKED,
    PAGEMAP_BLOCK,
    PM_EXCLUSIVE,
    PM_PFN_MASK,
    PM_PRESENT,
    PM_SOFT_DIRTY,
    PM_SWAP,
    PM_UFFD_WP,
    CaptureError,
    ProcessExitedError,
    Vma,
    _check_alive,
    _open,
    _proc,
    _read_text,
    _stat,
    read_kpageflags,
    read_pagemap,
    read_vmas,
)

# Public names that moved to procfs.py and are not used here: still importable from this module.
from .procfs import KPF_HUGE as KPF_HUGE
from .procfs import KPF_READ_MAX as KPF_READ_MAX
from .procfs import KPF_THP as KPF_THP
from .procfs import KPF_ZERO_PAGE as KPF_ZERO_PAGE
from .procfs import PM_FILE as PM_FILE
from .procfs import PM_GUARD as PM_GUARD

__all__ = [
    "capture",
    "capture_detailed",
    "Capture",
    "Vma",
    "CaptureError",
    "PartialCaptureError",
    "ProcessExitedError",
    "read_vmas",
    "read_pagemap",
    "read_kpageflags",
]

DEFAULT_MAX_BYTES = 64 << 30  # virtual bytes scanned before refusing (pagemap has 8 B per page)

_U0 = np.uint64(0)
_U1 = np.uint64(1)


class PartialCaptureError(CaptureError):
    """Something changed or contradicted itself during the capture.

    ``capture`` holds the partial :class:`Capture`, ``problems`` the reasons.
    """

    def __init__(self, message: str, capture: Capture):
        super().__init__(message)
        self.capture = capture
        self.problems = list(capture.problems)


@dataclass
class Capture:
    """Result of :func:`capture_detailed`.

    Attributes
    ----------
    space : AddressSpace
        The snapshot; ``scan`` and ``unmap`` accept it.
    pid : int
    comm : str
        The process's name (``/proc/PID/comm``).
    vmas : list of Vma
        The captured VMAs (clipped to the requested ranges), in address order.
    skipped : list of (Vma, str)
        VMAs left out and why.
    pmd_mapped : numpy.ndarray of uint64
        Addresses of 2 MiB runs found mapped by one whole 512-page folio in
        order (PMD-mapped THPs, see the module notes).
    notes : list of str
        What the reader should know about how the snapshot was filled.
    partial : bool
        True when ``problems`` is not empty: the snapshot is not trustworthy
        for the VMAs or pages named there.
    problems : list of str
    stats : dict
        Counts and timings.
    """

    space: AddressSpace
    pid: int
    comm: str
    vmas: list
    skipped: list
    pmd_mapped: np.ndarray
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.problems)

    def save(self, path, *, compress: bool = False) -> None:
        """Save :attr:`space` as :meth:`AddressSpace.save` does, readable by its owner only
        (mode 0600): it holds physical frame numbers, which the kernel shows only to
        CAP_SYS_ADMIN."""
        self.space.save(path, compress=compress, mode=0o600)

    def summary(self) -> dict:
        """JSON-ready description (no per-page arrays)."""
        return {
            "pid": self.pid,
            "comm": self.comm,
            "partial": self.partial,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "skipped": [{"vma": v.describe(), "reason": r} for v, r in self.skipped],
            "pmd_mapped": [hex(int(a)) for a in self.pmd_mapped],
            "stats": dict(self.stats),
            "space": self.space.info(),
        }


# -- folio recovery ------------------------------------------------------------


def _folios(blocks: np.ndarray, kflags: np.ndarray):
    """Folios (head PFN, pages) found in the read blocks, and the inconsistent ones.

    Returns ``head_pfn, nr, head_flags`` for every consistent compound run, and
    ``bad`` as a list of ``(pfn, pages, why)``; plus ``covered``: a boolean of
    the same shape as ``kflags`` marking pages that belong to a consistent folio.
    """
    flat = kflags.reshape(-1)
    head = ((flat >> np.uint64(KPF_COMPOUND_HEAD)) & _U1).astype(bool)
    tail = ((flat >> np.uint64(KPF_COMPOUND_TAIL)) & _U1).astype(bool)
    stop = ~tail
    stop[::KPF_BLOCK] = True  # a folio of order <= 10 never crosses an aligned block
    stops = np.concatenate((np.flatnonzero(stop), [flat.size]))
    h = np.flatnonzero(head)
    nxt = stops[np.searchsorted(stops, h, side="right")]
    nr = (nxt - h).astype(np.int64)
    pfn = (blocks[h >> KPF_BLOCK_SHIFT] << np.uint64(KPF_BLOCK_SHIFT)) | (
        h & (KPF_BLOCK - 1)
    ).astype(np.uint64)
    pow2 = (nr >= 2) & ((nr & (nr - 1)) == 0)
    aligned = (pfn & (nr.astype(np.uint64) - _U1)) == _U0
    runs_to_edge = (nxt % KPF_BLOCK == 0) & tail[np.minimum(nxt, flat.size - 1)] & (nxt < flat.size)
    ok = pow2 & aligned & ~runs_to_edge
    covered = np.zeros(flat.size, dtype=bool)
    if ok.any():
        # mark [h, h + nr) for the consistent folios
        starts, lens = h[ok], nr[ok]
        idx = np.repeat(starts, lens) + (
            np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        )
        covered[idx] = True
    bad = []
    for i in np.flatnonzero(~ok):
        why = (
            "a head with no tail pages"
            if nr[i] < 2
            else f"head + tails run of {nr[i]} pages is not a power of two"
            if not pow2[i]
            else f"head PFN not aligned to its {nr[i]} pages"
            if not aligned[i]
            else "tail pages run past an aligned 1024-page block (order > 10)"
        )
        bad.append((int(pfn[i]), int(nr[i]), why))
    return pfn[ok], nr[ok].astype(np.uint64), flat[h[ok]], covered.reshape(kflags.shape), bad


# -- the capture -----------------------------------------------------------------


def _norm_ranges(start, end, ranges) -> list | None:
    out = []
    if ranges is not None:
        out.extend((int(a), int(b)) for a, b in ranges)
    if start is not None or end is not None:
        out.append((0 if start is None else int(start), (1 << 64) - 1 if end is None else int(end)))
    if not out:
        return None
    for a, b in out:
        if a < 0 or b <= a:
            raise ValueError(f"range: [{a:#x}, {b:#x}) is empty; start must be below end")
    # page-align outward, then merge overlapping or touching ranges (no artificial VMA ends)
    merged: list = []
    for a, b in sorted(
        (a & ~(PAGE_SIZE - 1), min((b + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1), 1 << 64)) for a, b in out
    ):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _show_ranges(rng) -> str:
    return "all" if rng is None else ", ".join(f"[{a:#x}, {b:#x})" for a, b in rng)


def _select(vmas, ranges, anon_only, name):
    """(vma, lo, hi) pieces to capture, and (vma, reason) skipped."""
    pieces, skipped = [], []
    for v in vmas:
        if anon_only and not v.anonymous:
            continue
        if name is not None and name not in v.path:
            continue
        if ranges is None:
            spans = [(v.start, v.end)]
        else:
            spans = [(max(v.start, a), min(v.end, b)) for a, b in ranges]
            spans = [(a, b) for a, b in spans if a < b]
            if not spans:
                continue
        if v.path == "[vsyscall]":
            skipped.append((v, "the vsyscall page is not in the process's page tables"))
        elif "ht" in v.vmflags:
            skipped.append(
                (
                    v,
                    "hugetlb: mapped by PMD/PUD entries, never by PTE tables, "
                    "so folio_pte_batch never sees it",
                )
            )
        elif v.vmflags & {"pf", "io"}:
            skipped.append(
                (
                    v,
                    "PFN-map/IO area: no struct page behind the entries, "
                    "never batched (vm_normal_page is NULL)",
                )
            )
        else:
            for a, b in spans:
                pieces.append((v, a, b))
    return pieces, skipped


def capture_detailed(
    pid: int,
    *,
    anon_only: bool = False,
    start: int | None = None,
    end: int | None = None,
    ranges: Sequence | None = None,
    name: str | None = None,
    pmd: str = "pte",
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[int, int], None] | bool | None = None,
) -> Capture:
    """Capture a process's page tables, with notes and problems.

    Parameters
    ----------
    pid : int
        Process to read (``os.getpid()`` for the caller itself).
    anon_only : bool
        Only anonymous VMAs (no file: heap, stack, ``[anon:...]``, unnamed;
        shared anonymous memory is shmem, a file, and is left out).
    start, end : int, optional
        Only ``[start, end)``; VMAs are clipped to it, and a clipped VMA end
        acts as a VMA end for ``scan``/``unmap`` (noted).
    ranges : sequence of (int, int), optional
        Several such ranges.
    name : str, optional
        Only VMAs whose path contains this text (``"[heap]"``, ``"libc"``).
    pmd : {"pte", "skip"}
        PMD-mapped THPs as full PTE tables of one 512-page folio (``"pte"``),
        or left out (entries none, ``"skip"``).
    max_bytes : int
        Refuse to scan more virtual memory than this (pagemap costs 8 bytes
        per virtual page even where nothing is mapped).
    progress : bool or callable, optional
        ``True``: progress lines on stderr; a callable gets
        ``(bytes_done, bytes_total)``.

    Returns
    -------
    Capture

    Raises
    ------
    ProcessExitedError
        No such process, or it exited during the capture.
    PermissionError
        pagemap or kpageflags unreadable, or PFNs hidden (not root).
    CaptureError
        /proc/kpageflags missing, or too much to scan.
    ValueError
        A bad argument.
    """
    t0 = time.perf_counter()
    pid = _check_arguments(pid, pmd)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise ValueError(f"max_bytes: must be a positive integer (bytes), got {max_bytes!r}")
    rng = _norm_ranges(start, end, ranges)
    report = _progress_fn(progress)
    start_time = _start_time(pid)
    comm, pieces, skipped, total, read = _read_process(
        pid, start_time, rng, anon_only, name, max_bytes, report
    )
    return build_capture(pid, comm, start_time, pieces, skipped, total, read, pmd, t0)


def build_capture(pid, comm, start_time, pieces, skipped, total, read, pmd, t0) -> Capture:
    """The :class:`Capture` of entries already read from pagemap and kpageflags.

    Parameters
    ----------
    pid : int
    comm : str
    start_time : str
        The process's start time when the reads began (``/proc/PID/stat``).
    pieces : list of (Vma, int, int)
        The VMAs (clipped) the entries come from, in address order.
    skipped : list of (Vma, str)
    total : int
        Virtual bytes read.
    read : tuple
        ``(va, pm, piece_of, blocks, kflags)``: addresses and raw pagemap
        entries of the present (or swapped) pages in address order, the
        index of each one's piece, and :func:`read_kpageflags` of their PFNs.
    pmd : {"pte", "skip"}
    t0 : float
        ``time.perf_counter()`` when the capture began.

    Returns
    -------
    Capture
    """
    va, pm, piece_of, blocks, kflags = read
    present, pfn = _present_pfns(pid, pm)
    problems = _changed_vmas(pid, start_time, pieces)

    # -- folios --------------------------------------------------------------
    head_pfn, folio_nr, head_flags, covered, bad = _folios(blocks, kflags)
    pv, ppfn = va[present], pfn[present]
    pflags, in_folio = _page_flags(blocks, kflags, covered, ppfn)
    problems += _kpageflags_problems(bad, pflags, in_folio, pv, ppfn)
    fi, inside, used = _mapped_folios(head_pfn, folio_nr, ppfn)
    f_pfn, f_nr, f_flags = head_pfn[used], folio_nr[used], _folio_flags(head_flags[used])

    pte = _pte_bits(pieces, pm[present], piece_of[present], pflags, ppfn)

    # -- PMD-mapped THPs: aligned 2 MiB runs mapping one 512-page folio in order ---
    notes: list[str] = []
    pmd_va = _pmd_mapped(pv, ppfn, fi, inside, head_pfn, folio_nr)
    if pmd_va.size:
        notes.append(_pmd_mapped_note(pmd_va, pieces, pmd))
        if pmd == "skip":
            drop = np.isin(pv & ~np.uint64(PMD_SIZE - 1), pmd_va)
            pv, pte = pv[~drop], pte[~drop]
            keep_f = np.isin(used, fi[inside & ~drop])
            f_pfn, f_nr, f_flags = f_pfn[keep_f], f_nr[keep_f], f_flags[keep_f]

    swapped = int(np.count_nonzero((pm & PM_SWAP) != _U0))
    notes += _vma_notes(pieces, skipped, swapped)
    space = _build_space(pieces, pv, pte, f_pfn, f_nr, f_flags)
    large = f_nr > _U1
    stats = {
        "vmas": len(pieces),
        "skipped_vmas": len(skipped),
        "virtual_bytes": int(total),
        "pages_read": int(total) >> PAGE_SHIFT,
        "present": int(present.sum()),
        "swapped": swapped,
        "folios": int(f_pfn.size),
        "large_folios": int(large.sum()),
        "pages_in_large_folios": int(f_nr[large].sum()) if large.any() else 0,
        "kpageflags_blocks": int(blocks.size),
        "pmd_mapped": int(pmd_va.size),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return Capture(
        space=space,
        pid=pid,
        comm=comm,
        vmas=[v for v, _, _ in pieces],
        skipped=skipped,
        pmd_mapped=pmd_va,
        notes=notes,
        problems=problems,
        stats=stats,
    )


# -- the capture's steps ---------------------------------------------------------


def _check_arguments(pid, pmd: str) -> int:
    """Validate ``pid`` and ``pmd``; returns the pid as an int."""
    if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or pid <= 0:
        raise ValueError(f"pid: must be a positive integer, got {pid!r}")
    pid = int(pid)
    if pmd not in ("pte", "skip"):
        raise ValueError(f"pmd: must be 'pte' or 'skip', got {pmd!r}")
    return pid


def _start_time(pid: int) -> str:
    """The process's start time, to tell it from a later process with the same pid."""
    st = _stat(pid)
    if st is None:
        raise ProcessExitedError(f"pid: no process {pid}")
    return st[1]


def _read_process(pid, start_time, rng, anon_only, name, max_bytes, report):
    """Select the VMAs and read their pagemap entries and the kpageflags of their PFNs."""
    kfd = _open(KPAGEFLAGS, "kpageflags")
    try:
        pfd = _open(_proc(pid, "pagemap"), "pagemap")
        try:
            comm = _read_text(pid, "comm").strip()
            pieces, skipped, total = _select_pieces(
                pid, read_vmas(pid), rng, anon_only, name, max_bytes
            )
            read = _read_all(pid, pfd, kfd, pieces, total, report, start_time)
        finally:
            os.close(pfd)
    finally:
        os.close(kfd)
    return comm, pieces, skipped, total, read


def _select_pieces(pid, vmas, rng, anon_only, name, max_bytes):
    """The pieces to capture, the skipped VMAs and the bytes to scan; refuses none or too many."""
    pieces, skipped = _select(vmas, rng, anon_only, name)
    if not pieces:
        raise ValueError(
            f"capture: no VMA of process {pid} matches the filter "
            f"(anon_only={anon_only}, ranges={_show_ranges(rng)}, name={name!r})"
            + (f"; {len(skipped)} matching VMA(s) are of a kind that is skipped" if skipped else "")
        )
    total = sum(b - a for _, a, b in pieces)
    if total > max_bytes:
        raise CaptureError(
            f"max_bytes: the selected VMAs span {total / 2**30:.1f} GiB of "
            f"virtual memory, over the limit of {max_bytes / 2**30:.1f} GiB; "
            f"narrow the capture (start/end, name, anon_only) or raise max_bytes"
        )
    return pieces, skipped, total


def _present_pfns(pid: int, pm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Present mask and PFNs of the entries; refuses PFNs hidden (no CAP_SYS_ADMIN: all 0)."""
    present = (pm & PM_PRESENT) != _U0
    pfn = pm & PM_PFN_MASK
    if np.any(present & (pfn == _U0)):
        raise PermissionError(
            f"pagemap: present pages of process {pid} read PFN 0: the kernel "
            f"hides PFNs from readers without CAP_SYS_ADMIN; run as root"
        )
    return present, pfn


def _changed_vmas(pid: int, start_time: str, pieces: list) -> list:
    """Check the process is still there; one problem per VMA that vanished or changed meanwhile."""
    _check_alive(pid, start_time, "during the capture")
    after = read_vmas(pid, smaps=False)
    changed = sorted(
        {v for v, lo, hi in pieces if not _still_there(v, lo, hi, after)}, key=lambda v: v.start
    )
    return [
        f"VMA {v.describe()} vanished or changed during the capture; "
        f"its entries are as read, its bounds may be stale"
        for v in changed
    ]


def _page_flags(blocks, kflags, covered, ppfn) -> tuple[np.ndarray, np.ndarray]:
    """kpageflags of each mapped PFN, and whether it lies in a consistent folio."""
    bi = np.searchsorted(blocks, ppfn >> np.uint64(KPF_BLOCK_SHIFT))
    col = (ppfn & np.uint64(KPF_BLOCK - 1)).astype(np.intp)
    pflags = kflags[bi, col] if ppfn.size else np.zeros(0, dtype=np.uint64)
    in_folio = covered[bi, col] if ppfn.size else np.zeros(0, dtype=bool)
    return pflags, in_folio


def _mapped_runs(bad: list, ppfn: np.ndarray) -> list:
    """The inconsistent compound runs that hold a mapped PFN."""
    if not (bad and ppfn.size):
        return []
    # only runs that hold a mapped page matter; other processes' folios share the blocks
    sp = np.sort(ppfn)
    lo = np.array([b[0] for b in bad], dtype=np.uint64)
    hi = lo + np.array([max(b[1], 1) for b in bad], dtype=np.uint64)
    hit = np.searchsorted(sp, hi, side="left") > np.searchsorted(sp, lo, side="left")
    return [b for b, h in zip(bad, hit) if h]


def _kpageflags_problems(bad, pflags, in_folio, pv, ppfn) -> list:
    """Problems for mapped pages whose kpageflags contradict themselves or have no struct page."""
    problems = []
    in_compound = (pflags & np.uint64((1 << KPF_COMPOUND_HEAD) | (1 << KPF_COMPOUND_TAIL))) != _U0
    orphan = in_compound & ~in_folio
    nopage = (pflags & np.uint64(1 << KPF_NOPAGE)) != _U0
    bad = _mapped_runs(bad, ppfn)
    if bad:
        shown = "; ".join(f"PFN {p:#x}: {w}" for p, _, w in bad[:3])
        problems.append(
            f"kpageflags: {len(bad)} compound run(s) are inconsistent ({shown}"
            f"{'; ...' if len(bad) > 3 else ''}) - a folio split or freed during the "
            f"capture?  No folio was invented for them"
        )
    if orphan.any():
        problems.append(
            f"kpageflags: {int(orphan.sum())} mapped page(s) are compound pages "
            f"outside any consistent folio (first at {int(pv[orphan][0]):#x}, PFN "
            f"{int(ppfn[orphan][0]):#x}); they appear as order-0 in the snapshot"
        )
    if nopage.any():
        problems.append(
            f"kpageflags: {int(nopage.sum())} mapped PFN(s) have no struct page "
            f"(first {int(ppfn[nopage][0]):#x}); they appear as order-0"
        )
    return problems


def _mapped_folios(head_pfn, folio_nr, ppfn):
    """Folio index of each mapped PFN, whether it lies in that folio, and the folios mapped."""
    if head_pfn.size:
        fi = np.searchsorted(head_pfn, ppfn, side="right") - 1
        inside = (fi >= 0) & (ppfn < head_pfn[np.maximum(fi, 0)] + folio_nr[np.maximum(fi, 0)])
        used = np.unique(fi[inside])
    else:
        fi = np.zeros(ppfn.size, dtype=np.intp)
        inside = np.zeros(ppfn.size, dtype=bool)
        used = np.zeros(0, dtype=np.intp)
    return fi, inside, used


def _folio_flags(head_kflags: np.ndarray) -> np.ndarray:
    """Model folio flags (FOLIO_ANON, FOLIO_SWAPBACKED) from the heads' kpageflags."""
    return (
        np.where((head_kflags >> np.uint64(KPF_ANON)) & _U1, FOLIO_ANON, 0)
        | np.where((head_kflags >> np.uint64(KPF_SWAPBACKED)) & _U1, FOLIO_SWAPBACKED, 0)
    ).astype(np.uint8)


def _pte_bits(pieces, ppm, vma_of, pflags, ppfn) -> np.ndarray:
    """x86-64 PTEs of the present pages (write guessed, accessed and dirty clear)."""
    perms = [p[0].perms for p in pieces]  # vma_of indexes pieces
    v_write = np.array([p[1] == "w" for p in perms], dtype=bool)
    v_shared = np.array([p[3] == "s" for p in perms], dtype=bool)
    v_exec = np.array([p[2] == "x" for p in perms], dtype=bool)
    page_anon = ((pflags >> np.uint64(KPF_ANON)) & _U1).astype(bool)
    excl = (ppm & PM_EXCLUSIVE) != _U0
    write = v_write[vma_of] & (v_shared[vma_of] | (page_anon & excl))
    return X86_64.make_pte(
        ppfn,
        write=write,
        soft_dirty=(ppm & PM_SOFT_DIRTY) != _U0,
        uffd_wp=(ppm & PM_UFFD_WP) != _U0,
        nx=~v_exec[vma_of],
    )


def _pmd_mapped_note(pmd_va: np.ndarray, pieces: list, pmd: str) -> str:
    """The note on the PMD-mapped THPs found, per VMA against smaps' count."""
    per_vma = {}
    for a in pmd_va.tolist():
        for v, lo, hi in pieces:
            if lo <= a < hi:
                per_vma.setdefault(v, 0)
                per_vma[v] += 1
                break
    confirm = []
    for v, n in per_vma.items():
        confirm.append(
            f"{v.describe()}: {n} found, smaps says {v.pmd_mapped_bytes >> 21} PMD-mapped"
        )
    how = (
        "kept as full PTE tables of one 512-page folio, as reclaim sees them after "
        "split_huge_pmd (zap takes them whole with zap_huge_pmd and never batches them)"
        if pmd == "pte"
        else "left out (their entries are none)"
    )
    return (
        f"{pmd_va.size} aligned 2 MiB run(s) are mapped by one whole 512-page folio "
        f"in order, i.e. PMD-mapped THPs (or their PTE-mapped equivalent): {how}. "
        + "; ".join(confirm[:4])
        + ("; ..." if len(confirm) > 4 else "")
    )


def _vma_notes(pieces: list, skipped: list, swapped: int) -> list:
    """Notes on clipped VMAs, swapped pages, the guessed bits and the skipped VMAs."""
    notes = []
    clipped = [v for v, lo, hi in pieces if (lo, hi) != (v.start, v.end)]
    if clipped:
        notes.append(
            f"{len(clipped)} VMA(s) clipped to the requested range; scan and unmap stop "
            f"at a clipped end as at a VMA end"
        )
    if swapped:
        notes.append(f"{swapped} swapped-out page(s) are none PTEs (swap entries are not modelled)")
    notes.append(
        "write is guessed (VMA writable and shared, or anon page mapped exclusively), "
        "accessed and dirty are cleared: pagemap does not expose them"
    )
    for v, why in skipped:
        notes.append(f"skipped {v.describe()}: {why}")
    return notes


def _build_space(pieces, pv, pte, f_pfn, f_nr, f_flags) -> AddressSpace:
    """The AddressSpace: tables from the entries, VMAs from the pieces, the mapped folios."""
    # clipped pieces; merged ranges keep pieces of one VMA apart
    vs = np.array([lo for _, lo, _ in pieces], dtype=np.uint64)
    ve = np.array([hi for _, _, hi in pieces], dtype=np.uint64)
    # smaps' "uw": the VMA is registered for userfaultfd write-protect
    vflags = np.array(
        [VMA_UFFD_WP if "uw" in v.vmflags else 0 for v, _, _ in pieces], dtype=np.uint8
    )
    ptes, table_va = _tables(pv, pte)
    return AddressSpace(
        ptes,
        table_va,
        vs,
        ve,
        np.ascontiguousarray(f_pfn, dtype=np.uint64),
        np.ascontiguousarray(f_nr, dtype=np.uint64),
        np.ascontiguousarray(f_flags),
        vma_flags=vflags,
    )


def _tables(va: np.ndarray, pte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PTE tables from entries sorted by address (as read): linear, no sort needed."""
    tva_each = va & ~np.uint64(PMD_SIZE - 1)
    new_table = np.ones(va.size, dtype=bool)
    new_table[1:] = tva_each[1:] != tva_each[:-1]
    table_va = np.ascontiguousarray(tva_each[new_table])
    row = np.cumsum(new_table) - 1
    ptes = np.zeros((table_va.size, PTRS_PER_PTE), dtype=np.uint64)
    idx = ((va >> np.uint64(PAGE_SHIFT)) & np.uint64(PTRS_PER_PTE - 1)).astype(np.intp)
    ptes[row, idx] = pte
    return ptes, table_va


def _still_there(v: Vma, lo: int, hi: int, after: list) -> bool:
    """Whether the piece [lo, hi) of VMA ``v`` is still mapped the same way.

    A VMA that grew or merged elsewhere does not matter for a clipped piece;
    a bound of the piece that was a real VMA bound must still be one.
    """
    starts = [w.start for w in after]
    i = bisect.bisect_right(starts, lo) - 1
    if i < 0:
        return False
    w = after[i]
    if not (w.start <= lo and hi <= w.end):
        return False
    if (w.perms, w.dev, w.inode, w.path) != (v.perms, v.dev, v.inode, v.path):
        return False
    if w.offset + (lo - w.start) != v.offset + (lo - v.start):
        return False
    if lo == v.start and w.start != lo:
        return False
    return not (hi == v.end and w.end != hi)


def _pmd_mapped(pv, ppfn, fi, inside, head_pfn, folio_nr) -> np.ndarray:
    """2 MiB-aligned VAs whose 512 entries map a 512-page folio from its head, in order."""
    if pv.size == 0:
        return np.zeros(0, dtype=np.uint64)
    idx = ((pv >> np.uint64(PAGE_SHIFT)) & np.uint64(PTRS_PER_PTE - 1)).astype(np.int64)
    safe = np.maximum(fi, 0)
    big = inside & (folio_nr[safe] == np.uint64(PTRS_PER_PTE)) if folio_nr.size else inside
    in_order = big & (ppfn - head_pfn[safe] == idx.astype(np.uint64)) if folio_nr.size else big
    tva = pv & ~np.uint64(PMD_SIZE - 1)
    # a table qualifies when all 512 of its present entries are in order (present ones are unique)
    t_all, n_all = np.unique(tva, return_counts=True)
    t_ok, n_ok = np.unique(tva[in_order], return_counts=True)
    full = t_ok[n_ok == PTRS_PER_PTE]
    return full[np.isin(full, t_all[n_all == PTRS_PER_PTE])]


def _read_all(pid, pfd, kfd, pieces, total, report, start_time):
    """Read pagemap for every piece, then kpageflags for the mapped PFNs."""
    va_parts, pm_parts, of_parts = [], [], []
    buf = np.empty(PAGEMAP_BLOCK, dtype=np.uint64)  # reused: no allocation per block
    done = 0
    for k, (_, lo, hi) in enumerate(pieces):
        for a in range(lo, hi, PAGEMAP_BLOCK * PAGE_SIZE):
            b = min(hi, a + PAGEMAP_BLOCK * PAGE_SIZE)
            n = (b - a) >> PAGE_SHIFT
            e = read_pagemap(pfd, a, b, out=buf[:n])
            keep = np.flatnonzero(e & (PM_PRESENT | PM_SWAP))  # holes carry only soft-dirty
            if keep.size:
                va_parts.append(np.uint64(a) + keep.astype(np.uint64) * np.uint64(PAGE_SIZE))
                pm_parts.append(e[keep].copy())
                of_parts.append(np.full(keep.size, k, dtype=np.intp))
            done += b - a
            report(done, total)
    _check_alive(pid, start_time, "while its pagemap was read")
    va = np.concatenate(va_parts) if va_parts else np.zeros(0, dtype=np.uint64)
    pm = np.concatenate(pm_parts) if pm_parts else np.zeros(0, dtype=np.uint64)
    of = np.concatenate(of_parts) if of_parts else np.zeros(0, dtype=np.intp)
    present = (pm & PM_PRESENT) != _U0
    blocks, kflags = read_kpageflags(kfd, pm[present] & PM_PFN_MASK)
    report(total, total)
    return va, pm, of, blocks, kflags


def _progress_fn(progress):
    if callable(progress):
        return progress
    if not progress:
        return lambda done, total: None
    state = {"t": 0.0, "last": -1}

    def show(done, total):
        now = time.monotonic()
        if done < total and now - state["t"] < 0.2:
            return
        if done == state["last"]:
            return
        state["t"], state["last"] = now, done
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(
            f"capture: pagemap {done / 2**20:,.0f} / {total / 2**20:,.0f} MiB ({pct:.0f}%)\n"
        )
        sys.stderr.flush()

    return show


def capture(
    pid: int,
    *,
    anon_only: bool = False,
    start: int | None = None,
    end: int | None = None,
    ranges: Sequence | None = None,
    name: str | None = None,
    pmd: str = "pte",
    allow_partial: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[int, int], None] | bool | None = None,
) -> AddressSpace:
    """Capture a live process's page tables as an :class:`AddressSpace`.

    Parameters
    ----------
    pid : int
        Process to read.
    anon_only, start, end, ranges, name, pmd, max_bytes, progress
        As for :func:`capture_detailed`.
    allow_partial : bool
        Return the snapshot even when something changed or was inconsistent
        during the capture (see :func:`capture_detailed` for the problems).

    Returns
    -------
    AddressSpace

    Raises
    ------
    PartialCaptureError
        The capture is partial and ``allow_partial`` is false.
    ProcessExitedError, PermissionError, CaptureError, ValueError
        As for :func:`capture_detailed`.
    """
    cap = capture_detailed(
        pid,
        anon_only=anon_only,
        start=start,
        end=end,
        ranges=ranges,
        name=name,
        pmd=pmd,
        max_bytes=max_bytes,
        progress=progress,
    )
    if cap.partial and not allow_partial:
        more = f" (+{len(cap.problems) - 1} more)" if len(cap.problems) > 1 else ""
        raise PartialCaptureError(
            f"capture of process {pid} is partial: {cap.problems[0]}{more}; "
            f"pass allow_partial=True (--allow-partial) to keep it",
            cap,
        )
    return cap.space
