"""Golden cases from real bugs and from the stated consequences in docs/model.md.

Expected values are derived from the layout in each test, not measured.
"""

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import X86_64
from ptebatch.workloads.layouts import THREAD_BOUNDARY, THREAD_PFN

IMPLS = [pytest.param(pb, id="jit"), pytest.param(pb.naive, id="naive")]
ALL_KERNELS = ["6.9", "6.14", "6.15", "6.16", "6.17", "6.18", "7.0"]


@pytest.mark.parametrize("impl", IMPLS)
def test_thread_layout_unmap_6_15_overruns_the_table(impl):
    space = pb.thread_layout()  # page 0 in entry 511 of table A, pages 1-15 in table B
    r = impl.unmap(space, kernel="6.15")
    assert r.table_overruns == 1
    # The scan from entry 511 reads entry 512 (none, with oob="none"): the
    # all-or-nothing batch fails and every page goes one at a time.
    assert r.nr.tolist() == [1] * 16
    assert r.findings[0] == pb.reasons.OVER_TABLE and not r.findings[1:].any()
    # With the next page-table page in memory after A, the kernel batches all 16.
    adj = impl.unmap(space, kernel="6.15", oob="adjacent")
    assert adj.nr.tolist() == [16] and adj.table_overruns == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ["6.15.7", "6.16", "6.17", "6.18", "7.0"])
def test_thread_layout_unmap_fixed_batches_1_then_15(impl, kernel):
    r = impl.unmap(pb.thread_layout(), kernel=kernel)
    start = THREAD_BOUNDARY - 4096
    assert r.nr.tolist() == [1, 15]
    assert r.va.tolist() == [start, THREAD_BOUNDARY]
    assert r.reason_names().tolist() == ["pmd_end", "folio_end"]
    assert r.table_overruns == 0 and r.vma_overruns == 0
    assert r.folio_pfn.tolist() == [THREAD_PFN, THREAD_PFN]


@pytest.mark.parametrize("impl", IMPLS)
def test_thread_layout_scan_unclamped_runs_past_the_table(impl):
    r = impl.scan(pb.thread_layout(), kernel="6.15", clamp="folio", oob="adjacent")
    assert r.nr.tolist() == [16]
    assert r.table_overruns == 1 and r.findings.tolist() == [pb.reasons.OVER_TABLE]
    clamped = impl.scan(pb.thread_layout(), kernel="6.15")
    assert clamped.nr.tolist() == [1, 15] and clamped.table_overruns == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_unclamped_scan_without_adjacent_table_stops_at_the_end_but_counts_the_read(impl):
    r = impl.scan(pb.thread_layout(), kernel="6.16", clamp="folio", oob="none")
    assert r.nr.tolist() == [1, 15]
    assert r.table_overruns == 1
    assert r.reason_names().tolist() == ["not_present", "folio_end"]


@pytest.mark.parametrize("impl", IMPLS)
def test_unmap_before_6_15_never_batches(impl):
    r = impl.unmap(pb.thread_layout(), kernel="6.14")
    assert r.nr.tolist() == [1] * 16 and set(r.reason_names()) == {"single"}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ["6.16", "7.0"])
def test_swapbacked_anon_folio_is_never_batched_by_reclaim(impl, kernel):
    r = impl.unmap(pb.thread_layout(lazyfree=False), kernel=kernel)
    assert r.nr.tolist() == [1] * 16


def _with_folio_flags(space, flags):
    return pb.AddressSpace(
        space.ptes,
        space.table_va,
        space.vma_start,
        space.vma_end,
        space.folio_pfn,
        space.folio_nr,
        np.array([flags], dtype=np.uint8),
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("flags", [0, 2], ids=["file", "shmem"])
def test_file_folios_are_batched_by_reclaim_from_7_0(impl, flags):
    space = _with_folio_flags(pb.thread_layout(), flags)
    assert impl.unmap(space, kernel="6.19").nr.tolist() == [1] * 16
    assert impl.unmap(space, kernel="7.0").nr.tolist() == [1, 15]


@pytest.mark.parametrize("impl", IMPLS)
def test_special_ptes_are_never_batched(impl):
    # vm_normal_page() gives no folio for a special PTE: zap takes them one by one
    base = 0x7F0000000000
    va = base + 4096 * np.arange(4, dtype=np.uint64)
    ptes = X86_64.make_pte(0x1000 + np.arange(4, dtype=np.uint64), extra=X86_64.bits["SPECIAL"])
    space = pb.AddressSpace.from_entries(va, ptes, [base], [base + 4 * 4096], [0x1000], [4], [1])
    r = impl.scan(space, kernel="6.16")
    assert r.nr.tolist() == [1, 1, 1, 1] and set(r.reason_names()) == {"order0"}
    assert impl.unmap(space, kernel="6.16").batches == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kernel,limit", [("6.14", 2**31 - 1), ("6.16", 2**31 - 1), ("6.18", 2**32 - 1)]
)
def test_max_nr_must_fit_the_kernels_type(impl, kernel, limit):
    arr = _run(4)
    assert impl.folio_pte_batch(arr, 0, limit, 0x1000, 4, kernel=kernel).nr == 4
    with pytest.raises(ValueError, match="max_nr: .* does not fit"):
        impl.folio_pte_batch(arr, 0, limit + 1, 0x1000, 4, kernel=kernel)


def _run(n_pages, folio_nr=4, first_pfn=0x1000, **bits):
    return X86_64.make_pte(first_pfn + np.arange(n_pages, dtype=np.uint64), write=True, **bits)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_folio_followed_by_next_pfn_with_equal_bits_stops_at_folio_end(impl, kernel):
    # 4-page folio at PFN 0x1000; entry 4 maps PFN 0x1004 (another folio) with equal bits.
    arr = _run(8)
    r = impl.folio_pte_batch(arr, 0, 8, 0x1000, 4, kernel=kernel)
    assert r.nr == 4 and r.reason == "folio_end"
    # Gen 1 reads entry 4 and stops on its PFN; gen 1b/2 never read it.
    assert r.last_read == (4 if kernel in ("6.9", "6.14") else 3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ALL_KERNELS)
@pytest.mark.parametrize("all_flags", [False, True])
def test_uffd_wp_difference_always_breaks_a_batch(impl, kernel, all_flags):
    arr = _run(4)
    arr[2] |= np.uint64(X86_64.bits["UFFD_WP"])
    gen = pb.resolve_kernel(kernel).generation
    flags = sum(gen.flags.values()) if all_flags else 0  # ignore or respect all that can be
    r = impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel=kernel, flags=flags)
    assert r.nr == 2 and r.reason == "bit_mismatch"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kernel,flags,breaks",
    [
        ("6.14", 0, True),
        ("6.14", "FPB_IGNORE_DIRTY", False),
        ("6.16", 0, True),
        ("6.16", "FPB_IGNORE_DIRTY", False),
        ("6.18", 0, False),
        ("6.18", "FPB_RESPECT_DIRTY", True),
    ],
)
def test_dirty_breaks_a_batch_only_when_respected(impl, kernel, flags, breaks):
    arr = _run(4)
    arr[1] |= np.uint64(X86_64.bits["DIRTY"])
    r = impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel=kernel, flags=flags)
    assert r.nr == (1 if breaks else 4)


@pytest.mark.parametrize("impl", IMPLS)
def test_write_is_respected_only_with_fpb_respect_write(impl):
    arr = _run(4)
    arr[3] &= ~np.uint64(X86_64.bits["RW"])
    assert impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel="6.14").nr == 4
    assert impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel="6.18").nr == 4
    assert (
        impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel="6.18", flags="FPB_RESPECT_WRITE").nr == 3
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_generation_outputs(impl):
    arr = _run(4)
    arr[0] &= ~np.uint64(X86_64.bits["RW"])  # first PTE read-only
    arr[2] |= np.uint64(X86_64.bits["ACCESSED"] | X86_64.bits["DIRTY"])
    g1 = impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel="6.16", flags="FPB_IGNORE_DIRTY")
    assert (g1.any_writable, g1.any_young, g1.any_dirty, g1.pte) == (True, True, True, None)
    g2 = impl.folio_pte_batch(
        arr, 0, 4, 0x1000, 4, kernel="6.18", flags="FPB_MERGE_WRITE|FPB_MERGE_YOUNG_DIRTY"
    )
    assert g2.any_writable is None
    want = (
        int(arr[0])
        | X86_64.bits["RW"]
        | X86_64.bits["ACCESSED"]
        | X86_64.bits["DIRTY"]
        | X86_64.bits["SOFT_DIRTY"]
    )  # pte_mkdirty sets soft-dirty too
    assert g2.pte == want
    plain = impl.folio_pte_batch(arr, 0, 4, 0x1000, 4, kernel="6.18")
    assert plain.pte == int(arr[0])


@pytest.mark.parametrize("impl", IMPLS)
def test_max_nr_crossing_the_array_end_is_reported_not_read(impl):
    arr = _run(4)  # a 16-page folio, only 4 entries given
    r = impl.folio_pte_batch(arr, 0, 16, 0x1000, 16, kernel="6.16")
    assert r.nr == 4 and r.crosses_end and r.read_past_end and r.reason == "not_present"
    ok = impl.folio_pte_batch(arr, 0, 4, 0x1000, 16, kernel="6.16")
    assert not ok.crosses_end and not ok.read_past_end and ok.reason == "max_nr"


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_starts_and_ends_mid_folio(impl):
    arr = _run(8, first_pfn=0x1002)  # pages 2.. of a 16-page folio at 0x1000
    r = impl.folio_pte_batch(arr, 1, 5, 0x1000, 16, kernel="6.18")
    assert r.nr == 5 and r.reason == "max_nr"


@pytest.mark.parametrize("impl", IMPLS)
def test_nx_bit_63_does_not_disturb_batching(impl):
    arr = _run(16, nx=True)
    r = impl.folio_pte_batch(arr, 0, 16, 0x1000, 16, kernel="6.18")
    assert r.nr == 16
    arr[9] &= ~np.uint64(1 << 63)
    assert impl.folio_pte_batch(arr, 0, 16, 0x1000, 16, kernel="6.18").nr == 9


@pytest.mark.parametrize("impl", IMPLS)
def test_scan_reasons_on_a_hand_built_space(impl):
    base = 0x7F0000000000
    # folio A (8 pages, 0x2000) at entries 0-7 with a hole at 5; folio B (4 pages,
    # 0x2008, physically next to A) at entries 10-13; order-0 at 20; VMA ends at entry 12.
    va = base + 4096 * np.array([0, 1, 2, 3, 4, 6, 7, 10, 11, 12, 13, 20], dtype=np.uint64)
    pfn = np.array(
        [
            0x2000,
            0x2001,
            0x2002,
            0x2003,
            0x2004,
            0x2006,
            0x2007,
            0x2008,
            0x2009,
            0x200A,
            0x200B,
            0x9,
        ],
        dtype=np.uint64,
    )
    space = pb.AddressSpace.from_entries(
        va,
        X86_64.make_pte(pfn, write=True),
        [base],
        [base + 12 * 4096],
        [0x2000, 0x2008],
        [8, 4],
        [1, 1],
    )
    r = impl.scan(space, kernel="6.16")
    assert r.va.tolist() == [base, base + 6 * 4096, base + 10 * 4096]
    assert r.nr.tolist() == [5, 2, 2]
    assert r.reason_names().tolist() == ["not_present", "folio_end", "vma_end"]
    assert r.present_ptes == 9


# -- issue 12 item 7: an unmap clears what it takes ------------------------------

SPLIT_BASE = 0x7F0000000000  # 2 MiB-aligned: the folio sits in entries 0-15 of one table
SPLIT_PFN = 0x40000  # 16-aligned


def _split_folio(arch="x86_64", split=8):
    """One lazyfree 16-page folio in entries 0-15 of one table, its first ``split``
    pages in VMA A and the rest in the adjacent VMA B (a partial mprotect or
    madvise splits the VMA inside the folio)."""
    a = pb.get_arch(arch)
    va = SPLIT_BASE + 4096 * np.arange(16, dtype=np.uint64)
    ptes = a.make_pte(SPLIT_PFN + np.arange(16, dtype=np.uint64), write=True)
    mid = SPLIT_BASE + split * 4096
    return pb.AddressSpace.from_entries(
        va, ptes, [SPLIT_BASE, mid], [mid, SPLIT_BASE + 16 * 4096], [SPLIT_PFN], [16], [1], arch
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ["6.15", "6.15.6"])
def test_vma_split_folio_6_15_one_batch_and_nothing_for_the_second_vma(impl, kernel):
    # 6.15.0-6.15.6: A's walk starts at entry 0, which maps the folio's first page,
    # so it asks for max_nr = 16 with no VMA clamp; entries 1-15 map pages 1-15
    # with equal bits, so the batch is all 16 (folio_end) and takes B's 8 entries.
    # The folio is then unmapped (folio_not_mapped): B is never walked.  Without
    # the clearing, B's walk would unmap entries 8-15 a second time, one by one.
    r = impl.unmap(_split_folio(), kernel=kernel)
    assert r.nr.tolist() == [16]
    assert r.va.tolist() == [SPLIT_BASE]
    assert r.reason_names().tolist() == ["folio_end"]
    assert r.vma_overruns == 1  # the batch read entries 8-15, past A's end
    assert r.batches == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ["6.15.7", "6.16", "7.0"])
def test_vma_split_folio_clamped_two_batches_of_8(impl, kernel):
    # 6.15.7+: max_nr = (pmd_addr_end(addr, vma_end) - addr) >> 12 = 8 in A
    # (stop: vma_end), then B's walk starts at entry 8 with max_nr 8, which reaches
    # the folio's last page (folio_end).  Nothing is read past A's end.
    r = impl.unmap(_split_folio(), kernel=kernel)
    assert r.nr.tolist() == [8, 8]
    assert r.va.tolist() == [SPLIT_BASE, SPLIT_BASE + 8 * 4096]
    assert r.reason_names().tolist() == ["vma_end", "folio_end"]
    assert r.vma_overruns == 0


def _thread_split_at_boundary():
    """The thread's layout with its VMA split at the 2 MiB boundary (page 0 in VMA
    A, entry 511 of table A; pages 1-15 in VMA B, entries 0-14 of table B)."""
    s = pb.thread_layout()
    return pb.AddressSpace(
        s.ptes,
        s.table_va,
        np.array([s.vma_start[0], THREAD_BOUNDARY], dtype=np.uint64),
        np.array([THREAD_BOUNDARY, s.vma_end[0]], dtype=np.uint64),
        s.folio_pfn,
        s.folio_nr,
        s.folio_flags,
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_thread_layout_adjacent_batch_clears_the_next_tables_entries(impl):
    # One VMA (the thread's layout): with oob="adjacent" the 6.15 batch from entry
    # 511 reads entries 0-14 of the next table (the next row), which map pages
    # 1-15: one batch of 16, and the walk is done.  The clearing changes nothing
    # here: the batch already ended the walk (as test_thread_layout_unmap_6_15_...).
    adj = impl.unmap(pb.thread_layout(), kernel="6.15", oob="adjacent")
    assert adj.nr.tolist() == [16] and adj.table_overruns == 1
    # Split at the boundary, table B's entries belong to VMA B.  The same batch
    # takes them, so they are none when B would be walked, and the folio is no
    # longer mapped: one row.  Evaluated against the snapshot, B's walk would
    # unmap entries 0-14 again, one at a time (6.15 batches from page 0 only).
    split = impl.unmap(_thread_split_at_boundary(), kernel="6.15", oob="adjacent")
    assert split.nr.tolist() == [16]
    assert split.table_overruns == 1 and split.vma_overruns == 1
    # oob="none": entry 512 reads as none, the all-or-nothing batch fails, and
    # page 0 goes alone (clearing entry 511 only); B's walk then batches nothing
    # (6.15 batches from the first page only): 15 singles.
    none = impl.unmap(_thread_split_at_boundary(), kernel="6.15")
    assert none.nr.tolist() == [1] * 16
