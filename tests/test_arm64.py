"""arm64 (4 KiB granule) with contpte: the encoding of docs/model.md section 6, the
pte_batch_hint jump and the young/dirty gather of section 4, as golden cases."""

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import ARM64, X86_64
from ptebatch.naive import _Batcher
from ptebatch.releases import GENERATIONS, normaliser
from ptebatch.space import FOLIO_ANON, FOLIO_SWAPBACKED

B = ARM64.bits
CONT = ARM64.cont
BASE = 0x10000000000
PFN = 0x80000


def test_arm64_bit_positions():
    want = {
        "VALID": 0,
        "PAGE": 1,
        "USER": 6,
        "RDONLY": 7,
        "AF": 10,
        "NG": 11,
        "WRITE": 51,
        "CONT": 52,
        "PXN": 53,
        "UXN": 54,
        "DIRTY": 55,
        "SPECIAL": 56,
        "UFFD_WP": 58,
    }
    assert {k: B[k].bit_length() - 1 for k in want} == want
    assert ARM64.pfn_mask == sum(1 << i for i in range(12, 48))
    assert (B["ATTRINDX"], B["SH"]) == (0b111 << 2, 0b11 << 8)
    assert ARM64.soft_dirty == 0 and ARM64.dirty_hw == (B["WRITE"], B["RDONLY"])


def test_arm64_dirty_is_software_dirty_or_writable_and_not_read_only():
    clean_rw = ARM64.make_pte(1, write=True)
    assert int(clean_rw) & B["RDONLY"] and int(clean_rw) & B["WRITE"]  # DBM: writable, clean
    assert not ARM64.is_dirty(int(clean_rw))
    hw_dirty = int(clean_rw) & ~B["RDONLY"]
    assert ARM64.is_dirty(hw_dirty) and int(ARM64.make_pte(1, write=True, dirty=True)) == hw_dirty
    sw_dirty_ro = ARM64.make_pte(1, dirty=True)  # read-only: software bit
    assert int(sw_dirty_ro) & B["DIRTY"] and ARM64.is_dirty(int(sw_dirty_ro))
    with pytest.raises(ValueError, match="soft_dirty: arm64 has no such PTE bit"):
        ARM64.make_pte(1, soft_dirty=True)


def test_arm64_operations_as_the_kernel_defines_them():
    hw_dirty = int(ARM64.make_pte(1, write=True, dirty=True, young=True))
    # pte_mkclean: clear software dirty, set read-only
    assert ARM64.apply("mkclean", hw_dirty | B["DIRTY"]) == hw_dirty | B["RDONLY"]
    # pte_wrprotect: save the hardware dirty state first, then clear write, set read-only
    wp = ARM64.apply("wrprotect", hw_dirty)
    assert wp == (hw_dirty | B["DIRTY"] | B["RDONLY"]) & ~B["WRITE"] and ARM64.is_dirty(wp)
    clean = int(ARM64.make_pte(1, write=True))
    assert ARM64.apply("wrprotect", clean) == clean & ~B["WRITE"]  # nothing to save
    assert ARM64.apply("mkold", hw_dirty) == hw_dirty & ~B["AF"]
    # pte_mkdirty: software dirty, and read-only cleared if writable
    assert ARM64.apply("mkdirty", clean) == (clean | B["DIRTY"]) & ~B["RDONLY"]
    ro = int(ARM64.make_pte(1))
    assert ARM64.apply("mkdirty", ro) == ro | B["DIRTY"]
    # pte_mkwrite: write, and read-only cleared only if software dirty
    assert ARM64.apply("mkwrite", ro) == ro | B["WRITE"]
    assert ARM64.apply("mkwrite", ro | B["DIRTY"]) == (ro | B["DIRTY"] | B["WRITE"]) & ~B["RDONLY"]
    assert ARM64.apply("clear_soft_dirty", hw_dirty) == hw_dirty


@pytest.mark.parametrize("arch", [X86_64, ARM64], ids=["x86_64", "arm64"])
@pytest.mark.parametrize("gen", list(GENERATIONS.values()), ids=lambda g: "gen" + g.name)
def test_compiled_normaliser_equals_the_kernels_clear_ignored(arch, gen):
    """The masks the JIT uses equal __pte_batch_clear_ignored written out step by step
    (the naive twin), for every flag combination, on PTEs with every relevant bit mixed."""
    rng = np.random.default_rng(5)
    bits = [1 << n for n in range(64)]
    ptes = [int(v) for v in rng.integers(0, 1 << 63, size=400, dtype=np.uint64)]
    ptes += [int(v) | (1 << 63) for v in ptes[:100]] + bits
    top = max(gen.flags.values()) * 2
    for flags in range(top):
        n = normaliser(arch, gen, flags)
        ref = _Batcher(arch, pb.resolve_kernel(gen.representative), flags)
        for p in ptes:
            q = p
            if n.cond_set and q & n.cond_set == n.cond_set and not q & n.cond_clear:
                q |= n.cond_or
            assert (q & n.keep) | n.set == ref.clear_ignored(p), (flags, hex(p))


def block_table(n=32, *, cont=True, write=True, **bits):
    """One arm64 table: a 32-page folio in entries 0-31 (two aligned 16-entry blocks)."""
    arr = np.zeros(512, dtype=np.uint64)
    arr[:n] = ARM64.make_pte(
        PFN + np.arange(n, dtype=np.uint64), write=write, extra=CONT if cont else 0, **bits
    )
    return arr


def test_hint_jumps_to_the_end_of_the_block_without_reading():
    arr = block_table()
    r = pb.folio_pte_batch(arr, 5, 100, PFN, 32, kernel="6.18", arch="arm64")
    # from entry 5 the hint is 16 - 5 = 11; the next read is entry 16, whose hint is 16
    assert (r.nr, r.reason, r.last_read) == (27, "folio_end", 16)
    r = pb.folio_pte_batch(arr, 5, 3, PFN, 32, kernel="6.18", arch="arm64")
    assert (r.nr, r.last_read) == (3, 5)  # clipped to max_nr, nothing read
    # entries inside a block are not read: a hole in one goes unnoticed by the batch
    holed = arr.copy()
    holed[20] = 0
    assert pb.folio_pte_batch(holed, 0, 32, PFN, 32, kernel="6.18", arch="arm64").nr == 32


def test_gathered_dirty_decides_a_batch_that_respects_dirty():
    arr = block_table()
    arr[9] = ARM64.mark_dirty(arr[9])  # the MMU dirtied one entry of block 0
    # ptep_get of entry 0 is dirty (gathered), of entry 16 clean: they differ in dirty
    r = pb.folio_pte_batch(
        arr, 0, 32, PFN, 32, kernel="6.18", arch="arm64", flags="FPB_RESPECT_DIRTY"
    )
    assert (r.nr, r.reason) == (16, "bit_mismatch")
    assert ARM64.is_dirty(r.pte) and not ARM64.is_dirty(int(arr[0]))
    assert pb.folio_pte_batch(arr, 0, 32, PFN, 32, kernel="6.18", arch="arm64").nr == 32
    # gen 1's any_young: the entry read at 16 carries its block's gathered young bit
    arr2 = block_table()
    arr2[25] = ARM64.pte_mkyoung(arr2[25])
    r = pb.folio_pte_batch(arr2, 0, 32, PFN, 32, kernel="6.14", arch="arm64")
    assert r.nr == 32 and r.any_young and not r.any_dirty


def test_the_contiguous_bit_is_compared():
    """arm64 lets PTE_CONT leak through ptep_get; folio_pte_batch does not ignore it,
    so a folded block and unfolded entries of the same folio never share a batch."""
    arr = block_table()
    arr[16:32] &= ~np.uint64(CONT)
    r = pb.folio_pte_batch(arr, 0, 32, PFN, 32, kernel="6.18", arch="arm64")
    assert (r.nr, r.reason) == (16, "bit_mismatch")


def two_small_folios_in_one_block():
    """A malformed contpte block: 16 entries folded over two 8-page folios (the kernel
    never builds one; it shows what a hint past the folio end does)."""
    va = BASE + 4096 * np.arange(16, dtype=np.uint64)
    ptes = ARM64.make_pte(PFN + np.arange(16, dtype=np.uint64), write=True, extra=CONT)
    return pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE],
        [BASE + 16 * 4096],
        [PFN, PFN + 8],
        [8, 8],
        [FOLIO_ANON | FOLIO_SWAPBACKED] * 2,
        arch="arm64",
    )


@pytest.mark.parametrize("impl", [pb, pb.naive], ids=["jit", "naive"])
def test_past_folio_detector_gen1_trusts_the_hint_gen1b_cuts_at_the_folio(impl):
    space = two_small_folios_in_one_block()
    r14 = impl.scan(space, kernel="6.14")
    assert r14.nr.tolist() == [16] and r14.flagged("past_folio").tolist() == [0]
    r16 = impl.scan(space, kernel="6.16")
    assert r16.nr.tolist() == [8, 8] and r16.finding_counts["past_folio"] == 0


@pytest.mark.parametrize("impl", [pb, pb.naive], ids=["jit", "naive"])
def test_uffd_wp_detector_sees_a_skipped_entry(impl):
    va = BASE + 4096 * np.arange(16, dtype=np.uint64)
    ptes = ARM64.make_pte(PFN + np.arange(16, dtype=np.uint64), write=True, extra=CONT)
    ptes[7] |= np.uint64(B["UFFD_WP"])  # never read: the hint jumps over it
    space = pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE],
        [BASE + 16 * 4096],
        [PFN],
        [16],
        [FOLIO_ANON | FOLIO_SWAPBACKED],
        arch="arm64",
    )
    r = impl.scan(space, kernel="6.18")
    assert r.nr.tolist() == [16] and r.flagged("uffd_wp").tolist() == [0]
    plain = space.ptes.copy()
    plain &= ~np.uint64(CONT)
    flat = pb.AddressSpace(
        plain,
        space.table_va,
        space.vma_start,
        space.vma_end,
        space.folio_pfn,
        space.folio_nr,
        space.folio_flags,
        arch="arm64",
    )
    r = impl.scan(flat, kernel="6.18")  # every entry read: uffd-wp splits the batch instead
    assert r.nr.tolist() == [7, 1, 8] and r.finding_counts["uffd_wp"] == 0


@pytest.mark.parametrize("kernel", ["6.14", "6.16", "6.18"])
@pytest.mark.parametrize("caller", ["zap", "mremap", "fork-private", "mprotect"])
def test_generated_arm64_space_jit_equals_naive(caller, kernel):
    space = pb.generate(1500, seed=4, arch="arm64", moved=0.2, mixed_write=0.3, holes=0.01)
    assert (space.ptes & np.uint64(CONT)).any()
    a = pb.scan(space, caller=caller, kernel=kernel)
    b = pb.naive.scan(space, caller=caller, kernel=kernel)
    for f in ("va", "nr", "reason", "findings"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.summary() == b.summary()
    if caller == "mremap" and kernel == "6.18":
        assert (a.nr >= 16).any()  # mremap batches contpte blocks on arm64


@pytest.mark.parametrize("kernel", ["6.15", "6.16", "7.0"])
def test_generated_arm64_space_unmap_jit_equals_naive(kernel):
    space = pb.generate(1500, seed=6, arch="arm64", moved=0.3, lazyfree=0.7, mixed_write=0.3)
    a = pb.unmap(space, kernel=kernel, parallel=True)
    b = pb.naive.unmap(space, kernel=kernel)
    assert a.summary() == b.summary()
    np.testing.assert_array_equal(a.nr, b.nr)
    np.testing.assert_array_equal(a.findings, b.findings)


# -- an independent reading: the kernel's C helpers written out, not from arch tables ---------


def _c_pte_dirty(p):  # pte_dirty: pte_sw_dirty || pte_hw_dirty
    return bool(p & B["DIRTY"]) or (bool(p & B["WRITE"]) and not p & B["RDONLY"])


def _c_mkclean(p):  # clear PTE_DIRTY, set PTE_RDONLY
    return (p & ~B["DIRTY"]) | B["RDONLY"]


def _c_mkdirty(p):  # set PTE_DIRTY; if pte_write, clear PTE_RDONLY
    p |= B["DIRTY"]
    return p & ~B["RDONLY"] if p & B["WRITE"] else p


def _c_wrprotect(p):  # if pte_hw_dirty, pte_mkdirty; clear PTE_WRITE, set PTE_RDONLY
    if p & B["WRITE"] and not p & B["RDONLY"]:
        p = _c_mkdirty(p)
    return (p & ~B["WRITE"]) | B["RDONLY"]


def _c_mkwrite(p, version):  # 6.18 (143937ca51cc): clear PTE_RDONLY only if software dirty
    p |= B["WRITE"]
    if version < (6, 18, 0) or p & B["DIRTY"]:
        p &= ~B["RDONLY"]
    return p


def test_arm64_tables_equal_the_c_helpers_on_every_combination():
    base = int(ARM64.make_pte(0x1234)) & ~(B["RDONLY"])
    names = ["WRITE", "RDONLY", "DIRTY", "AF", "CONT", "UFFD_WP"]
    for mask in range(1 << len(names)):
        p = base | sum(B[n] for i, n in enumerate(names) if mask >> i & 1)
        assert ARM64.is_dirty(p) == _c_pte_dirty(p), hex(p)
        assert ARM64.apply("mkclean", p) == _c_mkclean(p), hex(p)
        assert ARM64.apply("mkdirty", p) == _c_mkdirty(p), hex(p)
        assert ARM64.apply("wrprotect", p) == _c_wrprotect(p), hex(p)
        assert ARM64.apply("mkold", p) == p & ~B["AF"]
        assert ARM64.apply("mkyoung", p) == p | B["AF"]
        for v in ((6, 17, 0), (6, 18, 0)):
            assert ARM64.apply("mkwrite", p, v) == _c_mkwrite(p, v), (hex(p), v)


def test_merged_write_on_6_17_arm64_makes_the_pte_hardware_dirty():
    arr = ARM64.make_pte(PFN + np.arange(4, dtype=np.uint64), write=[False, True, True, True])
    for kernel, dirty in (("6.17", True), ("6.18", False)):
        r = pb.folio_pte_batch(
            arr,
            0,
            4,
            PFN,
            4,
            kernel=kernel,
            arch="arm64",
            flags="FPB_MERGE_WRITE|FPB_RESPECT_DIRTY",
        )
        assert r.nr == 4 and ARM64.pte_write(r.pte) and ARM64.is_dirty(r.pte) == dirty


# -- issue 12 item 7: a contpte batch past a VMA's end clears the next VMA's entries --


def _contpte_across_vma_end(split=8):
    """A 16-page lazyfree folio folded into one contpte block (entries 0-15, PFNs
    16-aligned), with VMA A ending after ``split`` pages and VMA B holding the rest."""
    va = BASE + 4096 * np.arange(16, dtype=np.uint64)
    ptes = ARM64.make_pte(PFN + np.arange(16, dtype=np.uint64), write=True) | np.uint64(CONT)
    mid = BASE + split * 4096
    return pb.AddressSpace.from_entries(
        va, ptes, [BASE, mid], [mid, BASE + 16 * 4096], [PFN], [16], [FOLIO_ANON], "arm64"
    )


@pytest.mark.parametrize("impl", [pb, pb.naive], ids=["jit", "naive"])
def test_contpte_block_past_vma_end_6_15_takes_the_next_vmas_entries(impl):
    # 6.15: A's walk at entry 0 (the folio's first page) asks for 16; the contpte
    # hint jumps to entry 16 without reading entries 1-15, so the batch is 16
    # (folio_end) and covers B's entries 8-15 unread (last read: entry 0, so no
    # vma overrun is reported).  They are none afterwards and the folio is no
    # longer mapped: B gives no row.  Evaluated against the snapshot, B's walk
    # would add eight single unmaps (6.15 batches only from the first page).
    r = impl.unmap(_contpte_across_vma_end(), kernel="6.15")
    assert r.nr.tolist() == [16]
    assert r.reason_names().tolist() == ["folio_end"]
    assert r.vma_overruns == 0
    # 6.16 clamps at A's end: the hint's jump is cut back to max_nr 8 (vma_end);
    # B's walk starts at entry 8 (hint 8) and takes the other 8 (folio_end).
    c = impl.unmap(_contpte_across_vma_end(), kernel="6.16")
    assert c.nr.tolist() == [8, 8]
    assert c.reason_names().tolist() == ["vma_end", "folio_end"]
