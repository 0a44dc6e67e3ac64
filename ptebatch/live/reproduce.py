"""Build the LKML thread's layout on the running kernel, capture it, and run the rules over it.

The steps (all in the calling process, cleaned up afterwards):

1. mmap an anonymous region, take a 2 MiB-aligned block of it, MADV_HUGEPAGE,
   write every page: the kernel faults in one PMD-mapped 2 MiB THP.
2. Check with pagemap and kpageflags that it is one folio (head + 511 tails).
3. Optionally MADV_FREE the whole block while it is still PMD-mapped: that
   marks the folio lazyfree without splitting it.  (MADV_FREE after the move
   walks one page table at a time, finds the folio only partly in each, and
   splits it instead: measured on 6.18.)
4. mremap the first ``size`` bytes with MREMAP_FIXED into a PROT_NONE
   reservation of our own, ``below`` bytes under a 2 MiB boundary: the PMD
   is split, the folio stays whole and is now mapped by two PTE tables.
5. Capture those ranges of this process with :func:`ptebatch.capture`, find
   the folio that straddles a boundary, and run :func:`ptebatch.unmap` with
   6.15 (no table clamp) and 6.16 (clamped) over the snapshot.
"""

from __future__ import annotations

import errno
import os
import platform
import struct
from typing import NamedTuple

import numpy as np

from ..arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, X86_64
from ..space import FOLIO_ANON, FOLIO_SWAPBACKED
from .capture import CaptureError, capture_detailed
from .procfs import (
    KPF_ANON,
    KPF_COMPOUND_HEAD,
    KPF_COMPOUND_TAIL,
    KPF_SWAPBACKED,
    KPF_THP,
    PM_PFN_MASK,
    PM_PRESENT,
)

__all__ = ["reproduce_thread", "format_report", "ReproduceError", "thp_status"]

PROT_NONE, PROT_READ, PROT_WRITE = 0, 1, 2
MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x4000, 0x100000
MADV_FREE, MADV_HUGEPAGE = 8, 14
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
MAP_FAILED = (1 << (8 * struct.calcsize("P"))) - 1  # (void *) -1, as ctypes reads it
THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"


class ReproduceError(CaptureError):
    """The running kernel or machine cannot build the layout (the message says why)."""


def _libc():
    """libc through ctypes, with the argument types of the calls used here."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mremap.restype = ctypes.c_void_p
    libc.mremap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    libc.madvise.restype = ctypes.c_int
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _fail(what: str) -> ReproduceError:
    import ctypes

    e = ctypes.get_errno()
    return ReproduceError(
        f"reproduce: {what} failed: {os.strerror(e)} ({errno.errorcode.get(e, e)})"
    )


def _selected(text: str) -> str:
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else text.strip()


def thp_status() -> dict:
    """The THP settings that decide whether a 2 MiB anonymous folio can be made.

    Returns
    -------
    dict
        ``enabled``, ``defrag`` and ``pmd_size`` (``hugepages-2048kB/enabled``)
        as the selected words, ``None`` where the file does not exist.
    """
    out = {}
    for key, path in (
        ("enabled", f"{THP_SYSFS}/enabled"),
        ("defrag", f"{THP_SYSFS}/defrag"),
        ("pmd_size", f"{THP_SYSFS}/hugepages-2048kB/enabled"),
    ):
        try:
            with open(path) as fh:
                out[key] = _selected(fh.read())
        except OSError:
            out[key] = None
    return out


def _preflight(status: dict) -> None:
    if platform.machine() != "x86_64":
        raise ReproduceError(
            f"reproduce: needs x86-64 (4 KiB pages, 2 MiB PMDs); this is {platform.machine()}"
        )
    if status["enabled"] is None:
        raise ReproduceError(
            f"reproduce: {THP_SYSFS} is missing: the kernel has no transparent "
            f"huge pages, so it cannot make a large anonymous folio"
        )
    pmd_mode = (
        status["pmd_size"] if status["pmd_size"] not in (None, "inherit") else status["enabled"]
    )
    if pmd_mode == "never":
        raise ReproduceError(
            f"reproduce: 2 MiB transparent huge pages are disabled "
            f"(enabled={status['enabled']}, "
            f"hugepages-2048kB={status['pmd_size']}); the kernel cannot make the "
            f"large folio.  Enable with: echo madvise > {THP_SYSFS}/enabled"
        )
    if os.geteuid() != 0:
        raise ReproduceError(
            "reproduce: needs root: pagemap hides PFNs and "
            "/proc/kpageflags is unreadable without CAP_SYS_ADMIN, so the folio "
            "cannot be seen"
        )


def _read_u64(path: str, index: int, count: int) -> np.ndarray:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, 8 * count, 8 * index)
    finally:
        os.close(fd)
    return np.frombuffer(data, dtype=np.uint64)


def _check_thp(addr: int) -> tuple[int, int]:
    """Head PFN and kpageflags of the block at ``addr`` if it is one 2 MiB folio, else raise."""
    pm = _read_u64("/proc/self/pagemap", addr >> PAGE_SHIFT, PTRS_PER_PTE)
    present = (pm & PM_PRESENT) != 0
    pfn = pm & PM_PFN_MASK
    if not present.all():
        raise ReproduceError(
            f"reproduce: only {int(present.sum())} of 512 pages are present after "
            f"touching the block"
        )
    if np.any(pfn == 0):
        raise ReproduceError(
            "reproduce: pagemap shows PFN 0: PFNs are hidden (needs CAP_SYS_ADMIN)"
        )
    head = int(pfn[0])
    kf = _read_u64("/proc/kpageflags", head, PTRS_PER_PTE)
    contiguous = bool(np.all(pfn == np.uint64(head) + np.arange(PTRS_PER_PTE, dtype=np.uint64)))
    is_head = bool((int(kf[0]) >> KPF_COMPOUND_HEAD) & 1)
    tails = int(np.count_nonzero((kf[1:] >> np.uint64(KPF_COMPOUND_TAIL)) & np.uint64(1)))
    if not (contiguous and is_head and tails == PTRS_PER_PTE - 1 and head % PTRS_PER_PTE == 0):
        st = thp_status()
        raise ReproduceError(
            f"reproduce: the kernel did not give a 2 MiB THP (PFNs contiguous: "
            f"{contiguous}, head: {is_head}, tails: {tails}/511; THP "
            f"enabled={st['enabled']}, defrag={st['defrag']}, "
            f"hugepages-2048kB={st['pmd_size']}); memory may be too fragmented, "
            f"try again or set defrag to madvise"
        )
    return head, int(kf[0])


def _flags(kf: int) -> dict:
    return {
        "thp": bool((kf >> KPF_THP) & 1),
        "anon": bool((kf >> KPF_ANON) & 1),
        "swapbacked": bool((kf >> KPF_SWAPBACKED) & 1),
    }


def reproduce_thread(
    size: int = PMD_SIZE, below: int = PAGE_SIZE, *, lazyfree: bool = True, attempts: int = 3
) -> dict:
    """Build the thread's layout with a real 2 MiB THP, capture it and run unmap over it.

    Runs in the calling process: it maps about ``size + 6 MiB`` of address
    space, moves part of it, reads its own pagemap and unmaps everything
    before returning.

    Parameters
    ----------
    size : int
        Bytes of the folio to move, from its first page: a multiple of 4 KiB,
        at most 2 MiB (the whole folio, the default).  Less moves a part; the
        rest stays mapped at the source.
    below : int
        Bytes of the moved part placed below the 2 MiB boundary: a multiple
        of 4 KiB, ``0 < below < size`` (default 4 KiB, as in the thread).
    lazyfree : bool
        MADV_FREE the folio while it is still PMD-mapped, before the move.
    attempts : int
        Tries at getting a 2 MiB THP (a fragmented machine may fail once).

    Returns
    -------
    dict
        JSON-ready report: ``kernel``, ``thp``, ``steps``, ``folio`` (the
        straddling folio: PFNs, order, flags, the two tables), ``unmap_6_15``,
        ``unmap_6_16`` and ``synthetic`` (the same layout from
        :func:`ptebatch.thread_layout`, when the whole folio was moved).

    Raises
    ------
    ValueError
        ``size`` or ``below`` breaks its rule.
    ReproduceError
        No THP, not root, not x86-64, or a system call failed.
    """
    for name, v in (("size", size), ("below", below)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected an integer number of bytes, got {type(v).__name__}")
    size, below = int(size), int(below)
    if size % PAGE_SIZE or not 2 * PAGE_SIZE <= size <= PMD_SIZE:
        raise ValueError(
            f"size: must be a multiple of 4096 from 8192 to 2 MiB (2097152), got {size}"
        )
    if below % PAGE_SIZE or not 0 < below < size:
        raise ValueError(
            f"below: must be a multiple of 4096 with 0 < below < size ({size}), got "
            f"{below}, so that the moved pages straddle the boundary"
        )
    status = thp_status()
    _preflight(status)
    libc = _libc()
    last: Exception | None = None
    for _ in range(max(1, int(attempts))):
        try:
            return _run(libc, status, size, below, lazyfree)
        except ReproduceError as exc:
            if "did not give a 2 MiB THP" not in str(exc):
                raise
            last = exc
    assert last is not None
    raise last


def _run(libc, status: dict, size: int, below: int, lazyfree: bool) -> dict:
    """Build the layout with real memory, capture it, and analyse it.

    Longer than 80 lines on purpose: every mapping it makes is owned by this
    frame and unmapped in its ``finally``, so the steps (mmap, THP fault,
    mremap below a 2 MiB boundary, MADV_FREE, capture) stay in one function.
    """
    import ctypes

    import ptebatch as pb

    steps: list[str] = []
    maps: list[tuple[int, int]] = []  # (addr, length) to munmap at the end
    try:
        src_len = 2 * PMD_SIZE
        src = libc.mmap(None, src_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if src in (None, MAP_FAILED):
            raise _fail("mmap of the source region")
        maps.append((src, src_len))
        block = (src + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        if libc.madvise(block, PMD_SIZE, MADV_HUGEPAGE) != 0:
            raise _fail("madvise(MADV_HUGEPAGE)")
        # not zero: the underused-THP shrinker splits zero-filled THPs
        ctypes.memset(block, 0x5A, PMD_SIZE)
        head, _ = _check_thp(block)
        steps.append(
            f"mmap {src_len >> 20} MiB anonymous, MADV_HUGEPAGE and write the "
            f"2 MiB-aligned block at {block:#x}: one THP, PFN {head:#x}, head + 511 tails "
            f"in kpageflags"
        )
        if lazyfree:
            if libc.madvise(block, PMD_SIZE, MADV_FREE) != 0:
                raise _fail("madvise(MADV_FREE)")
            kf_after = int(_read_u64("/proc/kpageflags", head, 1)[0])
            steps.append(
                f"MADV_FREE the block while PMD-mapped: the folio is lazyfree "
                f"(swapbacked {bool((kf_after >> KPF_SWAPBACKED) & 1)})"
            )
        res_len = size + 2 * PMD_SIZE
        res = libc.mmap(
            None, res_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0
        )
        if res in (None, MAP_FAILED):
            raise _fail("mmap of the target reservation")
        maps.append((res, res_len))
        boundary = (res + below + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        target = boundary - below
        moved = libc.mremap(block, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, target)
        if moved in (None, MAP_FAILED) or moved != target:
            raise _fail("mremap(MREMAP_MAYMOVE | MREMAP_FIXED)")
        # The source hole is no longer ours (the allocator may map there now): unmap only
        # what is left of the source, and the reservation, which now holds the target.
        maps[0:1] = [(src, block - src), (block + size, src + src_len - block - size)]
        # Refill the hole with PROT_NONE (if nothing took it) so no new mapping merges with
        # the rest of the folio's source VMA while it is captured.
        hole = libc.mmap(
            block,
            size,
            PROT_NONE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
        if hole == block:
            maps.append((block, size))
        elif hole not in (None, MAP_FAILED):
            libc.munmap(hole, size)  # an old kernel ignored the flag and put it elsewhere
        steps.append(
            f"mremap {_kib(size)} from {block:#x} to {target:#x}, {_kib(below)} below the "
            f"2 MiB boundary {boundary:#x}"
        )
        ranges = [(target, target + size)]
        if size < PMD_SIZE:
            # the rest of the folio, still at the source
            ranges.append((block + size, block + PMD_SIZE))
        cap = capture_detailed(os.getpid(), ranges=ranges)
        if cap.partial:
            raise ReproduceError(
                f"reproduce: the capture of this process is partial: {cap.problems[0]}"
            )
        space = cap.space
        steps.append(
            f"captured pid {os.getpid()}: {space.n_tables} tables, {space.n_vmas} VMAs, "
            f"{int(np.count_nonzero(space.folio_nr > 1))} large folio(s)"
        )
        report = _analyse(pb, space, head, target, boundary, size, below)
        report["kernel"] = platform.release()
        report["thp"] = status
        report["steps"] = steps
        report["pid"] = os.getpid()
        report["flags_at_capture"] = _flags(int(_read_u64("/proc/kpageflags", head, 1)[0]))
        return report
    finally:
        for addr, length in reversed(maps):
            if length > 0:
                libc.munmap(addr, length)


def _kib(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n >> 10} KiB"


def _analyse(pb, space, head, target, boundary, size, below) -> dict:
    """Find the straddling folio in the capture and run unmap 6.15 / 6.16 over it."""
    m = _mapped_entries(space)
    at_target = (m.va >= np.uint64(target)) & (m.va < np.uint64(target + size))
    f = _straddling_folio(space, m, at_target)
    f_pfn, f_nr = int(space.folio_pfn[f]), int(space.folio_nr[f])
    f_flags = int(space.folio_flags[f])
    lazy = (f_flags & (FOLIO_ANON | FOLIO_SWAPBACKED)) == FOLIO_ANON
    out = {"folio": _folio_report(space, m, f, at_target, head, boundary, lazy)}
    r15, out["unmap_6_15"] = _unmap_6_15(pb, space, target, f_pfn, f_nr, lazy)
    nr16, out["unmap_6_16"] = _unmap_6_16(pb, space, f_pfn)
    if size == PMD_SIZE or size == f_nr * PAGE_SIZE:
        out["synthetic"] = _synthetic(pb, space, f_pfn, f_nr, below, boundary, lazy, r15, nr16)
    return out


class _Mapped(NamedTuple):
    """The present entries of a snapshot, in table order."""

    t_idx: np.ndarray  # table index
    e_idx: np.ndarray  # entry index in the table
    va: np.ndarray
    pfn: np.ndarray
    fi: np.ndarray  # index of the folio whose head is at or below the PFN
    ok: np.ndarray  # the PFN lies inside folio fi


def _mapped_entries(space) -> _Mapped:
    """Every present entry of the snapshot with its address, PFN and folio."""
    ptes = space.ptes
    present = (ptes & np.uint64(X86_64.present)) != 0
    t_idx, e_idx = np.nonzero(present)
    va = space.table_va[t_idx] + e_idx.astype(np.uint64) * np.uint64(PAGE_SIZE)
    pfn = (ptes[t_idx, e_idx] & np.uint64(X86_64.pfn_mask)) >> np.uint64(PAGE_SHIFT)
    fi = np.searchsorted(space.folio_pfn, pfn, side="right") - 1
    ok = fi >= 0
    ok[ok] &= pfn[ok] < space.folio_pfn[fi[ok]] + space.folio_nr[fi[ok]]
    return _Mapped(t_idx, e_idx, va, pfn, fi, ok)


def _straddling_folio(space, m: _Mapped, at_target: np.ndarray) -> int:
    """The first large folio mapped at the target by more than one table, else raise."""
    straddling = []
    for f in np.unique(m.fi[m.ok & at_target]):
        sel = m.ok & at_target & (m.fi == f)
        if space.folio_nr[f] > 1 and np.unique(m.t_idx[sel]).size > 1:
            straddling.append(int(f))
    if not straddling:
        raise ReproduceError(
            "reproduce: no large folio straddles the 2 MiB boundary in the "
            "capture (was the folio split or reclaimed before it was read?)"
        )
    return straddling[0]


def _span(m: _Mapped, s: np.ndarray, f_pfn: int) -> dict:
    """First and last entry, address, page of the folio and PFN of the selected entries."""
    e, p, v = m.e_idx[s], m.pfn[s], m.va[s]
    return {
        "entries": [int(e.min()), int(e.max())],
        "va": [hex(int(v.min())), hex(int(v.max()))],
        "pages": [int(p.min()) - f_pfn, int(p.max()) - f_pfn],
        "pfn": [hex(int(p.min())), hex(int(p.max()))],
    }


def _folio_report(space, m: _Mapped, f: int, at_target, head, boundary, lazy) -> dict:
    """The straddling folio: PFNs, order, flags, and where its pages are mapped."""
    f_pfn, f_nr = int(space.folio_pfn[f]), int(space.folio_nr[f])
    f_flags = int(space.folio_flags[f])
    sel = m.ok & (m.fi == f)
    tables = []
    for t in np.unique(m.t_idx[sel & at_target]):
        tables.append(
            {
                "table_va": hex(int(space.table_va[t])),
                **_span(m, sel & at_target & (m.t_idx == t), f_pfn),
            }
        )
    rest = sel & ~at_target
    elsewhere = [
        {"table_va": hex(int(space.table_va[t])), **_span(m, rest & (m.t_idx == t), f_pfn)}
        for t in np.unique(m.t_idx[rest])
    ]
    return {
        "pfn": [hex(f_pfn), hex(f_pfn + f_nr - 1)],
        "order": f_nr.bit_length() - 1,
        "nr": f_nr,
        "anon": bool(f_flags & FOLIO_ANON),
        "swapbacked": bool(f_flags & FOLIO_SWAPBACKED),
        "lazyfree": lazy,
        "same_as_touched": f_pfn == head,
        "mapped_pages": int(sel.sum()),
        "boundary": hex(boundary),
        "tables": tables,
        "elsewhere": elsewhere,
    }


def _rows(r, f_pfn: int) -> tuple[list, list, int]:
    """Batch sizes, reasons and folio overruns of the unmap rows of the folio at ``f_pfn``."""
    m = r.folio_pfn == np.uint64(f_pfn)
    return (
        [int(x) for x in r.nr[m]],
        [str(x) for x in r.reason_names()[m]],
        int(np.count_nonzero(r.findings[m] & 1)),
    )


def _unmap_6_15(pb, space, target, f_pfn, f_nr, lazy) -> tuple:
    """unmap with 6.15 (no table clamp); returns the result and its report."""
    # 6.15: the batch from the folio's first page with max_nr = folio size, no table clamp
    first_t = int(np.searchsorted(space.table_va, np.uint64(target & ~(PMD_SIZE - 1))))
    first_e = (target >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)
    b15 = pb.folio_pte_batch(space.ptes[first_t], first_e, f_nr, f_pfn, f_nr, kernel="6.15")
    r15 = pb.unmap(space, kernel="6.15")
    nr15, _, over15 = _rows(r15, f_pfn)
    r15a = pb.unmap(space, kernel="6.15", oob="adjacent")
    nr15a, _, _ = _rows(r15a, f_pfn)
    return r15, {
        "max_nr": f_nr,
        "from_entry": first_e,
        "table_va": hex(int(space.table_va[first_t])),
        "entries_past_table": f_nr - (PTRS_PER_PTE - first_e) if lazy else 0,
        "read_past_end": bool(b15.read_past_end) and lazy,
        "last_entry_read": b15.last_read,
        "first_read_past_table": PTRS_PER_PTE,
        "bytes_past_table": (f_nr - (PTRS_PER_PTE - first_e)) * 8 if lazy else 0,
        "table_overruns": r15.table_overruns,
        "folio_overruns": over15,
        "steps": len(nr15),
        "batched_steps": sum(1 for n in nr15 if n > 1),
        "steps_if_next_table_follows": len(nr15a),
        "whole_folio_if_next_table_follows": bool(nr15a) and nr15a[0] == f_nr,
    }


def _unmap_6_16(pb, space, f_pfn) -> tuple:
    """unmap with 6.16 (clamped to the table); returns the folio's batches and the report."""
    r16 = pb.unmap(space, kernel="6.16")
    nr16, why16, _ = _rows(r16, f_pfn)
    return nr16, {
        "batches": nr16 if len(nr16) <= 8 else nr16[:8] + ["..."],
        "reasons": why16 if len(why16) <= 8 else why16[:8] + ["..."],
        "table_overruns": r16.table_overruns,
    }


def _synthetic(pb, space, f_pfn, f_nr, below, boundary, lazy, r15, nr16) -> dict:
    """The same layout from thread_layout, and whether it agrees with the capture."""
    syn = pb.thread_layout(
        folio_nr=f_nr,
        before_boundary=below // PAGE_SIZE,
        lazyfree=lazy,
        pfn=f_pfn,
        boundary=boundary,
    )
    s15, s16 = pb.unmap(syn, kernel="6.15"), pb.unmap(syn, kernel="6.16")
    mask = np.uint64(X86_64.pfn_mask | X86_64.present)
    captured = space.ptes[[int(np.searchsorted(space.table_va, t)) for t in syn.table_va]]
    return {
        "call": f"thread_layout(folio_nr={f_nr}, before_boundary={below // PAGE_SIZE}, "
        f"lazyfree={lazy})",
        "same_ptes_pfns": bool(np.array_equal(syn.ptes & mask, captured & mask)),
        "unmap_6_15_table_overruns": s15.table_overruns,
        "unmap_6_16_batches": [int(x) for x in s16.nr],
        "agrees": s15.table_overruns == r15.table_overruns and [int(x) for x in s16.nr] == nr16,
    }


def format_report(r: dict) -> str:
    """The report of :func:`reproduce_thread` as text."""
    f, u15, u16 = r["folio"], r["unmap_6_15"], r["unmap_6_16"]
    thp = r["thp"]
    lines = [
        f"ptebatch reproduce: Linux {r['kernel']}, THP enabled={thp['enabled']} "
        f"defrag={thp['defrag']} hugepages-2048kB={thp['pmd_size']}, pid {r['pid']}"
    ]
    lines += [f"  {i}. {s}" for i, s in enumerate(r["steps"], 1)]
    kind = "lazyfree" if f["lazyfree"] else ("anon, swapbacked" if f["anon"] else "file")
    lines.append("")
    lines.append(
        f"Folio across the 2 MiB boundary {f['boundary']}: PFN {f['pfn'][0]}-"
        f"{f['pfn'][1]}, order {f['order']} ({f['nr']} pages), {kind}, "
        f"{f['mapped_pages']} of its pages mapped"
    )
    for name, t in zip("AB", f["tables"]):
        lines.append(
            f"  table {name} {t['table_va']}: entries {t['entries'][0]}-{t['entries'][1]} "
            f"({t['va'][0]}-{t['va'][1]}) map pages {t['pages'][0]}-{t['pages'][1]}, "
            f"PFN {t['pfn'][0]}-{t['pfn'][1]}"
        )
    for t in f["elsewhere"]:
        lines.append(
            f"  left at the source, table {t['table_va']}: entries {t['entries'][0]}-"
            f"{t['entries'][1]} map pages {t['pages'][0]}-{t['pages'][1]}"
        )
    lines.append("")
    if f["lazyfree"]:
        lines.append(
            f"unmap, kernel 6.15: folio_pte_batch from entry {u15['from_entry']} of "
            f"table A with max_nr = {u15['max_nr']} (the folio size, no table clamp) may "
            f"scan {u15['entries_past_table']} entries ({u15['bytes_past_table']} bytes) "
            f"past the end of the page table; it reads entry "
            f"{u15['first_read_past_table']} (read past end: {u15['read_past_end']}) and "
            f"goes on while that memory looks like the folio's next PTEs"
        )
        follows = (
            "it would have unmapped all {} PTEs as one batch, clearing {} entries past "
            "the end of table A".format(u15["max_nr"], u15["entries_past_table"])
            if u15["whole_folio_if_next_table_follows"]
            else "the batch would still fail and fall back to single PTEs"
        )
        lines.append(
            f"  table_overruns {u15['table_overruns']}; with none past the table the "
            f"all-or-nothing batch fails: {u15['steps']} single-PTE steps.  Had table B's "
            f"page followed table A in memory, {follows}"
        )
    else:
        lines.append(
            f"unmap, kernel 6.15: the folio is not lazyfree, so reclaim does not batch it "
            f"(table_overruns {u15['table_overruns']}); pass lazyfree to see the overrun"
        )
    lines.append(
        f"unmap, kernel 6.16: batches {u16['batches']} ({', '.join(u16['reasons'])}), "
        f"table_overruns {u16['table_overruns']}"
    )
    if "synthetic" in r:
        s = r["synthetic"]
        lines.append(
            f"synthetic {s['call']}: same PFNs {s['same_ptes_pfns']}, 6.15 overruns "
            f"{s['unmap_6_15_table_overruns']}, 6.16 batches {s['unmap_6_16_batches']}; "
            f"agrees with the capture: {s['agrees']}"
        )
    return "\n".join(lines)
