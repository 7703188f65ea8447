"""The `smallpond` command line (click)."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smallpond")
def main() -> None:
    """smallpond: partitioned DuckDB dataflow, on this machine or on Ray."""


@main.group()
def bench() -> None:
    """Benchmarks run side by side with peers; reports go to benchmarks/results/."""


@bench.command("core")
@click.option("--gb", type=float, default=1.0, show_default=True, help="input size")
@click.option("--partitions", type=int, default=None, help="shuffle partitions")
@click.option("--results-dir", default="benchmarks/results", show_default=True)
def bench_core(gb: float, partitions: int | None, results_dir: str) -> None:
    """Session start, task overhead, and a hash repartition + aggregate vs DuckDB."""
    from smallpond.bench.core import run_core_benchmark

    click.echo(run_core_benchmark(gb, partitions, results_dir))


def _attach_optional_commands() -> None:
    try:
        from smallpond.graysort import cli as graysort_cli
    except ImportError:  # the GraySort tools ship in the same package; keep the CLI usable
        return
    for name in ("gensort", "valsort", "graysort"):
        command = getattr(graysort_cli, name, None)
        if isinstance(command, click.Command):
            main.add_command(command, name)


_attach_optional_commands()


if __name__ == "__main__":
    main()
