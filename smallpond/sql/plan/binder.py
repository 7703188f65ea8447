"""DuckDB binds every query the planner writes against empty inputs of the right types: this
yields output columns and types, and proves the query is valid before anything runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import duckdb

from smallpond.kernels.placeholders import substitute
from smallpond.sql.plan.rel import quote

__all__ = ["Binder", "empty_relation"]


def empty_relation(columns: Sequence[tuple[str, str]]) -> str:
    """A subquery with these (name, type) columns and no rows."""
    if not columns:
        return "(SELECT 1 WHERE false)"
    items = ", ".join(f"CAST(NULL AS {t}) AS {quote(n)}" for n, t in columns)
    return f"(SELECT {items} LIMIT 0)"


_local = threading.local()


def _database() -> duckdb.DuckDBPyConnection:
    """A private in-memory database per thread, opened once (opening costs 10-30 ms)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
        con.execute("SET threads = 1")
    return con


class Binder:
    """A DuckDB connection used only to bind queries (nothing is read or run)."""

    def __init__(self):
        self.con = _database()
        self._common: dict[tuple[str, str], str] = {}

    def bind(self, sql: str, inputs: Sequence[Sequence[tuple[str, str]]]) -> list[tuple[str, str]]:
        """(name, type) of the query's output; PlannerBug when it does not bind."""
        from smallpond.sql.plan.context import PlannerBug

        text = substitute(sql, lambda i: empty_relation(inputs[i]), len(inputs))
        try:
            relation = self.con.sql(text)
        except duckdb.Error as error:
            raise PlannerBug(f"{error}\n{sql}") from error
        return [(n, str(t)) for n, t in zip(relation.columns, relation.types)]

    def common_type(self, left: str, right: str) -> str:
        """The type DuckDB compares two types in (what `a = b` casts both sides to)."""
        if left == right:
            return left
        key = (left, right)
        if key not in self._common:
            relation = self.con.sql(
                f"SELECT [CAST(NULL AS {left}), CAST(NULL AS {right})][1] AS x")
            self._common[key] = str(relation.types[0])
        return self._common[key]

    def define_views(self, tables: dict[str, list[tuple[str, str]] | None]) -> None:
        """Temporary views of these names with these columns (None: no such table, so any
        view of that name left from an earlier statement goes). Views are kept between
        statements and replaced only when their columns change."""
        views = _local.__dict__.setdefault("views", {})
        for name, columns in tables.items():
            key = name.lower()
            if columns is None:
                if key in views:
                    self.con.execute(f"DROP VIEW IF EXISTS {quote(name)}")
                    del views[key]
                continue
            signature = tuple(columns)
            if views.get(key) != signature:
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS "
                                 f"SELECT * FROM {empty_relation(columns)}")
                views[key] = signature

    def close(self) -> None:
        """Nothing to release: the connection and its views serve the next statement."""
