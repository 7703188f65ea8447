"""File references that tasks read, and the expansion of user paths into them."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass

import fsspec

from smallpond.errors import InputError

__all__ = ["FileSlice", "expand_paths", "file_identity", "filesystem_for"]


@dataclass(frozen=True)
class FileSlice:
    """A whole file or, for Parquet, the listed row groups of one file."""

    path: str
    format: str = "parquet"
    row_groups: tuple[int, ...] | None = None

    @property
    def is_whole(self) -> bool:
        return self.row_groups is None


def filesystem_for(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem that serves `path`, and the path inside it."""
    fs, inner = fsspec.core.url_to_fs(path)
    return fs, inner


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def expand_paths(paths: str | Iterable[str], recursive: bool = False,
                 suffixes: tuple[str, ...] = (".parquet",)) -> list[str]:
    """Expand globs and folders into a sorted list of files; raise InputError if none match."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        if _is_local(path):
            path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
            if glob.has_magic(path):
                matches = sorted(glob.glob(path, recursive=recursive))
                matches = [m for m in matches if os.path.isfile(m)]
                if not matches:
                    raise InputError(f"no files match {path!r}", path=path)
                result.extend(matches)
            elif os.path.isdir(path):
                pattern = "**/*" if recursive else "*"
                found = sorted(
                    m for m in glob.glob(os.path.join(path, pattern), recursive=recursive)
                    if os.path.isfile(m) and m.endswith(suffixes)
                    and not os.path.basename(m).startswith(("_", "."))
                )
                if not found:
                    raise InputError(f"folder {path!r} holds no {'/'.join(suffixes)} files",
                                     path=path)
                result.extend(found)
            elif os.path.exists(path):
                result.append(path)
            else:
                raise InputError(f"input path {path!r} does not exist", path=path)
        else:
            fs, inner = filesystem_for(path)
            matches = sorted(fs.glob(inner, recursive=recursive)) if glob.has_magic(inner) \
                else ([inner] if fs.isfile(inner) else [])
            if not matches and fs.isdir(inner):
                matches = sorted(p for p in fs.find(inner) if p.endswith(suffixes))
            if not matches:
                raise InputError(f"no files match {path!r}", path=path)
            protocol = path.split("://", 1)[0]
            result.extend(f"{protocol}://{m}" for m in matches)
    return result


def file_identity(path: str) -> str:
    """Path + size + mtime (etag on object stores): what a task key hashes for a source file."""
    fs, inner = filesystem_for(path)
    try:
        info = fs.info(inner)
    except FileNotFoundError:
        raise InputError(f"input path {path!r} does not exist", path=path) from None
    stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
    if hasattr(stamp, "timestamp"):
        stamp = stamp.timestamp()
    return f"{path}|{info.get('size')}|{stamp}"
