"""Result types shared by the JIT engine and the naive reference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import reasons as R

__all__ = ["BatchResult", "ScanResult", "UnmapResult"]


@dataclass(frozen=True)
class BatchResult:
    """One ``folio_pte_batch`` call.

    Attributes
    ----------
    nr : int
        PTEs in the batch (1 to ``max_nr``).
    reason : str
        What limited the batch (see :mod:`ptebatch.reasons`).
    last_read : int
        Highest index the loop read (``index`` when it read nothing more).
    crosses_end : bool
        ``index + max_nr`` is past the array: a caller bug the kernel would not
        notice.  Reads past the end were not made; they count as none.
    read_past_end : bool
        The loop wanted an entry past the array's end.
    any_writable, any_young, any_dirty : bool or None
        Generation 1/1b outputs (raw bits of the batched PTEs after the first);
        ``None`` in generation 2.
    pte : int or None
        Generation 2 output: the first PTE with ``FPB_MERGE_*`` applied;
        ``None`` in generation 1/1b.
    """

    nr: int
    reason: str
    last_read: int
    crosses_end: bool
    read_past_end: bool
    any_writable: bool | None = None
    any_young: bool | None = None
    any_dirty: bool | None = None
    pte: int | None = None


def _hist(nr: np.ndarray) -> np.ndarray:
    return np.bincount(nr.astype(np.intp), minlength=2) if nr.size else np.zeros(2, dtype=np.intp)


def _reason_counts(reason: np.ndarray, names) -> dict:
    counts = np.bincount(reason.astype(np.intp), minlength=len(R.NAMES))
    return {name: int(counts[R.NAMES.index(name)]) for name in names}


SCAN_REASONS = (
    "folio_end",
    "pmd_end",
    "vma_end",
    "dst_pmd_end",
    "not_present",
    "pfn_gap",
    "bit_mismatch",
    "order0",
    "single",
)
UNMAP_REASONS = (
    "folio_end",
    "pmd_end",
    "vma_end",
    "not_present",
    "pfn_gap",
    "bit_mismatch",
    "single",
)


@dataclass
class _WalkResult:
    caller: str
    kernel: str
    generation: str
    flags: list
    oob: str
    va: np.ndarray
    nr: np.ndarray
    reason: np.ndarray
    findings: np.ndarray
    table_overruns: int = field(init=False)
    vma_overruns: int = field(init=False)

    def __post_init__(self) -> None:
        self.table_overruns = int(np.count_nonzero(self.findings & R.OVER_TABLE))
        self.vma_overruns = int(np.count_nonzero(self.findings & R.OVER_VMA))

    @property
    def finding_counts(self) -> dict:
        """Batches that tripped each detector (``table_overrun``, ``vma_overrun``,
        ``past_folio``, ``spread``, ``uffd_wp``)."""
        return {name: int(np.count_nonzero(self.findings & bit)) for name, bit in R.FINDINGS}

    def flagged(self, detector: str) -> np.ndarray:
        """Row indices of the batches that tripped ``detector``."""
        bits = dict(R.FINDINGS)
        if detector not in bits:
            raise ValueError(f"detector: unknown detector {detector!r} (known: {', '.join(bits)})")
        return np.flatnonzero(self.findings & bits[detector])

    @property
    def batches(self) -> int:
        """Number of batches (rows)."""
        return int(self.nr.shape[0])

    @property
    def hist(self) -> np.ndarray:
        """Batch-size histogram: ``hist[n]`` batches of ``n`` PTEs."""
        return _hist(self.nr)

    @property
    def mean_batch(self) -> float:
        """Mean PTEs per batch (0.0 with no batches)."""
        return float(self.nr.mean()) if self.nr.size else 0.0

    def _common(self, reasons) -> dict:
        h = self.hist
        return {
            "caller": self.caller,
            "kernel": self.kernel,
            "generation": self.generation,
            "flags": list(self.flags),
            "oob": self.oob,
            "batches": self.batches,
            "ptes_batched": int(self.nr.sum(dtype=np.uint64)),
            "mean_batch": round(self.mean_batch, 6),
            "table_overruns": self.table_overruns,
            "vma_overruns": self.vma_overruns,
            "findings": self.finding_counts,
            "stop_reasons": _reason_counts(self.reason, reasons),
            "batch_size_hist": {str(n): int(c) for n, c in enumerate(h) if c},
        }

    def reason_names(self) -> np.ndarray:
        """The ``reason`` codes as strings."""
        return np.asarray(R.NAMES, dtype=object)[self.reason]


@dataclass
class ScanResult(_WalkResult):
    """Result of :func:`ptebatch.scan`.

    Attributes
    ----------
    caller : str
        The walker preset (``zap``, ``fork-private``, ``mremap``...).
    va, nr, reason, findings : numpy.ndarray
        One row per batch in walk order: start address (uint64), size
        (uint32), reason code (uint8, names in :mod:`ptebatch.reasons`) and
        detector bits (uint8, :data:`ptebatch.reasons.FINDINGS`): 1 read past
        entry 511, 2 read past the VMA end, 4 covers a page past its folio,
        8 entries differ in a bit the caller stamps from the first PTE,
        16 entries differ in uffd-wp.
    table_overruns, vma_overruns : int
        Batches whose scan read past entry 511 of its table / past its VMA.
    finding_counts : dict
        Batches per detector.
    present_ptes : int
        Present PTEs inside VMAs.
    tables_moved : int
        mremap: whole tables moved by their PMD entry, whose PTEs no batch saw.
    clamp : str
    """

    clamp: str = "pmd"
    present_ptes: int = 0
    tables_moved: int = 0

    @property
    def stop_reasons(self) -> dict:
        """Batches per stop reason."""
        return _reason_counts(self.reason, SCAN_REASONS)

    def summary(self) -> dict:
        """JSON-ready dict of the counts (no per-batch arrays)."""
        out = {
            "walk": "scan",
            "clamp": self.clamp,
            "present_ptes": self.present_ptes,
            "tables_moved": self.tables_moved,
        }
        out.update(self._common(SCAN_REASONS))
        return out


@dataclass
class UnmapResult(_WalkResult):
    """Result of :func:`ptebatch.unmap`.

    Attributes
    ----------
    caller : str
        The reverse-map preset (``lazyfree``).
    folio_pfn, va, nr, reason, findings : numpy.ndarray
        One row per unmap step in walk order (folio by folio in PFN order, then
        each VMA in address order): the folio, the first address, PTEs taken,
        why the step ended (``single`` when the caller did not batch) and
        detector bits as in :class:`ScanResult`.
    table_overruns, vma_overruns : int
        Steps whose batch scan read past entry 511 / past the VMA end
        (including all-or-nothing attempts that were then abandoned).
    folios : int
        Large folios that were mapped and walked.
    lazyfree_folios : int
        Of those, lazyfree ones.
    """

    folio_pfn: np.ndarray = None  # type: ignore[assignment]
    folios: int = 0
    lazyfree_folios: int = 0

    def summary(self) -> dict:
        """JSON-ready dict of the counts (no per-row arrays)."""
        out = {
            "walk": "unmap",
            "folios": self.folios,
            "lazyfree_folios": self.lazyfree_folios,
            "batched_steps": int(np.count_nonzero(self.nr > 1)),
        }
        out.update(self._common(UNMAP_REASONS))
        return out
