"""Bad input gets a typed error that names the culprit, and leaves no partial output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smallpond
from smallpond.errors import (
    ConfigError,
    DiskFullError,
    InputError,
    OutOfMemoryError,
    OutputError,
    PartitionKeyError,
    PlanError,
    SchemaMismatchError,
    SqlError,
    TaskError,
    UserFunctionError,
)


def _assert_no_output(path: str) -> None:
    assert not os.path.exists(path) or os.listdir(path) == []


def test_missing_path(sp, tmp_path):
    missing = str(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match="nope.parquet"):
        sp.read_parquet(missing)


def test_empty_glob(sp, tmp_path):
    with pytest.raises(InputError, match=r"no files match"):
        sp.read_parquet(str(tmp_path / "*.parquet"))


def test_corrupt_parquet_names_the_file(sp, tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet at all")
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match="bad.parquet") as info:
        sp.read_parquet([str(good), str(bad)]).write_parquet(out)
    assert "good.parquet" not in str(info.value).split("bad.parquet")[0][-40:]
    _assert_no_output(out)


def test_truncated_parquet(sp, tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(1000))}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.parquet"):
        sp.read_parquet(str(path)).count()


def test_schema_mismatch_across_files(sp, tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "x1.parquet")
    pq.write_table(pa.table({"a": [1.5, 2.5]}), tmp_path / "x2.parquet")
    out = str(tmp_path / "out")
    with pytest.raises(SchemaMismatchError, match="x2.parquet"):
        sp.read_parquet(str(tmp_path / "x*.parquet")).write_parquet(out)
    _assert_no_output(out)


def test_union_by_name_unifies_extra_columns(sp, tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "y1.parquet")
    pq.write_table(pa.table({"a": [2], "b": ["x"]}), tmp_path / "y2.parquet")
    df = sp.read_parquet(str(tmp_path / "y*.parquet"), union_by_name=True)
    assert df.take_all() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_bad_sql_names_the_sql_and_leaves_nothing(sp, tmp_path):
    out = str(tmp_path / "out")
    df = sp.from_items([1, 2])
    with pytest.raises(SqlError, match="SELEC item FROM") as info:
        sp.partial_sql("SELEC item FROM {0}", df).write_parquet(out)
    assert info.value.sql and "SELEC" in info.value.sql
    _assert_no_output(out)


def test_multi_statement_injection_does_not_run(sp, tmp_path):
    victim = tmp_path / "victim.parquet"
    df = sp.from_items([1])
    with pytest.raises(SqlError, match="exactly one SQL statement, got 2"):
        sp.partial_sql(f"SELECT * FROM {{0}}; COPY (SELECT 1) TO '{victim}'", df).to_arrow()
    assert not victim.exists()


def test_placeholder_without_input(sp):
    with pytest.raises(SqlError, match=r"placeholder \{1\}"):
        sp.partial_sql("SELECT * FROM {1}", sp.from_items([1])).to_arrow()


def test_format_attribute_walk_is_not_evaluated(sp):
    with pytest.raises(SqlError, match="syntax error"):
        sp.partial_sql("SELECT '{0.__class__}' AS x, * FROM {0.__class__}",
                       sp.from_items([1])).to_arrow()


def test_bad_partition_key(sp, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(PartitionKeyError, match="out of range 0-2"):
        sp.from_items([1, 5]).repartition(3, by="item").write_parquet(out)
    _assert_no_output(out)


def test_null_partition_key(sp):
    df = sp.from_arrow(pa.table({"k": pa.array([0, None], pa.int64())}))
    with pytest.raises(PartitionKeyError, match="NULL"):
        df.repartition(2, by="k").count()


def test_user_function_error_keeps_cause_and_leaves_nothing(sp, tmp_path):
    out = str(tmp_path / "out")

    def fails_on_three(row):
        if row["item"] == 3:
            raise KeyError("three")
        return row

    with pytest.raises(UserFunctionError, match="fails_on_three") as info:
        sp.from_items([1, 2, 3]).map(fails_on_three).write_parquet(out)
    assert "KeyError" in str(info.value) and info.value.remote_traceback
    _assert_no_output(out)


def test_unpicklable_function(sp):
    lock = threading.Lock()
    with pytest.raises(PlanError, match="cannot be pickled"):
        sp.from_items([1]).map(lambda r: (lock, r)[1])


@pytest.mark.parametrize("call,message", [
    (lambda df: df.repartition(0), "npartitions must be a positive integer, got 0"),
    (lambda df: df.repartition(-1, by_rows=True), "npartitions must be a positive integer"),
    (lambda df: df.repartition(2, hash_by="a", by="a"), "only one of hash_by=, by="),
    (lambda df: df.limit(-1), "limit must be a non-negative integer, got -1"),
    (lambda df: df.map_batches(lambda t: t, batch_size=0), "batch_size must be a positive"),
    (lambda df: df.partial_sort([]), "partial_sort needs at least one column"),
    (lambda df: df.filter(""), "filter needs a non-empty SQL string"),
])
def test_bad_arguments_fail_before_running(sp, call, message):
    mark = len(sp.events)
    with pytest.raises(PlanError, match=message):
        call(sp.from_items([1]))
    assert sp.events[mark:] == []


def test_user_data_never_modified(sp, tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [3, 1, 2]}), path)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    sp.read_parquet(str(path)).partial_sort("a").write_parquet(str(tmp_path / "sorted"))
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


# -- the error contract (issue 13): typed errors that name the culprit -------------------------
@pytest.fixture
def tiny_budget_sp(sp, tmp_path):
    """A session on the same runner as `sp` whose tasks get 64 MiB each."""
    options = {"memory_per_task": "64MB", "data_root": str(tmp_path / "tiny")}
    if sp.config.runner == "ray":
        options.update(runner="ray", ray_address=sp.config.ray_address)
    else:
        options["num_executors"] = 1
    session = smallpond.init(**options)
    yield session
    session.shutdown()


def test_out_of_memory_is_typed_and_names_the_budget(tiny_budget_sp, tmp_path):
    out = str(tmp_path / "out")
    df = tiny_budget_sp.partial_sql("SELECT list(i) AS l FROM range(30000000) t(i)")
    with pytest.raises(OutOfMemoryError, match=r"64 MiB per task.*memory_per_task"):
        df.write_parquet(out)
    _assert_no_output(out)


def test_disk_full_while_spilling_names_the_mount(sp, tmp_path, tmpfs):
    with tmpfs(tmp_path / "small-root", "3m") as mount:
        options = {"data_root": mount, "memory_per_task": "64MB"}
        if sp.config.runner == "ray":
            options.update(runner="ray", ray_address=sp.config.ray_address)
        else:
            options["num_executors"] = 1
        session = smallpond.init(**options)
        try:
            big = session.partial_sql(
                "SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS s "
                "FROM range(2000000) t(i) ORDER BY s")
            with pytest.raises(DiskFullError) as info:
                big.count()
            assert info.value.mount == mount and mount in str(info.value)
        finally:
            session.shutdown()


def test_unwritable_output_fails_before_the_job_runs(sp, tmp_path, tmpfs):
    with tmpfs(tmp_path / "ro", "1m") as mount:
        subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
        mark = len(sp.events)
        with pytest.raises(OutputError, match="not writable"):
            sp.from_items([1, 2]).map("item + 1 AS x").write_parquet(os.path.join(mount, "o"))
        assert sp.events[mark:] == []  # nothing ran


def test_remote_url_without_its_package_names_the_package(sp):
    with pytest.raises(InputError, match="ocifs"):
        sp.read_parquet("oci://bucket@namespace/data/*.parquet")


def test_read_parquet_of_an_empty_list(sp):
    with pytest.raises(InputError, match="no input paths"):
        sp.read_parquet([])


@pytest.mark.parametrize("option", ["hash_by", "range_by"])
def test_bad_partition_column_is_the_same_clean_error(sp, option):
    df = sp.from_items([{"a": 1}])
    with pytest.raises(PlanError, match=r"column\(s\) \['nope'\] not found.*\['a'\]"):
        df.repartition(2, **{option: "nope"})


@pytest.mark.parametrize("how, reason", [
    ("os._exit(3)", "exited with code 3"),
    ("os.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV"),
])
def test_a_crashing_worker_names_the_function_and_how_it_died(local_sp, how, reason):
    local_sp.config = local_sp.config.with_(max_retries=1)
    local_sp.runner.config = local_sp.config

    def crash(row):
        import os  # noqa: F401 - used by the statement below
        import signal  # noqa: F401

        exec(how)
        return row

    with pytest.raises(TaskError, match=rf"function '.*crash'.*died 2 times.*{reason}"):
        local_sp.from_items([1]).map(crash).count()


def test_a_crashing_ray_worker_names_the_function(ray_address, tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "root"), runner="ray",
                             ray_address=ray_address, max_retries=1)
    try:
        def crash(row):
            os._exit(3)

        with pytest.raises(TaskError, match=r"function '.*crash'.*died 2 times"):
            session.from_items([1]).map(crash).count()
    finally:
        session.shutdown()


def _status(session) -> dict:
    path = os.path.join(session.config.runs_dir, session.job_id, "status.json")
    with open(path) as handle:
        return json.load(handle)


def test_job_status_records_failure_and_interruption(tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "root"), num_executors=1)
    session.from_items([1]).count()
    assert _status(session)["status"] == "success"
    with pytest.raises(SqlError, match='"no_such_column" not found'):
        session.from_items([1]).map("no_such_column").count()
    assert _status(session)["status"] == "failed"
    session.shutdown()
    assert _status(session)["status"] == "failed" and _status(session)["closed"]

    other = smallpond.init(data_root=str(tmp_path / "root"), num_executors=1)

    def interrupt(event):
        raise KeyboardInterrupt

    other.on_event(interrupt)
    with pytest.raises(KeyboardInterrupt):
        other.from_items([1, 2]).map("item + 1 AS x").count()
    other.shutdown()
    assert _status(other)["status"] == "interrupted"


def test_read_csv_reads_the_first_line_as_data(sp, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("1,a\n2,b\n")
    df = sp.read_csv(str(path), schema={"n": "BIGINT", "s": "VARCHAR"})
    assert df.take_all() == [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}]
    headed = tmp_path / "headed.csv"
    headed.write_text("n,s\n3,c\n")
    df = sp.read_csv(str(headed), schema={"n": "BIGINT", "s": "VARCHAR"}, header=True)
    assert df.take_all() == [{"n": 3, "s": "c"}]


@pytest.mark.parametrize("args, code, words", [
    (["graysort", "--records", "0", "--output", "{out}"], 2, "records must be a positive"),
    (["graysort", "--records", "100", "--output", "{out}", "--partitions", "-1"], 2,
     "partitions must be a positive"),
    (["graysort", "--input", "{tmp}/missing.dat", "--output", "{out}"], 2, "does not exist"),
    (["graysort", "--records", "100", "--output", "{out}", "--bogus"], 2, "No such option"),
])
def test_cli_errors_are_one_line(tmp_path, args, code, words):
    args = [a.format(out=tmp_path / "out", tmp=tmp_path) for a in args]
    env = {**os.environ, "SMALLPOND_DATA_ROOT": str(tmp_path / "root")}
    done = subprocess.run([sys.executable, "-m", "smallpond.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smallpond: error: ") and words in lines[0]
    assert not (tmp_path / "out").exists()
    debug = subprocess.run([sys.executable, "-m", "smallpond.cli", "--debug", *args],
                           capture_output=True, text=True, timeout=120, env=env)
    assert debug.returncode == code
    if "No such option" not in words:
        assert "Traceback" in debug.stderr


def test_a_failed_job_exits_1(tmp_path):
    from smallpond.cli import exit_code_for

    assert exit_code_for(TaskError("boom")) == 1
    assert exit_code_for(OutOfMemoryError("boom")) == 1
    assert exit_code_for(InputError("bad")) == 2
    assert exit_code_for(SqlError("bad")) == 2


def test_a_reused_graysort_says_so(local_sp, tmp_path):
    from smallpond.graysort.job import GraySortResult

    result = GraySortResult(100, 2, [], {"sort + write": 0.01}, tasks_run=0, tasks_reused=5)
    lines = result.lines()
    assert "reused 5/5 tasks from an earlier run" in lines
    assert not any("MB/s" in line for line in lines)


@pytest.mark.parametrize("options, message", [
    ({"cache_budget": "1XB"}, "cache_budget"), ({"cache_budget": -5}, "negative"),
    ({"progress": "maybe"}, "progress"),
])
def test_session_options_are_checked_at_init(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        smallpond.init(data_root=str(tmp_path / "root"), **options)


def test_sql_partition_counts_are_bounded(sp):
    with pytest.raises(SqlError, match="from 1 to 100000"):
        sp.sql("SET smallpond.partitions = 1000000")
