"""Commit and cache integrity: R3 duplicate attempts, R13 tampered manifests, R14 flipped bytes
in committed intermediates, R16 writing into an existing output. Both runners.

Already proven elsewhere (not repeated here): tests/test_safety.py covers the atomic overwrite
that a failure rolls back (test_failed_overwrite_keeps_the_old_output, ..._on_a_full_other_
file_system_..., test_a_writer_killed_mid_publish_is_rolled_back_by_the_next) and edits of a
published output that must not reach the cache (test_outputs_are_not_linked_to_the_cache_...).
"""

from __future__ import annotations

import json
import os
import time

import pyarrow.parquet as pq
import pytest

from smallpond.errors import OutputExistsError
from smallpond.logical.optimizer import optimize
from smallpond.planner.planner import Planner
from smallpond.runners.base import resolve_inputs
from smallpond.runners.execute import MANIFEST_NAME, load_committed

from .helpers import kinds, leftovers

QUICK = pytest.mark.reliability_quick


# -- R3 -----------------------------------------------------------------------------------------
def _barrier_function(folder: str, parties: int = 2):
    """Every attempt waits here until `parties` attempts reached it, then tags its rows."""

    def tag_attempt(table):
        import os
        import time
        import uuid

        import pyarrow as pa

        me = uuid.uuid4().hex
        open(os.path.join(folder, me), "w").close()
        deadline = time.monotonic() + 120
        while len(os.listdir(folder)) < parties and time.monotonic() < deadline:
            time.sleep(0.01)
        return table.append_column("attempt", pa.array([me] * table.num_rows))

    return tag_attempt


@QUICK
def test_two_attempts_of_one_task_commit_exactly_once(session, tmp_path):
    sp = session()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    source = sp.from_items(list(range(50)))
    source.count()  # its task commits: the duplicated task reads it
    df = source.map_batches(_barrier_function(str(barrier)))
    planner = Planner(sp.scope)
    planner.add_output(optimize(df._node))
    graph = planner.graph
    [task] = [t for t in graph if t.kernel == "python"]
    done = {dep: load_committed(sp.config.data_root, dep) for dep in task.deps}
    inputs = resolve_inputs(task, done)
    runner = sp.runner
    handles = [runner.submit(task, inputs, runner._settings(task.key, n, False, 1))
               for n in (1, 2)]
    results = {}
    deadline = time.monotonic() + 180
    while len(results) < 2 and time.monotonic() < deadline:
        for handle, output in runner.wait([h for h in handles if h not in results], 1.0):
            results[handle] = output
    first, second = (results[h] for h in handles)
    assert not isinstance(first, BaseException) and not isinstance(second, BaseException)
    assert len(os.listdir(barrier)) == 2  # both attempts ran their kernel to the end
    committed = load_committed(sp.config.data_root, task.key)
    assert [f.name for f in first.files] == [f.name for f in second.files] == \
        [f.name for f in committed.files]
    table = pq.read_table(committed.directory)
    assert len(set(table["attempt"].to_pylist())) == 1  # one attempt's files, whole
    assert sorted(table["item"].to_pylist()) == list(range(50))
    assert sorted(os.listdir(committed.directory)) == sorted(
        [MANIFEST_NAME, *(f.name for f in committed.files)])
    assert leftovers(sp) == []  # the loser's staging is gone


# -- R13 ----------------------------------------------------------------------------------------
def _tamper(path: str, how: str) -> None:
    data = json.load(open(path))
    if how == "row counts":
        for f in data["files"]:
            f["num_rows"] += 1  # a plausible lie, without a matching digest
    elif how == "file list":
        data["files"] = data["files"][:0]
    elif how == "another task's key":
        data["key"] = "sql-" + "0" * 24
        from smallpond.planner.graph import manifest_digest

        data["digest"] = manifest_digest(data)  # a consistent manifest, of the wrong task
    elif how == "garbage":
        open(path, "w").write("{not json")
        return
    json.dump(data, open(path, "w"))


@pytest.mark.parametrize("how", [pytest.param("row counts", marks=QUICK), "file list",
                                 "another task's key", "garbage"])
def test_a_tampered_manifest_is_never_trusted(session, how):
    sp = session()
    df = sp.partial_sql("SELECT item * 2 AS x FROM {0}",
                        sp.from_items(list(range(100))).repartition(3, by_rows=True))
    assert sorted(df.to_arrow()["x"].to_pylist()) == [2 * i for i in range(100)]
    tasks = os.path.join(sp.config.data_root, "tasks")
    for key in os.listdir(tasks):
        _tamper(os.path.join(tasks, key, MANIFEST_NAME), how)
    mark = len(sp.events)
    assert sorted(df.to_arrow()["x"].to_pylist()) == [2 * i for i in range(100)]
    assert "reused" not in kinds(sp.events, mark)
    for key in os.listdir(tasks):  # replaced by sound entries
        assert load_committed(sp.config.data_root, key) is not None


# -- R14 ----------------------------------------------------------------------------------------
def _damage(path: str, how: str) -> None:
    stat = os.stat(path)
    data = bytearray(open(path, "rb").read())
    if how == "flipped byte":
        data[len(data) // 2] ^= 0x01
    elif how == "truncated":
        data = data[: len(data) - 7]
    open(path, "wb").write(bytes(data))
    if how == "removed":
        os.remove(path)
        return
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as if untouched


@pytest.mark.parametrize("how", [pytest.param("flipped byte", marks=QUICK), "truncated",
                                 "removed"])
def test_a_damaged_intermediate_is_detected_and_its_producer_run_again(session, how):
    first = session()
    shuffled = first.from_items(list(range(1000))).repartition(4, hash_by="item")
    query = "SELECT sum(item) AS s, count(*) AS c FROM {0}"
    expected = sorted(first.partial_sql(query, shuffled).take_all(), key=str)
    tasks = os.path.join(first.config.data_root, "tasks")
    [victim] = [os.path.join(tasks, key, name) for key in os.listdir(tasks)
                if key.startswith("shuffle") for name in os.listdir(os.path.join(tasks, key))
                if name.endswith(".parquet")]
    _damage(victim, how)
    # a new session (the run that resumes): a reader of the damaged output needs it again
    again = session(data_root=first.config.data_root)
    shuffled = again.from_items(list(range(1000))).repartition(4, hash_by="item")
    result = again.partial_sql("SELECT sum(item) + 0 AS s, count(*) AS c FROM {0}", shuffled)
    assert sorted(result.take_all(), key=str) == expected
    assert any(e.kind == "finished" and e.stage.startswith("shuffle")
               for e in again.events)  # the producer ran again
    assert not any(e.kind == "reused" and e.stage.startswith("shuffle") for e in again.events)


# -- R16 ----------------------------------------------------------------------------------------
@QUICK
def test_mode_error_refuses_before_running(session, tmp_path):
    sp = session()
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    mark = len(sp.events)
    with pytest.raises(OutputExistsError, match="notes.txt|already holds"):
        sp.from_items([1, 2]).map("item AS x").write_parquet(str(output))
    assert sp.events[mark:] == []  # refused before any task ran
    assert os.listdir(output) == ["notes.txt"]


@QUICK
def test_append_never_touches_what_is_there(session, tmp_path):
    sp = session()
    output = str(tmp_path / "out")
    first = sp.from_items(list(range(30))).repartition(3, by_rows=True).map("item AS x")
    first.write_parquet(output)
    before = {n: open(os.path.join(output, n), "rb").read() for n in os.listdir(output)
              if n.startswith("part-")}
    second = sp.from_items(list(range(30, 50))).repartition(2, by_rows=True).map("item AS x")
    second.write_parquet(output, mode="append")
    after = {n: open(os.path.join(output, n), "rb").read() for n in os.listdir(output)
             if n.startswith("part-")}
    assert sorted(after) == [f"part-{i:05d}.parquet" for i in range(5)]
    assert all(after[n] == data for n, data in before.items())
    assert sorted(pq.read_table(output)["x"].to_pylist()) == list(range(50))
    manifest = json.load(open(os.path.join(output, "_SUCCESS")))
    assert sorted(f["name"] for f in manifest["files"]) == sorted(after)
