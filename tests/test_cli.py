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


def _bench(tmp_path, *arguments: str):
    """Run `smallpond bench ...` with results and a work folder under tmp_path."""
    results, work = tmp_path / "results", tmp_path / "work"
    work.mkdir()
    output = CliRunner().invoke(main, ["bench", *arguments, "--results-dir", str(results),
                                       "--work-dir", str(work)])
    assert output.exit_code == 0, output.output
    return output, results, work


def test_graysort_bench_command_writes_reports(tmp_path):
    output, results, work = _bench(tmp_path, "graysort", "--gb", "0.002", "--runners", "local",
                                   "--peers", "duckdb", "--rounds", "2", "--pause", "0")
    report = output.stdout
    assert "## Cold" in report and "## Warm" in report
    cold, warm = report.split("## Warm")
    # every system ran as a fresh process twice per mode and valsort accepted each output
    for table, systems in ((cold, 3), (warm, 3)):
        assert table.count("| 2/2 valid |") == systems, table
    assert "DuckDB ORDER BY" in cold and "smallpond graysort (local, validation on)" in cold
    assert str(results) in output.stderr  # the report's folder is named
    assert {p.suffix for p in results.iterdir()} >= {".json", ".md"}
    assert list(work.iterdir()) == []  # the fresh work folder is gone, nothing else written


def test_scaling_bench_runs_fresh_processes_and_checks_outputs(tmp_path):
    output, _, work = _bench(tmp_path, "scaling", "--workers", "1,2", "--graysort-gb", "0.001",
                             "--hash-gb", "0.001")
    assert output.stdout.count("| valid |") == 4  # two jobs x two worker counts, checked
    assert list(work.iterdir()) == []


def test_cold_start_bench_times_fresh_processes(tmp_path):
    output, results, work = _bench(tmp_path, "cold-start", "--rounds", "1")
    rows = [line for line in output.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| import smallpond", "| tiny job (import, init, first result, shutdown)",
        "| DuckDB alone (import, query)"]
    assert "failed" not in output.stdout and "first result" in rows[1]
    assert list(work.iterdir()) == []


def test_graysort_profile_traces_a_cold_run(tmp_path):
    output, _, work = _bench(tmp_path, "graysort-profile", "--gb", "0.002", "--partitions", "3")
    report = output.stdout
    assert "output valid" in report and "3 partitions" in report
    for phase in ("imports of the command", "fork server", "map stage", "sort stage"):
        assert phase in report
    for task, phase in (("map", "checksum"), ("reduce", "gather"), ("reduce", "validate")):
        assert f"| {task} | {phase} |" in report
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("arguments", [
    ["graysort", "--gb", "-1"], ["graysort", "--gb", "0"], ["core", "--partitions", "0"],
    ["graysort", "--rounds", "0"], ["runners", "--repeat", "-3"],
])
def test_bench_refuses_sizes_and_counts_that_are_not_positive(tmp_path, arguments):
    result = CliRunner().invoke(main, ["bench", *arguments, "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "is not in the range" in result.output
    assert not (tmp_path / "r").exists()
