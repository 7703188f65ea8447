"""The test harness itself: hypothesis example counts per runner (the ray_hypothesis marker)."""

from __future__ import annotations

from collections import Counter

from conftest import RAY_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

CALLS: Counter = Counter()


@given(x=st.integers())
def test_ray_runs_fewer_hypothesis_examples(sp, x):
    # fails (and hypothesis reports it) as soon as a runner gets more examples than its share
    CALLS[sp.config.runner] += 1
    limit = RAY_EXAMPLES if sp.config.runner == "ray" else settings().max_examples
    assert CALLS[sp.config.runner] <= limit
