"""Hypothesis strategies: small page-table layouts full of edge cases.

Layouts are drawn near the places where batching goes wrong: folios placed
across table ends and VMA ends, physically contiguous neighbours with equal
bits, partial mappings, holes, PFN gaps and single-bit differences
(including NX, bit 63, which breaks any signed or float arithmetic).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ptebatch import ARM64, X86_64, AddressSpace
from ptebatch.arch import PAGE_SIZE, PMD_SIZE

BASE_VA = 0x7F0000000000
BASE_PFN = 0x40000
KERNELS = ["6.9", "6.14", "6.15", "6.15.7", "6.16", "6.17", "6.18", "7.0"]
ARCHES = [X86_64, ARM64]
# Bits a PTE may differ in.  x86-64: write, user, accessed, dirty, global, special,
# uffd-wp, soft-dirty, a pkey bit, NX.  arm64: user, read-only, accessed, nG, write (DBM),
# contiguous, PXN, UXN, software dirty, special, uffd-wp, bit 63.
FLIP_BITS = {
    "x86_64": [1, 2, 5, 6, 8, 9, 10, 11, 59, 63],
    "arm64": [6, 7, 10, 11, 51, 52, 53, 54, 55, 56, 58, 63],
}
# NX everywhere: bit 63 on x86-64 breaks signed or float arithmetic; arm64's UXN plus bit 63.
NX_ALL = {"x86_64": 1 << 63, "arm64": (1 << 54) | (1 << 63)}


def entry_bits(arch, write, young, dirty, soft_dirty):
    """A PTE with PFN 0 and the given states (soft-dirty only where the arch has it)."""
    return int(
        arch.make_pte(
            0,
            write=write,
            young=young,
            dirty=dirty,
            soft_dirty=soft_dirty and bool(arch.soft_dirty),
        )
    )


def fold_contpte(arch, flat, folio_pfn, folio_nr, blocks):
    """Set the contiguous bit on aligned 16-entry blocks that arm64 could fold:
    16 present entries of one large folio, PFNs 16-aligned and consecutive, equal
    but for young and dirty.  ``blocks`` picks which foldable blocks to fold."""
    pfn_mask = np.uint64(arch.pfn_mask)
    for b in range(0, flat.size, 16):
        block = flat[b : b + 16]
        if not arch.cont or not all(int(e) & arch.present for e in block):
            continue
        pfns = (block & pfn_mask) >> np.uint64(12)
        p0 = int(pfns[0])
        if p0 % 16 or not np.array_equal(pfns, np.arange(p0, p0 + 16, dtype=np.uint64)):
            continue
        if not any(
            fp <= p0 and p0 + 16 <= fp + fn and fn >= 16 for fp, fn in zip(folio_pfn, folio_nr)
        ):
            continue
        attrs = arch.pte_mkold(arch.pte_mkclean(block)) & ~pfn_mask
        if (attrs != attrs[0]).any() or int(block[0]) & arch.special or not next(blocks):
            continue
        flat[b : b + 16] = block | np.uint64(arch.cont)


@st.composite
def folio_orders(draw):
    return draw(st.one_of(st.integers(1, 5), st.just(9)))


@st.composite
def spaces(draw, max_tables: int = 3, arch=None):
    """A small AddressSpace with tables, VMAs, folios and perturbed PTEs.

    ``arch``: an Arch, or None to draw one.  On arm64 runs are often placed so
    that aligned 16-page blocks can be folded into contpte blocks, and some are.
    """
    if arch is None:
        arch = draw(st.sampled_from(ARCHES))
    n_tables = draw(st.integers(1, max_tables))
    slots = sorted(
        draw(st.lists(st.integers(0, 4), min_size=n_tables, max_size=n_tables, unique=True))
    )
    table_va = [BASE_VA + s * PMD_SIZE for s in slots]
    n_entries = n_tables * 512
    ptes = np.zeros((n_tables, 512), dtype=np.uint64)
    flat = ptes.reshape(-1)

    # Folios: aligned, increasing, sometimes physically contiguous.
    n_folios = draw(st.integers(0, 8))
    folio_pfn, folio_nr, folio_flags = [], [], []
    cursor = BASE_PFN
    for _ in range(n_folios):
        nr = 1 << draw(folio_orders())
        cursor = (cursor + nr - 1) // nr * nr + nr * draw(st.sampled_from([0, 0, 1]))
        folio_pfn.append(cursor)
        folio_nr.append(nr)
        folio_flags.append(draw(st.integers(0, 3)))
        cursor += nr

    near_end = st.builds(
        lambda t, back: t * 512 + 511 - back, st.integers(0, n_tables - 1), st.integers(0, 20)
    )
    position = st.one_of(st.integers(0, n_entries - 1), near_end)

    def bits(draw_base):
        return entry_bits(arch, *draw_base)

    def aligned_with(first):
        # an entry whose index is congruent to the page's offset mod 16, so 16-page
        # aligned blocks of the folio land on 16-entry aligned blocks (contpte)
        g = draw(position)
        return g - (g % 16) + first % 16 if g - (g % 16) + first % 16 < n_entries else g

    for f in range(n_folios):
        for _ in range(draw(st.integers(0, 2))):  # mapped 0-2 times
            nr = folio_nr[f]
            first = draw(st.integers(0, nr - 1)) if draw(st.booleans()) else 0
            length = draw(st.integers(1, nr - first))
            g = aligned_with(first) if arch.cont and draw(st.booleans()) else draw(position)
            base = bits(draw(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())))
            for k in range(length):
                if g + k >= n_entries:
                    break
                flat[g + k] = np.uint64(((folio_pfn[f] + first + k) << 12) | base)
    # Order-0 pages (PFNs in no listed folio), and a page just past some folio.
    for _ in range(draw(st.integers(0, 4))):
        g = draw(position)
        pfn = draw(
            st.one_of(
                st.integers(1, BASE_PFN - 1),
                st.sampled_from([p + n for p, n in zip(folio_pfn, folio_nr)] or [7]),
            )
        )
        flat[g] = np.uint64((pfn << 12) | int(arch.make_pte(0, write=True)))
    if arch.cont:
        # per-entry young/dirty after the fold, as the MMU sets them
        fold_contpte(arch, flat, folio_pfn, folio_nr, iter(lambda: draw(st.booleans()), None))
        for _ in range(draw(st.integers(0, 3))):
            g = draw(position)
            if flat[g]:
                flat[g] = arch.mark_dirty(arch.pte_mkyoung(flat[g]))
    # Perturbations: bit flips, holes, PFN gaps.
    mapped = np.flatnonzero(flat)
    for _ in range(draw(st.integers(0, 8)) if mapped.size else 0):
        g = int(mapped[draw(st.integers(0, mapped.size - 1))])
        kind = draw(st.sampled_from(["flip", "hole", "gap"]))
        if kind == "flip":
            flat[g] ^= np.uint64(1 << draw(st.sampled_from(FLIP_BITS[arch.name])))
        elif kind == "hole":
            flat[g] = 0
        else:
            flat[g] += np.uint64(draw(st.sampled_from([1, 2, 512])) << 12)
    if draw(st.booleans()):
        flat |= np.where(flat != 0, np.uint64(NX_ALL[arch.name]), np.uint64(0))

    # VMAs: page-aligned, sorted, disjoint, around and across the tables.
    lo, hi = BASE_VA - PMD_SIZE, BASE_VA + 6 * PMD_SIZE
    cuts = sorted(
        set(draw(st.lists(st.integers(0, (hi - lo) // PAGE_SIZE), min_size=2, max_size=6)))
    )
    if len(cuts) % 2:
        cuts = cuts[:-1]
    vma_start = [lo + c * PAGE_SIZE for c in cuts[0::2]]
    vma_end = [lo + c * PAGE_SIZE for c in cuts[1::2]]
    if not vma_start or draw(st.booleans()):
        # one VMA covering every table, the common case
        vma_start, vma_end = [table_va[0]], [table_va[-1] + PMD_SIZE]
    return AddressSpace(
        ptes,
        np.array(table_va, dtype=np.uint64),
        np.array(vma_start, dtype=np.uint64),
        np.array(vma_end, dtype=np.uint64),
        np.array(folio_pfn, dtype=np.uint64),
        np.array(folio_nr, dtype=np.uint64),
        np.array(folio_flags, dtype=np.uint8),
        arch=arch.name,
        vma_flags=np.array([draw(st.sampled_from([0, 0, 1])) for _ in vma_start], dtype=np.uint8),
    )


@st.composite
def batch_calls(draw, arch=None):
    """Arguments of one folio_pte_batch call on a short array (the last item is the arch)."""
    if arch is None:
        arch = draw(st.sampled_from(ARCHES))
    nr = 1 << draw(st.integers(1, 5))
    folio_pfn = BASE_PFN + nr * draw(st.integers(0, 4))
    n = draw(st.integers(1, 48))
    arr = np.zeros(n, dtype=np.uint64)
    index = draw(st.integers(0, n - 1))
    first = draw(st.integers(0, nr - 1))
    if arch.cont and draw(st.booleans()):
        index = min(index - index % 16 + first % 16, n - 1)  # foldable alignment
    base = entry_bits(
        arch, draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    )
    run = draw(st.integers(1, n - index + 2))  # the next folio's first page may follow
    lead = 0
    if arch.cont and draw(st.booleans()):
        # the folio's pages before the first one too, back to the 16-entry block start,
        # so the call can start inside a folded block
        lead = min(index % 16, first)
    for k in range(-lead, min(run, n - index)):
        arr[index + k] = np.uint64(((folio_pfn + first + k) << 12) | base)
    if arch.cont:
        fold_contpte(arch, arr, [folio_pfn], [nr], iter(lambda: draw(st.booleans()), None))
        for _ in range(draw(st.integers(0, 3))):  # the MMU's per-entry young/dirty updates
            g = draw(st.integers(0, n - 1))
            if arr[g]:
                arr[g] = (
                    arch.mark_dirty(arch.pte_mkyoung(arr[g]))
                    if draw(st.booleans())
                    else arch.pte_mkyoung(arr[g])
                )
    for _ in range(draw(st.integers(0, 4))):
        g = draw(st.integers(0, n - 1))
        if g == index:
            continue
        kind = draw(st.sampled_from(["flip", "hole", "gap"]))
        if kind == "flip":
            arr[g] ^= np.uint64(1 << draw(st.sampled_from(FLIP_BITS[arch.name])))
        elif kind == "hole":
            arr[g] = 0
        elif arr[g]:
            arr[g] += np.uint64(1 << 12)
    if draw(st.booleans()):
        arr |= np.where(arr != 0, np.uint64(NX_ALL[arch.name]), np.uint64(0))
    max_nr = draw(st.integers(1, n - index + 8))  # may cross the end
    kernel = draw(st.sampled_from(KERNELS))
    gen2 = kernel.startswith("7") or kernel in ("6.17", "6.18")
    flags = draw(st.integers(0, 31 if gen2 else 3))
    return arr, index, max_nr, folio_pfn, nr, flags, kernel, arch.name
