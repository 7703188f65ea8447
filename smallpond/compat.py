"""smallpond 0.15 keywords: which ones map onto this engine and which are only accepted.

0.15 scripts pass per-stage options through `**kwargs` (SqlEngineNode, HashPartitionNode,
ArrowStreamNode...) and init options; every one of them is accepted so that scripts run
unchanged. Those with a meaning here are used; the others are logged once per process, naming
the keyword, and otherwise ignored. A keyword 0.15 never had is still a clear PlanError.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from smallpond.errors import PlanError

__all__ = ["stage_options", "init_options", "RESOURCE_OPTIONS"]

logger = logging.getLogger("smallpond")

RESOURCE_OPTIONS = ("cpu_limit", "gpu_limit", "memory_limit")  # advisory, as in 0.15
USED_STAGE_OPTIONS = {*RESOURCE_OPTIONS, "output_name", "udfs", "extension_paths",
                      "udf_module_paths"}
# accepted for compatibility; the engine decides these itself
IGNORED_STAGE_OPTIONS = {
    "output_path", "per_thread_output", "materialize_output", "materialize_in_memory",
    "relax_memory_if_oom", "batched_processing", "enable_temp_directory",
    "parquet_row_group_size", "parquet_dictionary_encoding", "parquet_compression",
    "parquet_compression_level", "cpu_overcommit_ratio", "memory_overcommit_ratio",
    "engine_type", "dimension", "nested", "data_partition_column", "drop_partition_column",
    "use_parquet_writer", "hive_partitioning", "shuffle_only", "background_io_thread",
    "streaming_batch_size", "secs_checkpoint_interval", "use_duckdb_reader",
}
USED_INIT_OPTIONS = {"memory_per_task", "partitions", "max_retries", "ray_num_cpus",
                     "verify", "random_seed", "env_overrides", "fault_inject_prob",
                     "progress", "cache_budget", "task_timeout", "heartbeat_timeout",
                     "ray_connect_timeout"}
IGNORED_INIT_OPTIONS = {
    "bind_numa_node", "platform", "_remove_output_root", "memory_allocator",
    "enforce_memory_limit", "max_usable_cpu_count", "max_usable_gpu_count",
    "max_usable_memory_size", "secs_wq_poll_interval", "secs_executor_probe_interval",
    "max_num_missed_probes", "enable_profiling", "enable_diagnostic_metrics",
    "remove_empty_parquet", "skip_task_with_empty_input", "shared_log_root",
    "console_log_level", "file_log_level", "disable_log_rotation", "output_path",
    "bind_socket_port", "fail_fast", "num_cpus", "num_gpus", "memory",
}
_logged: set[str] = set()


def _log_ignored(what: str, names) -> None:
    for name in sorted(names):
        if name not in _logged:
            _logged.add(name)
            logger.info("smallpond 0.15 option %r of %s is accepted and ignored: this engine "
                        "decides it itself", name, what)


def stage_options(kwargs: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Check a stage's 0.15 keywords; return the ones this engine uses."""
    unknown = set(kwargs) - USED_STAGE_OPTIONS - IGNORED_STAGE_OPTIONS
    if unknown:
        raise PlanError(f"{what}: unknown option(s) {sorted(unknown)}; options are "
                        f"{sorted(USED_STAGE_OPTIONS)} (and smallpond 0.15's per-stage "
                        "options, which are accepted)")
    for name in RESOURCE_OPTIONS:
        value = kwargs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise PlanError(f"{what}: {name} must be a non-negative number, got {value!r}")
    name = kwargs.get("output_name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise PlanError(f"{what}: output_name must be a non-empty string, got {name!r}")
    _log_ignored(what, set(kwargs) & IGNORED_STAGE_OPTIONS)
    return {k: v for k, v in kwargs.items() if k in USED_STAGE_OPTIONS and v is not None}


def init_options(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Check init's extra keywords; return the ones this engine uses."""
    unknown = set(kwargs) - USED_INIT_OPTIONS - IGNORED_INIT_OPTIONS
    if unknown:
        raise PlanError(f"unknown init option(s) {sorted(unknown)}")
    _log_ignored("init", set(kwargs) & IGNORED_INIT_OPTIONS)
    return {k: v for k, v in kwargs.items() if k in USED_INIT_OPTIONS}
