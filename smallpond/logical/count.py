"""Row counts known from Parquet footers, without running a task or copying a file."""

from __future__ import annotations

from smallpond.io.parquet import check_same_schema, count_rows
from smallpond.logical.nodes import Node, Repartition, Scan

__all__ = ["footer_count"]

# repartitions that move rows without dropping or failing on any
_ROW_PRESERVING = ("files", "rows", "hash", "random", "range")


def footer_count(node: Node) -> int | None:
    """The rows of a plan that only reads Parquet files and moves their rows (None when it
    computes anything). The files' schemas are checked as a run would check them."""
    while isinstance(node, Repartition) and node.method in _ROW_PRESERVING:
        node = node.source
    if not isinstance(node, Scan) or node.options.format != "parquet":
        return None
    paths = list(dict.fromkeys(s.path for part in node.partitions for s in part))
    if len(paths) > 1:
        check_same_schema(paths, union_by_name=node.options.union_by_name)
    return sum(count_rows(part) for part in node.partitions)
