"""Sharded spaces: one address space as a directory of snapshots, cut on table boundaries.

Format (version 1): a directory holding ``manifest.json`` and ``shard-00000.npz``,
``shard-00001.npz``, ..., each an ordinary uncompressed snapshot (:meth:`AddressSpace.save`)
holding a run of whole tables in address order, the VMAs whose start lies in the shard's VA
range ``[va_lo, va_hi)`` and the listed folios it maps.  The manifest::

    {"format": "ptebatch-shards", "version": 1, "arch": ..., "n_tables": ..., "n_vmas": ...,
     "n_folios": ..., "shards": [{"file": "shard-00000.npz", "table_lo": 0, "table_hi": 1234,
     "va_lo": 0, "va_hi": ..., "n_vmas": ..., "n_folios": ..., "halo": true, "bytes": ...,
     "sha256": ...}, ...]}

``table_hi`` and ``va_hi`` are exclusive (``va_hi`` is the next shard's first table VA, or
``2**64`` for the last); the totals count no halo.

Where cuts go (docs/model.md, "Sharded spaces"): a cut before table ``t`` is allowed only when
no VMA spans it (``start < table_va[t] < end``) and no listed folio has present PTEs on both
sides.  Then every walker's range (cut at ``pmd_addr_end``) and every folio's reverse-map walk
lie in one shard.  ``oob="adjacent"`` reads past entry 511 into the next row of the tables
array, so every shard but the last stores a *halo*: a copy of the next shard's first table
(its real ``table_va``), covered by none of the shard's VMAs, so read only past entry 511 of
the shard's last own table.  A listed folio mapped nowhere goes to the last shard.

The results of a walk over the shards, merged (:meth:`ScanResult.merge`,
:meth:`UnmapResult.merge`), equal the walk over the whole space, field by field.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ._io import TEMP_SUFFIX, SnapshotError, atomic_write
from .arch import PAGE_SHIFT, PTRS_PER_PTE, get_arch
from .progress import as_hook
from .space import FORMAT as SNAPSHOT_FORMAT
from .space import VERSION as SNAPSHOT_VERSION
from .space import AddressSpace
from .space import load as load_snapshot

__all__ = [
    "FORMAT",
    "VERSION",
    "MANIFEST",
    "Shard",
    "ShardedSpace",
    "is_sharded",
    "open_sharded",
    "allowed_cuts",
    "shard",
    "unshard",
    "map_shards",
    "ShardWriter",
]

FORMAT = "ptebatch-shards"
VERSION = 1
MANIFEST = "manifest.json"
VA_TOP = 1 << 64
# tables read at a time when a space is scanned for its cuts (8 MiB of PTEs)
_SCAN_TABLES = 2048
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Shard:
    """One shard of a :class:`ShardedSpace`, as its manifest entry says (``file`` absolute)."""

    index: int
    file: str
    table_lo: int
    table_hi: int
    va_lo: int
    va_hi: int
    n_vmas: int
    n_folios: int
    halo: bool
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        """The record as a plain dict (what :func:`map_shards` passes to a task)."""
        return asdict(self)


def _file_digest(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_HASH_CHUNK)
            if not block:
                break
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


def open_shard(file: str, record: dict, *, mmap: bool = True, verify: bool = True) -> AddressSpace:
    """Load one shard's snapshot after checking its size (and, with ``verify``, its SHA-256).

    Raises
    ------
    SnapshotError
        The shard file is missing, or its size or checksum is not the manifest's.
    """
    try:
        size = os.stat(file).st_size
    except FileNotFoundError:
        raise SnapshotError(f"{file}: shard {record['index']} is missing") from None
    if size != record["bytes"]:
        raise SnapshotError(
            f"{file}: shard {record['index']} has {size} bytes, the manifest says "
            f"{record['bytes']} (truncated or replaced)"
        )
    if verify:
        _, digest = _file_digest(file)
        if digest != record["sha256"]:
            raise SnapshotError(
                f"{file}: shard {record['index']} fails its SHA-256 check (corrupt: the "
                f"manifest says {record['sha256']}, the file hashes to {digest})"
            )
    # the SHA-256 covers every byte: the members' CRC-32 would read the file a second time
    return load_snapshot(file, mmap=mmap, verify=False)


_SHARD_KEYS = {
    "file": str,
    "table_lo": int,
    "table_hi": int,
    "va_lo": int,
    "va_hi": int,
    "n_vmas": int,
    "n_folios": int,
    "halo": bool,
    "bytes": int,
    "sha256": str,
}
_TOP_KEYS = {
    "format": str,
    "version": int,
    "arch": str,
    "n_tables": int,
    "n_vmas": int,
    "n_folios": int,
    "shards": list,
}


def _typed(where: str, d, keys: dict) -> None:
    if not isinstance(d, dict):
        raise SnapshotError(f"{where}: must be a JSON object, got {type(d).__name__}")
    for k, t in keys.items():
        if k not in d:
            raise SnapshotError(f"{where}: missing field {k!r}")
        v = d[k]
        ok = isinstance(v, bool) if t is bool else isinstance(v, t) and not isinstance(v, bool)
        if not ok or (t is int and v < 0):
            raise SnapshotError(f"{where}: field {k!r} must be a {t.__name__}, got {v!r}")


def _check_manifest(path: str, m) -> None:
    """The manifest's schema: fields, types, and shards that tile the tables in order."""
    _typed(path, m, _TOP_KEYS)
    if m["format"] != FORMAT:
        raise SnapshotError(f"{path}: format must be {FORMAT!r}, got {m['format']!r}")
    if m["version"] != VERSION:
        raise SnapshotError(
            f"{path}: version must be {VERSION}, got {m['version']!r} (this ptebatch reads "
            f"version {VERSION})"
        )
    try:
        get_arch(m["arch"])
    except ValueError as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    shards = m["shards"]
    if not shards:
        raise SnapshotError(f"{path}: shards must list at least one shard")
    table, va = 0, 0
    for i, s in enumerate(shards):
        where = f"{path}: shard {i}"
        _typed(where, s, _SHARD_KEYS)
        if os.path.basename(s["file"]) != s["file"] or s["file"] in ("", ".", ".."):
            raise SnapshotError(f"{where}: file must be a name inside the directory")
        last = i == len(shards) - 1
        if s["table_lo"] != table or s["table_hi"] < s["table_lo"]:
            raise SnapshotError(f"{where}: tables must follow the previous shard's ({table})")
        if s["va_lo"] != va or s["va_hi"] <= s["va_lo"] or s["va_hi"] > VA_TOP:
            raise SnapshotError(f"{where}: VA range must follow the previous shard's ({va:#x})")
        if s["halo"] == last:
            raise SnapshotError(f"{where}: every shard but the last has a halo table")
        table, va = s["table_hi"], s["va_hi"]
    if table != m["n_tables"] or va != VA_TOP:
        raise SnapshotError(
            f"{path}: shards must cover all {m['n_tables']} tables and the whole VA space"
        )
    for k in ("n_vmas", "n_folios"):
        if sum(s[k] for s in shards) != m[k]:
            raise SnapshotError(f"{path}: {k} must be the sum of the shards' {k}")


class ShardedSpace:
    """A sharded space on disk, opened lazily: only its manifest is read.

    Parameters
    ----------
    path : str or os.PathLike
        The directory holding ``manifest.json``.

    Raises
    ------
    SnapshotError
        No manifest, a manifest that is not JSON or breaks its schema (the message names
        the file and the rule), or a listed shard file that is missing.
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        mpath = os.path.join(self.path, MANIFEST)
        try:
            with open(mpath, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise SnapshotError(
                f"{mpath}: missing manifest; not a ptebatch sharded space"
            ) from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{mpath}: not JSON ({exc})") from None
        _check_manifest(mpath, manifest)
        self.manifest = manifest
        self.arch = get_arch(manifest["arch"]).name
        self.n_tables = int(manifest["n_tables"])
        self.n_vmas = int(manifest["n_vmas"])
        self.n_folios = int(manifest["n_folios"])
        self.shards = tuple(
            Shard(
                index=i,
                **{k: s[k] for k in _SHARD_KEYS if k != "file"},
                file=os.path.join(self.path, s["file"]),
            )
            for i, s in enumerate(manifest["shards"])
        )
        for s in self.shards:
            if not os.path.isfile(s.file):
                raise SnapshotError(f"{s.file}: shard {s.index} is missing")

    def __len__(self) -> int:
        return len(self.shards)

    def open(self, i: int, *, mmap: bool = True, verify: bool = True) -> AddressSpace:
        """Shard ``i`` as an :class:`AddressSpace` (halo included), checked against the
        manifest: its size, and its SHA-256 with ``verify``."""
        s = self.shards[i]
        return open_shard(s.file, s.as_dict(), mmap=mmap, verify=verify)

    def info(self) -> dict:
        """What :meth:`AddressSpace.info` says of the whole space, as far as the manifest
        knows (fast): counts of tables, VMAs and folios, and the shards."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "arch": self.arch,
            "tables": self.n_tables,
            "vmas": self.n_vmas,
            "folios": self.n_folios,
            "shards": len(self.shards),
            "bytes": sum(s.bytes for s in self.shards),
        }

    def __repr__(self) -> str:
        return (
            f"ShardedSpace({self.path!r}, arch={self.arch!r}, shards={len(self)}, "
            f"tables={self.n_tables}, vmas={self.n_vmas}, folios={self.n_folios})"
        )


def is_sharded(path) -> bool:
    """Whether ``path`` names a directory (a sharded space, or meant to be one)."""
    return isinstance(path, (str, os.PathLike)) and os.path.isdir(path)


def open_sharded(space):
    """A :class:`ShardedSpace` given as one or as its directory; ``None`` otherwise."""
    if isinstance(space, ShardedSpace):
        return space
    if is_sharded(space):
        return ShardedSpace(space)
    return None


# -- where cuts may go ----------------------------------------------------------------------


def _folio_table_span(space: AddressSpace) -> tuple[np.ndarray, np.ndarray]:
    """Each listed folio's lowest and highest table index with a present PTE mapping it
    (-1 when it has none), reading the tables a block at a time."""
    a = get_arch(space.arch)
    nf = space.n_folios
    fmin = np.full(nf, -1, dtype=np.int64)
    fmax = np.full(nf, -1, dtype=np.int64)
    if nf == 0:
        return fmin, fmax
    fpfn = np.asarray(space.folio_pfn)
    fend = fpfn + np.asarray(space.folio_nr)
    present, mask, shift = np.uint64(a.present), np.uint64(a.pfn_mask), np.uint64(PAGE_SHIFT)
    for lo in range(0, space.n_tables, _SCAN_TABLES):
        block = np.asarray(space.ptes[lo : lo + _SCAN_TABLES])
        row, _ = np.nonzero(block & present)
        if row.size == 0:
            continue
        pfn = (block[block & present != 0] & mask) >> shift  # row-major: same order as row
        f = np.searchsorted(fpfn, pfn, side="right") - 1
        hit = f >= 0
        hit[hit] &= pfn[hit] < fend[f[hit]]
        f, t = f[hit], row[hit].astype(np.int64) + lo
        if f.size == 0:
            continue
        # t is increasing: a folio's first hit is its lowest table here, its last the highest
        uf, first = np.unique(f, return_index=True)
        unset = fmin[uf] < 0
        fmin[uf[unset]] = t[first[unset]]
        ruf, rlast = np.unique(f[::-1], return_index=True)
        fmax[ruf] = t[::-1][rlast]
    return fmin, fmax


def allowed_cuts(space: AddressSpace) -> np.ndarray:
    """Table indices ``t`` (``0 < t < n_tables``) before which a space may be cut.

    A cut before ``t`` is refused when a VMA spans it (``start < table_va[t] < end``) or a
    listed folio has present PTEs in tables both below ``t`` and at or above it.
    """
    n = space.n_tables
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    tva = np.asarray(space.table_va[1:])
    vs, ve = np.asarray(space.vma_start), np.asarray(space.vma_end)
    last = np.searchsorted(vs, tva, side="left") - 1  # the last VMA starting below
    spanned = np.zeros(n - 1, dtype=bool)
    has = last >= 0
    spanned[has] = ve[last[has]] > tva[has]
    fmin, fmax = _folio_table_span(space)
    split = fmin < fmax
    cover = np.zeros(n + 1, dtype=np.int64)
    np.add.at(cover, fmin[split] + 1, 1)
    np.add.at(cover, fmax[split] + 1, -1)
    crossed = np.cumsum(cover)[1:n] > 0  # crossed[t - 1]: a folio on both sides of t
    return np.flatnonzero(~(spanned | crossed)).astype(np.int64) + 1


def _choose_cuts(allowed: np.ndarray, n_tables: int, tables: int) -> list[int]:
    """Greedy: each cut at the first allowed boundary at least ``tables`` past the last."""
    cuts, prev = [], 0
    while True:
        i = int(np.searchsorted(allowed, prev + tables, side="left"))
        if i >= allowed.size:
            return cuts
        prev = int(allowed[i])
        cuts.append(prev)


# -- writing --------------------------------------------------------------------------------


class ShardWriter:
    """Writes a sharded directory atomically: shards go to a temporary sibling directory
    (``.NAME.XXXXXXXX.ptebatch-tmp``), which is renamed into place by :meth:`finish` once the
    manifest is written and everything is flushed.  An error (or leaving the ``with`` block
    without ``finish``) removes the temporary directory.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Target.  An existing sharded space there is replaced; any other existing path is
        refused (``FileExistsError``) and left alone.
    arch : str
    private : bool
        Keep the directory ``0700`` (a capture holds physical frame numbers); otherwise it
        gets the usual ``0777`` less the umask.
    """

    def __init__(self, out_dir, arch: str, *, private: bool = False):
        self.out = os.path.abspath(os.fspath(out_dir))
        self.arch = get_arch(arch).name
        _check_target(self.out)
        parent = os.path.dirname(self.out)
        prefix = "." + os.path.basename(self.out)[:64] + "."
        self.tmp = tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=parent)
        if not private:  # mkdtemp made it 0700
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o777 & ~umask)
        self.records: list[dict] = []
        self.table = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def add(
        self,
        sp: AddressSpace,
        *,
        va_lo: int,
        halo: bool,
        own_tables: int | None = None,
    ) -> None:
        """Write the next shard: ``sp`` holds its own tables, plus the halo table last when
        ``halo``.  ``va_lo`` is where its VA range starts (the previous shard's ``va_hi``);
        ``own_tables`` defaults to all but the halo (``shard(..., halo=False)`` writes
        none, to show that it is needed)."""
        if sp.arch != self.arch:
            raise ValueError(f"arch: shard {len(self.records)} is {sp.arch}, not {self.arch}")
        name = f"shard-{len(self.records):05d}.npz"
        path = os.path.join(self.tmp, name)
        sp.save(path)
        size, digest = _file_digest(path)
        own = sp.n_tables - int(halo) if own_tables is None else int(own_tables)
        if self.records:
            self.records[-1]["va_hi"] = int(va_lo)
        self.records.append(
            dict(
                file=name,
                table_lo=self.table,
                table_hi=self.table + own,
                va_lo=int(va_lo),
                va_hi=VA_TOP,
                n_vmas=sp.n_vmas,
                n_folios=sp.n_folios,
                halo=bool(halo),
                bytes=size,
                sha256=digest,
            )
        )
        self.table += own

    def finish(self) -> ShardedSpace:
        """Write the manifest, flush, and move the directory into place."""
        recs = self.records
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "arch": self.arch,
            "n_tables": self.table,
            "n_vmas": sum(r["n_vmas"] for r in recs),
            "n_folios": sum(r["n_folios"] for r in recs),
            "shards": recs,
        }
        _check_manifest(MANIFEST, manifest)
        with open(os.path.join(self.tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.tmp)
        _check_target(self.out)  # again: it may have appeared while we wrote
        old = None
        if os.path.isdir(self.out):
            old = tempfile.mkdtemp(
                prefix=os.path.basename(self.tmp) + ".old.", dir=os.path.dirname(self.out)
            )
            os.rename(self.out, os.path.join(old, "d"))
        os.rename(self.tmp, self.out)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(os.path.dirname(self.out))
        return ShardedSpace(self.out)


def _check_target(out: str) -> None:
    if os.path.lexists(out) and not (
        os.path.isdir(out)
        and not os.path.islink(out)
        and os.path.isfile(os.path.join(out, MANIFEST))
    ):
        raise FileExistsError(
            f"{out}: exists and is not a ptebatch sharded space; refusing to overwrite it"
        )


def _fsync_dir(d: str) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def _sub_space(space: AddressSpace, t0: int, t1: int, v0: int, v1: int, folios) -> AddressSpace:
    """Tables ``[t0, t1)`` (copied out), VMAs ``[v0, v1)`` and the listed ``folios``."""
    return AddressSpace(
        np.array(space.ptes[t0:t1]),
        np.array(space.table_va[t0:t1]),
        np.array(space.vma_start[v0:v1]),
        np.array(space.vma_end[v0:v1]),
        np.ascontiguousarray(space.folio_pfn[folios]),
        np.ascontiguousarray(space.folio_nr[folios]),
        np.ascontiguousarray(space.folio_flags[folios]),
        arch=space.arch,
        vma_flags=np.array(space.vma_flags[v0:v1]),
    )


def shard(
    space_or_path, out_dir, *, tables: int, halo: bool = True, private: bool = False
) -> ShardedSpace:
    """Cut a space into shards of about ``tables`` tables and write them to ``out_dir``.

    Parameters
    ----------
    space_or_path : AddressSpace, str or os.PathLike
        The space, or a snapshot path (memory-mapped; one shard's tables are copied out at
        a time).
    out_dir : str or os.PathLike
        The directory to write (atomically; see :class:`ShardWriter`).
    tables : int
        Tables per shard, at least 1.  Each cut goes at the first allowed boundary (no VMA
        and no listed folio spans it) at least ``tables`` past the previous cut; where none
        is allowed the shard grows.
    halo : bool
        Store the next shard's first table after each shard's own (the default, needed for
        exact ``oob="adjacent"`` walks).  False exists only to show that it is needed.
    private : bool
        A ``0700`` directory (see :class:`ShardWriter`).

    Returns
    -------
    ShardedSpace
    """
    if isinstance(tables, bool) or not isinstance(tables, (int, np.integer)) or tables < 1:
        raise ValueError(f"tables: must be an integer >= 1, got {tables!r}")
    space = space_or_path
    if not isinstance(space, AddressSpace):
        space = load_snapshot(space_or_path, mmap=True)
        if not isinstance(space, AddressSpace):
            raise ValueError(
                f"space_or_path: {os.fspath(space_or_path)} is already a sharded space "
                "(unshard it to cut it again)"
            )
    n = space.n_tables
    cuts = _choose_cuts(allowed_cuts(space), n, int(tables))
    bounds = [0, *cuts, n]
    fmin, _ = _folio_table_span(space)
    # a folio goes to the shard of its tables; a folio mapped nowhere to the last shard
    owner = np.searchsorted(np.asarray(cuts, dtype=np.int64), fmin, side="right")
    owner[fmin < 0] = len(bounds) - 2
    by_owner = np.argsort(owner, kind="stable")  # PFN order kept inside each shard
    first = np.searchsorted(owner[by_owner], np.arange(len(bounds)))
    vs = np.asarray(space.vma_start)
    with ShardWriter(out_dir, space.arch, private=private) as w:
        for k in range(len(bounds) - 1):
            t0, t1 = bounds[k], bounds[k + 1]
            last = k == len(bounds) - 2
            va_lo = 0 if k == 0 else int(space.table_va[t0])
            va_hi = VA_TOP if last else int(space.table_va[t1])
            v0 = int(np.searchsorted(vs, np.uint64(va_lo), side="left")) if k else 0
            v1 = vs.size if last else int(np.searchsorted(vs, np.uint64(va_hi), side="left"))
            halo_t = t1 if not last and halo else None
            mine = by_owner[first[k] : first[k + 1]]
            sub = _sub_space(space, t0, t1 + int(halo_t is not None), v0, v1, mine)
            w.add(sub, va_lo=va_lo, halo=not last, own_tables=t1 - t0)
        return w.finish()


# -- running shard by shard ------------------------------------------------------------------


def walk_task(file: str, record: dict, walk: str, kwargs: dict):
    """:func:`map_shards` task: ``engine.scan`` or ``engine.unmap`` of one shard."""
    from . import engine  # the compiled walks, only where a shard is walked

    sp = open_shard(file, record)
    return (engine.unmap if walk == "unmap" else engine.scan)(sp, **kwargs)


def run_walk(walk: str, sharded, kwargs: dict, *, executor=None, progress=None):
    """A scan or unmap of every shard, merged into the whole space's result."""
    from .results import ScanResult, UnmapResult

    results = map_shards(sharded, walk_task, (walk, kwargs), executor=executor, progress=progress)
    return (UnmapResult if walk == "unmap" else ScanResult).merge(results)


# -- unsharding -----------------------------------------------------------------------------


def _write_member(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)


def unshard(sharded, out_path) -> None:
    """Write a sharded space as one snapshot at ``out_path`` (atomically, streaming).

    Halos are dropped, VMAs concatenated in shard (address) order, folios merged in PFN
    order.  The page tables are copied a shard at a time, never held whole, so
    ``load(unshard(shard(x)))`` equals ``x`` for every space.

    Parameters
    ----------
    sharded : ShardedSpace, str or os.PathLike
    out_path : str or os.PathLike
    """
    ss = open_sharded(sharded)
    if ss is None:
        raise ValueError(f"sharded: {sharded!r} is not a sharded space directory")
    small: dict[str, list] = {
        k: [] for k in ("vma_start", "vma_end", "vma_flags", "folio_pfn", "folio_nr")
    }
    small["folio_flags"] = []
    for i in range(len(ss)):
        sp = ss.open(i)
        for k in small:
            small[k].append(np.array(getattr(sp, k)))
    cat = {k: np.concatenate(v) for k, v in small.items()}
    order = np.argsort(cat["folio_pfn"], kind="stable")
    for k in ("folio_pfn", "folio_nr", "folio_flags"):
        cat[k] = np.ascontiguousarray(cat[k][order])
    n = ss.n_tables

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_member(zf, "format", np.array(SNAPSHOT_FORMAT))
            _write_member(zf, "version", np.array(SNAPSHOT_VERSION, dtype=np.int64))
            _write_member(zf, "arch", np.array(ss.arch))
            for k in ("vma_flags", "vma_start", "vma_end"):
                _write_member(zf, k, cat[k])
            for k, shape in (("ptes", (n, PTRS_PER_PTE)), ("table_va", (n,))):
                with zf.open(k + ".npy", "w", force_zip64=True) as out:
                    header = {"descr": "<u8", "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_2_0(out, header)
                    for i, s in enumerate(ss.shards):
                        sp = ss.open(i, verify=False)  # checked above
                        own = getattr(sp, k)[: s.table_hi - s.table_lo]
                        for lo in range(0, own.shape[0], _SCAN_TABLES):
                            out.write(np.ascontiguousarray(own[lo : lo + _SCAN_TABLES]).tobytes())
            for k in ("folio_pfn", "folio_nr", "folio_flags"):
                _write_member(zf, k, cat[k])

    atomic_write(out_path, write)


# -- running --------------------------------------------------------------------------------


def map_shards(
    sharded, task: Callable, args: Sequence = (), *, executor=None, progress=None
) -> list:
    """Call ``task(shard_file, shard_record_as_dict, *args)`` once per shard, in shard order.

    Parameters
    ----------
    sharded : ShardedSpace, str or os.PathLike
    task : callable
        A top-level (picklable) function.
    args : sequence
        Extra arguments, the same for every shard.
    executor : callable or dask.distributed.Client, optional
        ``None``: in this process, one shard at a time (a space larger than memory works).
        A Dask ``Client``: its cluster runs the shards
        (:class:`ptebatch.distributed.DaskExecutor`).  Otherwise
        ``executor(task, list_of_arg_tuples, progress)`` returns the results in order.
    progress : callable, optional
        The :mod:`ptebatch.progress` hook: one step per shard (task ``"shards"``).

    Returns
    -------
    list
        The task's results, in shard order.
    """
    ss = open_sharded(sharded)
    if ss is None:
        raise ValueError(f"sharded: {sharded!r} is not a sharded space directory")
    calls = [(s.file, s.as_dict(), *args) for s in ss.shards]
    if executor is not None:
        if hasattr(executor, "submit") and hasattr(executor, "gather"):  # a Dask Client
            from .distributed import DaskExecutor

            executor = DaskExecutor(executor)
        return list(executor(task, calls, progress))
    hook = as_hook(progress)
    out = []
    for i, call in enumerate(calls):
        out.append(task(*call))
        hook("shards", i + 1, len(calls), "shard")
    return out
