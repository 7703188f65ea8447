"""Files: fsspec paths, Parquet slices, schemas and atomic commit."""
