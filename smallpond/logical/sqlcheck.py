"""Checks of user SQL before anything runs: exactly one query, fragments that stay put.

DuckDB's own parser decides what a statement is (`duckdb.extract_statements`), so a query
accepted here is one statement for DuckDB too: user SQL can never add a second statement
(a COPY writing outside the atomic commit, an ATTACH, ...) to the one smallpond runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb

from smallpond.errors import SqlError
from smallpond.kernels.placeholders import (
    PARSE_VALUES,
    check_fragment,
    strip_terminator,
    substitute,
)

__all__ = ["check_query", "check_fragment", "check_shape", "nondeterministic"]

# statements a query list may run before its final query: they change only the task's own
# connection (settings, temporary objects), never write files outside the task's output
_SETUP_TYPES = {"SELECT", "SET", "VARIABLE_SET", "CREATE", "CREATE_FUNC", "DROP", "INSERT",
                "UPDATE", "DELETE", "PRAGMA", "LOAD", "ALTER"}


def _parse(sql: str, num_inputs: int, what: str) -> list:
    try:
        runnable = substitute(sql, lambda i: f"__sp_input_{i}", num_inputs, PARSE_VALUES)
        return duckdb.extract_statements(runnable)
    except duckdb.Error as error:
        raise SqlError(f"{what}: {_first_line(error)}\nSQL: {sql}", sql=sql) from None


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(error).__name__


def check_query(sql: str | Sequence[str], num_inputs: int, what: str = "query",
                ) -> tuple[str, ...]:
    """One query, or a list whose last item is the query and the others set-up statements.

    Returns the statements without their trailing `;`. Raises SqlError naming the statement.
    """
    if not isinstance(sql, (str, list, tuple)):
        raise SqlError(f"{what} needs a SQL string (or a list of them), got "
                       f"{type(sql).__name__}")
    queries = [sql] if isinstance(sql, str) else list(sql)
    if not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise SqlError(f"{what} needs a non-empty SQL string (or a list of them)")
    cleaned = []
    for index, text in enumerate(queries):
        label = what if len(queries) == 1 else f"{what}, statement {index + 1}"
        statements = _parse(text, num_inputs, label)
        if len(statements) != 1:
            raise SqlError(f"{label} must be exactly one SQL statement, got "
                           f"{len(statements)}: {text}", sql=text, statement=index + 1)
        kind = statements[0].type.name
        last = index == len(queries) - 1
        if last and kind != "SELECT":
            raise SqlError(f"{label} must be a query (SELECT, WITH, VALUES, FROM ...), got "
                           f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} statement: {text}", sql=text, statement=index + 1)
        if not last and kind not in _SETUP_TYPES:
            raise SqlError(f"{label}: {'an' if kind[0] in 'AEIOU' else 'a'} {kind} statement is not allowed here (it could write "
                           f"outside smallpond's atomic commit): {text}", sql=text,
                           statement=index + 1)
        cleaned.append(strip_terminator(text))
    return tuple(cleaned)


_parser: duckdb.DuckDBPyConnection | None = None


def _syntax_tree(sql: str) -> dict | None:
    """DuckDB's parse tree of a statement (json_serialize_sql), or None if it cannot say."""
    global _parser
    if _parser is None:
        _parser = duckdb.connect(":memory:")
    try:
        tree = json.loads(_parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    except (duckdb.Error, ValueError, IndexError):
        return None
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        return None
    return tree["statements"][0]["node"]


# clauses a wrapper may add: select list (map), WHERE (filter), ORDER BY (partial_sort)
_SHAPES = {"select": (False, False, ((), ("DISTINCT_MODIFIER",))), "where": (True, True, ((),)),
           "order": (True, False, (("ORDER_MODIFIER",),))}


def check_shape(sql: str, shape: str, what: str) -> None:
    """The query a fragment was placed in still has the wrapper's shape: one SELECT from the
    partition, with only the clause the fragment fills (select list, WHERE or ORDER BY).
    A fragment like `a FROM (...) UNION ALL SELECT a` is refused: it left its place."""
    star_only, where, modifiers = _SHAPES[shape]
    parsed = substitute(sql, lambda i: f"__sp_input_{i}", 1, PARSE_VALUES)
    node = _syntax_tree(parsed)
    if node is None:
        return  # parse errors are check_query's to report
    source = node.get("from_table") or {}
    select = node.get("select_list") or []
    intact = (
        node.get("type") == "SELECT_NODE"
        and source.get("type") == "BASE_TABLE" and source.get("table_name") == "__sp_input_0"
        and not source.get("alias") and not (node.get("cte_map") or {}).get("map")
        and (node.get("where_clause") is not None) == where
        and not node.get("group_expressions") and node.get("having") is None
        and node.get("qualify") is None and node.get("sample") is None
        and tuple(m.get("type") for m in node.get("modifiers", [])) in modifiers
        and (not star_only or (len(select) == 1 and select[0].get("type") == "STAR"
                               and not select[0].get("exclude_list")
                               and not select[0].get("replace_list")))
    )
    if not intact:
        raise SqlError(f"{what} must be one SQL {_WHAT[shape]}, not a query of its own "
                       f"(no FROM, UNION, WHERE, GROUP BY, ORDER BY or LIMIT around it): "
                       f"{sql}", sql=sql)


_WHAT = {"select": "select list (expressions with AS aliases)", "where": "condition",
         "order": "list of sort keys"}


_NONDETERMINISTIC = ("random(", "setseed(", "uuid(", "gen_random_uuid(", "now(",
                     "current_timestamp", "current_date", "current_time", "get_current_time",
                     "get_current_timestamp", "today(", "transaction_timestamp",
                     "read_parquet(", "read_csv", "read_json", "parquet_scan(", "read_text(",
                     "read_blob(", "glob(", "http://", "https://", "s3://", "{rand_seed}")


def nondeterministic(sql: str) -> bool:
    """Whether a query's result may change between runs over the same inputs: random values,
    the clock, or files and URLs it reads by itself (not through smallpond's inputs)."""
    text = "".join(sql.lower().split())
    return any(marker.replace(" ", "") in text for marker in _NONDETERMINISTIC)
