"""uint64 hygiene: no kernel may compute in floating point.

Numba types uint64 op int64 as int64 or float64; either corrupts a PTE with
bit 63 (NX) set, silently.  After compiling every kernel on a real workload,
no variable of any kernel may be a float, and PTE-carrying variables must be
uint64.
"""

import os
import re

import numpy as np
import pytest

import ptebatch as pb
from ptebatch._jit import dispatchers, simd

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1",
    reason="NUMBA_DISABLE_JIT=1: no compiled kernels to inspect",
)


@pytest.fixture(scope="module")
def compiled():
    space = pb.generate(400, seed=5, moved=0.3)
    for parallel in (False, True):
        for clamp, oob in (("pmd", "none"), ("folio", "adjacent")):
            pb.scan(space, kernel="6.16", clamp=clamp, oob=oob, parallel=parallel)
        pb.unmap(space, kernel="6.15", parallel=parallel)
    arr = pb.X86_64.make_pte(0x1000 + np.arange(4, dtype=np.uint64))
    pb.folio_pte_batch(arr, 0, 4, 0x1000, 4)
    simd.pte_runs_at(
        np.zeros(8, np.uint64), 0, ~np.uint64(0), np.uint64(0), np.uint64(0), np.uint64(1)
    )
    return {name: d for name, d in dispatchers().items() if not name.startswith("generator.")}


def _inlined(d):
    return d.targetoptions.get("inline") == "always"


def _jit_functions_in_source():
    """(called, inlined): ``module.name`` of every ``@jit`` function of ptebatch/_jit outside
    the generator, read from the decorators in the source, independently of dispatchers()."""
    root = os.path.join(os.path.dirname(pb.__file__), "_jit")
    called, inlined = set(), set()
    for fname in sorted(os.listdir(root)):
        if not fname.endswith(".py") or fname == "generator.py":
            continue
        with open(os.path.join(root, fname)) as fh:
            text = fh.read()
        for m in re.finditer(r"^@jit\(([^)]*)\)[^\n]*\ndef (\w+)", text, re.M):
            name = f"{fname[:-3]}.{m.group(2)}"
            (inlined if "inline=True" in m.group(1) else called).add(name)
    return called, inlined


def test_every_kernel_was_compiled(compiled):
    # Helpers inlined at Numba IR level are typed inside their callers.
    entry = {name: d for name, d in compiled.items() if not _inlined(d)}
    # dispatchers() finds exactly the @jit functions the source defines: none is left out
    # of the hygiene checks below
    called, inlined = _jit_functions_in_source()
    assert set(entry) == called and set(compiled) - set(entry) == inlined
    missing = [name for name, d in entry.items() if not d.overloads]
    assert not missing, f"kernels never compiled by the workload: {missing}"


def _typemaps(dispatcher):
    for cres in dispatcher.overloads.values():
        yield cres.signature, cres.type_annotation.typemap


def test_no_kernel_has_float_types(compiled):
    bad = {}
    for name, d in compiled.items():
        for sig, typemap in _typemaps(d):
            floats = sorted(f"{var}: {t}" for var, t in typemap.items() if "float" in str(t))
            floats += [f"return: {t}" for t in [sig.return_type] if "float" in str(t)]
            if floats:
                bad[name] = floats
    assert not bad, f"float64 in kernel types: {bad}"


def test_no_kernel_emits_floating_point_ir(compiled):
    # Catches floats in inlined helpers and parallel gufuncs that typemaps do not show.
    bad = []
    for name, d in compiled.items():
        for sig in d.signatures:
            ir = d.inspect_llvm(sig)
            for op in (
                " fadd ",
                " fmul ",
                " fdiv ",
                " sitofp ",
                " uitofp ",
                " fptoui ",
                " fptosi ",
            ):
                if op in ir:
                    bad.append((name, op.strip()))
    assert not bad, f"floating-point instructions in kernels: {bad}"


@pytest.mark.parametrize(
    "name,vars_",
    [
        # folio_pte_batch is inlined: its variables appear renamed (expected.1 ...) in callers
        ("folio_pte_batch.folio_pte_batch_one", ["pte", "expected", "raw", "folio_end"]),
        ("zap_pte_range.zap_segments", ["pte", "pfn", "va", "carry_va", "expected", "raw"]),
        ("try_to_unmap.unmap_folios", ["pte", "pfn", "va", "fpfn", "fend", "expected", "raw"]),
    ],
)
def test_pte_values_stay_uint64(compiled, name, vars_):
    for _, typemap in _typemaps(compiled[name]):
        for v in vars_:
            # inlined helpers' variables are renamed <helper>_v<n>_<name>[.k]
            types = {
                str(t)
                for var, t in typemap.items()
                if re.fullmatch(rf"(\w+_v\d+_)?{v}(\.\d+)?", var)
            }
            assert types and types <= {"uint64"}, (name, v, types)
