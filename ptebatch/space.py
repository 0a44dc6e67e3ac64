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
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from ._io import atomic_write
from .arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, get_arch

__all__ = [
    "AddressSpace",
    "load",
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


def _check_array(name: str, a: Any, dtype, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy.ndarray of {np.dtype(dtype).name}, got {type(a).__name__}"
        )
    if a.dtype != dtype:
        raise TypeError(
            f"{name}: dtype must be {np.dtype(dtype).name}, got {a.dtype} "
            f"(convert with .astype(np.{np.dtype(dtype).name}))"
        )
    if a.ndim != ndim:
        raise ValueError(f"{name}: must have {ndim} dimension(s), got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use np.ascontiguousarray)")
    return a


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


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
        VMAs: page-aligned, ``start < end``, sorted and non-overlapping.
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
    bypasses both: copy, edit, and build a new space.
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
        if ptes.shape[1] != PTRS_PER_PTE:
            raise ValueError(
                f"ptes: each table must have {PTRS_PER_PTE} entries, got shape {ptes.shape}"
            )
        if tva.shape[0] != ptes.shape[0]:
            raise ValueError(
                f"table_va: length {tva.shape[0]} does not match the {ptes.shape[0]} tables in ptes"
            )
        if tva.size:
            bad = (tva % np.uint64(PMD_SIZE)) != 0
            if bad.any():
                i = _first_bad(bad)
                raise ValueError(
                    f"table_va: must be multiples of 2 MiB; entry {i} is {int(tva[i]):#x}"
                )
            if tva.size > 1:
                bad = tva[1:] <= tva[:-1]
                if bad.any():
                    i = _first_bad(bad) + 1
                    raise ValueError(
                        f"table_va: must be strictly increasing; entry {i} "
                        f"({int(tva[i]):#x}) follows {int(tva[i - 1]):#x}"
                    )

    def _check_vmas(self) -> None:
        """VMAs: matching lengths, page-aligned, non-empty, sorted and disjoint."""
        vs, ve = self.vma_start, self.vma_end
        if vs.shape != ve.shape:
            raise ValueError(
                f"vma_end: length {ve.shape[0]} does not match vma_start's {vs.shape[0]}"
            )
        if vs.size:
            for name, a in (("vma_start", vs), ("vma_end", ve)):
                bad = (a % np.uint64(PAGE_SIZE)) != 0
                if bad.any():
                    i = _first_bad(bad)
                    raise ValueError(
                        f"{name}: must be page-aligned (multiples of 4096); "
                        f"entry {i} is {int(a[i]):#x}"
                    )
            bad = vs >= ve
            if bad.any():
                i = _first_bad(bad)
                raise ValueError(
                    f"vma_end: must be above vma_start; VMA {i} is "
                    f"[{int(vs[i]):#x}, {int(ve[i]):#x})"
                )
            if vs.size > 1:
                bad = vs[1:] < ve[:-1]
                if bad.any():
                    i = _first_bad(bad) + 1
                    raise ValueError(
                        f"vma_start: VMAs must be sorted and non-overlapping; VMA {i} "
                        f"starts at {int(vs[i]):#x}, before VMA {i - 1} ends at "
                        f"{int(ve[i - 1]):#x}"
                    )

    def _check_vma_flags(self) -> None:
        """VMA flags: one per VMA, only the uffd-wp bit defined."""
        vf, vs = self.vma_flags, self.vma_start
        if vf.shape != vs.shape:
            raise ValueError(
                f"vma_flags: length {vf.shape[0]} does not match vma_start's {vs.shape[0]}"
            )
        bad = (vf & np.uint8(~VMA_UFFD_WP & 0xFF)) != 0
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(
                f"vma_flags: only bit 0 (uffd-wp registered) is defined; VMA {i} has "
                f"{int(vf[i]):#x}"
            )

    def _check_folios(self, arch) -> None:
        """Folios: power-of-two sizes, aligned, inside ``arch``'s PFN field, sorted, disjoint."""
        fp, fn, ff = self.folio_pfn, self.folio_nr, self.folio_flags
        if not (fp.shape == fn.shape == ff.shape):
            raise ValueError(
                f"folio_nr/folio_flags: lengths {fn.shape[0]}/{ff.shape[0]} "
                f"do not match folio_pfn's {fp.shape[0]}"
            )
        if fp.size:
            bad = (fn == 0) | ((fn & (fn - np.uint64(1))) != 0) | (fn > np.uint64(MAX_FOLIO_NR))
            if bad.any():
                i = _first_bad(bad)
                raise ValueError(
                    f"folio_nr: must be a power of two from 1 to {MAX_FOLIO_NR}; "
                    f"folio {i} has {int(fn[i])}"
                )
            bad = (fp & (fn - np.uint64(1))) != 0
            if bad.any():
                i = _first_bad(bad)
                raise ValueError(
                    f"folio_pfn: a folio must be naturally aligned to its size; "
                    f"folio {i} starts at PFN {int(fp[i]):#x} with {int(fn[i])} pages"
                )
            last = fp + fn - np.uint64(1)
            bad = (last < fp) | (last > np.uint64(arch.max_pfn))
            if bad.any():
                i = _first_bad(bad)
                raise ValueError(
                    f"folio_pfn: folio {i} (PFN {int(fp[i]):#x}) exceeds the {arch.name} PFN field"
                )
            if fp.size > 1:
                bad = fp[1:] <= fp[:-1]
                if bad.any():
                    i = _first_bad(bad) + 1
                    raise ValueError(
                        f"folio_pfn: must be strictly increasing; folio {i} "
                        f"({int(fp[i]):#x}) follows {int(fp[i - 1]):#x}"
                    )
                bad = fp[1:] <= last[:-1]
                if bad.any():
                    i = _first_bad(bad) + 1
                    raise ValueError(
                        f"folio_pfn: folios must not overlap; folio {i} starts at "
                        f"PFN {int(fp[i]):#x} inside folio {i - 1} "
                        f"({int(fp[i - 1]):#x}, {int(fn[i - 1])} pages)"
                    )
            bad = (ff & np.uint8(~(FOLIO_ANON | FOLIO_SWAPBACKED) & 0xFF)) != 0
            if bad.any():
                i = _first_bad(bad)
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

    def info(self) -> dict:
        """A JSON-ready description: counts of tables, VMAs, folios and PTEs."""
        arch = get_arch(self.arch)
        present = int(np.count_nonzero(self.ptes & np.uint64(arch.present)))
        sizes, counts = np.unique(self.folio_nr, return_counts=True)
        lazy = (self.folio_flags & np.uint8(FOLIO_ANON | FOLIO_SWAPBACKED)) == FOLIO_ANON
        return {
            "format": FORMAT,
            "version": VERSION,
            "arch": self.arch,
            "tables": self.n_tables,
            "vmas": self.n_vmas,
            "folios": self.n_folios,
            "lazyfree_folios": int(np.count_nonzero(lazy)),
            "uffd_wp_vmas": int(np.count_nonzero(self.vma_flags & np.uint8(VMA_UFFD_WP))),
            "folio_sizes": {str(int(s)): int(c) for s, c in zip(sizes, counts)},
            "present_ptes": present,
            "vma_bytes": int(np.sum(self.vma_end - self.vma_start, dtype=np.uint64)),
        }

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
            and np.array_equal(self.vma_flags, other.vma_flags)
            and all(np.array_equal(getattr(self, n), getattr(other, n)) for n, _, _ in _ARRAYS)
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
    def save(self, path) -> None:
        """Write the snapshot to ``path`` atomically.

        The data goes to a temporary file in the same directory, is flushed to
        disk and then renamed over ``path``: a crash leaves either the old file
        or the new one, never a partial snapshot.

        Parameters
        ----------
        path : str or os.PathLike
            Destination; written exactly as named (no suffix is added).
        """

        def write(fh):
            np.savez(
                fh,
                format=np.array(FORMAT),
                version=np.array(VERSION, dtype=np.int64),
                arch=np.array(self.arch),
                vma_flags=self.vma_flags,
                **{name: getattr(self, name) for name, _, _ in _ARRAYS},
            )

        atomic_write(path, write)


def load(path) -> AddressSpace:
    """Load and validate a snapshot written by :meth:`AddressSpace.save`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    AddressSpace

    Raises
    ------
    ValueError
        The file is truncated, corrupt, not a ptebatch snapshot, of another
        schema version, or breaks a schema rule.
    FileNotFoundError
        No such file.
    """
    path = os.fspath(path)
    fields: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                fields[key] = npz[key]
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{path}: not a readable ptebatch snapshot (truncated or corrupt .npz: {exc})"
        ) from None
    for key in ("format", "version", "arch"):
        if key not in fields:
            raise ValueError(f"{path}: missing field {key!r}; not a ptebatch snapshot")
    fmt = fields["format"]
    if fmt.shape != () or str(fmt) != FORMAT:
        raise ValueError(f"{path}: format must be {FORMAT!r}, got {str(fmt)!r}")
    ver = fields["version"]
    if ver.shape != () or ver.dtype.kind not in "iu" or int(ver) != VERSION:
        raise ValueError(
            f"{path}: version must be {VERSION}, got {ver!r} "
            f"(this ptebatch reads version {VERSION})"
        )
    arch = fields["arch"]
    if arch.shape != () or arch.dtype.kind != "U":
        raise ValueError(f"{path}: arch must be a string")
    missing = [n for n, _, _ in _ARRAYS if n not in fields]
    if missing:
        raise ValueError(f"{path}: missing field {missing[0]!r}")
    try:
        return AddressSpace(
            **{n: fields[n] for n, _, _ in _ARRAYS},
            arch=str(arch),
            vma_flags=fields.get("vma_flags"),
        )
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from None
