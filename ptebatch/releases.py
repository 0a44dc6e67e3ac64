"""Kernel generations and releases, as data.

``folio_pte_batch`` changed twice (docs/model.md section 3):

* generation 1 (6.9-6.14): ``FPB_IGNORE_*`` flags, write and accessed always
  ignored, the loop stops on a matching PTE whose PFN is past the folio end;
  outputs ``any_writable``/``any_young``/``any_dirty``.
* generation 1b (6.15-6.16, the XEN PV fix): as 1, but ``max_nr`` is first cut to
  the pages left in the folio and the in-loop PFN check is gone.
* generation 2 (6.17+): ``FPB_RESPECT_*`` / ``FPB_MERGE_*`` flags; accessed is
  always ignored, dirty, soft-dirty and write unless respected, every other bit
  must match; the merged PTE is returned.

What each caller passes in each release is in :mod:`ptebatch.callers`.
Everything below is tables; code elsewhere reads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .arch import U64, Arch

__all__ = [
    "Generation",
    "KernelProfile",
    "GENERATIONS",
    "resolve_kernel",
    "resolve_flags",
    "parse_version",
    "Normaliser",
    "normaliser",
]


@dataclass(frozen=True)
class Generation:
    """One generation of ``folio_pte_batch``.

    Attributes
    ----------
    name : str
        ``"1"``, ``"1b"`` or ``"2"``.
    kernels : str
        Releases that carry it.
    flags : Mapping[str, int]
        The flag vocabulary: name to bit.
    ignore : tuple of (property, rule, flag)
        In application order.  ``rule`` is ``"always"``, ``"if"`` (ignored
        when ``flag`` is set) or ``"unless"`` (ignored unless ``flag`` is set).
        Properties name :class:`~ptebatch.arch.Arch` operations: ``dirty`` is
        ``pte_mkclean``, ``soft_dirty`` is ``pte_clear_soft_dirty``, ``write``
        is ``pte_wrprotect``, ``young`` is ``pte_mkold``.
    cut_at_folio_end : bool
        ``max_nr`` is cut to the pages left in the folio before the loop.
    pfn_check_in_loop : bool
        A matching PTE whose PFN is at or past the folio end stops the loop.
    outputs : str
        ``"any"`` (``any_writable``/``any_young``/``any_dirty``) or ``"merge"``
        (the first PTE, with ``FPB_MERGE_*`` applied).
    representative : str
        The release used when this generation is selected by name.
    max_nr_limit : int
        Largest ``max_nr`` the C type holds (``int`` in 1/1b, ``unsigned int`` in 2).
    """

    name: str
    kernels: str
    flags: Mapping[str, int]
    ignore: tuple[tuple[str, str, str | None], ...]
    cut_at_folio_end: bool
    pfn_check_in_loop: bool
    outputs: str
    representative: str
    max_nr_limit: int

    def describe_flags(self, flags: int) -> list[str]:
        """Names of the bits set in ``flags``, in bit order."""
        return [n for n, b in sorted(self.flags.items(), key=lambda kv: kv[1]) if flags & b]

    def ignored(self, flags: int) -> list[str]:
        """Properties cleared before comparing PTEs, in application order."""
        out = []
        for prop, rule, flag in self.ignore:
            on = bool(flag and flags & self.flags[flag])
            if rule == "always" or (rule == "if" and on) or (rule == "unless" and not on):
                out.append(prop)
        return out


_GEN1_FLAGS = {"FPB_IGNORE_DIRTY": 1 << 0, "FPB_IGNORE_SOFT_DIRTY": 1 << 1}
_GEN1_IGNORE = (
    ("dirty", "if", "FPB_IGNORE_DIRTY"),
    ("soft_dirty", "if", "FPB_IGNORE_SOFT_DIRTY"),
    ("young", "always", None),  # pte_wrprotect(pte_mkold(pte))
    ("write", "always", None),
)

GEN1 = Generation(
    "1",
    "6.9-6.14",
    _GEN1_FLAGS,
    _GEN1_IGNORE,
    cut_at_folio_end=False,
    pfn_check_in_loop=True,
    outputs="any",
    representative="6.14",
    max_nr_limit=2**31 - 1,
)
GEN1B = Generation(
    "1b",
    "6.15-6.16",
    _GEN1_FLAGS,
    _GEN1_IGNORE,
    cut_at_folio_end=True,
    pfn_check_in_loop=False,
    outputs="any",
    representative="6.16",
    max_nr_limit=2**31 - 1,
)
GEN2 = Generation(
    "2",
    "6.17+",
    {
        "FPB_RESPECT_DIRTY": 1 << 0,
        "FPB_RESPECT_SOFT_DIRTY": 1 << 1,
        "FPB_RESPECT_WRITE": 1 << 2,
        "FPB_MERGE_WRITE": 1 << 3,
        "FPB_MERGE_YOUNG_DIRTY": 1 << 4,
    },
    (
        ("dirty", "unless", "FPB_RESPECT_DIRTY"),
        ("soft_dirty", "unless", "FPB_RESPECT_SOFT_DIRTY"),
        ("write", "unless", "FPB_RESPECT_WRITE"),
        ("young", "always", None),
    ),
    cut_at_folio_end=True,
    pfn_check_in_loop=False,
    outputs="merge",
    representative="6.18",
    max_nr_limit=2**32 - 1,
)

GENERATIONS: dict[str, Generation] = {"1": GEN1, "1b": GEN1B, "2": GEN2}

_PROP_OP = {
    "dirty": "mkclean",
    "soft_dirty": "clear_soft_dirty",
    "write": "wrprotect",
    "young": "mkold",
}


@dataclass(frozen=True)
class KernelProfile:
    """One kernel release: its version and its ``folio_pte_batch`` generation.

    What each caller passes in that release is in :mod:`ptebatch.callers`.

    Attributes
    ----------
    version : tuple[int, int, int]
    generation : Generation
    beyond : bool
        A release newer than the newest modelled one, taken as the newest
        generation because the selector said so (``"gen2:7.1"``).
    """

    version: tuple[int, int, int]
    generation: Generation
    beyond: bool = False

    @property
    def name(self) -> str:
        """The selector that gives this profile back (``"6.15.7"``, ``"gen2:7.1"``)."""
        major, minor, patch = self.version
        release = f"{major}.{minor}" + (f".{patch}" if patch else "")
        return f"gen{self.generation.name}:{release}" if self.beyond else release


# (first release, generation); a release uses the last row whose first release is <= it.
# Stable backports (the XEN PV fix in 6.12.y/6.14.y) are not rows: select "gen1b" for those.
_RELEASES: tuple[tuple[tuple[int, int, int], Generation], ...] = (
    ((6, 9, 0), GEN1),
    ((6, 15, 0), GEN1B),
    ((6, 17, 0), GEN2),
)
FIRST_RELEASE = _RELEASES[0][0]

# The mainline releases the model covers, oldest first (6.19 was followed by 7.0).
SERIES: tuple[tuple[int, int], ...] = tuple((6, m) for m in range(9, 20)) + ((7, 0),)
NEWEST = SERIES[-1]
# The last stable point release of each series whose stable branch has ended, from the stable
# maintainers' end-of-life announcements (docs/model.md section 3).  A series not listed here
# was still maintained when the table was written: any point release of it is accepted.
LAST_POINT_RELEASE: dict[tuple[int, int], int] = {
    (6, 9): 12,
    (6, 10): 14,
    (6, 11): 11,
    (6, 13): 12,
    (6, 14): 11,
    (6, 15): 11,
    (6, 16): 12,
}
GENERATION_SELECTORS = tuple("gen" + g for g in GENERATIONS)

# No sign, no spaces, no leading zeros, no "v" prefix: a version as kernel.org writes it.
_NUMBER = r"(0|[1-9][0-9]*)"
_VERSION_RE = re.compile(rf"{_NUMBER}\.{_NUMBER}(?:\.{_NUMBER})?")


def _series_list() -> str:
    return f"{SERIES[0][0]}.{SERIES[0][1]} to {NEWEST[0]}.{NEWEST[1]}"


_GRAMMAR = (
    "a modelled release MAJOR.MINOR ({series}), a stable point release MAJOR.MINOR.PATCH of "
    "one, a generation ({gens}), or GEN:RELEASE for a release newer than {newest} (e.g. "
    "gen2:7.1)"
)


def _rule() -> str:
    return _GRAMMAR.format(
        series=_series_list(),
        gens=", ".join(GENERATION_SELECTORS),
        newest=f"{NEWEST[0]}.{NEWEST[1]}",
    )


def parse_version(text: str) -> tuple[int, int, int]:
    """``"6.15.7"`` to ``(6, 15, 7)``: the grammar only (see :func:`resolve_kernel` for what
    a selector may name); raises ValueError naming the rule."""
    m = _VERSION_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"kernel: {text!r} is not a release version like '6.16' or '6.15.7'"
            f"{_hint(text)}: digits and dots only, with no 'v', spaces or leading zeros; "
            f"expected {_rule()}"
        )
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _hint(text) -> str:
    if not isinstance(text, str):
        return ""
    if text[:1] in ("v", "V") and _VERSION_RE.fullmatch(text[1:]):
        return f" (write {text[1:]!r}, without the 'v')"
    if text.strip() != text and _VERSION_RE.fullmatch(text.strip()):
        return f" (write {text.strip()!r}, without spaces)"
    if "-rc" in text:
        return " (release candidates are not modelled)"
    return ""


def _check_release(kernel: str, version: tuple[int, int, int]) -> None:
    """A version the model can name: a modelled series and a point release it had."""
    series, patch = version[:2], version[2]
    if version < FIRST_RELEASE:
        raise ValueError(
            f"kernel: {kernel!r} predates the modelled folio_pte_batch "
            f"(ptebatch models {_series_list()})"
        )
    if series > NEWEST:
        raise ValueError(
            f"kernel: {kernel!r} is newer than the newest modelled release "
            f"({NEWEST[0]}.{NEWEST[1]}); to take it as generation {_RELEASES[-1][1].name} with "
            f"{NEWEST[0]}.{NEWEST[1]}'s callers, say so: "
            f"'gen{_RELEASES[-1][1].name}:{kernel}'"
        )
    if series not in SERIES:
        raise ValueError(
            f"kernel: {kernel!r} is not a mainline release; the model knows "
            + ", ".join(f"{a}.{b}" for a, b in SERIES)
        )
    last = LAST_POINT_RELEASE.get(series)
    if last is not None and patch > last:
        raise ValueError(
            f"kernel: {kernel!r} was never released: the {series[0]}.{series[1]}.y stable "
            f"series ended at {series[0]}.{series[1]}.{last}"
        )


def resolve_kernel(kernel) -> KernelProfile:
    """Turn a kernel selector into a :class:`KernelProfile`.

    Parameters
    ----------
    kernel : str or KernelProfile or Generation
        One of (docs/model.md section 3):

        * a modelled release, ``"6.9"`` to ``"7.0"``;
        * a stable point release of one, ``"6.15.7"`` (up to the last
          release of a series that has ended, :data:`LAST_POINT_RELEASE`);
        * a generation, ``"gen1"``, ``"gen1b"`` or ``"gen2"``, which selects
          that generation's representative release (6.14, 6.16, 6.18);
        * ``"gen2:RELEASE"`` for a release newer than the newest modelled one
          (``"gen2:7.1"``): the caller asserts that it still has generation 2,
          and the newest release's caller rows apply;
        * a profile, returned as is.

        Exact text: no ``v`` prefix, spaces, leading zeros or other case.

    Returns
    -------
    KernelProfile

    Raises
    ------
    ValueError
        The selector breaks the grammar or names no release the model covers;
        the message states the rule.
    TypeError
        ``kernel`` is not a string, profile or generation.
    """
    if isinstance(kernel, KernelProfile):
        return kernel
    if isinstance(kernel, Generation):
        kernel = "gen" + kernel.name
    if not isinstance(kernel, str):
        raise TypeError(
            f"kernel: expected a selector string such as '6.16' or 'gen2', "
            f"got {type(kernel).__name__}"
        )
    if kernel.startswith("gen"):
        return _resolve_generation(kernel)
    version = parse_version(kernel)
    _check_release(kernel, version)
    gen = [g for first, g in _RELEASES if first <= version][-1]
    return KernelProfile(version, gen)


def _resolve_generation(kernel: str) -> KernelProfile:
    """``genN`` or ``genN:RELEASE``."""
    head, sep, release = kernel.partition(":")
    gen = GENERATIONS.get(head[3:])
    if gen is None:
        raise ValueError(
            f"kernel: unknown generation {head!r} in {kernel!r} "
            f"(known: {', '.join(GENERATION_SELECTORS)}); expected {_rule()}"
        )
    if not sep:
        return resolve_kernel(gen.representative)
    version = parse_version(release)
    newest_gen = _RELEASES[-1][1]
    if version[:2] <= NEWEST:
        profile = resolve_kernel(release)
        if profile.generation is not gen:
            raise ValueError(
                f"kernel: {kernel!r} contradicts the model: {release} has generation "
                f"{profile.generation.name}"
            )
        return profile
    if gen is not newest_gen:
        raise ValueError(
            f"kernel: {kernel!r}: a release newer than {NEWEST[0]}.{NEWEST[1]} can only be "
            f"taken as the newest generation, gen{newest_gen.name}"
        )
    return KernelProfile(version, gen, beyond=True)


def resolve_flags(flags, gen: Generation, default: int) -> int:
    """Turn a flags argument into an int in ``gen``'s vocabulary.

    ``None`` gives ``default``.  An int must use only the generation's bits.
    A string holds one or more names joined by ``|`` or ``,`` (spaces around a
    name are allowed), or is ``"0"`` for no flags; a list or tuple holds names.
    A name is written in capitals as the kernel spells it, with or without the
    ``FPB_`` prefix.  A name from the other generation's vocabulary is an error,
    since bit 0 means "ignore dirty" in generation 1 and "respect dirty" in
    generation 2.  An empty string, an empty name (``"|"``), lower case and
    other types (a dict, a set) are refused.
    """
    if flags is None:
        return default
    allowed = 0
    for bit in gen.flags.values():
        allowed |= bit
    if isinstance(flags, (bool, np.bool_)):
        raise TypeError(
            "flags: expected an int, a string of flag names or a list of names, got bool"
        )
    if isinstance(flags, (int, np.integer)):
        flags = int(flags)
        if flags < 0 or flags & ~allowed:
            raise ValueError(
                f"flags: {flags:#x} has bits outside generation {gen.name}'s flags ({_vocab(gen)})"
            )
        return flags
    if isinstance(flags, str):
        if flags.strip() == "0":
            return 0
        names = [p.strip() for p in re.split(r"[|,]", flags)]
        if not flags.strip() or "" in names:
            raise ValueError(
                f"flags: {flags!r} has an empty flag name; give names joined by '|' "
                f"(generation {gen.name}: {_vocab(gen)}), or 0 for none"
            )
    elif isinstance(flags, (list, tuple)):
        names = list(flags)
    else:
        raise TypeError(
            f"flags: expected an int, a string of flag names or a list of names, "
            f"got {type(flags).__name__}"
        )
    out = 0
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"flags: flag names must be strings, got {name!r}")
        key = name.strip()
        if not key.startswith("FPB_"):
            key = "FPB_" + key
        upper = name.strip().upper()
        upper = upper if upper.startswith("FPB_") else "FPB_" + upper
        if key not in gen.flags and upper in gen.flags:
            raise ValueError(
                f"flags: {name!r} must be written in capitals as the kernel spells it "
                f"({upper!r}); generation {gen.name}'s flags are {_vocab(gen)}"
            )
        if key not in gen.flags:
            other = [g.name for g in GENERATIONS.values() if upper in g.flags]
            hint = f" (it belongs to generation {'/'.join(other)})" if other else ""
            raise ValueError(
                f"flags: {name!r} is not a flag of generation {gen.name} "
                f"({gen.kernels}){hint}; its flags are {_vocab(gen)}"
            )
        out |= gen.flags[key]
    return out


def _vocab(gen: Generation) -> str:
    return ", ".join(gen.flags)


@dataclass(frozen=True)
class Normaliser:
    """``__pte_batch_clear_ignored`` compiled to masks.

    ``norm(pte)``: if ``pte & cond_set == cond_set`` and ``pte & cond_clear == 0``
    (and ``cond_set`` is not 0), OR in ``cond_or``; then ``(pte & keep) | set``.
    """

    cond_set: int
    cond_clear: int
    cond_or: int
    keep: int
    set: int


def normaliser(arch: Arch, gen: Generation, flags: int) -> Normaliser:
    """Compile the generation's ignore rules for ``flags`` into a :class:`Normaliser`."""
    steps = [s for prop in gen.ignored(flags) for s in arch.ops[_PROP_OP[prop]]]
    cond = (0, 0, 0)
    keep, set_ = U64, 0
    for cs, cc, s, c in steps:
        if cs or cc:
            # A condition on bits an earlier step forced can be decided now.
            forced_set = set_
            forced_clear = ~keep & ~set_ & U64
            if (cs & forced_clear) or (cc & forced_set):
                continue  # never true
            cs &= ~forced_set
            cc &= ~forced_clear
            if cs or cc:
                # The one conditional step runs first.  A later one may be moved
                # there when no earlier step touches the bits it tests or sets
                # (arm64 gen 1: mkold, then wrprotect saving hardware dirty).
                touched = (~keep | set_) & U64
                if cond != (0, 0, 0) or touched & (cs | cc | s):
                    raise NotImplementedError(
                        f"{arch.name}: normalisation needs more than one leading conditional step"
                    )
                if not cs or c:
                    raise NotImplementedError(
                        f"{arch.name}: a conditional step must test set bits and only set bits"
                    )
                cond = (cs, cc, s)
                continue
        keep &= ~c & U64
        set_ = (set_ | s) & ~c & U64
    return Normaliser(cond[0], cond[1], cond[2], keep, set_)
