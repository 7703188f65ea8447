"""R5: random task failures (fault injection, smallpond 0.15's `fault_inject_prob`) and a task
that always fails.

Injected faults are drawn from a hash of (seed, task key, attempt), so the test knows exactly
which attempts had to fail and checks that each one was retried, and nothing else.
"""

from __future__ import annotations

from collections import Counter

import pytest

from smallpond.errors import ConfigError, TaskError, UserFunctionError
from smallpond.runners.faults import _draw

from .helpers import aggregate_input, aggregate_job, expected_aggregate, leftovers, rows_of


def _failed_attempts(key: str, seed: int, probability: float, limit: int) -> int:
    """How many attempts of task `key` draw a fault before one succeeds."""
    attempt = 1
    while attempt <= limit + 1 and _draw(seed, key, attempt, "fail") < probability:
        attempt += 1
    return attempt - 1


@pytest.mark.reliability_quick
@pytest.mark.parametrize("probability", [0.05, 0.10])
def test_random_failures_are_retried_within_the_limit(session, probability):
    seed, retries = 11, 4
    sp = session(fault_inject_prob=probability, random_seed=seed, max_retries=retries)
    table = aggregate_input(20_000)
    assert rows_of(aggregate_job(sp, table, 16, 16)) == expected_aggregate(table)
    finished = [e.key for e in sp.events if e.kind == "finished"]
    assert len(finished) == len(set(finished)) >= 33  # each task committed once
    expected = {key: _failed_attempts(key, seed, probability, retries) for key in finished}
    retried = [e for e in sp.events if e.kind == "retried"]
    assert Counter(e.key for e in retried) == Counter({k: n for k, n in expected.items() if n})
    assert sum(expected.values()) > 0, "the seed drew no fault: the test proves nothing"
    assert all("injected fault" in e.error and f"fault_inject_prob={probability:g}" in e.error
               for e in retried)
    assert not any(e.kind == "failed" for e in sp.events)
    assert leftovers(sp) == []


@pytest.mark.reliability_quick
def test_a_task_that_always_fails_stops_at_the_retry_limit(session, tmp_path):
    sp = session(fault_inject_prob=1.0, max_retries=2)
    output = tmp_path / "out"
    with pytest.raises(TaskError, match=r"\(SQL: .*\) failed: it failed 3 times; the last time: "
                                        r"injected fault in map[-\w]*\[0\], attempt 3") as info:
        sp.from_items(list(range(10))).map("item * 2 AS x").write_parquet(str(output))
    assert info.value.stage.startswith("map") and info.value.partition == 0
    assert not output.exists()
    assert [e.kind for e in sp.events].count("retried") == 2
    assert leftovers(sp) == []


@pytest.mark.reliability_quick
def test_a_function_that_always_raises_fails_once_and_names_itself(session, tmp_path):
    """An error of the user's code is deterministic: it is not retried (Ray's default too)."""
    sp = session(max_retries=2)

    def always_raises(table):
        raise ValueError("bad batch")

    output = tmp_path / "out"
    df = sp.from_items(list(range(10))).map_batches(always_raises)
    with pytest.raises(UserFunctionError, match="always_raises.*bad batch|bad batch"):
        df.write_parquet(str(output))
    assert not output.exists()
    assert [e.kind for e in sp.events].count("submitted") == 1
    assert "retried" not in [e.kind for e in sp.events]
    assert leftovers(sp) == []


@pytest.mark.reliability_quick
@pytest.mark.parametrize("value", [-0.1, 1.5, "often"])
def test_fault_probability_is_checked_at_init(tmp_path, value):
    import smallpond

    with pytest.raises(ConfigError, match="fault_inject_prob"):
        smallpond.init(data_root=str(tmp_path), fault_inject_prob=value)
