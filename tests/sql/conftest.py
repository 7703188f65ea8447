"""Fixtures of the SQL tests: a session whose SQL state starts empty, TPC-H data, DuckDB."""

from __future__ import annotations

import decimal
import math
import os
import shutil
import subprocess

import duckdb
import pytest

from smallpond.bench.tpch_queries import TABLES


@pytest.fixture
def sql_sp(sp):
    """The shared session with its SQL catalog and settings reset around the test."""
    sp._sql_state = None
    yield sp
    sp._sql_state = None


@pytest.fixture(scope="session")
def tpch_dir(tmp_path_factory):
    """TPC-H tables as Parquet, written by tpchgen-cli (scale SMALLPOND_TPCH_SF, default
    0.01) with small row groups so that scans split into several partitions."""
    tool = shutil.which("tpchgen-cli")
    if tool is None:
        pytest.fail("tpchgen-cli is needed (pip install -e '.[dev]')")
    scale = os.environ.get("SMALLPOND_TPCH_SF", "0.01")
    folder = tmp_path_factory.mktemp("tpch")
    subprocess.run([tool, "parquet", "-s", scale, "--row-group-bytes", "256KB", "-o",
                    str(folder)], check=True, capture_output=True)
    return str(folder)


@pytest.fixture(scope="session")
def tpch_duckdb(tpch_dir):
    """DuckDB in this process with views over the same files: the reference."""
    con = duckdb.connect()
    for table in TABLES:
        path = os.path.join(tpch_dir, f"{table}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    yield con
    con.close()


def normalize(value):
    """Values compared with a tolerance for floating point (decimals compare exactly)."""
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, decimal.Decimal):
        return ("decimal", value)
    return ("value", value)


def same_rows(got: list[tuple], expected: list[tuple], ordered: bool) -> bool:
    """Equal row lists (as multisets unless `ordered`); floats within 1e-9 relative."""
    if len(got) != len(expected):
        return False
    if not ordered:
        key = lambda row: repr([v if not isinstance(v, float) else round(v, 6) for v in row])  # noqa: E731
        got, expected = sorted(got, key=key), sorted(expected, key=key)
    for a, b in zip(got, expected):
        if len(a) != len(b):
            return False
        for x, y in zip(a, b):
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None:
                    if x is not y:
                        return False
                    continue
                if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif x != y:
                return False
    return True
