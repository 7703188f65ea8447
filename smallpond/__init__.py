"""smallpond: lazy, partitioned DuckDB dataflow for batch jobs that outgrow one machine.

`import smallpond` loads nothing heavy: `init`, `Session` and `DataFrame` (and the
subpackages) are imported on first use, so commands and workers that need little start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallpond.dataframe import DataFrame
    from smallpond.session import Session, init

__all__ = ["init", "Session", "DataFrame", "__version__"]
__version__ = "0.1.0"

_LAZY = {"init": "smallpond.session", "Session": "smallpond.session",
         "DataFrame": "smallpond.dataframe"}
_SUBMODULES = {"bench", "cli", "config", "dataframe", "errors", "graysort", "io", "kernels",
               "logical", "planner", "progress", "runners", "session", "sql"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"smallpond.{name}")
    else:
        raise AttributeError(f"module 'smallpond' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
