"""The one place that sets Numba options.

* ``nopython`` always; ``nogil`` so callers may use threads.
* ``error_model="numpy"``: no Python exception machinery in the hot loops.
* ``boundscheck`` is left unset so ``NUMBA_BOUNDSCHECK=1`` turns it on for a
  test pass; ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python.
* Caching is opt-in (``PTEBATCH_NUMBA_CACHE=1``): Numba's cache key ignores
  the two switches above, so a shared cache could hand a bounds-checked run a
  kernel compiled without checks.
* Nothing is compiled at import: kernels are compiled lazily on first call.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numba

CACHE = os.environ.get("PTEBATCH_NUMBA_CACHE", "").strip() not in ("", "0")

prange = numba.prange


def jit(*, parallel: bool = False, inline: bool = False):
    """Decorator for every ptebatch kernel (lazy, nopython).

    ``inline=True`` inlines a small helper into its callers at Numba IR level
    (measured: the serial scan runs about 1.8x faster than with LLVM's own
    inlining).  Such a helper is never compiled on its own.
    """
    return numba.njit(
        cache=CACHE,
        nogil=True,
        parallel=parallel,
        error_model="numpy",
        fastmath=False,
        inline="always" if inline else "never",
    )


def num_threads() -> int:
    """Threads a parallel kernel will use."""
    return int(numba.get_num_threads())


@contextmanager
def threads(parallel: bool):
    """Run parallel kernels on all Numba threads, or on one (``parallel=False``).

    There is one compiled kernel per walk, built with ``parallel=True``:
    Numba marks a parallel loop body's arrays ``noalias``, which made it 3.5x
    faster than the same code compiled as a plain serial function (measured on
    a 2M-entry 4 KiB space).  The serial run is that kernel on one thread, so
    serial and parallel differ only in threads.  The setting is per thread.
    """
    if parallel or numba.config.DISABLE_JIT:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)
