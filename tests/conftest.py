import os

import pytest
from hypothesis import HealthCheck, settings

# Compile in this process rather than load from Numba's cache: the type-hygiene tests inspect
# what was compiled, and code loaded from the cache has no typing information.  The switch is
# read once, when the options module is imported; the processes the tests start (the CLI,
# Dask workers) then use the cache as a user's would, so they load what the first of them
# compiled instead of compiling again each.  (The cache itself is tested in
# tests/test_cache.py, in processes of its own.)
if "PTEBATCH_NUMBA_CACHE" not in os.environ:
    os.environ["PTEBATCH_NUMBA_CACHE"] = "0"
    from ptebatch._jit.options import CACHE  # noqa: E402, F401  (runs the module: it loads lazily)

    del os.environ["PTEBATCH_NUMBA_CACHE"]

# Derandomised: every CI run sees the same examples; 300 per property under PTEBATCH_SLOW=1
# (CI), 100 in the default run, which keeps that run under 4 minutes.
_EXAMPLES = "300" if os.environ.get("PTEBATCH_SLOW") == "1" else "100"
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=int(os.environ.get("PTEBATCH_EXAMPLES", _EXAMPLES)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("ci")


# The default run leaves out tests marked slow (the strategy-reach searches, the benchmark smoke
# tests, the cache's fresh processes, the large snapshots); PTEBATCH_SLOW=1 runs them too, as
# .ci/run does in every pass.
def pytest_collection_modifyitems(config, items):
    if os.environ.get("PTEBATCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: PTEBATCH_SLOW=1 runs it (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
