"""GraySort: gensort-compatible generation, valsort-compatible validation, and the sort job."""

__all__: list[str] = []
