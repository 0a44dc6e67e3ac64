"""ptebatch thpmaps: the kernel tool's counters, on synthetic pages and on a real process.

The synthetic tests run anywhere.  The real ones need root, /proc/kpageflags,
THP for madvise and the 64 kB mTHP size (switched on in sysfs while the child
process faults its memory, and restored after, even on failure); they skip
with the reason otherwise.  Set PTEBATCH_THPMAPS to a copy of the kernel's
tools/mm/thpmaps to compare its output with ours on the same process.
"""

import json
import os
import platform
import re
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest

from ptebatch.cli import main
from ptebatch.live import thpmaps as T
from ptebatch.live.procfs import KPF_ANON, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_THP

HERE = os.path.dirname(os.path.abspath(__file__))
THP = "/sys/kernel/mm/transparent_hugepage"
MTHP_64K = f"{THP}/hugepages-64kB/enabled"
CGROUP_V2 = "/sys/fs/cgroup/unified"

HEAD, TAIL, ANON, THPF = (
    1 << KPF_COMPOUND_HEAD,
    1 << KPF_COMPOUND_TAIL,
    1 << KPF_ANON,
    1 << KPF_THP,
)


# -- synthetic pages ------------------------------------------------------------------


def folio(pfn0, nr, anon=True):
    """kpageflags of a folio of ``nr`` pages: a head then tails, THP, anon or not."""
    base = THPF | (ANON if anon else 0)
    return [base | HEAD] + [base | TAIL] * (nr - 1)


def count(vfn, pfn, flags, vma=None, n_vmas=1, tails=(), cont=()):
    vma = np.zeros(len(vfn), dtype=np.intp) if vma is None else np.asarray(vma, dtype=np.intp)
    # the flags of each page's PFN + 1: a compound tail where listed in ``tails``
    nxt = [TAIL if int(p) + 1 in set(tails) else 0 for p in pfn]
    return T.count_thp(
        np.asarray(vfn, dtype=np.uint64),
        np.asarray(pfn, dtype=np.uint64),
        np.asarray(flags, dtype=np.uint64),
        np.asarray(nxt, dtype=np.uint64),
        vma,
        n_vmas,
        cont,
    )


def test_an_aligned_folio_counts_aligned_and_an_unaligned_one_unaligned():
    # 16 pages of one folio at vfn 0x100 (a multiple of 16): 16 pages, order 4, aligned.
    c = count(np.arange(0x100, 0x110), np.arange(0x5000, 0x5010), folio(0x5000, 16))
    assert c.aligned[0, 0, 4] == 16 and c.unaligned.sum() == 0 and c.partial.sum() == 0
    # the same folio at vfn 0x101: not a multiple of 16, so unaligned
    c = count(np.arange(0x101, 0x111), np.arange(0x5000, 0x5010), folio(0x5000, 16))
    assert c.unaligned[0, 0, 4] == 16 and c.aligned.sum() == 0


def test_partial_folios_at_both_ends_of_a_range():
    # pages 8..15 of folio X (tails: no head before them), then folio Y whole, then pages
    # 0..3 of folio Z whose page 4 (the PFN after the range) is a tail: 8 + 4 = 12 partial,
    # Y (16 pages at vfn 0x208, not a multiple of 16) unaligned.
    flags = folio(0, 16)[8:] + folio(0, 16) + folio(0, 16)[:4]
    pfn = np.arange(0x7008, 0x7008 + 28)
    c = count(np.arange(0x200, 0x200 + 28), pfn, flags, tails=[0x7008 + 28])
    assert c.partial[0, 0] == 12
    assert c.unaligned[0, 0, 4] == 16 and c.aligned.sum() == 0
    # without the tail after the range, Z's 4 pages are a whole folio of order 2 (aligned:
    # vfn 0x218 is a multiple of 4)
    c = count(np.arange(0x200, 0x200 + 28), pfn, flags)
    assert c.partial[0, 0] == 8 and c.aligned[0, 0, 2] == 4


def test_the_cut_folio_s_kind_wraps_to_the_vma_s_last_thp_page():
    # The tool takes the kind of a cut folio's pages from the page before its head; when the
    # head is the VMA's first THP page, that index is -1 of the VMA's arrays: the VMA's last
    # THP page.  VMA 0: 8 anon pages of a cut folio, then (another range) one file THP page;
    # VMA 1: one anon THP page.  The 8 pages count as file (VMA 0's last THP page), not anon
    # (the last page of all).
    flags = folio(0, 16)[:8] + [THPF | TAIL] + [THPF | ANON | TAIL]
    vfn = list(range(0x300, 0x308)) + [0x400, 0x500]
    pfn = list(range(0x9000, 0x9008)) + [0x20001, 0x30001]
    c = count(vfn, pfn, flags, vma=[0] * 9 + [1], n_vmas=2, tails=[0x9008])
    # each single page is a range without a head: 1 page partial of its own kind
    assert c.partial[1, 0] == 8 + 1 and c.partial[0, 0] == 0 and c.partial[0, 1] == 1


def test_non_thp_pages_are_ignored_and_ranges_break_at_vma_ends():
    # order-0 pages (no THP flag) count nowhere; a folio split across two VMAs is two ranges
    flags = [0] * 4 + folio(0, 16)
    vfn = np.arange(0x500, 0x514)
    c = count(vfn, np.arange(0x8000, 0x8014), flags, vma=[0] * 12 + [1] * 8, n_vmas=2)
    # VMA 0: head at 0x504 and 7 more pages, then the range ends at the VMA end; the next
    # PFN is not reported as a tail here, so it is a whole folio of 8 pages (order 3, vfn
    # 0x504 not a multiple of 8: unaligned).  VMA 1: 8 tails, partial.
    assert c.unaligned[0, 0, 3] == 8 and c.partial[0, 1] == 8 and c.partial[0, 0] == 0


def test_cont_blocks_need_equal_offsets_and_no_head_inside():
    # two 16-page folios back to back, physically contiguous, at vfn 0x600 (aligned):
    # --cont 64K (order 4) finds 2 blocks, --cont 128K (order 5) none (a head inside)
    flags = folio(0, 16) + folio(0, 16)
    c = count(np.arange(0x600, 0x620), np.arange(0xA000, 0xA020), flags, cont=[4, 5])
    assert c.cont[4][0, 0] == 32 and c.cont[5][0, 0] == 0
    # shifted by one virtual page: offsets modulo 16 differ, no block at all
    c = count(np.arange(0x601, 0x621), np.arange(0xA000, 0xA020), flags, cont=[4])
    assert c.cont[4][0, 0] == 0


def test_vma_counters_take_pmd_mapped_memory_off():
    # a 512-page aligned folio (a PMD-mapped THP) with smaps AnonHugePages 2048 kB: the PTE
    # counter is 512 - 512 pages = 0 kB, the PMD counter is smaps' 2048 kB, and the 64K
    # cont-pte counter is 32 blocks * 16 pages - 512 = 0
    c = count(np.arange(0x800, 0xA00), np.arange(0x40000, 0x40200), folio(0, 512), cont=[4])
    out = T._vma_counters(c, 0, (2048, 0), [4])
    assert out["anon-thp-pmd-aligned-2048kB"] == 2048
    assert out["anon-thp-pte-aligned-2048kB"] == 0
    assert out["anon-cont-pmd-aligned-64kB"] == 2048
    assert out["anon-cont-pte-aligned-64kB"] == 0
    assert list(out) == [label for label, _ in T.counter_labels([4])]


def test_format_matches_the_tool_s_layout():
    stats = {"anon-thp-pte-aligned-64kB": ("anon", 64), "file-thp-pte-partial": ("file", 0)}
    # label, colon, padding to 32 columns, the value right-aligned in 8, " kB"; 64 of 256 kB
    # anonymous is 25% (width 3); no percentage when the kind's total is 0
    lines = T.format_stats(stats, 256, 0, inc_empty=True)
    assert lines == [
        "anon-thp-pte-aligned-64kB:" + " " * (32 - 26) + "      64 kB (25%)",
        "file-thp-pte-partial:" + " " * (32 - 21) + "       0 kB",
    ]
    assert T.format_stats(stats, 256, 0, inc_empty=False) == lines[:1]


@pytest.mark.parametrize(
    "text, order", [("64K", 4), ("64k", 4), ("8192", 1), ("2M", 9), ("1m", 8), (131072, 5)]
)
def test_parse_cont(text, order):
    assert T.parse_cont(text) == order


@pytest.mark.parametrize(
    "text, words",
    [
        ("4K", "at least 2 pages"),
        ("0", "at least 2 pages"),
        ("48K", "not a power of two"),
        ("4M", "above the PMD size"),
        ("64KB", "not a size"),
        ("x", "not a size"),
    ],
)
def test_parse_cont_refuses(text, words):
    with pytest.raises(ValueError, match=f"cont: .*{words}"):
        T.parse_cont(text)


def test_cli_bad_cont_is_one_line_and_exit_2(capsys):
    assert main(["thpmaps", "--pid", str(os.getpid()), "--cont", "48K"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ptebatch: error: cont:")


def test_cli_count_needs_periodic(capsys):
    assert main(["thpmaps", "--count", "2"]) == 2
    assert "--count" in capsys.readouterr().err


def test_cli_caller_needs_batching(capsys):
    assert main(["thpmaps", "--caller", "zap"]) == 2
    assert "--batching" in capsys.readouterr().err


# -- a real process --------------------------------------------------------------------


def _selected(path):
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def _real_skip_reason():
    if platform.machine() != "x86_64":
        return "x86-64 only (4 kB pages, 2 MB PMDs)"
    if os.geteuid() != 0:
        return "needs root: pagemap hides PFNs and /proc/kpageflags is unreadable otherwise"
    if not os.path.exists("/proc/kpageflags"):
        return "no /proc/kpageflags (CONFIG_PROC_PAGE_MONITOR off)"
    enabled = _selected(f"{THP}/enabled")
    if enabled in (None, "never"):
        return f"transparent huge pages unavailable (enabled: {enabled})"
    if _selected(MTHP_64K) is None:
        return f"no 64 kB mTHP size on this kernel ({MTHP_64K} missing)"
    return None


REAL_SKIP = _real_skip_reason()
real = pytest.mark.skipif(REAL_SKIP is not None, reason=REAL_SKIP or "")


@contextmanager
def mthp_64k(mode="madvise"):
    """Switch the 64 kB mTHP size to ``mode`` and restore it afterwards, whatever happens."""
    before = _selected(MTHP_64K)
    try:
        with open(MTHP_64K, "w") as fh:
            fh.write(mode)
        yield
    finally:
        with open(MTHP_64K, "w") as fh:
            fh.write(before)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """The child process with its layouts: (pid, {name: (start, end)})."""
    folder = tmp_path_factory.mktemp("thpmaps")
    # the sysfs switch is needed only while the child faults its memory
    with mthp_64k():
        p = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "thpmaps_child.py"), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = p.stdout.readline()
    try:
        if not line:
            pytest.fail(f"the child process failed to map its layouts (exit {p.wait()})")
        ranges = {k: tuple(v) for k, v in json.loads(line).items()}
        yield p.pid, ranges
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def _pages(pid, start, end):
    """PFNs and kpageflags of [start, end) in ``pid``, read directly (the test's own reader)."""
    n = (end - start) >> 12
    with open(f"/proc/{pid}/pagemap", "rb") as fh:
        fh.seek((start >> 12) * 8)
        pm = np.frombuffer(fh.read(8 * n), dtype=np.uint64)
    assert np.all(pm >> np.uint64(63)), "every page of the layout is present"
    pfn = pm & np.uint64((1 << 55) - 1)
    with open("/proc/kpageflags", "rb") as fh:
        flags = []
        for p in pfn.tolist():
            fh.seek(p * 8)
            flags.append(int.from_bytes(fh.read(8), "little"))
    return pfn, np.array(flags, dtype=np.uint64)


def _need_folios(pid, rng, nr, what):
    """Skip unless [start, end) maps whole ``nr``-page folios, each PFN-contiguous from its head."""
    pfn, flags = _pages(pid, *rng)
    heads = (flags & np.uint64(HEAD)) != 0
    ok = (
        pfn.size % nr == 0
        and np.all(heads[::nr])
        and not np.any(heads.reshape(-1, nr)[:, 1:])
        and np.all(pfn.reshape(-1, nr) - pfn.reshape(-1, nr)[:, :1] == np.arange(nr))
        and np.all(pfn[::nr] % nr == 0)
    )
    if not ok:
        pytest.skip(f"the kernel did not give {what} ({nr}-page folios) this time")


def _report_vma(report, pid, start):
    for p in report.processes:
        if p.pid == pid:
            for v in p.vmas:
                if v.vma.start == start:
                    return v
    raise AssertionError(f"no VMA at {start:#x} in the report of {pid}")


def nonzero(v):
    return {k: kb for k, kb in v.counters.items() if kb}


@real
def test_counters_of_known_layouts(child):
    pid, r = child
    _need_folios(pid, r["pmd"], 512, "a 2 MB THP")
    _need_folios(pid, r["mthp_aligned"], 16, "64 kB mTHPs")
    _need_folios(pid, r["mthp_unaligned"], 16, "64 kB mTHPs")
    _need_folios(pid, r["file_64k"], 16, "a 64 kB file folio")
    rep = T.thpmaps([pid], cont=["64K"])

    # A PMD-mapped 2 MB THP: smaps AnonHugePages 2048 kB is the PMD counter (and the 64K
    # cont-pmd one); its 512 PTE-visible pages are taken off the PTE counters (512 - 512 = 0).
    v = _report_vma(rep, pid, r["pmd"][0])
    assert nonzero(v) == {"anon-thp-pmd-aligned-2048kB": 2048, "anon-cont-pmd-aligned-64kB": 2048}
    assert (v.anon_kb, v.file_kb) == (2048, 0)

    # 8 aligned 64 kB folios: 8 * 64 = 512 kB aligned, and 512 kB of aligned 64K blocks.
    v = _report_vma(rep, pid, r["mthp_aligned"][0])
    assert nonzero(v) == {"anon-thp-pte-aligned-64kB": 512, "anon-cont-pte-aligned-64kB": 512}

    # mremap moved folios 2..5 to 4 kB past a 64 kB boundary: 4 * 64 = 256 kB unaligned, no
    # 64K block (virtual and physical offsets modulo 64 kB differ); each source half keeps
    # two aligned folios (128 kB).
    v = _report_vma(rep, pid, r["mthp_unaligned"][0])
    assert nonzero(v) == {"anon-thp-pte-unaligned-64kB": 256}
    for half in ("mthp_src_lo", "mthp_src_hi"):
        v = _report_vma(rep, pid, r[half][0])
        assert nonzero(v) == {"anon-thp-pte-aligned-64kB": 128, "anon-cont-pte-aligned-64kB": 128}

    # Pages 8..23 of four 64 kB folios unmapped: the low VMA holds pages 0..7 of folio 0
    # (its page 8 is still a tail: 8 pages = 32 kB partial); the high one pages 8..15 of
    # folio 1 (tails, no head: 32 kB partial) and folios 2 and 3 whole (128 kB aligned).
    v = _report_vma(rep, pid, r["partial_lo"][0])
    assert nonzero(v) == {"anon-thp-pte-partial": 32}
    v = _report_vma(rep, pid, r["partial_hi"][0])
    assert nonzero(v) == {
        "anon-thp-pte-aligned-64kB": 128,
        "anon-thp-pte-partial": 32,
        "anon-cont-pte-aligned-64kB": 128,
    }

    # File pages: a 2 MB file folio mapped by a PMD (smaps FilePmdMapped 2048 kB), a 64 kB
    # file folio aligned, and 16 kB of order-0 shmem pages (in no counter, 16 kB of file).
    v = _report_vma(rep, pid, r["file_pmd"][0])
    if v.counters["file-thp-pmd-aligned-2048kB"] != 2048:
        pytest.skip("the 2 MB file folio was not PMD-mapped this time")
    assert nonzero(v) == {"file-thp-pmd-aligned-2048kB": 2048, "file-cont-pmd-aligned-64kB": 2048}
    v = _report_vma(rep, pid, r["file_64k"][0])
    assert nonzero(v) == {"file-thp-pte-aligned-64kB": 64, "file-cont-pte-aligned-64kB": 64}
    assert (v.anon_kb, v.file_kb) == (0, 64)
    v = _report_vma(rep, pid, r["shmem_small"][0])
    assert nonzero(v) == {} and (v.anon_kb, v.file_kb) == (0, 16)

    # the rollup is the sum over every VMA of the process
    stats, anon, file = rep.rollup()
    for label, _ in T.counter_labels([4]):
        assert stats[label][1] == sum(x.counters.get(label, 0) for x in rep.processes[0].vmas)
    assert anon == sum(x.anon_kb for x in rep.processes[0].vmas)


@real
def test_cli_rollup_text(child, capsys):
    pid, r = child
    assert main(["thpmaps", "--pid", str(pid), "--rollup", "--cont", "64K", "--inc-empty"]) == 0
    out = capsys.readouterr().out.splitlines()
    # every counter once, in the tool's order, each "label: <8 digits> kB (pct)"
    assert [line.split(":")[0] for line in out] == [label for label, _ in T.counter_labels([4])]
    assert all(re.fullmatch(r"[\w-]+: +\d+ kB \( *\d+%\)", line) for line in out)


@real
def test_periodic_reports_count_times(child, capsys):
    pid, _ = child
    args = ["thpmaps", "--pid", str(pid), "--rollup", "--periodic", "1", "--count", "2"]
    assert main(args) == 0
    blocks = capsys.readouterr().out.split("\n\n")
    # two reports, each followed by an empty line (the last split piece is the trailing "")
    assert len(blocks) == 3 and blocks[0] == blocks[1] and blocks[2] == ""


@real
def test_batching_per_vma(child):
    pid, r = child
    _need_folios(pid, r["mthp_aligned"], 16, "64 kB mTHPs")
    _need_folios(pid, r["mthp_unaligned"], 16, "64 kB mTHPs")
    rep = T.thpmaps([pid], batching=[("zap", "6.18"), ("lazyfree", "6.18")])
    assert rep.presets == [("zap", "6.18"), ("lazyfree", "6.18")]
    # zap: each 64 kB folio is one batch of 16 PTEs (none crosses a table or VMA end)
    for name, folios in (("mthp_aligned", 8), ("mthp_unaligned", 4)):
        zap, lazy = _report_vma(rep, pid, r[name][0]).batching
        assert (zap["batches"], zap["ptes_batched"], zap["ptes_single"]) == (folios, 16 * folios, 0)
        assert zap["table_overruns"] == zap["vma_overruns"] == 0
        # reclaim batches only lazyfree folios in 6.18; these are swap-backed: 1 PTE a step
        assert (lazy["batches"], lazy["ptes_batched"], lazy["ptes_single"]) == (
            16 * folios,
            0,
            16 * folios,
        )
    # the half folios: 8 PTEs up to the VMA end (low), 8 tails then two folios (high)
    zap = _report_vma(rep, pid, r["partial_lo"][0]).batching[0]
    assert (zap["batches"], zap["ptes"], zap["ptes_per_batch"]) == (1, 8, 8.0)
    zap = _report_vma(rep, pid, r["partial_hi"][0]).batching[0]
    assert (zap["batches"], zap["ptes"]) == (3, 40)
    # the PMD-mapped THP is taken by its PMD: no PTE batch at all
    zap = _report_vma(rep, pid, r["pmd"][0]).batching[0]
    assert zap["batches"] == 0
    # the rollup adds up the VMAs
    roll = rep.batching_rollup()
    every = [v.batching[0] for v in rep.processes[0].vmas if v.batching]
    assert roll[0]["batches"] == sum(b["batches"] for b in every)


@real
def test_cli_batching_json_defaults(child, capsys):
    pid, r = child
    assert main(["thpmaps", "--pid", str(pid), "--batching", "--json", "--cont", "64K"]) == 0
    obj = json.loads(capsys.readouterr().out)
    presets = [(p["caller"], p["kernel"]) for p in obj["batching_presets"]]
    running, newest = T.running_release(), T.newest_release()
    kernels = [k for k in dict.fromkeys([running, newest])]
    assert presets == [(c, k) for k in kernels for c in T.DEFAULT_CALLERS]
    (proc,) = obj["processes"]
    vma = next(v for v in proc["vmas"] if int(v["start"], 16) == r["mthp_aligned"][0])
    assert vma["counters"]["anon-thp-pte-aligned-64kB"] == 512
    assert [b["caller"] for b in vma["batching"]] == [c for c, _ in presets]
    assert len(obj["rollup"]["batching"]) == len(presets)


@real
def test_same_as_the_kernel_tool(child):
    tool = os.environ.get("PTEBATCH_THPMAPS")
    if not tool or not os.path.isfile(tool):
        pytest.skip("set PTEBATCH_THPMAPS to a copy of the kernel's tools/mm/thpmaps")
    pid, _ = child
    args = ["--pid", str(pid), "--cont", "64K", "--inc-empty"]
    for rollup in (True, False):
        theirs = subprocess.run(
            [sys.executable, tool] + args + (["--rollup"] if rollup else []),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ours = T.thpmaps([pid], cont=["64K"]).format(rollup=rollup, inc_empty=True)
        if rollup:
            assert ours == theirs.rstrip("\n")
        else:
            assert _by_vma(ours) == _by_vma(theirs)


def _by_vma(text):
    """{(pid, start): [counter lines]} of a per-VMA report (the path column may differ)."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"(\d{10}): ([0-9a-f]{16})-", line)
        if m:
            cur = (m.group(1), m.group(2))
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


@real
@pytest.mark.skipif(
    not os.path.isfile(os.path.join(CGROUP_V2, "cgroup.procs")), reason="no cgroup v2 hierarchy"
)
def test_cgroup_v2(child):
    pid, r = child
    _need_folios(pid, r["mthp_aligned"], 16, "64 kB mTHPs")
    group = os.path.join(CGROUP_V2, f"ptebatch-thpmaps-{os.getpid()}")
    os.mkdir(group)
    try:
        with open(os.path.join(group, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))
        rep = T.thpmaps(cgroup=group)
        # the child is the cgroup's only process
        assert rep.scope == "cgroup" and [p.pid for p in rep.processes] == [pid]
        v = _report_vma(rep, pid, r["mthp_aligned"][0])
        assert v.counters["anon-thp-pte-aligned-64kB"] == 512
    finally:
        with open(os.path.join(CGROUP_V2, "cgroup.procs"), "w") as fh:
            fh.write(str(pid))
        os.rmdir(group)


def test_cgroup_path_must_be_a_cgroup(tmp_path):
    with pytest.raises(ValueError, match="cgroup: .*no cgroup.procs"):
        T.thpmaps(cgroup=str(tmp_path))


@real
def test_system_wide_skips_what_it_cannot_read(child):
    pid, r = child
    rep = T.thpmaps(cont=["64K"])
    assert rep.scope == "system"
    v = _report_vma(rep, pid, r["mthp_aligned"][0])
    assert v.counters["anon-thp-pte-aligned-64kB"] == 512
    # whatever was skipped says why, and is not in the report
    listed = {p.pid for p in rep.processes}
    assert all(why and p not in listed for p, why in rep.skipped)


@real
def test_a_named_pid_that_is_gone_is_an_error():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(ProcessLookupError):
        T.thpmaps([p.pid])


@real
def test_read_flags_agrees_with_reading_each_pfn(child):
    pid, r = child
    # PFNs of several layouts, out of order and repeated (as a shared page is)
    pfn = np.concatenate([_pages(pid, *r[k])[0] for k in ("partial_hi", "pmd", "file_64k")])
    pfn = np.concatenate((pfn, pfn[::-1][:40]))
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        flags, nxt = T.read_flags(fd, pfn)
        want = [int.from_bytes(os.pread(fd, 8, int(p) * 8), "little") for p in pfn]
        want_next = [int.from_bytes(os.pread(fd, 8, (int(p) + 1) * 8), "little") for p in pfn]
    finally:
        os.close(fd)
    assert flags.tolist() == want and nxt.tolist() == want_next


@real
def test_progress_counts_processes(child):
    pid, _ = child
    seen = []
    T.thpmaps(
        [pid, os.getpid()],
        progress=lambda task, done, total, note="": seen.append((task, done, total)),
    )
    mine = [(d, t) for task, d, t in seen if task == "thpmaps"]
    assert mine[0] == (0, 2) and mine[-1] == (2, 2)
