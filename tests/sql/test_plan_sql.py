"""Plan-level tests of global SQL: what the planner decides, without running anything."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.errors import SqlError
from smallpond.logical.nodes import Broadcast, Repartition, SqlQuery
from smallpond.logical.optimizer import optimize
from smallpond.sql.catalog import Catalog, files_table
from smallpond.sql.explain import distributed_text, stage_nodes
from smallpond.sql.parse import bind_parameters, parse_statement, split_statements
from smallpond.sql.plan import plan_statement
from smallpond.sql.settings import SqlSettings


@pytest.fixture
def catalog(tmp_path):
    """facts: 20k rows in 10 row groups; dims: 50 rows; other: 5k rows."""
    n = 20_000
    rng = np.random.default_rng(1)
    facts = pa.table({"id": np.arange(n), "dim": rng.integers(0, 50, n),
                      "v": rng.random(n), "day": rng.integers(0, 365, n)})
    pq.write_table(facts, tmp_path / "facts.parquet", row_group_size=2_000)
    dims = pa.table({"dim": np.arange(50), "name": [f"d{i}" for i in range(50)]})
    pq.write_table(dims, tmp_path / "dims.parquet")
    other = pa.table({"id": np.arange(0, n, 4), "w": rng.random(n // 4)})
    pq.write_table(other, tmp_path / "other.parquet", row_group_size=1_000)
    cat = Catalog()
    for name in ("facts", "dims", "other"):
        cat.register(name, files_table(name, str(tmp_path / f"{name}.parquet")))
    return cat


def plan(catalog, sql, **settings):
    base = SqlSettings(partitions=settings.pop("partitions", 4))
    for name, value in settings.items():
        base = base.with_setting(f"smallpond.{name}", str(value))
    statement = split_statements(sql)[0]
    result = plan_statement(parse_statement(statement), statement.text, catalog, base, 2)
    return result, optimize(result.node)


def kinds(node):
    nodes, _ = stage_nodes(node)
    return nodes


def text(result, node):
    return distributed_text(node, result.notes, result.fallback)


def test_join_of_large_tables_shuffles_both_sides_alike(catalog):
    result, node = plan(catalog, "SELECT f.dim, o.w FROM facts f JOIN other o ON f.id = o.id",
                        broadcast_limit=0)
    assert result.fallback is None
    shuffles = [n for n in kinds(node) if isinstance(n, Repartition)]
    assert len(shuffles) == 2 and {s.n for s in shuffles} == {4}
    assert {s.hash_by for s in shuffles} == {("f.id",), ("o.id",)}
    join = next(n for n in kinds(node) if isinstance(n, SqlQuery) and
                all(isinstance(s, Repartition) for s in n.sources) and len(n.sources) == 2)
    assert join.copartitioned
    assert "hash join, both sides shuffled to 4" in text(result, node)


def test_small_side_is_broadcast_and_reread_by_each_partition(catalog):
    result, node = plan(catalog, "SELECT d.name, sum(f.v) FROM facts f JOIN dims d "
                                 "ON f.dim = d.dim GROUP BY d.name")
    assert "broadcast" in text(result, node)
    broadcasts = [n for n in kinds(node) if isinstance(n, Broadcast) and n.n > 1]
    assert broadcasts and all(b.n == 4 for b in broadcasts)
    assert not any(isinstance(n, Repartition) and "f.dim" in n.hash_by for n in kinds(node))


def test_aggregate_has_two_phases_with_a_hash_shuffle_on_the_keys(catalog):
    result, node = plan(catalog, "SELECT id % 1000 AS k, count(*), avg(v) FROM facts "
                                 "GROUP BY k", gather_limit=0)
    assert "two phases" in text(result, node)
    shuffle = next(n for n in kinds(node) if isinstance(n, Repartition))
    assert shuffle.method == "hash" and shuffle.n == 4
    assert shuffle.source.partial and "GROUP BY" in shuffle.source.sql


def test_order_by_uses_sampled_range_partitioning(catalog):
    result, node = plan(catalog, "SELECT id, v FROM facts ORDER BY v DESC", gather_limit=0)
    ranged = [n for n in kinds(node) if isinstance(n, Repartition) and n.method == "range"]
    assert len(ranged) == 1 and ranged[0].descending and ranged[0].n == 4
    assert node.ordered and node.num_partitions == 4


def test_top_n_is_pushed_into_every_partition(catalog):
    result, node = plan(catalog, "SELECT id FROM facts ORDER BY v LIMIT 7")
    assert "top-n: 7 rows per partition in 4 partitions" in text(result, node)
    assert node.num_partitions == 1 and node.ordered


def test_correlated_exists_becomes_semi_and_anti_joins(catalog):
    sql = ("SELECT count(*) FROM facts f WHERE EXISTS (SELECT * FROM other o WHERE o.id = f.id "
           "AND o.w > f.v) AND NOT EXISTS (SELECT * FROM dims d WHERE d.dim = f.dim "
           "AND d.name = 'd3')")
    result, node = plan(catalog, sql, broadcast_limit=0)
    assert result.fallback is None
    sqls = " ".join(n.sql for n in kinds(node) if isinstance(n, SqlQuery))
    assert "SEMI JOIN" in sqls and "ANTI JOIN" in sqls


def test_correlated_scalar_subquery_is_decorrelated(catalog):
    sql = ("SELECT count(*) FROM facts f WHERE f.v > (SELECT avg(o.w) FROM other o "
           "WHERE o.id = f.id)")
    result, node = plan(catalog, sql)
    assert result.fallback is None
    assert "decorrelated" in text(result, node)


def test_window_shuffles_on_partition_by_keys(catalog):
    result, node = plan(catalog, "SELECT id, rank() OVER (PARTITION BY dim ORDER BY v) "
                                 "FROM facts")
    assert any(isinstance(n, Repartition) and n.hash_by == ("facts.dim",) for n in kinds(node))


def test_unsupported_runs_as_one_stage_with_a_note(catalog):
    result, node = plan(catalog, "SELECT dim, day % 2 AS odd, count(*) FROM facts "
                                 "GROUP BY GROUPING SETS ((dim), (odd))")
    assert result.fallback and "GROUPING SETS" in result.fallback
    assert node.num_partitions == 1 and isinstance(node, SqlQuery)
    assert "runs as ONE DuckDB stage" in text(result, node)


def test_row_groups_are_pruned_by_min_max(catalog):
    result, node = plan(catalog, "SELECT count(*) FROM facts WHERE id BETWEEN 100 AND 2500")
    assert "2 of 10 row groups after pruning" in text(result, node)
    assert "filter pushed into the read:" in text(result, node)
    assert '"facts"."id" >= 100' in text(result, node)


def test_syntax_error_names_statement_and_line():
    statements = split_statements("SET smallpond.partitions = 2;\nSELECT 1,\n  FROM WHERE x")
    with pytest.raises(SqlError) as info:
        parse_statement(statements[1])
    assert info.value.statement == 2 and info.value.line in (2, 3)
    assert "statement 2" in str(info.value)


def test_bind_error_comes_from_duckdb_with_the_statement(catalog):
    with pytest.raises(SqlError, match="no_such_column"):
        plan(catalog, "SELECT no_such_column FROM facts")


def test_parameters_are_bound_as_literals():
    statement = split_statements("SELECT * FROM t WHERE name = ${name} LIMIT ${n}")[0]
    tree = bind_parameters(parse_statement(statement), {"name": "x'; DROP TABLE t; --",
                                                         "n": "5"})
    sql = tree.sql(dialect="duckdb")
    assert sql == "SELECT * FROM t WHERE name = 'x''; DROP TABLE t; --' LIMIT 5"
    with pytest.raises(SqlError, match=r"\$\{name\} has no value"):
        bind_parameters(parse_statement(statement), {"n": "1"})


def test_ordering_settings_run_as_one_stage(catalog):
    base = SqlSettings(partitions=4).with_setting("default_null_order", "'nulls_first'")
    statement = split_statements("SELECT id FROM facts ORDER BY v")[0]
    result = plan_statement(parse_statement(statement), statement.text, catalog, base, 2)
    assert result.fallback and "sort" in result.fallback


def test_co_partitioned_inputs_join_without_a_shuffle(catalog):
    result, node = plan(catalog, "SELECT f.dim, count(*) FROM facts f JOIN facts g "
                                 "ON f.dim = g.dim GROUP BY f.dim", broadcast_limit=0)
    shuffles = [n for n in kinds(node) if isinstance(n, Repartition)]
    # both sides hashed on dim once; the aggregate on dim needs no further shuffle
    assert len(shuffles) == 2
    assert "already hash-partitioned on group keys" in text(result, node)


def test_small_input_runs_as_one_stage_without_a_partition_count(catalog):
    statement = split_statements("SELECT dim, count(*) FROM facts GROUP BY dim")[0]
    result = plan_statement(parse_statement(statement), statement.text, catalog,
                            SqlSettings(), 2)
    assert result.fallback is None
    assert result.node.num_partitions == 1 and result.node.name == "single stage"
    assert any("small input" in note for note in result.notes)


def test_large_side_is_reduced_to_the_small_sides_keys(catalog):
    result, node = plan(catalog, "SELECT count(*) FROM other o WHERE o.w > 0.99 AND EXISTS "
                                 "(SELECT * FROM facts f WHERE f.id = o.id)",
                        broadcast_limit="100KB", gather_limit=0)
    assert "keeps only rows whose keys occur" in text(result, node)
    assert any("SEMI JOIN" in n.sql and n.name.endswith("key filter")
               for n in kinds(node) if isinstance(n, SqlQuery))


def test_a_cte_read_twice_is_computed_once(catalog):
    from smallpond.logical.nodes import Stage

    result, node = plan(catalog, "WITH s AS (SELECT dim, sum(v) AS t FROM facts GROUP BY dim) "
                                 "SELECT a.dim FROM s a JOIN s b ON a.dim = b.dim + 1")
    assert any(isinstance(n, Stage) for n in kinds(node))


def test_local_runner_gives_a_lone_task_every_core():
    import os

    from smallpond.config import resolve_config
    from smallpond.runners.local import LocalRunner

    runner = LocalRunner.__new__(LocalRunner)  # no workers: only the thread arithmetic
    runner.config = resolve_config(data_root="/tmp/unused", num_executors=2)
    cores = os.cpu_count() or 1
    assert runner.threads_for(running=0, waiting=0) == cores
    assert runner.threads_for(running=0, waiting=3) == max(1, cores // 2)
    assert runner.threads_for(running=1, waiting=0) == max(1, cores // 2)
