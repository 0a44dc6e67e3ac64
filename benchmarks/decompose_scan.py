"""Where the serial counts-mode scan spends its time: stripped-down walks of the same tables.

Run: ``python benchmarks/decompose_scan.py [case]`` (default ``mixed-1m``).  Prints, best of 7
by thread CPU time (the machine is shared: CPU time is steadier than wall time):

* a streaming read (NumPy's OR-reduce of every entry), the memory-bound floor;
* ``entry-by-entry``: visit every present entry, one step each, no folio lookup;
* ``lookup-jump``: look each batch start up in the order table and jump to the end of its
  folio (in the same table), comparing nothing: the cost of the dependent chain of lookups;
* ``lookup-compare``: the same, comparing each entry with the expected PTE (PFN + 1, masked
  young/dirty) as folio_pte_batch does: a minimal x86-64 scan with the same batches as
  ``ptebatch.scan`` on this layout (checked);
* ``ptebatch.scan(parallel=False, rows=False)``.

These are measurements for tuning, not a second implementation: the walks here know only the
x86-64 encoding and the PMD clamp.
"""

from __future__ import annotations

import sys
import time

import numba
import numpy as np

import ptebatch as pb
from ptebatch.bench import _best, space_for
from ptebatch.planning import order_table

PFN_MASK = np.uint64(0x000F_FFFF_FFFF_F000)
PRESENT = np.uint64(1)
SHIFT = np.uint64(12)
KEEP = np.uint64(~((1 << 5) | (1 << 6)) & ((1 << 64) - 1))  # young and dirty ignored
STEP = np.uint64(1 << 12)


@numba.njit(nogil=True, error_model="numpy")
def walk(flat, forder, obase, oshift, lookup, compare):
    n = flat.shape[0]
    batches = 0
    ptes = 0
    g = 0
    while g < n:
        pte = flat[g]
        if (pte & PRESENT) == np.uint64(0):
            g += 1
            continue
        nr = 1
        if lookup:
            pfn = (pte & PFN_MASK) >> SHIFT
            b = np.int64((pfn - obase) >> oshift)
            if pfn >= obase and b < forder.shape[0] and forder[b] > 0:
                fn = np.uint64(1) << np.uint64(forder[b])
                first = pfn & ~(fn - np.uint64(1))
                most = min(np.int64(first + fn - pfn), (g // 512 + 1) * 512 - g)
                if compare:
                    k = g + 1
                    expected = (pte & KEEP) + STEP
                    while k < g + most and (flat[k] & KEEP) == expected:
                        expected += STEP
                        k += 1
                    nr = k - g
                else:
                    nr = most
        batches += 1
        ptes += nr
        g += nr
    return batches, ptes


def best(fn) -> float:
    return _best(fn, 7, clock=time.thread_time)


def main(case: str = "mixed-1m") -> None:
    space = space_for(case)
    flat = space.ptes.reshape(-1)
    forder, obase, oshift = order_table(space)
    ref = pb.scan(space, parallel=False, rows=False)
    got = walk(flat, forder, obase, oshift, True, True)
    print(f"{case}: {ref.batches:,} batches; minimal walk {got[0]:,} batches, {got[1]:,} PTEs")
    t = {
        "streaming read": best(lambda: np.bitwise_or.reduce(flat)),
        "entry-by-entry": best(lambda: walk(flat, forder, obase, oshift, False, False)),
        "lookup-jump": best(lambda: walk(flat, forder, obase, oshift, True, False)),
        "lookup-compare": best(lambda: walk(flat, forder, obase, oshift, True, True)),
        "ptebatch.scan": best(lambda: pb.scan(space, parallel=False, rows=False)),
    }
    stream = t["streaming read"]
    for name, sec in t.items():
        print(
            f"  {name:15s} {sec * 1e3:7.1f} ms  {sec / ref.batches * 1e9:6.1f} ns/batch"
            f"  stream/this {stream / sec:.2f}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
