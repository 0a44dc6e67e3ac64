"""What a walk does with each batch: count it, and write it as a row if the filter keeps it.

Counts are a histogram of batch length by stop reason, ``hist[reason, nr]``,
and one counter per detector bit, ``found[bit]``: every total a result
reports (batches, PTEs, stop reasons, findings, overruns) is a sum over them,
so a walk in counts mode writes nothing per batch.
"""

from __future__ import annotations

import numpy as np

from .options import jit
from .pte import ONE, ZERO

N_DETECTORS = 8  # detector bits counted (ptebatch.reasons.FINDINGS uses the low five)


@jit(inline=True)
def count_batch(hist, found, reason, nr, over):
    """Add one batch to the chunk's counts (lengths past the last bin land in it)."""
    b = nr
    if b >= hist.shape[1]:
        b = hist.shape[1] - 1
    hist[reason, b] += 1
    bits = over
    k = 0
    while bits != 0:
        if bits & 1:
            found[k] += 1
        bits >>= 1
        k += 1


@jit(inline=True)
def keep_row(flt, va, nr, reason, over):
    """The row filter: length, stop reason, detector bits and address range."""
    if flt.rows == ZERO or np.uint64(nr) < flt.min_nr:
        return False
    if ((flt.reasons >> np.uint64(reason)) & ONE) == ZERO:
        return False
    if flt.findings != ZERO and (np.uint64(over) & flt.findings) == ZERO:
        return False
    return flt.va_lo <= va and va < flt.va_hi
