"""The naive reference: the same functions as the JIT engine, in plain Python ints.

Written to read like the kernel (mm/internal.h, mm/memory.c zap_pte_range,
mm/rmap.c try_to_unmap_one), one generation at a time, rather than from the
tables the JIT engine compiles.  It is the oracle of the tests and the
baseline of the benchmarks, so it favours obviousness over speed.
"""

from __future__ import annotations

import bisect

import numpy as np

from . import reasons as R
from .arch import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PTRS_PER_PTE, U64, get_arch
from .callers import UnmapMode, Walk
from .checks import RowSpec, check_batch_args, check_bool, check_rows, check_walk_args, keep_rows
from .releases import resolve_flags, resolve_kernel
from .results import BatchResult, ScanResult, UnmapResult, detector_counts, length_hist
from .space import FOLIO_ANON, FOLIO_SWAPBACKED, VMA_UFFD_WP, AddressSpace

__all__ = ["folio_pte_batch", "scan", "unmap", "pmd_addr_end"]

PMD_MASK = ~(PMD_SIZE - 1) & U64


def pmd_addr_end(addr: int, end: int) -> int:
    """The next 2 MiB boundary above addr, or end if lower (end 0 is the top)."""
    boundary = (addr + PMD_SIZE) & PMD_MASK
    return boundary if (boundary - 1) & U64 < (end - 1) & U64 else end


class _Batcher:
    """folio_pte_batch for one architecture, generation and flags."""

    def __init__(self, arch, profile, flags: int):
        self.arch = arch
        self.gen = profile.generation
        self.flags = flags
        self.profile = profile
        self.reads = 0  # entries read by ptep_get (a contpte gather reads 16)

    # -- the PTE helpers, on ints ------------------------------------------
    def pte_present(self, pte):
        return bool(pte & self.arch.present)

    def pte_pfn(self, pte):
        return (pte & self.arch.pfn_mask) >> PAGE_SHIFT

    def pte_advance_pfn(self, pte, nr):
        return (pte + (nr << PAGE_SHIFT)) & U64

    def pte_valid_cont(self, pte):
        return bool(self.arch.cont) and self.pte_present(pte) and bool(pte & self.arch.cont)

    def pte_batch_hint(self, index, pte):
        """arm64: a contpte entry lets the scan jump to the end of its 16-entry block."""
        if self.pte_valid_cont(pte):
            return 16 - (index & 15)
        return 1

    def ptep_get(self, read, index):
        """ptep_get: arm64 returns a contpte entry with young/dirty of its whole block."""
        pte = read(index)
        if not self.pte_valid_cont(pte):
            self.reads += 1
            return pte
        self.reads += 16
        start = index - index % 16
        for i in range(start, start + 16):
            other = read(i)
            if self.arch.is_dirty(other):
                pte = self.arch.apply("mkdirty", pte)
            if other & self.arch.young:
                pte = self.arch.apply("mkyoung", pte)
        return pte

    def clear_ignored(self, pte):
        """__pte_batch_clear_ignored, as each generation wrote it."""
        a, f = self.arch, self.flags
        if self.gen.name in ("1", "1b"):
            if f & self.gen.flags["FPB_IGNORE_DIRTY"]:
                pte = a.apply("mkclean", pte)
            if f & self.gen.flags["FPB_IGNORE_SOFT_DIRTY"]:
                pte = a.apply("clear_soft_dirty", pte)
            return a.apply("wrprotect", a.apply("mkold", pte))
        if not f & self.gen.flags["FPB_RESPECT_DIRTY"]:
            pte = a.apply("mkclean", pte)
        if not f & self.gen.flags["FPB_RESPECT_SOFT_DIRTY"]:
            pte = a.apply("clear_soft_dirty", pte)
        if not f & self.gen.flags["FPB_RESPECT_WRITE"]:
            pte = a.apply("wrprotect", pte)
        return a.apply("mkold", pte)

    def outputs(self, pte, any_writable, any_young, any_dirty) -> dict:
        """What the caller gets besides nr: gen 1/1b fill its any_* pointers; gen 2
        (folio_pte_batch_flags) merges write, young and dirty into its copy of the PTE."""
        if self.gen.name in ("1", "1b"):
            return dict(
                any_writable=bool(any_writable),
                any_young=bool(any_young),
                any_dirty=bool(any_dirty),
            )
        a, f, v = self.arch, self.flags, self.profile.version
        if f & self.gen.flags["FPB_MERGE_WRITE"] and any_writable:
            pte = a.apply("mkwrite", pte, v)
        if f & self.gen.flags["FPB_MERGE_YOUNG_DIRTY"]:
            if any_young:
                pte = a.apply("mkyoung", pte, v)
            if any_dirty:
                pte = a.apply("mkdirty", pte, v)
        return dict(pte=pte)

    def why_different(self, pte, expected):
        if not self.pte_present(pte):
            return R.NOT_PRESENT
        if self.pte_pfn(pte) != self.pte_pfn(expected):
            return R.PFN_GAP
        return R.BIT_MISMATCH

    # -- the batch -----------------------------------------------------------
    def batch(self, read, start, pte, max_nr, folio_pfn, folio_nr):
        """Returns (nr, stop, last_read, any_writable, any_young, any_dirty)."""
        if self.gen.name == "2":
            return self._batch_v2(read, start, pte, max_nr, folio_pfn, folio_nr)
        return self._batch_v1(
            read, start, pte, max_nr, folio_pfn, folio_nr, xen_pv_fix=self.gen.name == "1b"
        )

    def _batch_v1(self, read, start, pte, max_nr, folio_pfn, folio_nr, xen_pv_fix):
        folio_end_pfn = folio_pfn + folio_nr
        if xen_pv_fix:
            max_nr = min(max_nr, folio_end_pfn - self.pte_pfn(pte))
        end = start + max_nr
        any_writable = any_young = any_dirty = False
        stop, last = R.MAX_NR, start

        nr = self.pte_batch_hint(start, pte)
        expected = self.clear_ignored(self.pte_advance_pfn(pte, nr))
        p = start + nr
        while p < end:
            pte = self.ptep_get(read, p)
            last = p
            writable = bool(pte & self.arch.write)
            young = bool(pte & self.arch.young)
            dirty = self.arch.is_dirty(pte)
            cleared = self.clear_ignored(pte)
            if cleared != expected:
                stop = self.why_different(pte, expected)
                break
            if not xen_pv_fix and self.pte_pfn(cleared) >= folio_end_pfn:
                stop = R.FOLIO_END
                break
            any_writable |= writable
            any_young |= young
            any_dirty |= dirty
            nr = self.pte_batch_hint(p, pte)
            expected = self.pte_advance_pfn(expected, nr)
            p += nr
        return min(p - start, max_nr), stop, last, any_writable, any_young, any_dirty

    def _batch_v2(self, read, start, pte, max_nr, folio_pfn, folio_nr):
        any_writable = any_young = any_dirty = False
        stop, last = R.MAX_NR, start
        max_nr = min(max_nr, folio_pfn + folio_nr - self.pte_pfn(pte))

        nr = self.pte_batch_hint(start, pte)
        expected = self.clear_ignored(self.pte_advance_pfn(pte, nr))
        p = start + nr
        while nr < max_nr:
            pte = self.ptep_get(read, p)
            last = p
            if self.clear_ignored(pte) != expected:
                stop = self.why_different(pte, expected)
                break
            any_writable |= bool(pte & self.arch.write)
            any_young |= bool(pte & self.arch.young)
            any_dirty |= self.arch.is_dirty(pte)
            cur_nr = self.pte_batch_hint(p, pte)
            expected = self.pte_advance_pfn(expected, cur_nr)
            p += cur_nr
            nr += cur_nr
        return min(nr, max_nr), stop, last, any_writable, any_young, any_dirty


def _reason(stop, first_pfn, nr, folio_pfn, folio_nr, limit_reason):
    if first_pfn + nr == folio_pfn + folio_nr:
        return R.FOLIO_END
    return limit_reason if stop == R.MAX_NR else stop


def folio_pte_batch(
    ptes, index, max_nr, folio_pfn, folio_nr, *, flags=0, kernel="6.16", arch="x86_64"
) -> BatchResult:
    """Naive twin of :func:`ptebatch.folio_pte_batch` (same arguments and result)."""
    arch = get_arch(arch)
    profile = resolve_kernel(kernel)
    fl = resolve_flags(flags, profile.generation, 0)
    index, max_nr, folio_pfn, folio_nr, pte = check_batch_args(
        ptes, index, max_nr, folio_pfn, folio_nr, arch, profile.generation.max_nr_limit
    )
    entries = ptes.tolist()

    def read(i):
        return entries[i] if i < len(entries) else 0

    b = _Batcher(arch, profile, fl)
    pte = b.ptep_get(read, index)
    nr, stop, last, w, y, d = b.batch(read, index, pte, max_nr, folio_pfn, folio_nr)
    reason = _reason(stop, b.pte_pfn(pte), nr, folio_pfn, folio_nr, R.MAX_NR)
    return BatchResult(
        nr=nr,
        reason=R.NAMES[reason],
        last_read=last,
        crosses_end=index + max_nr > len(entries),
        read_past_end=last >= len(entries),
        **b.outputs(pte, w, y, d),
    )


class _Memory:
    """The page tables as the kernel would see them, read one entry at a time."""

    def __init__(self, space: AddressSpace, oob: str):
        self.space = space
        self.rows: dict[int, list] = {}
        self.table_vas = space.table_va.tolist()
        self.table_of = {v: t for t, v in enumerate(self.table_vas)}
        self.adjacent = oob == "adjacent"
        self.folio_pfn = space.folio_pfn.tolist()
        self.folio_nr = space.folio_nr.tolist()
        self.folio_flags = space.folio_flags.tolist()
        self.starts = self.folio_pfn  # sorted
        # Flat indexes of the entries an unmap has cleared (get_and_clear_full_ptes):
        # every later read sees none there.  A scan never clears.
        self.cleared: set[int] = set()

    def row(self, t):
        r = self.rows.get(t)
        if r is None:
            r = self.rows[t] = self.space.ptes[t].tolist()
        return r

    def slot(self, addr):
        """Flat index (table * 512 + entry) of addr, or None without a table."""
        t = self.table_of.get(addr & PMD_MASK)
        if t is None:
            return None
        return t * PTRS_PER_PTE + ((addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1))

    def reader(self, g):
        """ptep_get for a scan that started in the table of flat index g."""
        table_end = (g // PTRS_PER_PTE + 1) * PTRS_PER_PTE
        n_rows = len(self.table_of)

        def read(i):
            if i >= table_end and not self.adjacent:
                return 0
            if i in self.cleared:
                return 0
            t, e = divmod(i, PTRS_PER_PTE)
            return self.row(t)[e] if t < n_rows else 0

        return read, table_end

    def vm_normal_folio(self, pte, arch):
        """The listed folio a present PTE maps; None for order-0 or a special PTE."""
        if pte & arch.special:
            return None
        return self.folio_of((pte & arch.pfn_mask) >> PAGE_SHIFT)

    def folio_of(self, pfn):
        """Index of the listed folio holding pfn, or None (order-0)."""
        lo, hi = 0, len(self.starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.starts[mid] <= pfn:
                lo = mid + 1
            else:
                hi = mid
        i = lo - 1
        if i >= 0 and pfn < self.folio_pfn[i] + self.folio_nr[i]:
            return i
        return None

    def next_table(self, addr):
        """Address of the first table at or above addr's 2 MiB region, or None."""
        i = bisect.bisect_left(self.table_vas, addr & PMD_MASK)
        return self.table_vas[i] if i < len(self.table_vas) else None

    def mapped(self, start, end):
        """(addr, flat index, pte) for every address in [start, end) that has a table."""
        addr = start
        while addr < end:
            tva = self.next_table(addr)
            if tva is None or tva >= end:
                return
            addr = max(addr, tva)
            t = self.table_of[tva]
            row = self.row(t)
            stop = min(end, tva + PMD_SIZE)
            while addr < stop:
                e = (addr - tva) >> PAGE_SHIFT
                yield addr, t * PTRS_PER_PTE + e, row[e]
                addr += PAGE_SIZE


def _findings(
    b, rule, read, g, nr, last, table_end, addr, vma_end, first_pfn, folio_end, detectors=True
):
    """The detector bits of one batch (see ptebatch.reasons)."""
    found = 0
    if last >= table_end:
        found |= R.OVER_TABLE  # KASAN would flag this load
    if addr + (last - g) * PAGE_SIZE >= vma_end:
        found |= R.OVER_VMA
    if first_pfn + nr > folio_end:
        found |= R.PAST_FOLIO
    if nr > 1 and detectors:
        arch = b.arch
        prop = {
            "write": lambda e: bool(e & arch.write),
            "soft_dirty": lambda e: bool(e & arch.soft_dirty),
            "dirty": arch.is_dirty,
        }
        entries = [read(i) for i in range(g, g + nr)]  # raw, skipped or not
        for name in rule.spread:
            if len({prop[name](e) for e in entries}) > 1:
                found |= R.SPREAD
        if len({bool(e & arch.uffd_wp) for e in entries}) > 1:
            found |= R.UFFD_WP
    return found


def scan(
    space: AddressSpace,
    *,
    caller="zap",
    kernel="6.16",
    flags=None,
    clamp=None,
    oob="none",
    move_by=0,
    detectors=True,
    parallel=None,
    rows=True,
    progress=None,
    batching=True,
) -> ScanResult:
    """Naive twin of :func:`ptebatch.scan` (``parallel`` and ``progress`` are accepted and
    ignored).

    Longer than 80 lines on purpose: it reads top to bottom like the kernel's
    walk (VMA, then ``pmd_addr_end`` extents, then PTEs and batches), which is
    what makes it a reference that can be checked by eye.
    """
    preset, fl, clamp, move_by = check_walk_args(
        space, Walk.SCAN, caller, kernel, flags, clamp, oob, move_by, batching
    )
    batching = check_bool("batching", batching)
    detectors = check_bool("detectors", detectors)
    row_spec = check_rows(rows)
    profile, rule = preset.profile, preset.rule
    arch = get_arch(space.arch)
    mem = _Memory(space, oob)
    b = _Batcher(arch, profile, fl)
    rows = []
    present = 0
    tables_moved = 0

    def pte_range(addr, end, vma_end, limit_reason):
        """One walker call (zap_pte_range, copy_pte_range, move_ptes...) over
        [addr, end); returns where the walk goes on."""
        g = mem.slot(addr)  # pte_offset_map: the table is mapped once per range
        read, table_end = mem.reader(g)
        while addr < end:
            pte = b.ptep_get(read, g)
            if not b.pte_present(pte):
                addr += PAGE_SIZE
                g += 1
                continue
            pfn = b.pte_pfn(pte)
            f = mem.vm_normal_folio(pte, arch)
            if f is None or mem.folio_nr[f] == 1:
                rows.append((addr, 1, R.ORDER0, 0))
                addr += PAGE_SIZE
                g += 1
                continue
            if not rule.batches or (rule.need_hint and b.pte_batch_hint(g, pte) == 1):
                # this release's caller takes it one PTE at a time
                rows.append((addr, 1, R.SINGLE, 0))
                addr += PAGE_SIZE
                g += 1
                continue
            fpfn, fnr = mem.folio_pfn[f], mem.folio_nr[f]
            max_nr = fnr if clamp == "folio" else (end - addr) >> PAGE_SHIFT
            if max_nr == 1:
                nr, stop, last = 1, R.MAX_NR, g
            else:
                nr, stop, last, *_ = b.batch(read, g, pte, max_nr, fpfn, fnr)
            rows.append(
                (
                    addr,
                    nr,
                    _reason(stop, pfn, nr, fpfn, fnr, limit_reason),
                    _findings(
                        b,
                        rule,
                        read,
                        g,
                        nr,
                        last,
                        table_end,
                        addr,
                        vma_end,
                        pfn,
                        fpfn + fnr,
                        detectors,
                    ),
                )
            )
            addr += nr * PAGE_SIZE
            g += nr
        return addr

    for vma_start, vma_end in zip(space.vma_start.tolist(), space.vma_end.tolist()):
        present += sum(1 for _, _, pte in mem.mapped(vma_start, vma_end) if b.pte_present(pte))
        addr = vma_start
        while addr < vma_end:
            next_ = pmd_addr_end(addr, vma_end)
            limit_reason = R.VMA_END if next_ == vma_end else R.PMD_END
            if rule.dst_clamp:
                # move_page_tables: the extent also stops at the destination's next PMD
                new_addr = (addr + move_by) & U64
                dst_left = (((new_addr + PMD_SIZE) & PMD_MASK) - new_addr) & U64
                if dst_left < next_ - addr:
                    next_, limit_reason = addr + dst_left, R.DST_PMD_END
            if mem.slot(addr) is None:
                # pmd_none: nothing mapped up to the next table
                tva = mem.next_table(addr)
                addr = vma_end if tva is None else max(next_, min(tva, vma_end))
                continue
            if (
                preset.caller.moves_tables
                and move_by % PMD_SIZE == 0
                and addr % PMD_SIZE == 0
                and next_ - addr == PMD_SIZE
            ):
                # move_page_tables: a PMD-sized extent moves by its PMD entry (move_pgt_entry)
                tables_moved += 1
                addr = next_
                continue
            addr = max(pte_range(addr, next_, vma_end, limit_reason), next_)
    return _walk_result(
        ScanResult,
        rows,
        4,
        preset,
        fl,
        oob,
        space,
        row_spec,
        clamp=clamp,
        present_ptes=present,
        tables_moved=tables_moved,
        pte_reads=b.reads,
        batching=batching,
    )


def _walk_result(cls, rows, width, preset, fl, oob, space, row_spec, **extra):
    """Every batch counted from its row; then only the rows ``row_spec`` keeps."""
    cols = list(zip(*rows)) if rows else [()] * width
    dtypes = (np.uint64, np.uint32, np.uint8, np.uint8)
    if cls is UnmapResult:
        extra["folio_pfn"] = np.array(cols[0], dtype=np.uint64)
        cols = cols[1:]
    arrays = [np.array(c, dtype=dt) for c, dt in zip(cols, dtypes)]
    # no batch is longer than a table or a folio
    bins = max(PTRS_PER_PTE, int(space.folio_nr.max()) if space.folio_nr.size else 1) + 1
    extra["length_hist"] = length_hist(arrays[1], arrays[2], bins)
    extra["found"] = detector_counts(arrays[3])
    extra["rows_filtered"] = row_spec != RowSpec(True)
    keep = keep_rows(row_spec, *arrays)
    if cls is UnmapResult:
        extra["folio_pfn"] = extra["folio_pfn"][keep] if row_spec.rows else None
    arrays = [a[keep] for a in arrays] if row_spec.rows else [None] * 4
    profile = preset.profile
    return cls(
        caller=preset.name,
        kernel=profile.name,
        generation=profile.generation.name,
        flags=profile.generation.describe_flags(fl),
        oob=oob,
        va=arrays[0],
        nr=arrays[1],
        reason=arrays[2],
        findings=arrays[3],
        **extra,
    )


def unmap(
    space: AddressSpace,
    *,
    caller="lazyfree",
    kernel="6.16",
    flags=None,
    oob="none",
    detectors=True,
    parallel=None,
    rows=True,
    progress=None,
    batching=True,
) -> UnmapResult:
    """Naive twin of :func:`ptebatch.unmap` (``parallel`` and ``progress`` are accepted and
    ignored).

    Longer than 80 lines on purpose: it reads top to bottom like reclaim
    (the reverse map, then each folio's VMAs in order, then
    ``try_to_unmap_one``'s batches), so it can be checked by eye.
    """
    preset, fl, _, _ = check_walk_args(
        space, Walk.UNMAP, caller, kernel, flags, None, oob, 0, batching
    )
    batching = check_bool("batching", batching)
    detectors = check_bool("detectors", detectors)
    row_spec = check_rows(rows)
    profile, rule = preset.profile, preset.rule
    arch = get_arch(space.arch)
    mem = _Memory(space, oob)
    b = _Batcher(arch, profile, fl)

    # The reverse map: where each large folio is mapped, VMA by VMA, in address order.
    rmap: dict[int, list] = {}
    for v, (vma_start, vma_end) in enumerate(zip(space.vma_start.tolist(), space.vma_end.tolist())):
        for addr, g, pte in mem.mapped(vma_start, vma_end):
            if not b.pte_present(pte):
                continue
            f = mem.vm_normal_folio(pte, arch)
            if f is not None and mem.folio_nr[f] > 1:
                rmap.setdefault(f, []).append((v, addr, g, vma_end))

    rows = []
    lazyfree_folios = 0
    for f in sorted(rmap):
        fpfn, fnr = mem.folio_pfn[f], mem.folio_nr[f]
        anon = bool(mem.folio_flags[f] & FOLIO_ANON)
        swapbacked = bool(mem.folio_flags[f] & FOLIO_SWAPBACKED)
        lazyfree_folios += anon and not swapbacked
        # "We only support lazyfree (or, from 7.0, file) folios batching for now"
        batchable = rule.batches and (
            anon and not swapbacked if not rule.file_folios else not (anon and swapbacked)
        )
        by_vma: dict[int, list] = {}
        for v, addr, g, vma_end in rmap[f]:
            by_vma.setdefault(v, []).append((addr, g, vma_end))
        # folio_mapped(): the folio's mapcount, which only its own batches lower (an
        # entry another folio's batch cleared keeps it mapped, and the walk goes on
        # visiting VMAs where it finds nothing)
        own = {g for _, _, g, _ in rmap[f]}
        mapped = len(own)
        for v in sorted(by_vma):
            # rmap_walk's done(): folio_not_mapped ends the walk once no page is mapped
            if mapped == 0:
                break
            # try_to_unmap_one: page_vma_mapped_walk over this VMA
            # 7.0 does not batch in a VMA registered for uffd-wp (userfaultfd_wp(vma))
            batch_here = batchable and not (
                rule.skip_uffd_wp_vmas and space.vma_flags[v] & VMA_UFFD_WP
            )
            for addr, g, vma_end in by_vma[v]:
                read, table_end = mem.reader(g)
                pte = b.ptep_get(read, g)
                if not b.pte_present(pte):
                    continue  # cleared by an earlier batch: the walk finds nothing here
                nr, reason, last = 1, R.SINGLE, g
                if batch_here and rule.unmap == UnmapMode.ALL_OR_NOTHING:
                    # can_batch_unmap_folio_ptes (6.15.0-6.15.6)
                    if b.pte_pfn(pte) == fpfn:
                        n, _, last, *_ = b.batch(read, g, pte, fnr, fpfn, fnr)
                        if n == fnr:
                            nr, reason = n, R.FOLIO_END
                elif batch_here and rule.unmap == UnmapMode.CLAMPED:
                    # folio_unmap_pte_batch: one VMA and one page table only
                    end = pmd_addr_end(addr, vma_end)
                    n, stop, last, *_ = b.batch(read, g, pte, (end - addr) >> PAGE_SHIFT, fpfn, fnr)
                    nr = n
                    reason = _reason(
                        stop,
                        b.pte_pfn(pte),
                        n,
                        fpfn,
                        fnr,
                        R.VMA_END if end == vma_end else R.PMD_END,
                    )
                rows.append(
                    (
                        fpfn,
                        addr,
                        nr,
                        reason,
                        _findings(
                            b,
                            rule,
                            read,
                            g,
                            nr,
                            last,
                            table_end,
                            addr,
                            vma_end,
                            b.pte_pfn(pte),
                            fpfn + fnr,
                            detectors,
                        ),
                    )
                )
                # get_and_clear_full_ptes: the batch's entries, read or skipped, are none now
                taken = set(range(g, g + nr)) - mem.cleared
                mapped -= len(taken & own)
                mem.cleared.update(taken)
                if nr == fnr:
                    break  # walk_done
    return _walk_result(
        UnmapResult,
        rows,
        5,
        preset,
        fl,
        oob,
        space,
        row_spec,
        folios=len(rmap),
        lazyfree_folios=lazyfree_folios,
        pte_reads=b.reads,
        batching=batching,
    )
