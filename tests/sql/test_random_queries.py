"""Random tables and random queries (joins, GROUP BY, ORDER BY, LIMIT, subqueries, set
operations, windows; NULLs and empty tables) through session.sql, compared with DuckDB."""

from __future__ import annotations

import itertools

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from tests.sql.conftest import same_rows

_folders = itertools.count()

ints = st.integers(-3, 6) | st.none()
words = st.sampled_from(["a", "b", "c", "", "b'c"]) | st.none()
SCHEMAS = {
    "t1": [("a", pa.int64(), ints), ("b", pa.int64(), ints), ("s", pa.string(), words)],
    "t2": [("a", pa.int64(), ints), ("c", pa.int32(), ints)],
    "t3": [("b", pa.int64(), ints), ("d", pa.string(), words)],
}


@st.composite
def table_data(draw, name):
    columns = SCHEMAS[name]
    rows = draw(st.lists(st.tuples(*[c[2] for c in columns]), max_size=30))
    arrays = [pa.array([r[i] for r in rows], c[1]) for i, c in enumerate(columns)]
    return pa.table(dict(zip([c[0] for c in columns], arrays)))


COMPARE = ["t1.a > 1", "t1.b IS NULL", "t1.s IN ('a', 'b')", "t1.a <> t1.b",
           "coalesce(t1.b, 0) < 3", "t1.s LIKE 'b%'"]
SUBQUERY = ["EXISTS (SELECT * FROM t2 x WHERE x.a = t1.a AND x.c > 0)",
            "NOT EXISTS (SELECT * FROM t3 y WHERE y.b = t1.b)",
            "t1.a IN (SELECT a FROM t2 WHERE c IS NOT NULL)",
            "t1.b NOT IN (SELECT b FROM t3 WHERE b IS NOT NULL)",
            "t1.a > (SELECT min(c) FROM t2)",
            "t1.b <= (SELECT max(x.c) FROM t2 x WHERE x.a = t1.a)"]
JOINS = ["", "JOIN t2 ON t1.a = t2.a", "LEFT JOIN t2 ON t1.a = t2.a",
         "RIGHT JOIN t2 ON t1.a = t2.a AND t2.c > 0", "FULL JOIN t2 ON t1.a = t2.a",
         "JOIN t2 ON t1.a = t2.a JOIN t3 ON t1.b = t3.b", "CROSS JOIN t3",
         "LEFT JOIN t3 ON t1.b = t3.b AND t3.d <> 'a'", "JOIN t2 ON t1.a < t2.c"]


@st.composite
def queries(draw):
    join = draw(st.sampled_from(JOINS))
    where = draw(st.lists(st.sampled_from(COMPARE + SUBQUERY), max_size=2, unique=True))
    columns = ["t1.a", "t1.b", "t1.s"]
    if "t2" in join:
        columns += ["t2.c"]
    if "t3" in join:
        columns += ["t3.d"]
    shape = draw(st.sampled_from(["rows", "group", "distinct", "window", "global"]))
    picked = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=3, unique=True))
    having = ""
    if shape == "group":
        aggs = draw(st.lists(st.sampled_from(
            ["count(*)", "count(t1.b)", "sum(t1.a)", "min(t1.s)", "max(t1.b)", "avg(t1.a)",
             "count(DISTINCT t1.s)", "bool_or(t1.a > 0)"]), min_size=1, max_size=3,
            unique=True))
        select = picked + aggs
        group = " GROUP BY " + ", ".join(picked)
        if draw(st.booleans()):
            having = " HAVING count(*) > 1"
    elif shape == "global":
        select = draw(st.lists(st.sampled_from(
            ["count(*)", "sum(t1.a)", "max(t1.s)", "avg(t1.b)", "count(DISTINCT t1.a)"]),
            min_size=1, max_size=3, unique=True))
        group = ""
    elif shape == "window":
        select = picked + [f"row_number() OVER (PARTITION BY {picked[0]} ORDER BY "
                           f"{', '.join(columns)})",
                           f"sum(t1.a) OVER (PARTITION BY {picked[0]})"]
        group = ""
    else:
        select = picked
        group = ""
    distinct = "DISTINCT " if shape == "distinct" else ""
    items = ", ".join(f"{e} AS c{i}" for i, e in enumerate(select))
    sql = f"SELECT {distinct}{items} FROM t1 {join}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += group + having
    ordered = draw(st.booleans())
    if ordered:
        sql += " ORDER BY " + ", ".join(f"c{i}" for i in range(len(select)))
        if draw(st.booleans()):
            sql += f" LIMIT {draw(st.integers(0, 8))}"
            if draw(st.booleans()):
                sql += f" OFFSET {draw(st.integers(1, 4))}"
    if not ordered and shape == "rows" and all(c.startswith("t1.") for c in picked) and \
            draw(st.booleans()):
        sql += f" UNION ALL SELECT {', '.join(picked)} FROM t1 WHERE t1.a IS NULL"
    return sql, ordered


def _write(tmp_path_factory, tables: dict[str, pa.Table], splits: int) -> dict[str, str]:
    folder = tmp_path_factory.mktemp(f"random-{next(_folders)}")
    paths = {}
    for name, table in tables.items():
        sub = folder / name
        sub.mkdir()
        n = table.num_rows
        for i in range(splits):
            lo, hi = i * n // splits, (i + 1) * n // splits
            pq.write_table(table.slice(lo, hi - lo), sub / f"p{i}.parquet", row_group_size=4)
        paths[name] = str(sub / "*.parquet")
    return paths


@given(t1=table_data("t1"), t2=table_data("t2"), t3=table_data("t3"), query=queries(),
       partitions=st.integers(1, 5), splits=st.integers(1, 3),
       mode=st.sampled_from(["planner", "all-shuffles", "small-broadcasts"]))
def test_random_query_matches_duckdb(sql_sp, tmp_path_factory, t1, t2, t3, query, partitions,
                                     splits, mode):
    sql, ordered = query
    tables = {"t1": t1, "t2": t2, "t3": t3}
    sql_sp._sql_state = None
    for name, path in _write(tmp_path_factory, tables, splits).items():
        sql_sp.register(name, path)
    sql_sp.sql(f"SET smallpond.partitions = {partitions}")
    if mode == "all-shuffles":
        sql_sp.sql("SET smallpond.broadcast_limit = 0; SET smallpond.gather_limit = 0")
    elif mode == "small-broadcasts":  # joins shuffle; large sides reduced to the small's keys
        sql_sp.sql("SET smallpond.broadcast_limit = '300B'; SET smallpond.gather_limit = 0")
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    expected = con.execute(sql).fetchall()
    df = sql_sp.sql(sql)
    got = [tuple(r.values()) for r in df.to_arrow().to_pylist()]
    assert same_rows(got, expected, ordered), (sql, df.sql_plan.fallback, got, expected)
