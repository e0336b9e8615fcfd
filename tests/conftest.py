from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(params=[0, 4, 1024], ids=["cache-off", "cache-tiny", "cache-on"])
def cache_size(request: pytest.FixtureRequest) -> int:
    """Match cache sizes every trie and broker routing test runs with."""
    size: int = request.param
    return size
