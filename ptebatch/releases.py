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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
    """

    version: tuple[int, int, int]
    generation: Generation

    @property
    def name(self) -> str:
        major, minor, patch = self.version
        return f"{major}.{minor}" + (f".{patch}" if patch else "")


# (first release, generation); a release uses the last row whose first release is <= it.
# Stable backports (the XEN PV fix in 6.12.y/6.14.y) are not rows: select "gen1b" for those.
_RELEASES: tuple[tuple[tuple[int, int, int], Generation], ...] = (
    ((6, 9, 0), GEN1),
    ((6, 15, 0), GEN1B),
    ((6, 17, 0), GEN2),
)
FIRST_RELEASE = _RELEASES[0][0]


def parse_version(text: str) -> tuple[int, int, int]:
    """``"6.15.7"`` / ``"v6.16"`` to a tuple; raises ValueError naming the rule."""
    m = _VERSION_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"kernel: {text!r} is not a release version like '6.16' or '6.15.7' "
            "(release candidates are not modelled)"
        )
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def resolve_kernel(kernel) -> KernelProfile:
    """Turn a kernel selector into a :class:`KernelProfile`.

    Parameters
    ----------
    kernel : str or KernelProfile or Generation
        A release such as ``"6.14"``, ``"6.15.7"``, ``"v6.18"``; a generation
        by name (``"gen1"``, ``"gen1b"``, ``"gen2"``), which selects that
        generation's representative release (6.14, 6.16, 6.18); or a profile.

    Returns
    -------
    KernelProfile

    Raises
    ------
    ValueError
        Unknown or unsupported version string.
    """
    if isinstance(kernel, KernelProfile):
        return kernel
    if isinstance(kernel, Generation):
        kernel = kernel.representative
    if not isinstance(kernel, str):
        raise TypeError(
            f"kernel: expected a version string such as '6.16', got {type(kernel).__name__}"
        )
    text = kernel.strip()
    if text.lower().startswith("gen"):
        gen = GENERATIONS.get(text[3:].lower())
        if gen is None:
            raise ValueError(f"kernel: unknown generation {kernel!r} (known: gen1, gen1b, gen2)")
        text = gen.representative
    version = parse_version(text)
    if version < FIRST_RELEASE:
        raise ValueError(
            f"kernel: {kernel!r} predates the modelled folio_pte_batch "
            "(ptebatch models 6.9 and later)"
        )
    gen = [g for first, g in _RELEASES if first <= version][-1]
    return KernelProfile(version, gen)


def resolve_flags(flags, gen: Generation, default: int) -> int:
    """Turn a flags argument into an int in ``gen``'s vocabulary.

    ``None`` gives ``default``.  An int must use only the generation's bits.
    A string may hold names joined by ``|`` or ``,`` (the ``FPB_`` prefix and
    case are optional); a sequence holds names.  A name from the other
    generation's vocabulary is an error, since bit 0 means "ignore dirty" in
    generation 1 and "respect dirty" in generation 2.
    """
    if flags is None:
        return default
    allowed = 0
    for bit in gen.flags.values():
        allowed |= bit
    if isinstance(flags, bool):
        raise TypeError(
            "flags: expected an int, a string of flag names or a sequence of names, got bool"
        )
    if isinstance(flags, int):
        if flags < 0 or flags & ~allowed:
            raise ValueError(
                f"flags: {flags:#x} has bits outside generation {gen.name}'s flags ({_vocab(gen)})"
            )
        return flags
    if isinstance(flags, str):
        names: Iterable = [p for p in re.split(r"[|,\s]+", flags) if p and p != "0"]
    else:
        try:
            names = list(flags)
        except TypeError:
            raise TypeError(
                f"flags: expected an int, a string or a sequence of names, "
                f"got {type(flags).__name__}"
            ) from None
    out = 0
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"flags: flag names must be strings, got {name!r}")
        key = name.strip().upper()
        if not key.startswith("FPB_"):
            key = "FPB_" + key
        if key not in gen.flags:
            other = [g.name for g in GENERATIONS.values() if key in g.flags]
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
