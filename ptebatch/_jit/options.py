"""The one place that sets Numba options.

* ``nopython`` always; ``nogil`` so callers may use threads.
* ``error_model="numpy"``: no Python exception machinery in the hot loops.
* ``boundscheck`` is left unset so ``NUMBA_BOUNDSCHECK=1`` turns it on for a
  test pass; ``NUMBA_DISABLE_JIT=1`` runs every function as plain Python.
* Compiled code is cached on disk by default, so a second process loads it
  instead of compiling (Numba's cache: beside the package, or under
  ``NUMBA_CACHE_DIR``).  Numba checks only the source file of the function it
  loads, not the files whose functions were inlined into it, so ptebatch's
  functions are stamped with a hash of every source they are built from
  (``COMPILED_FROM``): an edit to any of them recompiles.  Numba's cache key
  ignores ``NUMBA_BOUNDSCHECK``, so a bounds-checked run neither reads nor
  writes the cache: it can never be handed code compiled without checks, nor
  leave checked code for a normal run.  ``NUMBA_DISABLE_JIT=1`` compiles
  nothing and touches no cache.  ``PTEBATCH_NUMBA_CACHE=0`` turns caching off.
* Nothing is compiled at import: functions are compiled lazily on first call.
"""

from __future__ import annotations

import functools
import hashlib
import os
from contextlib import contextmanager

import numba

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cache_enabled() -> bool:
    if os.environ.get("PTEBATCH_NUMBA_CACHE", "").strip() == "0":
        return False
    # any bounds-check setting, on or off, keeps its code out of the shared cache
    return not os.environ.get("NUMBA_BOUNDSCHECK", "").strip() and not numba.config.DISABLE_JIT


# What compiled code is built from: the _jit package and the modules it imports
# (tests/test_layout.py checks that this list covers them).
COMPILED_FROM = ("_jit", "arch.py", "callers.py", "reasons.py", "releases.py")


@functools.lru_cache(maxsize=1)
def source_tree_hash() -> str:
    """Hash of the sources compiled code is built from: the stamp of its cached code."""
    h = hashlib.sha256()
    paths = []
    for entry in COMPILED_FROM:
        full = os.path.join(_PACKAGE, entry)
        if os.path.isdir(full):
            for folder, dirs, files in os.walk(full):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
        else:
            paths.append(full)
    for path in sorted(paths):
        h.update(os.path.relpath(path, _PACKAGE).encode())
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _install_locators() -> bool:
    """Put tree-stamped variants of Numba's cache locators first, for our files only.

    Returns False (caching then stays off) if this Numba lacks the interface.
    """
    try:
        from numba.core import caching
    except ImportError:
        return False
    bases = [
        getattr(caching, n, None)
        for n in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    ]
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if (
        impl is None
        or None in bases
        or not isinstance(getattr(impl, "_locator_classes", None), list)
    ):
        return False
    ours = []
    for base in bases:

        class Locator(base):
            def get_source_stamp(self):
                return source_tree_hash()

            @classmethod
            def from_function(cls, py_func, py_file):
                if not os.path.abspath(py_file).startswith(_PACKAGE + os.sep):
                    return None
                return super().from_function(py_func, py_file)

        Locator.__name__ = "Ptebatch" + base.__name__
        ours.append(Locator)
    if not any(c.__name__.startswith("Ptebatch") for c in impl._locator_classes):
        impl._locator_classes[:0] = ours
    return True


CACHE = _cache_enabled() and _install_locators()

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


def native_ir() -> bool:
    """Whether hand-written LLVM IR (:mod:`ptebatch._jit.simd`) may run: not when nothing is
    compiled (``NUMBA_DISABLE_JIT=1``) and not in a bounds-checked run, whose checks cannot
    see inside it (its plain twins run instead)."""
    return not numba.config.DISABLE_JIT and not numba.config.BOUNDSCHECK


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
