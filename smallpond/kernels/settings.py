"""DuckDB settings a query asked for (`SET name = value` in SQL), applied per task.

The worker's database is shared by the tasks it runs one after another, and some settings are
global to a database, so every setting applied for a task is reset when the task ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb

__all__ = ["apply_settings", "RESERVED_SETTINGS"]

# what the runner itself decides per task: the memory budget, spill folder and thread count
RESERVED_SETTINGS = frozenset({
    "memory_limit", "max_memory", "temp_directory", "threads", "worker_threads",
    "max_temp_directory_size", "preserve_insertion_order", "enable_external_access",
    "allowed_directories", "allowed_paths", "lock_configuration", "enable_progress_bar",
})


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def apply_settings(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> Callable[[], None]:
    """Apply `params["settings"]` ([[name, sql_literal], ...]); return what resets them."""
    applied: list[str] = []

    def reset() -> None:
        for name in reversed(applied):
            try:
                con.execute(f"RESET {_ident(name)}")
            except duckdb.Error:  # the task's own outcome matters more than a failed reset
                pass

    try:
        for name, value in params.get("settings") or ():
            if name.lower() in RESERVED_SETTINGS:
                raise ValueError(f"setting {name!r} is managed by smallpond per task")
            con.execute(f"SET {_ident(name)} = {value}")
            applied.append(name)
    except BaseException:
        reset()
        raise
    return reset
