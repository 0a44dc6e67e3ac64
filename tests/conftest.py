import os

import pytest
from hypothesis import HealthCheck, settings

# Compile in this process rather than load from Numba's cache: the type-hygiene tests inspect
# what was compiled, and code loaded from the cache has no typing information.  (The cache
# itself is tested in tests/test_cache.py, in processes of its own.)
os.environ.setdefault("PTEBATCH_NUMBA_CACHE", "0")

# Derandomised: every CI run sees the same examples; at least 300 per property.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=int(os.environ.get("PTEBATCH_EXAMPLES", "300")),
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
