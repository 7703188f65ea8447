"""The 22 TPC-H queries through session.sql at 1, 3 and 8 partitions on every runner, each
equal to DuckDB running the same query in one process over the same files.

At 3 partitions broadcasts and gathers are switched off, so every join is a hash join of two
shuffled sides and every aggregate, DISTINCT and ORDER BY is hash- or range-shuffled; at 8
only sides under 64KB are broadcast (the small dimension tables), so large joins shuffle and
large sides are first reduced to the small side's keys; at 1 partition everything is local. The scale factor is 0.01
here; `SMALLPOND_TPCH_SF=0.1 python -m pytest tests/sql/test_tpch.py` runs a larger one.
"""

from __future__ import annotations

import pytest

from smallpond.bench.tpch_queries import QUERIES, TABLES
from smallpond.logical.optimizer import optimize
from smallpond.sql.explain import stage_nodes
from tests.sql.conftest import same_rows

MODES = {
    1: [],
    3: ["SET smallpond.broadcast_limit = 0", "SET smallpond.gather_limit = 0"],
    8: ["SET smallpond.broadcast_limit = '64KB'"],
}


@pytest.mark.parametrize("partitions", sorted(MODES))
@pytest.mark.parametrize("number", sorted(QUERIES))
def test_tpch_query_matches_duckdb(sql_sp, tpch_dir, tpch_duckdb, number, partitions):
    for table in TABLES:
        sql_sp.register(table, f"{tpch_dir}/{table}.parquet")
    sql_sp.sql(f"SET smallpond.partitions = {partitions}")
    for setting in MODES[partitions]:
        sql_sp.sql(setting)
    df = sql_sp.sql(QUERIES[number])
    assert df.sql_plan.fallback is None, df.sql_plan.fallback
    got = [tuple(r.values()) for r in df.to_arrow().to_pylist()]
    relation = tpch_duckdb.sql(QUERIES[number])
    expected = relation.fetchall()
    assert list(df.to_arrow().column_names) == relation.columns
    assert same_rows(got, expected, ordered=True), (got[:5], expected[:5])
    nodes, _ = stage_nodes(optimize(df._node))
    widest = max(n.num_partitions for n in nodes)
    if partitions > 1:
        assert widest > 1  # the distributed path: stages of several partitions
    else:
        assert widest == 1
