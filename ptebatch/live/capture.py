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
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, X86_64
from ..space import FOLIO_ANON, FOLIO_SWAPBACKED, VMA_UFFD_WP, AddressSpace

__all__ = ["capture", "capture_detailed", "Capture", "Vma", "CaptureError", "PartialCaptureError",
           "ProcessExitedError", "read_vmas", "read_pagemap", "read_kpageflags"]

# /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst)
PM_PFN_MASK = np.uint64((1 << 55) - 1)
PM_SOFT_DIRTY = np.uint64(1 << 55)
PM_EXCLUSIVE = np.uint64(1 << 56)
PM_UFFD_WP = np.uint64(1 << 57)
PM_GUARD = np.uint64(1 << 58)
PM_FILE = np.uint64(1 << 61)
PM_SWAP = np.uint64(1 << 62)
PM_PRESENT = np.uint64(1 << 63)

# /proc/kpageflags bit numbers
KPF_ANON = 12
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_NOPAGE = 20
KPF_THP = 22
KPF_ZERO_PAGE = 24

PAGEMAP_BLOCK = 1 << 16       # entries per pagemap read (512 KiB)
KPF_BLOCK_SHIFT = 10          # kpageflags is read in aligned 1024-page blocks (order 10)
KPF_BLOCK = 1 << KPF_BLOCK_SHIFT
KPF_READ_MAX = 1 << 17        # PFNs per kpageflags read (1 MiB)
DEFAULT_MAX_BYTES = 64 << 30  # virtual bytes scanned before refusing (pagemap has 8 B per page)
KPAGEFLAGS = "/proc/kpageflags"

_U0 = np.uint64(0)
_U1 = np.uint64(1)


class CaptureError(OSError):
    """A capture that cannot give a trustworthy snapshot (the message says why)."""


class ProcessExitedError(CaptureError, ProcessLookupError):
    """The process does not exist, or exited while it was being captured."""


class PartialCaptureError(CaptureError):
    """Something changed or contradicted itself during the capture.

    ``capture`` holds the partial :class:`Capture`, ``problems`` the reasons.
    """

    def __init__(self, message: str, capture: "Capture"):
        super().__init__(message)
        self.capture = capture
        self.problems = list(capture.problems)


@dataclass(frozen=True)
class Vma:
    """One line of /proc/PID/maps, with the smaps fields capture uses."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str
    vmflags: frozenset = frozenset()
    pmd_mapped_bytes: int = 0   # AnonHugePages + ShmemPmdMapped + FilePmdMapped

    @property
    def key(self) -> tuple:
        """What must stay the same for the captured VMA to still be the same VMA."""
        return (self.start, self.end, self.perms, self.offset, self.dev, self.inode, self.path)

    @property
    def anonymous(self) -> bool:
        """Anonymous memory with no file: heap, stack, ``[anon:...]``, unnamed.

        Shared anonymous memory is shmem and shows as ``/dev/zero (deleted)``:
        it counts as a file here.
        """
        return self.inode == 0 and (self.path == "" or self.path in ("[heap]", "[stack]")
                                    or self.path.startswith("[anon:") or self.path.startswith("[stack:"))

    def describe(self) -> str:
        return f"[{self.start:#x}, {self.end:#x}) {self.perms} {self.path or '(anonymous)'}"


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

    def summary(self) -> dict:
        """JSON-ready description (no per-page arrays)."""
        return {"pid": self.pid, "comm": self.comm, "partial": self.partial,
                "problems": list(self.problems), "notes": list(self.notes),
                "skipped": [{"vma": v.describe(), "reason": r} for v, r in self.skipped],
                "pmd_mapped": [hex(int(a)) for a in self.pmd_mapped],
                "stats": dict(self.stats), "space": self.space.info()}


# -- /proc readers -------------------------------------------------------------

_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")


def _proc(pid: int, name: str) -> str:
    return f"/proc/{pid}/{name}"


def _read_text(pid: int, name: str) -> str:
    path = _proc(pid, name)
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        raise ProcessExitedError(f"pid: no process {pid} ({path} does not exist)") from None
    except ProcessLookupError:
        raise ProcessExitedError(f"pid: process {pid} exited while {path} was read") from None
    except PermissionError as exc:
        raise PermissionError(f"{path}: permission denied ({exc.strerror}); reading another "
                              f"process's memory map needs ptrace read access to it (same user "
                              f"or root; Yama ptrace_scope or a container can still forbid it)") from None


def read_vmas(pid: int, *, smaps: bool = True) -> list:
    """Parse /proc/PID/smaps (or /proc/PID/maps with ``smaps=False``).

    Parameters
    ----------
    pid : int
    smaps : bool
        Also collect ``VmFlags`` and the PMD-mapped byte counts.

    Returns
    -------
    list of Vma
        In address order.
    """
    text = _read_text(pid, "smaps" if smaps else "maps")
    vmas: list[Vma] = []
    cur: dict | None = None

    def flush():
        if cur is not None:
            vmas.append(Vma(**cur))

    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            flush()
            cur = dict(start=int(m.group(1), 16), end=int(m.group(2), 16), perms=m.group(3),
                       offset=int(m.group(4), 16), dev=m.group(5), inode=int(m.group(6)),
                       path=m.group(7), vmflags=frozenset(), pmd_mapped_bytes=0)
            continue
        if cur is None:
            continue
        if line.startswith("VmFlags:"):
            cur["vmflags"] = frozenset(line.split()[1:])
        elif line.startswith(("AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:")):
            parts = line.split()
            cur["pmd_mapped_bytes"] += int(parts[1]) * 1024
    flush()
    return vmas


def _open(path: str, what: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if what == "kpageflags":
            raise CaptureError(f"{path}: does not exist (kernel without CONFIG_PROC_PAGE_MONITOR); "
                               f"folio boundaries cannot be recovered, nothing was captured") from None
        raise ProcessExitedError(f"pid: no such process ({path} does not exist)") from None
    except PermissionError:
        if what == "kpageflags":
            raise PermissionError(f"{path}: permission denied; reading page flags needs root "
                                  f"(CAP_SYS_ADMIN), nothing was captured") from None
        raise PermissionError(f"{path}: permission denied; reading another process's pagemap "
                              f"needs ptrace read access to it (same user or root; Yama "
                              f"ptrace_scope or a container can still forbid it)") from None


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> int:
    """Fill ``buf`` from ``offset``; returns the entries read (fewer at EOF)."""
    view = memoryview(buf).cast("B")
    got = 0
    while got < view.nbytes:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            break
        got += n
    return got // 8


def read_pagemap(fd: int, start: int, end: int, out: np.ndarray | None = None) -> np.ndarray:
    """Read the pagemap entries of ``[start, end)`` from an open pagemap fd.

    Parameters
    ----------
    fd : int
        ``os.open("/proc/PID/pagemap", os.O_RDONLY)``.
    start, end : int
        Page-aligned addresses.
    out : numpy.ndarray of uint64, optional
        Destination of ``(end - start) // 4096`` entries (C-contiguous); reads
        go straight into it, so a reused buffer costs no allocation.

    Returns
    -------
    numpy.ndarray of uint64

    Raises
    ------
    ProcessExitedError
        The read came back short: the process's memory is gone.
    """
    n = (end - start) >> PAGE_SHIFT
    if out is None:
        out = np.empty(n, dtype=np.uint64)
    try:
        got = _pread_into(fd, out[:n], (start >> PAGE_SHIFT) * 8)
    except ProcessLookupError:
        got = -1
    if got != n:
        raise ProcessExitedError(f"pagemap: read of [{start:#x}, {end:#x}) came back short "
                                 f"({max(got, 0)} of {n} entries): the process exited during the "
                                 f"capture; nothing was written")
    return out


def read_kpageflags(fd: int, pfns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read kpageflags for the aligned 1024-page blocks holding ``pfns``.

    Parameters
    ----------
    fd : int
        ``os.open("/proc/kpageflags", os.O_RDONLY)``.
    pfns : numpy.ndarray of uint64

    Returns
    -------
    blocks : numpy.ndarray of uint64, shape (B,)
        Sorted block numbers (``pfn >> 10``).
    flags : numpy.ndarray of uint64, shape (B, 1024)
        Flags of every PFN of each block; PFNs past the end of memory read
        as ``KPF_NOPAGE``.
    """
    blocks = np.unique(pfns >> np.uint64(KPF_BLOCK_SHIFT))
    flags = np.full((blocks.size, KPF_BLOCK), np.uint64(1 << KPF_NOPAGE), dtype=np.uint64)
    if blocks.size == 0:
        return blocks, flags
    # coalesce consecutive blocks into runs, one pread (or a few) per run
    brk = np.flatnonzero(np.diff(blocks) != _U1) + 1
    run_lo = np.concatenate(([0], brk))
    run_hi = np.concatenate((brk, [blocks.size]))
    flat = flags.reshape(-1)
    per_read = KPF_READ_MAX // KPF_BLOCK
    for lo, hi in zip(run_lo.tolist(), run_hi.tolist()):
        for b0 in range(lo, hi, per_read):
            b1 = min(hi, b0 + per_read)
            first_pfn = int(blocks[b0]) << KPF_BLOCK_SHIFT
            _pread_into(fd, flat[b0 * KPF_BLOCK:b1 * KPF_BLOCK], first_pfn * 8)
    return blocks, flags


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of the process, or None when it is gone."""
    try:
        with open(_proc(pid, "stat"), "rb") as fh:
            s = fh.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rfind(")") + 2:].split()
    return rest[0], rest[19]


def _check_alive(pid: int, start_time: str, when: str) -> None:
    st = _stat(pid)
    if st is None or st[1] != start_time or st[0] in ("Z", "X", "x"):
        raise ProcessExitedError(f"pid: process {pid} exited {when}; its pagemap may have read as "
                                 f"empty, so nothing was written")


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
    stop[::KPF_BLOCK] = True            # a folio of order <= 10 never crosses an aligned block
    stops = np.concatenate((np.flatnonzero(stop), [flat.size]))
    h = np.flatnonzero(head)
    nxt = stops[np.searchsorted(stops, h, side="right")]
    nr = (nxt - h).astype(np.int64)
    pfn = ((blocks[h >> KPF_BLOCK_SHIFT] << np.uint64(KPF_BLOCK_SHIFT))
           | (h & (KPF_BLOCK - 1)).astype(np.uint64))
    pow2 = (nr >= 2) & ((nr & (nr - 1)) == 0)
    aligned = (pfn & (nr.astype(np.uint64) - _U1)) == _U0
    runs_to_edge = (nxt % KPF_BLOCK == 0) & tail[np.minimum(nxt, flat.size - 1)] & (nxt < flat.size)
    ok = pow2 & aligned & ~runs_to_edge
    covered = np.zeros(flat.size, dtype=bool)
    if ok.any():
        # mark [h, h + nr) for the consistent folios
        starts, lens = h[ok], nr[ok]
        idx = np.repeat(starts, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
        covered[idx] = True
    bad = []
    for i in np.flatnonzero(~ok):
        why = ("a head with no tail pages" if nr[i] < 2 else
               f"head + tails run of {nr[i]} pages is not a power of two" if not pow2[i] else
               f"head PFN not aligned to its {nr[i]} pages" if not aligned[i] else
               "tail pages run past an aligned 1024-page block (order > 10)")
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
    for a, b in sorted((a & ~(PAGE_SIZE - 1), min((b + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1), 1 << 64))
                       for a, b in out):
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
            skipped.append((v, "hugetlb: mapped by PMD/PUD entries, never by PTE tables, "
                               "so folio_pte_batch never sees it"))
        elif v.vmflags & {"pf", "io"}:
            skipped.append((v, "PFN-map/IO area: no struct page behind the entries, "
                               "never batched (vm_normal_page is NULL)"))
        else:
            for a, b in spans:
                pieces.append((v, a, b))
    return pieces, skipped


def capture_detailed(pid: int, *, anon_only: bool = False, start: int | None = None,
                     end: int | None = None, ranges: Sequence | None = None,
                     name: str | None = None, pmd: str = "pte",
                     max_bytes: int = DEFAULT_MAX_BYTES,
                     progress: Callable[[int, int], None] | bool | None = None) -> Capture:
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
    if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or pid <= 0:
        raise ValueError(f"pid: must be a positive integer, got {pid!r}")
    pid = int(pid)
    if pmd not in ("pte", "skip"):
        raise ValueError(f"pmd: must be 'pte' or 'skip', got {pmd!r}")
    rng = _norm_ranges(start, end, ranges)
    report = _progress_fn(progress)

    st = _stat(pid)
    if st is None:
        raise ProcessExitedError(f"pid: no process {pid}")
    start_time = st[1]
    kfd = _open(KPAGEFLAGS, "kpageflags")
    try:
        pfd = _open(_proc(pid, "pagemap"), "pagemap")
        try:
            comm = _read_text(pid, "comm").strip()
            vmas = read_vmas(pid)
            pieces, skipped = _select(vmas, rng, anon_only, name)
            if not pieces:
                raise ValueError(f"capture: no VMA of process {pid} matches the filter "
                                 f"(anon_only={anon_only}, ranges={_show_ranges(rng)}, name={name!r})"
                                 + (f"; {len(skipped)} matching VMA(s) are of a kind that is skipped"
                                    if skipped else ""))
            total = sum(b - a for _, a, b in pieces)
            if total > max_bytes:
                raise CaptureError(f"max_bytes: the selected VMAs span {total / 2**30:.1f} GiB of "
                                   f"virtual memory, over the limit of {max_bytes / 2**30:.1f} GiB; "
                                   f"narrow the capture (start/end, name, anon_only) or raise max_bytes")
            cap = _read_all(pid, pfd, kfd, pieces, total, report, start_time)
        finally:
            os.close(pfd)
    finally:
        os.close(kfd)
    va, pm, piece_of, blocks, kflags = cap

    # -- hidden PFNs (no CAP_SYS_ADMIN): every present page reads PFN 0 ------
    present = (pm & PM_PRESENT) != _U0
    pfn = pm & PM_PFN_MASK
    if np.any(present & (pfn == _U0)):
        raise PermissionError(f"pagemap: present pages of process {pid} read PFN 0: the kernel hides "
                              f"PFNs from readers without CAP_SYS_ADMIN; run as root")

    problems: list[str] = []
    notes: list[str] = []
    _check_alive(pid, start_time, "during the capture")
    after = read_vmas(pid, smaps=False)
    changed = sorted({v for v, lo, hi in pieces if not _still_there(v, lo, hi, after)},
                     key=lambda v: v.start)
    for v in changed:
        problems.append(f"VMA {v.describe()} vanished or changed during the capture; "
                        f"its entries are as read, its bounds may be stale")

    # -- folios --------------------------------------------------------------
    head_pfn, folio_nr, head_flags, covered, bad = _folios(blocks, kflags)
    pv, ppfn = va[present], pfn[present]
    bi = np.searchsorted(blocks, ppfn >> np.uint64(KPF_BLOCK_SHIFT))
    col = (ppfn & np.uint64(KPF_BLOCK - 1)).astype(np.intp)
    pflags = kflags[bi, col] if ppfn.size else np.zeros(0, dtype=np.uint64)
    in_compound = (pflags & np.uint64((1 << KPF_COMPOUND_HEAD) | (1 << KPF_COMPOUND_TAIL))) != _U0
    orphan = in_compound & ~covered[bi, col] if ppfn.size else np.zeros(0, dtype=bool)
    nopage = (pflags & np.uint64(1 << KPF_NOPAGE)) != _U0
    if bad and ppfn.size:
        # only runs that hold a mapped page matter; other processes' folios share the blocks
        sp = np.sort(ppfn)
        lo = np.array([b[0] for b in bad], dtype=np.uint64)
        hi = lo + np.array([max(b[1], 1) for b in bad], dtype=np.uint64)
        hit = np.searchsorted(sp, hi, side="left") > np.searchsorted(sp, lo, side="left")
        bad = [b for b, h in zip(bad, hit) if h]
    else:
        bad = []
    if bad:
        shown = "; ".join(f"PFN {p:#x}: {w}" for p, _, w in bad[:3])
        problems.append(f"kpageflags: {len(bad)} compound run(s) are inconsistent ({shown}"
                        f"{'; ...' if len(bad) > 3 else ''}) - a folio split or freed during the "
                        f"capture?  No folio was invented for them")
    if orphan.any():
        problems.append(f"kpageflags: {int(orphan.sum())} mapped page(s) are compound pages outside "
                        f"any consistent folio (first at {int(pv[orphan][0]):#x}, PFN "
                        f"{int(ppfn[orphan][0]):#x}); they appear as order-0 in the snapshot")
    if nopage.any():
        problems.append(f"kpageflags: {int(nopage.sum())} mapped PFN(s) have no struct page "
                        f"(first {int(ppfn[nopage][0]):#x}); they appear as order-0")

    # keep only folios that are mapped in the snapshot
    if head_pfn.size:
        fi = np.searchsorted(head_pfn, ppfn, side="right") - 1
        inside = (fi >= 0) & (ppfn < head_pfn[np.maximum(fi, 0)] + folio_nr[np.maximum(fi, 0)])
        used = np.unique(fi[inside])
    else:
        fi = np.zeros(ppfn.size, dtype=np.intp)
        inside = np.zeros(ppfn.size, dtype=bool)
        used = np.zeros(0, dtype=np.intp)
    f_pfn, f_nr, f_kf = head_pfn[used], folio_nr[used], head_flags[used]
    f_flags = (np.where((f_kf >> np.uint64(KPF_ANON)) & _U1, FOLIO_ANON, 0)
               | np.where((f_kf >> np.uint64(KPF_SWAPBACKED)) & _U1, FOLIO_SWAPBACKED, 0)).astype(np.uint8)

    # -- PTE bits --------------------------------------------------------------
    ppm = pm[present]
    vma_of = piece_of[present]       # index into pieces
    perms = [p[0].perms for p in pieces]
    v_write = np.array([p[1] == "w" for p in perms], dtype=bool)
    v_shared = np.array([p[3] == "s" for p in perms], dtype=bool)
    v_exec = np.array([p[2] == "x" for p in perms], dtype=bool)
    page_anon = ((pflags >> np.uint64(KPF_ANON)) & _U1).astype(bool)
    excl = (ppm & PM_EXCLUSIVE) != _U0
    write = v_write[vma_of] & (v_shared[vma_of] | (page_anon & excl))
    pte = X86_64.make_pte(ppfn, write=write, soft_dirty=(ppm & PM_SOFT_DIRTY) != _U0,
                          uffd_wp=(ppm & PM_UFFD_WP) != _U0, nx=~v_exec[vma_of])

    # -- PMD-mapped THPs: aligned 2 MiB runs mapping one 512-page folio in order ---
    pmd_va = _pmd_mapped(pv, ppfn, fi, inside, head_pfn, folio_nr)
    if pmd_va.size:
        per_vma = {}
        for a in pmd_va.tolist():
            for v, lo, hi in pieces:
                if lo <= a < hi:
                    per_vma.setdefault(v, 0)
                    per_vma[v] += 1
                    break
        confirm = []
        for v, n in per_vma.items():
            confirm.append(f"{v.describe()}: {n} found, smaps says {v.pmd_mapped_bytes >> 21} PMD-mapped")
        how = ("kept as full PTE tables of one 512-page folio, as reclaim sees them after "
               "split_huge_pmd (zap takes them whole with zap_huge_pmd and never batches them)"
               if pmd == "pte" else "left out (their entries are none)")
        notes.append(f"{pmd_va.size} aligned 2 MiB run(s) are mapped by one whole 512-page folio "
                     f"in order, i.e. PMD-mapped THPs (or their PTE-mapped equivalent): {how}. "
                     + "; ".join(confirm[:4]) + ("; ..." if len(confirm) > 4 else ""))
        if pmd == "skip":
            drop = np.isin(pv & ~np.uint64(PMD_SIZE - 1), pmd_va)
            pv, pte = pv[~drop], pte[~drop]
            keep_f = np.isin(used, fi[inside & ~drop])
            f_pfn, f_nr, f_flags = f_pfn[keep_f], f_nr[keep_f], f_flags[keep_f]

    # -- VMAs (clipped pieces; merged ranges keep pieces of one VMA apart) ----------
    vs = np.array([lo for _, lo, _ in pieces], dtype=np.uint64)
    ve = np.array([hi for _, _, hi in pieces], dtype=np.uint64)
    clipped = [v for v, lo, hi in pieces if (lo, hi) != (v.start, v.end)]
    if clipped:
        notes.append(f"{len(clipped)} VMA(s) clipped to the requested range; scan and unmap stop "
                     f"at a clipped end as at a VMA end")
    swapped = int(np.count_nonzero((pm & PM_SWAP) != _U0))
    if swapped:
        notes.append(f"{swapped} swapped-out page(s) are none PTEs (swap entries are not modelled)")
    notes.append("write is guessed (VMA writable and shared, or anon page mapped exclusively), "
                 "accessed and dirty are cleared: pagemap does not expose them")
    for v, why in skipped:
        notes.append(f"skipped {v.describe()}: {why}")

    # smaps' "uw": the VMA is registered for userfaultfd write-protect
    vflags = np.array([VMA_UFFD_WP if "uw" in v.vmflags else 0 for v, _, _ in pieces], dtype=np.uint8)

    ptes, table_va = _tables(pv, pte)
    space = AddressSpace(ptes, table_va, vs, ve, np.ascontiguousarray(f_pfn, dtype=np.uint64),
                         np.ascontiguousarray(f_nr, dtype=np.uint64), np.ascontiguousarray(f_flags),
                         vma_flags=vflags)
    large = f_nr > _U1
    stats = {
        "vmas": len(pieces), "skipped_vmas": len(skipped), "virtual_bytes": int(total),
        "pages_read": int(total) >> PAGE_SHIFT, "present": int(present.sum()), "swapped": swapped,
        "folios": int(f_pfn.size), "large_folios": int(large.sum()),
        "pages_in_large_folios": int(f_nr[large].sum()) if large.any() else 0,
        "kpageflags_blocks": int(blocks.size), "pmd_mapped": int(pmd_va.size),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return Capture(space=space, pid=pid, comm=comm, vmas=[v for v, _, _ in pieces],
                   skipped=skipped, pmd_mapped=pmd_va, notes=notes, problems=problems, stats=stats)


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
    buf = np.empty(PAGEMAP_BLOCK, dtype=np.uint64)   # reused: no allocation per block
    done = 0
    for k, (v, lo, hi) in enumerate(pieces):
        for a in range(lo, hi, PAGEMAP_BLOCK * PAGE_SIZE):
            b = min(hi, a + PAGEMAP_BLOCK * PAGE_SIZE)
            n = (b - a) >> PAGE_SHIFT
            e = read_pagemap(pfd, a, b, out=buf[:n])
            keep = np.flatnonzero(e & (PM_PRESENT | PM_SWAP))   # holes carry only soft-dirty
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
        sys.stderr.write(f"capture: pagemap {done / 2**20:,.0f} / {total / 2**20:,.0f} MiB ({pct:.0f}%)\n")
        sys.stderr.flush()
    return show


def capture(pid: int, *, anon_only: bool = False, start: int | None = None, end: int | None = None,
            ranges: Sequence | None = None, name: str | None = None, pmd: str = "pte",
            allow_partial: bool = False, max_bytes: int = DEFAULT_MAX_BYTES,
            progress: Callable[[int, int], None] | bool | None = None) -> AddressSpace:
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
    cap = capture_detailed(pid, anon_only=anon_only, start=start, end=end, ranges=ranges, name=name,
                           pmd=pmd, max_bytes=max_bytes, progress=progress)
    if cap.partial and not allow_partial:
        raise PartialCaptureError(f"capture of process {pid} is partial: {cap.problems[0]}"
                                  f"{f' (+{len(cap.problems) - 1} more)' if len(cap.problems) > 1 else ''}; "
                                  f"pass allow_partial=True (--allow-partial) to keep it", cap)
    return cap.space
