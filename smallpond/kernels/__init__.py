"""What one task does: pure functions of (params, inputs, context) -> output files.

Built-in kernels have plain names; an extension's kernels are named `<package>.<kernel>` and
live in `smallpond.<package>.kernels`, imported on first use (also inside workers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["get_kernel", "register_kernel", "load_builtin_kernels"]

_KERNELS: dict[str, Callable] = {}
_BUILTIN_LOADED = False


def register_kernel(name: str, function: Callable) -> None:
    _KERNELS[name] = function


def get_kernel(name: str) -> Callable:
    if name not in _KERNELS:
        if "." in name:
            importlib.import_module(f"smallpond.{name.split('.', 1)[0]}.kernels")
        else:
            load_builtin_kernels()
    try:
        return _KERNELS[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; known: {sorted(_KERNELS)}") from None


def load_builtin_kernels() -> None:
    """Import and register the built-in kernels (workers preload them before forking)."""
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    from smallpond.kernels.python_map import run_python
    from smallpond.kernels.sample import run_boundaries, run_sample
    from smallpond.kernels.shuffle import run_shuffle
    from smallpond.kernels.sql import run_sql

    register_kernel("sql", run_sql)
    register_kernel("python", run_python)
    register_kernel("shuffle", run_shuffle)
    register_kernel("sample", run_sample)
    register_kernel("boundaries", run_boundaries)
    _BUILTIN_LOADED = True
