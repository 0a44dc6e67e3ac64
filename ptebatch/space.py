"""The address-space model: page tables, VMAs and folios, and its ``.npz`` snapshot.

Schema version 1 (all arrays C-contiguous):

========================  ===============  ============================================
field                     dtype, shape     rule
========================  ===============  ============================================
``ptes``                  uint64 [T, 512]  page tables, encoded for ``arch``
``table_va``              uint64 [T]       VA of entry 0; multiple of 2 MiB; increasing
``vma_start``/``vma_end`` uint64 [V]       page-aligned; start < end; sorted; disjoint
``folio_pfn``             uint64 [F]       first PFN; increasing; aligned to its size
``folio_nr``              uint64 [F]       pages; a power of two
``folio_flags``           uint8 [F]        bit 0 anon, bit 1 swapbacked
``vma_flags`` (optional)  uint8 [V]        bit 0 uffd-wp registered (VM_UFFD_WP); 0s if absent
``format``/``version``    str / int        ``"ptebatch.snapshot"`` / 1
``arch``                  str              ``"x86_64"`` or ``"arm64"``
========================  ===============  ============================================

A present PTE whose PFN lies in no listed folio maps an order-0 folio.

The top of the 64-bit space is usable: a table may start at ``2**64 - 2 MiB``.  A VMA's end is
a uint64 like its start, so the last page cannot be mapped: the highest ``vma_end`` is
``2**64 - 4096`` (an end of 0, the kernel's "top" in ``pmd_addr_end``, is refused by
``start < end``).

:meth:`AddressSpace.save` writes each array as an uncompressed (``ZIP_STORED``) member, streamed
into the zip; ``compress=True`` deflates them.  :func:`load` memory-maps every stored member of
at least one dimension (read-only arrays over the file: nothing is read until it is used) and
reads deflated ones whole.  :func:`read_info` describes a snapshot from its headers and small
arrays without reading the page tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ._io import NpzReader, SnapshotError, atomic_write
from .arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, get_arch

__all__ = [
    "AddressSpace",
    "load",
    "read_info",
    "SnapshotError",
    "FOLIO_ANON",
    "FOLIO_SWAPBACKED",
    "VMA_UFFD_WP",
    "FORMAT",
    "VERSION",
]

FORMAT = "ptebatch.snapshot"
VERSION = 1
FOLIO_ANON = 1
FOLIO_SWAPBACKED = 2
VMA_UFFD_WP = 1  # the VMA is registered for userfaultfd write-protect
# Orders above this are not folios of any kernel we model (x86-64 MAX_PAGE_ORDER is 10).
MAX_FOLIO_NR = 1 << 18

_ARRAYS = (
    ("ptes", np.uint64, 2),
    ("table_va", np.uint64, 1),
    ("vma_start", np.uint64, 1),
    ("vma_end", np.uint64, 1),
    ("folio_pfn", np.uint64, 1),
    ("folio_nr", np.uint64, 1),
    ("folio_flags", np.uint8, 1),
)


# Validation, info() and equality go through arrays this many elements at a time (8 MiB of
# uint64, 2,048 tables of ``ptes``), so that a memory-mapped snapshot is never copied whole into
# a temporary: a rule or a count makes a few temporaries of one step each.
_STEP = 1 << 20


def _steps(n: int, step: int, start: int = 0) -> Iterator[tuple[int, int]]:
    for lo in range(start, n, step):
        yield lo, min(lo + step, n)


def _pieces(a: np.ndarray) -> Iterator[np.ndarray]:
    """The elements of a C-contiguous array, flat, ``_STEP`` at a time (views, no copies)."""
    flat = a.reshape(-1)
    for lo, hi in _steps(flat.size, _STEP):
        yield flat[lo:hi]


def _first_bad_in(n: int, bad: Callable[[int, int], np.ndarray], start: int = 0) -> int | None:
    """First index in ``[start, n)`` where ``bad(lo, hi)``, a mask over ``[lo, hi)``, is set."""
    for lo, hi in _steps(n, _STEP, start):
        mask = bad(lo, hi)
        if mask.any():
            return lo + _first_bad(mask)
    return None


def _check_layout(name: str, dtype, shape: tuple, c_contiguous: bool, want, ndim: int) -> None:
    """The dtype, dimension and order rules; shared by arrays and ``.npy`` headers."""
    if dtype != want:
        raise TypeError(
            f"{name}: dtype must be {np.dtype(want).name}, got {dtype} "
            f"(convert with .astype(np.{np.dtype(want).name}))"
        )
    if len(shape) != ndim:
        raise ValueError(f"{name}: must have {ndim} dimension(s), got shape {shape}")
    if not c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use np.ascontiguousarray)")


def _check_array(name: str, a: Any, dtype, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy.ndarray of {np.dtype(dtype).name}, got {type(a).__name__}"
        )
    if type(a) is not np.ndarray and not isinstance(a, np.memmap):
        # numpy.matrix keeps two dimensions when indexed, a masked array hides entries:
        # neither means what the compiled walks read
        raise TypeError(
            f"{name}: expected a plain numpy.ndarray (or numpy.memmap), got the subclass "
            f"{type(a).__module__}.{type(a).__name__} (convert with np.asarray)"
        )
    _check_layout(name, a.dtype, a.shape, a.flags.c_contiguous, dtype, ndim)
    return a


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# -- the rules on lengths alone (what an .npy header says), in validation's order ---------------
def _check_table_shapes(ptes: tuple, tva: tuple) -> None:
    if ptes[1] != PTRS_PER_PTE:
        raise ValueError(f"ptes: each table must have {PTRS_PER_PTE} entries, got shape {ptes}")
    if tva[0] != ptes[0]:
        raise ValueError(f"table_va: length {tva[0]} does not match the {ptes[0]} tables in ptes")


def _check_vma_shapes(vs: tuple, ve: tuple) -> None:
    if vs != ve:
        raise ValueError(f"vma_end: length {ve[0]} does not match vma_start's {vs[0]}")


def _check_vma_flags_shape(vf: tuple, vs: tuple) -> None:
    if vf != vs:
        raise ValueError(f"vma_flags: length {vf[0]} does not match vma_start's {vs[0]}")


def _check_folio_shapes(fp: tuple, fn: tuple, ff: tuple) -> None:
    if not (fp == fn == ff):
        raise ValueError(
            f"folio_nr/folio_flags: lengths {fn[0]}/{ff[0]} do not match folio_pfn's {fp[0]}"
        )


# -- what info() counts, from pieces of the arrays (in memory, mapped or streamed) --------------
def _count_present(pieces: Iterable[np.ndarray], present_bit: int) -> int:
    bit = np.uint64(present_bit)
    return sum(int(np.count_nonzero(p & bit)) for p in pieces)


def _count_lazyfree(pieces: Iterable[np.ndarray]) -> int:
    both = np.uint8(FOLIO_ANON | FOLIO_SWAPBACKED)
    return sum(int(np.count_nonzero((p & both) == FOLIO_ANON)) for p in pieces)


def _count_flag(pieces: Iterable[np.ndarray], bit: int) -> int:
    return sum(int(np.count_nonzero(p & np.uint8(bit))) for p in pieces)


def _size_counts(pieces: Iterable[np.ndarray]) -> dict[str, int]:
    """``{str(size): folios}`` in increasing size, as ``np.unique`` would give them."""
    hist = np.zeros(MAX_FOLIO_NR + 1, dtype=np.int64)
    other: dict[int, int] = {}
    for p in pieces:
        if p.size and int(p.max()) <= MAX_FOLIO_NR:
            hist += np.bincount(p.astype(np.intp), minlength=MAX_FOLIO_NR + 1)
        else:  # sizes outside the schema (an array edited after validation)
            for s, c in zip(*np.unique(p, return_counts=True)):
                other[int(s)] = other.get(int(s), 0) + int(c)
    for s in np.flatnonzero(hist):
        other[int(s)] = other.get(int(s), 0) + int(hist[s])
    return {str(s): other[s] for s in sorted(other)}


def _vma_bytes(starts: Iterable[np.ndarray], ends: Iterable[np.ndarray]) -> int:
    total = 0
    for vs, ve in zip(starts, ends):
        total += int(np.sum(ve - vs, dtype=np.uint64))
    return total % (1 << 64)  # the uint64 sum the whole-array version computed


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal``, a piece at a time for big arrays (no full-size temporary)."""
    if a is b:
        return True
    if a.shape != b.shape:
        return False
    if a.size <= _STEP or not (a.flags.c_contiguous and b.flags.c_contiguous):
        return bool(np.array_equal(a, b))
    return all(np.array_equal(x, y) for x, y in zip(_pieces(a), _pieces(b)))


class AddressSpace:
    """Page tables, VMAs and folios of one address space.

    Parameters
    ----------
    ptes : numpy.ndarray of uint64, shape (T, 512)
        The PTE tables.
    table_va : numpy.ndarray of uint64, shape (T,)
        Virtual address mapped by entry 0 of each table: a multiple of 2 MiB,
        strictly increasing.
    vma_start, vma_end : numpy.ndarray of uint64, shape (V,)
        VMAs: page-aligned, ``start < end``, sorted and non-overlapping.  An
        end of 2**64 is not representable: the highest is ``2**64 - 4096``.
    folio_pfn, folio_nr : numpy.ndarray of uint64, shape (F,)
        Folios: first PFN (strictly increasing, aligned to the folio's size)
        and size in pages (a power of two).  Folios must not overlap.
    folio_flags : numpy.ndarray of uint8, shape (F,)
        Bit 0 anon, bit 1 swapbacked; lazyfree is anon and not swapbacked.
    arch : str
        PTE encoding, ``"x86_64"`` or ``"arm64"``.
    vma_flags : numpy.ndarray of uint8, shape (V,), optional
        Bit 0: the VMA is registered for userfaultfd write-protect (7.0's
        reclaim does not batch there).  ``None``: all 0.

    Raises
    ------
    TypeError
        An argument is not an array or has the wrong dtype.
    ValueError
        A shape, layout or value rule is broken; the message names the field.

    Notes
    -----
    The arrays are kept, not copied, and validated once; the walks also cache
    indexes derived from them on the space.  Editing them in place afterwards
    bypasses both: copy, edit, and build a new space.  A space from :func:`load`
    holds read-only views of its file (memory-mapped); it compares, pickles (as
    in-memory copies) and saves like any other, also over the file it maps.
    """

    def __init__(
        self,
        ptes,
        table_va,
        vma_start,
        vma_end,
        folio_pfn,
        folio_nr,
        folio_flags,
        arch: str = "x86_64",
        vma_flags=None,
    ):
        args = dict(
            ptes=ptes,
            table_va=table_va,
            vma_start=vma_start,
            vma_end=vma_end,
            folio_pfn=folio_pfn,
            folio_nr=folio_nr,
            folio_flags=folio_flags,
        )
        for name, dtype, ndim in _ARRAYS:
            setattr(self, name, _check_array(name, args[name], dtype, ndim))
        if vma_flags is None:
            vma_flags = np.zeros(self.vma_start.shape[0], dtype=np.uint8)
        self.vma_flags = _check_array("vma_flags", vma_flags, np.uint8, 1)
        self.arch = get_arch(arch).name
        self._validate()

    # -- validation --------------------------------------------------------
    def _validate(self) -> None:
        """Check the schema's rules, field by field, raising on the first break."""
        self._check_tables()
        self._check_vmas()
        self._check_vma_flags()
        self._check_folios(get_arch(self.arch))

    def _check_tables(self) -> None:
        """Tables: 512 entries each, one VA per table, 2 MiB aligned and increasing."""
        ptes, tva = self.ptes, self.table_va
        _check_table_shapes(ptes.shape, tva.shape)
        n = tva.shape[0]
        i = _first_bad_in(n, lambda lo, hi: (tva[lo:hi] % np.uint64(PMD_SIZE)) != 0)
        if i is not None:
            raise ValueError(f"table_va: must be multiples of 2 MiB; entry {i} is {int(tva[i]):#x}")
        i = _first_bad_in(n, lambda lo, hi: tva[lo:hi] <= tva[lo - 1 : hi - 1], start=1)
        if i is not None:
            raise ValueError(
                f"table_va: must be strictly increasing; entry {i} "
                f"({int(tva[i]):#x}) follows {int(tva[i - 1]):#x}"
            )

    def _check_vmas(self) -> None:
        """VMAs: matching lengths, page-aligned, non-empty, sorted and disjoint."""
        vs, ve = self.vma_start, self.vma_end
        _check_vma_shapes(vs.shape, ve.shape)
        n = vs.shape[0]
        for name, a in (("vma_start", vs), ("vma_end", ve)):
            i = _first_bad_in(n, lambda lo, hi, a=a: (a[lo:hi] % np.uint64(PAGE_SIZE)) != 0)
            if i is not None:
                raise ValueError(
                    f"{name}: must be page-aligned (multiples of 4096); entry {i} is {int(a[i]):#x}"
                )
        i = _first_bad_in(n, lambda lo, hi: vs[lo:hi] >= ve[lo:hi])
        if i is not None:
            raise ValueError(
                f"vma_end: must be above vma_start; VMA {i} is [{int(vs[i]):#x}, {int(ve[i]):#x})"
            )
        i = _first_bad_in(n, lambda lo, hi: vs[lo:hi] < ve[lo - 1 : hi - 1], start=1)
        if i is not None:
            raise ValueError(
                f"vma_start: VMAs must be sorted and non-overlapping; VMA {i} "
                f"starts at {int(vs[i]):#x}, before VMA {i - 1} ends at "
                f"{int(ve[i - 1]):#x}"
            )

    def _check_vma_flags(self) -> None:
        """VMA flags: one per VMA, only the uffd-wp bit defined."""
        vf, vs = self.vma_flags, self.vma_start
        _check_vma_flags_shape(vf.shape, vs.shape)
        undefined = np.uint8(~VMA_UFFD_WP & 0xFF)
        i = _first_bad_in(vf.shape[0], lambda lo, hi: (vf[lo:hi] & undefined) != 0)
        if i is not None:
            raise ValueError(
                f"vma_flags: only bit 0 (uffd-wp registered) is defined; VMA {i} has "
                f"{int(vf[i]):#x}"
            )

    def _check_folios(self, arch) -> None:
        """Folios: power-of-two sizes, aligned, inside ``arch``'s PFN field, sorted, disjoint."""
        fp, fn, ff = self.folio_pfn, self.folio_nr, self.folio_flags
        _check_folio_shapes(fp.shape, fn.shape, ff.shape)
        n, one = fp.shape[0], np.uint64(1)

        def bad_nr(lo, hi):
            f = fn[lo:hi]
            return (f == 0) | ((f & (f - one)) != 0) | (f > np.uint64(MAX_FOLIO_NR))

        def last(lo, hi):  # each folio's last PFN
            return fp[lo:hi] + fn[lo:hi] - one

        i = _first_bad_in(n, bad_nr)
        if i is not None:
            raise ValueError(
                f"folio_nr: must be a power of two from 1 to {MAX_FOLIO_NR}; "
                f"folio {i} has {int(fn[i])}"
            )
        i = _first_bad_in(n, lambda lo, hi: (fp[lo:hi] & (fn[lo:hi] - one)) != 0)
        if i is not None:
            raise ValueError(
                f"folio_pfn: a folio must be naturally aligned to its size; "
                f"folio {i} starts at PFN {int(fp[i]):#x} with {int(fn[i])} pages"
            )

        def past_field(lo, hi):
            end = last(lo, hi)
            return (end < fp[lo:hi]) | (end > np.uint64(arch.max_pfn))

        i = _first_bad_in(n, past_field)
        if i is not None:
            raise ValueError(
                f"folio_pfn: folio {i} (PFN {int(fp[i]):#x}) exceeds the {arch.name} PFN field"
            )
        i = _first_bad_in(n, lambda lo, hi: fp[lo:hi] <= fp[lo - 1 : hi - 1], start=1)
        if i is not None:
            raise ValueError(
                f"folio_pfn: must be strictly increasing; folio {i} "
                f"({int(fp[i]):#x}) follows {int(fp[i - 1]):#x}"
            )
        i = _first_bad_in(n, lambda lo, hi: fp[lo:hi] <= last(lo - 1, hi - 1), start=1)
        if i is not None:
            raise ValueError(
                f"folio_pfn: folios must not overlap; folio {i} starts at "
                f"PFN {int(fp[i]):#x} inside folio {i - 1} "
                f"({int(fp[i - 1]):#x}, {int(fn[i - 1])} pages)"
            )
        undefined = np.uint8(~(FOLIO_ANON | FOLIO_SWAPBACKED) & 0xFF)
        i = _first_bad_in(n, lambda lo, hi: (ff[lo:hi] & undefined) != 0)
        if i is not None:
            raise ValueError(
                f"folio_flags: only bit 0 (anon) and bit 1 (swapbacked) are "
                f"defined; folio {i} has {int(ff[i]):#x}"
            )

    # -- convenience -------------------------------------------------------
    @property
    def n_tables(self) -> int:
        return int(self.ptes.shape[0])

    @property
    def n_vmas(self) -> int:
        return int(self.vma_start.shape[0])

    @property
    def n_folios(self) -> int:
        return int(self.folio_pfn.shape[0])

    def info(self, *, present: bool = True) -> dict:
        """A JSON-ready description: counts of tables, VMAs, folios and PTEs.

        Parameters
        ----------
        present : bool
            Count the present PTEs (``present_ptes``), which reads every table (8 MiB at
            a time).  False: ``present_ptes`` is None and only the VMA and folio arrays
            are read.
        """
        return _describe(
            self.arch,
            self.ptes.shape[0],
            self.vma_start.shape[0],
            self.folio_pfn.shape[0],
            lambda name: _pieces(getattr(self, name)),
            present,
        )

    def __repr__(self) -> str:
        return (
            f"AddressSpace(arch={self.arch!r}, tables={self.n_tables}, vmas={self.n_vmas}, "
            f"folios={self.n_folios})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, AddressSpace):
            return NotImplemented
        return (
            self.arch == other.arch
            and _arrays_equal(self.vma_flags, other.vma_flags)
            and all(_arrays_equal(getattr(self, n), getattr(other, n)) for n, _, _ in _ARRAYS)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_entries(
        cls,
        va,
        pte,
        vma_start,
        vma_end,
        folio_pfn=(),
        folio_nr=(),
        folio_flags=(),
        arch: str = "x86_64",
        vma_flags=None,
    ) -> AddressSpace:
        """Build a space from individual PTEs.

        Parameters
        ----------
        va : array_like of uint64
            Page-aligned virtual address of each entry (no duplicates).
        pte : array_like of uint64
            The entries; tables are created for the 2 MiB regions they touch.
        vma_start, vma_end, folio_pfn, folio_nr, folio_flags, vma_flags : array_like
            As for the constructor; converted to the schema's dtypes.

        Returns
        -------
        AddressSpace
        """
        va = np.asarray(va, dtype=np.uint64).reshape(-1)
        pte = np.asarray(pte, dtype=np.uint64).reshape(-1)
        if va.shape != pte.shape:
            raise ValueError(f"pte: {pte.size} entries for {va.size} addresses")
        if np.any(va % np.uint64(PAGE_SIZE)):
            raise ValueError("va: addresses must be page-aligned")
        table_va, row = np.unique(va & ~np.uint64(PMD_SIZE - 1), return_inverse=True)
        ptes = np.zeros((table_va.size, PTRS_PER_PTE), dtype=np.uint64)
        idx = ((va >> np.uint64(PAGE_SHIFT)) & np.uint64(PTRS_PER_PTE - 1)).astype(np.intp)
        flat = row.astype(np.intp) * PTRS_PER_PTE + idx
        if np.unique(flat).size != flat.size:
            raise ValueError("va: the same address is given twice")
        ptes.reshape(-1)[flat] = pte
        return cls(
            ptes,
            table_va.astype(np.uint64),
            np.asarray(vma_start, dtype=np.uint64).reshape(-1).copy(),
            np.asarray(vma_end, dtype=np.uint64).reshape(-1).copy(),
            np.asarray(folio_pfn, dtype=np.uint64).reshape(-1).copy(),
            np.asarray(folio_nr, dtype=np.uint64).reshape(-1).copy(),
            np.asarray(folio_flags, dtype=np.uint8).reshape(-1).copy(),
            arch=arch,
            vma_flags=None
            if vma_flags is None
            else np.asarray(vma_flags, dtype=np.uint8).reshape(-1).copy(),
        )

    # -- persistence -------------------------------------------------------
    def save(self, path, *, compress: bool = False, mode: int | None = None) -> None:
        """Write the snapshot to ``path`` atomically.

        The data goes to a temporary file in the same directory, is flushed to
        disk and then renamed over ``path``: a crash leaves either the old file
        or the new one, never a partial snapshot, and an error or a SIGTERM/SIGINT
        removes the temporary file.  Saving a loaded space over the file it was
        loaded from is safe: its arrays keep mapping the old file.

        Parameters
        ----------
        path : str or os.PathLike
            Destination; written exactly as named (no suffix is added).
        compress : bool
            False (default): each array is stored uncompressed, so that :func:`load`
            can memory-map it.  True: deflated (smaller, read whole by :func:`load`).
            Either way each array is streamed into its zip member in pieces, not
            copied whole, and the schema is the same.
        mode : int, optional
            Permissions of a new file, less the umask (default ``0o666``).  An existing
            file keeps its own, only those it shares with ``mode`` when given: a capture
            is saved with ``mode=0o600`` (:meth:`ptebatch.Capture.save`).

        Raises
        ------
        FileExistsError
            ``path`` exists and is not a regular file (a symbolic link, directory, FIFO,
            device or socket): it is left alone.
        OSError
            The file could not be written; the error names ``path``.

        Notes
        -----
        SIGKILL (or a power cut) during a save can leave a temporary file named
        ``.NAME.XXXXXXXX.ptebatch-tmp`` next to ``path``; it is safe to delete.
        """

        def write(fh):
            savez = np.savez_compressed if compress else np.savez
            savez(
                fh,
                format=np.array(FORMAT),
                version=np.array(VERSION, dtype=np.int64),
                arch=np.array(self.arch),
                vma_flags=self.vma_flags,
                **{name: getattr(self, name) for name, _, _ in _ARRAYS},
            )

        atomic_write(path, write, mode=mode)


_IDENTITY = ("format", "version", "arch")
_FIELDS = frozenset(_IDENTITY + ("vma_flags",) + tuple(n for n, _, _ in _ARRAYS))
# format and arch are short strings; a header declaring more is not a snapshot's
_MAX_NAME_CHARS = 64


def _missing(path: str, npz: NpzReader, key: str, what: str = "") -> SnapshotError:
    hint = ""
    if key in npz.ignored:  # np.load would show it under the same key; we read only .npy members
        hint = f" (member {key!r} is there, but is not a .npy member {key + '.npy'!r})"
    return SnapshotError(f"{path}: missing field {key!r}{what}{hint}")


def _read_identity(path: str, npz: NpzReader) -> str:
    """format, version and arch, their headers checked before they are read; returns arch."""
    for key in _IDENTITY:
        if key not in npz.members:
            raise _missing(path, npz, key, "; not a ptebatch snapshot")
    lay = {key: npz.layout(key) for key in _IDENTITY}

    def is_name(layout) -> bool:
        return (
            layout.shape == ()
            and layout.dtype.kind == "U"
            and layout.dtype.itemsize <= 4 * _MAX_NAME_CHARS
        )

    if not is_name(lay["format"]):
        raise SnapshotError(
            f"{path}: format must be {FORMAT!r}, got an array of dtype {lay['format'].dtype} "
            f"and shape {lay['format'].shape}; not a ptebatch snapshot"
        )
    fmt = npz.array("format", mmap=False)
    if str(fmt) != FORMAT:
        raise SnapshotError(f"{path}: format must be {FORMAT!r}, got {str(fmt)!r}")
    ver = lay["version"]
    if ver.shape != () or ver.dtype.kind not in "iu":
        raise SnapshotError(
            f"{path}: version must be {VERSION}, got an array of dtype {ver.dtype} and shape "
            f"{ver.shape} (this ptebatch reads version {VERSION})"
        )
    ver = npz.array("version", mmap=False)
    if int(ver) != VERSION:
        raise SnapshotError(
            f"{path}: version must be {VERSION}, got {ver!r} (this ptebatch reads version "
            f"{VERSION})"
        )
    if not is_name(lay["arch"]):
        raise SnapshotError(
            f"{path}: arch must be a string of at most {_MAX_NAME_CHARS} characters, got an "
            f"array of dtype {lay['arch'].dtype} and shape {lay['arch'].shape}"
        )
    return str(npz.array("arch", mmap=False))


def _check_headers(path: str, npz: NpzReader) -> tuple[str, dict[str, tuple]]:
    """Every rule a snapshot's headers alone can break, before any array is read or mapped:
    identity, fields present, dtypes, dimensions, order and lengths.  Returns the arch and
    the arrays' shapes."""
    arch = _read_identity(path, npz)
    for name, _, _ in _ARRAYS:
        if name not in npz.members:
            raise _missing(path, npz, name)
    try:
        layouts = {n: npz.layout(n) for n in _FIELDS - set(_IDENTITY) if n in npz.members}
        for name, dtype, ndim in (*_ARRAYS, ("vma_flags", np.uint8, 1)):
            if name in layouts:
                lay = layouts[name]
                _check_layout(name, lay.dtype, lay.shape, lay.c_contiguous, dtype, ndim)
        arch = get_arch(arch).name
        shape = {n: lay.shape for n, lay in layouts.items()}
        _check_table_shapes(shape["ptes"], shape["table_va"])
        _check_vma_shapes(shape["vma_start"], shape["vma_end"])
        if "vma_flags" in shape:
            _check_vma_flags_shape(shape["vma_flags"], shape["vma_start"])
        _check_folio_shapes(shape["folio_pfn"], shape["folio_nr"], shape["folio_flags"])
    except SnapshotError:
        raise
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"{path}: {exc}") from None
    return arch, shape


def load(path, *, mmap: bool = True, verify: bool = True) -> AddressSpace:
    """Load and validate a snapshot written by :meth:`AddressSpace.save`.

    A directory holding ``manifest.json`` is a sharded space (:mod:`ptebatch.shards`):
    ``load`` returns a :class:`~ptebatch.shards.ShardedSpace`, opened lazily (only its
    manifest is read; each shard is checked against its checksum when it is opened).  Any
    other directory is refused as not a snapshot.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool
        True (default): each array stored uncompressed is a read-only view of the
        file (memory-mapped), so the tables are read only when a walk reads them;
        deflated arrays are read whole.  False: every array is read into memory
        (writable), as before.
    verify : bool
        Check the CRC-32 of every member.  Members read whole are always checked;
        with ``mmap`` this reads each mapped member once through a bounded buffer
        (1-2 s per 3 GB from the page cache, no memory held).  False
        skips that read: ``load`` then touches only the headers and the arrays
        validation reads, and a corrupt PTE goes unnoticed.

    Returns
    -------
    AddressSpace
        Validated as on construction, which reads ``table_va`` and the VMA and
        folio arrays in pieces of 8 MiB, and of ``ptes`` only its shape.

    Raises
    ------
    SnapshotError
        A ``ValueError``: the file is not a regular file, not a ptebatch snapshot,
        truncated or corrupt, of another schema version, or breaks a schema rule
        (a wrong dtype included).  One line naming the file, the member or field and
        the rule.  Every header is checked against the sizes the file holds before
        an array is allocated or mapped; members outside the schema are never read.
    FileNotFoundError, PermissionError, OSError
        The file cannot be opened or read.
    """
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.lexists(os.path.join(path, "manifest.json")):
        from .shards import ShardedSpace  # shards builds on this module

        return ShardedSpace(path)
    with NpzReader(path, _FIELDS) as npz:
        arch, _ = _check_headers(path, npz)
        fields = {
            n: npz.array(n, mmap=mmap, verify=verify) for n in npz.members if n not in _IDENTITY
        }
    try:
        return AddressSpace(
            **{n: fields[n] for n, _, _ in _ARRAYS},
            arch=arch,
            vma_flags=fields.get("vma_flags"),
        )
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"{path}: {exc}") from None


def read_info(path, *, present: bool = False) -> dict:
    """``load(path).info(present=present)`` read from the file's headers and small arrays.

    Reads the ``.npy`` headers (shapes, dtypes), ``format``/``version``/``arch``, and streams
    ``vma_start``, ``vma_end``, ``vma_flags``, ``folio_nr`` and ``folio_flags`` through one
    bounded buffer (their CRC-32 is checked); ``ptes`` only when ``present`` is True.  It
    checks what :func:`load` checks on the headers (fields, dtypes, shapes) but not the value
    rules (alignment, order, overlap): those need every VMA and folio, and ``load`` checks them.

    Parameters
    ----------
    path : str or os.PathLike
    present : bool
        Also count the present PTEs (``present_ptes``; None when False), streaming
        every table through the buffer.

    Returns
    -------
    dict
        The keys and values of :meth:`AddressSpace.info` for a valid snapshot.

    Raises
    ------
    SnapshotError, FileNotFoundError, PermissionError, OSError
        As :func:`load`, for what it checks.
    """
    path = os.fspath(path)
    with NpzReader(path, _FIELDS) as npz:
        arch, shape = _check_headers(path, npz)

        def pieces(name: str) -> Iterator[np.ndarray]:
            if name in npz.members:  # vma_flags is optional: absent means all 0
                yield from npz.chunks(name, _STEP)

        return _describe(
            arch,
            shape["ptes"][0],
            shape["vma_start"][0],
            shape["folio_pfn"][0],
            pieces,
            present,
        )


def _describe(arch: str, n_tables: int, n_vmas: int, n_folios: int, pieces, present: bool):
    """The ``info()`` dict; ``pieces(name)`` yields an array's elements a piece at a time."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "tables": int(n_tables),
        "vmas": int(n_vmas),
        "folios": int(n_folios),
        "lazyfree_folios": _count_lazyfree(pieces("folio_flags")),
        "uffd_wp_vmas": _count_flag(pieces("vma_flags"), VMA_UFFD_WP),
        "folio_sizes": _size_counts(pieces("folio_nr")),
        "present_ptes": _count_present(pieces("ptes"), get_arch(arch).present) if present else None,
        "vma_bytes": _vma_bytes(pieces("vma_start"), pieces("vma_end")),
    }
