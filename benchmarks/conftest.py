import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))  # shared hypothesis profile
import conftest as _tests_conftest  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        skip = pytest.mark.skip(reason="NUMBA_DISABLE_JIT=1: timing plain-Python kernels measures nothing")
        for item in items:
            if "benchmarks" in str(item.fspath):
                item.add_marker(skip)
