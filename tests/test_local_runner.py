"""The embedded runner: supervision, resume from committed tasks, recompute, events."""

from __future__ import annotations

import os
import signal
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

import smallpond


def _kinds(session, since: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in session.events[since:]:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts


def test_no_ray_started_by_default(local_sp):
    import sys

    local_sp.from_items([1]).count()
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_rerun_reuses_committed_tasks(local_sp):
    df = local_sp.from_items(list(range(100))).repartition(4, hash_by="item")
    agg = local_sp.partial_sql("SELECT count(*) AS c FROM {0}", df)
    first = agg.to_arrow()
    mark = len(local_sp.events)
    assert agg.to_arrow().equals(first)
    kinds = _kinds(local_sp, mark)
    assert kinds.get("finished", 0) == 0 and kinds["reused"] == 4


def test_resume_across_sessions(tmp_path):
    root = str(tmp_path / "root")
    with smallpond.init(data_root=root, num_executors=2) as first:
        df = first.from_items(list(range(50))).repartition(3, by_rows=True)
        expected = first.partial_sql("SELECT sum(item) AS s FROM {0}", df).to_arrow()
    with smallpond.init(data_root=root, num_executors=2) as second:
        df = second.from_items(list(range(50))).repartition(3, by_rows=True)
        again = second.partial_sql("SELECT sum(item) AS s FROM {0}", df).to_arrow()
        assert again.equals(expected)
        assert _kinds(second, 0).get("finished", 0) == 0


def test_changed_input_file_is_not_reused(local_sp, tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    assert local_sp.read_parquet(str(path)).map("sum(a) AS s").take_all() == [{"s": 6}]
    time.sleep(0.01)
    pq.write_table(pa.table({"a": [10, 20, 30, 40]}), path)
    assert local_sp.read_parquet(str(path)).map("sum(a) AS s").take_all() == [{"s": 100}]


def test_recompute_forces_rerun(local_sp):
    df = local_sp.from_items(list(range(10))).map("item * 2 AS x")
    df.count()
    mark = len(local_sp.events)
    assert df.recompute().count() == 10
    assert _kinds(local_sp, mark).get("finished", 0) >= 1


def test_killed_worker_task_is_retried(local_sp, tmp_path):

    def slow(table: pa.Table) -> pa.Table:
        time.sleep(0.4)
        return table

    df = local_sp.from_items(list(range(400))).repartition(8, by_rows=True).map_batches(slow)
    out = str(tmp_path / "out")
    killed = []

    def killer():
        deadline = time.time() + 20
        while time.time() < deadline and not killed:
            busy = [w.pid for w in local_sp.runner._busy.values() if w.pid]
            if busy:
                time.sleep(0.2)
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    df.write_parquet(out)
    thread.join()
    assert killed, "the test never found a busy worker to kill"
    assert sorted(pq.read_table(out).column("item").to_pylist()) == list(range(400))
    assert any(e.kind == "retried" for e in local_sp.events)
    # nothing of the killed attempt is left, wherever it could be (no filter on names)
    scratch = local_sp.config.scratch_dir
    assert os.listdir(os.path.join(scratch, "staging")) == []
    assert os.listdir(os.path.join(scratch, "spill")) == []
    tasks = local_sp.config.tasks_dir
    for key in os.listdir(tasks):  # only committed tasks, each with its manifest
        assert os.path.isfile(os.path.join(tasks, key, "_task.json")), key
    assert sorted(os.listdir(tmp_path)) == ["data", "out"]  # no staging beside the output
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [f"part-{i:05d}.parquet" for i in range(8)]


def test_events_report_progress(local_sp):
    mark = len(local_sp.events)
    df = local_sp.from_items(list(range(30))).repartition(3, by_rows=True)
    local_sp.partial_sql("SELECT * FROM {0}", df).count()
    finished = [e for e in local_sp.events[mark:] if e.kind == "finished"]
    assert len(finished) == 4  # one mapper + three queries
    assert sum(e.rows for e in finished if e.stage.startswith("partial_sql")) == 30


def test_shuffles_stream_in_many_chunks(tmp_path, monkeypatch):
    # tiny chunks: every mapper writes many row groups per destination, all must line up
    monkeypatch.setenv("SMALLPOND_SHUFFLE_CHUNK_ROWS", "37")
    import duckdb

    with smallpond.init(data_root=str(tmp_path / "root"), num_executors=2) as sp:
        items = [{"k": (i * 7919) % 1000, "v": i} for i in range(3000)]
        df = sp.from_items(items).repartition(3, by_rows=True)
        ranged = df.repartition(4, range_by="k").partial_sort(["k", "v"])
        keys = [(r["k"], r["v"]) for r in ranged.take_all()]
        assert keys == sorted(keys)
        hashed = sp.partial_sql("SELECT k, count(*) AS c FROM {0} GROUP BY k",
                                df.repartition(5, hash_by="k"))
        con = duckdb.connect()
        expected = dict(con.execute(
            "SELECT k, count(*) FROM (SELECT (i * 7919) % 1000 AS k FROM range(3000) t(i)) "
            "GROUP BY k").fetchall())
        assert {r["k"]: r["c"] for r in hashed.take_all()} == expected
        in_order = df.repartition(4, by_rows=True).take_all()
        assert [r["v"] for r in in_order] == list(range(3000))


def test_ctrl_c_cancels_running_tasks_and_session_stays_usable(local_sp):
    import pytest

    def slow(table: pa.Table) -> pa.Table:
        time.sleep(120)
        return table

    calls = []

    def interrupt(event):
        calls.append(event)
        if event.kind == "submitted" and len(calls) >= 2:
            raise KeyboardInterrupt

    local_sp._on_event = interrupt
    df = local_sp.from_items(list(range(100))).repartition(4, by_rows=True).map_batches(slow)
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        df.count()
    assert time.time() - started < 60  # did not wait for the sleeping tasks (120 s each)
    del local_sp._on_event
    staging = os.path.join(local_sp.config.scratch_dir, "staging")
    time.sleep(0.2)
    assert os.listdir(staging) == []
    assert local_sp.from_items([1, 2, 3]).count() == 3
