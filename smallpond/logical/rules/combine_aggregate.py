"""A combiner: a GROUP BY right after a hash shuffle pre-aggregates in the map tasks.

`partial_sql("SELECT k, count(*), sum(v) FROM {0} GROUP BY k", df.repartition(n, hash_by="k"))`
sends one row per group and map task through the shuffle instead of every row. It applies when
the hash columns are among the GROUP BY columns (then all rows of a group meet in one reduce
task either way) and every aggregate is decomposable; the merge is cast back to each
aggregate's type, so the result is the same query's result (floating-point sums may differ in
the last bits, as in any parallel aggregation).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import duckdb

from smallpond.errors import SmallpondError
from smallpond.kernels.placeholders import substitute
from smallpond.logical.nodes import Node, Repartition, SqlQuery
from smallpond.logical.rules.base import Rule
from smallpond.logical.schema import bind_types, infer_schema

if TYPE_CHECKING:
    from sqlglot import exp

__all__ = ["CombineAggregate"]

INPUT = "__sp_combine_input"
PARTIAL = "__sp_partial_"  # the partial columns' names (what marks a combined aggregate)
_BLOCKERS = ("with_", "joins", "distinct", "order", "limit", "offset", "qualify", "windows")


def _shape(sql: str) -> exp.Select | None:
    """The query as a tree when it is one plain GROUP BY over its input, else None."""
    import sqlglot  # here: a plan without a shuffle never pays for importing it
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(substitute(sql, lambda i: INPUT, 1), read="duckdb")
    except Exception:  # not parseable here: leave it alone
        return None
    if not isinstance(tree, exp.Select) or tree.args.get("group") is None:
        return None
    if any(tree.args.get(k) for k in _BLOCKERS):
        return None
    source = tree.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table) or source.this.name != INPUT:
        return None
    if any(isinstance(n, (exp.Subquery, exp.Window, exp.Exists, exp.Select)) and n is not tree
           for n in tree.walk()):
        return None
    group = tree.args["group"]
    if any(group.args.get(k) for k in ("all", "grouping_sets", "cube", "rollup")):
        return None
    if not all(isinstance(g, exp.Column) for g in group.expressions):
        return None
    return tree


class CombineAggregate(Rule):
    name = "combine_aggregate"

    def apply(self, node: Node) -> Node:
        if not (isinstance(node, SqlQuery) and len(node.sources) == 1 and not node.udfs
                and not node.ordered and isinstance(node.sources[0], Repartition)):
            return node
        shuffle = node.sources[0]
        if shuffle.method != "hash" or PARTIAL in node.sql or (
                isinstance(shuffle.source, SqlQuery) and shuffle.source.partial):
            return node  # already the merge of a combined aggregate
        tree = _shape(node.sql)
        if tree is None:
            return node
        groups = [g.name for g in tree.args["group"].expressions]
        if not {h.lower() for h in shuffle.hash_by} <= {g.lower() for g in groups}:
            return node
        try:
            return self._rewrite(node, shuffle, tree, groups) or node
        except (SmallpondError, duckdb.Error):  # unknown input schema or types: leave it
            return node

    def _rewrite(self, node: SqlQuery, shuffle: Repartition, tree: exp.Select,
                 groups: list[str]) -> Node | None:
        import sqlglot
        from sqlglot import exp

        from smallpond.logical.aggregates import aggregate_calls, decompose, split_filter

        schema = infer_schema(shuffle.source)
        if schema is None:
            return None
        calls = aggregate_calls(exp.Tuple(expressions=list(tree.expressions) + (
            [tree.args["having"].this] if tree.args.get("having") else [])))
        if not calls:
            return None
        source = tree.args["from_"].this
        frm = f"FROM {{0}}{' AS ' + source.alias if source.alias else ''}"
        where = tree.args.get("where")
        where_sql = f" WHERE {where.this.sql(dialect='duckdb')}" if where is not None else ""
        group_items = ", ".join(g.sql(dialect="duckdb") for g in tree.args["group"].expressions)
        probe = ", ".join(f"{c.sql(dialect='duckdb')} AS c{i}" for i, c in enumerate(calls))
        types = [t for _, t in bind_types(
            f"SELECT {probe} {frm}{where_sql} GROUP BY {group_items}", [schema])]
        arg_types = []
        for call in calls:
            agg, _ = split_filter(call)
            if isinstance(agg, exp.Avg):
                arg_types.append(bind_types(f"SELECT {agg.this.sql(dialect='duckdb')} {frm}",
                                            [schema])[0][1])
            else:
                arg_types.append(None)
        parts = [decompose(c, lambda e: e.sql(dialect="duckdb"), t)
                 for c, t in zip(calls, arg_types)]
        if any(p is None for p in parts):
            return None
        partial_items = [f'{g.sql(dialect="duckdb")} AS "{g.name}"'
                         for g in tree.args["group"].expressions]
        merges = []
        counter = 0
        for part, call, kind in zip(parts, calls, types):
            names = []
            for text in part.partials:
                name = f"{PARTIAL}{counter}"
                counter += 1
                partial_items.append(f'{text} AS "{name}"')
                names.append(f'"{name}"')
            merges.append((call, sqlglot.parse_one(
                f"CAST({part.merge.format(*names)} AS {kind})", read="duckdb")))
        positions = ", ".join(str(i + 1) for i in range(len(groups)))
        partial = SqlQuery((shuffle.source,),
                           f"SELECT {', '.join(partial_items)} {frm}{where_sql} "
                           f"GROUP BY {positions}", name="combine", partial=True,
                           settings=node.settings)
        table = dict(merges)
        final = tree.transform(lambda n: table[n].copy() if n in table else n, copy=True)
        final.set("where", None)
        text = final.sql(dialect="duckdb").replace(INPUT, "{0}")
        return dataclasses.replace(node, sources=(dataclasses.replace(shuffle, source=partial),),
                                   sql=text)
