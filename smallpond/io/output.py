"""Committing a job's result to the user's output folder, safely.

- Every output path is checked before anything runs: it must not be, contain or lie inside an
  input or the data_root (compared by file identity, so links and bind mounts do not hide an
  overlap), and its folder must be writable (`check_output`).
- New parts are staged on the output's own file system: in a hidden folder inside the output
  (`.smallpond-<id>/`) when it exists, else beside it (`.<name>.smallpond-<id>/`). A new
  folder is published by one rename; an existing one file by file, the files being replaced
  moved aside first and restored if anything fails. A journal in the staging folder lets the
  next writer (or reader) of the path roll back a writer that was killed mid-publish.
- Only our own files are ever removed: `part-NNNNN.<ext>` files (five or more ASCII digits)
  and `_SUCCESS`; a manifest cannot make us delete a file of another name.
- `_SUCCESS` (a JSON manifest of the output's files) is written last, after every part has been
  checked in place.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
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
from smallpond.io.files import WRITER_MARK, FileSlice, writer_staging
from smallpond.io.parquet import iter_slice_batches, slices_schema
from smallpond.io.sessions import current_owner, owner_alive

__all__ = ["check_output", "write_output", "read_manifest", "resolve_output", "WRITE_MODES",
           "SUCCESS"]

logger = logging.getLogger(__name__)

WRITE_MODES = ("error", "overwrite", "append")
SUCCESS = "_SUCCESS"
MANIFEST_FORMAT = "smallpond-output/1"
_PART = re.compile(r"part-([0-9]{5,})\.(parquet|dat)")


def resolve_output(path: str) -> str:
    """The absolute local path of an output; other URL schemes are refused clearly."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise OutputError("an output path is required")
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        raise OutputError(f"cannot write {text!r}: outputs must be local or shared-file-system "
                          "paths for now (object-store outputs are not supported yet)",
                          path=text)
    if "\0" in text:
        raise OutputError(f"an output path cannot contain a NUL byte: {text!r}", path=text)
    path = os.path.abspath(os.path.expanduser(text.removeprefix("file://")))
    longest = max((len(os.fsencode(part)) for part in path.split(os.sep)), default=0)
    if longest > 255 or len(os.fsencode(path)) > 4000:
        raise OutputError(f"output path {text[:80]!r}... is too long for the file system (a "
                          "name of at most 255 bytes, a path of at most 4000)", path=text)
    return path


# -- overlap, by file identity -----------------------------------------------------------------
def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _chain(path: str, memo: dict[str, set]) -> set[tuple[int, int]]:
    """Identities of `path` and of every existing folder above it."""
    path = os.path.realpath(path)
    if path in memo:
        return memo[path]
    parent = os.path.dirname(path)
    found = set() if parent == path else set(_chain(parent, memo))
    own = _identity(path)
    if own is not None:
        found.add(own)
    memo[path] = found
    return found


def _check_overlap(path: str, inputs: Iterable[str], data_root: str | None) -> None:
    memo: dict[str, set] = {}
    output_chain = _chain(path, memo)
    output_id = _identity(path)
    sources = [(data_root, "data_root")] if data_root else []
    sources += [(s, "input") for s in inputs]
    for source, kind in sources:
        if "://" in source and not source.startswith("file://"):
            continue
        source = source.removeprefix("file://")
        source_id = _identity(source)
        inside_output = output_id is not None and output_id in _chain(source, memo)
        output_inside = source_id is not None and os.path.isdir(source) \
            and source_id in output_chain
        if kind == "data_root" and (inside_output or output_inside):
            raise OutputError(
                f"output path {path!r} overlaps smallpond's data_root {data_root!r}; write "
                "somewhere outside it (and never a folder that contains it)", path=path)
        if inside_output:
            relation = "is" if output_id == source_id else "contains"
            raise OutputError(f"output path {path!r} {relation} the input {source!r}; choose "
                              "another output folder", path=path)
        if output_inside:
            raise OutputError(f"output path {path!r} lies inside the input folder {source!r}; "
                              "choose another output folder", path=path)


# -- what an output folder holds -----------------------------------------------------------------
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


def _is_part(path: str, name: str) -> bool:
    return _PART.fullmatch(name) is not None and os.path.isfile(os.path.join(path, name)) \
        and not os.path.islink(os.path.join(path, name))


def _previous_output(path: str) -> set[str]:
    """Entries of `path` that a previous smallpond output wrote, by its manifest: part files
    of our naming whose sizes match the manifest, and the manifest itself."""
    manifest = read_manifest(path)
    if manifest is None:
        return set()
    ours = {SUCCESS}
    for entry in manifest.get("files", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        name = entry["name"]
        if _is_part(path, name) and os.path.getsize(os.path.join(path, name)) == entry.get("size"):
            ours.add(name)
    return ours


def _ours(path: str) -> list[str]:
    """Entries of an existing output folder that smallpond may replace: `_SUCCESS` and part
    files of its naming (never another name, whatever a manifest says)."""
    names = [n for n in _entries(path) if _is_part(path, n)]
    if os.path.isfile(os.path.join(path, SUCCESS)):
        names.append(SUCCESS)
    return sorted(names)


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
    previous smallpond output, which a rerun replaces as 0.15 scripts expect. A publish that a
    killed writer left unfinished is rolled back first.
    """
    if mode not in WRITE_MODES:
        raise ConfigError(f"mode must be one of {WRITE_MODES}, got {mode!r}")
    path = resolve_output(path)
    _check_overlap(path, inputs, data_root)
    _check_writable(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"output path {path!r} is a file, not a folder", path=path)
    recover_stale_writes(path)  # (it may remove a folder a killed writer had just created)
    if not os.path.exists(path):
        return path
    success = os.path.join(path, SUCCESS)
    if os.path.lexists(success) and (os.path.islink(success) or not os.path.isfile(success)):
        raise OutputError(f"{success!r} is not a file smallpond wrote; remove it first",
                          path=path)
    entries = _entries(path)
    if mode == "error" and entries:
        foreign = sorted(set(entries) - _previous_output(path))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise OutputExistsError(
                f"output path {path!r} already holds files smallpond did not write ({shown}); "
                "choose an empty folder, or overwrite (mode='overwrite', --overwrite) to "
                "replace smallpond's own files there (others are kept), or append",
                path=path)
    return path


# -- staging and recovery ----------------------------------------------------------------------
def _staging_name(path: str) -> str:
    """Where a writer of `path` stages: inside it when it exists (its own file system, even
    when it is a mount point), else beside it."""
    token = uuid.uuid4().hex[:12]
    if os.path.isdir(path):
        return os.path.join(path, f"{WRITER_MARK}{token}")
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}{WRITER_MARK}{token}")


def _make_staging(staging: str) -> None:
    os.makedirs(os.path.join(staging, "new"))
    os.makedirs(os.path.join(staging, "backup"))
    write_json_atomic(os.path.join(staging, "owner.json"), current_owner())


def _writer_alive(staging: str) -> bool:
    owner_file = os.path.join(staging, "owner.json")
    try:
        return owner_alive(read_json(owner_file), os.stat(owner_file).st_mtime)
    except FileNotFoundError:
        try:  # being created right now, or left by a writer that died at once
            return time.time() - os.stat(staging).st_mtime < 60
        except FileNotFoundError:
            return False
    except (OSError, ValueError):
        return True  # unreadable: never touch what we cannot prove dead


def _rollback(path: str, staging: str, journal: dict) -> None:
    """Undo a publish: remove the files it added, put back the files it moved aside."""
    backed_up = set(journal.get("backed_up", []))
    for name in journal.get("added", []):
        target = os.path.join(path, name)
        if name not in backed_up and _PART.fullmatch(name) and os.path.isfile(target):
            os.remove(target)
    success = os.path.join(path, SUCCESS)
    if SUCCESS not in backed_up and os.path.isfile(success):
        os.remove(success)  # a manifest of the half-published output
    for name in backed_up:
        saved = os.path.join(staging, "backup", name)
        if os.path.exists(saved):
            os.replace(saved, os.path.join(path, name))
    if journal.get("created") and os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)  # it did not exist before that writer


def recover_stale_writes(path: str) -> None:
    """Roll back the unfinished publishes of dead writers of `path`; refuse a live writer."""
    for staging in writer_staging(path):
        if _writer_alive(staging):
            raise OutputError(f"another smallpond job is writing {path!r} right now "
                              f"(staging folder {staging}); wait for it to finish", path=path)
        try:
            journal = read_json(os.path.join(staging, "journal.json"))
        except (OSError, ValueError):
            journal = None
        if journal and journal.get("state") != "published":
            logger.warning("rolling back an unfinished write of %s by a killed job", path)
            _rollback(path, staging, journal)
        remove_tree(staging)


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


def _check_append_schema(path: str, staged: str) -> None:
    """Appended parts must have the columns and types of the parts already there."""
    existing = [n for n in _ours(path) if n.endswith(".parquet")]
    if not existing or not staged.endswith(".parquet"):
        return
    old = pq.read_schema(os.path.join(path, existing[0]))
    new = pq.read_schema(staged)
    if [(f.name, f.type) for f in old] != [(f.name, f.type) for f in new]:
        raise OutputError(f"cannot append to {path!r}: the new parts' schema ({new}) differs "
                          f"from {existing[0]}'s ({old}); write to another folder", path=path)


# -- publishing ----------------------------------------------------------------------------------
def _write_manifest(path: str, files: list[dict], job_id: str | None, staging: str) -> None:
    # written in the staging folder and renamed: no temporary file ever shows in the output
    written = os.path.join(staging, SUCCESS)
    write_json_atomic(written, {
        "format": MANIFEST_FORMAT, "job_id": job_id, "written": time.time(), "files": files})
    if os.path.abspath(staging) != os.path.abspath(path):
        os.replace(written, os.path.join(path, SUCCESS))


def _verify(path: str, sizes: dict[str, int]) -> None:
    for name, size in sizes.items():
        target = os.path.join(path, name)
        try:
            actual = os.stat(target).st_size
        except FileNotFoundError:
            raise IntegrityError(f"{target} vanished while the output was published") from None
        if actual != size:
            raise IntegrityError(f"{target} is {actual} bytes in place, {size} when staged")


def _listing(sizes: dict[str, int]) -> list[dict]:
    return [{"name": name, "size": size} for name, size in sorted(sizes.items())]


def _publish(path: str, staging: str, mode: str, sizes: dict[str, int],
             job_id: str | None) -> None:
    new_dir = os.path.join(staging, "new")
    journal_path = os.path.join(staging, "journal.json")
    created = not os.path.exists(path)
    if created:
        journal = {"path": path, "created": True, "added": sorted(sizes), "backed_up": [],
                   "state": "started"}
        write_json_atomic(journal_path, journal)
        # a new folder appears whole: parts verified and `_SUCCESS` written before the rename
        _verify(new_dir, sizes)
        _write_manifest(new_dir, _listing(sizes), job_id, new_dir)
        os.rename(new_dir, path)
        moves: list[str] = []
        replaced: list[str] = []
    else:
        previous = read_manifest(path)
        replaced = _ours(path) if mode != "append" else \
            ([SUCCESS] if os.path.isfile(os.path.join(path, SUCCESS)) else [])
        journal = {"path": path, "created": False, "added": sorted(sizes),
                   "backed_up": replaced, "state": "started"}
        write_json_atomic(journal_path, journal)
        moves = sorted(sizes)
    try:
        for name in replaced:
            os.rename(os.path.join(path, name), os.path.join(staging, "backup", name))
        for name in moves:
            os.rename(os.path.join(new_dir, name), os.path.join(path, name))
        _verify(path, sizes)
        if not created:
            kept = []
            if mode == "append" and previous:
                kept = [f for f in previous.get("files", []) if isinstance(f, dict)
                        and f.get("name") in _ours(path) and f.get("name") not in sizes]
            _write_manifest(path, kept + _listing(sizes), job_id, staging)
        journal["state"] = "published"
        write_json_atomic(journal_path, journal)
    except BaseException:
        _rollback(path, staging, journal)
        raise


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
    staging = _staging_name(path)  # named first: a failure anywhere below removes it
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _make_staging(staging)
        first = _first_number(path, mode)
        sizes: dict[str, int] = {}
        for offset, slices in enumerate(parts):
            name = f"part-{first + offset:05d}.{extension}"
            target = os.path.join(staging, "new", name)
            _stage_part(slices, target, extension, movable or {})
            os.utime(os.path.join(staging, "owner.json"))  # still alive, for other hosts
            if mode == "append" and not sizes and os.path.isdir(path):
                _check_append_schema(path, target)
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
