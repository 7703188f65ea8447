"""Schemas known before running equal the schemas the job then returns (logical/schema.py)."""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallpond.logical.schema import infer_schema

TYPED_VALUES = {
    "int": pa.array([1, None], pa.int64()),
    "small": pa.array([1, 2], pa.int16()),
    "unsigned": pa.array([1, 2], pa.uint64()),
    "real": pa.array([1.5, None], pa.float32()),
    "text": pa.array(["a", None], pa.string()),
    "blob": pa.array([b"a", b"b"], pa.binary()),
    "fixed": pa.array([b"ab", b"cd"], pa.binary(2)),
    "money": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(9, 2)),
    "day": pa.array([datetime.date(2020, 1, 1), None]),
    "stamp": pa.array([datetime.datetime(2020, 1, 1), None], pa.timestamp("us", tz="UTC")),
    "nanos": pa.array([1, 2], pa.timestamp("ns")),
    "clock": pa.array([datetime.time(1, 2), None]),
    "span": pa.array([1, 2], pa.duration("s")),
    "items": pa.array([[1, 2], None], pa.list_(pa.int64())),
    "record": pa.array([{"x": 1, "y": "a"}, None]),
    "pairs": pa.array([[("a", 1)], None], pa.map_(pa.string(), pa.int64())),
    "category": pa.array(["a", "b"]).dictionary_encode(),
    "flag": pa.array([True, None]),
}

STEPS = {
    "filter": lambda sp, df: df.filter("1 = 1"),
    "map": lambda sp, df: df.map("*"),
    "partial_sql": lambda sp, df: sp.partial_sql("SELECT * FROM {0} WHERE true", df),
    "hash": lambda sp, df: df.repartition(2, hash_by="k"),
    "rows": lambda sp, df: df.repartition(2, by_rows=True),
    "files": lambda sp, df: df.repartition(2),
    "shuffle": lambda sp, df: df.random_shuffle(),
    "sort": lambda sp, df: df.partial_sort("k"),
    "python_filter": lambda sp, df: df.filter(lambda row: True),
    "limit": lambda sp, df: df.limit(5),
    "count_per_partition": lambda sp, df: sp.partial_sql(
        "SELECT min(k) AS k, count(*) AS n, sum(k) AS total, avg(k) AS mean FROM {0}", df),
}


@pytest.fixture
def typed_folder(tmp_path):
    folder = tmp_path / "typed"
    folder.mkdir()
    table = pa.table({"k": pa.array([1, 2], pa.int64()), **TYPED_VALUES})
    # distinct keys, so that no shuffle leaves a partition empty (an empty partition's output
    # can differ in nullability and trip the reader's schema check: reported apart)
    for i in range(10):
        keys = pa.array([2 * i, 2 * i + 1], pa.int64())
        pq.write_table(table.set_column(0, "k", keys), folder / f"part-{i}.parquet")
    return str(folder)


@given(columns=st.lists(st.sampled_from(sorted(TYPED_VALUES)), min_size=1, max_size=4,
                        unique=True),
       split=st.booleans(), steps=st.lists(st.sampled_from(sorted(STEPS)), max_size=3))
def test_inferred_schema_equals_the_result(sp, typed_folder, columns, split, steps):
    df = sp.read_parquet(typed_folder, columns=["k", *columns])
    if split:
        df = df.repartition(2)
    for step in steps:
        df = STEPS[step](sp, df)
    events = len(sp.events)
    predicted = infer_schema(df._node)
    assert len(sp.events) == events  # nothing ran
    actual = df.to_arrow().schema
    assert predicted is not None
    assert predicted.equals(actual, check_metadata=False), (steps, predicted, actual)


def test_schema_of_csv_json_and_udf_queries(sp, tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("1,a\n2,b\n")
    df = sp.read_csv(str(csv), schema={"a": "INTEGER", "b": "VARCHAR"})

    def twice(x: int) -> int:
        return 2 * x

    def thrice(x: int) -> float:
        return 3.0 * x

    # (one name per UDF: a worker's shared DuckDB database refuses a second registration)
    cases = [df, df.filter("a > 1"), df.map("twice(a) AS d", udfs=[twice]),
             sp.partial_sql("SELECT thrice(a) AS d, b FROM {0}", df, udfs=[thrice]),
             sp.partial_sql("SELECT 42 AS answer, 'x' AS s")]
    for case in cases:
        assert case.schema.equals(case.to_arrow().schema, check_metadata=False)


def test_schema_is_unknown_only_where_python_decides(sp):
    df = sp.from_items([{"a": 1}])
    assert df.map(lambda r: r).schema is None
    assert sp.partial_sql("SELECT * FROM {0}", df.map_batches(lambda t: t)).schema is None
    declared = pa.schema([("a", pa.int64())])
    assert df.map(lambda r: r, schema=declared).schema == declared
    assert df.filter(lambda r: True).schema.names == ["a"]


def test_repr_names_the_schema_error_and_runs_nothing(sp):
    df = sp.from_items([{"a": 1}])
    events = len(sp.events)
    text = repr(df.filter("no_such_column > 1"))
    assert "no_such_column" in text and len(sp.events) == events
