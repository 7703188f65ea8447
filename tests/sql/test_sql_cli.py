"""`smallpond run JOB.sql` and `smallpond explain JOB.sql`."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from smallpond.cli import main


@pytest.fixture
def people(tmp_path):
    path = tmp_path / "people.parquet"
    pq.write_table(pa.table({"name": ["ann", "bob", "cy", "dee"], "age": [31, 45, 27, 45],
                             "city": ["x", "y", "x", "z"]}), path, row_group_size=2)
    return str(path)


def _job(tmp_path, text: str) -> str:
    path = tmp_path / "job.sql"
    path.write_text(text)
    return str(path)


def _run(args, root):
    return CliRunner().invoke(main, [*args, "--runner", "local", "--data-root", str(root)])


JOB = """-- a job
SET smallpond.partitions = 2;
CREATE VIEW people AS SELECT * FROM read_parquet(${src});
COPY (SELECT city, count(*) AS n FROM people GROUP BY city) TO ${out} (FORMAT parquet);
SELECT name, age FROM people WHERE age > ${min_age} ORDER BY age DESC, name;
"""


def test_run_prints_the_result_and_writes_copies(tmp_path, people):
    out = tmp_path / "by_city"
    result = _run(["run", _job(tmp_path, JOB), "-p", f"src={people}", "-p", f"out={out}",
                   "-p", "min_age=30"], tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert f"wrote 3 rows to {out}" in result.output
    rows = re.findall(r"│ (\w+)\s+│\s+(\d+) │", result.output)
    assert rows == [("bob", "45"), ("dee", "45"), ("ann", "31")]
    assert sorted(r["n"] for r in pq.read_table(out).to_pylist()) == [1, 1, 2]


def test_run_with_output_writes_the_final_select(tmp_path, people):
    target = tmp_path / "adults"
    result = _run(["run", _job(tmp_path, JOB.replace("COPY", "-- COPY")), "-p",
                   f"src={people}", "-p", "min_age=40", "--output", str(target)],
                  tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in pq.read_table(target).to_pylist()] == ["bob", "dee"]


def test_parameters_stay_literals(tmp_path, people):
    job = _job(tmp_path, "SELECT count(*) AS n FROM read_parquet(${src}) WHERE name = ${who};")
    result = _run(["run", job, "-p", f"src={people}", "-p", "who=x'; DROP TABLE t; --"],
                  tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert re.search(r"│\s+0\s+│", result.output)


def test_explain_prints_the_distributed_plan(tmp_path, people):
    result = _run(["explain", _job(tmp_path, JOB), "-p", f"src={people}", "-p",
                   f"out={tmp_path / 'o'}", "-p", "min_age=30"], tmp_path / "root")
    assert result.exit_code == 0, result.output
    assert result.output.count("== distributed plan ==") == 2
    assert "-- COPY TO" in result.output and "-- result" in result.output


@pytest.mark.parametrize("text,message", [
    ("SELECT 1;\nSELECT name,\n FROM WHERE;", "statement 2, line 3: syntax error"),
    ("SELECT * FROM read_parquet(${src}) WHERE name = ${nobody};",
     "parameter ${nobody} has no value"),
    ("SELECT 1; SELECT 2;", "a bare SELECT must be the last statement"),
    ("SELECT no_such FROM read_parquet(${src});", "no_such"),
])
def test_errors_are_one_line_with_exit_2(tmp_path, people, text, message):
    result = _run(["run", _job(tmp_path, text), "-p", f"src={people}"], tmp_path / "root")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("smallpond: error: ")
    assert message in lines[0] and "job.sql" in lines[0]


def test_missing_job_file(tmp_path):
    result = _run(["run", str(tmp_path / "nope.sql")], tmp_path / "root")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_run_on_ray(tmp_path, people, ray_address):
    result = CliRunner().invoke(main, [
        "run", _job(tmp_path, JOB.replace("COPY", "-- COPY")), "-p", f"src={people}", "-p",
        "min_age=30", "--runner", "ray", "--ray-address", ray_address, "--data-root",
        str(tmp_path / "root")])
    assert result.exit_code == 0, result.output
    assert "bob" in result.output and "ann" in result.output and "cy" not in result.output


def test_bench_tpch_writes_a_report(tmp_path, tpch_dir):
    results = tmp_path / "results"
    output = CliRunner().invoke(main, [
        "bench", "tpch", "--sf", "0.01", "--data", tpch_dir, "--repeat", "1", "--queries",
        "1,6,18", "--systems", "smallpond,duckdb,polars", "--results-dir", str(results)])
    assert output.exit_code == 0, output.output
    assert "| Q18 |" in output.output and "smallpond/duckdb" in output.output
    assert "differed from DuckDB" not in output.output
    assert {p.suffix for p in results.iterdir()} == {".json", ".md"}


def test_a_query_that_fails_on_the_data_exits_1(tmp_path, people):
    job = _job(tmp_path, f"SELECT cast('x' || name AS INT) FROM read_parquet('{people}');\n")
    result = _run(["run", job], tmp_path / "root")
    assert result.exit_code == 1, result.output
    assert "Conversion Error" in result.output
