"""Committing a job's result to the user's output folder.

Parts are staged under data_root (never inside the output path) and moved in only when every
task has committed; `_SUCCESS` is written last. A crashed run leaves the output as it was.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Sequence

import pyarrow.parquet as pq

from smallpond.errors import ConfigError, OutputExistsError
from smallpond.io.commit import new_staging_dir, remove_tree
from smallpond.io.files import FileSlice
from smallpond.io.parquet import read_slices

__all__ = ["check_output", "write_output", "WRITE_MODES"]

WRITE_MODES = ("error", "overwrite", "append")
_PART = re.compile(r"part-(\d+)\.\w+$")


def _existing_files(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    if not os.path.isdir(path):
        return [path]
    return [name for name in os.listdir(path) if not name.startswith(".")]


def check_output(path: str, mode: str) -> None:
    """Fail before any work when the output exists and mode is 'error'."""
    if mode not in WRITE_MODES:
        raise ConfigError(f"mode must be one of {WRITE_MODES}, got {mode!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"output path {path!r} is a file, not a folder")
    if mode == "error" and _existing_files(path):
        raise OutputExistsError(
            f"output path {path!r} already holds files; pass mode='overwrite' or 'append'")


def _place(source: str, target: str) -> None:
    """Hard-link (cheap, same file system) or copy a finished file to `target`."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _stage_parts(parts: Sequence[Sequence[FileSlice]], staging: str, first: int,
                 extension: str) -> list[str]:
    names = []
    for offset, slices in enumerate(parts):
        name = f"part-{first + offset:05d}.{extension}"
        target = os.path.join(staging, name)
        if len(slices) == 1 and slices[0].is_whole and slices[0].path.endswith(f".{extension}"):
            _place(slices[0].path, target)
        elif extension == "parquet":
            pq.write_table(read_slices(slices), target)
        else:
            raise ValueError(f"a {extension} part must be one whole file, got {slices}")
        names.append(name)
    return names


def _move(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        temporary = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(source, temporary)
        os.rename(temporary, target)


def write_output(parts: Sequence[Sequence[FileSlice]], path: str, mode: str,
                 staging_root: str, extension: str = "parquet") -> list[str]:
    """Write each partition as part-NNNNN.<extension> under `path`, atomically per mode."""
    check_output(path, mode)
    first = 0
    if mode == "append":
        numbers = [int(m.group(1)) for name in _existing_files(path)
                   if (m := _PART.match(name))]
        first = max(numbers, default=-1) + 1
    staging = new_staging_dir(staging_root, "write")
    try:
        names = _stage_parts(parts, staging, first, extension)
        open(os.path.join(staging, "_SUCCESS"), "w").close()
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        if mode == "overwrite" and os.path.exists(path):
            trash = os.path.join(staging_root, f"replaced-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, trash)
            except OSError:
                trash = None
            if trash is None:
                for name in _existing_files(path):
                    remove_tree(os.path.join(path, name)) if os.path.isdir(
                        os.path.join(path, name)) else os.remove(os.path.join(path, name))
            else:
                try:
                    os.rename(staging, path)
                    staging = None
                finally:
                    remove_tree(trash)
        if staging is not None and not os.path.exists(path):
            try:
                os.rename(staging, path)
                staging = None
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
        if staging is not None:
            os.makedirs(path, exist_ok=True)
            success = os.path.join(path, "_SUCCESS")
            if os.path.exists(success):
                os.remove(success)
            for name in names:
                _move(os.path.join(staging, name), os.path.join(path, name))
            _move(os.path.join(staging, "_SUCCESS"), success)
        return [os.path.join(path, name) for name in names]
    finally:
        if staging is not None:
            remove_tree(staging)
