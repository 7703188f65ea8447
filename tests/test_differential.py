"""Random tables and partition counts: each operation against DuckDB in this process.

Every partition is observed directly (the files the engine holds for it, `_partitions`) and
checked against an expectation computed independently: DuckDB's `hash(...) % n` or the user's
expression names each row's partition, DuckDB's ORDER BY gives each sorted partition's order.
The data: skewed int64 keys (a hot key, tiny and extreme values), NULL-heavy columns, floats
with NaN, infinities and -0.0, unicode strings, empty tables, and partition counts from 1 to
256 (most partitions empty when rows are few).
"""

from __future__ import annotations

import math
import random
from collections import Counter

import duckdb
import pyarrow as pa
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smallpond.errors import SqlError
from smallpond.io.parquet import read_slices

INT64 = st.integers(-2**63, 2**63 - 1)
SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("f", pa.float64()),
                    ("s", pa.string())])

rows = st.lists(
    st.fixed_dictionaries({
        # skewed: a third of the keys is the hot key 7, a third tiny, a third anywhere
        "k": st.one_of(st.just(7), st.integers(-3, 3), INT64),
        "v": st.one_of(st.none(), st.none(), st.integers(-10**6, 10**6)),  # NULL-heavy
        "f": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan])),
        "s": st.one_of(st.none(), st.text(max_size=6)),  # any unicode, NUL included
    }),
    max_size=60,
)
# how often the drawn rows repeat: bigger tables, heavy duplicates, same example cost
copies = st.integers(1, 30)
# partition counts of shuffles whose partitions are read directly (no task per partition)
many = st.one_of(st.integers(1, 9), st.sampled_from([16, 64, 256]))
# partition counts of shuffles that a task per partition then reads
few = st.integers(1, 9)


def _table(data: list[dict], times: int = 1) -> pa.Table:
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    return pa.concat_tables([table] * times) if times > 1 else table


def _norm(value):
    """A value that compares (and hashes) equal exactly when DuckDB's values are equal."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    return value


def _row(row: dict) -> tuple:
    return tuple(_norm(v) for v in row.values())


def _order(value) -> tuple:
    """DuckDB's ascending order with NULLS LAST: NaN is above every other float."""
    if value is None:
        return (2,)
    if isinstance(value, float) and math.isnan(value):
        return (1,)
    return (0, value)


def _partitions(df) -> list[list[dict]]:
    """The rows of each partition, as the engine holds them, in partition and row order."""
    return [read_slices(part).to_pylist() if part else [] for part in df._compute()]


def _duck(sql: str, table: pa.Table) -> list[dict]:
    con = duckdb.connect()
    con.register("t", table)
    return con.sql(sql).to_arrow_table().to_pylist()


def _expected_partitions(table: pa.Table, expression: str, n: int) -> list[Counter]:
    """Rows grouped by the partition that `expression` (DuckDB, on the input) names."""
    expected = [Counter() for _ in range(n)]
    for row in _duck(f"SELECT *, ({expression}) AS __p FROM t", table):
        expected[row.pop("__p")][_row(row)] += 1
    return expected


def _spread(sp, table: pa.Table, mappers: int):
    """The table as `mappers` partitions, so that shuffles gather from several files."""
    return sp.from_arrow(table).repartition(mappers, by_rows=True)


HASH_KEYS = [("k",), ("s",), ("f",), ("k", "s"), ("v", "f", "s")]


@given(data=rows, times=copies, n=many, mappers=st.integers(1, 4),
       keys=st.sampled_from(HASH_KEYS))
def test_hash_repartition_puts_every_row_where_its_hash_names(sp, data, times, n, mappers,
                                                              keys):
    table = _table(data, times)
    df = _spread(sp, table, mappers).repartition(n, hash_by=list(keys))
    got = _partitions(df)
    assert len(got) == n == df.num_partitions
    columns = ", ".join(keys)
    expected = _expected_partitions(table, f"hash({columns}) % {n}", n)
    for index in range(n):
        assert Counter(_row(r) for r in got[index]) == expected[index], f"partition {index}"


EXPRESSIONS = ["((k % {n}) + {n}) % {n}", "coalesce(length(s), 0) % {n}",
               "CASE WHEN v IS NULL THEN {n} - 1 ELSE 0 END", "0"]


@given(data=rows, times=copies, n=many, mappers=st.integers(1, 3),
       by=st.sampled_from(EXPRESSIONS))
def test_repartition_by_expression_puts_every_row_where_it_says(sp, data, times, n, mappers,
                                                                by):
    table = _table(data, times)
    expression = by.format(n=n)
    df = _spread(sp, table, mappers).repartition(n, by=expression)
    got = _partitions(df)
    assert len(got) == n
    expected = _expected_partitions(table, expression, n)
    for index in range(n):
        assert Counter(_row(r) for r in got[index]) == expected[index], f"partition {index}"


AGGREGATE = ("SELECT k, count(*) AS c, sum(v) AS sv, count(v) AS cv, count(f) AS cf, "
             "min(f) AS lo, max(f) AS hi, count(s) AS cs, min(s) AS first, max(s) AS last "
             "FROM {0} GROUP BY k")


@given(data=rows, times=copies, n=few, mappers=st.integers(1, 3))
def test_hash_repartition_then_aggregate(sp, data, times, n, mappers):
    table = _table(data, times)
    df = _spread(sp, table, mappers).repartition(n, hash_by="k")
    got = sp.partial_sql(AGGREGATE, df)
    expected = _duck(AGGREGATE.format("t"), table)
    # each key is in one partition, so one row per key: a key split across partitions fails
    assert Counter(map(_row, got.take_all())) == Counter(map(_row, expected))


@given(data=rows, times=copies, n=many)
def test_rows_split_keeps_order_and_balance(sp, data, times, n):
    table = _table(data, times)
    got = _partitions(sp.from_arrow(table).repartition(n, by_rows=True))
    assert len(got) == n
    assert [_row(r) for part in got for r in part] == [_row(r) for r in table.to_pylist()]
    sizes = [len(part) for part in got]
    assert max(sizes) - min(sizes) <= 1, sizes


@given(data=rows, times=copies, n=few)
@example(data=[{"k": 2**62, "v": None, "f": math.inf, "s": None}], times=1, n=1)  # overflow
def test_filter_and_map_after_rows_split(sp, data, times, n):
    table = _table(data, times)
    df = sp.from_arrow(table).repartition(n, by_rows=True)
    got = df.filter("v IS NOT NULL AND v > 0 OR f > 1").map("k * 2 AS k2, s || '!' AS t, f")
    try:
        expected = _duck("SELECT k * 2 AS k2, s || '!' AS t, f FROM t "
                         "WHERE v IS NOT NULL AND v > 0 OR f > 1", table)
    except duckdb.OutOfRangeException:  # k * 2 overflows int64: the engine fails alike
        with pytest.raises(SqlError, match=r"(?s)Overflow in multiplication of INT64.*k \* 2"):
            got.take_all()
        return
    assert [_row(r) for r in got.take_all()] == [_row(r) for r in expected]  # order kept


@given(data=rows, n=few)
def test_python_map_matches_sql(sp, data, n):
    table = _table(data)
    df = sp.from_arrow(table).repartition(n, by_rows=True)
    got = df.map(lambda r: {"k": r["k"], "w": None if r["v"] is None else r["v"] * 3,
                            "t": None if r["s"] is None else r["s"] + "!"},
                 schema=pa.schema([("k", pa.int64()), ("w", pa.int64()), ("t", pa.string())]))
    # (not reverse(): DuckDB reverses grapheme clusters, Python code points)
    expected = _duck("SELECT k, v * 3 AS w, s || '!' AS t FROM t", table)
    assert [_row(r) for r in got.take_all()] == [_row(r) for r in expected]


SORT_KEYS = [["k"], ["v", "k"], ["f"], ["s", "f"], ["f DESC", "s"], ["v DESC NULLS FIRST"],
             ["s DESC", "v", "k"]]


def _check_sorted_like_duckdb(got: list[dict], keys: list[str], rows_in: list[dict]) -> None:
    """`got` holds exactly `rows_in` and is in the order DuckDB's ORDER BY gives them: the same
    sequence of sort keys, and the same rows for each key (ties may come in any order)."""
    columns = [key.split()[0] for key in keys]
    table = pa.Table.from_pylist(rows_in, schema=SCHEMA)
    expected = _duck(f"SELECT * FROM t ORDER BY {', '.join(keys)}", table) if rows_in else []

    def key_of(row):
        return tuple(_norm(row[c]) for c in columns)

    assert [key_of(r) for r in got] == [key_of(r) for r in expected]
    assert Counter(map(_row, got)) == Counter(map(_row, expected))


@given(data=rows, times=st.integers(1, 3), n=few, keys=st.sampled_from(SORT_KEYS),
       limit=st.integers(0, 200))
def test_partial_sort_orders_every_partition_like_duckdb(sp, data, times, n, keys, limit):
    table = _table(data, times)
    df = sp.from_arrow(table).repartition(n, by_rows=True)
    before = _partitions(df)
    after = _partitions(df.partial_sort(keys))
    assert len(after) == n
    for index in range(n):  # rows stay in their partition, in DuckDB's order there
        _check_sorted_like_duckdb(after[index], keys, before[index])
    # limit: the first rows of the partitions in order (the input order, for a rows split)
    assert [_row(r) for r in df.limit(limit).take_all()] == \
        [_row(r) for r in table.slice(0, limit).to_pylist()]


@pytest.mark.parametrize("keys", SORT_KEYS, ids=" ".join)
def test_partial_sort_of_a_wide_table(sp, keys):
    """Every sort key on data sure to hold ties, NULLs, NaN and many values per partition."""
    df = _spread(sp, _wide_table(900, seed=len(keys)), 3)
    before = _partitions(df)
    after = _partitions(df.partial_sort(keys))
    for index in range(3):
        assert len(before[index]) == 300
        _check_sorted_like_duckdb(after[index], keys, before[index])


RANGE_KEYS = ["v", "f", "s", "k"]


@given(data=rows, times=copies, n=many, mappers=st.integers(1, 3),
       key=st.sampled_from(RANGE_KEYS))
def test_range_repartition_orders_partitions(sp, data, times, n, mappers, key):
    table = _table(data, times)
    got = _partitions(_spread(sp, table, mappers).repartition(n, range_by=key))
    assert len(got) == n
    assert Counter(_row(r) for part in got for r in part) == \
        Counter(_row(r) for r in table.to_pylist())
    # partition i holds keys <= those of partition i+1 (DuckDB's order, NULLs last)
    bounds = [(min(_order(r[key]) for r in part), max(_order(r[key]) for r in part))
              for part in got if part]
    for (_, high), (low, _) in zip(bounds, bounds[1:]):
        assert high <= low


@given(data=rows, times=copies, n=few, splits=st.integers(1, 4),
       key=st.sampled_from(RANGE_KEYS))
def test_range_repartition_then_partial_sort_is_a_global_sort(sp, data, times, n, splits, key):
    table = _table(data, times)
    keys = [key, "k", "v", "f", "s"]
    ordered = _spread(sp, table, splits).repartition(n, range_by=key).partial_sort(keys)
    assert ordered.num_partitions == n
    _check_sorted_like_duckdb(ordered.take_all(), keys, table.to_pylist())


# -- many reducers: 64 and 256 tasks read one shuffle each --------------------------------------
def _wide_table(rows: int, seed: int) -> pa.Table:
    """Half the rows share one key; NULLs, NaN, infinities and unicode in the other columns."""
    rng = random.Random(seed)
    words = ["", "a", "a\x00", "Ä", "日本", "naïve", "🙂", "z" * 30, "tab\tsep"]
    floats = [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, None]
    data = {
        "k": [7 if rng.random() < 0.5 else rng.randint(-2**63, 2**63 - 1) if rng.random() < 0.1
              else rng.randint(-500, 500) for _ in range(rows)],
        "v": [None if rng.random() < 0.6 else rng.randint(-10**6, 10**6) for _ in range(rows)],
        "f": [rng.choice(floats) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6)
              for _ in range(rows)],
        "s": [None if rng.random() < 0.2 else rng.choice(words) + str(rng.randint(0, 99))
              for _ in range(rows)],
    }
    return pa.table(data, schema=SCHEMA)


@pytest.mark.parametrize("n", [64, 256])
def test_hash_shuffle_with_many_reducers(sp, n):
    table = _wide_table(6000, seed=n)
    df = _spread(sp, table, 3).repartition(n, hash_by=["k", "s"])
    got = _partitions(df)
    expected = _expected_partitions(table, f"hash(k, s) % {n}", n)
    for index in range(n):
        assert Counter(_row(r) for r in got[index]) == expected[index], f"partition {index}"
    # a reducer task per partition: the aggregate equals DuckDB's, one row per group
    query = ("SELECT k, s, count(*) AS c, sum(v) AS sv, count(f) AS cf, min(f) AS lo, "
             "max(f) AS hi FROM {0} GROUP BY k, s")
    result = sp.partial_sql(query, df)
    assert Counter(map(_row, result.take_all())) == \
        Counter(map(_row, _duck(query.format("t"), table)))


@pytest.mark.parametrize("n,key", [(64, "f"), (256, "s")])
def test_range_sort_with_many_reducers(sp, n, key):
    table = _wide_table(6000, seed=n + len(key))
    keys = [key, "k", "v", "f", "s"]
    ranged = _spread(sp, table, 3).repartition(n, range_by=key)
    ordered = ranged.partial_sort(keys)
    parts = _partitions(ordered)
    assert len(parts) == n
    # the hot keys stay together; every partition's range comes after the previous one's
    bounds = [(_order(part[0][key]), _order(part[-1][key])) for part in parts if part]
    for (_, high), (low, _) in zip(bounds, bounds[1:]):
        assert high <= low
    _check_sorted_like_duckdb([r for part in parts for r in part], keys, table.to_pylist())


def test_range_repartition_balances_skewed_keys(sp):
    # 90% of rows share few distinct keys in a narrow band: sampled boundaries still split them
    skewed = [{"x": 1_000_000 + (i % 50)} for i in range(9000)] + [
        {"x": i} for i in range(1000)]
    df = sp.from_items(skewed).repartition(4, range_by="x")
    counts = [r["c"] for r in sp.partial_sql("SELECT count(*) AS c FROM {0}", df).take_all()]
    assert sum(counts) == 10_000 and max(counts) < 4000
