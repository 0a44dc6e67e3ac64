"""Seeded synthetic address spaces at scale (vectorised NumPy plus compiled loops).

How a space is laid out
-----------------------
* Folio orders are drawn from a size mix (0 = 4 KiB ... 9 = 2 MiB).
* Folios that stay where they were faulted are packed into 2 MiB tables in
  random order (largest first inside a table, so every offset is naturally
  aligned; folios of 512 KiB and more get tables of their own), the tables are
  put in random order, and sibling blocks inside each table are swapped at
  random so sizes mix inside tables.  That region is cut into VMAs of
  ``vma_tables`` tables with a 2 MiB gap between them; ``vma_split`` adds VMA
  boundaries through the middle of large folios (mprotect of part of a range).
* Moved folios (mremap) each get their own VMA in a second region, at any page
  offset; a fraction of the large ones straddles a 2 MiB boundary, as in the
  LKML thread's reproducer.
* Physical memory is laid out the same way from another random folio order (or follows
  the virtual order with ``shuffle_pfn=False``).
* The PTEs are written straight into the returned table array by a parallel
  kernel, so peak memory stays close to the size of the result.

Every random number comes from ``numpy.random.default_rng([seed, stream])``,
one stream per purpose, or from a stateless hash of (seed, folio, page): the
same seed gives the same bytes on any number of threads, and changing one knob
does not redraw the others.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

import numpy as np

from .._jit import compiled
from ..arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, Arch, get_arch
from ..progress import as_hook
from ..space import FOLIO_ANON, FOLIO_SWAPBACKED, VMA_UFFD_WP, AddressSpace

# The compiled loops, loaded on first use (importing Numba costs about 0.3 s).
G = compiled("generator")

__all__ = ["generate", "PRESETS", "PRESET_HELP", "parse_sizes", "RATE_KNOBS", "CONTPTE_HELP"]

# Folio size mixes: weight of each order (0 = 4 KiB ... 9 = 2 MiB).
PRESETS: dict[str, dict[int, float]] = {
    "4k": {0: 1.0},
    "mthp16": {2: 1.0},
    "mthp32": {3: 1.0},
    "mthp64": {4: 1.0},
    "thp": {9: 1.0},
    "mthp-mixed": {0: 0.5, 2: 0.15, 3: 0.15, 4: 0.2},
    "mixed": {0: 0.55, 2: 0.1, 3: 0.1, 4: 0.2, 9: 0.05},
    "all": {o: 1.0 for o in range(10)},
}
PRESET_HELP: dict[str, str] = {
    "4k": "4 KiB pages only (no large folios)",
    "mthp16": "16 KiB mTHP only (order 2)",
    "mthp32": "32 KiB mTHP only (order 3)",
    "mthp64": "64 KiB mTHP only (order 4; the thread's size)",
    "thp": "2 MiB PMD-sized THP only (order 9), mapped by PTEs",
    "mthp-mixed": "an mTHP system without PMD THP: 4 KiB, 16, 32 and 64 KiB",
    "mixed": "a mixed mTHP system: 4 KiB, 16/32/64 KiB mTHP and some 2 MiB THP",
    "all": "every order 0-9 equally likely",
}

# Rate knobs: name -> what it models (fractions from 0 to 1).
RATE_KNOBS: dict[str, str] = {
    "moved": "fraction of folios moved by mremap to their own VMA at a page offset",
    "straddle": "of the moved large folios, the fraction placed across a 2 MiB boundary",
    "partial": "fraction of large folios mapped only in part (starting or ending mid-folio)",
    "holes": "fraction of mapped entries left not present",
    "vma_split": "fraction of unmoved large folios cut by a VMA boundary (split VMA)",
    "lazyfree": "fraction of folios that are lazyfree (anon, not swap-backed)",
    "write": "fraction of folios mapped writable",
    "young": "fraction of entries with the accessed bit",
    "dirty": "fraction of entries with the dirty bit",
    "soft_dirty": "fraction of folios with soft-dirty set on their entries (unset: 0.2, "
    "or 0 on arm64, which has no soft-dirty bit)",
    "uffd_wp": "fraction of folios with uffd-wp set on their entries (their VMAs are marked "
    "uffd-wp registered)",
    "mixed_write": "of the writable large folios, the fraction whose entries from a random "
    "page on are read-only (real bug #5's layout)",
}

CONTPTE_HELP = (
    "fraction of eligible aligned 16-entry (64 KiB) blocks folded into contpte blocks, "
    "the CONT bit set on all 16 as arm64's contpte_try_fold does (arm64 only)"
)

_SOFT_DIRTY_DEFAULT = 0.2
_BASE_VA = 0x10000000000  # 1 TiB, as in the thread's reproducer
_BASE_PFN = 0x100000
_BASE_PAGE = _BASE_VA >> PAGE_SHIFT  # first page of the unmoved region
_FIRST_TABLE = _BASE_PAGE // PTRS_PER_PTE  # its table number (VA >> 21)
_MAX_GAP = 32  # pages between moved VMAs: 1 .. _MAX_GAP
_USER_TOP = 1 << 47  # x86-64 4-level user address space
# The most tables one VMA can have: more would not fit between the base and the top.
MAX_VMA_TABLES = (_USER_TOP - _BASE_VA) // (PTRS_PER_PTE << PAGE_SHIFT)
_THRESH_BITS = 21  # per-entry rates are resolved to 1 / 2**21
_FOLIO_BYTES = 96  # per-folio working arrays, bytes (estimate)


def _check_rate(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= float(value) <= 1.0
    ):
        raise ValueError(f"{name}: must be a fraction from 0 to 1, got {value!r}")
    return float(value)


def parse_sizes(sizes) -> dict[int, float]:
    """Turn a preset name, an ``"order:weight,..."`` string or a mapping into a mix.

    Parameters
    ----------
    sizes : str or mapping
        A name in :data:`PRESETS`, a string such as ``"0:0.5,4:0.5"`` (orders
        0-9, weights >= 0), or ``{order: weight}``.

    Returns
    -------
    dict
        ``{order: weight}`` with only positive weights.

    Raises
    ------
    ValueError
        Unknown preset, an order outside 0-9, a negative or non-finite weight,
        or no positive weight.
    """
    if isinstance(sizes, str):
        if sizes in PRESETS:
            return dict(PRESETS[sizes])
        if ":" not in sizes:
            raise ValueError(
                f"sizes: unknown preset {sizes!r} (known: {', '.join(PRESETS)}; "
                f"or give order:weight pairs such as 0:0.5,4:0.5)"
            )
        mix = {}
        for part in sizes.split(","):
            o, _, w = part.partition(":")
            try:
                mix[int(o)] = mix.get(int(o), 0.0) + float(w)
            except ValueError:
                raise ValueError(f"sizes: {part!r} is not order:weight (e.g. 4:0.5)") from None
    elif isinstance(sizes, Mapping):
        mix = dict(sizes)
    else:
        raise ValueError(f"sizes: expected a preset name or {{order: weight}}, got {sizes!r}")
    out = {}
    for o, w in mix.items():
        if isinstance(o, bool) or not isinstance(o, (int, np.integer)) or not 0 <= o <= 9:
            raise ValueError(f"sizes: orders must be integers 0 to 9 (4 KiB to 2 MiB), got {o!r}")
        if (
            isinstance(w, bool)
            or not isinstance(w, (int, float, np.integer, np.floating))
            or not math.isfinite(w)
            or w < 0
        ):
            raise ValueError(f"sizes: weights must be finite and >= 0, got {w!r} for order {o}")
        if w > 0:
            out[int(o)] = float(w)
    if not out:
        raise ValueError("sizes: at least one order needs a positive weight")
    return out


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _steps(steps) -> np.ndarray:
    """Masked steps of :class:`~ptebatch.arch.Arch` as a uint64 array [n, 4] for the kernels."""
    return np.array([[int(x) for x in st] for st in steps], dtype=np.uint64).reshape(-1, 4)


def _arch_rate(a: Arch, name: str, value, has_bit: bool, default: float, rule: str) -> float:
    """Resolve an architecture-dependent rate: ``None`` is ``default`` where the bit exists."""
    if value is None:
        return default if has_bit else 0.0
    rate = _check_rate(name, value)
    if rate and not has_bit:
        raise ValueError(f"{name}: {a.name} has no {rule}; give 0 or leave it unset")
    return rate


def _threshold(rate: float) -> np.uint64:
    return np.uint64(round(rate * (1 << _THRESH_BITS)))


def _bits(rng, n: int, p: float) -> np.ndarray:
    if p <= 0.0:
        return np.zeros(n, dtype=bool)
    if p >= 1.0:
        return np.ones(n, dtype=bool)
    return rng.random(n) < p


def _uniform_int(rng, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """One integer in [lo, hi] for each pair (hi >= lo), as uint64."""
    span = (hi - lo + np.uint64(1)).astype(np.int64)
    return lo + rng.integers(0, span).astype(np.uint64)


def _layout(rng, order: np.ndarray, shuffle_tables: bool = True) -> np.ndarray:
    """Page offset of each folio: packed into tables, tables in random order, sizes mixed."""
    tab, off, n_tab = G.pack_tables(order)
    if shuffle_tables:
        tab = rng.permutation(n_tab)[tab]
    off += tab.astype(np.uint64) << np.uint64(9)
    del tab
    return G.shuffle_within_tables(off, order, np.uint64(int(rng.integers(0, 1 << 63))))


def generate(
    n_folios: int,
    *,
    seed: int = 0,
    sizes: str | Mapping[int, float] = "mixed",
    moved: float = 0.05,
    straddle: float = 0.5,
    partial: float = 0.0,
    holes: float = 0.0,
    shuffle_pfn: bool = True,
    vma_tables: int = 32,
    vma_split: float = 0.0,
    lazyfree: float = 0.3,
    write: float = 0.9,
    young: float = 0.5,
    dirty: float = 0.3,
    soft_dirty: float | None = None,
    uffd_wp: float = 0.0,
    mixed_write: float = 0.0,
    arch: str = "x86_64",
    contpte: float | None = None,
    progress: Callable[[str], None] | None = None,
    shard_tables: int | None = None,
    out=None,
):
    """Make a seeded synthetic address space.

    Parameters
    ----------
    n_folios : int
        Folios to map, order-0 ones included (only large folios are listed in
        the snapshot's folio arrays).
    seed : int
        Same seed and knobs, same bytes (on any number of threads).
    sizes : str or mapping
        Folio size mix: a preset (``"4k"``, ``"mthp16"``, ``"mthp32"``,
        ``"mthp64"``, ``"thp"``, ``"mthp-mixed"``, ``"mixed"``, ``"all"``; see
        :data:`PRESET_HELP`), ``"order:weight,..."`` or ``{order: weight}``
        for orders 0 (4 KiB) to 9 (2 MiB).
    moved : float
        Fraction of folios moved by mremap to their own VMA at a page offset.
    straddle : float
        Of the moved large folios, the fraction placed across a 2 MiB
        boundary (the others stay inside one table).
    partial : float
        Fraction of large folios mapped only in part: a random number of pages
        (at least one) is missing at the start or, equally likely, at the end.
        A moved one's VMA covers just its mapped pages; an unmoved one keeps
        its VMA and has empty entries there.
    holes : float
        Fraction of mapped entries left not present (0).
    shuffle_pfn : bool
        Physical order unrelated to virtual order (True); otherwise the
        unmoved folios' PFNs follow their addresses, so a folio's virtual
        neighbour is often the physically next folio.
    vma_tables : int
        Page tables (2 MiB each) per VMA in the unmoved region; VMAs there are
        separated by a 2 MiB gap.
    vma_split : float
        Fraction of unmoved large folios cut by a VMA boundary at a random page
        inside them (two adjacent VMAs, as after mprotect of part of a range).
    lazyfree : float
        Fraction of folios that are lazyfree (anon, not swap-backed).
    write, uffd_wp : float
        Fraction of folios whose entries are writable / uffd-wp.
    soft_dirty : float or None
        Fraction of folios whose entries are soft-dirty.  ``None`` (default)
        means 0.2 on an architecture with a soft-dirty bit (x86-64) and 0
        without one (arm64, where a nonzero value is an error).
    young, dirty : float
        Fraction of entries with the accessed / dirty bit (hardware sets those
        page by page).  Dirty follows the architecture's ``make_dirty``: x86-64
        sets bit 6; arm64 clears read-only on a writable entry (hardware
        dirty) and sets the software dirty bit on a read-only one.
    mixed_write : float
        Of the writable large folios, the fraction whose entries from a random
        page on are read-only (real bug #5: 8 writable then 8 read-only).
        Those entries get the architecture's ``pte_wrprotect`` after their
        dirty bit, as for a page written and then write-protected: on arm64
        they have read-only set, write clear and any dirty state in the
        software dirty bit.
    arch : {"x86_64", "arm64"}
        PTE encoding.
    contpte : float or None
        Fraction of eligible blocks folded into contpte blocks (the contiguous
        bit set on all 16 entries), as arm64's ``contpte_try_fold`` and
        ``set_ptes`` do.  Eligible: entries 16j..16j+15 of one table (64 KiB
        aligned), all present and not special, mapping PFNs p..p+15 with p a
        multiple of 16 inside one listed folio of at least 16 pages, equal in
        every bit but the PFN, accessed and dirty (compared after
        ``pte_mkold(pte_mkclean())``), and inside one VMA.  Each entry keeps
        its own accessed and dirty bits (hardware updates them per entry after
        the fold).  ``None`` (default) means 1 on an architecture with a
        contiguous bit (arm64) and 0 otherwise (x86-64, where a nonzero value
        is an error).  The blocks are chosen by a hash of their address from
        a random stream of their own, so this knob changes no other bytes.
    progress : callable, optional
        ``progress(task, done, total, note)`` as the steps proceed (see
        :mod:`ptebatch.progress`); a one-argument callable gets the step name.
    shard_tables, out : int and path, optional
        Together: write a sharded space (:mod:`ptebatch.shards`) to the directory ``out``
        without holding it in memory.  The space is made as independent blocks of
        about ``shard_tables`` tables (block ``k`` seeded from ``(seed, k)``, the same
        knobs), each moved to its own VA range (2 MiB aligned, after the previous block's
        and a 2 MiB gap) and PFN range (after the previous block's, aligned to 512 pages),
        keeping every other PTE bit; each block is written as a shard once the next one
        is made (its first table is the block's halo).  So every block boundary is an
        allowed cut.  This is a different space from ``generate(n_folios, seed=seed)``:
        the same seed and knobs give the same sharded space, and walking it gives the
        same results as walking its :func:`ptebatch.shards.unshard`.

    Returns
    -------
    AddressSpace, or ShardedSpace with ``out``

    Raises
    ------
    ValueError
        A knob is out of range (the message names it and the rule), a knob
        asks for a bit the architecture lacks (``soft_dirty`` on arm64,
        ``contpte`` on x86-64), the architecture is unknown, or the space
        would not fit in this machine's available memory or in the x86-64
        user address space.
    """
    if isinstance(n_folios, bool) or not isinstance(n_folios, (int, np.integer)) or n_folios < 1:
        raise ValueError(f"n_folios: must be a positive integer, got {n_folios!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {seed!r}")
    if (shard_tables is None) != (out is None):
        raise ValueError("shard_tables: give it together with out (the directory to write)")
    if shard_tables is not None:
        knobs = dict(
            sizes=sizes,
            moved=moved,
            straddle=straddle,
            partial=partial,
            holes=holes,
            shuffle_pfn=shuffle_pfn,
            vma_tables=vma_tables,
            vma_split=vma_split,
            lazyfree=lazyfree,
            write=write,
            young=young,
            dirty=dirty,
            soft_dirty=soft_dirty,
            uffd_wp=uffd_wp,
            mixed_write=mixed_write,
            arch=arch,
            contpte=contpte,
        )
        return _generate_sharded(int(n_folios), int(seed), shard_tables, out, knobs, progress)
    rates = dict(
        moved=moved,
        straddle=straddle,
        partial=partial,
        holes=holes,
        vma_split=vma_split,
        lazyfree=lazyfree,
        write=write,
        young=young,
        dirty=dirty,
        uffd_wp=uffd_wp,
        mixed_write=mixed_write,
    )
    for name, v in rates.items():
        rates[name] = _check_rate(name, v)
    if (
        isinstance(vma_tables, bool)
        or not isinstance(vma_tables, (int, np.integer))
        or not 1 <= vma_tables <= MAX_VMA_TABLES
    ):
        raise ValueError(
            f"vma_tables: must be an integer from 1 to {MAX_VMA_TABLES:,} (a VMA of that many "
            f"2 MiB tables fills the 128 TiB user address space), got {vma_tables!r}"
        )
    mix = parse_sizes(sizes)
    a = get_arch(arch)
    rates["soft_dirty"] = _arch_rate(
        a, "soft_dirty", soft_dirty, bool(a.soft_dirty), _SOFT_DIRTY_DEFAULT, "soft-dirty PTE bit"
    )
    rates["contpte"] = _arch_rate(
        a, "contpte", contpte, bool(a.cont), 1.0, "contiguous (CONT) PTE bit, so no contpte blocks"
    )
    n = int(n_folios)
    hook = as_hook(progress)

    def say(stage: str) -> None:
        hook("generate", _STAGES.index(stage), len(_STAGES), stage)

    orders_k = np.array(sorted(mix), dtype=np.int64)
    p = np.array([mix[o] for o in orders_k], dtype=np.float64)
    p /= p.max()  # first, so that weights near the float maximum do not sum to inf
    p /= p.sum()
    mean_nr = float(np.sum(p * (2.0**orders_k)))
    need = n * (mean_nr * 8 * (1 + 1 / vma_tables) + _FOLIO_BYTES)
    avail = _available_bytes()
    if need > avail:
        raise ValueError(
            f"n_folios: {n:,} folios of this size mix need about "
            f"{need / 2**30:,.1f} GiB, more than the {avail / 2**30:,.1f} GiB "
            f"available"
        )
    if n * mean_nr * PAGE_SIZE * 2.2 > _USER_TOP - _BASE_VA:
        raise ValueError(
            f"n_folios: {n:,} folios of this size mix do not fit the 128 TiB user address space"
        )

    with np.errstate(over="ignore"):  # the hash wraps on purpose (plain Python without the JIT)
        space = _build(n, seed, orders_k, p, rates, bool(shuffle_pfn), int(vma_tables), a, say)
    hook("generate", len(_STAGES), len(_STAGES), "done")
    return space


# the steps of _build, in order (the progress bar counts them)
_STAGES = (
    "orders",
    "virtual layout",
    "physical layout",
    "tables",
    "bits",
    "ptes",
    "vmas",
    "folios",
    "contpte",
    "vma flags",
)


def _build(n, seed, orders_k, p, r, shuffle_pfn, vma_tables, a, say) -> AddressSpace:
    """Lay out and encode the space; each step draws from its own numbered stream."""
    say("orders")
    order = _draw_orders(_stream(seed, 0), orders_k, p, n)
    nr = np.uint64(1) << order.astype(np.uint64)
    large = order > 0

    # Which folios move, which are mapped in part, and how.
    is_moved = _bits(_stream(seed, 1), n, r["moved"])
    lo, hi = _draw_partial_maps(_stream(seed, 2), nr, large, r["partial"])

    say("virtual layout")
    stay = np.flatnonzero(~is_moved)
    vbase = np.empty(n, dtype=np.uint64)
    main_start, main_end, main_top = _lay_out_unmoved(
        _stream(seed, 3), vbase, stay, order, nr, vma_tables
    )
    split_at = _draw_vma_splits(_stream(seed, 4), vbase, stay, nr, large, r["vma_split"])
    mv = np.flatnonzero(is_moved)
    m_start, m, top = _lay_out_moved(_stream(seed, 5), vbase, mv, lo, hi, main_top, r["straddle"])

    say("physical layout")
    if shuffle_pfn:
        pfn = _shuffled_pfns(_stream(seed, 6), order)
    else:
        pfn = _pfns_following_vas(_stream(seed, 6), order, vbase, stay, mv, main_top)
    if int(pfn.max()) + PTRS_PER_PTE > a.max_pfn:
        raise ValueError(f"n_folios: the folios do not fit the {a.name} PFN field")

    say("tables")
    rank, table_va = _used_tables(vbase, stay, m_start, m, top)

    # Per-folio bits, then one pass that writes every PTE.
    say("bits")
    fbits, f_write = _folio_pte_bits(seed, n, r, a)
    wp_from = _draw_write_protect_from(_stream(seed, 10), nr, large, f_write, r["mixed_write"])
    del f_write
    flags = _draw_folio_flags(_stream(seed, 11), n, r["lazyfree"])
    key = np.uint64(int(_stream(seed, 12).integers(0, 1 << 63)))

    say("ptes")
    ptes = _fill_ptes(table_va, rank, vbase, pfn, lo, hi, wp_from, fbits, key, r, a)
    del rank, fbits, wp_from

    say("vmas")
    vma_start, vma_end = _make_vmas(main_start, main_end, split_at, m_start, m)

    say("folios")
    big = np.flatnonzero(large)
    o = np.argsort(pfn[big])
    big = big[o]
    folio_pfn, folio_nr = pfn[big], nr[big]

    if r["contpte"] > 0.0:
        say("contpte")
        _fold_contpte(
            _stream(seed, 13),
            ptes,
            table_va,
            vma_start,
            vma_end,
            folio_pfn,
            folio_nr,
            r["contpte"],
            a,
        )
    vma_flags = None
    if r["uffd_wp"] > 0.0:
        say("vma flags")
        vma_flags = _uffd_wp_vma_flags(ptes, table_va, vma_start, vma_end, a)
    return AddressSpace(
        ptes,
        table_va,
        vma_start,
        vma_end,
        folio_pfn,
        folio_nr,
        flags[big],
        arch=a.name,
        vma_flags=vma_flags,
    )


def _stream(seed: int, i: int) -> np.random.Generator:
    """Random stream ``i`` of ``seed``.

    One stream per purpose: changing one knob leaves the other draws alone, so a sweep
    compares like with like (moved=0.1 moves a subset of the folios moved=0.2 moves).
    """
    return np.random.default_rng([seed, i])


def _draw_orders(rng, orders_k: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    """Each folio's order (uint8), drawn from the size mix ``p`` over ``orders_k``."""
    return orders_k.astype(np.uint8)[rng.choice(orders_k.size, size=n, p=p)]


def _draw_partial_maps(
    rng, nr: np.ndarray, large: np.ndarray, rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mapped page range [lo, hi) of each folio: a ``rate`` of large ones lose a head or tail."""
    n = nr.size
    lo = np.zeros(n, dtype=np.uint16)
    hi = nr.astype(np.uint16)
    part = np.flatnonzero(_bits(rng, n, rate) & large)
    if part.size:
        cut = _uniform_int(rng, np.ones(part.size, np.uint64), nr[part] - np.uint64(1)).astype(
            np.uint16
        )
        head = rng.random(part.size) < 0.5
        lo[part] = np.where(head, cut, 0)
        hi[part] = np.where(head, hi[part], cut)
    return lo, hi


def _lay_out_unmoved(
    rng, vbase: np.ndarray, stay: np.ndarray, order: np.ndarray, nr: np.ndarray, vma_tables: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pack unmoved folios into VMAs of ``vma_tables`` tables; sets ``vbase[stay]``.

    The folios are naturally aligned, packed into tables with sizes mixed inside
    tables, and each VMA is followed by a one-table gap.  Returns the VMAs' first
    and end pages and the page just past the region.
    """
    span = vma_tables * PTRS_PER_PTE
    stride = np.uint64(span + PTRS_PER_PTE)
    main_pages = 0
    if stay.size:
        off = _layout(rng, order[stay])
        main_pages = int(np.max(off + nr[stay]))
        vbase[stay] = (
            np.uint64(_BASE_PAGE) + (off // np.uint64(span)) * stride + off % np.uint64(span)
        )
        del off
    n_main_vmas = -(-main_pages // span)
    main_start = np.uint64(_BASE_PAGE) + np.arange(n_main_vmas, dtype=np.uint64) * stride
    main_end = main_start + np.uint64(span)
    if n_main_vmas:
        main_end[-1] = main_start[-1] + np.uint64(main_pages - (n_main_vmas - 1) * span)
    main_top = int(main_end[-1]) if n_main_vmas else _BASE_PAGE
    return main_start, main_end, main_top


def _draw_vma_splits(
    rng, vbase: np.ndarray, stay: np.ndarray, nr: np.ndarray, large: np.ndarray, rate: float
) -> np.ndarray:
    """Pages where a VMA boundary cuts an unmoved large folio (a ``rate`` of them)."""
    split = stay[_bits(rng, stay.size, rate) & large[stay]]
    return vbase[split] + _uniform_int(
        rng, np.ones(split.size, np.uint64), nr[split] - np.uint64(1)
    )


def _lay_out_moved(
    rng,
    vbase: np.ndarray,
    mv: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    main_top: int,
    straddle: float,
):
    """Give each moved folio its own VMA past the unmoved region; sets ``vbase[mv]``.

    The VMAs start after a 2 MiB gap, at any page offset, a ``straddle`` fraction
    of them across a 2 MiB boundary.  Returns each VMA's first page and length in
    pages, and the page just past the last one.
    """
    m = (hi[mv] - lo[mv]).astype(np.uint64)
    strad = _bits(rng, mv.size, straddle) & (m > np.uint64(1))
    gap = rng.integers(1, _MAX_GAP + 1, mv.size).astype(np.uint64)
    before = _uniform_int(
        rng, np.ones(mv.size, np.uint64), np.maximum(m, np.uint64(2)) - np.uint64(1)
    )
    spread = _uniform_int(
        rng,
        np.zeros(mv.size, np.uint64),
        np.minimum(np.uint64(PTRS_PER_PTE) - m, np.uint64(_MAX_GAP)),
    )
    moved_from = (main_top + 2 * PTRS_PER_PTE - 1) // PTRS_PER_PTE * PTRS_PER_PTE
    m_start, top = G.place_moved(m, strad, gap, before, spread, np.uint64(moved_from))
    del gap, before, spread
    vbase[mv] = m_start - lo[mv].astype(np.uint64)
    if int(top) << PAGE_SHIFT > _USER_TOP:
        raise ValueError("n_folios: the space does not fit the 128 TiB user address space")
    return m_start, m, top


def _shuffled_pfns(rng, order: np.ndarray) -> np.ndarray:
    """PFNs packed like the virtual layout but from a random folio order.

    A random order, so physical tables do not hold the virtual tables' folios.
    """
    n = order.size
    perm = rng.permutation(n)
    poff = np.empty(n, dtype=np.uint64)
    poff[perm] = _layout(rng, order[perm])
    del perm
    return np.uint64(_BASE_PFN) + poff


def _pfns_following_vas(
    rng, order: np.ndarray, vbase: np.ndarray, stay: np.ndarray, mv: np.ndarray, main_top: int
) -> np.ndarray:
    """PFNs in virtual order: unmoved folios mirror their addresses, moved ones follow."""
    pfn = np.empty(order.size, dtype=np.uint64)
    pfn[stay] = np.uint64(_BASE_PFN) + (vbase[stay] - np.uint64(_BASE_PAGE))
    moff = _layout(rng, order[mv], shuffle_tables=False)
    past = -(-(main_top - _BASE_PAGE) // PTRS_PER_PTE) * PTRS_PER_PTE + PTRS_PER_PTE
    pfn[mv] = np.uint64(_BASE_PFN + past) + moff
    return pfn


def _used_tables(
    vbase: np.ndarray, stay: np.ndarray, m_start: np.ndarray, m: np.ndarray, top
) -> tuple[np.ndarray, np.ndarray]:
    """Tables for every 2 MiB region holding a mapped page: each region's row, and their VAs.

    The row (rank) array is indexed by region number counted from ``_FIRST_TABLE``.
    """
    used = np.zeros(int(top) // PTRS_PER_PTE + 1 - _FIRST_TABLE, dtype=bool)
    t0 = (vbase[stay] >> np.uint64(9)).astype(np.int64) - _FIRST_TABLE
    used[t0] = True
    del t0
    used[(m_start >> np.uint64(9)).astype(np.int64) - _FIRST_TABLE] = True
    used[((m_start + m - np.uint64(1)) >> np.uint64(9)).astype(np.int64) - _FIRST_TABLE] = True
    rank = np.cumsum(used, dtype=np.int64) - 1
    table_va = (np.flatnonzero(used).astype(np.uint64) + np.uint64(_FIRST_TABLE)) << np.uint64(21)
    return rank, table_va


def _folio_pte_bits(seed: int, n: int, r: dict, a: Arch) -> tuple[np.ndarray, np.ndarray]:
    """Bits every PTE of a folio shares (present, write, soft-dirty, uffd-wp), and its write flag.

    Raises ValueError if a folio needs a bit the architecture lacks.
    """
    f_write = _bits(_stream(seed, 7), n, r["write"])
    fbits = np.full(n, np.uint64(a.base_bits | a.make_bits["present"]), dtype=np.uint64)
    for name, on in (
        ("write", f_write),
        ("soft_dirty", _bits(_stream(seed, 8), n, r["soft_dirty"])),
        ("uffd_wp", _bits(_stream(seed, 9), n, r["uffd_wp"])),
    ):
        if on.any():
            mask = a.make_bits.get(name, 0)
            if not mask:
                raise ValueError(f"{name}: {a.name} has no such PTE bit")
            fbits[on] |= np.uint64(mask)
    return fbits, f_write


def _draw_write_protect_from(
    rng, nr: np.ndarray, large: np.ndarray, f_write: np.ndarray, rate: float
) -> np.ndarray:
    """First read-only page of each folio: a random page in a ``rate`` of writable large ones.

    The other folios get their size (no page write-protected).
    """
    wp_from = nr.astype(np.uint16)
    mixw = np.flatnonzero(_bits(rng, nr.size, rate) & f_write & large)
    wp_from[mixw] = _uniform_int(rng, np.ones(mixw.size, np.uint64), nr[mixw] - np.uint64(1))
    return wp_from


def _draw_folio_flags(rng, n: int, lazyfree: float) -> np.ndarray:
    """Folio flags (uint8): anon, and swap-backed unless the folio is lazyfree."""
    return np.where(_bits(rng, n, lazyfree), FOLIO_ANON, FOLIO_ANON | FOLIO_SWAPBACKED).astype(
        np.uint8
    )


def _fill_ptes(
    table_va, rank, vbase, pfn, lo, hi, wp_from, fbits, key, r: dict, a: Arch
) -> np.ndarray:
    """Allocate the tables and write every PTE in one parallel pass (holes, young, dirty)."""
    ptes = np.zeros((table_va.size, PTRS_PER_PTE), dtype=np.uint64)
    G.fill_ptes(
        ptes.reshape(-1),
        rank,
        np.uint64(_FIRST_TABLE),
        vbase,
        pfn,
        lo,
        hi,
        wp_from,
        fbits,
        key,
        _threshold(r["holes"]),
        _threshold(r["young"]),
        _threshold(r["dirty"]),
        np.uint64(a.make_bits["young"]),
        _steps(a.make_dirty),
        _steps(a.ops["wrprotect"]),
    )
    return ptes


def _make_vmas(main_start, main_end, split_at, m_start, m) -> tuple[np.ndarray, np.ndarray]:
    """VMA byte ranges: the unmoved region's VMAs cut at ``split_at``, then the moved ones."""
    starts = np.concatenate((main_start, split_at))
    ends = np.concatenate((main_end, split_at))
    starts.sort()
    ends.sort()
    vma_start = np.concatenate((starts, m_start)) << np.uint64(PAGE_SHIFT)
    vma_end = np.concatenate((ends, m_start + m)) << np.uint64(PAGE_SHIFT)
    return vma_start, vma_end


def _fold_contpte(
    rng, ptes, table_va, vma_start, vma_end, folio_pfn, folio_nr, rate: float, a: Arch
) -> None:
    """Set the CONT bit on a ``rate`` of eligible 16-entry blocks, in place.

    The blocks are picked by a key from a stream of their own (13), so folding
    never redraws the other knobs' numbers.
    """
    cont_key = np.uint64(int(rng.integers(0, 1 << 63)))
    G.fold_contpte(
        ptes.reshape(-1),
        table_va,
        vma_start,
        vma_end,
        folio_pfn,
        folio_nr,
        np.uint64(a.present),
        np.uint64(a.special),
        np.uint64(a.pfn_mask),
        _steps(a.ops["mkclean"] + a.ops["mkold"]),
        np.uint64(a.cont),
        cont_key,
        _threshold(rate),
    )


def _uffd_wp_vma_flags(ptes, table_va, vma_start, vma_end, a: Arch) -> np.ndarray:
    """VMA flags registering uffd-wp on every VMA that holds a uffd-wp PTE.

    A PTE carries uffd-wp only in a VMA registered for it.
    """
    hit = np.flatnonzero(ptes.reshape(-1) & np.uint64(a.uffd_wp))
    va = table_va[hit // PTRS_PER_PTE] + (hit % PTRS_PER_PTE).astype(np.uint64) * np.uint64(
        PAGE_SIZE
    )
    v = np.searchsorted(vma_start, va, side="right") - 1
    inside = (v >= 0) & (va < vma_end[np.maximum(v, 0)])
    vma_flags = np.zeros(vma_start.size, dtype=np.uint8)
    vma_flags[v[inside]] = VMA_UFFD_WP
    return vma_flags


# -- sharded generation ---------------------------------------------------------------------


def _block_seed(seed: int, k: int) -> int:
    """Block ``k``'s seed, from ``(seed, k)``: independent streams for every block."""
    return int(np.random.SeedSequence((seed, k)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _relocate(sp: AddressSpace, va_at: int, pfn_at: int) -> tuple[AddressSpace, int, int]:
    """``sp`` moved so that its VA range starts at ``va_at`` and its PFNs at ``pfn_at``
    (both kept aligned: 2 MiB, 512 pages); the other PTE bits are kept.  Returns the moved
    space and where the next block may start (its VA end plus a 2 MiB gap, and its PFN end)."""
    a = get_arch(sp.arch)
    tva, vs, ve = sp.table_va, sp.vma_start, sp.vma_end
    lows = [int(x[0]) for x in (tva, vs) if x.size]
    highs = [int(tva[-1]) + PMD_SIZE] if tva.size else []
    highs += [int(ve[-1])] if ve.size else []
    va_lo = min(lows) // PMD_SIZE * PMD_SIZE if lows else 0
    va_hi = -(-max(highs) // PMD_SIZE) * PMD_SIZE if highs else va_lo
    mask = np.uint64(a.pfn_mask)
    present = (sp.ptes & np.uint64(a.present)) != 0
    pfns = (sp.ptes[present] & mask) >> np.uint64(PAGE_SHIFT)
    ends = sp.folio_pfn + sp.folio_nr
    pfn_lo = min(int(pfns.min()) if pfns.size else pfn_at, int(sp.folio_pfn.min(initial=pfn_at)))
    pfn_hi = max(int(pfns.max()) + 1 if pfns.size else 0, int(ends.max(initial=0)))
    pfn_lo = pfn_lo // PTRS_PER_PTE * PTRS_PER_PTE
    dva = np.uint64((va_at - va_lo) % (1 << 64))  # uint64 arithmetic wraps: a move down too
    dpfn = np.uint64((pfn_at - pfn_lo) % (1 << 64))
    ptes = sp.ptes.copy()
    moved_pfn = (((ptes[present] & mask) >> np.uint64(PAGE_SHIFT)) + dpfn) << np.uint64(PAGE_SHIFT)
    ptes[present] = (ptes[present] & ~mask) | (moved_pfn & mask)
    out = AddressSpace(
        ptes,
        tva + dva,
        vs + dva,
        ve + dva,
        sp.folio_pfn + dpfn,
        sp.folio_nr,
        sp.folio_flags,
        arch=sp.arch,
        vma_flags=sp.vma_flags,
    )
    next_va = va_hi + (va_at - va_lo) + PMD_SIZE
    next_pfn = -(-(pfn_hi + (pfn_at - pfn_lo)) // PTRS_PER_PTE) * PTRS_PER_PTE
    return out, next_va, next_pfn


def block_counts(n: int, shard_tables: int, sizes, vma_tables) -> list[int]:
    """Folios per block of a sharded :func:`generate`: about ``shard_tables`` tables of
    entries each at the size mix's mean folio size, allowing for the VMA gaps."""
    mix = parse_sizes(sizes)
    orders_k = np.array(sorted(mix), dtype=np.int64)
    p = np.array([mix[o] for o in orders_k], dtype=np.float64)
    p /= p.max()
    p /= p.sum()
    mean_nr = float(np.sum(p * (2.0**orders_k)))
    vt = vma_tables
    vt = vt if isinstance(vt, (int, np.integer)) and not isinstance(vt, bool) and vt > 0 else 1
    per = max(1, int(shard_tables * PTRS_PER_PTE * vt / ((vt + 1) * mean_nr * 1.1)))
    return [per] * (n // per) + ([n % per] if n % per else [])


def _generate_sharded(n: int, seed: int, shard_tables, out, knobs: dict, progress):
    from ..shards import ShardWriter  # the sharded format builds on the space model

    if (
        isinstance(shard_tables, bool)
        or not isinstance(shard_tables, (int, np.integer))
        or shard_tables < 1
    ):
        raise ValueError(f"shard_tables: must be an integer >= 1, got {shard_tables!r}")
    counts = block_counts(n, int(shard_tables), knobs["sizes"], knobs["vma_tables"])
    per = counts[0]
    hook = as_hook(progress)
    va_at, pfn_at = _BASE_VA, _BASE_PFN

    def block(k: int):
        nonlocal va_at, pfn_at
        sp = generate(counts[k], seed=_block_seed(seed, k), **knobs)
        sp, va_next, pfn_next = _relocate(sp, va_at, pfn_at)
        here = va_at
        va_at, pfn_at = va_next, pfn_next
        if va_at > _USER_TOP:
            raise ValueError(
                f"n_folios: {n:,} folios in blocks of {per:,} do not fit the 128 TiB user "
                f"address space"
            )
        return sp, here

    with ShardWriter(out, get_arch(knobs["arch"]).name) as w:
        cur, cur_lo = block(0)
        for k in range(len(counts)):
            nxt = block(k + 1) if k + 1 < len(counts) else None
            va_lo = 0 if k == 0 else cur_lo
            if nxt is None:
                w.add(cur, va_lo=va_lo, halo=False)
            else:
                halo = nxt[0]
                both = AddressSpace(
                    np.concatenate((cur.ptes, halo.ptes[:1])),
                    np.concatenate((cur.table_va, halo.table_va[:1])),
                    cur.vma_start,
                    cur.vma_end,
                    cur.folio_pfn,
                    cur.folio_nr,
                    cur.folio_flags,
                    arch=cur.arch,
                    vma_flags=cur.vma_flags,
                )
                w.add(both, va_lo=va_lo, halo=True, own_tables=cur.n_tables)
                del both
            hook("generate", k + 1, len(counts), "block")
            if nxt is not None:
                cur, cur_lo = nxt
        return w.finish()
