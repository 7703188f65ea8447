"""The README's SQL job examples (examples/jobs/*.sql over examples/make_sales.py's data) run
through `smallpond run` and give what DuckDB gives running the same file in one process."""

from __future__ import annotations

import importlib.util
import math
import os
import re

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from smallpond.cli import main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


@pytest.fixture(scope="module")
def sales(tmp_path_factory) -> str:
    spec = importlib.util.spec_from_file_location("make_sales",
                                                  os.path.join(EXAMPLES, "make_sales.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_sales(str(tmp_path_factory.mktemp("sales")), files=3, rows_per_file=20_000)


def _duckdb(job: str, params: dict[str, str]):
    """DuckDB runs the job file itself: smallpond settings dropped, ${name} as literals."""
    text = re.sub(r"(?im)^SET smallpond\.[^;]*;", "", open(job).read())
    for name, value in params.items():
        literal = value if value.isdigit() else "'" + value.replace("'", "''") + "'"
        text = text.replace("${" + name + "}", literal)
    con = duckdb.connect()
    rows = None
    for statement in con.extract_statements(text):
        rows = con.execute(statement).fetchall()
    return con, rows


def _rows(folder: str) -> list[tuple]:
    table = pq.read_table(folder)
    return [tuple(row.values()) for row in table.to_pylist()]


@pytest.mark.parametrize("job, params", [
    ("revenue_by_region.sql", {"out": "daily"}),
    ("repeat_buyers.sql", {"min_days": "8"}),
])
def test_example_job_matches_duckdb(sales, tmp_path, job, params):
    path = os.path.join(EXAMPLES, "jobs", job)
    ours = {"data": sales, **{k: str(tmp_path / v) if k == "out" else v
                              for k, v in params.items()}}
    args = ["run", path, *[a for k, v in ours.items() for a in ("-p", f"{k}={v}")],
            "--output", str(tmp_path / "result"), "--runner", "local",
            "--data-root", str(tmp_path / "root")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    theirs = {**ours, **({"out": str(tmp_path / "duck-daily.parquet")} if "out" in ours else {})}
    con, expected = _duckdb(path, theirs)
    assert expected, "the example must return rows on its data"
    assert _rows(str(tmp_path / "result")) == expected  # ORDER BY ... LIMIT: in order
    if "out" in ours:
        want = con.execute(f"SELECT * FROM '{theirs['out']}' ORDER BY ALL").fetchall()
        got = duckdb.sql(f"SELECT * FROM '{ours['out']}/*.parquet' ORDER BY ALL").fetchall()
        assert len(got) == len(want) > 100
        for mine, reference in zip(got, want):  # sums of floats in another order
            assert mine[:3] == reference[:3] and math.isclose(mine[3], reference[3], rel_tol=1e-9)
