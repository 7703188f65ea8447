"""Settings of global SQL: `smallpond.*` planner knobs and DuckDB settings for every task.

`SET smallpond.partitions = 16` and the other `smallpond.*` names configure the planner for
later queries; any other `SET name = value` is checked against DuckDB here and then applied
in every task of later queries (reset after each task).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import duckdb

from smallpond.config import MAX_PARTITIONS
from smallpond.errors import SqlError
from smallpond.kernels.settings import RESERVED_SETTINGS

__all__ = ["SqlSettings", "parse_bytes", "PLANNER_SETTINGS"]

MB = 1 << 20

# name -> (attribute, kind, description)
PLANNER_SETTINGS = {
    "partitions": ("partitions", "count",
                   "partitions of scans and shuffles (default: about 2 per worker, fewer "
                   "for small inputs)"),
    "broadcast_limit": ("broadcast_limit", "bytes",
                        "a join side estimated below this many bytes is sent whole to every "
                        "partition of the other side (0: always shuffle both sides)"),
    "gather_limit": ("gather_limit", "bytes",
                     "an aggregate, DISTINCT or ORDER BY result estimated below this many "
                     "bytes is finished in one partition (0: always shuffle)"),
    "partition_bytes": ("partition_bytes", "bytes",
                        "data worth a partition of its own when the count is automatic "
                        "(default: a quarter of a task's memory on this machine, 32MB on Ray)"),
}


def parse_bytes(value: str | int, name: str) -> int:
    """'64MB', '1.5GB', '0' or 4096 -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", str(value), re.I)
        if not match:
            raise SqlError(f"SET smallpond.{name}: expected a size like '64MB', got {value!r}")
        unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
        scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
        number = int(float(match.group(1)) * scale)
    if number < 0:
        raise SqlError(f"SET smallpond.{name}: must not be negative, got {value!r}")
    return number


@dataclass(frozen=True)
class SqlSettings:
    """What later queries are planned with."""

    partitions: int | None = None
    broadcast_limit: int = 128 * MB
    gather_limit: int = 16 * MB
    partition_bytes: int | None = None  # automatic: see PlanContext.partition_bytes
    duckdb: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def with_setting(self, name: str, value: str | int | None) -> SqlSettings:
        """A copy with `name` set (`value` is the SQL literal text) or reset (None)."""
        lowered = name.lower()
        if lowered.startswith("smallpond."):
            key = lowered.split(".", 1)[1]
            if key not in PLANNER_SETTINGS:
                raise SqlError(f"unknown setting smallpond.{key}; known: "
                               f"{', '.join('smallpond.' + k for k in PLANNER_SETTINGS)}")
            attribute, kind, _ = PLANNER_SETTINGS[key]
            if value is None:
                return replace(self, **{attribute: getattr(SqlSettings(), attribute)})
            text = _unquote(str(value))
            if kind == "count":
                if text.lower() in ("auto", "default", "0"):
                    return replace(self, **{attribute: None})
                if not text.isdigit() or not 0 < int(text) <= MAX_PARTITIONS:
                    raise SqlError(f"SET smallpond.{key}: expected an integer from 1 to "
                                   f"{MAX_PARTITIONS} or 'auto', got {value}")
                return replace(self, **{attribute: int(text)})
            return replace(self, **{attribute: parse_bytes(text, key)})
        if lowered in RESERVED_SETTINGS:
            raise SqlError(f"SET {name}: smallpond sets this for every task itself (memory "
                           "budget, spill folder, threads); use the session config instead")
        others = tuple(pair for pair in self.duckdb if pair[0].lower() != lowered)
        if value is None:
            return replace(self, duckdb=others)
        _check_duckdb_setting(name, str(value))
        return replace(self, duckdb=(*others, (name, str(value))))


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def _check_duckdb_setting(name: str, literal: str) -> None:
    """Fail now, not in every task, when DuckDB does not know the setting or its value."""
    con = duckdb.connect()
    try:
        con.execute(f'SET "{name.replace(chr(34), chr(34) * 2)}" = {literal}')
    except duckdb.Error as error:
        raise SqlError(f"SET {name} = {literal}: {error}", sql=f"SET {name} = {literal}") \
            from error
    finally:
        con.close()
