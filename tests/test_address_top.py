"""The top of the address space: a layout there batches as it does anywhere else.

Issue 12, finding 1: ``table_va + 2 MiB`` wraps to 0 for the last table of the 64-bit space,
and the JIT walks dropped that table.  Every end address is now computed so that it cannot
wrap; the tests place one layout low and at the top and expect the same batches from every
implementation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import KERNELS, spaces

import ptebatch as pb
from ptebatch import vectorized
from ptebatch.arch import PAGE_SIZE, PMD_SIZE, X86_64
from ptebatch.cli import main
from ptebatch.space import FOLIO_ANON

TOP = 1 << 64
TOP_TABLE = TOP - PMD_SIZE  # the last 2 MiB-aligned table of the 64-bit space
LOW_TABLE = 0x7F0000000000


def reproducer(table_va: int) -> pb.AddressSpace:
    """Issue 12's layout: a 16-page lazyfree folio in entries 0-15 of the table at
    ``table_va``, one VMA from the table's start to one page below its end."""
    pfn = 0x1000
    va = table_va + PAGE_SIZE * np.arange(16, dtype=np.uint64)
    pte = X86_64.make_pte(pfn + np.arange(16, dtype=np.uint64), write=True)
    return pb.AddressSpace.from_entries(
        va, pte, [table_va], [table_va + PMD_SIZE - PAGE_SIZE], [pfn], [16], [FOLIO_ANON]
    )


# One batch of 16: the folio's 16 PTEs are equal but for the PFN, which steps by one, and
# the VMA and the table run far past them, so only the folio end stops the batch.
@pytest.mark.parametrize("table_va", [LOW_TABLE, TOP_TABLE], ids=["low", "top"])
@pytest.mark.parametrize(
    "walk",
    [
        lambda s: pb.scan(s),
        lambda s: pb.scan(s, parallel=False),
        lambda s: pb.scan(s, clamp="folio", oob="adjacent"),
        lambda s: pb.unmap(s),
        lambda s: pb.unmap(s, kernel="6.15"),
        lambda s: pb.naive.scan(s),
        lambda s: pb.naive.unmap(s),
        lambda s: vectorized.scan(s),
    ],
    ids=[
        "scan",
        "scan-serial",
        "scan-folio-adjacent",
        "unmap",
        "unmap-6.15",
        "naive-scan",
        "naive-unmap",
        "vectorized",
    ],
)
def test_reproducer_gives_one_batch_of_16(table_va, walk):
    r = walk(reproducer(table_va))
    assert r.nr.tolist() == [16]
    assert r.va.tolist() == [table_va]
    assert list(r.reason_names()) == ["folio_end"]
    assert r.findings.tolist() == [0]


@pytest.mark.parametrize("impl", [[], ["--impl", "naive"], ["--impl", "serial"]])
@pytest.mark.parametrize("walk", ["scan", "unmap"])
def test_reproducer_on_the_command_line(tmp_path, capsys, walk, impl):
    path = str(tmp_path / "top.npz")
    reproducer(TOP_TABLE).save(path)
    assert main([walk, path, "--json", *impl]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["batches"], s["batch_size_hist"]) == (1, {"16": 1})


def test_a_vma_can_end_one_page_below_the_top_but_not_at_it():
    # vm_end is a uint64: 2**64 cannot be written, and 0 is refused (start < end)
    space = reproducer(TOP_TABLE)
    assert int(space.vma_end[0]) == TOP - PAGE_SIZE
    with pytest.raises(ValueError, match="vma_end: must be above vma_start"):
        pb.AddressSpace(
            space.ptes,
            space.table_va,
            space.vma_start,
            np.array([0], dtype=np.uint64),
            space.folio_pfn,
            space.folio_nr,
            space.folio_flags,
        )


def moved(space: pb.AddressSpace, delta: int, clip: int) -> pb.AddressSpace:
    """``space`` moved up by ``delta`` bytes (a multiple of 2 MiB), its VMAs first cut
    at ``clip`` (so that the moved VMAs end at most one page below 2**64)."""
    vs, ve = space.vma_start.astype(object), space.vma_end.astype(object)
    keep = [s < clip for s in vs]
    vs = [int(s) + delta for s, k in zip(vs, keep) if k]
    ve = [min(int(e), clip) + delta for e, k in zip(ve, keep) if k]
    vf = space.vma_flags[np.array(keep, dtype=bool)] if keep else space.vma_flags
    return pb.AddressSpace(
        space.ptes,
        space.table_va + np.uint64(delta),
        np.array(vs, dtype=np.uint64),
        np.array(ve, dtype=np.uint64),
        space.folio_pfn,
        space.folio_nr,
        space.folio_flags,
        arch=space.arch,
        vma_flags=vf.copy(),
    )


def low_and_top(space: pb.AddressSpace):
    """The same layout twice: VMAs cut one page below the last table's end, then as drawn
    and moved so that the last table is the top one."""
    last = int(space.table_va[-1])
    clip = last + PMD_SIZE - PAGE_SIZE
    delta = TOP_TABLE - last
    return moved(space, 0, clip), moved(space, delta, clip), delta


FIELDS = ("nr", "reason", "findings")


def same_batches(low, top, delta):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(low, f), getattr(top, f), err_msg=f)
    np.testing.assert_array_equal(low.va + np.uint64(delta), top.va, err_msg="va")
    assert low.summary() == top.summary()


@given(
    spaces(),
    st.sampled_from(KERNELS),
    st.sampled_from(["pmd", "folio"]),
    st.sampled_from(["none", "adjacent"]),
)
def test_scan_at_the_top_equals_scan_low(space, kernel, clamp, oob):
    low, top, delta = low_and_top(space)
    for impl in (pb, pb.naive):
        a = impl.scan(low, kernel=kernel, clamp=clamp, oob=oob)
        b = impl.scan(top, kernel=kernel, clamp=clamp, oob=oob)
        same_batches(a, b, delta)


@given(spaces(), st.sampled_from(KERNELS), st.sampled_from(["none", "adjacent"]))
def test_unmap_at_the_top_equals_unmap_low(space, kernel, oob):
    low, top, delta = low_and_top(space)
    for impl in (pb, pb.naive):
        a = impl.unmap(low, kernel=kernel, oob=oob)
        b = impl.unmap(top, kernel=kernel, oob=oob)
        same_batches(a, b, delta)
        np.testing.assert_array_equal(a.folio_pfn, b.folio_pfn)


@given(spaces(arch=X86_64), st.sampled_from(KERNELS))
def test_vectorized_scan_at_the_top_equals_scan_low(space, kernel):
    low, top, delta = low_and_top(space)
    same_batches(vectorized.scan(low, kernel=kernel), vectorized.scan(top, kernel=kernel), delta)


ADDRS = [0, 0x1000, PMD_SIZE - PAGE_SIZE, PMD_SIZE, TOP_TABLE, TOP - PAGE_SIZE]


@pytest.mark.parametrize("addr", ADDRS)
@pytest.mark.parametrize("end_off", [PAGE_SIZE, PMD_SIZE - PAGE_SIZE, PMD_SIZE, 3 * PMD_SIZE, None])
def test_compiled_pmd_addr_end_equals_the_kernel_rule(addr, end_off):
    # the naive twin writes the kernel's comparison (boundary - 1 < end - 1, end 0 = top);
    # the compiled one compares distances from addr; they must agree everywhere, the top
    # table and end 0 included
    from ptebatch._jit.pte import pmd_addr_end

    end = 0 if end_off is None else (addr + end_off) % TOP
    if end != 0 and end <= addr:
        pytest.skip("end wraps past the top: not a range")
    with np.errstate(over="ignore"):
        got = int(pmd_addr_end(np.uint64(addr), np.uint64(end)))
    assert got == pb.naive.pmd_addr_end(addr, end)
