"""One typed configuration object, resolved once per session.

Precedence: explicit argument > ``SMALLPOND_<NAME>`` > the original's ``SP_<NAME>`` > default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from smallpond.errors import ConfigError

__all__ = ["Config", "resolve_config", "check_partitions", "MAX_PARTITIONS"]

RUNNERS = ("local", "ray")
MAX_PARTITIONS = 100_000
PROGRESS_WORDS = frozenset({"auto", "0", "1", "true", "false", "on", "off", "yes", "no", "none",
                            "force"})
MIN_TASK_MEMORY = 64 << 20  # DuckDB needs some room to run a query at all  # beyond this, planning and scheduling cost more than they save
VERIFY_LEVELS = ("checksum", "stat")  # how reused task outputs are checked before use
DEFAULT_DATA_ROOT = "~/.smallpond/data"


@dataclass(frozen=True)
class Config:
    """Settings shared by the planner, the runners and the kernels."""

    data_root: str
    runner: str = "local"
    ray_address: str | None = None
    num_executors: int = 1
    memory_per_task: int = 1 << 30
    partitions: int | None = None
    max_retries: int = 2
    job_id: str | None = None
    job_name: str | None = None
    verify: str = "checksum"
    scratch_dir: str | None = None
    extra: dict = field(default_factory=dict)
    memory_source: str = "argument"  # argument | env | cgroup | machine (derived defaults)
    task_timeout: float | None = None
    heartbeat_timeout: float = 60.0

    @property
    def memory_is_default(self) -> bool:
        """Whether memory_per_task was derived here (a runner may derive a better one)."""
        return self.memory_source in ("cgroup", "machine")

    @property
    def tasks_dir(self) -> str:
        return os.path.join(self.data_root, "tasks")

    @property
    def sources_dir(self) -> str:
        return os.path.join(self.data_root, "sources")

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.data_root, "runs")

    def with_(self, **changes) -> Config:
        return replace(self, **changes)


def _env(name: str) -> str | None:
    for key in (f"SMALLPOND_{name}", f"SP_{name}"):
        value = os.environ.get(key)
        if value not in (None, ""):
            return value
    return None


def _int(value, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{name} must be positive, got {number}")
    return number


def check_partitions(value, what: str = "partitions") -> int:
    """A partition count: a positive integer no larger than MAX_PARTITIONS."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value}")
    if value > MAX_PARTITIONS:
        raise ConfigError(f"{what} is {value}, more than the {MAX_PARTITIONS} smallpond "
                          "supports; fewer, larger partitions run faster")
    return value


def _parse_bytes(value, name: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().upper().replace("IB", "").replace("B", "")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a byte size like '2GB', got {value!r}") from None


def _job_id(value) -> str | None:
    """A job id names folders under data_root: a plain name, never a path."""
    if value is None:
        return None
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", text) or ".." in text:
        raise ConfigError(f"job_id must be a name of letters, digits, '.', '_' and '-' (it "
                          f"names folders under data_root), got {value!r}")
    return text


def _partitions(value) -> int | None:
    if value is None:
        value = _int(_env("PARTITIONS"), "SMALLPOND_PARTITIONS")
        return None if value is None else check_partitions(value, "SMALLPOND_PARTITIONS")
    return check_partitions(value)


# what a worker holds besides its task's budget: interpreter, DuckDB, Arrow (~60-80 MiB),
# numba's compiler where a job checksums records (~50 MiB more), buffers kept warm between tasks
WORKER_OVERHEAD = 192 << 20
MEMORY_FRACTION = 0.7  # of what is available, the rest for the driver, page cache and slack


def default_memory(executors: int | None) -> tuple[int, int, str]:
    """Workers and the per-task budget that fit the memory this process may use: the
    machine's free RAM, or its cgroup's limit when lower (a container); and which it was.

    Fewer workers than cores when the memory cannot hold one task per core.
    """
    from smallpond.limits import available_memory

    available, source = available_memory()
    if executors is None:
        fits = available // (WORKER_OVERHEAD + MIN_TASK_MEMORY)
        executors = max(1, min(os.cpu_count() or 1, fits))
    usable = max(0, available - executors * WORKER_OVERHEAD)
    return executors, max(MIN_TASK_MEMORY, int(usable * MEMORY_FRACTION) // executors), source


def _float(value, name: str, what: str, valid) -> float | None:
    """A number from an argument or environment variable, checked by `valid`."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {what}, got {value!r}") from None
    if not valid(number):
        raise ConfigError(f"{name} must be {what}, got {number}")
    return number


def _seconds(value, name: str) -> float | None:
    return _float(value, name, "a positive number of seconds", lambda x: x > 0)


def resolve_config(
    data_root: str | None = None,
    runner: str | None = None,
    ray_address: str | None = None,
    num_executors: int | None = None,
    memory_per_task: int | str | None = None,
    partitions: int | None = None,
    max_retries: int | None = None,
    job_id: str | None = None,
    job_name: str | None = None,
    verify: str | None = None,
    task_timeout: float | None = None,
    heartbeat_timeout: float | None = None,
    **extra,
) -> Config:
    """Build a Config from arguments, environment variables and defaults.

    Without memory_per_task, the budget comes from the memory this process may use (its
    cgroup's limit when lower than the machine's free RAM) over the workers.
    """
    ray_address = ray_address or _env("RAY_ADDRESS")
    runner = runner or _env("RUNNER") or ("ray" if ray_address else "local")
    if runner not in RUNNERS:
        raise ConfigError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if data_root is not None and (not isinstance(data_root, (str, os.PathLike))
                                  or not os.fspath(data_root)):
        raise ConfigError(f"data_root must be a non-empty path, got {data_root!r}")
    root = data_root or _env("DATA_ROOT") or DEFAULT_DATA_ROOT
    root = str(Path(os.path.expanduser(root)).absolute())
    executors = _int(num_executors, "num_executors") or _int(_env("NUM_EXECUTORS"),
                                                               "SMALLPOND_NUM_EXECUTORS")
    memory = _parse_bytes(memory_per_task, "memory_per_task")
    source = "argument"
    if memory is None:
        memory, source = _parse_bytes(_env("MEMORY_PER_TASK"), "SMALLPOND_MEMORY_PER_TASK"), "env"
    if memory is None:
        executors, memory, source = default_memory(executors)
    executors = executors or os.cpu_count() or 1
    if memory < MIN_TASK_MEMORY:
        raise ConfigError(f"memory_per_task must be at least {MIN_TASK_MEMORY >> 20} MiB, got "
                          f"{memory} bytes")
    if extra.get("fault_inject_prob") is not None:
        extra["fault_inject_prob"] = _float(extra["fault_inject_prob"], "fault_inject_prob",
                                            "a number in [0, 1]", lambda x: 0 <= x <= 1)
    budget = extra.get("cache_budget")
    if budget is not None or _env("CACHE_BUDGET"):
        what = "cache_budget" if budget is not None else "SMALLPOND_CACHE_BUDGET"
        if (_parse_bytes(budget if budget is not None else _env("CACHE_BUDGET"), what)
                or 0) < 0:
            raise ConfigError(f"{what} must not be negative, got {budget!r}")
    progress = extra.get("progress")
    for name, value in (("progress", progress), ("SMALLPOND_PROGRESS", _env("PROGRESS"))):
        if value is not None and not isinstance(value, bool) and \
                str(value).strip().lower() not in PROGRESS_WORDS:
            raise ConfigError(f"{name} must be True, False or one of {sorted(PROGRESS_WORDS)}, "
                              f"got {value!r}")
    verify = verify or _env("VERIFY") or "checksum"
    if verify not in VERIFY_LEVELS:
        raise ConfigError(f"verify must be one of {VERIFY_LEVELS}, got {verify!r}")
    return Config(
        data_root=root,
        runner=runner,
        ray_address=ray_address,
        num_executors=executors,
        memory_per_task=memory,
        partitions=_partitions(partitions),
        max_retries=2 if max_retries is None else int(max_retries),
        job_id=_job_id(job_id or _env("JOBID")),
        job_name=job_name,
        verify=verify,
        extra=extra,
        memory_source=source,
        task_timeout=_seconds(task_timeout if task_timeout is not None else _env("TASK_TIMEOUT"),
                              "task_timeout"),
        heartbeat_timeout=_seconds(heartbeat_timeout if heartbeat_timeout is not None
                                   else _env("HEARTBEAT_TIMEOUT"), "heartbeat_timeout") or 60.0,
    )
