"""Every kernel caller of ``folio_pte_batch``, as presets per release.

Users think "fork on 6.17" or "lazyfree reclaim on 6.15", not in flag bits.
A :class:`Caller` is one call site (file and function); its :class:`Rule`
rows say, release by release, whether it batches, the flags it passes (in
that release's generation's vocabulary), how it limits ``max_nr`` and which
bits it later stamps from the first PTE onto every batched entry.  A release
uses the last row whose first release is not after it.  Everything here is
data: :mod:`ptebatch.engine` and :mod:`ptebatch.naive` read it.

Page-table walkers (zap, fork, mprotect, mremap, madvise, mlock) run under
:func:`ptebatch.scan`; the reverse-map caller (lazyfree reclaim) under
:func:`ptebatch.unmap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from .releases import FIRST_RELEASE, KernelProfile, parse_version, resolve_flags, resolve_kernel

__all__ = [
    "Rule",
    "Caller",
    "Preset",
    "CALLERS",
    "get_caller",
    "resolve_caller",
    "callers_table",
    "SPREAD_PROPS",
    "Walk",
    "Batching",
    "UnmapMode",
]


class _Named(IntEnum):
    """An IntEnum shown (``str``, JSON rows, ``ptebatch callers``) by its lower-case name.

    It also equals that name, so code written when these were strings
    (``caller.walk == "scan"``) keeps working.
    """

    def __str__(self) -> str:
        return self.name.lower()

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            return str(self) == other
        return int.__eq__(self, other)

    __hash__ = IntEnum.__hash__


class Walk(str, Enum):
    """Which kind of walk a caller is.  Its value is the name of the function that runs it
    (``getattr(ptebatch, caller.walk)``), so it is a string enum; the modes below reach
    compiled code and are integers."""

    SCAN = "scan"  # a page-table walker: ptebatch.scan
    UNMAP = "unmap"  # the reverse map (try_to_unmap_one): ptebatch.unmap

    def __str__(self) -> str:
        return self.value


class Batching(_Named):
    """Whether a page-table walker batches in a release."""

    NONE = 0  # one PTE at a time
    ALWAYS = 1  # every large folio with max_nr > 1
    HINT = 2  # only when pte_batch_hint > 1 (mremap: never on x86-64)


class UnmapMode(_Named):
    """try_to_unmap_one's batching rule for lazyfree (and, from 7.0, file) folios."""

    SINGLE = 0  # no batching: one PTE at a time
    ALL_OR_NOTHING = 1  # 6.15.0-6.15.6: max_nr = folio size, no table clamp
    CLAMPED = 2  # 6.15.7+: max_nr cut at pmd_addr_end(addr, vma_end)


# Properties a write-back caller may stamp from the first PTE (the SPREAD detector).
SPREAD_PROPS = ("write", "soft_dirty", "dirty")


@dataclass(frozen=True)
class Rule:
    """What one caller does from one release on.

    Attributes
    ----------
    since : str
        First release of the row (``"6.15.7"``).
    batches : bool
        False: the caller takes one PTE at a time in these releases.
    flags : str
        ``FPB_*`` names (``|``-separated) in the generation of ``since``.
    unmap : UnmapMode
        Reverse-map callers only: single, all-or-nothing or clamped.
    file_folios : bool
        Reverse-map callers only: file-backed large folios batch too, not
        only lazyfree anon ones.
    skip_uffd_wp_vmas : bool
        Reverse-map callers only: no batching in a VMA registered for
        userfaultfd write-protect (``vma_flags`` bit 0).
    need_hint : bool
        Batch only when ``pte_batch_hint`` is above 1 (mremap: never on x86).
    dst_clamp : bool
        ``max_nr`` is also cut at the destination's next 2 MiB boundary
        (mremap's ``move_page_tables`` extent).
    spread : tuple of str
        Properties (``write``, ``soft_dirty``, ``dirty``) the caller stamps
        from the first PTE on every batched entry without respecting them:
        a batch whose entries differ in one trips the ``spread`` detector.
    note : str
        Where the row comes from.
    """

    since: str
    batches: bool = True
    flags: str = ""
    unmap: UnmapMode = UnmapMode.CLAMPED
    file_folios: bool = False
    skip_uffd_wp_vmas: bool = False
    need_hint: bool = False
    dst_clamp: bool = False
    spread: tuple[str, ...] = ()
    note: str = ""

    @property
    def version(self) -> tuple[int, int, int]:
        return parse_version(self.since)

    @property
    def batching(self) -> Batching:
        """How a page-table walker batches under this row."""
        if not self.batches:
            return Batching.NONE
        return Batching.HINT if self.need_hint else Batching.ALWAYS

    @property
    def unmap_mode(self) -> UnmapMode:
        """How a reverse-map caller batches under this row."""
        return self.unmap if self.batches else UnmapMode.SINGLE


@dataclass(frozen=True)
class Caller:
    """One call site of ``folio_pte_batch``.

    Attributes
    ----------
    name : str
        Preset name (``"fork-private"``).
    walk : Walk
        ``Walk.SCAN`` (page-table walker) or ``Walk.UNMAP`` (reverse map).
    source : str
        File and function in the kernel tree.
    summary : str
        One line for listings.
    rules : tuple of Rule
        Release rows, oldest first.
    moves_tables : bool
        A range that covers a whole 2 MiB-aligned table and moves to a
        2 MiB-aligned destination is moved by its PMD entry, without looking
        at a PTE (mremap's ``move_pgt_entry(NORMAL_PMD)``, in every release).
    """

    name: str
    walk: Walk
    source: str
    summary: str
    rules: tuple[Rule, ...]
    moves_tables: bool = False

    @property
    def takes_move_by(self) -> bool:
        """It moves entries to a destination (mremap): ``move_by`` applies."""
        return any(r.dst_clamp for r in self.rules)

    def rule(self, version: tuple[int, int, int]) -> Rule:
        """The row in force for ``version`` (a caller not yet batching gets a
        ``batches=False`` row)."""
        rows = [r for r in self.rules if r.version <= version]
        if not rows:
            return Rule(
                ".".join(map(str, FIRST_RELEASE)),
                batches=False,
                unmap=UnmapMode.SINGLE,
                note="does not batch before " + self.rules[0].since,
            )
        return rows[-1]


@dataclass(frozen=True)
class Preset:
    """A caller in one release: what :func:`ptebatch.scan` / :func:`ptebatch.unmap` run.

    Attributes
    ----------
    caller : Caller
    profile : KernelProfile
    rule : Rule
    flags : int
        The rule's flags as bits of the release's generation.
    """

    caller: Caller
    profile: KernelProfile
    rule: Rule
    flags: int

    @property
    def name(self) -> str:
        return self.caller.name

    def describe(self) -> dict:
        """JSON-ready description (for ``ptebatch callers`` and results)."""
        r = self.rule
        out = {
            "caller": self.caller.name,
            "kernel": self.profile.name,
            "generation": self.profile.generation.name,
            "walk": str(self.caller.walk),
            "batches": r.batches,
            "flags": self.profile.generation.describe_flags(self.flags),
            "source": self.caller.source,
            "since": r.since,
            "note": r.note,
        }
        if self.caller.walk == Walk.UNMAP:
            out["unmap"] = str(r.unmap)
            out["file_folios"] = r.file_folios
            out["skip_uffd_wp_vmas"] = r.skip_uffd_wp_vmas
        if r.need_hint:
            out["need_hint"] = True
        if r.dst_clamp:
            out["dst_clamp"] = True
        out["spread"] = list(r.spread)
        return out


_G1_ID = "FPB_IGNORE_DIRTY|FPB_IGNORE_SOFT_DIRTY"

_LIST: tuple[Caller, ...] = (
    Caller(
        "zap",
        Walk.SCAN,
        "mm/memory.c: zap_present_ptes (zap_pte_range)",
        "munmap / exit / MADV_DONTNEED: clear the PTEs",
        (
            Rule("6.9", flags=_G1_ID, note="mm/memory: optimize unmap/zap with PTE-mapped THP"),
            Rule("6.17", flags="", note="folio_pte_batch_flags: flags inverted to FPB_RESPECT_*"),
        ),
    ),
    Caller(
        "fork-private",
        Walk.SCAN,
        "mm/memory.c: copy_present_ptes",
        "fork of a private mapping, soft-dirty tracking off; parent and child end read-only",
        (
            Rule(
                "6.9",
                flags="FPB_IGNORE_SOFT_DIRTY",
                note="mm/memory: optimize fork() with PTE-mapped THP; any_writable output.  "
                "The child gets one value, write-protected for COW, so the merged write "
                "bit spreads nothing",
            ),
            Rule("6.17", flags="FPB_RESPECT_DIRTY|FPB_MERGE_WRITE"),
        ),
    ),
    Caller(
        "fork-private-softdirty",
        Walk.SCAN,
        "mm/memory.c: copy_present_ptes",
        "fork of a private mapping with soft-dirty tracking on (clear_refs 4)",
        (
            Rule("6.9", flags="", note="any_writable output"),
            Rule("6.17", flags="FPB_RESPECT_DIRTY|FPB_RESPECT_SOFT_DIRTY|FPB_MERGE_WRITE"),
        ),
    ),
    Caller(
        "fork-shared",
        Walk.SCAN,
        "mm/memory.c: copy_present_ptes",
        "fork of a shared mapping, soft-dirty tracking off; the child's PTEs are cleaned",
        (
            Rule(
                "6.9",
                flags=_G1_ID,
                note="any_writable output; the child's value is made clean and old, and write "
                "is merged on purpose",
            ),
            Rule("6.17", flags="FPB_MERGE_WRITE"),
        ),
    ),
    Caller(
        "fork-shared-softdirty",
        Walk.SCAN,
        "mm/memory.c: copy_present_ptes",
        "fork of a shared mapping with soft-dirty tracking on",
        (
            Rule("6.9", flags="FPB_IGNORE_DIRTY", note="any_writable output"),
            Rule("6.17", flags="FPB_RESPECT_SOFT_DIRTY|FPB_MERGE_WRITE"),
        ),
    ),
    Caller(
        "lazyfree",
        Walk.UNMAP,
        "mm/rmap.c: try_to_unmap_one (folio_unmap_pte_batch)",
        "reclaim of a lazyfree (MADV_FREE) folio; restores the PTEs if it was redirtied",
        (
            Rule(
                "6.15",
                flags=_G1_ID,
                unmap=UnmapMode.ALL_OR_NOTHING,
                spread=("write", "soft_dirty"),
                note="mm: support batched unmap for lazyfree large folios during reclamation; "
                "no table clamp (CVE-2025-38447); the restore path stamps the first PTE",
            ),
            Rule(
                "6.15.7",
                flags=_G1_ID,
                unmap=UnmapMode.CLAMPED,
                spread=("write", "soft_dirty"),
                note="mm/rmap: fix potential out-of-bounds page table access during batched unmap",
            ),
            Rule(
                "6.17",
                flags="",
                unmap=UnmapMode.CLAMPED,
                spread=("write", "soft_dirty"),
                note="folio_pte_batch without flags: write, dirty and soft-dirty ignored",
            ),
            Rule(
                "7.0",
                flags="FPB_RESPECT_WRITE|FPB_RESPECT_SOFT_DIRTY",
                unmap=UnmapMode.CLAMPED,
                file_folios=True,
                skip_uffd_wp_vmas=True,
                note="restore fix (29f40594a281, also queued for 6.19.y stable; the point "
                "release is not a row): respect write and soft-dirty; file folios "
                "batch too (mm: rmap: support batched unmapping for file large folios), "
                "but not in uffd-wp VMAs",
            ),
        ),
    ),
    Caller(
        "mprotect",
        Walk.SCAN,
        "mm/mprotect.c: change_pte_range (mprotect_folio_pte_batch)",
        "mprotect: the modify path writes the new protection back batch by batch",
        (
            Rule(
                "6.17",
                flags="FPB_RESPECT_SOFT_DIRTY|FPB_RESPECT_WRITE",
                note="mm: optimize mprotect() by PTE batching (cac1db8c3aad); young and dirty "
                "are ORed by modify_prot_start_ptes, the write upgrade is decided page by "
                "page (PageAnonExclusive, not modelled)",
            ),
        ),
    ),
    Caller(
        "mprotect-numa",
        Walk.SCAN,
        "mm/mprotect.c: change_pte_range (prot_numa path)",
        "NUMA hinting (change_prot_numa), as if every folio were skipped",
        (
            Rule(
                "6.17",
                flags="",
                note="the skip path batches with flags 0 and writes nothing; "
                "folios it does not skip take the mprotect preset's "
                "modify path (which folios are skipped depends on "
                "node placement, not modelled)",
            ),
        ),
    ),
    Caller(
        "mremap",
        Walk.SCAN,
        "mm/mremap.c: move_ptes (mremap_folio_pte_batch)",
        "mremap: moves batches to the destination, stamping the first PTE",
        (
            Rule(
                "6.17",
                flags="",
                need_hint=True,
                dst_clamp=True,
                spread=("write",),
                note="mm: optimize mremap() by PTE batching (f822a9a81a31), only when "
                "pte_batch_hint > 1 (0b5be138ce00); write ignored.  Dirty and young are "
                "ORed and soft-dirty is set on every moved entry, so only write spreads",
            ),
            Rule(
                "6.18",
                flags="FPB_RESPECT_WRITE",
                need_hint=True,
                dst_clamp=True,
                note="mm/mremap: honour writable bit in mremap pte batching (04d1c9d60c6e; "
                "also in 6.17.y stable)",
            ),
        ),
        moves_tables=True,
    ),
    Caller(
        "madvise-free",
        Walk.SCAN,
        "mm/madvise.c: madvise_free_pte_range",
        "MADV_FREE: marks the batch old and clean",
        (
            Rule(
                "6.10",
                flags=_G1_ID,
                note="mm/madvise: optimize lazyfreeing with mTHP in "
                "madvise_free; any_young/any_dirty outputs; a batch "
                "short of the whole folio makes it try to split",
            ),
            Rule("6.17", flags="FPB_MERGE_YOUNG_DIRTY"),
        ),
    ),
    Caller(
        "madvise-cold",
        Walk.SCAN,
        "mm/madvise.c: madvise_cold_or_pageout_pte_range",
        "MADV_COLD: marks the batch old and deactivates the folio",
        (
            Rule(
                "6.10",
                flags=_G1_ID,
                note="mm: madvise: avoid split during MADV_PAGEOUT and MADV_COLD; any_young output",
            ),
            Rule("6.17", flags="FPB_MERGE_YOUNG_DIRTY"),
        ),
    ),
    Caller(
        "madvise-pageout",
        Walk.SCAN,
        "mm/madvise.c: madvise_cold_or_pageout_pte_range",
        "MADV_PAGEOUT: as cold, then reclaims the folio",
        (
            Rule("6.10", flags=_G1_ID, note="as madvise-cold"),
            Rule("6.17", flags="FPB_MERGE_YOUNG_DIRTY"),
        ),
    ),
    Caller(
        "mempolicy",
        Walk.SCAN,
        "mm/mempolicy.c: queue_folios_pte_range",
        "mbind / migrate_pages: queue the folios of a range, a batch at a time",
        (
            Rule(
                "6.16",
                flags=_G1_ID,
                note="4a34c584d8cd, 'mempolicy: optimize queue_folios_pte_range by PTE "
                "batching' (mainline; first released in 6.16)",
            ),
            Rule("6.17", flags=""),
        ),
    ),
    Caller(
        "mlock",
        Walk.SCAN,
        "mm/mlock.c: mlock_pte_range (folio_mlock_step)",
        "mlock / munlock of a range",
        (
            Rule(
                "6.11",
                flags=_G1_ID,
                note="'mm/mlock: implement folio_mlock_step() using folio_pte_batch()' "
                "(June 2024 series, merged for 6.11; id not verified); before, it counted "
                "entries without comparing bits",
            ),
            Rule("6.17", flags=""),
        ),
    ),
)

CALLERS: dict[str, Caller] = {c.name: c for c in _LIST}
DEFAULT = {Walk.SCAN: "zap", Walk.UNMAP: "lazyfree"}


def get_caller(caller, field: str = "caller") -> Caller:
    """The :class:`Caller` named ``caller`` (case and spaces ignored), or ``caller``
    itself; errors name ``field``."""
    if isinstance(caller, Caller):
        return caller
    if not isinstance(caller, str):
        raise TypeError(f"{field}: expected a caller name, got {type(caller).__name__}")
    key = caller.strip().lower()
    if key not in CALLERS:
        raise ValueError(f"{field}: unknown caller {caller!r} (known: {', '.join(CALLERS)})")
    return CALLERS[key]


def resolve_caller(caller, kernel, *, walk: Walk | str | None = None) -> Preset:
    """Turn ``caller`` and ``kernel`` into a :class:`Preset`.

    Parameters
    ----------
    caller : str, Caller or Preset
        A name from :data:`CALLERS`; ``None`` picks the default of ``walk``
        (zap for scan, lazyfree for unmap).
    kernel : str or KernelProfile
        As :func:`ptebatch.resolve_kernel`.
    walk : Walk or {"scan", "unmap"}, optional
        The function asking: a caller of the other kind is refused.

    Raises
    ------
    ValueError
        Unknown caller, or one that the asking function does not model.
    """
    if isinstance(caller, Preset):
        return caller
    if isinstance(walk, str):
        walk = Walk(walk)
    caller = get_caller(DEFAULT[Walk.SCAN if walk is None else walk] if caller is None else caller)
    if walk is not None and caller.walk != walk:
        kind, other = (
            ("reverse-map", "ptebatch.unmap")
            if caller.walk == Walk.UNMAP
            else ("page-table walk", "ptebatch.scan")
        )
        raise ValueError(f"caller: {caller.name!r} is a {kind} caller; run it with {other}")
    profile = resolve_kernel(kernel)
    rule = caller.rule(profile.version)
    flags = resolve_flags(rule.flags or 0, profile.generation, 0)  # a row's "": no flags
    return Preset(caller, profile, rule, flags)


def callers_table(kernel=None) -> list[dict]:
    """Every caller's rows (or, with ``kernel``, its preset in that release)."""
    out = []
    for c in CALLERS.values():
        if kernel is not None:
            out.append(resolve_caller(c, kernel).describe())
            continue
        for r in c.rules:
            out.append(resolve_caller(c, r.since).describe())
    return out
