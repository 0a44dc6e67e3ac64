import os
import sys

import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "tests")
)  # shared hypothesis profile
import conftest as _tests_conftest  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        skip = pytest.mark.skip(
            reason="NUMBA_DISABLE_JIT=1: timing plain-Python kernels measures nothing"
        )
        for item in items:
            if "benchmarks" in str(item.fspath):
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After a timed run, print speed ratios between implementations of the same case."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    best = {}
    for bench in session.benchmarks:
        params = bench.params or {}
        if "case" in params and bench.stats:
            best[(bench.name.split("[")[0], params["impl"], params["case"])] = bench.stats.min
    rows = []
    for (walk, impl, case), t in sorted(best.items()):
        if impl != "jit-serial":
            continue
        for other in ("naive", "numpy", "jit-parallel"):
            t_other = best.get((walk, other, case))
            if t_other:
                ratio, label = (
                    (t_other / t, f"jit-serial vs {other}")
                    if other != "jit-parallel"
                    else (t / t_other, "jit-parallel vs jit-serial")
                )
                rows.append(f"{walk:12} {case:14} {label:28} {ratio:9.2f}x")
    if rows:
        terminalreporter.write_sep("-", "speed ratios (min times, same run)")
        for line in rows:
            terminalreporter.write_line(line)
