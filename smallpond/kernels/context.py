"""What a kernel gets besides its inputs: where to write, spill budget and threads."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskContext"]


@dataclass(frozen=True)
class TaskContext:
    """Per-attempt settings of one task run."""

    output_dir: str
    spill_dir: str
    memory_limit: int
    threads: int
    stage: str = ""
    partition: int = 0
