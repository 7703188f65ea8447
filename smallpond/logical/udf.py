"""Python UDFs for SQL stages, with smallpond 0.15's names (`@udf`, `UDFType`, ...).

    @udf(params=[UDFType.INTEGER, UDFType.INTEGER], return_type=UDFType.INTEGER)
    def gcd(a: int, b: int) -> int: ...

    df.map("gcd(a, b) AS g", udfs=[gcd])

Types are DuckDB type names, resolved in the worker that registers the function.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["udf", "UDFType", "UDFListType", "UDFMapType", "UDFStructType", "UDFAnyParameters",
           "UserDefinedFunction"]

_SQL_NAMES = {"SQLNULL": '"NULL"', "TIME_TZ": "TIMETZ", "TIMESTAMP_TZ": "TIMESTAMPTZ"}


class UDFType(enum.Enum):
    """DuckDB scalar types by name."""

    SQLNULL = 1
    BOOLEAN = 2
    TINYINT = 3
    UTINYINT = 4
    SMALLINT = 5
    USMALLINT = 6
    INTEGER = 7
    UINTEGER = 8
    BIGINT = 9
    UBIGINT = 10
    HUGEINT = 11
    UUID = 12
    FLOAT = 13
    DOUBLE = 14
    DATE = 15
    TIMESTAMP = 16
    TIMESTAMP_MS = 17
    TIMESTAMP_NS = 18
    TIMESTAMP_S = 19
    TIME = 20
    TIME_TZ = 21
    TIMESTAMP_TZ = 22
    VARCHAR = 23
    BLOB = 24
    BIT = 25
    INTERVAL = 26

    def to_duckdb_type(self):
        import duckdb

        return duckdb.sqltype(_SQL_NAMES.get(self.name, self.name))


@dataclass(frozen=True)
class UDFListType:
    """A LIST of `child`."""

    child: Any

    def to_duckdb_type(self):
        import duckdb

        return duckdb.list_type(self.child.to_duckdb_type())


@dataclass(frozen=True)
class UDFMapType:
    """A MAP from `key` to `value`."""

    key: Any
    value: Any

    def to_duckdb_type(self):
        import duckdb

        return duckdb.map_type(self.key.to_duckdb_type(), self.value.to_duckdb_type())


@dataclass(frozen=True)
class UDFStructType:
    """A STRUCT of named fields ({name: duckdb type name})."""

    fields: Any

    def to_duckdb_type(self):
        import duckdb

        return duckdb.struct_type(self.fields)


class UDFAnyParameters:
    """Parameters of any type."""

    def to_duckdb_type(self):
        return None


@dataclass
class UserDefinedFunction:
    """A Python function with declared SQL parameter and return types."""

    name: str
    func: Callable
    params: Any
    return_type: Any
    use_arrow_type: bool = False

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def bind(self, con) -> None:
        """Register the function on a DuckDB connection (in the worker)."""
        if isinstance(self.params, UDFAnyParameters):
            params = None
        else:
            params = [p.to_duckdb_type() for p in self.params]
        con.create_function(self.name, self.func, params, self.return_type.to_duckdb_type(),
                            type="arrow" if self.use_arrow_type else "native")


def udf(params, return_type, use_arrow_type: bool = False, name: str | None = None,
        ) -> Callable[[Callable], UserDefinedFunction]:
    """Declare a Python function as a SQL function with the given types."""
    return lambda func: UserDefinedFunction(name or func.__name__, func, params, return_type,
                                            use_arrow_type)
