"""Result types shared by the JIT engine and the naive reference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import reasons as R
from ._io import atomic_write

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


N_DETECTORS = 8  # detector bits counted per walk (FINDINGS uses the low five)


def length_hist(nr: np.ndarray, reason: np.ndarray, bins: int | None = None) -> np.ndarray:
    """``hist[r, n]``: batches of ``n`` PTEs that stopped for reason ``r``, from rows."""
    nr = np.asarray(nr, dtype=np.int64)
    bins = max(int(nr.max(initial=1)) + 1, 2) if bins is None else bins
    flat = np.asarray(reason, dtype=np.int64) * bins + nr
    return np.bincount(flat, minlength=len(R.NAMES) * bins).reshape(len(R.NAMES), bins)


def detector_counts(findings: np.ndarray) -> np.ndarray:
    """Batches with each detector bit set, from rows' ``findings``."""
    f = np.asarray(findings, dtype=np.int64)
    return np.array([np.count_nonzero(f & (1 << k)) for k in range(N_DETECTORS)], dtype=np.int64)


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
    """Counts of every batch, and the rows that were asked for.

    ``length_hist`` and ``found`` are computed inside the walk (counts mode
    writes nothing per batch); every total below is a sum over them.  Rows
    (``va``, ``nr``, ``reason``, ``findings``) are ``None`` when the walk ran
    with ``rows=False``, and a subset of the batches when it ran with a filter.
    """

    caller: str
    kernel: str
    generation: str
    flags: list
    oob: str
    va: np.ndarray | None = None
    nr: np.ndarray | None = None
    reason: np.ndarray | None = None
    findings: np.ndarray | None = None
    length_hist: np.ndarray | None = None
    found: np.ndarray | None = None
    rows_filtered: bool = False
    table_overruns: int = field(init=False)
    vma_overruns: int = field(init=False)

    def __post_init__(self) -> None:
        if self.length_hist is None:  # built from rows (the naive reference)
            if self.rows_filtered or self.nr is None:
                raise ValueError("length_hist: counts are needed when rows are filtered or absent")
            self.length_hist = length_hist(self.nr, self.reason)
            self.found = detector_counts(self.findings)
        self.table_overruns = int(self.found[R.OVER_TABLE.bit_length() - 1])
        self.vma_overruns = int(self.found[R.OVER_VMA.bit_length() - 1])

    @property
    def has_rows(self) -> bool:
        """Whether rows were kept (all of them, or those a filter selected)."""
        return self.nr is not None

    def _rows(self) -> None:
        if self.nr is None:
            raise ValueError("rows: this result holds counts only; run the walk with rows=True")

    @property
    def finding_counts(self) -> dict:
        """Batches that tripped each detector (``table_overrun``, ``vma_overrun``,
        ``past_folio``, ``spread``, ``uffd_wp``)."""
        return {name: int(self.found[bit.bit_length() - 1]) for name, bit in R.FINDINGS}

    def flagged(self, detector: str) -> np.ndarray:
        """Row indices of the batches that tripped ``detector``."""
        bits = dict(R.FINDINGS)
        if detector not in bits:
            raise ValueError(f"detector: unknown detector {detector!r} (known: {', '.join(bits)})")
        self._rows()
        return np.flatnonzero(self.findings & bits[detector])

    @property
    def batches(self) -> int:
        """Number of batches (all of them, whatever rows were kept)."""
        return int(self.length_hist.sum())

    @property
    def hist(self) -> np.ndarray:
        """Batch-size histogram: ``hist[n]`` batches of ``n`` PTEs (at least 2 entries)."""
        h = self.length_hist.sum(axis=0)
        nz = np.flatnonzero(h)
        return h[: max(int(nz[-1]) + 1 if nz.size else 0, 2)]

    @property
    def ptes_batched(self) -> int:
        """PTEs in all batches."""
        h = self.length_hist.sum(axis=0)
        return int(np.dot(np.arange(h.size, dtype=np.int64), h))

    @property
    def multi_batches(self) -> int:
        """Batches of more than one PTE."""
        return int(self.length_hist[:, 2:].sum())

    @property
    def mean_batch(self) -> float:
        """Mean PTEs per batch (0.0 with no batches)."""
        b = self.batches
        return self.ptes_batched / b if b else 0.0

    # fields every part of a merge must share, and counts that add up
    _SAME = ("caller", "kernel", "generation", "flags", "oob", "rows_filtered")
    _SUMS = ()

    @classmethod
    def merge(cls, results):
        """One result from the results of walks over the shards of a space, in shard order.

        Counts add up (``length_hist`` padded to the longest); the settings must agree.  Scan
        rows are concatenated (shard order is address order); unmap rows are put in folio PFN
        order, stably, as the whole-space walk writes them (each folio lies in one shard).
        Exact for shards cut as :mod:`ptebatch.shards` cuts them (docs/model.md section 11).

        Raises
        ------
        ValueError
            No results, a result of another type, or settings that differ (named).
        """
        results = list(results)
        if not results:
            raise ValueError("results: nothing to merge")
        for r in results:
            if type(r) is not cls:
                raise ValueError(f"results: expected {cls.__name__}, got {type(r).__name__}")
        first = results[0]
        for name in cls._SAME:
            vals = {repr(getattr(r, name)) for r in results}
            if len(vals) > 1:
                raise ValueError(f"results: {name} differs between parts ({', '.join(vals)})")
        with_rows = {r.has_rows for r in results}
        if len(with_rows) > 1:
            raise ValueError("results: some parts have rows and some do not")
        bins = max(r.length_hist.shape[1] for r in results)
        hist = np.zeros((first.length_hist.shape[0], bins), dtype=np.int64)
        for r in results:
            hist[:, : r.length_hist.shape[1]] += r.length_hist
        kw = {name: getattr(first, name) for name in cls._SAME}
        kw["flags"] = list(first.flags)
        kw.update(
            length_hist=hist,
            found=np.sum([r.found for r in results], axis=0).astype(np.int64),
            **{name: sum(getattr(r, name) for r in results) for name in cls._SUMS},
            **cls._merge_extra(results),
        )
        if first.has_rows:
            kw.update(cls._merge_rows(results))
        return cls(**kw)

    @classmethod
    def _merge_extra(cls, results) -> dict:
        return {}

    @classmethod
    def _merge_rows(cls, results) -> dict:
        return {k: np.concatenate([getattr(r, k) for r in results]) for k in cls._ROW_KEYS}

    _ROW_KEYS = ("va", "nr", "reason", "findings")

    def _reason_counts(self, names) -> dict:
        per = self.length_hist.sum(axis=1)
        return {name: int(per[R.NAMES.index(name)]) for name in names}

    def _common(self, reasons) -> dict:
        h = self.hist
        return {
            "caller": self.caller,
            "kernel": self.kernel,
            "generation": self.generation,
            "flags": list(self.flags),
            "oob": self.oob,
            "batches": self.batches,
            "ptes_batched": self.ptes_batched,
            "mean_batch": round(self.mean_batch, 6),
            "table_overruns": self.table_overruns,
            "vma_overruns": self.vma_overruns,
            "findings": self.finding_counts,
            "stop_reasons": self._reason_counts(reasons),
            "batch_size_hist": {str(n): int(c) for n, c in enumerate(h) if c},
        }

    def reason_names(self) -> np.ndarray:
        """The rows' ``reason`` codes as strings."""
        self._rows()
        return np.asarray(R.NAMES, dtype=object)[self.reason]

    def _row_columns(self) -> dict:
        self._rows()
        cols = {"va": self.va, "nr": self.nr, "reason": self.reason, "findings": self.findings}
        pfn = getattr(self, "folio_pfn", None)
        return {"folio_pfn": pfn, **cols} if pfn is not None else cols

    def save_batches(self, path) -> int:
        """Write the rows to ``path``, atomically; returns how many.

        ``.csv``: one line per row, addresses in hex, reasons and detector
        names as words.  ``.npz``: the columns as uncompressed NumPy arrays
        (codes as in :mod:`ptebatch.reasons`).
        """
        cols = self._row_columns()
        name = str(path).lower()
        if name.endswith(".npz"):
            atomic_write(path, lambda fh: np.savez(fh, **cols))
        elif name.endswith(".csv"):
            atomic_write(path, lambda fh: _write_csv(fh, cols))
        else:
            raise ValueError(f"rows: {path!r} must end in .csv or .npz")
        return int(cols["nr"].size)


@dataclass
class ScanResult(_WalkResult):
    """Result of :func:`ptebatch.scan`.

    Attributes
    ----------
    caller : str
        The walker preset (``zap``, ``fork-private``, ``mremap``...).
    va, nr, reason, findings : numpy.ndarray or None
        One row per batch (or per batch the ``rows`` filter kept; ``None``
        with ``rows=False``) in walk order: start address (uint64), size
        (uint32), reason code (uint8, names in :mod:`ptebatch.reasons`) and
        detector bits (uint8, :data:`ptebatch.reasons.FINDINGS`): 1 read past
        entry 511, 2 read past the VMA end, 4 covers a page past its folio,
        8 entries differ in a bit the caller stamps from the first PTE,
        16 entries differ in uffd-wp.
    length_hist : numpy.ndarray
        ``length_hist[r, n]``: batches of ``n`` PTEs that stopped for reason
        ``r``, over every batch, whatever rows were kept.
    table_overruns, vma_overruns : int
        Batches whose scan read past entry 511 of its table / past its VMA.
    finding_counts : dict
        Batches per detector.
    present_ptes : int
        Present PTEs inside VMAs.
    tables_moved : int
        mremap: whole tables moved by their PMD entry, whose PTEs no batch saw.
    pte_reads : int
        Entries read by every ``ptep_get`` of the walk, the walker's and
        folio_pte_batch's; arm64's contpte gather reads 16 (docs/model.md
        section 10).
    batching : bool
        False: the walk ran with the caller's batching switched off.
    clamp : str
    """

    clamp: str = "pmd"
    present_ptes: int = 0
    tables_moved: int = 0
    pte_reads: int = 0
    batching: bool = True

    _SAME = _WalkResult._SAME + ("clamp", "batching")
    _SUMS = ("present_ptes", "tables_moved", "pte_reads")

    @property
    def stop_reasons(self) -> dict:
        """Batches per stop reason."""
        return self._reason_counts(SCAN_REASONS)

    def summary(self) -> dict:
        """JSON-ready dict of the counts (no per-batch arrays)."""
        out = {
            "walk": "scan",
            "clamp": self.clamp,
            "present_ptes": self.present_ptes,
            "tables_moved": self.tables_moved,
            "pte_reads": self.pte_reads,
            "batching": self.batching,
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
    folio_pfn, va, nr, reason, findings : numpy.ndarray or None
        One row per unmap step (or per step the ``rows`` filter kept; ``None``
        with ``rows=False``) in walk order (folio by folio in PFN order, then
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
    pte_reads : int
        Entries read by every ``ptep_get`` of the walk, page_vma_mapped_walk's
        (one per entry it visits, cleared ones included) and folio_pte_batch's;
        arm64's contpte gather reads 16 (docs/model.md section 10).
    batching : bool
        False: the walk ran with the caller's batching switched off.
    """

    folio_pfn: np.ndarray = None  # type: ignore[assignment]
    folios: int = 0
    lazyfree_folios: int = 0
    pte_reads: int = 0
    batching: bool = True

    _SAME = _WalkResult._SAME + ("batching",)
    _SUMS = ("folios", "lazyfree_folios", "pte_reads")
    _ROW_KEYS = ("folio_pfn", "va", "nr", "reason", "findings")

    @classmethod
    def _merge_rows(cls, results) -> dict:
        # the whole walk goes folio by folio in PFN order; a folio's rows stay in walk order
        cols = super()._merge_rows(results)
        o = np.argsort(cols["folio_pfn"], kind="stable")
        return {k: v[o] for k, v in cols.items()}

    def summary(self) -> dict:
        """JSON-ready dict of the counts (no per-row arrays)."""
        out = {
            "walk": "unmap",
            "folios": self.folios,
            "lazyfree_folios": self.lazyfree_folios,
            "batched_steps": self.multi_batches,
            "pte_reads": self.pte_reads,
            "batching": self.batching,
        }
        out.update(self._common(UNMAP_REASONS))
        return out


def _write_csv(fh, cols: dict, block: int = 1 << 20) -> None:
    """Rows as CSV, a block at a time (a row per batch can be hundreds of millions)."""
    names = np.asarray(R.NAMES, dtype=object)
    heads = list(cols)
    fh.write((",".join(heads) + "\n").encode())
    n = cols["nr"].size
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        parts = []
        for h in heads:
            c = cols[h][lo:hi]
            if h in ("va", "folio_pfn"):
                parts.append([f"{int(v):#x}" for v in c])
            elif h == "reason":
                parts.append(names[c].tolist())
            elif h == "findings":
                parts.append(["|".join(n for n, b in R.FINDINGS if int(f) & b) for f in c])
            else:
                parts.append(c.tolist())
        fh.write("".join(",".join(map(str, r)) + "\n" for r in zip(*parts)).encode())
