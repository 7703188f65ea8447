"""The command line entry point."""

import pytest
from click.testing import CliRunner

from smallpond.cli import main


def test_cli_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "bench" in result.output


@pytest.mark.parametrize("engine", ["records", "dataframe"])
def test_graysort_command_sorts_validates_and_valsort_agrees(tmp_path, engine):
    out = tmp_path / "sorted"
    result = CliRunner().invoke(main, [
        "graysort", "--records", "30000", "--output", str(out), "--partitions", "3",
        "--engine", engine, "--runner", "local", "--data-root", str(tmp_path / "root")])
    assert result.exit_code == 0, result.output
    assert "SUCCESS - all records are in order" in result.output
    assert "equal" in result.output and "DIFFERENT" not in result.output
    parts = sorted(p.name for p in out.glob("part-*.dat"))
    assert parts == ["part-00000.dat", "part-00001.dat", "part-00002.dat"]
    check = CliRunner().invoke(main, ["valsort", *(str(out / p) for p in parts)])
    assert check.exit_code == 0, check.output
    assert "Records: 30000" in check.output


def test_graysort_bench_command_writes_reports(tmp_path):
    results = tmp_path / "results"
    output = CliRunner().invoke(main, [
        "bench", "graysort", "--gb", "0.002", "--runners", "local", "--peers", "duckdb",
        "--results-dir", str(results)])
    assert output.exit_code == 0, output.output
    assert "DuckDB ORDER BY" in output.output and "smallpond (local runner)" in output.output
    assert output.output.count("| valid |") == 2
    assert {p.suffix for p in results.iterdir()} >= {".json", ".md"}
