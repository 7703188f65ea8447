"""smallpond: lazy, partitioned DuckDB dataflow for batch jobs that outgrow one machine."""

from smallpond.dataframe import DataFrame
from smallpond.session import Session, init

__all__ = ["init", "Session", "DataFrame", "__version__"]
__version__ = "0.1.0"
