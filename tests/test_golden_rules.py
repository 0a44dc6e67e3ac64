"""Golden cases that a misunderstanding shared by both twins cannot pass (issue 12, item 9).

The equivalence tests compare the compiled walks with the naive twin, so a wrong rule
written into both passes them.  Each case here pins one kernel rule from docs/model.md
with values derived by hand in its comment, and runs against both twins.  The mutant
each case kills is named in its docstring; ``tests/mutants.py`` applies those mutants
to both twins and runs these tests.
"""

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import ARM64, X86_64
from ptebatch import reasons as R
from ptebatch.space import FOLIO_ANON

IMPLS = [pytest.param(pb, id="jit"), pytest.param(pb.naive, id="naive")]

BASE = 0x7F0000000000  # 2 MiB aligned: entry k of the table is BASE + k pages
PAGE = 4096
PFN = 0x80000  # 16-aligned, so a 16- or 32-page folio there can be folded into contpte blocks
LAZYFREE = FOLIO_ANON  # anon, not swap-backed
A64 = ARM64.bits


def _space(entries, ptes, vmas, folios, arch="x86_64"):
    """A space from (entry index in the table at BASE) -> PTE, VMAs as (first, end) entry
    numbers and folios as (pfn, nr, flags)."""
    va = BASE + PAGE * np.asarray(entries, dtype=np.uint64)
    return pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE + PAGE * a for a, _ in vmas],
        [BASE + PAGE * b for _, b in vmas],
        [f[0] for f in folios],
        [f[1] for f in folios],
        [f[2] for f in folios],
        arch=arch,
    )


# -- arm64: ptep_get gathers young and dirty from all 16 entries of a block (section 4) ------


def _blocks(n=32):
    """A clean, old, writable n-page folio at PFN in entries 0..n-1, folded into blocks."""
    return ARM64.make_pte(PFN + np.arange(n, dtype=np.uint64), write=True, extra=ARM64.cont)


@pytest.mark.parametrize("impl", IMPLS)
def test_contpte_gather_reads_the_16th_entry_of_the_block(impl):
    """Kills: the contpte gather reading 15 entries of the block instead of 16."""
    arr = _blocks()
    arr[15] = ARM64.mark_dirty(arr[15])  # the MMU dirtied only the last entry of block 0
    # Section 4: ptep_get(entry 0) ORs dirty over entries 0-15, so it is dirty;
    # ptep_get(entry 16) ORs over 16-31, all clean.  FPB_RESPECT_DIRTY keeps dirty in the
    # comparison, so the scan (hint 16 from entry 0) reads entry 16, finds it clean where
    # the expected value is dirty, and stops: nr = 16, bit_mismatch, last read = 16.
    r = impl.folio_pte_batch(
        arr, 0, 32, PFN, 32, kernel="6.18", arch="arm64", flags="FPB_RESPECT_DIRTY"
    )
    assert (r.nr, r.reason, r.last_read) == (16, "bit_mismatch", 16)
    # The returned PTE is ptep_get(entry 0): entry 0 with pte_mkdirty applied, which on a
    # writable arm64 PTE sets the software dirty bit and clears read-only.
    assert r.pte == (int(arr[0]) | A64["DIRTY"]) & ~A64["RDONLY"]
    # Young in the 16th entry of block 1 only: gen 1 reads entry 16 in the loop (the hint
    # jumps there from entry 0), and its gathered AF comes from entry 31.
    arr = _blocks()
    arr[31] |= np.uint64(A64["AF"])
    r = impl.folio_pte_batch(arr, 0, 32, PFN, 32, kernel="6.14", arch="arm64")
    assert (r.nr, r.any_young, r.any_dirty, r.any_writable) == (32, True, False, True)


@pytest.mark.parametrize("impl", IMPLS)
def test_contpte_gather_starts_at_the_blocks_first_entry(impl):
    """Kills: a gather over the 16 entries from the one read instead of from its block."""
    arr = _blocks()
    arr[3] |= np.uint64(A64["AF"])  # young only in entry 3 of block 0
    # Reading entry 5 gathers the aligned block 0-15, which holds entry 3: young.
    # (The gen-2 plain call returns ptep_get of the first PTE unchanged.)
    r = impl.folio_pte_batch(arr, 5, 11, PFN, 32, kernel="6.18", arch="arm64")
    assert r.nr == 11 and r.pte == int(arr[5]) | A64["AF"]


# -- 6.15.0-6.15.6 lazyfree unmap is all or nothing (section 5) ---------------------------------


def _lazyfree_with_a_hole(hole=7):
    """A 16-page lazyfree folio in entries 0-15 of one VMA, page ``hole`` unmapped."""
    pages = [k for k in range(16) if k != hole]
    ptes = X86_64.make_pte(PFN + np.asarray(pages, dtype=np.uint64), write=True)
    return _space(pages, ptes, [(0, 16)], [(PFN, 16, LAZYFREE)])


@pytest.mark.parametrize("impl", IMPLS)
def test_6_15_all_or_nothing_unmap_refuses_a_partial_batch(impl):
    """Kills: the 6.15.0-6.15.6 unmap accepting any n >= 1 instead of n == folio_nr."""
    space = _lazyfree_with_a_hole(7)
    # 6.15: from page 0 (the folio's first page) the batch asks for 16 and gets 7 (entry 7
    # is none).  7 != 16, so the whole folio goes one PTE at a time: 15 single rows.
    r = impl.unmap(space, kernel="6.15")
    assert r.nr.tolist() == [1] * 15
    assert set(r.reason_names()) == {"single"}
    assert r.va.tolist() == [BASE + PAGE * k for k in range(16) if k != 7]
    # 6.15.7 (clamped, partial batches): 0-6 (stops on the none entry), then 8-15 to the
    # folio's end.
    r = impl.unmap(space, kernel="6.15.7")
    assert r.nr.tolist() == [7, 8]
    assert r.reason_names().tolist() == ["not_present", "folio_end"]


# -- the vma_overrun detector: a read at vm_end is outside the VMA (sections 2, 5) -------------


def _half_mapped_folio(vma_pages):
    """A 16-page lazyfree folio whose pages 0-7 are mapped in entries 0-7; the VMA is
    entries 0..vma_pages-1; entries 8-15 are none."""
    ptes = X86_64.make_pte(PFN + np.arange(8, dtype=np.uint64), write=True)
    return _space(range(8), ptes, [(0, vma_pages)], [(PFN, 16, LAZYFREE)])


@pytest.mark.parametrize("impl", IMPLS)
def test_vma_overrun_counts_the_entry_that_starts_at_vm_end(impl):
    """Kills: the VMA-overrun finding using > instead of >= at vm_end."""
    space = _half_mapped_folio(8)  # vm_end = BASE + 8 pages: entry 8 is the first outside
    # 6.15 unmap: from page 0, max_nr = folio size 16 with no VMA clamp.  The scan reads
    # entry 8 (none) and stops: last read = entry 8, at exactly vm_end -> vma_overrun.
    # 8 != 16, so nothing is batched: 8 singles, only the first one read past vm_end.
    r = impl.unmap(space, kernel="6.15")
    assert r.nr.tolist() == [1] * 8
    assert r.findings.tolist() == [R.OVER_VMA] + [0] * 7
    assert r.vma_overruns == 1 and r.table_overruns == 0
    # The counterfactual unclamped walker: one batch of 8 whose last read is entry 8.
    s = impl.scan(space, kernel="6.16", clamp="folio")
    assert (s.nr.tolist(), s.reason_names().tolist()) == ([8], ["not_present"])
    assert s.findings.tolist() == [R.OVER_VMA]
    # Control: with the VMA one page longer, entry 8 is the VMA's last entry, inside it.
    inside = _half_mapped_folio(9)
    assert impl.unmap(inside, kernel="6.15").vma_overruns == 0
    assert impl.scan(inside, kernel="6.16", clamp="folio").findings.tolist() == [0]


# -- gen 2 FPB_MERGE_WRITE merges only what a batched PTE has (section 3) ----------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch", [X86_64, ARM64], ids=["x86_64", "arm64"])
def test_6_17_fork_merge_write_without_a_writable_pte_stays_read_only(impl, arch):
    """Kills: FPB_MERGE_WRITE making the PTE writable when no batched PTE is writable."""
    ro = arch.make_pte(PFN + np.arange(4, dtype=np.uint64))
    # fork-private's 6.17 flags (section 5).  No entry is writable, so any_writable stays
    # false and the merged PTE is the first PTE as read: read-only, bits unchanged.
    fork = "FPB_RESPECT_DIRTY|FPB_MERGE_WRITE"
    r = impl.folio_pte_batch(ro, 0, 4, PFN, 4, kernel="6.17", arch=arch.name, flags=fork)
    assert r.nr == 4 and r.pte == int(ro[0]) and not arch.pte_write(r.pte)
    # Control: entry 2 writable (write is ignored by the comparison), so the merge sets write.
    mixed = ro.copy()
    mixed[2] = arch.make_pte(PFN + 2, write=True)
    r = impl.folio_pte_batch(mixed, 0, 4, PFN, 4, kernel="6.17", arch=arch.name, flags=fork)
    assert r.nr == 4 and r.pte == arch.apply("mkwrite", int(ro[0]), (6, 17, 0))


@pytest.mark.parametrize("impl", IMPLS)
def test_merge_young_dirty_merges_each_bit_from_its_own_accumulator(impl):
    """Kills: MERGE_YOUNG_DIRTY setting dirty when only young was seen (or the reverse)."""
    arr = X86_64.make_pte(PFN + np.arange(4, dtype=np.uint64), write=True)
    arr[3] |= np.uint64(X86_64.bits["ACCESSED"])  # young in a batched PTE, dirty nowhere
    flags = "FPB_MERGE_YOUNG_DIRTY"
    r = impl.folio_pte_batch(arr, 0, 4, PFN, 4, kernel="6.18", flags=flags)
    assert r.nr == 4 and r.pte == int(arr[0]) | X86_64.bits["ACCESSED"]
    arr = X86_64.make_pte(PFN + np.arange(4, dtype=np.uint64), write=True)
    arr[1] |= np.uint64(X86_64.bits["DIRTY"])  # dirty only (ignored by gen 2 by default)
    r = impl.folio_pte_batch(arr, 0, 4, PFN, 4, kernel="6.18", flags=flags)
    # pte_mkdirty on x86-64 sets dirty and soft-dirty (section 6)
    assert r.pte == int(arr[0]) | X86_64.bits["DIRTY"] | X86_64.bits["SOFT_DIRTY"]


@pytest.mark.parametrize("impl", IMPLS)
def test_gen1_any_outputs_leave_out_the_first_pte(impl):
    """Kills: any_writable/any_young/any_dirty counting the first PTE too."""
    arr = X86_64.make_pte(PFN + np.arange(16, dtype=np.uint64))
    arr[0] = X86_64.make_pte(PFN, write=True, young=True, dirty=True)
    # Section 3: the outputs OR the batched PTEs *after* the first; only entry 0 has the
    # bits, and it still batches with the rest (write and young ignored, dirty ignored
    # with FPB_IGNORE_DIRTY), so all three are false.
    r = impl.folio_pte_batch(arr, 0, 16, PFN, 16, kernel="6.14", flags="FPB_IGNORE_DIRTY")
    assert (r.nr, r.any_writable, r.any_young, r.any_dirty) == (16, False, False, False)
    # One entry young: any_young only.  The compiled walk takes entries 1-8 in one vector
    # compare, 9-12 four at a time and 13-15 one by one: one young entry in each part.
    for young in (6, 10, 14):
        arr_y = arr.copy()
        arr_y[young] |= np.uint64(X86_64.bits["ACCESSED"])
        r = impl.folio_pte_batch(arr_y, 0, 16, PFN, 16, kernel="6.14", flags="FPB_IGNORE_DIRTY")
        assert (r.nr, r.any_writable, r.any_young, r.any_dirty) == (16, False, True, False)


@pytest.mark.parametrize("impl", IMPLS)
def test_gen1_any_dirty_sees_arm64_hardware_dirty(impl):
    """Kills: any_dirty testing only the software dirty bit (arm64's pte_dirty is software
    dirty or writable-and-not-read-only, section 6)."""
    arr = ARM64.make_pte(PFN + np.arange(4, dtype=np.uint64), write=True)
    arr[2] &= ~np.uint64(A64["RDONLY"])  # hardware dirty: writable, read-only cleared
    r = impl.folio_pte_batch(arr, 0, 4, PFN, 4, kernel="6.14", arch="arm64", flags=1)
    assert (r.nr, r.any_dirty) == (4, True)


# -- the stop label when vm_end is exactly the table end (sections 1, 5) -----------------------


def _tail_of_table(vma_end_entry):
    """A 16-page lazyfree folio whose pages 0-7 are in entries 504-511 (no next table);
    the VMA runs from entry 504 to ``vma_end_entry`` (512 = exactly the table end)."""
    ptes = X86_64.make_pte(PFN + np.arange(8, dtype=np.uint64), write=True)
    return _space(range(504, 512), ptes, [(504, vma_end_entry)], [(PFN, 16, LAZYFREE)])


@pytest.mark.parametrize("impl", IMPLS)
def test_vma_ending_exactly_at_the_table_end_is_reported_as_vma_end(impl):
    """Kills: a VMA end that lands exactly on a table end reported as pmd_end."""
    # pmd_addr_end(addr, vm_end) returns vm_end when the next 2 MiB boundary is not below
    # it; here both are BASE + 2 MiB.  max_nr = 8, the batch uses it up (the folio goes on),
    # and docs/model.md section 5 says the label is then vma_end.
    space = _tail_of_table(512)
    for r in (impl.scan(space, kernel="6.16"), impl.unmap(space, kernel="6.16")):
        assert r.nr.tolist() == [8] and r.reason_names().tolist() == ["vma_end"]
        assert r.va.tolist() == [BASE + 504 * PAGE]
    # Control: the VMA goes on 8 pages into the next region (no table there): the table
    # end is the lower limit, so the label is pmd_end.
    space = _tail_of_table(520)
    for r in (impl.scan(space, kernel="6.16"), impl.unmap(space, kernel="6.16")):
        assert r.nr.tolist() == [8] and r.reason_names().tolist() == ["pmd_end"]


# -- the walkers' clamp: one table AND one VMA (sections 1, 5) ---------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel", ["6.16", "6.17"])
def test_clamp_stops_at_a_vma_boundary_inside_a_table(impl, kernel):
    """Kills: a clamp that cuts at the table end only (pmd_addr_end without vm_end)."""
    # One 16-page lazyfree folio in entries 0-15, cut by a VMA boundary after page 7
    # (mprotect of half the range).  In VMA 1, max_nr = (pmd_addr_end - addr) >> 12 = 8:
    # nr = 8, vma_end.  In VMA 2, from page 8, max_nr = 504 and the folio ends first
    # (8 pages left): nr = 8, folio_end.  Both walks agree.
    ptes = X86_64.make_pte(PFN + np.arange(16, dtype=np.uint64), write=True)
    space = _space(range(16), ptes, [(0, 8), (8, 16)], [(PFN, 16, LAZYFREE)])
    for r in (impl.scan(space, kernel=kernel), impl.unmap(space, kernel=kernel)):
        assert r.nr.tolist() == [8, 8]
        assert r.reason_names().tolist() == ["vma_end", "folio_end"]
        assert r.vma_overruns == 0


# -- pte_batch_hint: to the end of the aligned block, not 16 from anywhere (section 4) ---------


@pytest.mark.parametrize("impl", IMPLS)
def test_hint_from_mid_block_jumps_to_the_block_end(impl):
    """Kills: a hint of 16 from any slot (ignoring the block's alignment)."""
    arr = _blocks()
    arr[16] = 0  # block 1's first entry gone
    # From entry 5 the hint is 16 - 5 = 11: the next read is entry 16, none -> stop with
    # nr = 11.  A hint of 16 would read entry 21 and batch past the hole.
    r = impl.folio_pte_batch(arr, 5, 27, PFN, 32, kernel="6.18", arch="arm64")
    assert (r.nr, r.reason, r.last_read) == (11, "not_present", 16)


# -- gen 2 respects what its flags say (section 3) --------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_gen2_respect_soft_dirty_and_write(impl):
    """Kills: FPB_RESPECT_SOFT_DIRTY or FPB_RESPECT_WRITE not honoured."""
    arr = X86_64.make_pte(PFN + np.arange(8, dtype=np.uint64), write=True)
    arr[5] |= np.uint64(X86_64.bits["SOFT_DIRTY"])
    # soft-dirty is ignored unless respected: 8, then 5 (entry 5 differs)
    assert impl.folio_pte_batch(arr, 0, 8, PFN, 8, kernel="6.18").nr == 8
    r = impl.folio_pte_batch(arr, 0, 8, PFN, 8, kernel="6.18", flags="FPB_RESPECT_SOFT_DIRTY")
    assert (r.nr, r.reason) == (5, "bit_mismatch")
    arr = X86_64.make_pte(PFN + np.arange(8, dtype=np.uint64), write=True)
    arr[6] &= ~np.uint64(X86_64.bits["RW"])
    assert impl.folio_pte_batch(arr, 0, 8, PFN, 8, kernel="6.18").nr == 8
    r = impl.folio_pte_batch(arr, 0, 8, PFN, 8, kernel="6.18", flags="FPB_RESPECT_WRITE")
    assert (r.nr, r.reason) == (6, "bit_mismatch")


@pytest.mark.parametrize("impl", IMPLS)
def test_gen1_ignore_soft_dirty_only_with_its_flag(impl):
    """Kills: generation 1 ignoring soft-dirty without FPB_IGNORE_SOFT_DIRTY."""
    arr = X86_64.make_pte(PFN + np.arange(8, dtype=np.uint64), write=True)
    arr[3] |= np.uint64(X86_64.bits["SOFT_DIRTY"])
    # gen 1 compares soft-dirty unless told to ignore it: 3, then 8 with the flag
    r = impl.folio_pte_batch(arr, 0, 8, PFN, 8, kernel="6.14")
    assert (r.nr, r.reason) == (3, "bit_mismatch")
    assert impl.folio_pte_batch(arr, 0, 8, PFN, 8, kernel="6.14", flags=2).nr == 8


# -- pmd_addr_end: compared minus one, so an end of 0 is the top (section 1) -------------------


def _jit_pmd_addr_end(addr, end):
    from ptebatch._jit.pte import pmd_addr_end

    with np.errstate(over="ignore"):  # without the JIT, end - 1 wraps in NumPy scalars
        return int(pmd_addr_end(np.uint64(addr), np.uint64(end)))


@pytest.mark.parametrize("impl", [_jit_pmd_addr_end, pb.naive.pmd_addr_end], ids=["jit", "naive"])
def test_pmd_addr_end_treats_end_0_as_the_top(impl):
    """Kills: pmd_addr_end comparing the plain values (then end 0 would be below everything).

    No VMA of a space ends at 0, so no walk reaches this case: it is checked directly."""
    top = 1 << 64
    # end 0 is the top of the address space: the next 2 MiB boundary is lower
    assert impl(0x1000, 0) == 0x200000
    # a boundary that wraps to 0 is still the larger one: end wins
    assert impl(top - 0x1000, top - 0x800) == top - 0x800
    # ordinary cases: the lower of the two
    assert impl(0x1000, 0x3000) == 0x3000
    assert impl(0x1000, 0x400000) == 0x200000
    assert impl(0x200000, 0x400000) == 0x400000  # a boundary-aligned addr: the next one
