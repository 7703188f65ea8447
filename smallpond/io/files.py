"""File references that tasks read, and the expansion of user paths into them."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass

import fsspec

from smallpond.errors import InputError

__all__ = ["FileSlice", "expand_paths", "file_identity", "filesystem_for", "named_folders",
           "duckdb_path"]


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
    """The fsspec filesystem that serves `path`, and the path inside it.

    A URL whose file system needs a package that is not installed raises InputError naming
    the package (fsspec's own ImportError says which).
    """
    try:
        fs, inner = fsspec.core.url_to_fs(path)
    except ImportError as error:
        raise InputError(f"cannot open {path!r}: {error}", path=path) from None
    except ValueError as error:
        raise InputError(f"cannot open {path!r}: {error}", path=path) from None
    return fs, inner


def _hidden(path: str) -> bool:
    """Hive/Spark convention: names starting with '_' or '.' are metadata, not data."""
    return os.path.basename(path.rstrip("/")).startswith(("_", "."))


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def expand_paths(paths: str | Iterable[str], recursive: bool = False,
                 suffixes: tuple[str, ...] = (".parquet",)) -> list[str]:
    """Expand globs and folders into a sorted list of files; raise InputError if none match."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise InputError("no input paths given (an empty list)")
    result: list[str] = []
    for raw in paths:
        if not isinstance(raw, (str, os.PathLike)):
            raise InputError(f"an input path must be a string, got {type(raw).__name__}")
        path = os.fspath(raw)
        if _is_local(path):
            path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
            if glob.has_magic(path) and not os.path.exists(path):  # a real name wins
                explicit = _hidden(path)  # the pattern itself names '_x' or '.x' files
                matches = sorted(glob.glob(path, recursive=recursive))
                matches = [m for m in matches
                           if os.path.isfile(m) and (explicit or not _hidden(m))]
                if not matches:
                    raise InputError(f"no files match {path!r}", path=path)
                result.extend(matches)
            elif os.path.isdir(path):
                pattern = "**/*" if recursive else "*"
                found = sorted(
                    m for m in glob.glob(os.path.join(path, pattern), recursive=recursive)
                    if os.path.isfile(m) and m.endswith(suffixes) and not _hidden(m)
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
            if glob.has_magic(inner):
                explicit = _hidden(inner)
                matches = sorted(m for m in fs.glob(inner, recursive=recursive)
                                 if explicit or not _hidden(m))
            else:
                matches = [inner] if fs.isfile(inner) else []
            if not matches and fs.isdir(inner):
                matches = sorted(p for p in fs.find(inner)
                                 if p.endswith(suffixes) and not _hidden(p))
            if not matches:
                raise InputError(f"no files match {path!r}", path=path)
            protocol = path.split("://", 1)[0]
            result.extend(f"{protocol}://{m}" for m in matches)
    return result


def file_identity(path: str) -> str:
    """Path + size + mtime (etag on object stores): what a task key hashes for a source file."""
    if _is_local(path):
        local = path.removeprefix("file://")
        try:
            stat = os.stat(local)
        except FileNotFoundError:
            raise InputError(f"input path {path!r} does not exist", path=path) from None
        return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    fs, inner = filesystem_for(path)
    try:
        info = fs.info(inner)
    except FileNotFoundError:
        raise InputError(f"input path {path!r} does not exist", path=path) from None
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
    if hasattr(stamp, "timestamp"):
        stamp = stamp.timestamp()
    return f"{path}|{info.get('size')}|{stamp}"


def named_folders(paths: str | Iterable[str]) -> tuple[str, ...]:
    """The local folders among the paths a user named (outputs must stay out of them)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    folders = []
    for raw in paths:
        path = os.fspath(raw)
        if _is_local(path) and not glob.has_magic(path):
            path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
            if os.path.isdir(path):
                folders.append(path)
    return tuple(folders)


def duckdb_path(path: str) -> str:
    """A path that DuckDB's readers take literally: DuckDB globs every path it is given, so
    `[`, `*` and `?` in a real file name become one-character classes (`[[]`, `[*]`, `[?]`)."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in path)
