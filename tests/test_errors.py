"""Bad input gets a typed error that names the culprit, and leaves no partial output."""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.errors import (
    InputError,
    PartitionKeyError,
    PlanError,
    SchemaMismatchError,
    SmallpondError,
    SqlError,
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
    with pytest.raises(SmallpondError):
        sp.partial_sql(f"SELECT * FROM {{0}}; COPY (SELECT 1) TO '{victim}'", df).to_arrow()
    assert not victim.exists()


def test_placeholder_without_input(sp):
    with pytest.raises(SqlError, match=r"placeholder \{1\}"):
        sp.partial_sql("SELECT * FROM {1}", sp.from_items([1])).to_arrow()


def test_format_attribute_walk_is_not_evaluated(sp):
    with pytest.raises(SqlError):
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


@pytest.mark.parametrize("call", [
    lambda df: df.repartition(0),
    lambda df: df.repartition(-1, by_rows=True),
    lambda df: df.repartition(2, hash_by="a", by="a"),
    lambda df: df.limit(-1),
    lambda df: df.map_batches(lambda t: t, batch_size=0),
    lambda df: df.partial_sort([]),
    lambda df: df.filter(""),
])
def test_bad_arguments_fail_before_running(sp, call):
    with pytest.raises(PlanError):
        call(sp.from_items([1]))


def test_user_data_never_modified(sp, tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [3, 1, 2]}), path)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    sp.read_parquet(str(path)).partial_sort("a").write_parquet(str(tmp_path / "sorted"))
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
