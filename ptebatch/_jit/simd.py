"""Eight entries at a time: the vector compares of the scan's hot loops.

``folio_pte_batch`` compares each entry with the expected PTE (the first one's PFN plus
one page per entry, ignored bits cleared) and the walker skips entries that are not
present.  LLVM keeps both loops scalar (their exits depend on every entry), so these two
helpers are written as LLVM IR: one unaligned load of 8 entries, one vector compare,
and a count of the leading lanes that pass.  On x86-64 with AVX-512 that is one
``vpcmpq`` into a mask register; elsewhere LLVM splits the vector.

Both read all 8 entries ``flat[g:g + 8]``: callers call them only where every one of
those indices is below their read limit.  Each has a plain twin with the same result,
reading the same 8 entries, which runs instead under ``NUMBA_DISABLE_JIT=1`` (nothing
is compiled) and ``NUMBA_BOUNDSCHECK=1`` (the twin's reads are bounds-checked, so the
callers' limits are); the tests compare the two (``tests/test_simd.py``).

This module and :mod:`ptebatch._jit.options` are the only ones that import Numba: the
IR needs Numba's types and code generation helpers; the options stay in ``options``.
"""

from __future__ import annotations

import numpy as np

from .options import jit, native_ir
from .pte import PAGE_SHIFT, ZERO

LANES = 8  # entries per compare: one 512-bit vector of uint64


@jit(inline=True)
def _pte_match_run_twin(flat, g, keep, set_, expected):
    mismatch = 0
    bits = ZERO
    for k in range(LANES):
        raw = flat[g + k]
        if ((raw & keep) | set_) != expected + (np.uint64(k) << PAGE_SHIFT):
            mismatch |= 1 << k
    n = 0
    while n < LANES and (mismatch >> n) & 1 == 0:
        bits |= flat[g + n]
        n += 1
    return n, bits


@jit(inline=True)
def _pte_none_run_twin(flat, g, present):
    seen = 0
    for k in range(LANES):
        if (flat[g + k] & present) != ZERO:
            seen |= 1 << k
    n = 0
    while n < LANES and (seen >> n) & 1 == 0:
        n += 1
    return n


def _ir():
    """The two IR versions (imports Numba's code generation only when compiling)."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    i1, i32, i64, lane_mask = ir.IntType(1), ir.IntType(32), ir.IntType(64), ir.IntType(LANES)
    vec = ir.VectorType(i64, LANES)

    def splat(builder, x):
        v = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(i32, 0))
        zeros = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
        return builder.shuffle_vector(v, ir.Constant(vec, ir.Undefined), zeros)

    def load8(context, builder, aty, arr, g):
        data = context.make_array(aty)(context, builder, arr).data
        ptr = builder.gep(data, [g], inbounds=True)
        return builder.load(builder.bitcast(ptr, vec.as_pointer()), align=8)

    def leading(builder, passed):
        """Lanes before the first that failed (LANES if none did), as int64."""
        failed = builder.xor(builder.bitcast(passed, lane_mask), ir.Constant(lane_mask, -1))
        return builder.zext(builder.cttz(failed, ir.Constant(i1, 0)), i64)

    def c_array(flat):
        return isinstance(flat, types.Array) and flat.layout == "C" and flat.dtype == types.uint64

    @intrinsic
    def pte_match_run(typingctx, flat, g, keep, set_, expected):
        if not c_array(flat):
            return None
        u64 = types.uint64
        sig = types.Tuple((types.int64, u64))(flat, types.int64, u64, u64, u64)

        def codegen(context, builder, signature, args):
            arr, g, keep, set_, expected = args
            raw = load8(context, builder, signature.args[0], arr, g)
            got = builder.or_(builder.and_(raw, splat(builder, keep)), splat(builder, set_))
            steps = ir.Constant(vec, [k << int(PAGE_SHIFT) for k in range(LANES)])
            want = builder.add(splat(builder, expected), steps)
            n = leading(builder, builder.icmp_unsigned("==", got, want))
            taken = builder.icmp_unsigned(
                "<", ir.Constant(vec, list(range(LANES))), splat(builder, n)
            )
            kept = builder.select(taken, raw, ir.Constant(vec, [0] * LANES))
            reduce_or = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i64, [vec]), f"llvm.vector.reduce.or.v{LANES}i64"
            )
            bits = builder.call(reduce_or, [kept])
            return context.make_tuple(builder, signature.return_type, [n, bits])

        return sig, codegen

    @intrinsic
    def pte_none_run(typingctx, flat, g, present):
        if not c_array(flat):
            return None
        sig = types.int64(flat, types.int64, types.uint64)

        def codegen(context, builder, signature, args):
            arr, g, present = args
            raw = load8(context, builder, signature.args[0], arr, g)
            set_bits = builder.and_(raw, splat(builder, present))
            return leading(
                builder, builder.icmp_unsigned("==", set_bits, ir.Constant(vec, [0] * LANES))
            )

        return sig, codegen

    return pte_match_run, pte_none_run


if native_ir():
    pte_match_run, pte_none_run = _ir()
else:
    pte_match_run, pte_none_run = _pte_match_run_twin, _pte_none_run_twin

pte_match_run.__doc__ = """``(n, bits)``: how many of ``flat[g:g + 8]`` in a row, from g, match
``expected`` advanced by one page per entry once ``keep`` and ``set_`` are applied
(``(raw & keep) | set_``, x86-64's __pte_batch_clear_ignored), and the OR of those n raw
entries.  Reads all 8 entries."""
pte_none_run.__doc__ = """How many of ``flat[g:g + 8]`` in a row, from g, have no ``present``
bit (8 if none has).  Reads all 8 entries."""


@jit()
def pte_runs_at(flat, g, keep, set_, expected, present):
    """Both runs at flat[g] (for tests: the IR versions cannot be called from Python)."""
    n, bits = pte_match_run(flat, g, keep, set_, expected)
    return n, bits, pte_none_run(flat, g, present)
