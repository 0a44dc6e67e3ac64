#!/usr/bin/env python3
"""A mutation run: named mutants of the kernel rules, each applied to BOTH twins at once.

The equivalence tests compare the compiled walks (``ptebatch/_jit``, ``ptebatch/engine.py``)
with the naive twin (``ptebatch/naive.py``), so a rule misread the same way in both passes
them.  Each mutant below breaks one rule of docs/model.md in every place that rule lives,
in a temporary copy of the repository (the working tree is never touched).  A fast test
subset then runs with ``-x``; a mutant is *killed* when a test fails and *survives* when
all pass.

Usage (from the repository root)::

    python tests/mutants.py            # every mutant
    python tests/mutants.py --list     # the table, nothing run
    python tests/mutants.py --only contpte-gather-15 vma-overrun-gt

Exit status: 0 when every survivor is listed in ``ACCEPTED``; 1 when some other mutant
survived; 2 when the run cannot judge (the unmutated subset fails, or a mutant's old text
is no longer found exactly once: the table is stale and must follow the code).

The tests run with ``NUMBA_DISABLE_JIT=1``: the compiled walks then run as plain Python,
the same code line for line, so every mutant in ``ptebatch/_jit`` is exercised without a
compile per mutant.  ``--jit`` runs them compiled instead (a cold compile per mutant).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The subset: the golden rule cases first (they kill most mutants fastest), then the golden,
# arm64, caller and corpus tests, and the generator's per-knob seed checks.
TESTS = (
    "tests/test_golden_rules.py",
    "tests/test_golden.py",
    "tests/test_arm64.py",
    "tests/test_callers.py",
    "tests/test_corpus.py",
    "tests/test_generate.py::test_changing_only_the_seed_changes_what_each_knob_draws",
)


@dataclass(frozen=True)
class Mutant:
    """One misreading of a rule: ``edits`` are (path, exact old text, new text), one per
    place the rule lives; each old text must occur exactly once in its file."""

    name: str
    rule: str
    edits: tuple[tuple[str, str, str], ...]


JIT_PTE = "ptebatch/_jit/pte.py"
JIT_FPB = "ptebatch/_jit/folio_pte_batch.py"
JIT_UNMAP = "ptebatch/_jit/try_to_unmap.py"
JIT_ZAP = "ptebatch/_jit/zap_pte_range.py"
ENGINE = "ptebatch/engine.py"
PLANNING = "ptebatch/planning.py"
RELEASES = "ptebatch/releases.py"
NAIVE = "ptebatch/naive.py"
GENERATOR = "ptebatch/workloads/generator.py"

MUTANTS = (
    # -- the six the issue names ---------------------------------------------------------
    Mutant(
        "contpte-gather-15",
        "section 4: ptep_get ORs young/dirty over all 16 entries of the block (reads 15)",
        (
            (JIT_PTE, "for k in range(b, b + CONT_PTES):", "for k in range(b, b + CONT_PTES - 1):"),
            (NAIVE, "for i in range(start, start + 16):", "for i in range(start, start + 15):"),
        ),
    ),
    Mutant(
        "unmap-all-or-nothing-partial",
        "section 5: 6.15.0-6.15.6 lazyfree batches only a whole folio (accepts any n >= 1)",
        (
            (
                JIT_UNMAP,
                "if n == np.int64(fnr):\n                            nr = n",
                "if n >= 1:\n                            nr = n",
            ),
            (
                NAIVE,
                "if n == fnr:\n                            nr, reason = n, R.FOLIO_END",
                "if n >= 1:\n                            nr, reason = n, R.FOLIO_END",
            ),
        ),
    ),
    Mutant(
        "vma-overrun-gt",
        "sections 2, 5: a read of the entry at vm_end is outside the VMA (> instead of >=)",
        (
            (
                JIT_FPB,
                "if (np.uint64(last_read - g) << PAGE_SHIFT) >= vma_end - va:",
                "if (np.uint64(last_read - g) << PAGE_SHIFT) > vma_end - va:",
            ),
            (
                NAIVE,
                "if addr + (last - g) * PAGE_SIZE >= vma_end:",
                "if addr + (last - g) * PAGE_SIZE > vma_end:",
            ),
        ),
    ),
    Mutant(
        "merge-write-unconditional",
        "section 3: FPB_MERGE_WRITE sets write only if a batched PTE after the first has it",
        (
            (
                ENGINE,
                'if flags & gen.flags["FPB_MERGE_WRITE"] and any_writable:',
                'if flags & gen.flags["FPB_MERGE_WRITE"]:',
            ),
            (
                NAIVE,
                'if f & self.gen.flags["FPB_MERGE_WRITE"] and any_writable:',
                'if f & self.gen.flags["FPB_MERGE_WRITE"]:',
            ),
        ),
    ),
    Mutant(
        "vma-end-at-table-end-as-pmd-end",
        "section 5: vm_end exactly at a table end is labelled vma_end (labelled pmd_end)",
        (
            (
                PLANNING,
                "np.where(ve_off <= pmd, R.VMA_END, R.PMD_END)",
                "np.where(ve_off < pmd, R.VMA_END, R.PMD_END)",
            ),
            (
                JIT_UNMAP,
                "limit_reason = R.VMA_END if end == vma_end else R.PMD_END",
                "limit_reason = (R.VMA_END if end == vma_end and "
                "(end & np.uint64(0x1FFFFF)) != ZERO else R.PMD_END)",
            ),
            (
                NAIVE,
                "limit_reason = R.VMA_END if next_ == vma_end else R.PMD_END",
                "limit_reason = R.VMA_END if next_ == vma_end and next_ % PMD_SIZE else R.PMD_END",
            ),
            (
                NAIVE,
                "R.VMA_END if end == vma_end else R.PMD_END,",
                "R.VMA_END if end == vma_end and end % PMD_SIZE else R.PMD_END,",
            ),
        ),
    ),
    Mutant(
        "generator-contpte-seed",
        "generate(): the contpte fold's random stream follows the seed (ignores it)",
        ((GENERATOR, "_stream(seed, 13),", "_stream(0, 13),"),),
    ),
    # -- comparison masks (sections 3, 6) ---------------------------------------------------
    Mutant(
        "gen1-ignore-dirty-inverted",
        "section 3: gen 1/1b ignore dirty IF FPB_IGNORE_DIRTY (read as unless)",
        (
            (
                RELEASES,
                '("dirty", "if", "FPB_IGNORE_DIRTY"),',
                '("dirty", "unless", "FPB_IGNORE_DIRTY"),',
            ),
            (
                NAIVE,
                'if f & self.gen.flags["FPB_IGNORE_DIRTY"]:',
                'if not f & self.gen.flags["FPB_IGNORE_DIRTY"]:',
            ),
        ),
    ),
    Mutant(
        "gen1-soft-dirty-always-ignored",
        "section 3: gen 1/1b compare soft-dirty unless FPB_IGNORE_SOFT_DIRTY (always ignored)",
        (
            (
                RELEASES,
                '("soft_dirty", "if", "FPB_IGNORE_SOFT_DIRTY"),',
                '("soft_dirty", "always", None),',
            ),
            (NAIVE, 'if f & self.gen.flags["FPB_IGNORE_SOFT_DIRTY"]:', "if True:"),
        ),
    ),
    Mutant(
        "gen2-respect-soft-dirty-dropped",
        "section 3: gen 2 compares soft-dirty with FPB_RESPECT_SOFT_DIRTY (never)",
        (
            (
                RELEASES,
                '("soft_dirty", "unless", "FPB_RESPECT_SOFT_DIRTY"),',
                '("soft_dirty", "always", None),',
            ),
            (NAIVE, 'if not f & self.gen.flags["FPB_RESPECT_SOFT_DIRTY"]:', "if True:"),
        ),
    ),
    Mutant(
        "gen2-respect-write-dropped",
        "section 3: gen 2 compares write with FPB_RESPECT_WRITE (never)",
        (
            (
                RELEASES,
                '("write", "unless", "FPB_RESPECT_WRITE"),',
                '("write", "always", None),',
            ),
            (NAIVE, 'if not f & self.gen.flags["FPB_RESPECT_WRITE"]:', "if True:"),
        ),
    ),
    # -- pte_batch_hint and the table/VMA clamp (sections 1, 4, 5) --------------------------
    Mutant(
        "hint-ignores-alignment",
        "section 4: the hint runs to the end of the aligned block (16 from any slot)",
        (
            (JIT_PTE, "return CONT_PTES - (g & (CONT_PTES - 1))", "return CONT_PTES"),
            (NAIVE, "return 16 - (index & 15)", "return 16"),
        ),
    ),
    Mutant(
        "unmap-clamp-ignores-vma-end",
        "section 5: 6.15.7+ lazyfree clamps at pmd_addr_end(addr, vm_end) (table end only)",
        (
            (JIT_UNMAP, "end = pmd_addr_end(va, vma_end)", "end = pmd_addr_end(va, ZERO)"),
            (NAIVE, "end = pmd_addr_end(addr, vma_end)", "end = pmd_addr_end(addr, 0)"),
        ),
    ),
    Mutant(
        "scan-clamp-ignores-vma-end",
        "section 1: a walker's max_nr stops at pmd_addr_end(addr, vm_end) (table end only)",
        (
            (JIT_ZAP, "max_nr = g1 - g", "max_nr = tbl_end - g"),
            (
                NAIVE,
                'max_nr = fnr if clamp == "folio" else (end - addr) >> PAGE_SHIFT',
                'max_nr = fnr if clamp == "folio" else '
                "(pmd_addr_end(addr, 0) - addr) >> PAGE_SHIFT",
            ),
        ),
    ),
    Mutant(
        "pmd-addr-end-plain-compare",
        "section 1: pmd_addr_end compares values minus one, so end 0 is the top (plain <)",
        (
            (JIT_PTE, "if left - ONE < end - addr - ONE:", "if left < end - addr:"),
            (
                NAIVE,
                "return boundary if (boundary - 1) & U64 < (end - 1) & U64 else end",
                "return boundary if boundary < end else end",
            ),
        ),
    ),
    # -- the folio end, by generation (section 3) ------------------------------------------
    Mutant(
        "gen1-folio-end-gt",
        "section 3: gen 1 stops on a matching PTE at or past the folio end (past only)",
        (
            (
                JIT_FPB,
                "if cfg.pfn_check != ZERO and pte_pfn(raw, cfg) >= folio_end:",
                "if cfg.pfn_check != ZERO and pte_pfn(raw, cfg) > folio_end:",
            ),
            (
                NAIVE,
                "if not xen_pv_fix and self.pte_pfn(cleared) >= folio_end_pfn:",
                "if not xen_pv_fix and self.pte_pfn(cleared) > folio_end_pfn:",
            ),
        ),
    ),
    Mutant(
        "gen1b-no-folio-cut",
        "section 3: gen 1b cuts max_nr to the pages left in the folio (not cut)",
        (
            (
                RELEASES,
                'cut_at_folio_end=True,\n    pfn_check_in_loop=False,\n    outputs="any",',
                'cut_at_folio_end=False,\n    pfn_check_in_loop=False,\n    outputs="any",',
            ),
            (
                NAIVE,
                "max_nr = min(max_nr, folio_end_pfn - self.pte_pfn(pte))",
                "max_nr = max_nr",
            ),
        ),
    ),
    # -- outputs: accumulation and merging (sections 3, 6) ---------------------------------
    Mutant(
        "any-writable-counts-the-first-pte",
        "section 3: the any_* outputs OR the batched PTEs after the first (first included)",
        (
            (
                JIT_FPB,
                "    any_writable = False\n    any_young = False",
                "    any_writable = (pte & cfg.write) != ZERO\n    any_young = False",
            ),
            (
                NAIVE,
                "end = start + max_nr\n        any_writable = any_young = any_dirty = False",
                "end = start + max_nr\n        any_writable = bool(pte & self.arch.write)\n"
                "        any_young = any_dirty = False",
            ),
        ),
    ),
    Mutant(
        "any-dirty-software-bit-only",
        "section 6: pte_dirty is software dirty OR (write AND NOT read-only) on arm64",
        (
            (JIT_FPB, "any_dirty |= pte_dirty(raw, cfg)", "any_dirty |= (raw & cfg.dirty) != ZERO"),
            (
                NAIVE,
                "dirty = self.arch.is_dirty(pte)",
                "dirty = bool(pte & self.arch.dirty_any)",
            ),
            (
                NAIVE,
                "any_dirty |= self.arch.is_dirty(pte)",
                "any_dirty |= bool(pte & self.arch.dirty_any)",
            ),
        ),
    ),
    Mutant(
        "merge-dirty-from-young",
        "section 3: FPB_MERGE_YOUNG_DIRTY merges dirty from any_dirty (from any_young)",
        (
            (
                ENGINE,
                'if any_dirty:\n            merged = arch.apply("mkdirty"',
                'if any_young:\n            merged = arch.apply("mkdirty"',
            ),
            (
                NAIVE,
                'if any_dirty:\n                pte = a.apply("mkdirty"',
                'if any_young:\n                pte = a.apply("mkdirty"',
            ),
        ),
    ),
    Mutant(
        "fast-path-drops-young",
        "section 3: any_young ORs every batched PTE (the compiled 4-entry step forgets it; "
        "the rule has no such step in the naive twin)",
        (
            (
                JIT_FPB,
                "r3\n            any_writable |= (bits & cfg.write) != ZERO\n"
                "            any_young |= (bits & cfg.young) != ZERO",
                "r3\n            any_writable |= (bits & cfg.write) != ZERO\n"
                "            any_young |= False",
            ),
        ),
    ),
    Mutant(
        "vector-path-drops-young",
        "section 3: any_young ORs every batched PTE (the 8-entry vector step forgets it)",
        (
            (
                JIT_FPB,
                "expected)\n            any_writable |= (bits & cfg.write) != ZERO\n"
                "            any_young |= (bits & cfg.young) != ZERO",
                "expected)\n            any_writable |= (bits & cfg.write) != ZERO\n"
                "            any_young |= False",
            ),
        ),
    ),
    # -- detectors and caller rules (sections 5, 7) ----------------------------------------
    Mutant(
        "table-overrun-gt",
        "section 7 bug 1: reading entry 512 is a table overrun (> instead of >=)",
        (
            (JIT_FPB, "if last_read >= table_end:", "if last_read > table_end:"),
            (NAIVE, "if last >= table_end:", "if last > table_end:"),
        ),
    ),
    Mutant(
        "past-folio-ge",
        "section 4: past_folio is a batch covering a page past its folio (>= trips at the end)",
        (
            (
                JIT_FPB,
                "if first_pfn + np.uint64(nr) > folio_end:",
                "if first_pfn + np.uint64(nr) >= folio_end:",
            ),
            (NAIVE, "if first_pfn + nr > folio_end:", "if first_pfn + nr >= folio_end:"),
        ),
    ),
    Mutant(
        "mremap-hint-rule-dropped",
        "section 5: mremap batches only when the first PTE's hint is above 1 (always)",
        (
            (
                JIT_ZAP,
                "walk == WALK_HINT and pte_batch_hint(g, pte, cfg) == 1",
                "walk == WALK_HINT and False",
            ),
            (
                NAIVE,
                "rule.need_hint and b.pte_batch_hint(g, pte) == 1",
                "rule.need_hint and False",
            ),
        ),
    ),
)

# Survivors that are understood: name -> why no test kills it.  A survivor not listed here
# fails the run.
ACCEPTED: dict[str, str] = {}


def _copy_tree(dst: str) -> None:
    """The working tree's files that git knows or would add (tracked and untracked, not
    ignored), so uncommitted tests are part of the run; without git, the tree minus
    virtual environments, caches and build output."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build")
        shutil.copytree(ROOT, dst, ignore=skip, dirs_exist_ok=True)
        return
    for rel in sorted(set(out.decode().split("\0")) - {""}):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue  # deleted in the working tree
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel))


def _check(m: Mutant, tree: str) -> list[str]:
    """Why ``m`` cannot be applied to ``tree`` (empty: it can)."""
    problems = []
    for path, old, new in m.edits:
        with open(os.path.join(tree, path)) as fh:
            n = fh.read().count(old)
        if n != 1:
            problems.append(f"{path}: old text found {n} times, not once: {old!r}")
        if old == new:
            problems.append(f"{path}: new text equals old text")
    return problems


def _apply(m: Mutant, tree: str) -> dict[str, str]:
    """Apply every edit; returns the original text of each file changed."""
    saved: dict[str, str] = {}
    for path, old, new in m.edits:
        full = os.path.join(tree, path)
        with open(full) as fh:
            text = fh.read()
        saved.setdefault(path, text)
        with open(full, "w") as fh:
            fh.write(text.replace(old, new, 1))
    return saved


def _restore(tree: str, saved: dict[str, str]) -> None:
    for path, text in saved.items():
        with open(os.path.join(tree, path), "w") as fh:
            fh.write(text)


def _run_tests(tree: str, jit: bool, timeout: float, tests=TESTS) -> tuple[str, str]:
    """Run the subset in ``tree``: ("passed" | "failed" | "timeout", first failing test)."""
    env = dict(os.environ, PYTHONPATH=tree, PTEBATCH_NUMBA_CACHE="0")
    env.pop("PTEBATCH_SLOW", None)
    cache = None
    if jit:
        env.pop("NUMBA_DISABLE_JIT", None)
        cache = tempfile.mkdtemp(prefix="ptebatch-mutant-cache-")
        env["NUMBA_CACHE_DIR"] = cache
    else:
        env["NUMBA_DISABLE_JIT"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    if p.returncode == 0:
        return "passed", ""
    first = next((ln for ln in p.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))), "")
    if not first:
        first = (p.stdout.strip().splitlines() or p.stderr.strip().splitlines() or ["?"])[-1]
    return "failed", first.split(" - ")[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the mutant table and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--jit", action="store_true", help="run the tests compiled (slow)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    ap.add_argument(
        "--tests", nargs="+", metavar="TEST", help="pytest arguments instead of the subset"
    )
    a = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "mutant names must be unique"
    if a.list:
        for m in MUTANTS:
            files = sorted({p for p, _, _ in m.edits})
            print(f"{m.name}\n    rule: {m.rule}\n    files: {', '.join(files)}")
        return 0
    chosen = list(MUTANTS)
    if a.only:
        unknown = sorted(set(a.only) - set(names))
        if unknown:
            print(f"mutants: unknown mutant(s) {', '.join(unknown)}", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.name in a.only]

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptebatch-mutants-") as tree:
        _copy_tree(tree)
        stale = {m.name: p for m in chosen if (p := _check(m, tree))}
        if stale:
            for name, problems in stale.items():
                for p in problems:
                    print(f"mutants: {name}: {p}", file=sys.stderr)
            return 2
        t = time.perf_counter()
        status, first = _run_tests(tree, a.jit, a.timeout, a.tests or TESTS)
        print(f"baseline  {status:8s} {time.perf_counter() - t:6.1f} s  (unmutated)", flush=True)
        if status != "passed":
            print(f"mutants: the unmutated subset does not pass ({first}): cannot judge")
            return 2
        survivors = []
        for m in chosen:
            saved = _apply(m, tree)
            t = time.perf_counter()
            try:
                status, first = _run_tests(tree, a.jit, a.timeout, a.tests or TESTS)
            finally:
                _restore(tree, saved)
            verdict = "survived" if status == "passed" else "killed"
            if status == "timeout":
                verdict = "killed"
                first = "(timeout)"
            if verdict == "survived":
                survivors.append(m.name)
                first = "ACCEPTED: " + ACCEPTED[m.name] if m.name in ACCEPTED else "NOT ACCEPTED"
            dt = time.perf_counter() - t
            print(f"{verdict:9s} {m.name:36s} {dt:6.1f} s  {first}", flush=True)
    killed = len(chosen) - len(survivors)
    unexpected = [s for s in survivors if s not in ACCEPTED]
    print(
        f"{killed} killed, {len(survivors)} survived ({len(unexpected)} not accepted) "
        f"of {len(chosen)} mutants in {time.perf_counter() - start:.0f} s"
    )
    for name in sorted(set(ACCEPTED) & {m.name for m in chosen} - set(survivors)):
        print(f"note: {name} is listed as accepted but was killed: remove it from ACCEPTED")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
