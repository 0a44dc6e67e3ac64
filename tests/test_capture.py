"""Capture from /proc and the real reproduction of the thread's layout.

These run for real on the project's machines (root, x86-64, THP in madvise
or always mode, /proc/kpageflags present) and skip elsewhere with the reason.
"""

import ctypes
import importlib
import json
import os
import platform
import signal
import subprocess
import sys

import numpy as np
import pytest

import ptebatch as pb
from ptebatch.arch import PAGE_SIZE, PMD_SIZE, X86_64
from ptebatch.cli import main

# the modules, even if the package exports functions of the same name
C = importlib.import_module("ptebatch.live.capture")
RP = importlib.import_module("ptebatch.live.reproduce")
IS_ROOT = os.geteuid() == 0
HAS_KPF = os.path.exists("/proc/kpageflags")
THP = RP.thp_status()
THP_MODE = THP["pmd_size"] if THP["pmd_size"] not in (None, "inherit") else THP["enabled"]

needs_root = pytest.mark.skipif(
    not IS_ROOT,
    reason="needs root: pagemap hides PFNs and "
    "/proc/kpageflags is unreadable without CAP_SYS_ADMIN",
)
needs_kpf = pytest.mark.skipif(
    not HAS_KPF, reason="no /proc/kpageflags (CONFIG_PROC_PAGE_MONITOR off)"
)
needs_x86 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="x86-64 only (4 KiB pages, 2 MiB PMDs)"
)
needs_thp = pytest.mark.skipif(
    THP_MODE in (None, "never"), reason=f"2 MiB transparent huge pages unavailable ({THP})"
)
real = [needs_x86, needs_root, needs_kpf]

libc = RP._libc()
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class Region:
    """An anonymous private mapping of this process, unmapped on exit."""

    def __init__(self, nbytes, align=PAGE_SIZE, hugepage=False):
        # PROT_NONE guard pages at both ends: no neighbour can merge with the VMA while we read
        self.len = nbytes + (align if align > PAGE_SIZE else 0) + 2 * PAGE_SIZE
        self.base = libc.mmap(None, self.len, 3, RP.MAP_PRIVATE | RP.MAP_ANONYMOUS, -1, 0)
        assert self.base not in (None, RP.MAP_FAILED)
        assert libc.mprotect(self.base, PAGE_SIZE, 0) == 0
        assert libc.mprotect(self.base + self.len - PAGE_SIZE, PAGE_SIZE, 0) == 0
        self.addr = (self.base + PAGE_SIZE + align - 1) & ~(align - 1)
        self.size = nbytes
        if hugepage:
            assert libc.madvise(self.addr, nbytes, RP.MADV_HUGEPAGE) == 0

    def touch(self, page, value=0x5A, n=1):
        ctypes.memset(self.addr + page * PAGE_SIZE, value, n * PAGE_SIZE)

    def __enter__(self):
        return self

    def unmap(self):
        if self.base is not None:
            libc.munmap(self.base, self.len)
            self.base = None

    def __exit__(self, *exc):
        self.unmap()


def pagemap(addr, n):
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        return np.frombuffer(os.pread(fd, 8 * n, (addr // PAGE_SIZE) * 8), dtype=np.uint64)
    finally:
        os.close(fd)


def entry(space, va):
    t = int(np.searchsorted(space.table_va, np.uint64(va & ~(PMD_SIZE - 1))))
    if t == space.n_tables or int(space.table_va[t]) != va & ~(PMD_SIZE - 1):
        return 0
    return int(space.ptes[t, (va >> 12) & 511])


# -- capture of this very process -------------------------------------------------


def _real(f):
    for m in real:
        f = m(f)
    return f


def check_6_15_unmap(space):
    """6.15's reclaim unmap of a captured space, checked against the rules it follows
    (docs/model.md section 5): every mapped page of a large folio is unmapped exactly once
    (one row per page, or one batch per whole folio), and only a lazyfree folio is batched,
    all or nothing (nr equals the folio's size, stop reason folio_end)."""
    r = pb.unmap(space, kernel="6.15")
    # the mapped pages of large folios, counted from the arrays: present, not special,
    # inside a VMA, with a PFN inside a listed folio (listed folios are the large ones)
    flat = space.ptes.reshape(-1)
    present = (flat & np.uint64(X86_64.present)) != 0
    g = np.flatnonzero(present & ((flat & np.uint64(X86_64.special)) == 0))
    va = space.table_va[g // 512] + (g % 512).astype(np.uint64) * np.uint64(PAGE_SIZE)
    v = np.searchsorted(space.vma_start, va, side="right") - 1
    in_vma = (v >= 0) & (va < space.vma_end[np.maximum(v, 0)])
    pfn = X86_64.pte_pfn(flat[g])
    f = np.searchsorted(space.folio_pfn, pfn, side="right") - 1
    f0 = np.maximum(f, 0)
    in_folio = np.zeros(g.size, dtype=bool)  # no listed folio: nothing to unmap in batches
    if space.n_folios:
        in_folio = (f >= 0) & (pfn < space.folio_pfn[f0] + space.folio_nr[f0])
    mapped = in_vma & in_folio
    assert int(r.nr.sum()) == int(np.count_nonzero(mapped))
    assert r.folios == np.unique(f[mapped]).size
    row_f = np.searchsorted(space.folio_pfn, r.folio_pfn)
    multi = r.nr > 1
    assert (r.nr[multi] == space.folio_nr[row_f[multi]]).all()
    assert set(r.reason_names()[multi]) <= {"folio_end"}
    lazyfree = space.folio_flags[row_f] == pb.space.FOLIO_ANON  # anon, not swap-backed
    assert not (multi & ~lazyfree).any()
    return r


@_real
def test_capture_agrees_with_pagemap_for_known_pages():
    with Region(64 * PAGE_SIZE) as r:
        written = [0, 1, 2, 17, 40, 63]
        for p in written:
            r.touch(p)
        cap = C.capture_detailed(os.getpid(), start=r.addr, end=r.addr + r.size)
        assert not cap.partial, cap.problems
        space = cap.space
        pm = pagemap(r.addr, 64)
        assert space.n_vmas == 1
        assert (int(space.vma_start[0]), int(space.vma_end[0])) == (r.addr, r.addr + r.size)
        for p in range(64):
            va = r.addr + p * PAGE_SIZE
            pte = entry(space, va)
            present = bool(int(pm[p]) >> 63)
            assert present == (p in written)
            assert bool(pte & X86_64.present) == present
            if present:
                assert int(X86_64.pte_pfn(pte)) == int(pm[p]) & ((1 << 55) - 1)
                assert bool(pte & X86_64.soft_dirty) == bool((int(pm[p]) >> 55) & 1)
                assert pte & X86_64.write  # anon, exclusive, in a writable VMA
                assert not pte & (X86_64.young | X86_64.dirty_any)
                assert pte & X86_64.bits["NX"]  # the VMA is not executable
        # THP is not advised and exactly the written pages are present (checked above), so
        # no large folio was faulted in: every written page is order-0, and zap takes each
        # alone (stop reason order0)
        assert space.n_folios == 0
        z = pb.scan(space, kernel="6.16")
        assert z.va.tolist() == [r.addr + p * PAGE_SIZE for p in written]
        assert z.nr.tolist() == [1] * len(written)
        assert set(z.reason_names()) == {"order0"}


@_real
@needs_thp
def test_capture_recovers_a_pmd_mapped_thp():
    with Region(PMD_SIZE, align=PMD_SIZE, hugepage=True) as r:
        r.touch(0, n=512)
        pm = pagemap(r.addr, 512)
        head = int(pm[0]) & ((1 << 55) - 1)
        cap = C.capture_detailed(os.getpid(), start=r.addr, end=r.addr + r.size)
        assert not cap.partial, cap.problems
        if cap.space.n_folios == 0:
            pytest.fail(f"the kernel gave no THP although THP is {THP_MODE}: {cap.stats}")
        s = cap.space
        assert [int(x) for x in s.folio_pfn] == [head] and [int(x) for x in s.folio_nr] == [512]
        assert int(s.folio_flags[0]) == pb.space.FOLIO_ANON | pb.space.FOLIO_SWAPBACKED
        assert [int(a) for a in cap.pmd_mapped] == [r.addr]
        assert any("PMD-mapped" in n and "smaps says 1 PMD-mapped" in n for n in cap.notes)
        assert np.array_equal(X86_64.pte_pfn(s.ptes[0]), head + np.arange(512, dtype=np.uint64))
        # zap batches the whole table as one folio; skip leaves it out
        assert [int(n) for n in pb.scan(s).nr] == [512]
        skipped = C.capture_detailed(os.getpid(), start=r.addr, end=r.addr + r.size, pmd="skip")
        assert skipped.space.n_folios == 0 and not np.any(skipped.space.ptes)


@_real
def test_whole_self_capture_is_accepted_by_scan_and_unmap():
    cap = C.capture_detailed(os.getpid())
    s = cap.space
    assert s.n_vmas > 5 and cap.stats["present"] > 1000
    assert any(v.path == "[heap]" or v.anonymous for v in cap.vmas)
    assert any(v.path == "[vsyscall]" for v, _ in cap.skipped) or platform.machine() != "x86_64"
    # the snapshot round-trips and both walks accept it (the heap may grow while we read:
    # then the capture says so instead of pretending)
    for p in cap.problems:
        assert "changed during the capture" in p
    r = pb.scan(s, kernel="6.16")
    assert r.present_ptes == int(np.count_nonzero(s.ptes & np.uint64(1)))
    check_6_15_unmap(s)


@_real
def test_cli_capture_of_a_child_process(tmp_path, capsys):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; b = bytearray(8 << 20); print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline().strip() == b"ready"
        out = tmp_path / "child.npz"
        code = main(["capture", "--pid", str(child.pid), "-o", str(out), "--json", "--progress"])
        o, e = capsys.readouterr()
        assert code == 0, e
        summary = json.loads(o)
        assert summary["pid"] == child.pid and not summary["partial"]
        assert "capture: pagemap" in e  # progress on stderr
        space = pb.load(out)
        assert space == pb.load(out) and space.info() == summary["space"]
        assert pb.scan(space).present_ptes >= (8 << 20) // PAGE_SIZE
        check_6_15_unmap(space)
        code = main(["scan", str(out), "--json"])
        assert code == 0
    finally:
        child.kill()
        child.wait()


# -- honest failures -------------------------------------------------------------


@_real
def test_process_that_exits_mid_capture():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; b = bytearray(64 << 20); print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout.readline().strip() == b"ready"
    killed = []

    def kill_once(done, total):
        if not killed:
            child.send_signal(signal.SIGKILL)
            child.wait()
            killed.append(done)

    with pytest.raises(C.ProcessExitedError, match="exited"):
        C.capture(child.pid, progress=kill_once)
    assert killed


def test_no_such_process():
    with pytest.raises(ProcessLookupError, match="no process"):
        C.capture(2**22 + 12345)


@_real
@pytest.mark.parametrize("allow_partial", [False, True])
def test_vma_that_vanishes_mid_capture_is_marked_partial(allow_partial):
    with Region(16 * PAGE_SIZE) as a, Region(16 * PAGE_SIZE) as b:
        a.touch(0, n=16)
        b.touch(0, n=16)
        first, second = sorted((a, b), key=lambda r: r.addr)
        ranges = [
            (first.addr, first.addr + 16 * PAGE_SIZE),
            (second.addr, second.addr + 16 * PAGE_SIZE),
        ]
        # munmap the second region after the first block is read
        if allow_partial:
            cap = C.capture_detailed(
                os.getpid(), ranges=ranges, progress=lambda d, t: second.unmap()
            )
        else:
            with pytest.raises(C.PartialCaptureError, match="vanished or changed") as ei:
                C.capture(os.getpid(), ranges=ranges, progress=lambda d, t: second.unmap())
            cap = ei.value.capture
        assert cap.partial and any("vanished or changed" in p for p in cap.problems)
        assert cap.summary()["partial"] is True


@_real
def test_cli_refuses_a_partial_capture_without_allow_partial(tmp_path, capsys, monkeypatch):
    real_detailed = C.capture_detailed

    def fake(*a, **k):
        cap = real_detailed(*a, **k)
        cap.problems.append("VMA [0x1000, 0x2000) vanished or changed during the capture")
        return cap

    monkeypatch.setattr(C, "capture_detailed", fake)
    out = tmp_path / "p.npz"
    code = main(
        ["capture", "--pid", str(os.getpid()), "--name", "[stack]", "-o", str(out), "--quiet"]
    )
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("ptebatch: error: capture of process") and not out.exists()
    assert err.count("\n") == 1
    code = main(
        [
            "capture",
            "--pid",
            str(os.getpid()),
            "--name",
            "[stack]",
            "-o",
            str(out),
            "--quiet",
            "--allow-partial",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 3 and "PARTIAL snapshot" in err and pb.load(out).n_vmas == 1


@needs_x86
def test_missing_kpageflags(monkeypatch):
    monkeypatch.setattr(C, "KPAGEFLAGS", "/proc/no-such-kpageflags")
    with pytest.raises(
        C.CaptureError, match="does not exist .*folio boundaries cannot be recovered"
    ):
        C.capture(os.getpid())


@pytest.mark.skipif(not IS_ROOT, reason="needs root to drop to an unprivileged user")
def test_not_root_gives_a_clear_message():
    # import everything first: the interpreter's own files may be unreadable to nobody
    code = (
        "import os, sys, json\n"
        "import ptebatch, ptebatch.live.capture\n"
        "from ptebatch.cli import main, build_parser\n"
        "build_parser()\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "sys.exit(main(['capture', '--pid', str(os.getpid()), '-o', '/tmp/never-written.npz']))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("ptebatch: error: ") and "root" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_pfns_hidden_is_detected(monkeypatch):
    # what an unprivileged reader sees: present pages with PFN 0
    real_read_all = C._read_all

    def hide(*a, **k):
        va, pm, of, blocks, kflags = real_read_all(*a, **k)
        return va, pm & ~C.PM_PFN_MASK, of, blocks, kflags

    monkeypatch.setattr(C, "_read_all", hide)
    if not (IS_ROOT and HAS_KPF):
        pytest.skip("needs root and /proc/kpageflags to get as far as reading PFNs")
    with pytest.raises(PermissionError, match="PFN 0.*run as root"):
        C.capture(os.getpid(), name="[stack]")


def test_hugetlb_pfnmap_and_vsyscall_are_skipped_with_a_reason():
    v = dict(perms="rw-p", offset=0, dev="00:00", inode=0, path="")
    vmas = [
        C.Vma(0x200000, 0x400000, vmflags=frozenset({"rd", "wr", "ht"}), **v),
        C.Vma(0x400000, 0x401000, vmflags=frozenset({"rd", "pf", "io"}), **v),
        C.Vma(0x600000, 0x602000, vmflags=frozenset({"rd", "wr"}), **v),
        C.Vma(
            0xFFFFFFFFFF600000,
            0xFFFFFFFFFF601000,
            perms="--xp",
            offset=0,
            dev="00:00",
            inode=0,
            path="[vsyscall]",
        ),
    ]
    pieces, skipped = C._select(vmas, None, False, None)
    assert [(v.start, lo, hi) for v, lo, hi in pieces] == [(0x600000, 0x600000, 0x602000)]
    reasons = [r for _, r in skipped]
    assert "hugetlb" in reasons[0] and "PFN-map" in reasons[1] and "vsyscall" in reasons[2]
    # a range clips the VMA
    pieces, _ = C._select(vmas, [(0x601000, 0x700000)], False, None)
    assert [(lo, hi) for _, lo, hi in pieces] == [(0x601000, 0x602000)]


def test_inconsistent_kpageflags_never_make_a_folio():
    H, T = np.uint64(1 << C.KPF_COMPOUND_HEAD), np.uint64(1 << C.KPF_COMPOUND_TAIL)
    flags = np.zeros((1, C.KPF_BLOCK), dtype=np.uint64)
    flags[0, 0] = H
    flags[0, 1:4] = T  # 4 pages: a good order-2 folio at PFN 0x400
    flags[0, 8] = H
    flags[0, 9:11] = T  # 3 pages: not a power of two
    flags[0, 20] = H  # head with no tails
    flags[0, 30] = T  # orphan tail
    flags[0, 34] = H
    flags[0, 35:37] = T
    flags[0, 37] = H  # 34: 3 pages again (cut by the next head)
    flags[0, 38] = T
    pfn, nr, _, covered, bad = C._folios(np.array([1], dtype=np.uint64), flags)
    assert [int(x) for x in pfn] == [0x400] and [int(x) for x in nr] == [4]
    assert covered[0, :4].all() and not covered[0, 4:].any()
    whys = {p: w for p, _, w in bad}
    assert "not a power of two" in whys[0x408] and "no tail" in whys[0x414]
    assert "not aligned" in whys[0x425]  # 37: 2 pages, but odd PFN


@_real
@needs_thp
def test_capture_never_invents_a_folio_from_contradicting_kpageflags(monkeypatch):
    real_read = C.read_kpageflags

    def torn(fd, pfns):
        # as if the folio were being split while we read: page 100 lost its tail bit
        blocks, flags = real_read(fd, pfns)
        for _b, row in zip(blocks, flags):
            heads = np.flatnonzero((row >> np.uint64(C.KPF_COMPOUND_HEAD)) & np.uint64(1))
            for h in heads:
                if h % 512 == 0 and h + 512 <= row.size:
                    row[h + 100] &= ~np.uint64(1 << C.KPF_COMPOUND_TAIL)
        return blocks, flags

    with Region(PMD_SIZE, align=PMD_SIZE, hugepage=True) as r:
        r.touch(0, n=512)
        monkeypatch.setattr(C, "read_kpageflags", torn)
        cap = C.capture_detailed(os.getpid(), start=r.addr, end=r.addr + r.size)
        assert cap.partial and cap.space.n_folios == 0
        assert any("not a power of two" in p and "No folio was invented" in p for p in cap.problems)
        assert any("outside any consistent folio" in p for p in cap.problems)
        with pytest.raises(C.PartialCaptureError, match="partial"):
            C.capture(os.getpid(), start=r.addr, end=r.addr + r.size)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pid"):
        C.capture(0)
    with pytest.raises(ValueError, match="pmd"):
        C.capture(os.getpid(), pmd="huge")
    with pytest.raises(ValueError, match="range"):
        C.capture(os.getpid(), start=0x2000, end=0x1000)
    with pytest.raises(ValueError, match="size"):
        RP.reproduce_thread(size=3 << 20)
    with pytest.raises(ValueError, match="below"):
        RP.reproduce_thread(size=64 << 10, below=64 << 10)


@_real
def test_filter_that_matches_nothing(capsys):
    code = main(
        [
            "capture",
            "--pid",
            str(os.getpid()),
            "--name",
            "no-such-mapping-xyz",
            "-o",
            "/tmp/never.npz",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "no VMA" in err and "no-such-mapping-xyz" in err


# -- the thread's layout on this kernel -----------------------------------------------


@_real
@needs_thp
def test_reproduce_finds_the_straddling_folio_and_the_6_15_overrun():
    r = RP.reproduce_thread()
    f = r["folio"]
    assert f["order"] == 9 and f["nr"] == 512 and f["lazyfree"] and f["same_as_touched"]
    assert f["mapped_pages"] == 512
    a, b = f["tables"]
    assert a["entries"] == [511, 511] and a["pages"] == [0, 0]
    assert b["entries"] == [0, 510] and b["pages"] == [1, 511]
    assert int(b["table_va"], 16) - int(a["table_va"], 16) == PMD_SIZE
    assert int(b["table_va"], 16) == int(f["boundary"], 16)
    u15 = r["unmap_6_15"]
    assert u15["table_overruns"] == 1 and u15["read_past_end"] and u15["entries_past_table"] == 511
    assert r["unmap_6_16"] == {
        "batches": [1, 511],
        "reasons": ["pmd_end", "folio_end"],
        "table_overruns": 0,
    }
    assert r["synthetic"]["agrees"] and r["synthetic"]["same_ptes_pfns"]
    assert r["flags_at_capture"] == {"thp": True, "anon": True, "swapbacked": False}


@_real
@needs_thp
def test_reproduce_moving_part_of_the_folio():
    r = RP.reproduce_thread(size=64 << 10, below=4 << 10)
    f = r["folio"]
    assert f["nr"] == 512 and f["lazyfree"] and f["mapped_pages"] == 512
    assert f["tables"][0]["entries"] == [511, 511] and f["tables"][1]["entries"] == [0, 14]
    assert [t["pages"] for t in f["elsewhere"]] == [[16, 511]]
    assert r["unmap_6_15"]["table_overruns"] == 1
    # VMAs are walked in address order: the source may come before or after the target
    b = r["unmap_6_16"]["batches"]
    assert b in ([1, 15, 496], [496, 1, 15])
    assert r["unmap_6_16"]["table_overruns"] == 0


@_real
@needs_thp
def test_reproduce_without_lazyfree_does_not_batch():
    r = RP.reproduce_thread(lazyfree=False)
    assert not r["folio"]["lazyfree"] and r["folio"]["swapbacked"]
    assert r["unmap_6_15"]["table_overruns"] == 0


@_real
@needs_thp
def test_cli_reproduce_text_and_json(capsys):
    assert main(["reproduce"]) == 0
    out, _ = capsys.readouterr()
    assert "order 9 (512 pages), lazyfree" in out and "table_overruns 1" in out
    assert "kernel 6.16: batches [1, 511]" in out
    assert main(["reproduce", "--json", "--size", "2M", "--below", "8K"]) == 0
    out, _ = capsys.readouterr()
    r = json.loads(out)
    assert r["folio"]["tables"][0]["entries"] == [510, 511]
    assert r["unmap_6_16"]["batches"] == [2, 510]


def test_reproduce_explains_why_it_cannot(monkeypatch, capsys):
    monkeypatch.setattr(
        RP, "thp_status", lambda: {"enabled": "never", "defrag": "madvise", "pmd_size": "inherit"}
    )
    code = main(["reproduce"])
    _, err = capsys.readouterr()
    assert code == 2 and "transparent huge pages are disabled" in err
    monkeypatch.setattr(
        RP, "thp_status", lambda: {"enabled": "madvise", "defrag": "madvise", "pmd_size": "inherit"}
    )
    monkeypatch.setattr(RP.os, "geteuid", lambda: 1000)
    if platform.machine() == "x86_64":
        code = main(["reproduce"])
        _, err = capsys.readouterr()
        assert code == 2 and "needs root" in err


# -- userfaultfd write-protect: smaps' "uw" becomes vma_flags, pagemap bit 57 the PTE bit ---

SYS_USERFAULTFD = 323  # x86-64
UFFDIO_API, UFFDIO_REGISTER, UFFDIO_WRITEPROTECT = 0xC018AA3F, 0xC020AA00, 0xC018AA06
UFFDIO_REGISTER_MODE_WP, UFFDIO_WRITEPROTECT_MODE_WP = 2, 1


def _uffd_write_protect(addr, nbytes):
    """Register [addr, addr + nbytes) for uffd write-protect and protect it; returns the fd."""
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        pytest.skip(f"userfaultfd unavailable (errno {ctypes.get_errno()})")
    api = (ctypes.c_uint64 * 3)(0xAA, 0, 0)
    reg = (ctypes.c_uint64 * 4)(addr, nbytes, UFFDIO_REGISTER_MODE_WP, 0)
    wp = (ctypes.c_uint64 * 3)(addr, nbytes, UFFDIO_WRITEPROTECT_MODE_WP)
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    for request, arg in ((UFFDIO_API, api), (UFFDIO_REGISTER, reg), (UFFDIO_WRITEPROTECT, wp)):
        if libc.ioctl(fd, request, ctypes.addressof(arg)) != 0:
            os.close(fd)
            pytest.skip(f"userfaultfd write-protect unsupported here (ioctl {request:#x} failed)")
    return fd


@_real
def test_capture_marks_a_uffd_wp_registered_vma():
    with Region(32 * PAGE_SIZE) as r:
        r.touch(0, n=32)
        fd = _uffd_write_protect(r.addr, r.size)
        try:
            space = C.capture(os.getpid(), start=r.addr, end=r.addr + r.size)
            assert space.vma_flags.tolist() == [pb.space.VMA_UFFD_WP]
            pm = pagemap(r.addr, 32)
            assert ((pm >> np.uint64(57)) & np.uint64(1)).all()  # the kernel set uffd-wp
            ptes = np.array(
                [entry(space, r.addr + p * PAGE_SIZE) for p in range(32)], dtype=np.uint64
            )
            assert X86_64.pte_uffd_wp(ptes).all()
        finally:
            os.close(fd)
    with Region(8 * PAGE_SIZE) as r:
        r.touch(0, n=8)
        assert C.capture(os.getpid(), start=r.addr, end=r.addr + r.size).vma_flags.tolist() == [0]


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0, -1, 1.5, True])
def test_max_bytes_must_be_a_positive_integer(bad):
    # issue 12: the CLI's --max-gib 1e300 became int(inf) (OverflowError); the library
    # checks max_bytes before it reads anything of the process
    with pytest.raises(ValueError, match=r"^max_bytes: must be a positive integer \(bytes\)"):
        C.capture_detailed(os.getpid(), max_bytes=bad)
