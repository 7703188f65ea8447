"""What the plan proves about how rows are split into partitions.

partial_sql over several inputs joins partition i of each input with partition i of the
others; that is only right when the inputs are co-partitioned. `copartitioned` decides it from
the plan: every input has one partition, or every input was hash-partitioned into the same
number of partitions on the same key columns of the same types (DuckDB's hash() of equal values
of different types differs, e.g. 1 and 1.0), or by the same `by` expression, and every step
since kept those columns as they were (a per-partition query that selects them unchanged; a
Python function proves nothing).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from smallpond.errors import SmallpondError
from smallpond.kernels.placeholders import PARSE_VALUES, substitute
from smallpond.logical.nodes import Node, Repartition, SqlQuery

__all__ = ["partitioning", "copartitioned"]


def _keeps(sql: str, keys: tuple[str, ...]) -> bool:
    """Whether a one-input query outputs each key column unchanged (plainly selected, or by
    `*`), from that input alone (no join, no set operation)."""
    try:
        tree = sqlglot.parse_one(substitute(sql, lambda i: "__sp_input", 1, PARSE_VALUES),
                                 read="duckdb")
    except (sqlglot.errors.SqlglotError, SmallpondError):
        return False
    args = {k.rstrip("_"): v for k, v in tree.args.items()}  # sqlglot 30 says `from_`
    if not isinstance(tree, exp.Select) or args.get("joins") or args.get("with"):
        return False
    source = args.get("from")
    if source is None or not isinstance(source.this, exp.Table) \
            or source.this.name != "__sp_input":
        return False
    plain: set[str] = set()
    for projection in tree.expressions:
        star = {k.rstrip("_"): v for k, v in projection.args.items()}
        if isinstance(projection, exp.Star) and not star.get("except") \
                and not star.get("replace") and not star.get("rename"):
            return True
        target = projection.alias_or_name.lower()
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(inner, exp.Column) and inner.name.lower() == target:
            plain.add(target)
    return all(k in plain for k in keys)


def _key_types(node: Repartition) -> tuple | None:
    from smallpond.logical.schema import infer_schema

    try:
        schema = infer_schema(node.source)
    except SmallpondError:
        return None
    if schema is None:
        return None
    types = {f.name.lower(): str(f.type) for f in schema}
    return tuple(types.get(k.lower()) for k in node.hash_by)


def partitioning(node: Node) -> tuple:
    """A signature of how `node`'s rows are split; equal signatures split rows alike."""
    steps: list[SqlQuery] = []
    current = node
    while isinstance(current, SqlQuery) and len(current.inputs) == 1 and not current.setup:
        steps.append(current)  # per-partition work keeps every row in its partition
        current = current.inputs[0]
    if current.num_partitions == 1:
        return ("single",)
    if isinstance(current, Repartition) and current.method == "hash":
        keys = tuple(k.lower() for k in current.hash_by)
        types = _key_types(current)
        if types is not None and None not in types \
                and all(_keeps(step.sql, keys) for step in steps):
            return ("hash", current.n, keys, types)
    if isinstance(current, Repartition) and current.method == "expr":
        from smallpond.logical.rules.push_projection import referenced_columns

        columns = referenced_columns(f"SELECT {current.by}")
        if columns is not None and all(_keeps(step.sql, tuple(columns)) for step in steps):
            return ("expr", current.n, " ".join(current.by.split()))
    return ("opaque", node.token)


def copartitioned(inputs: tuple[Node, ...]) -> bool:
    """Whether partition i of every input holds the rows that belong with each other."""
    signatures = {partitioning(n) for n in inputs}
    return len(signatures) == 1 and next(iter(signatures))[0] in ("single", "hash", "expr")
