"""Random tables and partition counts: each operation against DuckDB on one machine."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

rows = st.lists(
    st.fixed_dictionaries({
        "k": st.integers(-5, 5),
        "v": st.integers(-1000, 1000) | st.none(),
        "s": st.text(alphabet="abcxyz'\"", max_size=4),
    }),
    max_size=60,
)
SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("s", pa.string())])


def _duck(sql: str, table: pa.Table) -> list[tuple]:
    con = duckdb.connect()
    con.register("t", table)
    return sorted(con.execute(sql).fetchall(), key=repr)


def _rows(df) -> list[tuple]:
    return sorted((tuple(r.values()) for r in df.take_all()), key=repr)


@given(data=rows, n=st.integers(1, 6))
def test_hash_repartition_then_aggregate(sp, data, n):
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    df = sp.from_arrow(table).repartition(n, hash_by="k")
    got = sp.partial_sql("SELECT k, count(*) AS c, sum(v) AS s FROM {0} GROUP BY k", df)
    assert _rows(got) == _duck("SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k", table)


@given(data=rows, n=st.integers(1, 6))
def test_filter_and_map_after_rows_split(sp, data, n):
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    df = sp.from_arrow(table).repartition(n, by_rows=True)
    got = df.filter("v IS NOT NULL AND v > 0").map("k * 2 AS k2, s || '!' AS t")
    con = duckdb.connect()
    con.register("t", table)
    expected = con.execute(
        "SELECT k * 2 AS k2, s || '!' AS t FROM t WHERE v IS NOT NULL AND v > 0").fetchall()
    assert [tuple(r.values()) for r in got.take_all()] == expected  # order kept by_rows


@given(data=rows, n=st.integers(1, 5), by=st.sampled_from(["abs(k) % {n}", "(k + 5) % {n}"]))
def test_repartition_by_expression(sp, data, n, by):
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    expr = by.format(n=n)
    df = sp.from_arrow(table).repartition(n, by=expr)
    got = sp.partial_sql(f"SELECT {expr} AS p, count(*) AS c FROM {{0}} GROUP BY p", df)
    # every partition holds exactly the rows whose key names it
    per_part = sp.partial_sql(f"SELECT count(*) FILTER (WHERE {expr} <> 0) AS c FROM {{0}}", df)
    assert _rows(got) == _duck(f"SELECT {expr} AS p, count(*) AS c FROM t GROUP BY p", table)
    assert per_part.num_partitions == n
    counts = [r["c"] for r in per_part.take_all()]
    assert counts[0] == 0


@given(data=rows, n=st.integers(1, 5))
def test_python_map_matches_sql(sp, data, n):
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    df = sp.from_arrow(table).repartition(n, by_rows=True)
    got = df.map(lambda r: {"k": r["k"], "w": None if r["v"] is None else r["v"] * 3},
                 schema=pa.schema([("k", pa.int64()), ("w", pa.int64())]))
    expected = duckdb.connect().from_arrow(table).project("k, v * 3 AS w").fetchall()
    assert [tuple(r.values()) for r in got.take_all()] == expected


@given(data=rows, n=st.integers(1, 5), limit=st.integers(0, 70))
def test_partial_sort_and_limit(sp, data, n, limit):
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    df = sp.from_arrow(table).repartition(n, by_rows=True)
    assert df.limit(limit).count() == min(limit, table.num_rows)
    sorted_parts = df.partial_sort(["k", "v", "s"])
    got = sp.partial_sql("SELECT * FROM {0}", sorted_parts)
    assert _rows(got) == _duck("SELECT * FROM t", table)


@given(data=rows, n=st.integers(1, 5), splits=st.integers(1, 4))
def test_range_repartition_then_partial_sort_is_a_global_sort(sp, data, n, splits):
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    df = sp.from_arrow(table).repartition(splits, by_rows=True)
    ordered = df.repartition(n, range_by="v").partial_sort(["v", "k", "s"])
    assert ordered.num_partitions == n
    got = [tuple(r.values()) for r in ordered.take_all()]
    con = duckdb.connect()
    con.register("t", table)
    assert got == con.execute("SELECT * FROM t ORDER BY v NULLS LAST, k, s").fetchall()


def test_range_repartition_balances_skewed_keys(sp):
    # 90% of rows share few distinct keys in a narrow band: sampled boundaries still split them
    skewed = [{"x": 1_000_000 + (i % 50)} for i in range(9000)] + [
        {"x": i} for i in range(1000)]
    df = sp.from_items(skewed).repartition(4, range_by="x")
    counts = [r["c"] for r in sp.partial_sql("SELECT count(*) AS c FROM {0}", df).take_all()]
    assert sum(counts) == 10_000 and max(counts) < 4000
