"""Write the committed snapshots in this directory (run: python data/make_data.py).

Every file is written atomically by AddressSpace.save; running the script again
gives byte-identical arrays.  The layouts live in ptebatch.layouts, and the
regression corpus (ptebatch.corpus.CORPUS) names the file of each real bug.
"""

from __future__ import annotations

import os
import sys

import ptebatch as pb
from ptebatch import layouts
from ptebatch.corpus import CORPUS

HERE = os.path.dirname(os.path.abspath(__file__))


def mixed_mthp() -> pb.AddressSpace:
    return pb.generate(2000, seed=1, sizes="mthp-mixed", moved=0.1, partial=0.05, holes=0.01)


FILES = {
    "folio_end.npz": layouts.folio_end_layout,
    "xen_pv.npz": layouts.xen_pv_layout,
    "mixed_mthp.npz": mixed_mthp,
}
for _bug in CORPUS:
    FILES[_bug.file] = _bug.layout


def main(directory: str = HERE) -> None:
    for name, make in FILES.items():
        path = os.path.join(directory, name)
        make().save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
