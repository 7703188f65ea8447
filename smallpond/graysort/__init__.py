"""GraySort: gensort-compatible generation, valsort-compatible validation, and the sort job.

`smallpond.graysort.run(output, records=N | input=PATH, partitions=..., runner=...)` sorts and
validates; see smallpond/graysort/job.py.
"""

from __future__ import annotations

__all__ = ["run", "GraySortResult"]


def __getattr__(name: str):
    # imported lazily: workers load the kernels of this package without the job's imports
    if name in __all__:
        from smallpond.graysort import job

        return getattr(job, name)
    raise AttributeError(name)
