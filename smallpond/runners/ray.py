"""The Ray runner: each smallpond task is one Ray task on a (possibly multi-node) cluster.

Only metadata travels through Ray: a Task (a small frozen dataclass), its resolved FileSlices
and ExecSettings go out, a TaskOutput (paths, row counts, bytes) comes back. The data stays on
the shared file system under data_root, where `execute_task` commits it atomically.

Ray tasks, not actors: Ray keeps its worker processes warm between tasks (imports of DuckDB and
Arrow are paid once per worker), schedules them with resources and node affinity, and reports a
dead worker or node as a typed system error. Ray itself never retries (`max_retries=0`,
`retry_exceptions=False`): the shared scheduling loop in `Runner.run` does, so that retries are
counted, reported and bounded the same way as on the embedded runner. System failures come back
from `wait` as `WorkerLost`; a task's own error comes back as the original typed smallpond
exception (SqlError, UserFunctionError, ...), unwrapped from Ray's RayTaskError.

Locality is soft: a task prefers the node that wrote most of its input bytes, and runs anywhere
else when that node is busy or gone.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import ray
import ray.exceptions as ray_errors
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from smallpond.config import Config
from smallpond.errors import SmallpondError, TaskError
from smallpond.io.files import FileSlice, install_storage, storage_table
from smallpond.planner.graph import Task, TaskOutput, TaskSlice
from smallpond.runners.base import Runner, WorkerLost
from smallpond.runners.execute import ExecSettings, execute_task, remove_attempt_leftovers
from smallpond.runners.faults import InjectedFault
from smallpond.runners.ray_connect import connect

__all__ = ["RayRunner", "smallpond_task"]

logger = logging.getLogger(__name__)

# Failures of the machinery, not of the task: the loop may run the task again elsewhere.
_SYSTEM_ERROR_NAMES = (
    "WorkerCrashedError",         # the worker process died (SIGKILL, segfault, os._exit)
    "NodeDiedError",              # the node running it died
    "LocalRayletDiedError",       # our own raylet died
    "OwnerDiedError",             # (subclass of ObjectLostError)
    "ObjectLostError",            # the result object was lost with its node
    "ObjectFetchTimedOutError",
    "ObjectReconstructionFailedError",
    "RayActorError",              # ActorDiedError, ActorUnavailableError
    "TaskUnschedulableError",
    "ActorUnschedulableError",
    "TaskPlacementGroupRemoved",
    "OutOfMemoryError",           # Ray's memory monitor killed the worker
    "OutOfDiskError",
    "ObjectStoreFullError",
    "TaskCancelledError",         # cancelled by someone else than this runner
    "RuntimeEnvSetupError",
    "RaySystemError",
)
SYSTEM_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(ray_errors, name) for name in _SYSTEM_ERROR_NAMES if hasattr(ray_errors, name))

_CLUSTER_TTL = 2.0  # seconds a view of the cluster's nodes and CPUs is reused
_SUSPECT_TTL = 120.0  # seconds a node that lost a task is avoided while Ray still lists it
_NODE_ID = re.compile(r"node ID: ([0-9a-f]{16,})", re.IGNORECASE)
_CANCEL_GRACE = 5.0  # seconds to let force-cancelled tasks die before cleaning their staging


@ray.remote
def smallpond_task(task: Task, inputs: list[list[FileSlice]], settings: ExecSettings,
                   storage: dict[str, dict] | None = None) -> tuple[str, TaskOutput]:
    """What a Ray worker runs: one smallpond task; returns (node id, output metadata).

    `storage`: the driver's storage options by URL root, passed as an object reference
    (`ray.put` once per version) so that the task's own arguments never hold a secret.
    """
    if storage is not None:
        install_storage(storage)
    output = execute_task(task, inputs, settings)
    return ray.get_runtime_context().get_node_id(), output


class RayRunner(Runner):
    """Runs each task as a Ray task with 1 CPU (and memory) on the connected cluster."""

    name = "ray"

    def __init__(self, config: Config):
        super().__init__(config)
        self._owns_ray = False
        self._connect()
        self._running: dict[Any, Task] = {}
        self._where: dict[str, tuple[str, int]] = {}  # task key -> (node id, output bytes)
        self._cluster_at = float("-inf")
        self._cpus = 1
        self._nodes: dict[str, dict] = {}  # alive node id -> resources
        self._suspects: dict[str, float] = {}  # node id -> when a task died with it
        self._round_robin = itertools.count()
        self._memory: int | None = None
        self._storage: tuple[int, Any] = (0, None)  # (version, ref of the storage options)

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():
            return  # somebody else's Ray (a notebook, a test suite, a Ray job): never shut it
        connect(self.config)
        self._owns_ray = True

    # -- cluster view -------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._cluster_at < _CLUSTER_TTL:
            return
        self._cluster_at = now
        try:
            nodes = {n["NodeID"]: n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")}
        except Exception as error:  # pragma: no cover - keep the last view on a GCS hiccup
            logger.debug("ray.nodes() failed: %s", error)
            return
        self._nodes = nodes
        # a dead node stays "alive" in Ray's view until its health checks time out (about
        # 15 s by default); the node ids of NodeDiedErrors are avoided meanwhile
        self._suspects = {n: t for n, t in self._suspects.items()
                          if n in nodes and now - t < _SUSPECT_TTL}
        self._cpus = max(1, int(sum(r.get("CPU", 0) for n, r in nodes.items()
                                    if n not in self._suspects)))
        self._memory = task_memory(nodes.values(), self.config)

    def capacity(self) -> int:
        """All CPUs of the cluster: tasks are submitted as soon as their inputs committed."""
        self._refresh()
        return self._cpus

    def threads_per_task(self) -> int:
        return 1

    # -- primitives -------------------------------------------------------------------------
    def _preferred_node(self, task: Task) -> str | None:
        """The alive node that wrote most of this task's input bytes, if it is known."""
        weights: dict[str, int] = {}
        for part in task.inputs:
            for source in part:
                if isinstance(source, TaskSlice) and source.task in self._where:
                    node, size = self._where[source.task]
                    weights[node] = weights.get(node, 0) + max(size, 1)
        if not weights:
            return None
        node = max(weights, key=weights.__getitem__)
        return node if node in self._nodes and node not in self._suspects else None

    def _healthy_node(self) -> str | None:
        """Any CPU node not suspected dead (round robin): steers tasks off a dying node."""
        healthy = [n for n, r in self._nodes.items()
                   if r.get("CPU", 0) >= 1 and n not in self._suspects]
        return healthy[next(self._round_robin) % len(healthy)] if healthy else None

    def _options(self, task: Task) -> dict[str, Any]:
        self._refresh()
        options: dict[str, Any] = {
            "num_cpus": 1,
            "max_retries": 0,
            "retry_exceptions": False,
            "name": f"smallpond_task:{task.describe()}",
        }
        if self._memory:
            options["memory"] = self._memory
        if len(self._nodes) > 1:
            node = self._preferred_node(task)
            if node is None and self._suspects:
                node = self._healthy_node()
            if node is not None:
                options["scheduling_strategy"] = _soft_affinity(node)
        return options

    def submit(self, task: Task, inputs: list[list[FileSlice]], settings: ExecSettings) -> Any:
        options = self._options(task)
        if options.get("memory"):  # DuckDB's budget is what Ray reserved for the task
            settings = dataclasses.replace(settings, memory_limit=options["memory"])
        version, table = storage_table()
        if table and self._storage[0] != version:
            self._storage = (version, ray.put(table))
        ref = smallpond_task.options(**options).remote(task, inputs, settings,
                                                       self._storage[1] if table else {})
        self._running[ref] = task
        return ref

    starts_at_submit = False  # a Ray task may wait for resources before it starts

    def wait(self, handles: Iterable[Any], timeout: float | None = None,
             ) -> list[tuple[Any, TaskOutput | BaseException]]:
        refs = list(handles)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=True)
        if rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=True)
            ready = [*ready, *more]
        return [(ref, self._result(ref)) for ref in ready]

    def _result(self, ref: Any) -> TaskOutput | BaseException:
        task = self._running.pop(ref, None)
        what = f"{task.describe()} ({task.summary()})" if task is not None else "a task"
        try:
            node, output = ray.get(ref)
        except ray_errors.RayTaskError as error:
            return _unwrap(error, task)
        except SYSTEM_ERRORS as error:
            self._clean_leftovers(task)
            if isinstance(error, ray_errors.NodeDiedError):
                self._suspect(error)
            return WorkerLost(f"{what} lost on Ray: {type(error).__name__}: {_first_line(error)}",
                              oom=type(error).__name__ == "OutOfMemoryError")
        except ray_errors.RayError as error:  # any other failure of Ray itself
            self._clean_leftovers(task)
            return WorkerLost(f"{what} lost on Ray: {type(error).__name__}: {_first_line(error)}")
        except Exception as error:  # e.g. the result could not be deserialized here
            return TaskError(f"{what} failed: {type(error).__name__}: {error}",
                             stage=task.stage if task else None,
                             partition=task.partition if task else None)
        self._where[output.key] = (node, output.num_bytes)
        return output

    def _suspect(self, error: BaseException) -> None:
        match = _NODE_ID.search(str(error))
        if match:
            self._suspects[match.group(1)] = time.monotonic()
            self._cluster_at = float("-inf")  # recount the CPUs at the next capacity()

    def cancel(self, handles: Iterable[Any]) -> None:
        refs = list(handles)
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # finished already, or Ray is going away: nothing to stop
                pass
        try:  # killed workers go quickly; give them a moment before cleaning their staging
            ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_GRACE, fetch_local=False)
        except Exception:
            pass
        for ref in refs:
            self._clean_leftovers(self._running.pop(ref, None))

    def _clean_leftovers(self, task: Task | None) -> None:
        if task is not None:
            remove_attempt_leftovers(self.scratch_dir, task.key)

    def shutdown(self) -> None:
        if self._running:  # normally empty: the loop cancels what it started
            self.cancel(list(self._running))
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    @property
    def owns_ray(self) -> bool:
        """Whether this runner started (or connected) Ray and so shuts it down."""
        return self._owns_ray

    def task_nodes(self) -> dict[str, str]:
        """Task key -> id of the Ray node that ran it (tasks run by this runner)."""
        return {key: node for key, (node, _) in self._where.items()}


def task_memory(nodes: Iterable[dict], config: Config) -> int | None:
    """Bytes of Ray's `memory` resource each task declares (None: declare none).

    A default budget comes from the nodes that run the tasks, not from the driver's machine:
    the smallest share of a CPU node's memory per CPU, so memory never caps concurrency below
    the CPUs. An explicit memory_per_task is declared as given, but never more than the
    smallest CPU node offers: a request no node can satisfy would leave the task pending
    forever.
    """
    cpu_nodes = [r for r in nodes if r.get("CPU", 0) >= 1 and r.get("memory", 0) > 0]
    if not cpu_nodes:
        return None
    if config.memory_is_default:
        return max(1, min(int(r["memory"] // max(1, int(r["CPU"]))) for r in cpu_nodes))
    wanted = int(config.memory_per_task or 0)
    return min(wanted, *(int(r["memory"]) for r in cpu_nodes)) if wanted > 0 else None


def _soft_affinity(node: str) -> NodeAffinitySchedulingStrategy:
    try:  # soft + spill: prefer the node, but run elsewhere now rather than queue behind it
        return NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True)
    except TypeError:  # pragma: no cover - a Ray without the private flag
        return NodeAffinitySchedulingStrategy(node, soft=True)


def _unwrap(error: ray_errors.RayTaskError, task: Task | None) -> BaseException:
    """The task's own exception as raised in the worker (the same type as on `local`)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, (SmallpondError, InjectedFault)):
        return cause
    if isinstance(cause, SYSTEM_ERRORS):
        return WorkerLost(f"{task.describe() if task else 'a task'} lost on Ray: "
                          f"{type(cause).__name__}: {_first_line(cause)}")
    name = type(cause).__name__ if cause is not None else "error"
    message = f"{task.describe() if task else 'a task'} failed on Ray: {name}: {cause}"
    return TaskError(message, stage=task.stage if task else None,
                     partition=task.partition if task else None,
                     remote_traceback=str(error))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""
