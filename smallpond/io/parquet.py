"""Reading Parquet slices with pyarrow, with errors that name the file at fault."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from smallpond.errors import InputError, SchemaMismatchError
from smallpond.io.files import FileSlice, filesystem_for

__all__ = [
    "open_parquet",
    "read_schema",
    "check_same_schema",
    "iter_slice_batches",
    "read_slices",
    "count_rows",
]


def open_parquet(path: str) -> pq.ParquetFile:
    """Open a Parquet file; a corrupt or missing file raises InputError naming it."""
    remote = "://" in path and not path.startswith("file://")
    try:
        fs, inner = filesystem_for(path)
        return pq.ParquetFile(fs.open(inner, "rb"))
    except FileNotFoundError:
        raise InputError(f"input path {path!r} does not exist", path=path) from None
    except IsADirectoryError:
        raise InputError(f"input path {path!r} is a directory, not a file", path=path) from None
    except PermissionError as error:
        raise InputError(f"permission denied reading {path!r}: {error}", path=path) from error
    except pa.ArrowException as error:
        raise InputError(f"{path!r} is not a readable Parquet file: {error}", path=path) from error
    except OSError as error:
        if remote:  # the store failed (503s past the client's retries, timeouts, ...)
            raise InputError(f"cannot read {path!r}: {type(error).__name__}: {error}",
                             path=path) from error
        raise InputError(f"{path!r} is not a readable Parquet file: {error}", path=path) from error


def read_schema(path: str) -> pa.Schema:
    return open_parquet(path).schema_arrow


def check_same_schema(paths: Sequence[str], union_by_name: bool = False) -> pa.Schema | None:
    """Check that all files share one schema (names and types, whatever their nullability);
    return it.

    With union_by_name, columns may differ by presence but a shared column must share its type.
    """
    first: pa.Schema | None = None
    first_path = None
    fields: dict[str, pa.DataType] = {}
    for path in paths:
        schema = read_schema(path)
        _check_unique_names(schema, path)
        if first is None:
            first, first_path = schema, path
            fields = {f.name: f.type for f in schema}
            continue
        if union_by_name:
            for field in schema:
                known = fields.get(field.name)
                if known is not None and _nullable(known) != _nullable(field.type):
                    raise SchemaMismatchError(
                        f"column {field.name!r} is {field.type} in {path!r} but {known} in "
                        f"{first_path!r}", path=path)
                fields.setdefault(field.name, field.type)
        elif not _same_types(schema, first):
            raise SchemaMismatchError(
                f"schema of {path!r} ({_describe(schema)}) differs from {first_path!r} "
                f"({_describe(first)}); pass union_by_name=True to unify by column name",
                path=path)
    if union_by_name and first is not None:
        return pa.schema(list(fields.items()))
    return first


def _nullable(type_: pa.DataType) -> pa.DataType:
    """The type with every nested field nullable: writers mark columns without nulls as
    required (DuckDB does so per file), which says nothing about the data's type."""
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(f.name, _nullable(f.type)) for f in type_])
    if pa.types.is_map(type_):
        return pa.map_(_nullable(type_.key_type), _nullable(type_.item_type))
    if pa.types.is_large_list(type_):
        return pa.large_list(_nullable(type_.value_type))
    if pa.types.is_fixed_size_list(type_):
        return pa.list_(_nullable(type_.value_type), type_.list_size)
    if pa.types.is_list(type_):
        return pa.list_(_nullable(type_.value_type))
    return type_


def _same_types(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(
        _nullable(x.type) == _nullable(y.type) for x, y in zip(a, b))


def _check_unique_names(schema: pa.Schema, path: str) -> None:
    """DuckDB renames a repeated column name (a, a_1) and reads on: a query asking for `a`
    gets one of them silently. Such a file is refused, naming the column."""
    seen: set[str] = set()
    for name in schema.names:
        if name in seen:
            raise SchemaMismatchError(f"{path!r} has more than one column named {name!r}",
                                      path=path)
        seen.add(name)


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def iter_slice_batches(slices: Sequence[FileSlice], schema: pa.Schema | None = None,
                       batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
    """Stream record batches of Parquet slices in order."""
    for piece in slices:
        pf = open_parquet(piece.path)
        groups = list(range(pf.num_row_groups)) if piece.row_groups is None else list(
            piece.row_groups)
        if not groups:
            continue
        try:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups):
                yield batch if schema is None else _conform(batch, schema, piece.path)
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"failed reading {piece.path!r}: {error}", path=piece.path) from error


def _conform(batch: pa.RecordBatch, schema: pa.Schema, path: str) -> pa.RecordBatch:
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, ValueError) as error:
        raise SchemaMismatchError(f"schema of {path!r} does not match: {error}",
                                  path=path) from error


def slices_schema(slices: Sequence[FileSlice]) -> pa.Schema:
    if not slices:
        raise InputError("no input files")
    return read_schema(slices[0].path)


def read_slices(slices: Sequence[FileSlice], schema: pa.Schema | None = None) -> pa.Table:
    """Read Parquet slices into one table (an empty one with the schema when there are no rows)."""
    if schema is None:
        schema = slices_schema(slices)
    batches = list(iter_slice_batches(slices, schema))
    return pa.Table.from_batches(batches, schema=schema)


def count_rows(slices: Sequence[FileSlice]) -> int:
    total = 0
    for piece in slices:
        meta = open_parquet(piece.path).metadata
        if piece.row_groups is None:
            total += meta.num_rows
        else:
            total += sum(meta.row_group(i).num_rows for i in piece.row_groups)
    return total
