"""Write the committed snapshots in this directory (run: python data/make_data.py).

Every file is written atomically by AddressSpace.save; running the script again
gives byte-identical arrays.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import ptebatch as pb
from ptebatch.space import FOLIO_ANON, FOLIO_SWAPBACKED

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = 0x10000000000          # 1 TiB, a 2 MiB boundary
PAGE = 4096
X86 = pb.X86_64


def lazyfree_restore() -> pb.AddressSpace:
    """Real bug #5: one 16-page lazyfree folio, entries 16-31; 8 writable then 8 read-only PTEs."""
    va = BASE + PAGE * (16 + np.arange(16, dtype=np.uint64))
    pfn = 0x200000 + np.arange(16, dtype=np.uint64)
    ptes = X86.make_pte(pfn, write=np.arange(16) < 8)
    return pb.AddressSpace.from_entries(va, ptes, [int(va[0])], [int(va[-1]) + PAGE],
                                        [0x200000], [16], [FOLIO_ANON])


def folio_end() -> pb.AddressSpace:
    """A 16-page folio (entries 0-15) followed in entry 16 by the physically next PFN
    (an order-0 page) with the same bits: only the folio-end check stops the batch."""
    va = BASE + PAGE * np.arange(17, dtype=np.uint64)
    ptes = X86.make_pte(0x300000 + np.arange(17, dtype=np.uint64), write=True, young=True)
    return pb.AddressSpace.from_entries(va, ptes, [BASE], [BASE + 17 * PAGE],
                                        [0x300000], [16], [FOLIO_ANON | FOLIO_SWAPBACKED])


def xen_pv() -> pb.AddressSpace:
    """Real bug #2's layout: a 4-page folio in entries 453-456, entry 457 empty
    (the XEN PV PTE encoding itself is not modelled)."""
    va = BASE + PAGE * (453 + np.arange(4, dtype=np.uint64))
    ptes = X86.make_pte(0x400000 + np.arange(4, dtype=np.uint64), write=True)
    return pb.AddressSpace.from_entries(va, ptes, [BASE + 448 * PAGE], [BASE + 464 * PAGE],
                                        [0x400000], [4], [FOLIO_ANON | FOLIO_SWAPBACKED])


def mixed_mthp() -> pb.AddressSpace:
    return pb.generate(2000, seed=1, sizes="mthp-mixed", moved=0.1, partial=0.05, holes=0.01)


FILES = {
    "thread.npz": pb.thread_layout,
    "lazyfree_restore.npz": lazyfree_restore,
    "folio_end.npz": folio_end,
    "xen_pv.npz": xen_pv,
    "mixed_mthp.npz": mixed_mthp,
}


def main(directory: str = HERE) -> None:
    for name, make in FILES.items():
        path = os.path.join(directory, name)
        make().save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
