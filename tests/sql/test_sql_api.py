"""session.sql and session.register on every runner, compared with DuckDB."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.errors import InputError, SqlError
from tests.sql.conftest import same_rows


@pytest.fixture
def tables(tmp_path):
    """orders (several files, row groups) and customers; with NULL keys and an empty table."""
    folder = tmp_path / "orders"
    folder.mkdir()
    rows = [{"id": i, "cust": None if i % 17 == 0 else i % 40, "amount": (i * 7) % 100 / 4,
             "day": i % 30} for i in range(3000)]
    table = pa.Table.from_pylist(rows)
    for k in range(3):
        pq.write_table(table.slice(k * 1000, 1000), folder / f"part-{k}.parquet",
                       row_group_size=250)
    customers = pa.Table.from_pylist([{"cust": c, "name": f"c{c}", "tier": c % 3}
                                      for c in range(45)] + [{"cust": None, "name": "nobody",
                                                              "tier": None}])
    pq.write_table(customers, tmp_path / "customers.parquet")
    empty = pa.table({"cust": pa.array([], pa.int64()), "note": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "empty.parquet")
    con = duckdb.connect()
    con.register("orders", table)
    con.register("customers", customers)
    con.register("empty", empty)
    return {"orders": str(folder / "*.parquet"), "customers": str(tmp_path / "customers.parquet"),
            "empty": str(tmp_path / "empty.parquet"), "duck": con}


QUERIES = [
    ("SELECT c.name, count(*) AS n, sum(o.amount) AS total FROM orders o "
     "JOIN customers c ON o.cust = c.cust GROUP BY c.name ORDER BY total DESC, c.name", True),
    ("SELECT o.id, c.name FROM orders o LEFT JOIN customers c ON o.cust = c.cust "
     "WHERE o.id < 100 ORDER BY o.id", True),
    ("SELECT c.cust, o.id FROM customers c FULL JOIN (SELECT * FROM orders WHERE id < 50) o "
     "ON o.cust = c.cust", False),
    ("SELECT name FROM customers c WHERE NOT EXISTS (SELECT * FROM orders o "
     "WHERE o.cust = c.cust) ORDER BY name", True),
    ("SELECT count(*) FROM orders WHERE cust IN (SELECT cust FROM customers WHERE tier = 1)",
     True),
    ("SELECT count(*) FROM orders WHERE cust NOT IN (SELECT cust FROM customers "
     "WHERE tier = 2)", True),
    ("SELECT day, count(DISTINCT cust) AS d, median(amount) AS m FROM orders GROUP BY day "
     "ORDER BY day", True),
    ("SELECT id, amount, rank() OVER (PARTITION BY cust ORDER BY amount DESC, id) AS r "
     "FROM orders QUALIFY r <= 2 ORDER BY id", True),
    ("SELECT cust FROM orders UNION SELECT cust FROM customers ORDER BY cust NULLS FIRST", True),
    ("SELECT cust FROM orders INTERSECT SELECT cust FROM customers", False),
    ("SELECT cust FROM customers EXCEPT ALL SELECT cust FROM orders", False),
    ("SELECT DISTINCT tier FROM customers ORDER BY tier", True),
    ("SELECT id FROM orders ORDER BY amount DESC, id LIMIT 5 OFFSET 3", True),
    ("SELECT e.note, c.name FROM empty e JOIN customers c ON e.cust = c.cust", False),
    ("SELECT count(*), sum(amount) FROM orders WHERE id < 0", True),
    ("WITH big AS (SELECT cust, sum(amount) AS s FROM orders GROUP BY cust) "
     "SELECT a.cust, a.s FROM big a JOIN big b ON a.cust = b.cust WHERE a.s > "
     "(SELECT avg(s) FROM big) ORDER BY a.cust", True),
    ("SELECT dim, odd, count(*) FROM (SELECT cust % 3 AS dim, id % 2 AS odd FROM orders) "
     "GROUP BY GROUPING SETS ((dim), (odd))", False),
]


@pytest.mark.parametrize("forced", [False, True], ids=["planner", "all-shuffles"])
@pytest.mark.parametrize("query,ordered", QUERIES)
def test_queries_match_duckdb(sql_sp, tables, query, ordered, forced):
    for name in ("orders", "customers", "empty"):
        sql_sp.register(name, tables[name])
    sql_sp.sql("SET smallpond.partitions = 3")
    if forced:
        sql_sp.sql("SET smallpond.broadcast_limit = 0; SET smallpond.gather_limit = 0")
    df = sql_sp.sql(query)
    got = [tuple(r.values()) for r in df.to_arrow().to_pylist()]
    expected = tables["duck"].execute(query).fetchall()
    assert same_rows(got, expected, ordered), (got[:5], expected[:5])


def test_register_dataframe_and_read_parquet_in_from(sql_sp, tables):
    customers = sql_sp.read_parquet(tables["customers"]).filter("tier = 1")
    sql_sp.register("vip", customers)
    df = sql_sp.sql(f"SELECT count(*) AS n FROM read_parquet('{tables['orders']}') o "
                    "JOIN vip ON o.cust = vip.cust")
    expected = tables["duck"].execute("SELECT count(*) FROM orders o JOIN customers c "
                                      "ON o.cust = c.cust WHERE c.tier = 1").fetchone()[0]
    assert df.to_arrow().to_pylist() == [{"n": expected}]


def test_duckdb_settings_reach_every_task(sql_sp, tables):
    sql_sp.register("orders", tables["orders"])
    sql_sp.sql("SET integer_division = true")
    df = sql_sp.sql("SELECT max(id) / 2 AS half FROM orders")
    assert df.to_arrow().to_pylist() == [{"half": 1499}]
    sql_sp.sql("RESET integer_division")
    assert sql_sp.sql("SELECT max(id) / 2 AS half FROM orders").to_arrow().to_pylist() == [
        {"half": 1499.5}]
    with pytest.raises(SqlError, match="no_such_setting"):
        sql_sp.sql("SET no_such_setting = 1")
    with pytest.raises(SqlError, match="unknown setting smallpond.nope"):
        sql_sp.sql("SET smallpond.nope = 1")
    with pytest.raises(SqlError, match="memory budget"):
        sql_sp.sql("SET memory_limit = '1GB'")


def test_views_copy_and_statement_rules(sql_sp, tables, tmp_path):
    sql_sp.register("orders", tables["orders"])
    assert sql_sp.sql("CREATE VIEW busy AS SELECT cust, count(*) AS n FROM orders "
                      "GROUP BY cust") is None
    out = tmp_path / "out"
    sql_sp.sql(f"COPY (SELECT * FROM busy WHERE n > 70) TO '{out}' (FORMAT parquet)")
    written = pq.read_table(out).to_pylist()
    expected = tables["duck"].execute("SELECT cust, count(*) FROM orders GROUP BY cust "
                                      "HAVING count(*) > 70").fetchall()
    assert sorted(((r["cust"], r["n"]) for r in written), key=repr) == sorted(expected, key=repr)
    assert os.path.exists(out / "_SUCCESS")
    with pytest.raises(SqlError, match="at most one query"):
        sql_sp.sql("SELECT 1; SELECT 2")
    with pytest.raises(SqlError, match="already exists"):
        sql_sp.sql("CREATE VIEW busy AS SELECT 1")
    sql_sp.sql("DROP VIEW busy")
    with pytest.raises(SqlError):
        sql_sp.sql("SELECT * FROM busy")
    with pytest.raises(SqlError, match="INSERT statements are not supported"):
        sql_sp.sql("INSERT INTO orders VALUES (1)")


def test_explain_shows_the_distributed_plan(sql_sp, tables):
    for name in ("orders", "customers"):
        sql_sp.register(name, tables[name])
    sql_sp.sql("SET smallpond.partitions = 4; SET smallpond.broadcast_limit = 0")
    df = sql_sp.sql("SELECT c.tier, sum(o.amount) FROM orders o JOIN customers c "
                    "ON o.cust = c.cust GROUP BY c.tier")
    text = df.explain()
    assert text.startswith("== distributed plan ==")
    assert "shuffle hash on ['o.cust'] -> 4 partitions" in text
    assert "hash join, both sides shuffled to 4" in text
    assert "== physical plan ==" in text


def test_missing_table_and_bad_paths_are_typed(sql_sp, tmp_path):
    with pytest.raises(SqlError, match="no_table"):
        sql_sp.sql("SELECT * FROM no_table")
    with pytest.raises(InputError):
        sql_sp.sql(f"SELECT * FROM read_parquet('{tmp_path}/nothing/*.parquet')")
    with pytest.raises(SqlError, match="read_csv"):
        sql_sp.sql("SELECT * FROM read_csv('x.csv')")
