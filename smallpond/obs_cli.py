"""`smallpond report` and `smallpond cache`: what jobs did, and what data_root holds."""

from __future__ import annotations

import os
import time

import click

from smallpond.progress import human_bytes

__all__ = ["report_command", "cache_group"]


def _data_root(data_root: str | None) -> str:
    from smallpond.config import resolve_config

    return resolve_config(data_root=data_root).data_root


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


@click.command("report")
@click.argument("job", required=False)
@click.option("--data-root", default=None, help="folder of task outputs and run records")
@click.option("-o", "--output", default=None,
              help="HTML file to write (default: data_root/runs/JOB/report.html)")
def report_command(job: str | None, data_root: str | None, output: str | None) -> None:
    """Write a job's run report as one self-contained HTML page (timeline of tasks per
    worker, stage table); JOB defaults to the latest job."""
    from smallpond.errors import InputError
    from smallpond.report.html import load_report
    from smallpond.report.record import job_dir, list_jobs

    root = _data_root(data_root)
    jobs = list_jobs(root)
    if job is None:
        if not jobs:
            raise InputError(f"no run records under {os.path.join(root, 'runs')}", path=root)
        job = jobs[-1]
    elif job not in jobs:
        known = ", ".join(jobs[-5:]) or "none"
        raise InputError(f"no run records of job {job!r} under {os.path.join(root, 'runs')} "
                         f"(latest: {known})", path=job)
    report = load_report(root, job)
    target = output or os.path.join(job_dir(root, job), "report.html")
    report.save(target)
    totals = report.totals
    click.echo(f"job {job}: {len(report.records)} action(s), {totals['tasks']} tasks "
               f"({totals['ran']} ran, {totals['reused']} reused, {totals['failed']} failed)")
    click.echo(f"report: {target}")


@click.group("cache", invoke_without_command=True)
@click.option("--data-root", default=None, help="folder of task outputs and run records")
@click.pass_context
def cache_group(ctx: click.Context, data_root: str | None) -> None:
    """What data_root holds (jobs, tasks, bytes, last used); `clean` removes some of it."""
    ctx.obj = _data_root(data_root)
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@cache_group.command("list")
@click.pass_obj
def list_command(root: str) -> None:
    """Jobs and committed tasks under data_root."""
    from smallpond.cache import scan

    listing = scan(root)
    pinned = sum(t.pinned for t in listing.tasks.values())
    click.echo(f"data_root: {root}")
    click.echo(f"tasks: {len(listing.tasks)} committed, {human_bytes(listing.task_bytes)}"
               + (f" ({pinned} in use by running sessions)" if pinned else ""))
    if listing.tasks:
        last = max(t.last_used for t in listing.tasks.values())
        first = min(t.last_used for t in listing.tasks.values())
        click.echo(f"  last used between {_when(first)} and {_when(last)}")
    jobs = sorted(listing.jobs.values(), key=lambda j: j.last_used)
    if jobs:
        click.echo(f"{'job':<36} {'status':<11} {'actions':>7} {'tasks':>6} {'bytes':>10}  "
                   f"{'started':<16}  last used")
        for job in jobs:
            present = sum(k in listing.tasks for k in job.keys)
            click.echo(f"{job.job_id:<36} {job.status:<11} {job.actions:>7} {present:>6} "
                       f"{human_bytes(listing.job_bytes(job)):>10}  {_when(job.started):<16}  "
                       f"{_when(job.last_used)}")
    other = ", ".join(f"{name} {human_bytes(size)}" for name, size in listing.other_bytes.items())
    if other:
        click.echo(f"also under data_root (never removed by `cache clean`): {other}")


@cache_group.command("clean")
@click.option("--all", "everything", is_flag=True, help="every committed task and record")
@click.option("--older-than", default=None, help="not used for this long: 30m, 12h, 7d, 2w")
@click.option("--job", default=None, help="this job's records and the tasks only it used")
@click.option("--max-size", default=None,
              help="remove least recently used tasks until the rest fit (e.g. 20GB)")
@click.option("--dry-run", is_flag=True, help="only say what would be removed")
@click.pass_obj
def clean_command(root: str, everything: bool, older_than: str | None, job: str | None,
                  max_size: str | None, dry_run: bool) -> None:
    """Remove committed tasks and run records; never what a running session uses."""
    from smallpond.cache import evict, parse_age
    from smallpond.config import _parse_bytes
    from smallpond.errors import ConfigError, InputError

    if not (everything or older_than or job or max_size):
        raise click.UsageError("say what to remove: --all, --older-than, --job or --max-size")
    try:
        age = parse_age(older_than) if older_than else None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    budget = _parse_bytes(max_size, "--max-size") if max_size else None
    try:
        result = evict(root, everything=everything, older_than=age, job=job, max_bytes=budget,
                       dry_run=dry_run)
    except KeyError:
        raise InputError(f"no job {job!r} under {os.path.join(root, 'runs')}", path=job) from None
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(result.tasks)} task(s), {human_bytes(result.bytes)}, and the "
               f"records of {len(result.jobs)} job(s)"
               + (f"; kept {result.kept_pinned} task(s) in use" if result.kept_pinned else ""))
