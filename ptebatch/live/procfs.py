"""Readers of /proc/PID/smaps, /proc/PID/pagemap and /proc/kpageflags, in large vectorised blocks.

The capture (:mod:`ptebatch.live.capture`) builds on these; they know nothing
of page tables or folios, only of what /proc gives and how it fails.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..arch import PAGE_SHIFT

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

PAGEMAP_BLOCK = 1 << 16  # entries per pagemap read (512 KiB)
KPF_BLOCK_SHIFT = 10  # kpageflags is read in aligned 1024-page blocks (order 10)
KPF_BLOCK = 1 << KPF_BLOCK_SHIFT
KPF_READ_MAX = 1 << 17  # PFNs per kpageflags read (1 MiB)
KPAGEFLAGS = "/proc/kpageflags"

_U1 = np.uint64(1)


class CaptureError(OSError):
    """A capture that cannot give a trustworthy snapshot (the message says why)."""


class ProcessExitedError(CaptureError, ProcessLookupError):
    """The process does not exist, or exited while it was being captured."""


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
    pmd_mapped_bytes: int = 0  # AnonHugePages + ShmemPmdMapped + FilePmdMapped

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
        return self.inode == 0 and (
            self.path == ""
            or self.path in ("[heap]", "[stack]")
            or self.path.startswith("[anon:")
            or self.path.startswith("[stack:")
        )

    def describe(self) -> str:
        return f"[{self.start:#x}, {self.end:#x}) {self.perms} {self.path or '(anonymous)'}"


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
        raise PermissionError(
            f"{path}: permission denied ({exc.strerror}); reading another "
            f"process's memory map needs ptrace read access to it (same user "
            f"or root; Yama ptrace_scope or a container can still forbid "
            f"it)"
        ) from None


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
    if smaps:
        return [v for v, _ in read_smaps(pid)]
    return [v for v, _ in _parse_maps(_read_text(pid, "maps"))]


def read_smaps(pid: int) -> list:
    """Parse /proc/PID/smaps: every VMA with its numeric fields.

    Parameters
    ----------
    pid : int

    Returns
    -------
    list of (Vma, dict)
        In address order; the dict maps each numeric field (``Rss``,
        ``Anonymous``, ``AnonHugePages``...) to its value (kB for sizes), in
        the order smaps lists them.
    """
    return _parse_maps(_read_text(pid, "smaps"))


def _parse_maps(text: str) -> list:
    out: list = []
    cur: dict | None = None
    fields: dict = {}

    def flush():
        if cur is not None:
            out.append((Vma(**cur), fields))

    for line in text.splitlines():
        # field lines start with a capital ("Rss:"), VMA lines with a hex digit
        m = None if "A" <= line[:1] <= "Z" else _HEADER.match(line)
        if m:
            flush()
            cur = dict(
                start=int(m.group(1), 16),
                end=int(m.group(2), 16),
                perms=m.group(3),
                offset=int(m.group(4), 16),
                dev=m.group(5),
                inode=int(m.group(6)),
                path=m.group(7),
                vmflags=frozenset(),
                pmd_mapped_bytes=0,
            )
            fields = {}
            continue
        if cur is None:
            continue
        key, _, rest = line.partition(":")
        if key == "VmFlags":
            cur["vmflags"] = frozenset(rest.split())
            continue
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
            if key in ("AnonHugePages", "ShmemPmdMapped", "FilePmdMapped"):
                cur["pmd_mapped_bytes"] += int(parts[0]) * 1024
    flush()
    return out


def _open(path: str, what: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if what == "kpageflags":
            raise CaptureError(
                f"{path}: does not exist (kernel without "
                f"CONFIG_PROC_PAGE_MONITOR); folio boundaries cannot be "
                f"recovered, nothing was captured"
            ) from None
        raise ProcessExitedError(f"pid: no such process ({path} does not exist)") from None
    except PermissionError:
        if what == "kpageflags":
            raise PermissionError(
                f"{path}: permission denied; reading page flags needs root "
                f"(CAP_SYS_ADMIN), nothing was captured"
            ) from None
        raise PermissionError(
            f"{path}: permission denied; reading another process's pagemap "
            f"needs ptrace read access to it (same user or root; Yama "
            f"ptrace_scope or a container can still forbid it)"
        ) from None


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
        raise ProcessExitedError(
            f"pagemap: read of [{start:#x}, {end:#x}) came back short "
            f"({max(got, 0)} of {n} entries): the process exited during the "
            f"capture; nothing was written"
        )
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
            _pread_into(fd, flat[b0 * KPF_BLOCK : b1 * KPF_BLOCK], first_pfn * 8)
    return blocks, flags


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of the process, or None when it is gone."""
    try:
        with open(_proc(pid, "stat"), "rb") as fh:
            s = fh.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rfind(")") + 2 :].split()
    return rest[0], rest[19]


def _check_alive(pid: int, start_time: str, when: str) -> None:
    st = _stat(pid)
    if st is None or st[1] != start_time or st[0] in ("Z", "X", "x"):
        raise ProcessExitedError(
            f"pid: process {pid} exited {when}; its pagemap may have read as "
            f"empty, so nothing was written"
        )
