"""File references that tasks read, and the expansion of user paths into them."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smallpond.errors import InputError

if TYPE_CHECKING:
    import fsspec

__all__ = ["FileSlice", "expand_paths", "file_identity", "filesystem_for", "named_folders",
           "duckdb_path", "writer_staging", "WRITER_MARK", "set_storage_options",
           "storage_table", "install_storage", "storage_root", "forget_listings"]


@dataclass(frozen=True)
class FileSlice:
    """A whole file or, for Parquet, the listed row groups of one file."""

    path: str
    format: str = "parquet"
    row_groups: tuple[int, ...] | None = None

    @property
    def is_whole(self) -> bool:
        return self.row_groups is None


# Storage options (credentials, endpoints) by URL root ("s3://bucket"), set by
# `read_parquet(..., storage_options=)` in the driver and installed in workers by the runners
# beside the tasks, never inside them: plans, task arguments and task keys carry paths only.
_storage: dict[str, dict] = {}
_storage_version = 0


def storage_root(path: str) -> str:
    """'s3://bucket' of 's3://bucket/key': the unit that storage options apply to."""
    protocol, _, rest = path.partition("://")
    return f"{protocol}://{rest.split('/', 1)[0]}"


def set_storage_options(paths: Iterable[str], options: dict | None) -> None:
    """Use `options` (fsspec storage options) for the URL roots of `paths` in this process."""
    global _storage_version
    if options is None:
        return
    if not isinstance(options, dict):
        raise InputError(f"storage_options must be a dict, got {type(options).__name__}")
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            continue  # (expand_paths names the bad argument)
        path = os.fspath(path)
        if not _is_local(path) and _storage.get(storage_root(path)) != options:
            _storage[storage_root(path)] = dict(options)
            _storage_version += 1


def storage_table() -> tuple[int, dict[str, dict]]:
    """(version, the storage options by URL root): what a runner ships to its workers."""
    return _storage_version, dict(_storage)


def install_storage(table: dict[str, dict]) -> None:
    """In a worker: the driver's storage options (see storage_table)."""
    _storage.clear()
    _storage.update(table)


def forget_listings(paths: Iterable[str]) -> None:
    """Drop the cached listings of the remote file systems of `paths`: a worker process keeps
    its file system instances across tasks (and sessions, on Ray), and a listing from an
    earlier task would give the old size of an object rewritten since."""
    roots = {storage_root(p) for p in paths if not _is_local(p)}
    for root in roots:
        with contextlib.suppress(InputError):
            filesystem_for(root)[0].invalidate_cache()


def filesystem_for(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem that serves `path` (with the storage options set for its
    root, if any), and the path inside it.

    A URL whose file system needs a package that is not installed raises InputError naming
    the package (fsspec's own ImportError says which).
    """
    import fsspec  # here, not at import: local paths never need it

    options = {} if _is_local(path) else _storage.get(storage_root(path), {})
    try:
        fs, inner = fsspec.core.url_to_fs(path, **options)
    except ImportError as error:
        raise InputError(f"cannot open {path!r}: {error}", path=path) from None
    except (ValueError, TypeError) as error:
        raise InputError(f"cannot open {path!r}: {error}", path=path) from None
    return fs, inner


def _hidden(path: str) -> bool:
    """Hive/Spark convention: names starting with '_' or '.' are metadata, not data."""
    return os.path.basename(path.rstrip("/")).startswith(("_", "."))


WRITER_MARK = ".smallpond-"  # staging folders of output writers (see io/output.py)


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def writer_staging(path: str) -> list[str]:
    """Staging folders of smallpond writers of an output folder (inside it, and beside it):
    a write in progress, or one a killed job left unfinished."""
    found = []
    parent, name = os.path.split(path.rstrip("/"))
    for folder, prefix in ((path, WRITER_MARK), (parent, f".{name}{WRITER_MARK}")):
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in names:
            full = os.path.join(folder, entry)
            if entry.startswith(prefix) and os.path.isdir(full) and not os.path.islink(full):
                found.append(full)
    return found


def _refuse_half_written(folders: Iterable[str]) -> None:
    for folder in folders:
        staging = writer_staging(folder)
        if staging:
            raise InputError(
                f"{folder!r} is being written by a smallpond job, or a job writing it was "
                f"killed (staging folder {staging[0]}): rerun that job (it rolls the folder "
                "back and writes it again), or remove the staging folder to read what is there",
                path=folder)


def _regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _under_hidden(path: str, root: str) -> bool:
    """Whether any component of `path` below `root` is a metadata name ('_x', '.x')."""
    relative = os.path.relpath(path, root)
    return any(part.startswith(("_", ".")) for part in relative.split(os.sep))


def _expand_local(path: str, recursive: bool, suffixes: tuple[str, ...]) -> list[str]:
    if glob.has_magic(path) and not os.path.exists(path):  # a real name wins over a pattern
        explicit = _hidden(path)  # the pattern itself names '_x' or '.x' files
        root = os.path.dirname(re.split(r"[*?\[]", path, maxsplit=1)[0])  # the fixed part
        # `**` matches any depth (as DuckDB and the shell's globstar do)
        matches = sorted(glob.glob(path, recursive=recursive or "**" in path))
        matches = [m for m in matches
                   if _regular_file(m) and (explicit or not _under_hidden(m, root))]
        if not matches:
            raise InputError(f"no files match {path!r}", path=path)
        _refuse_half_written({os.path.dirname(m) for m in matches})
        return matches
    if os.path.isdir(path):
        pattern = os.path.join(glob.escape(path), "**/*" if recursive else "*")
        found = sorted(m for m in glob.glob(pattern, recursive=recursive)
                       if _regular_file(m) and m.endswith(suffixes)
                       and not _under_hidden(m, path))
        if not found:
            raise InputError(f"folder {path!r} holds no {'/'.join(suffixes)} files", path=path)
        _refuse_half_written({path, *(os.path.dirname(m) for m in found)})
        return found
    if os.path.exists(path):
        if not _regular_file(path):
            raise InputError(f"input path {path!r} is not a regular file", path=path)
        return [path]
    raise InputError(f"input path {path!r} does not exist", path=path)


# data_roots of this process's sessions: a glob or folder read above one must not read the
# cache's own task files as input (a data_root inside an input folder doubled its rows)
_data_roots: set[str] = set()


def exclude_data_root(path: str) -> None:
    """Leave the files below `path` out of every later expansion of a folder or glob above it
    (a path named inside it is still read)."""
    _data_roots.add(os.path.realpath(path))


def _outside_data_roots(files: list[str], named: str) -> list[str]:
    roots = [r for r in _data_roots if not _below(os.path.realpath(named), r)]
    if not roots:
        return files
    return [f for f in files if not any(_below(os.path.realpath(f), r) for r in roots)]


def _fixed_part(path: str) -> str:
    """The folder above a pattern's first component with glob characters (the path itself
    when it has none, or names an existing file or folder literally)."""
    if not glob.has_magic(path) or os.path.exists(path):
        return path
    parts = path.split(os.sep)
    cut = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return os.sep.join(parts[:cut]) or os.sep


def _below(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_listed_parts(folder: str) -> None:
    """A smallpond output folder whose `_SUCCESS` lists a part that is gone would read as
    fewer rows without a word: refuse it, naming the part."""
    try:
        with open(os.path.join(folder, "_SUCCESS")) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return  # no manifest (or not ours): a plain folder
    if not isinstance(manifest, dict) or manifest.get("format") != "smallpond-output/1":
        return
    for entry in manifest.get("files") or []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and os.sep not in name \
                and not os.path.exists(os.path.join(folder, name)):
            raise InputError(f"{os.path.join(folder, name)!r} is listed in "
                             f"{os.path.join(folder, '_SUCCESS')!r} but is missing: the output "
                             "was changed after it was written (write it again)",
                             path=os.path.join(folder, name))


def expand_paths(paths: str | Iterable[str], recursive: bool = False,
                 suffixes: tuple[str, ...] = (".parquet",)) -> list[str]:
    """Expand globs and folders into a sorted list of files; raise InputError if none match.

    Names starting with '_' or '.' are skipped (at any depth below a folder or a glob's
    fixed part) unless named explicitly; a name that exists is taken literally even if it
    contains glob characters; a folder that a smallpond job is writing (or left half-written)
    is refused.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif not isinstance(paths, Iterable) or isinstance(paths, (bytes, dict)):
        raise InputError(f"input paths must be a path or a list of paths, got "
                         f"{type(paths).__name__}")
    paths = list(paths)
    if not paths:
        raise InputError("no input paths given (an empty list)")
    result: list[str] = []
    for raw in paths:
        if not isinstance(raw, (str, os.PathLike)) or not os.fspath(raw):
            raise InputError(f"an input path must be a non-empty string, got {raw!r}")
        path = os.fspath(raw)
        if _is_local(path):
            path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
            matches = _expand_local(path, recursive, suffixes)
            if os.path.isdir(path):
                _check_listed_parts(path)
            kept = _outside_data_roots(matches, _fixed_part(path))
            if matches and not kept:
                raise InputError(f"no files match {path!r} outside smallpond's data_root",
                                 path=path)
            result.extend(kept)
        else:
            matches = _remote(path, _expand_remote, path, recursive, suffixes)
            if not matches:
                raise InputError(f"no files match {path!r}", path=path)
            protocol = path.split("://", 1)[0]
            result.extend(f"{protocol}://{m}" for m in matches)
    return result


def _expand_remote(path: str, recursive: bool, suffixes: tuple[str, ...]) -> list[str]:
    fs, inner = filesystem_for(path)
    # fsspec shares one file system instance per set of options in a process, with its
    # listings cached: a listing from an earlier job would give the old size and ETag of an
    # object rewritten since (and task keys that reuse outputs of the old content)
    fs.invalidate_cache()
    if glob.has_magic(inner):
        explicit = _hidden(inner)
        # (fsspec's glob takes no `recursive`: s3fs passed it on to its listing and failed;
        # `**` in the pattern matches any depth, as locally)
        matches = sorted(m for m in fs.glob(inner) if explicit or not _hidden(m))
    else:
        matches = [inner] if fs.isfile(inner) else []
    if not matches and fs.isdir(inner):
        matches = sorted(p for p in fs.find(inner)
                         if p.endswith(suffixes) and not _under_hidden(p, inner))
    return matches


def _remote(path: str, call, *args):
    """`call(*args)` on a remote file system; what it raises becomes InputError naming `path`
    (an object store that keeps failing after the client's retries: 503s, timeouts, denied)."""
    try:
        return call(*args)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"input path {path!r} does not exist", path=path) from None
    except PermissionError as error:
        raise InputError(f"permission denied reading {path!r}: {error}", path=path) from error
    except Exception as error:  # the backends' own errors (botocore, aiohttp, gcsfs, ...)
        raise InputError(f"cannot read {path!r}: {type(error).__name__}: {error}",
                         path=path) from error


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
    info = _remote(path, fs.info, inner)
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
        if not _is_local(path):
            continue
        path = os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
        if glob.has_magic(path) and not os.path.exists(path):
            if "**" not in path:
                continue  # a one-level pattern never reads what is written in a subfolder
            path = _fixed_part(path)  # a recursive pattern reads any depth below it
        if os.path.isdir(path):
            folders.append(path)
    return tuple(folders)


def duckdb_path(path: str) -> str:
    """A path that DuckDB's readers take literally: DuckDB globs every path it is given, so
    `[`, `*` and `?` in a real file name become one-character classes (`[[]`, `[*]`, `[?]`)."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in path)
