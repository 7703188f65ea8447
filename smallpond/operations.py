"""DataFrame operations as plan nodes: user SQL, functions and 0.15 options, checked first.

Everything a user passes is validated here, before anything runs: SQL is parsed by DuckDB
(exactly one query; fragments cannot leave the query they are placed in), functions must
pickle, 0.15 keywords are accepted or named clearly.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import pyarrow as pa

from smallpond.compat import stage_options
from smallpond.errors import PlanError
from smallpond.logical.nodes import Node, PythonMap, SqlQuery
from smallpond.logical.partitioning import copartitioned
from smallpond.logical.sqlcheck import check_fragment, check_query, check_shape

__all__ = ["sql_query", "fragment_query", "python_map", "pickle_function", "function_name"]


def function_name(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def pickle_function(func: Callable, what: str) -> bytes:
    if not callable(func):
        raise PlanError(f"{what} needs a SQL string or a callable, got {type(func).__name__}")
    try:
        return cloudpickle.dumps(func)
    except Exception as error:
        raise PlanError(f"{what}: function {function_name(func)!r} cannot be pickled for the "
                        f"workers: {type(error).__name__}: {error}") from error


def function_fingerprint(func: Callable) -> str:
    """A digest of what a function computes: its code (nested functions and lambdas too) and
    the source file of its module. Pickling keeps only a reference to a function imported from
    a module, so without this an edited module would still reuse the old results."""
    digest = hashlib.sha256()

    def add_code(code: types.CodeType) -> None:
        digest.update(code.co_code)
        digest.update(repr(code.co_names).encode())
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                add_code(const)
            else:
                digest.update(repr(const).encode())

    target = func
    while isinstance(target, functools.partial):
        digest.update(repr((target.args, sorted(target.keywords.items()))).encode())
        target = target.func
    code = getattr(target, "__code__", None) or getattr(
        getattr(type(target), "__call__", None), "__code__", None)  # noqa: B004 - a class
    if code is not None:
        add_code(code)
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    source = getattr(module, "__file__", None)
    if source and os.path.isfile(source):
        with open(source, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:24]


def _udfs(options: dict[str, Any]) -> bytes | None:
    """UDFs, extension files and UDF modules of a stage, pickled for the workers."""
    items: list = []
    for key in ("udfs", "extension_paths", "udf_module_paths"):
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or callable(value):
            value = [value]
        items.extend(value)
    if not items:
        return None
    for item in items:
        if not (callable(item) or isinstance(item, (str, tuple)) or hasattr(item, "bind")):
            raise PlanError(f"a UDF must be a function, a (name, function, params, return) "
                            f"tuple or a path, got {type(item).__name__}")
    try:
        return cloudpickle.dumps(items)
    except Exception as error:
        raise PlanError(f"udfs cannot be pickled for the workers: {error}") from error


def sql_query(query: str | Sequence[str], inputs: Sequence[Node], kwargs: dict[str, Any],
              what: str = "partial_sql", ordered: bool | None = None,
              copartitioned_inputs: bool = False) -> SqlQuery:
    """A per-partition SQL node from a user's query (or 0.15's list of queries)."""
    options = stage_options(kwargs, what)
    statements = check_query(query, len(inputs), what)
    *setup, final = statements
    inputs = tuple(inputs)
    if len(inputs) > 1 and inputs[0].num_partitions > 1 and not copartitioned_inputs:
        counts = {n.num_partitions for n in inputs}
        if len(counts) == 1 and not copartitioned(inputs):
            raise PlanError(
                f"{what} combines {len(inputs)} inputs of {inputs[0].num_partitions} "
                "partitions that are not provably co-partitioned, so partition i of one "
                "would meet only partition i of the others (a join would lose rows). "
                "Repartition every input with repartition(n, hash_by=<join keys>) (the same n "
                "and number of keys), or pass copartitioned=True if you know they line up")
    if ordered is None:
        ordered = _has_order_by(final)
    return SqlQuery(inputs, final, name=options.get("output_name") or what,
                    udfs=_udfs(options), ordered=ordered, setup=tuple(setup),
                    copartitioned=copartitioned_inputs)


def fragment_query(template: str, fragment: str, source: Node, kwargs: dict[str, Any],
                   what: str, shape: str, ordered: bool = False) -> SqlQuery:
    """A SQL node that places a user's fragment (a predicate, a select list, sort keys) into
    `template` at `{fragment}`, on lines of its own so that a trailing comment ends there.
    The result must keep the template's `shape` (check_shape)."""
    if not isinstance(fragment, str) or not fragment.strip():
        raise PlanError(f"{what} needs a non-empty SQL string")
    check_fragment(fragment, what)
    sql = template.replace("{fragment}", f"\n{fragment}\n")
    node = sql_query(sql, (source,), kwargs, what=what, ordered=ordered)
    check_shape(sql, shape, what)
    return node


def python_map(source: Node, kind: str, func: Callable, kwargs: dict[str, Any], what: str,
               schema: pa.Schema | None = None, batch_size: int | None = None,
               deterministic: bool = False) -> PythonMap:
    """A node running a user's Python function over rows or batches."""
    stage_options(kwargs, what)
    if schema is not None and not isinstance(schema, pa.Schema):
        raise PlanError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
    return PythonMap(source, kind, pickle_function(func, what), function_name(func),
                     None if schema is None else schema.serialize().to_pybytes(),
                     batch_size=batch_size, deterministic=bool(deterministic),
                     fingerprint=function_fingerprint(func))


def _has_order_by(sql: str) -> bool:
    return "order by" in " ".join(sql.lower().split())
