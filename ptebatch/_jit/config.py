"""The configuration contract between Python and the compiled walks.

Architecture, generation, flags and detectors reach every compiled function
as one :class:`Config`, read by name.  It is a NamedTuple of ``np.uint64``,
not an array: Numba passes a tuple by value, so LLVM knows no output store
can change it and keeps it in registers (an array here made the serial scan
about 7x slower).  The walk-kind codes below are the values of the shared
enums in :mod:`ptebatch.callers`, bound to plain ints so that compiled code
sees constants.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..arch import Arch
from ..callers import Batching, UnmapMode
from ..releases import KernelProfile, normaliser

WALK_NONE = int(Batching.NONE)
WALK_BATCH = int(Batching.ALWAYS)
WALK_HINT = int(Batching.HINT)
UNMAP_SINGLE = int(UnmapMode.SINGLE)
UNMAP_ALL_OR_NOTHING = int(UnmapMode.ALL_OR_NOTHING)
UNMAP_CLAMPED = int(UnmapMode.CLAMPED)


class Config(NamedTuple):
    """What one (architecture, generation, flags, detectors) means to the walks; all uint64."""

    cond_set: np.uint64  # normaliser: conditional step, tested bits that must be set (0: none)
    cond_clear: np.uint64  # ... tested bits that must be clear
    cond_or: np.uint64  # ... bits it sets
    keep: np.uint64  # normaliser: bits kept
    set: np.uint64  # normaliser: bits set
    present: np.uint64
    pfn_mask: np.uint64
    cut: np.uint64  # 1: cut max_nr to the pages left in the folio (gen 1b, 2)
    pfn_check: np.uint64  # 1: stop on a matching PTE past the folio end (gen 1)
    write: np.uint64
    young: np.uint64
    dirty: np.uint64  # pte_dirty: any of these bits ...
    dirty_hw_set: np.uint64  # ... or all of these set (0: unused) ...
    dirty_hw_clear: np.uint64  # ... and none of these
    cont: np.uint64  # contiguous bit for pte_batch_hint (0: the hint is always 1)
    special: np.uint64  # pte_special: maps no folio, never batched
    mkdirty_set: np.uint64  # pte_mkdirty, used by the contpte gather: OR these bits, then ...
    mkdirty_if: np.uint64  # ... if all of these are set (0: never) ...
    mkdirty_clear: np.uint64  # ... clear these (arm64: read-only, when writable)
    spread: np.uint64  # detector: bits a write-back caller stamps from the first PTE
    spread_dirty: np.uint64  # detector: 1 if it stamps the dirty state too
    uffd_wp: np.uint64  # detector: the uffd-wp bit (0: not checked)


def _mkdirty_masks(arch: Arch) -> tuple[int, int, int]:
    """``pte_mkdirty`` as (bits set, condition, bits cleared if the condition holds)."""
    set_, cond, clear = 0, 0, 0
    for cs, cc, s, c in arch.ops["mkdirty"]:
        if not (cs or cc) and not c:
            set_ |= s
        elif cs and not cc and not s and not cond:
            cond, clear = cs, c
        else:
            raise NotImplementedError(
                f"{arch.name}: pte_mkdirty has a step the walks cannot express"
            )
    return set_, cond, clear


def make_config(
    arch: Arch, profile: KernelProfile, flags: int, spread=(), uffd_wp: bool = True
) -> Config:
    """The walks' configuration for one (architecture, generation, flags).

    ``spread`` names the properties a write-back caller stamps from the first
    PTE (the ``spread`` detector); ``uffd_wp`` turns the uffd-wp detector on.
    """
    gen = profile.generation
    norm = normaliser(arch, gen, flags)
    mk_set, mk_if, mk_clear = _mkdirty_masks(arch)
    prop_bits = {"write": arch.write, "soft_dirty": arch.soft_dirty}
    values = dict(
        cond_set=norm.cond_set,
        cond_clear=norm.cond_clear,
        cond_or=norm.cond_or,
        keep=norm.keep,
        set=norm.set,
        present=arch.present,
        pfn_mask=arch.pfn_mask,
        cut=int(gen.cut_at_folio_end),
        pfn_check=int(gen.pfn_check_in_loop),
        write=arch.write,
        young=arch.young,
        dirty=arch.dirty_any,
        dirty_hw_set=arch.dirty_hw[0],
        dirty_hw_clear=arch.dirty_hw[1],
        cont=arch.cont,
        special=arch.special,
        mkdirty_set=mk_set,
        mkdirty_if=mk_if,
        mkdirty_clear=mk_clear,
        spread=sum(prop_bits.get(p, 0) for p in set(spread)),
        spread_dirty=int("dirty" in spread),
        uffd_wp=arch.uffd_wp if uffd_wp else 0,
    )
    return Config(**{k: np.uint64(v) for k, v in values.items()})


class RowFilter(NamedTuple):
    """Which batches become rows; every batch is counted either way.  All uint64."""

    rows: np.uint64  # 0: counts only, no row is written
    min_nr: np.uint64  # rows of at least this many PTEs
    reasons: np.uint64  # bit r set: rows that stopped for reason r
    findings: np.uint64  # 0: any; else rows with at least one of these detector bits
    va_lo: np.uint64  # rows whose first address is in [va_lo, va_hi)
    va_hi: np.uint64
