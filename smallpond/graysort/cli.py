"""`smallpond gensort` and `smallpond valsort`: the sort benchmark's tools, without binaries."""

from __future__ import annotations

import click

__all__ = ["gensort", "valsort"]


@click.command("gensort")
@click.option("-a", "ascii_", is_flag=True, help="ASCII records (gensort -a)")
@click.option("-b", "start", default="0", help="first record number (any 128-bit integer)")
@click.option("-c", "checksum", is_flag=True, help="print the checksum to stderr")
@click.argument("count")
@click.argument("output", type=click.Path(dir_okay=False))
def gensort(ascii_: bool, start: str, checksum: bool, count: str, output: str) -> None:
    """Write COUNT gensort 1.5 records starting at record B to OUTPUT."""
    from smallpond.graysort.gensort import write_gensort_file

    try:
        first, number = int(start), int(count)
    except ValueError:
        raise click.UsageError("-b and COUNT must be integers") from None
    if first < 0 or number < 0 or first + number > 2**128:
        raise click.UsageError("records must lie in 0 .. 2^128")
    total = write_gensort_file(output, number, first, ascii=ascii_)
    if checksum:
        click.echo(f"{total:x}", err=True)


@click.command("valsort")
@click.option("-s", "summaries", is_flag=True, help="INPUTs are summary files to merge")
@click.option("-o", "summary_out", default=None, help="write the summary of INPUT here")
@click.option("-q", "quiet", is_flag=True, help="print nothing; exit status only")
@click.argument("inputs", nargs=-1, required=True)
def valsort(summaries: bool, summary_out: str | None, quiet: bool, inputs: tuple[str]) -> None:
    """Check that the records of INPUT... (in order) are sorted; print valsort's summary."""
    from smallpond.graysort.valsort import (
        merge,
        read_summaries,
        report_lines,
        summarize_file,
        write_summaries,
    )

    try:
        if summaries:
            parts = [s for path in inputs for s in read_summaries(path)]
        else:
            parts = [summarize_file(path) for path in inputs]
    except (OSError, ValueError) as error:
        click.echo(f"valsort: {error}", err=True)
        raise SystemExit(2) from None
    total = merge(parts)
    if summary_out:
        write_summaries(summary_out, [total])
    if not quiet:
        for line in report_lines(total):
            click.echo(line, err=True)
    raise SystemExit(0 if total.ok else 1)
