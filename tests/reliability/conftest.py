"""The reliability suite R1-R16 (see README, "Reliability").

Every test here is marked `reliability`; the ones marked `reliability_quick` also run in the
default `python -m pytest tests`. The whole suite runs with `python -m pytest -m reliability
tests` (or by naming this folder or a test in it).
"""

from __future__ import annotations

import os

import pytest

import smallpond

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNERS = [r.strip() for r in os.environ.get("SMALLPOND_TEST_RUNNERS", "local,ray").split(",")
           if r.strip()]


def _inside(path) -> bool:
    return os.path.abspath(str(path)).startswith(HERE + os.sep)


def _full_suite(config) -> bool:
    if "reliability" in (config.getoption("markexpr", "") or ""):
        return True
    return any(_inside(arg.split("::")[0]) or os.path.abspath(arg.split("::")[0]) == HERE
               for arg in config.args)


def _quick(item) -> bool:
    """Marked `reliability_quick`, and on one of its `runners=(...)` if the mark names some."""
    mark = item.get_closest_marker("reliability_quick")
    if mark is None:
        return False
    runners = mark.kwargs.get("runners")
    callspec = getattr(item, "callspec", None)
    runner = callspec.params.get("runner") if callspec is not None else None
    return runners is None or runner is None or runner in runners


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    full = _full_suite(config)
    kept, dropped = [], []
    for item in items:
        if not _inside(item.path):
            kept.append(item)
            continue
        item.add_marker(pytest.mark.reliability)
        if full or _quick(item):
            kept.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=RUNNERS)
def runner(request) -> str:
    """Each test that takes it runs on every runner (ray ones last, on the suite's Ray)."""
    return request.param


@pytest.fixture
def session(request, tmp_path, runner):
    """`session(**init_options)`: a private session on the test's runner, shut down after."""
    made = []

    def make(**options) -> smallpond.Session:
        options.setdefault("data_root", str(tmp_path / f"data-{len(made)}"))
        if runner == "ray":
            options.setdefault("ray_address", request.getfixturevalue("ray_address"))
        else:
            options.setdefault("num_executors", 2)
        sp = smallpond.init(runner=runner, **options)
        made.append(sp)
        return sp

    yield make
    for sp in made:
        sp.shutdown()
