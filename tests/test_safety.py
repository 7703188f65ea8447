"""Data safety: never delete, overwrite or silently corrupt what the user did not ask for.

Each test reproduces a way the trunk once lost or corrupted data (issue 13, items 1-10) and
checks the fix, on both runners where the runner matters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smallpond
import smallpond.errors
from smallpond.errors import (
    DiskFullError,
    OutputError,
    OutputExistsError,
    PlanError,
    SqlError,
)
from smallpond.graysort.gensort import write_gensort_file
from smallpond.graysort.job import run as graysort


def _tree(path) -> dict[str, bytes]:
    """Every file under `path` (hidden ones too) with its bytes."""
    found = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as handle:
                found[os.path.relpath(full, path)] = handle.read()
    return found


def _siblings(path) -> list[str]:
    """Hidden staging folders smallpond left beside an output."""
    parent, name = os.path.split(str(path))
    return [n for n in os.listdir(parent) if n.startswith(f".{name}.smallpond-")]


# -- 1, 9, 10: graysort outputs ----------------------------------------------------------------
@pytest.fixture
def gensort_input(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    path = folder / "in.dat"
    write_gensort_file(str(path), 3000, 0)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub").mkdir()
    (folder / "sub" / "keep.bin").write_bytes(b"\x00" * 10)
    return folder, path


def test_graysort_refuses_the_folder_holding_its_input(sp, gensort_input):
    folder, path = gensort_input
    before = _tree(folder)
    with pytest.raises(OutputError, match="contains the input"):
        graysort(str(folder), input=str(path), partitions=2, session=sp)
    assert _tree(folder) == before


def test_graysort_refuses_a_folder_of_other_files_unless_overwrite(sp, gensort_input,
                                                                   tmp_path):
    folder, path = gensort_input
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.txt").write_text("keep me")
    (out / "part-00009.dat").write_bytes(b"old part")
    with pytest.raises(OutputExistsError, match="report.txt"):
        graysort(str(out), input=str(path), partitions=2, session=sp)
    assert sorted(os.listdir(out)) == ["part-00009.dat", "report.txt"]
    result = graysort(str(out), input=str(path), partitions=2, session=sp, overwrite=True)
    assert result.valid
    # only smallpond's files were replaced: the old part went, the report stayed
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000.dat", "part-00001.dat",
                                       "report.txt"]
    assert (out / "report.txt").read_text() == "keep me"
    assert (out / "part-00000.dat").read_bytes() + (out / "part-00001.dat").read_bytes() \
        == _sorted_records(path.read_bytes())
    assert not _siblings(out)


def _sorted_records(data: bytes) -> bytes:
    records = [data[i:i + 100] for i in range(0, len(data), 100)]
    return b"".join(sorted(records, key=lambda r: r[:10]))


def test_graysort_refuses_outputs_overlapping_the_data_root(sp, tmp_path):
    root = sp.config.data_root
    for output in (root, os.path.join(root, "tasks", "x"), os.path.dirname(root)):
        with pytest.raises(OutputError, match="data_root"):
            graysort(output, records=100, partitions=1, session=sp)
    assert os.path.isdir(os.path.join(root, "tasks"))


@pytest.mark.parametrize("partitions", [-1, 0, 10**6, 101])
def test_graysort_checks_partitions_before_writing(sp, tmp_path, partitions):
    out = tmp_path / "out"
    with pytest.raises(PlanError, match="partitions"):
        graysort(str(out), records=100, partitions=partitions, session=sp)
    assert not out.exists()


def test_graysort_resolves_a_relative_output_where_it_was_given(sp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = graysort("rel-out", records=2000, partitions=2, session=sp)
    assert result.valid
    assert sorted(os.listdir(tmp_path / "rel-out")) == ["_SUCCESS", "part-00000.dat",
                                                        "part-00001.dat"]
    assert all(f.startswith(str(tmp_path / "rel-out")) for f in result.output_files)


def test_graysort_cli_refuses_in_one_line(tmp_path, gensort_input):
    folder, path = gensort_input
    before = _tree(folder)
    done = subprocess.run(
        [sys.executable, "-m", "smallpond.cli", "graysort", "--input", str(path), "--output",
         str(folder), "--data-root", str(tmp_path / "root")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smallpond: error: ") and "input" in lines[0]
    assert _tree(folder) == before


# -- 2: outputs overlapping the data_root or an input ------------------------------------------
def test_write_parquet_refuses_a_path_containing_the_data_root(sp, tmp_path):
    root = sp.config.data_root
    parent = os.path.dirname(root)
    df = sp.from_items(list(range(10)))
    with pytest.raises(OutputError, match="data_root"):
        df.write_parquet(parent, mode="overwrite")
    with pytest.raises(OutputError, match="data_root"):
        df.write_parquet(os.path.join(root, "inside"), mode="overwrite")
    assert os.path.isdir(os.path.join(root, "tasks"))
    assert df.count() == 10  # the session still works


def test_write_parquet_refuses_to_overlap_its_input(sp, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), folder / "x.parquet")
    before = _tree(folder)
    df = sp.read_parquet(str(folder))
    for output in (folder, folder / "out", tmp_path):
        with pytest.raises(OutputError, match="input"):
            df.write_parquet(str(output), mode="overwrite")
    assert _tree(folder) == before


def test_write_parquet_refuses_a_file(sp, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("precious")
    with pytest.raises(OutputError, match="is a file"):
        sp.from_items([1]).write_parquet(str(target), mode="overwrite")
    assert target.read_text() == "precious"


# -- 3: overwrite is atomic, also across file systems ------------------------------------------
def test_failed_overwrite_keeps_the_old_output(sp, tmp_path, monkeypatch):
    out = tmp_path / "out"
    sp.from_items(list(range(30))).repartition(3, by_rows=True).write_parquet(str(out))
    before = _tree(out)
    real_rename = os.rename
    calls = []

    def failing_rename(source, target, *args, **kwargs):
        # fail while new parts are being moved in (after old ones were moved aside)
        if str(target).startswith(str(out) + os.sep) and "part-" in str(target):
            calls.append(target)
            if len(calls) == 2:
                raise OSError(5, "injected I/O error")
        return real_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OutputError, match="untouched"):
        sp.from_items(list(range(100, 140))).repartition(4, by_rows=True) \
            .write_parquet(str(out), mode="overwrite")
    monkeypatch.undo()
    assert len(calls) == 2
    assert _tree(out) == before
    assert not _siblings(out)
    assert sorted(sp.read_parquet(str(out)).to_arrow()["item"].to_pylist()) == list(range(30))


def test_overwrite_on_a_full_other_file_system_keeps_the_old_output(sp, tmp_path, tmpfs):
    with tmpfs(tmp_path / "small", "1m") as mount:
        out = os.path.join(mount, "out")
        sp.from_items(list(range(10))).write_parquet(out)
        before = _tree(out)
        big = pa.table({"s": [os.urandom(4000).hex() for _ in range(400)]})  # ~3 MB
        with pytest.raises(DiskFullError) as info:
            sp.from_arrow(big).write_parquet(out, mode="overwrite")
        assert info.value.mount == mount
        assert _tree(out) == before
        assert not _siblings(out) and sorted(os.listdir(mount)) == ["out"]


def test_a_writer_killed_mid_publish_is_rolled_back_by_the_next(sp, tmp_path):
    """kill -9 between moving old parts aside and finishing: the next writer restores them."""
    from smallpond.io.commit import write_json_atomic

    out = tmp_path / "out"
    sp.from_items(list(range(20))).repartition(2, by_rows=True).write_parquet(str(out))
    before = _tree(out)
    # the state a killed writer leaves: its staging folder with a journal, one old part
    # moved aside, one new part moved in, the manifest gone; its owner process is dead
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    staging = tmp_path / ".out.smallpond-deadbeef0000"
    (staging / "new").mkdir(parents=True)
    (staging / "backup").mkdir()
    write_json_atomic(str(staging / "owner.json"),
                      {"host": os.uname().nodename, "pid": int(dead), "pid_start": 1.0})
    write_json_atomic(str(staging / "journal.json"), {
        "path": str(out), "state": "started",
        "backed_up": ["_SUCCESS", "part-00000.parquet", "part-00001.parquet"],
        "added": ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]})
    os.rename(out / "_SUCCESS", staging / "backup" / "_SUCCESS")
    os.rename(out / "part-00000.parquet", staging / "backup" / "part-00000.parquet")
    pq.write_table(pa.table({"item": [999]}), out / "part-00000.parquet")  # a new part
    # the next write rolls the dead one back first, then appends to the restored output
    sp.from_items([1000]).write_parquet(str(out), mode="append")
    assert not _siblings(out)
    after = _tree(out)
    assert {k: v for k, v in after.items() if k in before and k != "_SUCCESS"} == \
        {k: v for k, v in before.items() if k != "_SUCCESS"}
    values = sorted(sp.read_parquet(str(out)).to_arrow()["item"].to_pylist())
    assert values == [*range(20), 1000]


def test_a_live_writer_of_the_same_output_is_not_disturbed(sp, tmp_path):
    from smallpond.io.commit import write_json_atomic
    from smallpond.io.sessions import current_owner

    out = tmp_path / "out"
    staging = tmp_path / ".out.smallpond-live00000000"
    staging.mkdir()
    write_json_atomic(str(staging / "owner.json"), current_owner())  # this process: alive
    with pytest.raises(OutputError, match="another smallpond job is writing"):
        sp.from_items([1]).write_parquet(str(out))
    assert staging.is_dir() and not out.exists()


# -- 4: published files never share storage with the cache --------------------------------------
def test_outputs_are_not_linked_to_the_cache_and_edits_are_detected(sp, tmp_path):
    out = tmp_path / "out"
    df = sp.from_items(list(range(50))).repartition(2, by_rows=True) \
        .map("item * 2 AS doubled")
    df.write_parquet(str(out))
    for name in os.listdir(out):
        assert os.stat(out / name).st_nlink == 1
    # a user rewrites a published file in place: the next job must not be affected
    first = out / "part-00000.parquet"
    pq.write_table(pa.table({"doubled": [-1]}), first)
    again = tmp_path / "again"
    df.write_parquet(str(again))
    assert sorted(sp.read_parquet(str(again)).to_arrow()["doubled"].to_pylist()) == \
        [2 * i for i in range(50)]


def _committed_file(session, stage_prefix: str) -> str:
    tasks = os.path.join(session.config.data_root, "tasks")
    for key in sorted(os.listdir(tasks)):
        if key.startswith(stage_prefix):
            folder = os.path.join(tasks, key)
            names = [n for n in os.listdir(folder) if n.endswith(".parquet")]
            if names:
                return os.path.join(folder, names[0])
    raise AssertionError(f"no committed {stage_prefix} task")


def _by_partition(session, aggregate: str):
    df = session.from_items(list(range(1000))).repartition(2, hash_by="item")
    return session.partial_sql(f"SELECT {aggregate} AS s, count(*) AS c FROM {{0}}", df)


def test_flipped_bytes_in_a_committed_file_make_the_task_run_again(local_sp):
    sums = _by_partition(local_sp, "sum(item)").to_arrow()
    assert sum(sums["s"].to_pylist()) == sum(range(1000))
    victim = _committed_file(local_sp, "shuffle")
    stat = os.stat(victim)
    data = bytearray(open(victim, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size; then put the mtime back as it was
    open(victim, "wb").write(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fresh = smallpond.init(data_root=local_sp.config.data_root, num_executors=2)
    try:
        # a query that reads the damaged shuffle output again: it is detected, re-made
        again = _by_partition(fresh, "sum(item) + 0").to_arrow()
        assert sum(again["s"].to_pylist()) == sum(range(1000))
        assert sum(again["c"].to_pylist()) == 1000
        assert any(e.kind == "finished" and e.stage.startswith("shuffle")
                   for e in fresh.events)
    finally:
        fresh.shutdown()


def test_a_tampered_manifest_is_not_trusted(local_sp):
    df = local_sp.from_items(list(range(100))).map("item + 1 AS x")
    assert sum(df.to_arrow()["x"].to_pylist()) == 5050
    tasks = os.path.join(local_sp.config.data_root, "tasks")
    for key in os.listdir(tasks):
        manifest = os.path.join(tasks, key, "_task.json")
        data = json.load(open(manifest))
        for f in data["files"]:
            f["num_rows"] += 1  # a plausible lie, without a matching digest
        json.dump(data, open(manifest, "w"))
    mark = len(local_sp.events)
    assert sum(df.to_arrow()["x"].to_pylist()) == 5050
    assert not any(e.kind == "reused" for e in local_sp.events[mark:])


# -- 5: sessions sharing a data_root -----------------------------------------------------------
def test_shutdown_of_another_session_on_the_data_root_spares_running_jobs(sp, tmp_path):
    def slow(table):
        time.sleep(0.3)
        return table

    df = sp.from_items(list(range(40))).repartition(4, by_rows=True).map_batches(slow)
    result = {}

    def job():
        result["rows"] = sorted(df.to_arrow()["item"].to_pylist())

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(0.3)
    other = smallpond.init(data_root=sp.config.data_root, runner="local", num_executors=1)
    other.from_items([1]).count()
    other.shutdown()
    thread.join(timeout=120)
    assert result.get("rows") == list(range(40))
    assert os.path.isdir(sp.config.scratch_dir)


def test_dead_sessions_are_cleaned_and_live_ones_kept(tmp_path):
    from smallpond.io.commit import write_json_atomic
    from smallpond.io.sessions import current_owner

    root = tmp_path / "root"
    sessions = root / "sessions"
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
    for name, owner in (("dead", {"host": os.uname().nodename, "pid": int(dead_pid)}),
                        ("alive", current_owner()),
                        ("remote-fresh", {"host": "elsewhere", "pid": 1})):
        (sessions / name / "staging").mkdir(parents=True)
        write_json_atomic(str(sessions / name / "owner.json"), owner)
    session = smallpond.init(data_root=str(root), num_executors=1)
    try:
        remaining = set(os.listdir(sessions))
        assert "dead" not in remaining
        assert {"alive", "remote-fresh"} <= remaining
    finally:
        session.shutdown()
    assert {"alive", "remote-fresh"} == set(os.listdir(sessions))


def test_overwrites_stay_complete_while_other_sessions_come_and_go(sp, tmp_path):
    out = tmp_path / "out"
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            other = smallpond.init(data_root=sp.config.data_root, num_executors=1)
            other.shutdown()

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for round_ in range(8):
            sp.from_items(list(range(round_ * 10, round_ * 10 + 60))) \
                .repartition(6, by_rows=True).write_parquet(str(out), mode="overwrite")
            manifest = json.load(open(out / "_SUCCESS"))
            names = sorted(f["name"] for f in manifest["files"])
            assert names == [f"part-{i:05d}.parquet" for i in range(6)]
            assert sorted(os.listdir(out)) == ["_SUCCESS", *names]
            values = sorted(sp.read_parquet(str(out)).to_arrow()["item"].to_pylist())
            assert values == list(range(round_ * 10, round_ * 10 + 60))
    finally:
        stop.set()
        thread.join()


# -- 6: file names are read literally ----------------------------------------------------------
def test_file_names_with_glob_characters_are_read_exactly(sp, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    values = {"a[1].parquet": 1, "a1.parquet": 10, "b*.parquet": 100, "bx.parquet": 1000,
              "c?.parquet": 10000, "it's.parquet": 100000}
    for name, value in values.items():
        pq.write_table(pa.table({"v": [value]}), folder / name)
    df = sp.read_parquet(str(folder))
    assert df.count() == len(values)
    total = sp.partial_sql("SELECT sum(v) AS s, count(*) AS c FROM {0}", df).to_arrow()
    assert total.to_pylist() == [{"s": 111111, "c": 6}]
    one = sp.read_parquet(str(folder / "a[1].parquet")).map("v * 2 AS w").to_arrow()
    assert one["w"].to_pylist() == [2]


def test_csv_names_with_glob_characters(sp, tmp_path):
    (tmp_path / "x[1].csv").write_text("1\n2\n")
    (tmp_path / "x1.csv").write_text("100\n")
    df = sp.read_csv(str(tmp_path / "x[[]1].csv"), schema={"a": "BIGINT"})  # a real glob
    assert sorted(df.map("a").to_arrow()["a"].to_pylist()) == [1, 2]


# -- 7: joins of inputs that are not co-partitioned --------------------------------------------
def test_join_of_inputs_not_co_partitioned_is_refused(sp, tmp_path):
    left = sp.from_items([{"k": i, "a": i} for i in range(40)]).repartition(4, by_rows=True)
    right = sp.from_items([{"k": i, "b": -i} for i in range(40)]).repartition(4, hash_by="k")
    query = "SELECT l.k, a, b FROM {0} l JOIN {1} r ON l.k = r.k"
    with pytest.raises(PlanError, match="co-partitioned"):
        sp.partial_sql(query, left, right)
    both = sp.partial_sql(query, left.repartition(4, hash_by="k"), right)
    con = duckdb.connect()
    expected = con.sql("SELECT i AS k, i AS a, -i AS b FROM range(40) t(i) ORDER BY k")
    assert sorted(both.take_all(), key=lambda r: r["k"]) == \
        [dict(zip(("k", "a", "b"), row)) for row in expected.fetchall()]
    # a user who knows better may say so (0.15's behaviour)
    assert sp.partial_sql(query, left, right, copartitioned=True).count() < 40


# -- 8: user SQL cannot escape its wrapper ------------------------------------------------------
@pytest.mark.parametrize("operation", ["filter", "map", "partial_sql", "partial_sort"])
def test_sql_cannot_escape_its_wrapper(sp, tmp_path, operation):
    target = tmp_path / "escaped.csv"
    df = sp.from_items([1, 2, 3])
    attacks = {
        "filter": lambda: df.filter(f"true)) TO '{target}'; COPY ((SELECT 1"),
        "map": lambda: df.map(f"1) TO '{target}'; COPY (SELECT 1"),
        "partial_sql": lambda: sp.partial_sql(
            f"SELECT * FROM {{0}}) TO '{target}'; COPY (SELECT 1", df),
        "partial_sort": lambda: df.partial_sort(f"item) TO '{target}'; COPY (SELECT 1"),
    }
    expected = "syntax error" if operation == "partial_sql" else "unbalanced parentheses"
    with pytest.raises(SqlError, match=expected):
        attacks[operation]().count()
    assert not target.exists()


def test_trailing_comments_work(sp):
    df = sp.from_items([1, 2, 3, 4])
    assert df.filter("item > 2 -- keep the big ones").count() == 2
    assert df.map("item * 10 AS x -- ten times").to_arrow()["x"].to_pylist() == [10, 20, 30, 40]
    assert sp.partial_sql("SELECT count(*) AS c FROM {0} -- all\n;", df).take_all() == \
        [{"c": 4}]
    assert df.filter("item > 1").map("item AS y -- one\n").filter("y < 4 /* two */") \
        .count() == 2


def test_statements_other_than_a_query_are_refused(sp, tmp_path):
    df = sp.from_items([1])
    for sql, message in (
            (f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "must be a query.*COPY statement"),
            ("ATTACH 'x.db'", "must be a query.*ATTACH statement"),
            ("SELECT 1; SELECT 2", "exactly one SQL statement, got 2")):
        with pytest.raises(SqlError, match=message):
            sp.partial_sql(sql, df)
    with pytest.raises(SqlError, match="statement 1"):
        sp.partial_sql([f"COPY (SELECT 1) TO '{tmp_path / 'y.csv'}'", "SELECT * FROM {0}"], df)
    assert not list(tmp_path.glob("*.csv"))


@pytest.mark.parametrize("fragment", [
    "user FROM (SELECT 1 AS user) UNION ALL SELECT user",
    "user FROM (SELECT 1 AS user) UNION SELECT user",
    "user FROM (SELECT 1 AS user) t, (SELECT 2) u CROSS JOIN",
    "* FROM (SELECT 42 AS user) LIMIT 1) UNION ALL (SELECT user",
])
def test_a_select_list_cannot_become_a_query_of_its_own(sp, fragment):
    df = sp.from_items([{"user": i} for i in range(10)])
    # refused before running: left its place, bad syntax, or a parenthesis it did not open
    with pytest.raises(SqlError, match=r"map(: Parser Error| must be one SQL select list| has unbalanced)"):
        df.map(fragment).count()


def test_select_lists_that_stay_put_are_fine(sp):
    df = sp.from_items([{"user": i % 3, "a": i} for i in range(9)])
    assert sorted(df.map("DISTINCT user").to_arrow()["user"].to_pylist()) == [0, 1, 2]
    assert df.map("a > (SELECT 4) AS big").to_arrow()["big"].to_pylist().count(True) == 4
    assert df.map("* EXCLUDE (a)").to_arrow().column_names == ["user"]


@pytest.mark.parametrize("right", ["double keys", "other key", "changed key", "python step",
                                   "timestamp units"])
def test_inputs_that_only_look_co_partitioned_are_refused(sp, right):
    import datetime

    keys = list(range(200))
    left = sp.from_arrow(pa.table({"k": keys})).repartition(8, hash_by="k")
    tables = {
        "double keys": pa.table({"k": [float(k) for k in keys]}),
        "other key": pa.table({"k": keys, "j": keys[::-1]}),
        "changed key": pa.table({"k": keys}),
        "python step": pa.table({"k": keys}),
        "timestamp units": pa.table({"k": keys}),
    }
    other = sp.from_arrow(tables[right])
    if right == "other key":
        other = other.repartition(8, hash_by="j")
    elif right == "changed key":
        other = other.repartition(8, hash_by="k").map("k + 1 AS k")
    elif right == "python step":
        other = other.repartition(8, hash_by="k").map_batches(lambda t: t)
    elif right == "timestamp units":
        base = datetime.datetime(2026, 1, 1)
        stamps = [base + datetime.timedelta(seconds=k) for k in keys]
        left = sp.from_arrow(pa.table({"k": pa.array(stamps, pa.timestamp("us"))})) \
            .repartition(8, hash_by="k")
        other = sp.from_arrow(pa.table({"k": pa.array(stamps, pa.timestamp("ns"))})) \
            .repartition(8, hash_by="k")
    else:
        other = other.repartition(8, hash_by="k")
    with pytest.raises(PlanError, match="co-partitioned"):
        sp.partial_sql("SELECT count(*) AS c FROM {0} a JOIN {1} b ON a.k = b.k", left, other)


def test_steps_that_keep_the_keys_keep_the_proof(sp):
    keys = list(range(200))
    left = sp.from_arrow(pa.table({"k": keys, "v": keys})).repartition(8, hash_by="k") \
        .filter("v >= 0").map("k, v * 2 AS w")
    right = sp.from_arrow(pa.table({"k": keys})).repartition(8, hash_by="k").map("*")
    joined = sp.partial_sql("SELECT count(*) AS c FROM {0} a JOIN {1} b ON a.k = b.k",
                            left, right)
    assert sum(joined.to_arrow()["c"].to_pylist()) == 200


def test_sessions_running_the_same_job_at_once_all_succeed(tmp_path):
    """Each writes the job's result; the first to publish moves files out of the cache that
    the others still need: they notice and make them again (never an error)."""
    root = tmp_path / "root"
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, smallpond\n"
        f"sp = smallpond.init(data_root={str(root)!r}, num_executors=1)\n"
        "df = sp.from_items([{'k': i % 50, 'v': i} for i in range(4000)])"
        ".repartition(4, hash_by='k')\n"
        "agg = sp.partial_sql('SELECT k, sum(v) AS s FROM {0} GROUP BY k', df)\n"
        "agg.write_parquet(sys.argv[1])\n")
    for round_ in range(2):
        outs = [tmp_path / f"out-{round_}-{i}" for i in range(3)]
        procs = [subprocess.Popen([sys.executable, str(script), str(o)],
                                  stderr=subprocess.PIPE, text=True) for o in outs]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        expected = {k: sum(v for v in range(4000) if v % 50 == k) for k in range(50)}
        for out in outs:
            rows = pq.read_table(str(out)).to_pylist()
            assert {r["k"]: r["s"] for r in rows} == expected and len(rows) == 50


# -- found by trying to break it (red team of 2026-12-01) ---------------------------------------
def test_job_id_cannot_name_a_path(tmp_path):
    victim = tmp_path / "v"
    victim.mkdir()
    (victim / "status.json").write_text('{"my": "cfg"}')
    for job_id in (str(victim), "../../v", "a/b", ".."):
        with pytest.raises(smallpond.errors.ConfigError, match="job_id"):
            smallpond.init(data_root=str(tmp_path / "root"), job_id=job_id)
    assert (victim / "status.json").read_text() == '{"my": "cfg"}'


def test_an_input_seen_through_a_bind_mount_is_still_the_input(sp, tmp_path):
    real = tmp_path / "real"
    alias = tmp_path / "alias"
    real.mkdir()
    alias.mkdir()
    sp.from_items(list(range(100))).write_parquet(str(real / "O"))
    done = subprocess.run(["mount", "--bind", str(real), str(alias)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"bind mounts need root (CI runs as root): {done.stderr.strip()}")
    try:
        before = _tree(real / "O")
        df = sp.read_parquet(str(real / "O")).filter("item < 10")
        with pytest.raises(OutputError, match="is the input|contains the input"):
            df.write_parquet(str(alias / "O"))
        assert _tree(real / "O") == before
    finally:
        subprocess.run(["umount", "-l", str(alias)], check=False)


def test_overwrite_replaces_only_our_part_names(sp, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    keep = ["part-1.parquet", "part-٠٠٠٠٠.parquet", "part-00000.csv", "part-00000.parquet.bak",
            "mine.txt"]
    for name in keep:
        (out / name).write_text(name)
    (out / "part-123456.parquet").write_bytes(b"an old part of ours")
    # a manifest that claims a user's file is ours (and with the wrong size) is not believed
    (out / "_SUCCESS").write_text(json.dumps({"format": "smallpond-output/1", "files": [
        {"name": "mine.txt", "size": 999}]}))
    sp.from_items([1, 2]).write_parquet(str(out), mode="overwrite")
    for name in keep:
        assert (out / name).read_text() == name
    assert not (out / "part-123456.parquet").exists()
    with pytest.raises(OutputExistsError, match="mine.txt"):
        sp.from_items([3]).write_parquet(str(out))  # mode error: mine.txt is not ours


def _killed_mid_publish(sp, tmp_path, fresh: bool):
    """Run a write in a subprocess and SIGKILL it right after its first part is in place."""
    out = tmp_path / "out"
    if not fresh:
        sp.from_items(list(range(100, 160))).repartition(3, by_rows=True) \
            .write_parquet(str(out))
    script = tmp_path / "writer.py"
    script.write_text(
        "import os, signal, smallpond\n"
        "import smallpond.io.output as output\n"
        "real = output._verify\n"
        "def die(path, sizes):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "output._verify = die\n"
        f"sp = smallpond.init(data_root={str(tmp_path / 'root2')!r}, num_executors=1)\n"
        "sp.from_items(list(range(40))).repartition(4, by_rows=True)"
        f".write_parquet({str(out)!r}, mode='overwrite')\n")
    done = subprocess.run([sys.executable, str(script)], timeout=300)
    assert done.returncode == -9
    return out


@pytest.mark.parametrize("fresh", [True, False])
def test_a_half_published_folder_is_never_read_and_a_rerun_fixes_it(sp, tmp_path, fresh):
    out = _killed_mid_publish(sp, tmp_path, fresh)
    if fresh:  # a new folder appears whole or not at all: killed before, nothing shows
        assert not out.exists() and _siblings(out)
    with pytest.raises(smallpond.errors.InputError, match="does not exist" if fresh
                       else "killed"):
        sp.read_parquet(str(out)).count()
    # the same job run again (default mode) rolls the folder back, then writes it
    sp.from_items(list(range(40))).repartition(4, by_rows=True).write_parquet(str(out))
    assert sorted(sp.read_parquet(str(out)).to_arrow()["item"].to_pylist()) == list(range(40))
    assert not _siblings(out) and not [n for n in os.listdir(out) if n.startswith(".")]


def test_glob_rules_match_the_shell(sp, tmp_path):
    root = tmp_path / "d"
    (root / "x").mkdir(parents=True)
    (root / "_temporary").mkdir()
    pq.write_table(pa.table({"v": [1]}), root / "a.parquet")
    pq.write_table(pa.table({"v": [10]}), root / "x" / "b.parquet")
    pq.write_table(pa.table({"v": [100]}), root / "_temporary" / "c.parquet")
    assert sp.read_parquet(str(root / "**" / "*.parquet")).count() == 2  # any depth, top too
    assert sp.read_parquet(str(root), recursive=True).count() == 2  # _temporary/ left out


def test_output_folders_named_with_glob_characters_read_back(sp, tmp_path):
    for name, rows in (("o*", 1), ("o?", 2), ("o[1]", 3)):
        sp.from_items(list(range(rows))).write_parquet(str(tmp_path / name))
    for name, rows in (("o*", 1), ("o?", 2), ("o[1]", 3)):
        assert sp.read_parquet(str(tmp_path / name)).count() == rows


def test_an_output_folder_that_is_a_mount_point(sp, tmp_path, tmpfs):
    with tmpfs(tmp_path / "mounted", "4m") as mount:
        sp.from_items(list(range(10))).write_parquet(mount)
        sp.from_items(list(range(5))).write_parquet(mount)  # a rerun replaces it in place
        assert sp.read_parquet(mount).count() == 5


def test_append_must_keep_the_schema(sp, tmp_path):
    out = str(tmp_path / "out")
    sp.from_items([{"a": 1}]).write_parquet(out)
    with pytest.raises(OutputError, match="schema"):
        sp.from_items([{"a": "text"}]).write_parquet(out, mode="append")
    assert sp.read_parquet(out).count() == 1


@pytest.mark.parametrize("call, error", [
    (lambda sp, tmp: sp.read_parquet(123), "InputError"),
    (lambda sp, tmp: sp.read_parquet(None), "InputError"),
    (lambda sp, tmp: sp.from_items([1]).repartition(3, hash_by=5), "PlanError"),
    (lambda sp, tmp: sp.partial_sql(None, sp.from_items([1])), "SqlError"),
    (lambda sp, tmp: sp.from_items([{"a": 1}, {"a": "x"}]), "PlanError"),
    (lambda sp, tmp: sp.from_pandas([1]), "PlanError"),
    (lambda sp, tmp: smallpond.init(data_root=5), "ConfigError"),
    (lambda sp, tmp: smallpond.init(data_root=""), "ConfigError"),
    (lambda sp, tmp: smallpond.init(data_root=str(_a_file(tmp))), "ConfigError"),
    (lambda sp, tmp: smallpond.init(data_root=str(tmp / "r"), memory_per_task=1), "ConfigError"),
    (lambda sp, tmp: sp.from_items([1]).write_parquet(str(tmp / ("x" * 300))), "OutputError"),
    (lambda sp, tmp: sp.from_items([1]).write_parquet(str(tmp / "nul\0byte")), "OutputError"),
])
def test_bad_arguments_are_typed(sp, tmp_path, call, error):
    with pytest.raises(getattr(smallpond.errors, error)):
        call(sp, tmp_path)


def _a_file(folder):
    path = folder / "a-file"
    path.write_text("x")
    return path


def test_an_action_after_shutdown_says_so(tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "root"), num_executors=1)
    df = session.from_items([1])
    session.shutdown()
    with pytest.raises(smallpond.errors.ConfigError, match="shut down"):
        df.count()


def test_a_fifo_is_not_read(sp, tmp_path):
    fifo = tmp_path / "pipe.parquet"
    os.mkfifo(fifo)
    with pytest.raises(smallpond.errors.InputError, match="not a regular file"):
        sp.read_parquet(str(fifo))


def test_a_data_root_inside_an_input_folder_is_not_read_as_input(tmp_path):
    folder = tmp_path / "inroot"
    folder.mkdir()
    pq.write_table(pa.table({"k": list(range(1000))}), folder / "a.parquet")
    sp = smallpond.init(data_root=str(folder / "cache"), progress=False)
    try:
        assert sp.read_parquet(str(folder)).repartition(2, hash_by="k").count() == 1000
        # the cache now holds task files (Parquet) below the input folder: never read as input
        assert sp.read_parquet(str(folder), recursive=True).count() == 1000
        assert sp.read_parquet(str(folder / "**" / "*.parquet")).count() == 1000
    finally:
        sp.shutdown()


def test_sql_outputs_stay_out_of_the_folders_they_read(sp, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"k": [1, 2, 3]}), folder / "a.parquet")
    sp.register("t", str(folder))
    with pytest.raises(OutputError, match="input"):
        sp.sql("SELECT * FROM t").write_parquet(str(folder / "sub"))
    with pytest.raises(OutputError, match="input"):
        sp.sql(f"SELECT * FROM read_parquet('{folder}/**/*.parquet')").write_parquet(
            str(folder / "sub2"))
    assert sorted(os.listdir(folder)) == ["a.parquet"]


def test_a_part_missing_from_our_output_is_an_error(sp, tmp_path):
    out = tmp_path / "out"
    sp.from_items(list(range(30))).repartition(3, by_rows=True).write_parquet(str(out))
    os.remove(out / "part-00001.parquet")
    with pytest.raises(smallpond.errors.InputError, match="part-00001.parquet.*missing"):
        sp.read_parquet(str(out)).count()
