"""What the plan proves about how rows are split into partitions.

partial_sql over several inputs joins partition i of each input with partition i of the
others; that is only right when the inputs are co-partitioned. `copartitioned` decides it from
the plan: every input has one partition, or every input was hash-partitioned into the same
number of partitions on the same number of keys (DuckDB's hash() gives equal values of
integer types of any width the same hash), or by the same `by` expression.
"""

from __future__ import annotations

from smallpond.logical.nodes import KernelMap, Node, PythonMap, Repartition, SqlQuery

__all__ = ["partitioning", "copartitioned"]


def partitioning(node: Node) -> tuple:
    """A signature of how `node`'s rows are split; equal signatures split rows alike."""
    current = node
    while isinstance(current, (SqlQuery, PythonMap, KernelMap)) and len(current.inputs) == 1:
        current = current.inputs[0]  # per-partition work keeps every row in its partition
    if current.num_partitions == 1:
        return ("single",)
    if isinstance(current, Repartition):
        if current.method == "hash":
            return ("hash", current.n, len(current.hash_by))
        if current.method == "expr":
            return ("expr", current.n, " ".join(current.by.split()))
    return ("opaque", current.token)


def copartitioned(inputs: tuple[Node, ...]) -> bool:
    """Whether partition i of every input holds the rows that belong with each other."""
    signatures = {partitioning(n) for n in inputs}
    if len(signatures) != 1:
        return False
    kind = next(iter(signatures))[0]
    return kind in ("single", "hash", "expr")
