import os

from hypothesis import HealthCheck, settings

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
