"""The `smallpond` command line (click).

Errors: any failure prints one line, `smallpond: error: <message>`, and exits 2 for bad usage
or input, 1 when a job ran and failed; `--debug` (or SMALLPOND_DEBUG=1) prints the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

import click

__all__ = ["main", "exit_code_for"]


def exit_code_for(error: BaseException) -> int:
    """2 for bad usage or input (caught before or while reading it), 1 when a job failed."""
    from smallpond.errors import IntegrityError, ResourceError, SqlError, TaskError

    if isinstance(error, SqlError) and getattr(error, "stage", None) is not None:
        return 1  # valid SQL that failed on the data while the job ran
    return 1 if isinstance(error, (TaskError, ResourceError, IntegrityError)) else 2


def _one_line(error: BaseException) -> str:
    if isinstance(error, click.ClickException):
        text = error.format_message()
    else:
        text = str(error.args[0]) if error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def _terminate(signum, frame) -> None:
    """SIGTERM ends a command the way Ctrl-C does: tasks cancelled, temporary files removed."""
    raise KeyboardInterrupt


def _debugging(args) -> bool:
    argv = sys.argv[1:] if args is None else list(args)
    return "--debug" in argv or os.environ.get("SMALLPOND_DEBUG", "") not in ("", "0")


class _Commands(click.Group):
    """A click group whose failures end in one line on stderr (and a traceback in debug)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        from smallpond.errors import SmallpondError

        debug = _debugging(args)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("smallpond: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as error:
            click.echo(f"smallpond: error: {_one_line(error)}", err=True)
            sys.exit(error.exit_code)
        except SmallpondError as error:
            if debug:
                traceback.print_exc()
            click.echo(f"smallpond: error: {_one_line(error)}", err=True)
            sys.exit(exit_code_for(error))
        except Exception as error:  # a bug of ours: still one line, the trace on request
            if debug:
                traceback.print_exc()
            hint = "" if debug else " (run with --debug for the traceback)"
            click.echo(f"smallpond: error: internal error: {type(error).__name__}: "
                       f"{_one_line(error)}{hint}", err=True)
            sys.exit(1)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="print tracebacks of errors")
@click.version_option(package_name="smallpond")
def main(debug: bool) -> None:
    """smallpond: partitioned DuckDB dataflow, on this machine or on Ray."""


@main.group()
def bench() -> None:
    """Benchmarks run side by side with peers; reports go to benchmarks/results/."""


@bench.command("core")
@click.option("--gb", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="input size")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="shuffle partitions")
@click.option("--results-dir", default="benchmarks/results", show_default=True)
def bench_core(gb: float, partitions: int | None, results_dir: str) -> None:
    """Session start, task overhead, and a hash repartition + aggregate vs DuckDB."""
    from smallpond.bench.core import run_core_benchmark

    click.echo(run_core_benchmark(gb, partitions, results_dir))


@bench.command("graysort")
@click.option("--gb", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="input size to generate")
@click.option("--input", "input_path", default=None, help="sort this .dat file instead")
@click.option("--runners", default="local", show_default=True, help="comma-separated")
@click.option("--peers", default="duckdb,polars", show_default=True,
              help="duckdb, polars, smallpond015 (builds a venv: downloads)")
@click.option("--partitions", type=click.IntRange(min=1), default=None)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="runs per system")
@click.option("--modes", default="cold,warm", show_default=True,
              help="cold: fresh process per run; warm: second sort in a process")
@click.option("--pause", type=float, default=2.0, show_default=True,
              help="seconds between runs")
@click.option("--results-dir", default=None,
              help="default: benchmarks/results of the checkout, else ~/.smallpond/bench-results")
@click.option("--work-dir", default=None, help="where the fresh work folder goes (temp)")
def bench_graysort(gb, input_path, runners, peers, partitions, rounds, modes, pause, results_dir,
                   work_dir) -> None:
    """GraySort vs DuckDB ORDER BY and Polars (and smallpond 0.15), each a fresh process."""
    from smallpond.bench.graysort import run_graysort_benchmark

    click.echo(run_graysort_benchmark(
        gb, tuple(r for r in runners.split(",") if r), tuple(p for p in peers.split(",") if p),
        partitions, rounds, results_dir, tuple(m for m in modes.split(",") if m), pause,
        work_dir, input_path, notify=lambda line: click.echo(line, err=True)))


@bench.command("runners")
@click.option("--gb", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="input size")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="shuffle partitions")
@click.option("--runners", default="local,ray", show_default=True, help="comma-separated")
@click.option("--sort", "sort_method", type=click.Choice(["range", "hash"]), default="range",
              show_default=True, help="repartition before partial_sort")
@click.option("--repeat", type=click.IntRange(min=1), default=10, show_default=True, help="trivial-job runs")
@click.option("--results-dir", default="benchmarks/results", show_default=True)
def bench_runners(gb, partitions, runners, sort_method, repeat, results_dir) -> None:
    """The embedded runner vs the Ray runner: aggregate, sort, task overhead."""
    from smallpond.bench.runners import run_runners_benchmark

    click.echo(run_runners_benchmark(gb, partitions, results_dir, repeat,
                                     tuple(r for r in runners.split(",") if r), sort_method))


@bench.command("graysort-profile")
@click.option("--gb", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--input", "input_path", default=None, help="profile sorting this .dat file")
@click.option("--partitions", type=click.IntRange(min=1), default=None)
@click.option("--results-dir", default=None,
              help="default: benchmarks/results of the checkout, else ~/.smallpond/bench-results")
@click.option("--work-dir", default=None, help="where the fresh work folder goes (temp)")
def bench_graysort_profile(gb, input_path, partitions, results_dir, work_dir) -> None:
    """Where a cold `smallpond graysort` spends its time: timeline and task phases."""
    from smallpond.bench.graysort_profile import run_graysort_profile

    click.echo(run_graysort_profile(gb, partitions, results_dir, input_path, work_dir,
                                    notify=lambda line: click.echo(line, err=True)))


@bench.command("scaling")
@click.option("--workers", default="1,2,4,8,16", show_default=True, help="comma-separated")
@click.option("--graysort-gb", type=float, default=4.0, show_default=True, help="0: skip")
@click.option("--hash-gb", type=float, default=4.0, show_default=True, help="0: skip")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--results-dir", default=None,
              help="default: benchmarks/results of the checkout, else ~/.smallpond/bench-results")
@click.option("--work-dir", default=None, help="where the fresh work folder goes (temp)")
def bench_scaling(workers, graysort_gb, hash_gb, rounds, results_dir, work_dir) -> None:
    """GraySort and a hash shuffle with 1..16 workers, each run a fresh process."""
    from smallpond.bench.scaling import run_scaling_benchmark

    click.echo(run_scaling_benchmark(tuple(int(w) for w in workers.split(",") if w),
                                     graysort_gb, hash_gb, rounds, results_dir, work_dir,
                                     notify=lambda line: click.echo(line, err=True)))


@bench.command("cold-start")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--results-dir", default=None,
              help="default: benchmarks/results of the checkout, else ~/.smallpond/bench-results")
@click.option("--work-dir", default=None, help="where the fresh work folder goes (temp)")
def bench_cold_start(rounds, results_dir, work_dir) -> None:
    """Fresh process to first result: import smallpond, init, a tiny job."""
    from smallpond.bench.cold_start import run_cold_start_benchmark

    click.echo(run_cold_start_benchmark(rounds, results_dir, work_dir,
                                        notify=lambda line: click.echo(line, err=True)))


def runner_options(function):
    """--runner, --ray-address, --data-root, --partitions: shared by job commands."""
    options = [
        click.option("--runner", type=click.Choice(["local", "ray"]), default=None,
                     help="where tasks run (default: local, or ray with --ray-address)"),
        click.option("--ray-address", default=None, help="Ray cluster to run on"),
        click.option("--data-root", default=None, help="folder for task outputs (resume)"),
        click.option("--partitions", type=int, default=None, help="partitions of the job"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command("graysort")
@click.option("--records", type=int, default=None, help="generate N gensort records")
@click.option("--input", "input_path", default=None,
              help=".dat file, folder or glob, or Parquet with key/value columns")
@click.option("--output", required=True,
              help="output folder for part-NNNNN.dat: new, empty, or a previous output")
@click.option("--overwrite", is_flag=True,
              help="replace the part files and _SUCCESS of a folder that holds other files "
                   "too (those are kept)")
@click.option("--no-validate", is_flag=True, help="skip checksums and valsort")
@click.option("--engine", type=click.Choice(["records", "dataframe"]), default="records",
              show_default=True,
              help="records: raw records between tasks; dataframe: generic DataFrame "
                   "operations (Parquet intermediates, DuckDB sort)")
@click.option("--memory-per-task", default=None,
              help="memory budget of one task, e.g. 256MB (default: from the free memory of "
                   "the machine, or of its container's cgroup when lower); partition counts "
                   "follow it")
@click.option("--num-executors", type=int, default=None,
              help="worker processes (default: the cores, fewer if memory is short)")
@runner_options
def graysort_command(records, input_path, output, overwrite, no_validate, engine,
                     memory_per_task, num_executors, runner, ray_address, data_root,
                     partitions) -> None:
    """Sort gensort records with sampled range partitioning, then validate like valsort."""
    from smallpond.graysort.job import run

    if (records is None) == (input_path is None):
        raise click.UsageError("give exactly one of --records and --input")
    result = run(output, records=records, input=input_path, partitions=partitions,
                 validate=not no_validate, engine=engine, overwrite=overwrite, runner=runner,
                 ray_address=ray_address, data_root=data_root, memory_per_task=memory_per_task,
                 num_executors=num_executors)
    for line in result.lines():
        click.echo(line)
    if not no_validate and not result.valid:
        raise SystemExit(1)


def _attach_graysort_tools() -> None:
    from smallpond.graysort.cli import gensort, valsort

    main.add_command(gensort)
    main.add_command(valsort)


_attach_graysort_tools()


def _attach_obs_tools() -> None:
    from smallpond.obs_cli import cache_group, report_command

    main.add_command(report_command)
    main.add_command(cache_group)


_attach_obs_tools()


def _attach_sql_commands() -> None:
    from smallpond.sql.cli import attach

    attach(main, bench, runner_options)


_attach_sql_commands()


if __name__ == "__main__":
    main()
