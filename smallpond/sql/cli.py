"""`smallpond run JOB.sql`, `smallpond explain JOB.sql` and `smallpond bench tpch`."""

from __future__ import annotations

import click

from smallpond.io.output import WRITE_MODES

__all__ = ["attach"]


def _session(runner, ray_address, data_root, partitions):
    import smallpond

    return smallpond.init(data_root=data_root, runner=runner, ray_address=ray_address,
                          partitions=partitions)


def _params_option(function):
    return click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                        help="value of ${NAME} in the job (bound as a SQL literal)")(function)


def attach(main: click.Group, bench: click.Group, runner_options) -> None:
    """Add the SQL commands to the `smallpond` command group."""

    @main.command("run")
    @click.argument("job", type=click.Path(dir_okay=False))
    @_params_option
    @click.option("--output", default=None, help="write the final SELECT here (Parquet)")
    @click.option("--mode", type=click.Choice(WRITE_MODES), default="error", show_default=True,
                  help="how --output treats an existing folder")
    @click.option("--max-rows", type=int, default=40, show_default=True,
                  help="rows of the final SELECT to print")
    @runner_options
    def run_command(job, params, output, mode, max_rows, runner, ray_address, data_root,
                    partitions) -> None:
        """Run a SQL job file: views, settings, COPY ... TO, and a final SELECT."""
        from smallpond.sql.jobs import parse_params, plan_job, read_job, render_rows, run_job

        text = read_job(job)
        values = parse_params(params)
        session = _session(runner, ray_address, data_root, partitions)
        try:
            planned = plan_job(session, text, job, values)
            outcome = run_job(session, planned, output, mode, max_rows)
        finally:
            session.shutdown()
        for path, rows in outcome.written:
            click.echo(f"wrote {rows} rows to {path}")
        if planned.result is not None and outcome.output is None:
            click.echo(render_rows(outcome.head, outcome.total_rows, max_rows))

    @main.command("explain")
    @click.argument("job", type=click.Path(dir_okay=False))
    @_params_option
    @runner_options
    def explain_command(job, params, runner, ray_address, data_root, partitions) -> None:
        """Print the distributed plan of a SQL job file without running it."""
        from smallpond.sql.jobs import explain_job, parse_params, plan_job, read_job

        text = read_job(job)
        session = _session(runner or "local", ray_address, data_root, partitions)
        try:
            click.echo(explain_job(plan_job(session, text, job, parse_params(params))))
        finally:
            session.shutdown()

    @bench.command("tpch")
    @click.option("--sf", type=float, default=1.0, show_default=True, help="scale factor")
    @click.option("--data", default=None,
                  help="folder with the TPC-H tables as Parquet (default: generated with "
                       "tpchgen-cli into ~/.smallpond/tpch/sf<SF>)")
    @click.option("--systems", default="smallpond,duckdb,polars", show_default=True)
    @click.option("--queries", default="1-22", show_default=True, help="e.g. 1-22 or 1,3,5")
    @click.option("--repeat", type=int, default=3, show_default=True,
                  help="warm runs per query and system (the median is reported)")
    @click.option("--partitions", type=int, default=None, help="smallpond.partitions")
    @click.option("--results-dir", default="benchmarks/results", show_default=True)
    def bench_tpch(sf, data, systems, queries, repeat, partitions, results_dir) -> None:
        """TPC-H per query and in total: smallpond (embedded runner) vs DuckDB vs Polars."""
        from smallpond.bench.tpch import parse_queries, run_tpch_benchmark

        click.echo(run_tpch_benchmark(sf, data, tuple(s for s in systems.split(",") if s),
                                      parse_queries(queries), repeat, partitions, results_dir))
