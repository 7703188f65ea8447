"""Atomic commit: write under a private staging name, then rename into place."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid

__all__ = ["new_staging_dir", "commit_dir", "remove_tree", "write_json_atomic", "read_json"]


def new_staging_dir(parent: str, name: str) -> str:
    path = os.path.join(parent, f"{name}.{uuid.uuid4().hex[:12]}")
    os.makedirs(path)
    return path


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def commit_dir(staging: str, final: str, replace: bool = False) -> bool:
    """Rename `staging` to `final`. Return False when another attempt already committed.

    With `replace`, an existing `final` is swapped out first (a forced recompute).
    """
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
        if not replace:
            remove_tree(staging)
            return False
        trash = f"{final}.old.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, trash)
        except FileNotFoundError:
            trash = None
        os.rename(staging, final)
        if trash:
            remove_tree(trash)
        return True
    try:
        os.rename(staging, final)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            remove_tree(staging)
            return False
        raise
    return True


def write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp.{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)
