"""Compare two settings of one walk on one space, address by address (``ptebatch diff``).

:func:`diff` runs the walk (:func:`ptebatch.scan` or :func:`ptebatch.unmap`,
whichever the caller preset is) under two settings, say lazyfree reclaim under
6.15 and under 6.16, and finds the rows that are not in both results: a row of
one side with no identical row on the other.  Differing rows of both sides
whose addresses overlap or touch form one *range* ``[lo, hi)``; each range
shows how each side batched those addresses.

The comparison is one sorted merge of both sides' row keys (NumPy, no Python
loop per row); building a range's :class:`Batch` objects is a short loop over
that range's rows, done only for the ranges asked for.
"""

from __future__ import annotations

import csv
import inspect
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from .. import engine
from .. import reasons as R
from .._io import atomic_write
from ..arch import PAGE_SHIFT
from ..callers import DEFAULT, Walk, get_caller
from ..checks import check_walk_args
from ..shards import map_shards, open_shard, open_sharded
from ..space import AddressSpace

__all__ = ["diff", "parse_setting", "Batch", "DiffRange", "DiffResult", "SETTING_KEYS", "COMPARES"]

SETTING_KEYS = ("caller", "kernel", "clamp", "oob", "flags", "move_by")
"""Keys a setting may hold; ``clamp`` and ``move_by`` apply to scan callers only."""

COMPARES = ("row", "batch")
"""``row``: rows match when address, size, stop reason and detector bits are equal (and
the folio, for unmap); ``batch``: address and size only (and the folio, for unmap)."""

_SCAN_ONLY = ("clamp", "move_by")
# the walks' own defaults, for checking a setting before running it
_DEFAULTS = {k: v.default for k, v in inspect.signature(engine.scan).parameters.items()}
_FINDING_NAMES = tuple(name for name, _ in R.FINDINGS)
_FINDING_BITS = tuple(bit for _, bit in R.FINDINGS)


def finding_names(bits: int) -> tuple[str, ...]:
    """The detector names set in ``bits`` (a row's ``findings``)."""
    return tuple(n for n, b in zip(_FINDING_NAMES, _FINDING_BITS) if bits & b)


@dataclass(frozen=True)
class Batch:
    """One row of one side: a batch (scan) or an unmap step.

    Attributes
    ----------
    va : int
        First address.
    nr : int
        PTEs in the batch.
    reason : str
        Why it stopped (:mod:`ptebatch.reasons`).
    findings : tuple of str
        Detectors it tripped (``table_overrun``, ...).
    folio_pfn : int or None
        The folio unmapped (unmap only).
    """

    va: int
    nr: int
    reason: str
    findings: tuple[str, ...]
    folio_pfn: int | None = None

    @property
    def end(self) -> int:
        """First address after the batch."""
        return self.va + (self.nr << PAGE_SHIFT)

    def __str__(self) -> str:
        tail = f" [{'|'.join(self.findings)}]" if self.findings else ""
        return f"{self.va:#x}+{self.nr} {self.reason}{tail}"

    def __repr__(self) -> str:
        pfn = "" if self.folio_pfn is None else f", folio_pfn={self.folio_pfn:#x}"
        return f"Batch({self}{pfn})"

    def to_dict(self) -> dict:
        """JSON-ready dict (addresses as integers, findings as names)."""
        out = {"va": self.va, "nr": self.nr, "reason": self.reason, "findings": list(self.findings)}
        if self.folio_pfn is not None:
            out["folio_pfn"] = self.folio_pfn
        return out


@dataclass(frozen=True)
class DiffRange:
    """Addresses ``[lo, hi)`` batched differently, with each side's rows there.

    Attributes
    ----------
    lo, hi : int
        The range: from the first differing row's address to the end of the
        last (rows of either side that overlap or touch are one range).
    a, b : tuple of Batch
        The differing rows of each side in the range, by address.
    """

    lo: int
    hi: int
    a: tuple[Batch, ...]
    b: tuple[Batch, ...]

    @property
    def ptes(self) -> int:
        """Pages spanned by the range."""
        return (self.hi - self.lo) >> PAGE_SHIFT

    def __repr__(self) -> str:
        return f"DiffRange({self.lo:#x}-{self.hi:#x}, a={list(self.a)}, b={list(self.b)})"

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "lo": self.lo,
            "hi": self.hi,
            "ptes": self.ptes,
            "a": [x.to_dict() for x in self.a],
            "b": [x.to_dict() for x in self.b],
        }


class DiffResult:
    """What :func:`diff` returns: counts up front, ranges built on request.

    Attributes
    ----------
    walk : {"scan", "unmap"}
        The walk both sides ran.
    compare : {"row", "batch"}
        What made two rows equal (see :data:`COMPARES`).
    a, b : dict
        Each side's setting as run: caller, kernel (release or generation),
        flags (names), oob, and for scan clamp and move_by.
    result_a, result_b : ScanResult or UnmapResult
        The two walks.
    range_lo, range_hi : numpy.ndarray
        The ranges (uint64), sorted, disjoint and not touching.
    rows_a, rows_b : numpy.ndarray
        Indices into ``result_a`` / ``result_b`` rows of the differing rows,
        by address.
    range_of_a, range_of_b : numpy.ndarray
        The range each of those rows is in.
    """

    def __init__(self, walk, compare, a, b, result_a, result_b, idx, side, lo, hi, given=()):
        self.walk = walk
        self._given = tuple(given)
        self.compare = compare
        self.a, self.b = a, b
        self.result_a, self.result_b = result_a, result_b
        if lo.size:
            starts = np.concatenate(([True], lo[1:] > np.maximum.accumulate(hi)[:-1]))
            first = np.flatnonzero(starts)
            rid = np.cumsum(starts) - 1
            self.range_lo = lo[first]
            self.range_hi = np.maximum.reduceat(hi, first)
        else:
            rid = np.zeros(0, dtype=np.intp)
            self.range_lo = np.zeros(0, dtype=np.uint64)
            self.range_hi = np.zeros(0, dtype=np.uint64)
        on_a = side == 0
        self._idx, self._side = idx, side  # the differing rows in address order, for merges
        self.rows_a, self.range_of_a = idx[on_a], rid[on_a]
        self.rows_b, self.range_of_b = idx[~on_a], rid[~on_a]
        marks = np.arange(self.range_lo.size + 1)
        self._off_a = np.searchsorted(self.range_of_a, marks)
        self._off_b = np.searchsorted(self.range_of_b, marks)

    # -- parts of a sharded diff -------------------------------------------------

    def compact(self) -> DiffResult:
        """The same diff with each side's rows cut to its differing rows (counts kept whole).

        What one shard of a sharded diff sends back: every count and range is unchanged,
        and only the rows the ranges show travel.
        """
        n_a, n_b = self.n_rows_a, self.n_rows_b
        idx = np.empty_like(self._idx)
        idx[self._side == 0] = np.arange(n_a)  # a differing row's place among its side's
        idx[self._side == 1] = np.arange(n_b)
        ra, rb = _only_rows(self.result_a, self.rows_a), _only_rows(self.result_b, self.rows_b)
        lo, hi = _row_span(ra, rb, idx, self._side)
        return DiffResult(
            self.walk, self.compare, self.a, self.b, ra, rb, idx, self._side, lo, hi, self._given
        )

    @classmethod
    def merge(cls, parts) -> DiffResult:
        """One diff from the diffs of a sharded space's shards, in shard (address) order.

        Rows never cross a shard, so a row is matched inside its shard, and the differing
        rows of every shard, in shard order, are the whole space's in address order; the
        ranges are found again over all of them (two ranges that touch across a cut join).
        """
        parts = [p.compact() for p in parts]
        if not parts:
            raise ValueError("parts: nothing to merge")
        first = parts[0]
        sides = []
        for name in ("result_a", "result_b"):
            res = [getattr(p, name) for p in parts]
            counts = type(res[0]).merge([_only_rows(r, None) for r in res])
            keys = _ROW_COLUMNS + (("folio_pfn",) if first.walk == "unmap" else ())
            rows = {k: np.concatenate([getattr(r, k) for r in res]) for k in keys}
            sides.append(replace(counts, rows_filtered=True, **rows))
        off_a = np.cumsum([0] + [p.n_rows_a for p in parts])
        off_b = np.cumsum([0] + [p.n_rows_b for p in parts])
        idx = np.concatenate(
            [p._idx + np.where(p._side == 0, off_a[i], off_b[i]) for i, p in enumerate(parts)]
        ).astype(np.intp)
        side = np.concatenate([p._side for p in parts]).astype(np.uint8)
        lo, hi = _row_span(sides[0], sides[1], idx, side)
        return cls(
            first.walk, first.compare, first.a, first.b, *sides, idx, side, lo, hi, first._given
        )

    # -- counts ---------------------------------------------------------------

    @property
    def n_ranges(self) -> int:
        """Ranges batched differently."""
        return int(self.range_lo.size)

    @property
    def n_rows_a(self) -> int:
        """Rows of side a with no identical row on side b."""
        return int(self.rows_a.size)

    @property
    def n_rows_b(self) -> int:
        """Rows of side b with no identical row on side a."""
        return int(self.rows_b.size)

    @property
    def ptes(self) -> int:
        """Pages spanned by the ranges."""
        return int(((self.range_hi - self.range_lo) >> np.uint64(PAGE_SHIFT)).sum())

    @property
    def ptes_a(self) -> int:
        """PTEs in side a's differing rows."""
        return int(self.result_a.nr[self.rows_a].sum(dtype=np.int64))

    @property
    def ptes_b(self) -> int:
        """PTEs in side b's differing rows."""
        return int(self.result_b.nr[self.rows_b].sum(dtype=np.int64))

    def summary(self) -> dict:
        """JSON-ready counts (no ranges)."""
        return {
            "walk": self.walk,
            "compare": self.compare,
            "a": dict(self.a),
            "b": dict(self.b),
            "ranges": self.n_ranges,
            "rows_a": self.n_rows_a,
            "rows_b": self.n_rows_b,
            "batches_a": self.result_a.batches,
            "batches_b": self.result_b.batches,
            "ptes": self.ptes,
            "ptes_a": self.ptes_a,
            "ptes_b": self.ptes_b,
        }

    def labels(self) -> tuple[str, str]:
        """Short names of the sides: the caller, the kernel and any other key given to
        :func:`diff` whose value differs."""
        keys = ["caller", "kernel"] + [
            k
            for k in self.a
            if k not in ("caller", "kernel") and k in self._given and self.a[k] != self.b.get(k)
        ]

        def one(s):
            parts = []
            for k in keys:
                v = s.get(k)
                v = "|".join(v) or "0" if isinstance(v, list) else v
                parts.append(str(v) if k in ("caller", "kernel") else f"{k}={v}")
            return " ".join(parts)

        return one(self.a), one(self.b)

    # -- ranges ---------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_ranges

    def __getitem__(self, i: int) -> DiffRange:
        n = self.n_ranges
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index: expected an integer, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"index: range {i} of {n}")
        i = int(i) % n
        return DiffRange(
            int(self.range_lo[i]),
            int(self.range_hi[i]),
            self._batches(self.result_a, self.rows_a[self._off_a[i] : self._off_a[i + 1]]),
            self._batches(self.result_b, self.rows_b[self._off_b[i] : self._off_b[i + 1]]),
        )

    def __iter__(self) -> Iterator[DiffRange]:
        return self.iter_ranges()

    def iter_ranges(self, limit: int | None = None) -> Iterator[DiffRange]:
        """The ranges by address, each built when reached (at most ``limit`` of them)."""
        n = self.n_ranges if limit is None else min(int(limit), self.n_ranges)
        for i in range(n):
            yield self[i]

    @property
    def ranges(self) -> list[DiffRange]:
        """Every range (builds them all; see :meth:`iter_ranges` for a few)."""
        return list(self.iter_ranges())

    def _batches(self, res, idx) -> tuple[Batch, ...]:
        pfn = getattr(res, "folio_pfn", None) if self.walk == "unmap" else None
        return tuple(
            Batch(
                int(res.va[j]),
                int(res.nr[j]),
                R.NAMES[int(res.reason[j])],
                finding_names(int(res.findings[j])),
                None if pfn is None else int(pfn[j]),
            )
            for j in idx
        )

    # -- output ---------------------------------------------------------------

    def to_dict(self, max_ranges: int | None = None) -> dict:
        """Counts and the ranges (all of them, or the first ``max_ranges``), JSON-ready."""
        out = self.summary()
        out["ranges_shown"] = self.n_ranges if max_ranges is None else min(max_ranges, len(self))
        out["range_list"] = [r.to_dict() for r in self.iter_ranges(max_ranges)]
        return out

    def rows(self) -> dict:
        """Every differing row of both sides, by address then side, as arrays.

        Returns
        -------
        dict
            ``range`` (index), ``side`` (``"a"``/``"b"``), ``va``, ``nr``,
            ``reason`` (names), ``findings`` (bits) and, for unmap, ``folio_pfn``.
        """
        ra, rb = self.result_a, self.result_b
        va = np.concatenate((ra.va[self.rows_a], rb.va[self.rows_b]))
        rng = np.concatenate((self.range_of_a, self.range_of_b))
        side = np.concatenate((np.zeros(self.n_rows_a, np.uint8), np.ones(self.n_rows_b, np.uint8)))
        order = np.lexsort((side, va))
        out = {
            "range": rng[order],
            "side": np.array(["a", "b"], dtype=object)[side[order]],
            "va": va[order],
            "nr": np.concatenate((ra.nr[self.rows_a], rb.nr[self.rows_b]))[order],
            "reason": np.asarray(R.NAMES, dtype=object)[
                np.concatenate((ra.reason[self.rows_a], rb.reason[self.rows_b]))[order]
            ],
            "findings": np.concatenate((ra.findings[self.rows_a], rb.findings[self.rows_b]))[order],
        }
        if self.walk == "unmap":
            out["folio_pfn"] = np.concatenate(
                (ra.folio_pfn[self.rows_a], rb.folio_pfn[self.rows_b])
            )[order]
        return out

    def write_csv(self, path) -> int:
        """Write every differing row (see :meth:`rows`) as CSV, atomically.

        Columns: ``range, side, va, nr, reason, findings`` and, for unmap,
        ``folio_pfn``; addresses and PFNs in hex, findings as names joined by
        ``|``.  Returns the number of rows written.
        """
        path = os.fspath(path)
        if not path.lower().endswith(".csv"):
            raise ValueError(f"output: must end in .csv, got {path!r}")
        rows = self.rows()
        cols = ["range", "side", "va", "nr", "reason", "findings"]
        text_cols = [
            rows["range"].tolist(),
            rows["side"].tolist(),
            [f"{v:#x}" for v in rows["va"].tolist()],
            rows["nr"].tolist(),
            rows["reason"].tolist(),
            ["|".join(finding_names(f)) for f in rows["findings"].tolist()],
        ]
        if "folio_pfn" in rows:
            cols.append("folio_pfn")
            text_cols.append([f"{v:#x}" for v in rows["folio_pfn"].tolist()])
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(zip(*text_cols))
        data = buf.getvalue().encode()
        atomic_write(path, lambda fh: fh.write(data))
        return int(rows["va"].size)

    def __repr__(self) -> str:
        la, lb = self.labels()
        return (
            f"DiffResult({self.walk}: {la!r} vs {lb!r}, ranges={self.n_ranges}, "
            f"rows_a={self.n_rows_a}, rows_b={self.n_rows_b}, ptes={self.ptes})"
        )


def parse_setting(text: str, field: str = "setting") -> dict:
    """Parse ``"key=value,key=value"`` into a setting for :func:`diff`.

    Keys are :data:`SETTING_KEYS`; ``move_by`` is an integer in any base
    (``0x1ff000``); ``flags`` are names joined by ``|`` or an integer.  Errors
    name ``field`` and the key (``b.move_by: ...``).
    """
    if not isinstance(text, str):
        raise TypeError(f"{field}: expected a 'key=value,...' string, got {type(text).__name__}")
    out: dict = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        value = value.strip()
        if not eq or not key or not value:
            raise ValueError(
                f"{field}: {part!r} is not key=value (keys: {', '.join(SETTING_KEYS)})"
            )
        if key not in SETTING_KEYS:
            raise ValueError(f"{field}: unknown key {key!r} (known: {', '.join(SETTING_KEYS)})")
        if key in out:
            raise ValueError(f"{field}.{key}: given twice")
        if key == "move_by":
            try:
                value = int(value, 0)
            except ValueError:
                raise ValueError(
                    f"{field}.move_by: {value!r} is not an integer (use 0x... for hex)"
                ) from None
        elif key == "flags":
            try:
                value = int(value, 0)
            except ValueError:
                pass  # flag names
        out[key] = value
    return out


def _check_setting(name: str, s) -> dict:
    if not isinstance(s, Mapping):
        raise TypeError(
            f"{name}: expected a dict with keys from {', '.join(SETTING_KEYS)}, "
            f"got {type(s).__name__}"
        )
    unknown = [k for k in s if k not in SETTING_KEYS]
    if unknown:
        raise ValueError(f"{name}: unknown key {unknown[0]!r} (known: {', '.join(SETTING_KEYS)})")
    return dict(s)


def _prefixed(name: str, exc: Exception) -> Exception:
    """``exc`` with its message naming the side: ``kernel: ...`` becomes ``a.kernel: ...``."""
    msg = str(exc)
    key = msg.split(":", 1)[0]
    msg = f"{name}.{msg}" if key in SETTING_KEYS else f"{name}: {msg}"
    return type(exc)(msg)


def _walk_of(name: str, s: dict) -> Walk:
    caller = s.get("caller")
    if caller is None:
        return Walk.SCAN
    return get_caller(caller, f"{name}.caller").walk


def _kwargs(name: str, walk: Walk, s: dict, space) -> dict:
    kw = dict(s)
    kw.setdefault("caller", DEFAULT[walk])
    if walk == Walk.UNMAP:
        for key in _SCAN_ONLY:
            if key in kw:
                raise ValueError(
                    f"{name}.{key}: {kw['caller']} is an unmap caller; only scan callers take {key}"
                )
    try:
        check_walk_args(
            space,
            walk,
            kw["caller"],
            kw.get("kernel", _DEFAULTS["kernel"]),
            kw.get("flags", _DEFAULTS["flags"]),
            kw.get("clamp", _DEFAULTS["clamp"]),
            kw.get("oob", _DEFAULTS["oob"]),
            kw.get("move_by", _DEFAULTS["move_by"]),
        )
    except (TypeError, ValueError) as exc:
        raise _prefixed(name, exc) from None
    return kw


_ROW_COLUMNS = ("va", "nr", "reason", "findings")


def _only_rows(res, rows):
    """``res`` keeping only the rows ``rows`` (indices), or none (``None``); counts kept."""
    keys = _ROW_COLUMNS + (("folio_pfn",) if getattr(res, "folio_pfn", None) is not None else ())
    if rows is None:
        return replace(res, rows_filtered=True, **{k: None for k in keys})
    return replace(res, rows_filtered=True, **{k: getattr(res, k)[rows] for k in keys})


def _row_span(ra, rb, idx, side):
    """First and end addresses of the differing rows listed by ``idx``/``side``."""
    on_a = side == 0
    va = np.empty(idx.size, dtype=np.uint64)
    nr = np.empty(idx.size, dtype=np.uint64)
    va[on_a], nr[on_a] = ra.va[idx[on_a]], ra.nr[idx[on_a]]
    va[~on_a], nr[~on_a] = rb.va[idx[~on_a]], rb.nr[idx[~on_a]]
    return va, va + (nr << np.uint64(PAGE_SHIFT))


def diff_task(file: str, record: dict, a, b, compare, detectors, parallel):
    """:func:`ptebatch.shards.map_shards` task: the diff of one shard, compacted."""
    return diff(
        open_shard(file, record), a, b, compare=compare, detectors=detectors, parallel=parallel
    ).compact()


def _run(walk: Walk, space, kw: dict, detectors: bool, parallel: bool, executor=None):
    fn = engine.scan if walk == Walk.SCAN else engine.unmap
    res = fn(space, detectors=detectors, parallel=parallel, executor=executor, **kw)
    setting = {
        "caller": res.caller,
        "kernel": res.kernel,
        "flags": list(res.flags),
        "oob": res.oob,
    }
    if walk == Walk.SCAN:
        setting["clamp"] = res.clamp
        setting["move_by"] = int(kw.get("move_by", 0))
    return res, setting


def _keys(res, walk: Walk, compare: str) -> list[np.ndarray]:
    """Columns that make two rows equal, address first: ``va``, the folio (unmap), and
    ``nr`` with, for ``compare="row"``, the reason and detector bits packed beside it
    (``nr << 16 | reason << 8 | findings``: one column to gather instead of three)."""
    cols = [res.va.astype(np.uint64, copy=False)]
    if walk == Walk.UNMAP:
        cols.append(res.folio_pfn.astype(np.uint64, copy=False))
    packed = res.nr.astype(np.uint64)
    if compare == "row":
        packed <<= np.uint64(16)
        packed |= res.reason.astype(np.uint64) << np.uint64(8)
        packed |= res.findings.astype(np.uint64)
    cols.append(packed)
    return cols


def _by_address(va: np.ndarray):
    """``(order, unique)``: the rows by address (``None`` when already so) and whether
    no two rows start at one address."""
    if va.size < 2:
        return None, True
    if np.all(va[1:] > va[:-1]):  # scan rows come in address order
        return None, True
    order = np.argsort(va, kind="stable")
    sva = va[order]
    return order, bool(np.all(sva[1:] > sva[:-1]))


def _unmatched(ka: list[np.ndarray], kb: list[np.ndarray]):
    """Rows of a and of b with no equal row on the other side (as multisets).

    Returns the differing rows of both sides by address (then side): their row
    index on their side, and the side (0 = a, 1 = b).  Where each side has at
    most one row per address (always, for the engine's rows) a row is looked up
    by address in the other side; otherwise every key is merged in one sort.
    """
    order_a, unique_a = _by_address(ka[0])
    order_b, unique_b = _by_address(kb[0])
    if not (unique_a and unique_b):
        return _unmatched_sorted(ka, kb)
    na, nb = ka[0].size, kb[0].size
    idx_a = np.arange(na) if order_a is None else order_a
    idx_b = np.arange(nb) if order_b is None else order_b
    sa = ka if order_a is None else [c[order_a] for c in ka]
    sb = kb if order_b is None else [c[order_b] for c in kb]
    if nb:
        pos = np.minimum(np.searchsorted(sb[0], sa[0]), nb - 1)
        same = np.ones(na, dtype=bool)
        for ca, cb in zip(sa, sb):
            same &= ca == cb[pos]
    else:
        pos, same = np.zeros(na, dtype=np.intp), np.zeros(na, dtype=bool)
    seen_b = np.zeros(nb, dtype=bool)
    seen_b[pos[same]] = True
    keep_a, keep_b = np.flatnonzero(~same), np.flatnonzero(~seen_b)
    va = np.concatenate((sa[0][keep_a], sb[0][keep_b]))
    side = np.concatenate((np.zeros(keep_a.size, np.uint8), np.ones(keep_b.size, np.uint8)))
    idx = np.concatenate((idx_a[keep_a], idx_b[keep_b]))
    order = np.lexsort((side, va))
    return idx[order].astype(np.intp), side[order]


def _unmatched_sorted(ka: list[np.ndarray], kb: list[np.ndarray]):
    """:func:`_unmatched` for rows that may repeat an address: one sort of every key."""
    na = ka[0].size
    cols = [np.concatenate((x, y)) for x, y in zip(ka, kb)]
    side = np.concatenate((np.zeros(na, np.uint8), np.ones(kb[0].size, np.uint8)))
    order = np.lexsort([side] + cols[::-1])  # last key is the primary: address
    n = order.size
    if n == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.uint8)
    s_cols = [c[order] for c in cols]
    s_side = side[order]
    same = np.ones(n - 1, dtype=bool)
    for c in s_cols:
        same &= c[1:] == c[:-1]
    start = np.concatenate(([True], ~same))
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    pos = np.arange(n) - first[group]  # position inside the group of equal keys
    count_a = np.bincount(group, weights=(s_side == 0), minlength=first.size).astype(np.intp)
    count_b = np.bincount(group, minlength=first.size) - count_a
    pairs = np.minimum(count_a, count_b)[group]
    # side a's rows come first in a group: the first `pairs` of each side are matched
    matched = np.where(s_side == 0, pos < pairs, pos - count_a[group] < pairs)
    keep = order[~matched]
    side_k = side[keep]
    idx = np.where(side_k == 0, keep, keep - na)
    return idx.astype(np.intp), side_k


def diff(
    space: AddressSpace,
    a: Mapping,
    b: Mapping,
    *,
    compare: str = "row",
    detectors: bool = True,
    parallel: bool = True,
    executor=None,
) -> DiffResult:
    """Run one walk under two settings and find where the batches differ.

    Parameters
    ----------
    space : AddressSpace, ShardedSpace or a sharded space's directory
        A sharded space is diffed shard by shard (:mod:`ptebatch.shards`), on ``executor``'s
        workers if given; each shard sends back its counts and only its differing rows, and
        :meth:`DiffResult.merge` joins them: exactly the whole space's diff.
    a, b : dict
        The two settings: any of ``caller``, ``kernel``, ``clamp``, ``oob``,
        ``flags``, ``move_by`` (the keyword arguments of :func:`ptebatch.scan`
        and :func:`ptebatch.unmap`; ``clamp`` and ``move_by`` are scan-only).
        ``a``'s missing keys take the walk's defaults; ``b``'s missing keys
        are ``a``'s, so ``diff(space, {"caller": "lazyfree", "kernel": "6.15"},
        {"kernel": "6.16"})`` compares lazyfree reclaim in two releases.  The
        caller decides the walk (scan without a caller: zap); both sides must
        be the same walk.
    compare : {"row", "batch"}
        ``"row"``: a row matches an identical row on the other side: same
        address, size, stop reason and detector bits.  ``"batch"``: address
        and size only, so a batch cut at the same entry for another reason,
        or the same batch with an overrun, is not a difference.  Unmap rows
        also compare their folio.
    detectors, parallel : bool
        As in :func:`ptebatch.scan`.
    executor : callable or dask.distributed.Client, optional
        Sharded spaces only: how the shards run (:func:`ptebatch.shards.map_shards`).

    Returns
    -------
    DiffResult
        Counts first (``n_ranges``, ``n_rows_a``, ``n_rows_b``, ``ptes``,
        ``summary()``); ranges by index, by iteration or as ``.ranges``.

    Raises
    ------
    ValueError
        An unknown key or value, naming the side and key (``b.kernel: ...``),
        or sides that are different walks.
    """
    sharded = open_sharded(space)
    if sharded is not None:
        space = sharded
        probe = sharded.open(0, verify=False)  # the settings' checks need a space of its arch
    elif not isinstance(space, AddressSpace):
        raise TypeError(f"space: expected an AddressSpace, got {type(space).__name__}")
    else:
        probe = space
    if compare not in COMPARES:
        raise ValueError(f"compare: must be one of {', '.join(COMPARES)}, got {compare!r}")
    a = _check_setting("a", a)
    b = _check_setting("b", b)
    a_given, b_given = dict(a), dict(b)
    given = list(dict.fromkeys([*a, *b]))
    b = {**a, **b}
    walk_a, walk_b = _walk_of("a", a), _walk_of("b", b)
    if walk_a != walk_b:
        raise ValueError(
            f"caller: a runs {a.get('caller', DEFAULT[walk_a])} ({walk_a.value}) and b runs "
            f"{b.get('caller', DEFAULT[walk_b])} ({walk_b.value}); both sides must be one walk"
        )
    kw_a, kw_b = _kwargs("a", walk_a, a, probe), _kwargs("b", walk_b, b, probe)
    del probe
    if sharded is not None:
        # each shard is diffed where it is walked; only its differing rows come back
        args = (a_given, b_given, compare, detectors, parallel)
        return DiffResult.merge(map_shards(sharded, diff_task, args, executor=executor))
    res_a, set_a = _run(walk_a, space, kw_a, detectors, parallel, executor)
    res_b, set_b = _run(walk_b, space, kw_b, detectors, parallel, executor)
    idx, side = _unmatched(_keys(res_a, walk_a, compare), _keys(res_b, walk_b, compare))
    va, hi = _row_span(res_a, res_b, idx, side)
    return DiffResult(walk_a.value, compare, set_a, set_b, res_a, res_b, idx, side, va, hi, given)
