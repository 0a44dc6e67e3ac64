"""A vectorised NumPy scan: a third implementation, for comparison.

With ``clamp="pmd"`` a batch never leaves its segment (one VMA's part of one
table), and whether entry i continues the batch of entry i-1 depends only on
the pair: both present, in the same segment and the same large folio, and
``norm(pte[i]) == norm(pte[i-1]) + (1 << 12)``.  Batches are then the maximal
runs of that relation, which NumPy finds with whole-array operations.  It uses
per-entry temporaries (several times the size of the tables): it shows what
the JIT buys, it is not a replacement.
"""

from __future__ import annotations

import numpy as np

from . import reasons as R
from .arch import PAGE_SHIFT, get_arch
from .callers import Walk
from .checks import check_walk_args
from .planning import segments
from .releases import normaliser
from .results import ScanResult

__all__ = ["scan"]


def scan(
    space, *, caller="zap", kernel="6.16", flags=None, clamp=None, oob="none", parallel=None
) -> ScanResult:
    """Vectorised twin of :func:`ptebatch.scan` for ``clamp="pmd"`` (``oob`` has no effect
    there) and callers that batch every large folio and stamp nothing (zap, fork, madvise...)."""
    preset, fl, clamp, _ = check_walk_args(space, Walk.SCAN, caller, kernel, flags, clamp, oob)
    profile = preset.profile
    if clamp != "pmd":
        raise ValueError("clamp: the NumPy scan supports clamp='pmd' only")
    r = preset.rule
    if not r.batches or r.need_hint or r.dst_clamp or r.spread:
        raise ValueError(
            f"caller: the NumPy scan models callers that always batch and stamp "
            f"nothing; {preset.name} on {profile.name} does not"
        )
    arch = get_arch(space.arch)
    if arch.cont:
        raise ValueError("arch: the NumPy scan does not model pte_batch_hint > 1")
    norm_ = normaliser(arch, profile.generation, fl)
    present_bit, pfn_mask = np.uint64(arch.present), np.uint64(arch.pfn_mask)
    cond_set, cond_clear, cond_or = (
        np.uint64(v) for v in (norm_.cond_set, norm_.cond_clear, norm_.cond_or)
    )
    flat = space.ptes.reshape(-1)
    g0, g1, seg_va, _, _, seg_reason = segments(space)
    lengths = g1 - g0
    total = int(lengths.sum())
    seg = np.repeat(np.arange(g0.size, dtype=np.int64), lengths)
    idx = (
        np.arange(total, dtype=np.int64)
        - np.repeat(np.cumsum(lengths) - lengths, lengths)
        + g0[seg]
    )
    pte = flat[idx]
    present = (pte & present_bit) != 0
    idx, seg, pte = idx[present], seg[present], pte[present]

    pfn = (pte & pfn_mask) >> np.uint64(PAGE_SHIFT)
    fid = _large_folio_of(space, pfn)

    norm = pte.copy()
    if cond_set:
        hit = ((norm & cond_set) == cond_set) & ((norm & cond_clear) == 0)
        norm[hit] |= cond_or
    norm = (norm & np.uint64(norm_.keep)) | np.uint64(norm_.set)

    cont = np.zeros(idx.size, dtype=bool)
    if idx.size > 1:
        cont[1:] = (
            (idx[1:] == idx[:-1] + 1)
            & (seg[1:] == seg[:-1])
            & (fid[1:] == fid[:-1])
            & (fid[1:] >= 0)
            & (norm[1:] == norm[:-1] + np.uint64(1 << PAGE_SHIFT))
        )
    starts = np.flatnonzero(~cont)
    # last entry of each batch (none when no entry is present)
    ends = np.append(starts[1:], idx.size)[: starts.size] - 1
    nr = (ends - starts + 1).astype(np.uint32)
    s_seg = seg[starts]
    va = seg_va[s_seg] + ((idx[starts] - g0[s_seg]).astype(np.uint64) << np.uint64(PAGE_SHIFT))

    reason, reread = _stop_reasons(
        space, flat, pfn, fid, idx, seg, ends, g1, seg_reason, profile.generation.cut_at_folio_end
    )
    # ptep_get reads: the walker reads every entry of a segment once (a batch's first, or
    # one it skips), folio_pte_batch the rest of each batch, plus the entry that ended it
    pte_reads = total + int(np.count_nonzero(reread))
    # with the table clamp and no contpte hint no detector can trip
    return ScanResult(
        caller=preset.name,
        kernel=profile.name,
        generation=profile.generation.name,
        flags=profile.generation.describe_flags(fl),
        oob=oob,
        va=va.astype(np.uint64),
        nr=nr,
        reason=reason,
        findings=np.zeros(nr.size, dtype=np.uint8),
        clamp=clamp,
        present_ptes=int(present.sum()),
        pte_reads=pte_reads,
    )


def _large_folio_of(space, pfn: np.ndarray) -> np.ndarray:
    """Index of the listed large folio each PFN belongs to, or -1 (order 0 or unlisted)."""
    fpfn, fnr = space.folio_pfn, space.folio_nr
    if not fpfn.size:
        return np.full(pfn.size, -1, dtype=np.int64)
    f = np.searchsorted(fpfn, pfn, side="right") - 1
    fc = np.maximum(f, 0)
    large = (f >= 0) & (pfn - fpfn[fc] < fnr[fc]) & (fnr[fc] > 1)
    return np.where(large, f, -1)


def _stop_reasons(space, flat, pfn, fid, idx, seg, ends, g1, seg_reason, cut) -> tuple:
    """What stopped each batch, from its last entry and the entry after it; and whether
    folio_pte_batch's loop read that next entry (a large folio's batch that ended before
    its segment's end, unless ``cut`` already stopped it at the folio's end: gen 1b, 2)."""
    fpfn, fnr = space.folio_pfn, space.folio_nr
    arch = get_arch(space.arch)
    present_bit, pfn_mask = np.uint64(arch.present), np.uint64(arch.pfn_mask)
    e_f = fid[ends]
    e_fc = np.maximum(e_f, 0)
    at_folio_end = (
        (e_f >= 0) & (pfn[ends] + np.uint64(1) == fpfn[e_fc] + fnr[e_fc])
        if fpfn.size
        else np.zeros(ends.size, bool)
    )
    nxt = idx[ends] + 1
    at_seg_end = nxt == g1[seg[ends]]
    raw = flat[np.minimum(nxt, flat.size - 1)]
    nxt_present = (raw & present_bit) != 0
    nxt_pfn = (raw & pfn_mask) >> np.uint64(PAGE_SHIFT)
    reason = np.select(
        [e_f < 0, at_folio_end, at_seg_end, ~nxt_present, nxt_pfn != pfn[ends] + np.uint64(1)],
        [R.ORDER0, R.FOLIO_END, seg_reason[seg[ends]], R.NOT_PRESENT, R.PFN_GAP],
        default=R.BIT_MISMATCH,
    ).astype(np.uint8)
    reread = (e_f >= 0) & ~at_seg_end & ~(at_folio_end & bool(cut))
    return reason, reread
