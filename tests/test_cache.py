"""What data_root holds, and removing it safely (smallpond/cache.py, `smallpond cache`)."""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

import smallpond
from smallpond.cache import evict, parse_age, scan
from smallpond.cli import main


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "data")


def _session(root, **options):
    return smallpond.init(data_root=root, runner="local", num_executors=1, **options)


def _run(sp, tag: str, rows: int = 200) -> int:
    df = sp.from_items([{"x": i, "tag": tag} for i in range(rows)])
    return sp.partial_sql("SELECT x * 2 AS y, tag FROM {0}", df).count()


def _task_dirs(root) -> set[str]:
    return {name for name in os.listdir(os.path.join(root, "tasks"))
            if not name.startswith(".")}


def _two_jobs(root, first: str, second: str) -> tuple[set[str], set[str]]:
    """Run a job `first` (closed), then a job `second`; the task folders each one made."""
    with _session(root, job_id=first) as sp:
        _run(sp, first)
    made = _task_dirs(root)
    with _session(root, job_id=second) as sp:
        _run(sp, second)
    return made, _task_dirs(root) - made


def _folder_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def test_listing_counts_jobs_tasks_and_bytes(root):
    _two_jobs(root, "job-a", "job-b")
    listing = scan(root)
    assert set(listing.jobs) == {"job-a", "job-b"}
    assert set(listing.tasks) == _task_dirs(root)
    assert listing.task_bytes == sum(_folder_bytes(os.path.join(root, "tasks", k))
                                     for k in listing.tasks)
    assert all(job.status == "success" and not job.live for job in listing.jobs.values())
    result = CliRunner().invoke(main, ["cache", "--data-root", root])
    assert result.exit_code == 0, result.output
    assert "job-a" in result.output and "job-b" in result.output
    assert f"tasks: {len(listing.tasks)} committed" in result.output


def test_clean_removes_only_task_folders_and_records(root):
    with _session(root, job_id="job-a") as sp:
        _run(sp, "a")
    keep = {
        os.path.join(root, "tasks", "notes-from-a-user"): "text",
        os.path.join(root, "tasks", "sql-zz"): "not a task key",
        os.path.join(root, "my-file.txt"): "mine",
        os.path.join(root, "sources", "keep.parquet"): "source",
    }
    for path, text in keep.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    outside = os.path.join(os.path.dirname(root), "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "precious"), "w") as handle:
        handle.write("x")
    link = os.path.join(root, "tasks", "sql-" + "0" * 24)  # looks like a task, links outside
    os.symlink(outside, link)
    result = CliRunner().invoke(main, ["cache", "--data-root", root, "clean", "--all"])
    assert result.exit_code == 0, result.output
    assert all(open(p).read() == t for p, t in keep.items())
    assert os.path.islink(link) and os.path.exists(os.path.join(outside, "precious"))
    assert _task_dirs(root) == {"notes-from-a-user", "sql-zz", os.path.basename(link)}
    assert not os.path.exists(os.path.join(root, "runs", "job-a"))


def test_tasks_a_live_session_pinned_are_kept(root):
    with _session(root, job_id="old") as sp:
        _run(sp, "old")
    old = _task_dirs(root)
    with _session(root, job_id="live") as live:  # still open while the cache is cleaned
        _run(live, "live")
        needed = _task_dirs(root) - old
        live._area.pin(needed)  # what a running action of that session records
        result = evict(root, everything=True)
        assert _task_dirs(root) == needed and result.kept_pinned == len(needed)
        assert "live" not in result.jobs and os.path.isdir(os.path.join(root, "runs", "live"))
        live._area.unpin()
    # the session is closed now: its job and tasks may go
    evict(root, everything=True)
    assert _task_dirs(root) == set()


def test_clean_by_age_and_by_job(root):
    first, second = _two_jobs(root, "first", "second")
    long_ago = time.time() - 10 * 86400
    for key in first:
        os.utime(os.path.join(root, "tasks", key), (long_ago, long_ago))
    dry = evict(root, older_than=parse_age("7d"), dry_run=True)
    assert set(dry.tasks) == first and _task_dirs(root) == first | second
    evict(root, older_than=parse_age("7d"))
    assert _task_dirs(root) == second
    result = CliRunner().invoke(main, ["cache", "--data-root", root, "clean", "--job", "second"])
    assert result.exit_code == 0, result.output
    assert _task_dirs(root) == set() and not os.path.exists(os.path.join(root, "runs", "second"))
    missing = CliRunner().invoke(main, ["cache", "--data-root", root, "clean", "--job", "nope"])
    assert missing.exit_code == 2 and "no job 'nope'" in missing.output


def test_a_job_keeps_tasks_another_job_also_used(root):
    with _session(root, job_id="one") as sp:
        _run(sp, "shared")
    with _session(root, job_id="two") as sp:
        _run(sp, "shared")  # reuses every task of job one
    shared = _task_dirs(root)
    evict(root, job="one")
    assert _task_dirs(root) == shared
    assert not os.path.exists(os.path.join(root, "runs", "one"))


def test_reuse_marks_tasks_as_used(root):
    with _session(root) as sp:
        _run(sp, "a")
        keys = _task_dirs(root)
        long_ago = time.time() - 86400
        for key in keys:
            os.utime(os.path.join(root, "tasks", key), (long_ago, long_ago))
        _run(sp, "a")  # reused
        assert all(time.time() - os.path.getmtime(os.path.join(root, "tasks", k)) < 3600
                   for k in keys)


def test_size_budget_evicts_least_recently_used_and_results_stay_right(root):
    with _session(root) as sp:
        for tag in ("a", "b"):
            _run(sp, tag, rows=3000)
        full = scan(root).task_bytes
    per_job = full // 2
    with _session(root, cache_budget=int(per_job * 1.5)) as sp:
        assert _run(sp, "c", rows=3000) == 3000  # over budget: the oldest tasks go
        listing = scan(root)
        assert listing.task_bytes <= int(per_job * 1.5)
        # this action's task stayed (the caller reads it); the older ones went
        mark = len(sp.events)
        assert _run(sp, "c", rows=3000) == 3000
        assert [e.kind for e in sp.events[mark:]] == ["reused"]
        mark = len(sp.events)
        assert _run(sp, "a", rows=3000) == 3000  # evicted: computed again, same answer
        assert "finished" in [e.kind for e in sp.events[mark:]]


def test_parse_age():
    assert parse_age("90") == 90 and parse_age("30m") == 1800 and parse_age("2w") == 1209600
    with pytest.raises(ValueError):
        parse_age("soon")


def test_cleaning_while_an_action_runs_leaves_it_intact(root):
    import threading

    def slow(table):
        import time as clock

        clock.sleep(1.0)
        return table

    with _session(root) as sp:
        source = sp.from_items(list(range(100))).repartition(2, by_rows=True)
        first_done = threading.Event()
        remove = sp.on_event(lambda e: e.kind == "finished" and first_done.set())
        result = {}
        worker = threading.Thread(target=lambda: result.update(
            rows=sp.partial_sql("SELECT item * 2 AS y FROM {0}",
                                source.map_batches(slow)).take_all()))
        worker.start()
        assert first_done.wait(60)  # the shuffle committed; the slow tasks run now
        removed = evict(root, everything=True)
        worker.join(120)
        remove()
        assert removed.kept_pinned >= 1 and not removed.tasks  # every task was in use
        assert sorted(r["y"] for r in result["rows"]) == [2 * i for i in range(100)]
