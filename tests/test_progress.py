"""Progress events and the progress display (smallpond/progress.py), on both runners."""

from __future__ import annotations

import threading

import pytest

from smallpond import progress as progress_module
from smallpond.progress import JobProgress, progress_mode
from smallpond.runners.base import TaskEvent

_NEXT = {  # kind -> kinds that may follow it for the same task within one action
    None: {"pending", "reused"},
    "pending": {"submitted"},
    "submitted": {"finished", "failed", "retried"},
    "retried": {"submitted"},
}


def _run_recorded(sp, build):
    seen: list[TaskEvent] = []
    remove = sp.on_event(seen.append)
    try:
        result = build()
    finally:
        remove()
    return seen, result


def _check_sequences(events: list[TaskEvent]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for event in events:
        kinds = by_key.setdefault(event.key, [])
        last = kinds[-1] if kinds else None
        assert event.kind in _NEXT.get(last, set()), (event.key, kinds, event.kind)
        kinds.append(event.kind)
    for key, kinds in by_key.items():
        assert kinds[-1] in ("finished", "reused"), (key, kinds)
    first_submit = min(i for i, e in enumerate(events) if e.kind == "submitted")
    last_announce = max(i for i, e in enumerate(events) if e.kind in ("pending", "reused"))
    assert last_announce < first_submit  # the job's size is known before anything runs
    return by_key


def test_events_are_complete_and_ordered(sp):
    df = sp.from_items([{"k": i % 7, "v": i} for i in range(500)])
    shuffled = df.repartition(3, hash_by="k")
    sql = "SELECT k, sum(v) AS s FROM {0} GROUP BY k"
    events, rows = _run_recorded(sp, sp.partial_sql(sql, shuffled).recompute().take_all)
    plain = sp.partial_sql(sql, shuffled)
    by_key = _check_sequences(events)
    finished = [e for e in events if e.kind == "finished"]
    assert len(finished) == len(by_key)  # recompute: every task ran
    assert sum(r["s"] for r in rows) == sum(range(500))
    for event in finished:
        assert event.worker and event.ended >= event.started > 0 and event.peak_rss > 0
        assert event.at >= event.ended - 1.0  # the driver saw it after it ended (clock slack)
    # the same action again reuses every task: reused events only
    again, _ = _run_recorded(sp, plain.count)
    assert {e.kind for e in again} == {"reused"}
    progress = JobProgress("x")
    for event in events:
        progress.on_event(event)
    stages = progress.stages()
    assert all(s.complete == s.total and s.running == 0 for s in stages)
    sql_stage = [s for s in stages if s.name.startswith("partial_sql")][0]
    assert sql_stage.rows == 7 and sql_stage.total == 3


def test_counters_follow_retries_and_failures():
    progress = JobProgress("job", ["a", "b"])
    events = [TaskEvent("pending", "b", 0, "k1"), TaskEvent("reused", "a", 0, "k0", 10, 100),
              TaskEvent("submitted", "b", 0, "k1"), TaskEvent("retried", "b", 0, "k1"),
              TaskEvent("submitted", "b", 0, "k1"), TaskEvent("failed", "b", 0, "k1")]
    for event in events:
        progress.on_event(event)
    a, b = progress.stages()
    assert (a.name, a.reused, a.total, a.rows) == ("a", 1, 1, 10)
    assert (b.name, b.retries, b.failed, b.running, b.total) == ("b", 1, 1, 0, 1)
    rows = progress.rows()
    assert rows[0]["state"] == "reused" and rows[1]["state"] == "failed"
    assert "1 retried" in rows[1]["notes"] and "1 failed" in rows[1]["notes"]


def test_forced_progress_prints_every_stage(sp, capsys):
    sp.progress = True
    try:
        df = sp.from_items(list(range(100))).repartition(2, by_rows=True)
        sql = "SELECT item + 1 AS x FROM {0}"
        events, _ = _run_recorded(sp, sp.partial_sql(sql, df).recompute().count)
        out = sp.partial_sql(sql, df)
        text = capsys.readouterr().err
        assert "count" in text and "success" in text
        stages = {e.stage for e in events if e.kind == "finished"}
        assert len(stages) == 2 and all(stage in text for stage in stages)
        out.count()  # all reused now
        assert "reused" in capsys.readouterr().err
    finally:
        sp.progress = None


def test_progress_off_and_auto_without_terminal_print_nothing(sp, capsys, monkeypatch):
    monkeypatch.delenv("SMALLPOND_PROGRESS", raising=False)
    for setting in (False, None):
        sp.progress = setting
        sp.from_items([1, 2]).map("item * 3 AS y").recompute().count()
        assert "smallpond" not in capsys.readouterr().err
    sp.progress = None


@pytest.mark.parametrize("setting, env, expected", [
    (False, "1", None), ("off", None, None), (None, "0", None), (None, "auto", None),
    (True, None, "terminal"), (None, "1", "terminal"), ("on", "0", "terminal")])
def test_progress_mode_settings(monkeypatch, setting, env, expected):
    if env is None:
        monkeypatch.delenv("SMALLPOND_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("SMALLPOND_PROGRESS", env)
    assert progress_mode(setting)[0] == expected  # pytest's stderr is not a terminal


def test_drawing_never_happens_on_the_scheduling_thread(sp, monkeypatch, capsys):
    threads = set()
    original = JobProgress.__rich__

    def spy(self):
        threads.add(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(JobProgress, "__rich__", spy)
    sp.progress = True
    try:
        sp.from_items(list(range(50))).repartition(2, by_rows=True).map("item").recompute() \
            .count()
    finally:
        sp.progress = None
    capsys.readouterr()
    assert threads and threading.main_thread().name not in threads


def test_notebook_display_updates_one_output_in_place(sp, monkeypatch):
    shown: list[str] = []

    class Handle:
        def update(self, obj):
            shown.append(obj.data)

    def display(obj, display_id=None):
        assert display_id is True
        shown.append(obj.data)
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(progress_module, "_in_notebook", lambda: True)
    sp.progress = True
    try:
        df = sp.from_items(list(range(60))).repartition(3, by_rows=True)
        sp.partial_sql("SELECT item FROM {0}", df).recompute().count()
    finally:
        sp.progress = None
    assert len(shown) >= 2 and "<progress" in shown[-1] and "success" in shown[-1]
    assert "partial_sql" in shown[-1] and "3/3" in shown[-1]


def test_graysort_command_shows_progress(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from smallpond.cli import main

    monkeypatch.setenv("SMALLPOND_PROGRESS", "1")
    result = CliRunner().invoke(main, [
        "graysort", "--records", "20000", "--output", str(tmp_path / "sorted"),
        "--partitions", "2", "--runner", "local", "--data-root", str(tmp_path / "root"),
        "--no-validate"])
    assert result.exit_code == 0, result.output
    assert "smallpond graysort · success" in result.stderr
    for stage in ("graysort-bounds", "graysort-map", "graysort-sort"):
        assert stage in result.stderr
    assert "records: 20000" in result.stdout
    assert "graysort-sort" not in result.stdout  # progress never mixes with the results
