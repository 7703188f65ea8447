"""`smallpond gensort` and `smallpond valsort`: the sort benchmark's tools, without binaries."""

from __future__ import annotations

import os
import shutil

import click

from smallpond.errors import InputError, OutputError

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
    target = os.path.abspath(output)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise OutputError(f"gensort: cannot write {output!r}: folder {folder!r} does not exist",
                          path=output)
    if os.path.exists(target) and not os.path.isfile(target):
        raise OutputError(f"gensort: {output!r} is not a regular file", path=output)
    free = shutil.disk_usage(folder).free
    if number * 100 > free:
        raise OutputError(f"gensort: {number} records need {number * 100 / 1e9:.1f} GB, but "
                          f"{folder!r} has {free / 1e9:.1f} GB free", path=output)
    try:
        total = write_gensort_file(output, number, first, ascii=ascii_)
    except OSError as error:
        raise OutputError(f"gensort: cannot write {output!r}: {error.strerror or error}",
                          path=output) from error
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

    if summary_out:
        _check_summary_target(summary_out, inputs)
    try:
        if summaries:
            parts = [s for path in inputs for s in read_summaries(path)]
        else:
            parts = [summarize_file(path) for path in inputs]
    except (OSError, ValueError) as error:
        raise InputError(f"valsort: {_reason(error)}") from None
    total = merge(parts)
    if summary_out:
        try:
            write_summaries(summary_out, [total])
        except OSError as error:
            raise OutputError(f"valsort: cannot write {summary_out!r}: {_reason(error)}",
                              path=summary_out) from None
    if not quiet:
        for line in report_lines(total):
            click.echo(line, err=True)
    raise SystemExit(0 if total.ok else 1)


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename or ''}: {error.strerror}".lstrip(": ")
    return str(error)


def _check_summary_target(target: str, inputs) -> None:
    """valsort -o never overwrites one of the files it reads (not through a link either)."""
    if os.path.isdir(target):
        raise OutputError(f"valsort: -o {target!r} is a folder", path=target)
    if os.path.exists(target):
        out = os.stat(target)
        for path in inputs:
            try:
                stat = os.stat(path)
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) == (out.st_dev, out.st_ino):
                raise OutputError(f"valsort: -o {target!r} is the input {path!r}", path=target)
