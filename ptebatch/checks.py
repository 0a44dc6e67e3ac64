"""Argument checks shared by every implementation (JIT, naive, NumPy).

Plain Python and NumPy: this module imports no compiled code, so the naive
reference can use it without depending on what it checks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from . import reasons as R
from .arch import PAGE_SHIFT, PAGE_SIZE, U64, Arch
from .callers import Preset, Walk, resolve_caller
from .releases import resolve_flags
from .space import MAX_FOLIO_NR, AddressSpace

__all__ = [
    "CLAMPS",
    "OOBS",
    "RowSpec",
    "as_int",
    "check_bool",
    "check_batch_args",
    "check_walk_args",
    "check_rows",
]

CLAMPS = ("pmd", "folio")
OOBS = ("none", "adjacent")


def as_int(name: str, value) -> int:
    """``value`` as a Python int; bools and non-integers are refused, naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """``value`` as a bool; only ``True`` and ``False`` are accepted (``"no"`` is not false)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


# move_by is a destination minus a source, both addresses of pages: at most 2**64 - 4096 apart.
MOVE_BY_MAX = U64 + 1 - PAGE_SIZE


def check_batch_args(ptes, index, max_nr, folio_pfn, folio_nr, arch: Arch, max_nr_limit: int):
    """Validate a single-batch call; returns (index, max_nr, folio_pfn, folio_nr, pte)."""
    if not isinstance(ptes, np.ndarray):
        raise TypeError(f"ptes: expected a numpy.ndarray of uint64, got {type(ptes).__name__}")
    if ptes.dtype != np.uint64:
        raise TypeError(f"ptes: dtype must be uint64, got {ptes.dtype}")
    if ptes.ndim != 1:
        raise ValueError(
            f"ptes: must be one-dimensional (one table, or space.ptes.reshape(-1) with "
            f"index = table * 512 + entry), got shape {ptes.shape}"
        )
    if not ptes.flags.c_contiguous:
        raise ValueError("ptes: must be C-contiguous (use np.ascontiguousarray)")
    index = as_int("index", index)
    max_nr = as_int("max_nr", max_nr)
    folio_pfn = as_int("folio_pfn", folio_pfn)
    folio_nr = as_int("folio_nr", folio_nr)
    if not 0 <= index < ptes.shape[0]:
        raise ValueError(f"index: {index} is outside the array of {ptes.shape[0]} entries")
    if max_nr < 1:
        raise ValueError(f"max_nr: must be at least 1, got {max_nr}")
    if max_nr > max_nr_limit:
        raise ValueError(
            f"max_nr: {max_nr} does not fit the kernel's max_nr type (at most {max_nr_limit})"
        )
    if folio_nr < 2 or folio_nr & (folio_nr - 1) or folio_nr > MAX_FOLIO_NR:
        raise ValueError(
            f"folio_nr: must be a power of two from 2 to {MAX_FOLIO_NR} (folio_pte_batch is "
            f"only called for large folios, and no modelled kernel has a larger one), "
            f"got {folio_nr}"
        )
    if folio_pfn < 0 or folio_pfn % folio_nr or folio_pfn + folio_nr - 1 > arch.max_pfn:
        raise ValueError(
            f"folio_pfn: must be aligned to folio_nr and fit the PFN field, "
            f"got {folio_pfn:#x} with {folio_nr} pages"
        )
    pte = int(ptes[index])
    if not pte & arch.present:
        raise ValueError(f"ptes[{index}]: the first PTE must be present, got {pte:#x}")
    pfn = (pte & arch.pfn_mask) >> PAGE_SHIFT
    if not folio_pfn <= pfn < folio_pfn + folio_nr:
        raise ValueError(
            f"ptes[{index}]: the first PTE maps PFN {pfn:#x}, outside the folio "
            f"[{folio_pfn:#x}, {folio_pfn + folio_nr:#x})"
        )
    return index, max_nr, folio_pfn, folio_nr, pte


def check_walk_args(
    space, walk: Walk, caller, kernel, flags, clamp, oob, move_by=0, batching=True
) -> tuple[Preset, int, str, int]:
    """Shared argument checks of scan/unmap (JIT and naive).

    Returns ``(preset, flags, clamp, move_by)``: explicit ``flags`` replace the
    preset's; ``clamp=None`` is ``"pmd"``, as every page-table walker cuts.
    ``batching=False`` gives the preset a ``batches=False`` rule, the row of a
    release in which the caller does not batch yet.
    """
    if not isinstance(space, AddressSpace):
        raise TypeError(f"space: expected an AddressSpace, got {type(space).__name__}")
    preset = resolve_caller(caller, kernel, walk=walk)
    if not check_bool("batching", batching):
        preset = replace(preset, rule=replace(preset.rule, batches=False))
    fl = resolve_flags(flags, preset.profile.generation, preset.flags)
    clamp = "pmd" if clamp is None else clamp
    if clamp not in CLAMPS:
        raise ValueError(f"clamp: must be one of {', '.join(CLAMPS)}, got {clamp!r}")
    if oob not in OOBS:
        raise ValueError(f"oob: must be one of {', '.join(OOBS)}, got {oob!r}")
    move_by = as_int("move_by", move_by)
    if not -MOVE_BY_MAX <= move_by <= MOVE_BY_MAX:
        raise ValueError(
            f"move_by: must be between -(2**64 - 4096) and 2**64 - 4096 (a destination minus "
            f"a source address), got {move_by:#x}"
        )
    if move_by % PAGE_SIZE:
        raise ValueError(f"move_by: must be a multiple of 4096 (a page), got {move_by}")
    if move_by and not preset.caller.takes_move_by:
        raise ValueError(
            f"move_by: only a caller that moves entries to a destination (mremap) "
            f"takes it, not {preset.name}"
        )
    return preset, fl, clamp, move_by


class RowSpec(NamedTuple):
    """Which batches a walk returns as rows (every batch is counted either way)."""

    rows: bool
    min_nr: int = 1
    reasons: int = (1 << len(R.NAMES)) - 1  # bit r: rows that stopped for reason r
    findings: int = 0  # 0: any row; else rows with one of these detector bits
    va_lo: int = 0
    va_hi: int = U64  # rows whose first address is in [va_lo, va_hi)


ROW_KEYS = ("min_nr", "reasons", "findings", "va")


def check_rows(rows) -> RowSpec:
    """``rows`` of scan/unmap as a :class:`RowSpec`.

    ``True``: every batch is a row; ``False``: counts only; a dict keeps the
    rows that match all its keys: ``min_nr`` (int), ``reasons`` (stop reason
    names), ``findings`` (detector names: rows that tripped any of them),
    ``va`` (``(lo, hi)``: rows whose first address is in ``[lo, hi)``).
    """
    if isinstance(rows, (bool, np.bool_)):
        return RowSpec(bool(rows))
    if not isinstance(rows, dict):
        raise TypeError(
            f"rows: expected True, False or a dict of filters, got {type(rows).__name__}"
        )
    unknown = set(rows) - set(ROW_KEYS)
    if unknown:
        raise ValueError(
            f"rows: unknown filter {sorted(unknown)[0]!r} (known: {', '.join(ROW_KEYS)})"
        )
    spec = {"rows": True}
    if "min_nr" in rows:
        spec["min_nr"] = as_int("rows.min_nr", rows["min_nr"])
        if spec["min_nr"] < 1:
            raise ValueError(f"rows.min_nr: must be at least 1, got {spec['min_nr']}")
    if "reasons" in rows:
        names = [rows["reasons"]] if isinstance(rows["reasons"], str) else list(rows["reasons"])
        bad = [n for n in names if n not in R.NAMES]
        if bad or not names:
            raise ValueError(
                f"rows.reasons: unknown stop reason {bad[0] if bad else ''!r} "
                f"(known: {', '.join(R.NAMES)})"
            )
        spec["reasons"] = sum(1 << R.NAMES.index(n) for n in set(names))
    if "findings" in rows:
        bits = dict(R.FINDINGS)
        names = [rows["findings"]] if isinstance(rows["findings"], str) else list(rows["findings"])
        bad = [n for n in names if n not in bits]
        if bad or not names:
            raise ValueError(
                f"rows.findings: unknown detector {bad[0] if bad else ''!r} "
                f"(known: {', '.join(bits)})"
            )
        spec["findings"] = sum(bits[n] for n in set(names))
    if "va" in rows:
        try:
            lo, hi = rows["va"]
        except (TypeError, ValueError):
            raise ValueError("rows.va: expected (lo, hi)") from None
        lo, hi = as_int("rows.va", lo), as_int("rows.va", hi)
        if not 0 <= lo < hi <= U64 + 1:
            raise ValueError(f"rows.va: need 0 <= lo < hi <= 2**64, got ({lo:#x}, {hi:#x})")
        # pages start 4 KiB apart, so "below 2**64 - 1" is "below 2**64"
        spec["va_lo"], spec["va_hi"] = lo, min(hi, U64)
    return RowSpec(**spec)


def keep_rows(spec: RowSpec, va, nr, reason, findings) -> np.ndarray:
    """The rows a :class:`RowSpec` keeps, as a mask (for implementations that build every row)."""
    va, nr = np.asarray(va, dtype=np.uint64), np.asarray(nr)
    keep = np.full(nr.shape, spec.rows, dtype=bool)
    keep &= nr >= spec.min_nr
    keep &= ((spec.reasons >> np.asarray(reason, dtype=np.int64)) & 1).astype(bool)
    if spec.findings:
        keep &= (np.asarray(findings, dtype=np.int64) & spec.findings) != 0
    keep &= (va >= np.uint64(spec.va_lo)) & (va < np.uint64(spec.va_hi))
    return keep
