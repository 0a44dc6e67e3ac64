"""The compiled side of ptebatch: every Numba function, and nothing else.

Modules are named after the kernel functions they model:

* :mod:`.options` -- the one place that sets Numba options (``jit``, threads).
* :mod:`.config` -- the :class:`~.config.Config` every compiled function reads by name.
* :mod:`.pte` -- PTE accessors: ``ptep_get`` (with arm64's contpte gather),
  ``pte_batch_hint``, ``pmd_addr_end``.
* :mod:`.folio_pte_batch` -- the hot loop, and a batch's stop reason and findings.
* :mod:`.folio_lookup` -- which large folio a PFN belongs to.
* :mod:`.tally` -- what a walk does with each batch: count it, and keep it as a row or not.
* :mod:`.zap_pte_range` -- the page-table walk behind :func:`ptebatch.scan`.
* :mod:`.try_to_unmap` -- reclaim's per-folio unmap behind :func:`ptebatch.unmap`.
* :mod:`.generator` -- the synthetic-space generator's loops.

Page tables are read through one flat view ``flat = ptes.reshape(-1)``:
entry ``i`` of table ``t`` is ``flat[t * 512 + i]``.  Nothing is compiled at
import; each function compiles on its first call.
"""

from __future__ import annotations

import importlib.util
import sys


def compiled(name: str):
    """The module ``ptebatch._jit.<name>``, loaded on first attribute access.

    Importing Numba takes about 0.3 s; commands that never walk a table (``ptebatch info``,
    ``--help``) should not pay it, so the library holds its compiled modules through this.
    """
    full = f"{__name__}.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec(full)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    loader.exec_module(module)
    return module


def num_threads() -> int:
    """Threads a parallel kernel will use (loads Numba)."""
    return compiled("options").num_threads()


def dispatchers() -> dict:
    """Every compiled function by ``module.name``: for the type-hygiene test and compile times."""
    from . import (
        folio_lookup,
        folio_pte_batch,
        generator,
        pte,
        simd,
        tally,
        try_to_unmap,
        zap_pte_range,
    )

    out = {}
    for mod in (
        pte,
        simd,
        folio_pte_batch,
        folio_lookup,
        tally,
        zap_pte_range,
        try_to_unmap,
        generator,
    ):
        for name, obj in vars(mod).items():
            if (
                hasattr(obj, "overloads")
                and hasattr(obj, "py_func")
                and obj.__module__ == mod.__name__
                # not an alias (simd's names are its plain twins when no IR may run)
                and obj.py_func.__name__ == name
            ):
                out[f"{mod.__name__.rsplit('.', 1)[1]}.{name}"] = obj
    return out
