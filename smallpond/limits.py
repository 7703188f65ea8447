"""How much memory this process may use: the machine's RAM, or its cgroup's limit when lower.

Containers (Docker, Kubernetes, systemd slices, a batch scheduler) cap memory with a cgroup
(v1 `memory.limit_in_bytes`, v2 `memory.max`) while /proc/meminfo still shows the whole
machine: a budget from the machine's RAM gets workers OOM-killed in a container. The limit of
a cgroup is the smallest limit on the path from it to its hierarchy's root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["CgroupMemory", "cgroup_memory", "memory_cgroup_folders", "available_memory",
           "oom_kills", "OomWatch"]

_UNLIMITED = 1 << 60  # v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages)


@dataclass(frozen=True)
class CgroupMemory:
    """The memory controller of this process's cgroup."""

    version: int
    path: str  # the cgroup's folder in the mounted hierarchy
    limit: int  # the effective limit in bytes (the lowest on the way to the root)
    usage: int  # bytes charged now, minus the file cache the kernel can reclaim

    @property
    def available(self) -> int:
        return max(0, self.limit - self.usage)


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


def _stat(folder: str, name: str) -> int:
    for line in (_read(os.path.join(folder, "memory.stat")) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def _mounts(proc: str) -> list[tuple[str, str, str, str]]:
    """(root inside the hierarchy, mount point, fs type, super options) of cgroup mounts."""
    found = []
    for line in (_read(os.path.join(proc, "self", "mountinfo")) or "").splitlines():
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4], rest[0], rest[2]))
    return found


def _own_cgroups(proc: str) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v1 memory hierarchy and in the v2 hierarchy."""
    v1 = v2 = None
    for line in (_read(os.path.join(proc, "self", "cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v1, v2


def _folder(mount_root: str, mount_point: str, cgroup: str) -> str | None:
    """Where `cgroup` (a path from its hierarchy's root) lies under a mount of that hierarchy."""
    root = mount_root.rstrip("/")
    if root and cgroup != root and not cgroup.startswith(root + "/"):
        return None  # this mount shows another part of the hierarchy
    relative = cgroup[len(root):].lstrip("/")
    return os.path.join(mount_point, relative) if relative else mount_point


def _v1(folder: str, mount_point: str) -> CgroupMemory | None:
    # memory.stat's hierarchical_memory_limit already is the lowest limit up to the root
    limit = _number(str(_stat(folder, "hierarchical_memory_limit"))) or _lowest(
        folder, mount_point, "memory.limit_in_bytes")
    if limit is None:
        return None
    usage = _number(_read(os.path.join(folder, "memory.usage_in_bytes"))) or 0
    cache = _stat(folder, "total_inactive_file")
    return CgroupMemory(1, folder, limit, max(0, usage - cache))


def _v2(folder: str, mount_point: str) -> CgroupMemory | None:
    limit = _lowest(folder, mount_point, "memory.max")
    if limit is None:
        return None
    usage = _number(_read(os.path.join(folder, "memory.current"))) or 0
    return CgroupMemory(2, folder, limit, max(0, usage - _stat(folder, "inactive_file")))


def _lowest(folder: str, mount_point: str, name: str) -> int | None:
    """The lowest limit `name` from `folder` up to the mount point."""
    limits = []
    current = folder
    while True:
        value = _number(_read(os.path.join(current, name)))
        if value is not None:
            limits.append(value)
        if os.path.normpath(current) == os.path.normpath(mount_point):
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return min(limits) if limits else None


def memory_cgroup_folders(proc: str = "/proc") -> list[tuple[str, str, int]]:
    """(folder, its mount point, version) of this process's cgroup in each mounted hierarchy
    with a memory controller (v1 `memory`, or the v2 unified hierarchy)."""
    v1_path, v2_path = _own_cgroups(proc)
    found = []
    for mount_root, mount_point, fstype, options in _mounts(proc):
        if fstype == "cgroup" and v1_path is not None and "memory" in options.split(","):
            folder, version = _folder(mount_root, mount_point, v1_path), 1
        elif fstype == "cgroup2" and v2_path is not None:
            folder, version = _folder(mount_root, mount_point, v2_path), 2
        else:
            continue
        if folder:
            found.append((folder, mount_point, version))
    return found


def cgroup_memory(proc: str = "/proc") -> CgroupMemory | None:
    """The memory limit of this process's cgroup (v1 or v2), or None when it has none."""
    found = []
    for folder, mount_point, version in memory_cgroup_folders(proc):
        memory = (_v1 if version == 1 else _v2)(folder, mount_point)
        if memory is not None:
            found.append(memory)
    return min(found, key=lambda m: m.limit) if found else None


def _machine_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency; be safe anyway
        return 4 << 30


def available_memory() -> tuple[int, str]:
    """Bytes this process tree may still use, and where the figure comes from
    ("cgroup" when the container's limit is lower than the machine's free RAM)."""
    machine = _machine_available()
    cgroup = cgroup_memory()
    if cgroup is not None and cgroup.available < machine:
        return cgroup.available, "cgroup"
    return machine, "machine"


def oom_kills(proc: str = "/proc") -> int | None:
    """How many processes the kernel's OOM killer has ended: in this process's cgroup when
    it has a memory limit, else on the machine (None when the kernel does not say)."""
    cgroup = cgroup_memory(proc)
    if cgroup is not None:
        name = "memory.oom_control" if cgroup.version == 1 else "memory.events"
        source = os.path.join(cgroup.path, name)
    else:
        source = os.path.join(proc, "vmstat")
    for line in (_read(source) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


class OomWatch:
    """Tells whether the OOM killer struck since the last look: a worker that died by
    SIGKILL meanwhile was most likely killed for memory."""

    def __init__(self):
        self._seen = oom_kills()

    def struck(self) -> bool:
        now = oom_kills()
        struck = now is not None and self._seen is not None and now > self._seen
        self._seen = now
        return struck
