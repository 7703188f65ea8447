"""Shared fixtures: one `sp` Session per runner, and a maker of partitioned Parquet data."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, settings

import smallpond

# examples per hypothesis test: (local runner, Ray runner); Ray's task overhead is higher
PROFILES = {"ci": (25, 5), "thorough": (300, 60)}
for _name, (_examples, _) in PROFILES.items():
    settings.register_profile(
        _name, max_examples=_examples, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
RAY_EXAMPLES = int(os.environ.get("HYPOTHESIS_RAY_EXAMPLES", PROFILES.get(PROFILE, (0, 5))[1]))

RUNNERS = [r.strip() for r in os.environ.get("SMALLPOND_TEST_RUNNERS", "local,ray").split(",")
           if r.strip()]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ray_hypothesis: a hypothesis test run on the Ray runner (runs "
        "HYPOTHESIS_RAY_EXAMPLES examples: 5 in the ci profile, 60 in thorough)")


def _uses_ray(item) -> bool:
    return ("[ray" in item.nodeid or "ray_address" in getattr(item, "fixturenames", ())
            or item.get_closest_marker("ray_cluster") is not None)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    # examples per hypothesis test are fewer on Ray (task overhead is higher there)
    for item in items:
        if "[ray" in item.nodeid and hasattr(item.obj, "hypothesis"):
            item.add_marker(pytest.mark.ray_hypothesis)
    # Ray-backed tests last (stable, after pytest's own grouping by fixture parameter): the
    # embedded-runner tests run before the shared Ray instance starts (one that checks that
    # Ray is not started by a local session included), and Ray starts once for the rest
    items.sort(key=_uses_ray)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Tests marked ray_hypothesis run RAY_EXAMPLES examples (the settings are read per call,
    and restored after: the local parametrization of the same function keeps its count)."""
    test = getattr(item, "obj", None)
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if item.get_closest_marker("ray_hypothesis") is None or current is None:
        yield
        return
    test._hypothesis_internal_use_settings = settings(
        current, max_examples=min(current.max_examples, RAY_EXAMPLES))
    try:
        yield
    finally:
        test._hypothesis_internal_use_settings = current


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray instance for the whole test run (not one per test), as in 0.15's suite.

    Sessions get its GCS address; since Ray is initialized in this process they reuse it.
    """
    ray = pytest.importorskip("ray")
    temp_dir = None
    started = not ray.is_initialized()
    if started:
        # Ray's unix socket paths must stay short (~107 chars): not under pytest's tmp_path
        temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp_dir)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session", params=RUNNERS)
def sp(request, tmp_path_factory):
    """A Session on each runner; shared by the tests of a run so workers stay warm."""
    root = tmp_path_factory.mktemp(f"data-{request.param}")
    if request.param == "ray":
        address = request.getfixturevalue("ray_address")
        session = smallpond.init(data_root=str(root), runner="ray", ray_address=address)
    else:
        session = smallpond.init(data_root=str(root), runner=request.param, num_executors=2)
    yield session
    session.shutdown()


@pytest.fixture
def local_sp(tmp_path):
    """A private embedded-runner session (for tests that kill workers or count reuse)."""
    session = smallpond.init(data_root=str(tmp_path / "data"), runner="local", num_executors=2)
    yield session
    session.shutdown()


@pytest.fixture
def make_parquet(tmp_path):
    """Write a table as `files` Parquet files under tmp_path; return the folder."""
    counter = iter(range(1_000_000))

    def make(table: pa.Table, files: int = 3, row_group_size: int | None = None) -> str:
        folder = tmp_path / f"input-{next(counter)}"
        folder.mkdir()
        n = table.num_rows
        for i in range(files):
            lo, hi = i * n // files, (i + 1) * n // files
            pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i:03d}.parquet",
                           row_group_size=row_group_size)
        return str(folder)

    return make


@contextlib.contextmanager
def mounted_tmpfs(path, size: str):
    """A small tmpfs at `path`: a separate file system that fills up (needs root, as CI has)."""
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mounting a tmpfs needs root (CI runs as root): {done.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tmpfs():
    """`with tmpfs(path, "1m") as mount:` mounts a small file system for the test."""
    return mounted_tmpfs
