"""Per-session scratch areas under data_root, and telling live sessions from dead ones.

Several sessions may share one data_root (a notebook beside a batch job, many drivers on a
cluster file system). Each owns `data_root/sessions/<id>/` with its task staging and spill
folders, and an `owner.json` naming its host and process. A session removes only its own area;
another's area is removed only once its owner is provably dead: on the same host, its process
is gone (or the pid now belongs to a younger process); on another host, its heartbeat (the
mtime of owner.json, refreshed every HEARTBEAT_SECONDS) is older than STALE_SECONDS.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from smallpond.io.commit import read_json, remove_tree, write_json_atomic

__all__ = [
    "SessionArea",
    "owner_alive",
    "live_sessions",
    "clean_dead_sessions",
    "pinned_task_keys",
    "current_owner",
    "SESSIONS_DIR",
]

logger = logging.getLogger(__name__)

SESSIONS_DIR = "sessions"
OWNER_FILE = "owner.json"
PINS_FILE = "pins.json"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # gone, or not ours to inspect
        return None


def current_owner() -> dict:
    """Who this process is: host, pid and process start time (the pid alone can be reused)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid),
            "started": time.time()}


def owner_alive(owner: dict, heartbeat: float | None, now: float | None = None) -> bool:
    """Whether the process described by `owner` may still be running.

    `heartbeat` is the last time it proved to be alive (the owner file's mtime).
    """
    now = time.time() if now is None else now
    if owner.get("host") == socket.gethostname():
        start = _process_start(int(owner.get("pid", -1)))
        if start is None:
            return False
        recorded = owner.get("pid_start")
        return recorded is None or abs(start - recorded) < 1.0
    return heartbeat is not None and now - heartbeat < STALE_SECONDS


def _area_alive(path: str) -> bool:
    owner_path = os.path.join(path, OWNER_FILE)
    try:
        owner = read_json(owner_path)
        heartbeat = os.stat(owner_path).st_mtime
    except FileNotFoundError:
        # a session writes its owner file right after making its folder: give a folder
        # without one the benefit of the doubt until it is clearly old
        try:
            return time.time() - os.stat(path).st_mtime < STALE_SECONDS
        except FileNotFoundError:
            return False
    except (ValueError, OSError):
        return True  # unreadable: never delete what we cannot prove dead
    return owner_alive(owner, heartbeat)


class SessionArea:
    """This session's scratch folder: `data_root/sessions/<id>/{staging,spill}`."""

    def __init__(self, data_root: str, session_id: str):
        self.path = os.path.join(data_root, SESSIONS_DIR, session_id)
        os.makedirs(self.staging_dir, exist_ok=True)
        os.makedirs(self.spill_dir, exist_ok=True)
        self._owner_path = os.path.join(self.path, OWNER_FILE)
        write_json_atomic(self._owner_path, {**current_owner(), "session_id": session_id})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="smallpond-heartbeat",
                                        daemon=True)
        self._thread.start()

    @property
    def staging_dir(self) -> str:
        return os.path.join(self.path, "staging")

    @property
    def spill_dir(self) -> str:
        return os.path.join(self.path, "spill")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self._owner_path)
            except OSError:  # the folder went away (data_root removed): nothing to refresh
                return

    def pin(self, keys) -> None:
        """Record the task keys the running action needs, so cache eviction keeps them."""
        write_json_atomic(os.path.join(self.path, PINS_FILE), sorted(keys))

    def unpin(self) -> None:
        try:
            os.remove(os.path.join(self.path, PINS_FILE))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Stop the heartbeat and remove this session's own folder (nobody else's)."""
        self._stop.set()
        remove_tree(self.path)


def _areas(data_root: str) -> list[str]:
    root = os.path.join(data_root, SESSIONS_DIR)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return [os.path.join(root, name) for name in sorted(names)]


def live_sessions(data_root: str) -> list[str]:
    """Folders of the sessions on this data_root whose owner may still run."""
    return [path for path in _areas(data_root) if _area_alive(path)]


def clean_dead_sessions(data_root: str, keep: str | None = None) -> list[str]:
    """Remove the areas of sessions whose owner is provably dead; return what was removed."""
    removed = []
    for path in _areas(data_root):
        if path != keep and not _area_alive(path):
            logger.info("removing the scratch folder of a dead session: %s", path)
            remove_tree(path)
            removed.append(path)
    return removed


def pinned_task_keys(data_root: str) -> set[str]:
    """Task keys that running actions of live sessions need."""
    keys: set[str] = set()
    for path in live_sessions(data_root):
        try:
            keys.update(read_json(os.path.join(path, PINS_FILE)))
        except (FileNotFoundError, ValueError):
            continue
    return keys
