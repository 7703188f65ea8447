"""Committing a job's result to the user's output folder, safely.

- Every output path is checked before anything runs: it must not be, contain or lie inside an
  input or the data_root, and its folder must be writable (`check_output`).
- New parts are staged in a hidden sibling of the output (`.<name>.smallpond-<id>/`, same file
  system as the output), then published: a new folder by one rename; an existing folder file by
  file, with the files being replaced moved aside first and restored if anything fails.
- Only our own files are ever removed: the parts of a previous smallpond output (named in its
  `_SUCCESS` manifest, or `part-NNNNN.<ext>`) and `_SUCCESS`; anything else stays.
- `_SUCCESS` (a JSON manifest of the output's files) is written last, after every part has been
  checked in place. A writer killed mid-publish is rolled back by the next writer of that path.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence

import pyarrow.parquet as pq

from smallpond.errors import (
    ConfigError,
    DiskFullError,
    IntegrityError,
    OutputError,
    OutputExistsError,
)
from smallpond.io.commit import read_json, remove_tree, write_json_atomic
from smallpond.io.disk import is_disk_full, mount_point
from smallpond.io.files import FileSlice
from smallpond.io.parquet import iter_slice_batches, slices_schema
from smallpond.io.sessions import current_owner, owner_alive

__all__ = ["check_output", "write_output", "read_manifest", "resolve_output", "WRITE_MODES",
           "SUCCESS"]

logger = logging.getLogger(__name__)

WRITE_MODES = ("error", "overwrite", "append")
SUCCESS = "_SUCCESS"
MANIFEST_FORMAT = "smallpond-output/1"
_PART = re.compile(r"part-(\d+)\.(parquet|dat)$")
_STAGING_MARK = ".smallpond-"


def resolve_output(path: str) -> str:
    """The absolute local path of an output; other URL schemes are refused clearly."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise OutputError("an output path is required")
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        raise OutputError(f"cannot write {text!r}: outputs must be local or shared-file-system "
                          "paths for now (object-store outputs are not supported yet)",
                          path=text)
    return os.path.abspath(os.path.expanduser(text.removeprefix("file://")))


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _check_overlap(path: str, inputs: Iterable[str], data_root: str | None) -> None:
    real = _real(path)
    if data_root:
        root = _real(data_root)
        if _inside(real, root) or _inside(root, real):
            raise OutputError(
                f"output path {path!r} overlaps smallpond's data_root {data_root!r}; write "
                "somewhere outside it (and never a folder that contains it)", path=path)
    for source in inputs:
        if "://" in source and not source.startswith("file://"):
            continue
        source_real = _real(source.removeprefix("file://"))
        if _inside(source_real, real):
            raise OutputError(f"output path {path!r} contains the input {source!r}; choose "
                              "another output folder", path=path)
        if os.path.isdir(source_real) and _inside(real, source_real):
            raise OutputError(f"output path {path!r} lies inside the input folder {source!r}; "
                              "choose another output folder", path=path)


def _entries(path: str) -> list[str]:
    """Visible entries of an output folder (hidden ones, e.g. .DS_Store, do not count)."""
    return sorted(name for name in os.listdir(path) if not name.startswith("."))


def read_manifest(path: str) -> dict | None:
    """The `_SUCCESS` manifest of a smallpond output folder, or None (absent, empty, foreign)."""
    try:
        data = read_json(os.path.join(path, SUCCESS))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None
    return data


def _ours(path: str, manifest: dict | None) -> set[str]:
    """Entries of an existing output folder that smallpond wrote and may replace."""
    named = {f["name"] for f in (manifest or {}).get("files", []) if isinstance(f, dict)}
    entries = _entries(path)
    return {name for name in entries
            if (name in named or name == SUCCESS or _PART.fullmatch(name))
            and os.path.isfile(os.path.join(path, name))}


def _check_writable(path: str) -> None:
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"cannot create output {path!r}: {existing!r} is a file", path=path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write output {path!r}: {existing!r} is not writable "
                          "(permissions or a read-only file system)", path=path)


def check_output(path: str, mode: str, inputs: Iterable[str] = (),
                 data_root: str | None = None) -> str:
    """Check an output before anything runs; return its absolute path.

    Refused: a bad mode, a path that is or overlaps an input or the data_root, a file, an
    unwritable folder, and (mode 'error') a folder holding files that are not exactly a
    previous smallpond output, which a rerun replaces as 0.15 scripts expect.
    """
    if mode not in WRITE_MODES:
        raise ConfigError(f"mode must be one of {WRITE_MODES}, got {mode!r}")
    path = resolve_output(path)
    _check_overlap(path, inputs, data_root)
    _check_writable(path)
    if not os.path.exists(path):
        return path
    if not os.path.isdir(path):
        raise OutputExistsError(f"output path {path!r} is a file, not a folder", path=path)
    entries = _entries(path)
    if mode == "error" and entries:
        foreign = sorted(set(entries) - _previous_output(path))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise OutputExistsError(
                f"output path {path!r} already holds files smallpond did not write ({shown}); "
                "choose an empty folder, or pass mode='overwrite' to replace smallpond's own "
                "files there (others are kept) or mode='append'", path=path)
    return path


def _previous_output(path: str) -> set[str]:
    """The entries of `path` that belong to a previous smallpond output (by its manifest)."""
    manifest = read_manifest(path)
    if manifest is None:
        return set()
    return {f["name"] for f in manifest.get("files", []) if isinstance(f, dict)} | {SUCCESS}


# -- staging -------------------------------------------------------------------------------------
def _staging_prefix(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{_STAGING_MARK}")


def _new_staging(staging: str) -> None:
    os.makedirs(os.path.join(staging, "new"))
    os.makedirs(os.path.join(staging, "backup"))
    write_json_atomic(os.path.join(staging, "owner.json"), current_owner())


def _copy(source: str, target: str) -> None:
    shutil.copyfile(source, target)  # copy_file_range / sendfile: in-kernel where possible


def _stage_part(slices: Sequence[FileSlice], target: str, extension: str,
                movable: Mapping[str, str]) -> None:
    whole = len(slices) == 1 and slices[0].is_whole and slices[0].path.endswith(f".{extension}")
    if whole:
        source = slices[0].path
        task_dir = movable.get(source)
        if task_dir is not None:
            try:
                os.rename(source, target)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
            else:
                # the file left the cache: its task is no longer committed and runs again
                remove_tree(task_dir)
                return
        _copy(source, target)
    elif extension == "parquet":
        schema = slices_schema(slices) if slices else None
        if schema is None:
            raise ValueError("an output partition without files has no schema")
        with pq.ParquetWriter(target, schema) as writer:
            for batch in iter_slice_batches(slices, schema):
                writer.write_batch(batch)
    else:
        raise ValueError(f"a {extension} part must be one whole file, got {slices}")


def _first_number(path: str, mode: str) -> int:
    if mode != "append" or not os.path.isdir(path):
        return 0
    numbers = [int(m.group(1)) for name in os.listdir(path) if (m := _PART.fullmatch(name))]
    return max(numbers, default=-1) + 1


# -- publishing ----------------------------------------------------------------------------------
def _rollback(path: str, staging: str, journal: dict) -> None:
    """Undo a publish: remove the files it added, put back the files it moved aside."""
    backup = os.path.join(staging, "backup")
    for name in journal.get("added", []):
        target = os.path.join(path, name)
        if os.path.isfile(target) and name not in journal.get("backed_up", []):
            os.remove(target)
    for name in journal.get("backed_up", []):
        saved = os.path.join(backup, name)
        if os.path.exists(saved):
            os.replace(saved, os.path.join(path, name))


def recover_stale_writes(path: str) -> None:
    """Roll back the unfinished publishes of dead writers of `path`; refuse a live writer."""
    parent = os.path.dirname(path)
    prefix = os.path.basename(_staging_prefix(path))
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        staging = os.path.join(parent, name)
        try:
            owner_file = os.path.join(staging, "owner.json")
            owner = read_json(owner_file)
            alive = owner_alive(owner, os.stat(owner_file).st_mtime)
        except FileNotFoundError:
            alive = time.time() - os.stat(staging).st_mtime < 60
        except (OSError, ValueError):
            alive = True
        if alive:
            raise OutputError(f"another smallpond job is writing {path!r} right now "
                              f"(staging folder {staging}); wait for it to finish", path=path)
        try:
            journal = read_json(os.path.join(staging, "journal.json"))
        except (OSError, ValueError):
            journal = None
        if journal and journal.get("state") != "published":
            logger.warning("rolling back an unfinished write of %s by a dead job", path)
            _rollback(path, staging, journal)
        remove_tree(staging)


def _write_manifest(path: str, files: list[dict], job_id: str | None) -> None:
    write_json_atomic(os.path.join(path, SUCCESS), {
        "format": MANIFEST_FORMAT, "job_id": job_id, "written": time.time(), "files": files})


def _verify(path: str, sizes: dict[str, int]) -> None:
    for name, size in sizes.items():
        target = os.path.join(path, name)
        try:
            actual = os.stat(target).st_size
        except FileNotFoundError:
            raise IntegrityError(f"{target} vanished while the output was published") from None
        if actual != size:
            raise IntegrityError(f"{target} is {actual} bytes in place, {size} when staged")


def _publish(path: str, staging: str, mode: str, sizes: dict[str, int],
             job_id: str | None) -> None:
    new_dir = os.path.join(staging, "new")
    if not os.path.exists(path) or not os.listdir(path):
        empty = os.stat(path).st_mode if os.path.isdir(path) else None
        os.rename(new_dir, path)  # replaces an empty folder too, in one step (POSIX rename)
        try:
            _verify(path, sizes)
            _write_manifest(path, _listing(path, sizes), job_id)
        except BaseException:
            remove_tree(path)  # all of it is ours: it did not exist, or was empty, a moment ago
            if empty is not None:  # the user's empty folder comes back as it was
                os.mkdir(path)
                os.chmod(path, stat.S_IMODE(empty))
            raise
        return
    previous = read_manifest(path)
    replaced = sorted(_ours(path, previous)) if mode != "append" else \
        ([SUCCESS] if os.path.exists(os.path.join(path, SUCCESS)) else [])
    journal = {"path": path, "backed_up": replaced, "added": sorted(sizes), "state": "started"}
    journal_path = os.path.join(staging, "journal.json")
    write_json_atomic(journal_path, journal)
    try:
        for name in replaced:
            os.rename(os.path.join(path, name), os.path.join(staging, "backup", name))
        for name in sorted(sizes):
            os.rename(os.path.join(new_dir, name), os.path.join(path, name))
        _verify(path, sizes)
        kept = []
        if mode == "append" and previous:
            kept = [f for f in previous.get("files", [])
                    if isinstance(f, dict) and os.path.isfile(os.path.join(path, f["name"]))]
        _write_manifest(path, kept + _listing(path, sizes), job_id)
        journal["state"] = "published"
        write_json_atomic(journal_path, journal)
    except BaseException:
        _rollback(path, staging, journal)
        raise


def _listing(path: str, sizes: dict[str, int]) -> list[dict]:
    return [{"name": name, "size": size} for name, size in sorted(sizes.items())]


def write_output(parts: Sequence[Sequence[FileSlice]], path: str, mode: str,
                 data_root: str | None = None, inputs: Iterable[str] = (),
                 extension: str = "parquet", movable: Mapping[str, str] | None = None,
                 job_id: str | None = None) -> list[str]:
    """Write each partition as part-NNNNN.<extension> under `path`; return the new files.

    `movable` maps a source file to the task folder it may be moved out of (instead of
    copied); that task's cache entry is then removed. A failure at any point leaves `path` as
    it was.
    """
    inputs = list(inputs)
    path = check_output(path, mode, inputs, data_root)
    recover_stale_writes(path)
    staging = _staging_prefix(path) + uuid.uuid4().hex[:12]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _new_staging(staging)
        first = _first_number(path, mode)
        sizes: dict[str, int] = {}
        for offset, slices in enumerate(parts):
            name = f"part-{first + offset:05d}.{extension}"
            target = os.path.join(staging, "new", name)
            _stage_part(slices, target, extension, movable or {})
            sizes[name] = os.stat(target).st_size
        _publish(path, staging, mode, sizes, job_id)
        return [os.path.join(path, name) for name in sorted(sizes)]
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(f"no space left on device (mount {mount_point(path)}) while "
                                f"writing {path!r}; the previous output is untouched",
                                mount=mount_point(path), path=path) from error
        raise OutputError(f"failed writing {path!r}: {error}; the previous output is "
                          "untouched", path=path) from error
    finally:
        remove_tree(staging)
