"""PTE encodings, one object per architecture.

Every architecture is *data*: bit masks, plus each PTE operation written as a
short list of masked steps.  A step is ``(cond_set, cond_clear, set, clear)``:
when every bit of ``cond_set`` is set and no bit of ``cond_clear`` is set, OR in
``set`` and then clear ``clear``.  Unconditional steps have both conditions 0.
x86-64 needs only unconditional steps; arm64's ``pte_wrprotect`` (save the
hardware dirty state into the software dirty bit first) is why conditions
exist.  The same tables drive the vectorised NumPy helpers here, the plain-int
operations of :mod:`ptebatch.naive` and the :class:`~ptebatch._jit.config.Config` of the
compiled walks, so an architecture is added in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Arch", "X86_64", "ARM64", "ARCHES", "get_arch"]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PTRS_PER_PTE = 512
PMD_SIZE = PAGE_SIZE * PTRS_PER_PTE
PMD_MASK = ~(PMD_SIZE - 1) & ((1 << 64) - 1)
U64 = (1 << 64) - 1

Step = tuple[int, int, int, int]


def _bit(n: int) -> int:
    return 1 << n


@dataclass(frozen=True)
class Arch:
    """One architecture's PTE layout and operations.

    Attributes
    ----------
    name : str
        Name stored in snapshots (``"x86_64"``).
    bits : Mapping[str, int]
        Named single-bit or multi-bit masks of the PTE.
    pfn_mask : int
        Bits of the PTE that hold the page frame number (shifted by 12).
    present, write, young, soft_dirty, uffd_wp : int
        Masks tested by ``pte_present`` etc.  A zero mask means the
        architecture has no such bit (arm64 has no soft-dirty).
    dirty_any : int
        ``pte_dirty`` is true when any of these bits is set...
    dirty_hw : tuple[int, int]
        ...or when all bits of ``dirty_hw[0]`` are set and none of
        ``dirty_hw[1]`` (arm64: write and not read-only); ``(0, 0)`` = unused.
    ops : Mapping[str, tuple[Step, ...]]
        ``mkclean``, ``clear_soft_dirty``, ``wrprotect``, ``mkold``,
        ``mkwrite``, ``mkyoung``, ``mkdirty`` as masked steps.
    make_bits : Mapping[str, int]
        Bits set by :meth:`make_pte` for each keyword.
    special : int
        ``pte_special``: such a PTE maps no folio (``vm_normal_page`` is NULL),
        so no walk batches it.
    cont : int
        Contiguous-block bit (arm64 contpte): ``pte_batch_hint`` jumps to the
        end of the aligned 16-entry block and ``ptep_get`` gathers young and
        dirty from the whole block.  0: no such bit, the hint is always 1.
    ops_before : Mapping[str, tuple[tuple[int, int, int], tuple[Step, ...]]]
        Operations that changed: ``{op: (release, steps)}`` gives the steps
        used by releases before ``release`` (arm64's ``pte_mkwrite`` before
        6.18 cleared read-only unconditionally).
    make_dirty : tuple of Step, optional
        What :meth:`make_pte` does for ``dirty=True``, applied after the other
        bits (default: set ``make_bits["dirty"]``).  arm64 marks a writable PTE
        dirty by clearing read-only (the hardware's way) and a read-only one
        with the software dirty bit.
    """

    name: str
    bits: Mapping[str, int]
    pfn_mask: int
    present: int
    write: int
    young: int
    soft_dirty: int
    uffd_wp: int
    dirty_any: int
    dirty_hw: tuple[int, int]
    ops: Mapping[str, tuple[Step, ...]]
    make_bits: Mapping[str, int]
    base_bits: int
    special: int = 0
    cont: int = 0
    ops_before: Mapping[str, tuple[tuple[int, int, int], tuple[Step, ...]]] = field(
        default_factory=dict
    )
    make_dirty: tuple[Step, ...] | None = None
    max_pfn: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_pfn", self.pfn_mask >> PAGE_SHIFT)
        if self.make_dirty is None:
            object.__setattr__(self, "make_dirty", _set(self.make_bits["dirty"]))

    # -- plain-int operations (used by the naive reference) -----------------
    def steps(self, op: str, version: tuple[int, int, int] | None = None) -> tuple[Step, ...]:
        """The masked steps of ``op`` in release ``version`` (None: the newest)."""
        if version is not None and op in self.ops_before:
            until, old = self.ops_before[op]
            if tuple(version) < until:
                return old
        return self.ops[op]

    def apply(self, op: str, pte: int, version: tuple[int, int, int] | None = None) -> int:
        """Apply operation ``op`` (as in release ``version``) to one PTE given as a Python int."""
        for cond_set, cond_clear, set_, clear in self.steps(op, version):
            if (pte & cond_set) == cond_set and (pte & cond_clear) == 0:
                pte = (pte | set_) & ~clear & U64
        return pte

    def is_dirty(self, pte: int) -> bool:
        """``pte_dirty`` on a Python int."""
        if pte & self.dirty_any:
            return True
        hw_set, hw_clear = self.dirty_hw
        return bool(hw_set) and (pte & hw_set) == hw_set and not (pte & hw_clear)

    # -- vectorised helpers --------------------------------------------------
    def make_pte(
        self,
        pfn,
        *,
        present=True,
        write=False,
        young=False,
        dirty=False,
        soft_dirty=False,
        uffd_wp=False,
        nx=False,
        extra=0,
    ):
        """Encode PTEs from PFNs and bit switches (NumPy broadcasting).

        Parameters
        ----------
        pfn : int or array_like of uint64
            Page frame numbers; must fit the architecture's PFN field.
        present, write, young, dirty, soft_dirty, uffd_wp, nx : bool or array_like of bool
            Bits to set.  ``dirty`` marks the page dirty as the hardware does
            (:attr:`make_dirty`): x86-64 sets bit 6 only (soft-dirty is its own
            switch, unlike ``pte_mkdirty``); arm64 clears read-only on a
            writable PTE and sets the software dirty bit on a read-only one.
            ``soft_dirty`` on arm64, which has no such bit, is an error.
        extra : int or array_like of uint64
            Raw bits ORed in last.

        Returns
        -------
        numpy.ndarray of uint64
            The encoded PTEs (0-d for scalar input).
        """
        pfn = np.asarray(pfn, dtype=np.uint64)
        if np.any(pfn > np.uint64(self.max_pfn)):
            raise ValueError(f"pfn: exceeds the {self.name} PFN field (max {self.max_pfn:#x})")
        pte = (pfn << np.uint64(PAGE_SHIFT)) | np.uint64(self.base_bits)
        for name, on in (
            ("present", present),
            ("write", write),
            ("young", young),
            ("soft_dirty", soft_dirty),
            ("uffd_wp", uffd_wp),
            ("nx", nx),
        ):
            mask = self.make_bits.get(name, 0)
            if not mask:
                if np.any(on):
                    raise ValueError(f"{name}: {self.name} has no such PTE bit")
                continue
            pte = pte | np.where(np.asarray(on, dtype=bool), np.uint64(mask), np.uint64(0))
        if np.any(dirty):
            pte = np.where(np.asarray(dirty, dtype=bool), self._steps(self.make_dirty, pte), pte)
        return pte | np.asarray(extra, dtype=np.uint64)

    def _test(self, ptes, mask: int):
        return (np.asarray(ptes, dtype=np.uint64) & np.uint64(mask)) != 0

    def pte_pfn(self, ptes):
        """PFN of each PTE."""
        return (np.asarray(ptes, dtype=np.uint64) & np.uint64(self.pfn_mask)) >> np.uint64(
            PAGE_SHIFT
        )

    def pte_present(self, ptes):
        """``pte_present`` of each PTE."""
        return self._test(ptes, self.present)

    def pte_write(self, ptes):
        """``pte_write`` of each PTE."""
        return self._test(ptes, self.write)

    def pte_young(self, ptes):
        """``pte_young`` (accessed) of each PTE."""
        return self._test(ptes, self.young)

    def pte_soft_dirty(self, ptes):
        """``pte_soft_dirty`` of each PTE (always false without the bit)."""
        return self._test(ptes, self.soft_dirty)

    def pte_uffd_wp(self, ptes):
        """``pte_uffd_wp`` of each PTE."""
        return self._test(ptes, self.uffd_wp)

    def pte_dirty(self, ptes):
        """``pte_dirty`` of each PTE (hardware or software dirty)."""
        p = np.asarray(ptes, dtype=np.uint64)
        out = (p & np.uint64(self.dirty_any)) != 0
        hw_set, hw_clear = self.dirty_hw
        if hw_set:
            out |= ((p & np.uint64(hw_set)) == np.uint64(hw_set)) & ((p & np.uint64(hw_clear)) == 0)
        return out

    def _vop(self, op: str, ptes):
        return self._steps(self.ops[op], ptes)

    @staticmethod
    def _steps(steps, ptes):
        p = np.array(ptes, dtype=np.uint64, copy=True)
        for cond_set, cond_clear, set_, clear in steps:
            hit = ((p & np.uint64(cond_set)) == np.uint64(cond_set)) & (
                (p & np.uint64(cond_clear)) == 0
            )
            p = np.where(hit, (p | np.uint64(set_)) & np.uint64(~clear & U64), p)
        return p

    def mark_dirty(self, ptes):
        """Mark PTEs dirty as :meth:`make_pte` does for ``dirty=True`` (the MMU's
        way where it can: arm64 clears read-only on a writable PTE)."""
        return self._steps(self.make_dirty, ptes)

    def pte_mkclean(self, ptes):
        """``pte_mkclean`` of each PTE."""
        return self._vop("mkclean", ptes)

    def pte_mkold(self, ptes):
        """``pte_mkold`` of each PTE."""
        return self._vop("mkold", ptes)

    def pte_wrprotect(self, ptes):
        """``pte_wrprotect`` of each PTE."""
        return self._vop("wrprotect", ptes)

    def pte_clear_soft_dirty(self, ptes):
        """``pte_clear_soft_dirty`` of each PTE."""
        return self._vop("clear_soft_dirty", ptes)

    def pte_mkwrite(self, ptes):
        """``pte_mkwrite`` of each PTE (ordinary, non-shadow-stack mapping)."""
        return self._vop("mkwrite", ptes)

    def pte_mkyoung(self, ptes):
        """``pte_mkyoung`` of each PTE."""
        return self._vop("mkyoung", ptes)

    def pte_mkdirty(self, ptes):
        """``pte_mkdirty`` of each PTE."""
        return self._vop("mkdirty", ptes)


def _clear(mask: int) -> tuple[Step, ...]:
    return ((0, 0, 0, mask),)


def _set(mask: int) -> tuple[Step, ...]:
    return ((0, 0, mask, 0),)


# x86-64 (arch/x86/include/asm/pgtable_types.h).  The user-shadow-stack
# SavedDirty bit (58) is not modelled: wrprotect of a dirty PTE keeps bit 6.
_X86 = {
    name: _bit(n)
    for name, n in (
        ("PRESENT", 0),
        ("RW", 1),
        ("USER", 2),
        ("PWT", 3),
        ("PCD", 4),
        ("ACCESSED", 5),
        ("DIRTY", 6),
        ("PAT", 7),
        ("GLOBAL", 8),
        ("SPECIAL", 9),
        ("UFFD_WP", 10),
        ("SOFT_DIRTY", 11),
        ("NX", 63),
    )
}
_X86["PFN"] = ((1 << 52) - 1) & ~((1 << 12) - 1)
_X86["PKEY"] = 0xF << 59

X86_64 = Arch(
    name="x86_64",
    bits=_X86,
    pfn_mask=_X86["PFN"],
    present=_X86["PRESENT"],
    write=_X86["RW"],
    young=_X86["ACCESSED"],
    soft_dirty=_X86["SOFT_DIRTY"],
    uffd_wp=_X86["UFFD_WP"],
    dirty_any=_X86["DIRTY"],
    dirty_hw=(0, 0),
    ops={
        "mkclean": _clear(_X86["DIRTY"]),
        "clear_soft_dirty": _clear(_X86["SOFT_DIRTY"]),
        "wrprotect": _clear(_X86["RW"]),
        "mkold": _clear(_X86["ACCESSED"]),
        "mkwrite": _set(_X86["RW"]),
        "mkyoung": _set(_X86["ACCESSED"]),
        # pte_mkdirty sets soft-dirty too
        "mkdirty": _set(_X86["DIRTY"] | _X86["SOFT_DIRTY"]),
    },
    make_bits={
        "present": _X86["PRESENT"],
        "write": _X86["RW"],
        "young": _X86["ACCESSED"],
        "dirty": _X86["DIRTY"],
        "soft_dirty": _X86["SOFT_DIRTY"],
        "uffd_wp": _X86["UFFD_WP"],
        "nx": _X86["NX"],
    },
    base_bits=_X86["USER"],
    special=_X86["SPECIAL"],
)

# arm64, 4 KiB granule (arch/arm64/include/asm/pgtable-hwdef.h, pgtable-prot.h,
# pgtable.h).  The write bit is DBM: a writable PTE is clean while read-only
# (bit 7) is set and the MMU clears read-only on the first write, so "dirty" is
# the software bit or (write and not read-only).  No soft-dirty bit.
_A64 = {
    name: _bit(n)
    for name, n in (
        ("VALID", 0),
        ("PAGE", 1),
        ("USER", 6),
        ("RDONLY", 7),
        ("AF", 10),
        ("NG", 11),
        ("WRITE", 51),
        ("CONT", 52),
        ("PXN", 53),
        ("UXN", 54),
        ("DIRTY", 55),
        ("SPECIAL", 56),
        ("UFFD_WP", 58),
    )
}
_A64["ATTRINDX"] = 0x7 << 2
_A64["SH"] = 0x3 << 8
_A64["PFN"] = ((1 << 48) - 1) & ~((1 << 12) - 1)

ARM64 = Arch(
    name="arm64",
    bits=_A64,
    pfn_mask=_A64["PFN"],
    present=_A64["VALID"],
    write=_A64["WRITE"],
    young=_A64["AF"],
    soft_dirty=0,
    uffd_wp=_A64["UFFD_WP"],
    dirty_any=_A64["DIRTY"],
    dirty_hw=(_A64["WRITE"], _A64["RDONLY"]),
    ops={
        "mkclean": ((0, 0, _A64["RDONLY"], _A64["DIRTY"]),),
        "clear_soft_dirty": (),
        # save the hardware dirty state in the software bit before losing it
        "wrprotect": (
            (_A64["WRITE"], _A64["RDONLY"], _A64["DIRTY"], 0),
            (0, 0, _A64["RDONLY"], _A64["WRITE"]),
        ),
        "mkold": _clear(_A64["AF"]),
        # 6.18+ (143937ca51cc): clear read-only only if software dirty
        "mkwrite": ((0, 0, _A64["WRITE"], 0), (_A64["DIRTY"], 0, 0, _A64["RDONLY"])),
        "mkyoung": _set(_A64["AF"]),
        "mkdirty": ((0, 0, _A64["DIRTY"], 0), (_A64["WRITE"], 0, 0, _A64["RDONLY"])),
    },
    make_bits={
        "present": _A64["VALID"],
        "write": _A64["WRITE"],
        "young": _A64["AF"],
        "dirty": _A64["DIRTY"],
        "uffd_wp": _A64["UFFD_WP"],
        "nx": _A64["UXN"],
    },
    # a user data page: page descriptor, normal memory (AttrIndx 0), inner
    # shareable, not global, never executable at EL1, clean (read-only set)
    base_bits=_A64["PAGE"] | _A64["USER"] | _A64["SH"] | _A64["NG"] | _A64["PXN"] | _A64["RDONLY"],
    special=_A64["SPECIAL"],
    cont=_A64["CONT"],
    # before 6.18 pte_mkwrite cleared read-only unconditionally: the PTE became hardware-dirty
    ops_before={"mkwrite": ((6, 18, 0), ((0, 0, _A64["WRITE"], _A64["RDONLY"]),))},
    make_dirty=((_A64["WRITE"], 0, 0, _A64["RDONLY"]), (0, _A64["WRITE"], _A64["DIRTY"], 0)),
)

ARCHES: dict[str, Arch] = {X86_64.name: X86_64, ARM64.name: ARM64}


def get_arch(arch) -> Arch:
    """Return the :class:`Arch` for a name or an ``Arch`` instance."""
    if isinstance(arch, Arch):
        return arch
    try:
        return ARCHES[str(arch)]
    except KeyError:
        raise ValueError(
            f"arch: unknown architecture {arch!r} (known: {', '.join(ARCHES)})"
        ) from None
