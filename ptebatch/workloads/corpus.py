"""The regression corpus: real batching bugs as small layouts, buggy and fixed presets.

Each :class:`Bug` is one bug of docs/model.md section 7 on one architecture: a
layout builder (in :mod:`ptebatch.workloads.layouts`, also saved under ``data/``), the
caller, the releases that had the bug and those that fixed it, and the
detector that must trip under every buggy release and under no fixed one.
:data:`NOT_EXPRESSED` says why the other bugs are not here.  One registry
feeds ``tests/test_corpus.py``, ``data/make_data.py`` and ``ptebatch corpus``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..callers import CALLERS
from ..space import AddressSpace, load
from . import layouts

__all__ = ["Bug", "CORPUS", "NOT_EXPRESSED", "check", "check_all"]


@dataclass(frozen=True)
class Bug:
    """One real bug on one architecture.

    Attributes
    ----------
    number : int
        Its number in docs/model.md section 7.
    title : str
    arch : str
    file : str
        Snapshot name under ``data/``.
    build : callable
        Builds the layout (``build(arch=...)``).
    caller : str
        Preset name (:data:`ptebatch.callers.CALLERS`).
    detector : str
        The detector the bug trips (:data:`ptebatch.reasons.FINDINGS`).
    buggy, fixed : tuple of str
        Releases with and without the bug.
    fix : str
        The fixing commit's title.
    walk_args : dict
        Extra arguments of the walk (``move_by``...).
    """

    number: int
    title: str
    arch: str
    file: str
    build: Callable[[str], AddressSpace]
    caller: str
    detector: str
    buggy: tuple[str, ...]
    fixed: tuple[str, ...]
    fix: str
    walk_args: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"bug{self.number}-{self.arch}"

    def layout(self, data_dir: str | None = None) -> AddressSpace:
        """The layout, built in memory or loaded from ``data_dir``."""
        if data_dir is None:
            return self.build(arch=self.arch)
        return load(os.path.join(data_dir, self.file))


_OOB = (
    "table_overrun",
    "mm/rmap: fix potential out-of-bounds page table access during batched unmap (CVE-2025-38447)",
)
_RESTORE = (
    "spread",
    "mm/rmap: respect the write and soft-dirty bits when batching lazyfree unmap (7.0)",
)

CORPUS: tuple[Bug, ...] = (
    Bug(
        1,
        "lazyfree unmap reads past the page table",
        "x86_64",
        "thread.npz",
        layouts.thread_layout,
        "lazyfree",
        _OOB[0],
        ("6.15", "6.15.6"),
        ("6.15.7", "6.16", "6.17", "7.0"),
        _OOB[1],
    ),
    Bug(
        1,
        "lazyfree unmap reads past the page table",
        "arm64",
        "thread_arm64.npz",
        layouts.thread_layout,
        "lazyfree",
        _OOB[0],
        ("6.15", "6.15.6"),
        ("6.15.7", "6.16", "6.17", "7.0"),
        _OOB[1],
    ),
    Bug(
        4,
        "mremap makes read-only PTEs of a contpte folio writable",
        "arm64",
        "mremap_write_arm64.npz",
        layouts.mremap_write_layout,
        "mremap",
        "spread",
        ("6.17",),
        ("6.18", "7.0"),
        "mm/mremap: honour writable bit in mremap pte batching",
    ),
    Bug(
        5,
        "lazyfree unmap restore makes read-only PTEs writable",
        "x86_64",
        "lazyfree_restore.npz",
        layouts.lazyfree_restore_layout,
        "lazyfree",
        _RESTORE[0],
        ("6.15", "6.15.7", "6.16", "6.17", "6.18", "6.19"),
        ("7.0",),
        _RESTORE[1],
    ),
    Bug(
        5,
        "lazyfree unmap restore makes read-only PTEs writable",
        "arm64",
        "lazyfree_restore_arm64.npz",
        layouts.lazyfree_restore_layout,
        "lazyfree",
        _RESTORE[0],
        ("6.15", "6.15.7", "6.16", "6.17", "6.18", "6.19"),
        ("7.0",),
        _RESTORE[1],
    ),
)

# Bugs of docs/model.md section 7 the model cannot show, and why.
NOT_EXPRESSED: dict[int, str] = {
    2: "XEN PV folio-end overrun: needs XEN's PFN-to-machine-frame translation, under which "
    "advancing past the folio gave an empty PTE (PFN 0, below the folio end, so generation "
    "1's PFN check let it pass) that matched the empty entry 457. With a plain encoding the "
    "expected PTE stays present and entry 457 simply does not match (data/xen_pv.npz holds "
    "the layout only).",
    3: "mprotect (6.17-rc1 only, never in a release) read PageAnonExclusive from the folio's "
    "head page instead of the batch's first page: needs per-page exclusivity.",
    6: "a stale batch size reused for a later non-present (device-exclusive) entry of the same "
    "try_to_unmap_one walk: needs non-present swap-like entries.",
    7: "uffd-wp markers lost when a file folio was unmapped as a batch (mm-unstable during 7.0, "
    "never released): the batch was uniform in uffd-wp; the caller installed the marker for "
    "the first entry only. Needs the caller's marker installation. The released 7.0 rule, "
    "no batching in a uffd-wp VMA, is modelled (vma_flags).",
    8: "swap_pte_batch joined swap entries charged to different memory cgroups: swap entries "
    "and swap-slot cgroups are not modelled.",
}


def _run(bug: Bug, space: AddressSpace, kernel: str, impl):
    walk = CALLERS[bug.caller].walk
    fn = getattr(impl, str(walk))
    return fn(space, caller=bug.caller, kernel=kernel, **bug.walk_args)


def check(bug: Bug, *, data_dir: str | None = None, impl=None) -> dict:
    """Run a bug's layout under its buggy and fixed releases.

    Returns a dict with the per-release detector counts (``buggy`` and
    ``fixed``: release -> batches flagged) and ``ok``: every buggy release
    trips the detector and no fixed one does.
    """
    if impl is None:
        from .. import engine as impl
    space = bug.layout(data_dir)
    buggy = {k: _run(bug, space, k, impl).finding_counts[bug.detector] for k in bug.buggy}
    fixed = {k: _run(bug, space, k, impl).finding_counts[bug.detector] for k in bug.fixed}
    ok = all(v > 0 for v in buggy.values()) and not any(fixed.values())
    return {
        "bug": bug.number,
        "name": bug.name,
        "title": bug.title,
        "arch": bug.arch,
        "caller": bug.caller,
        "detector": bug.detector,
        "buggy": buggy,
        "fixed": fixed,
        "fix": bug.fix,
        "ok": ok,
    }


def check_all(*, data_dir: str | None = None, impl=None) -> list[dict]:
    """:func:`check` for every bug of :data:`CORPUS`."""
    return [check(b, data_dir=data_dir, impl=impl) for b in CORPUS]
