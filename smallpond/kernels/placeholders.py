"""`{0}`, `{1}` placeholders in partition SQL, found by a tokenizer that skips quoted text.

Unlike ``str.format`` this never evaluates anything: only ``{<digits>}`` outside string
literals, quoted identifiers and comments is a placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from smallpond.errors import SqlError

__all__ = ["split_placeholders", "substitute", "placeholder_indices"]

_TOKEN = re.compile(
    r"""
    (?P<squote>'(?:[^']|'')*'?)          # string literal
    | (?P<dquote>"(?:[^"]|"")*"?)        # quoted identifier
    | (?P<line>--[^\n]*)                 # line comment
    | (?P<block>/\*.*?(?:\*/|$))         # block comment
    | (?P<ph>\{\s*(?P<index>\d+)\s*\})   # placeholder
    """,
    re.VERBOSE | re.DOTALL,
)


def split_placeholders(sql: str) -> list[str | int]:
    """Split SQL into literal text pieces and integer placeholder indices."""
    pieces: list[str | int] = []
    last = 0
    for match in _TOKEN.finditer(sql):
        if match.group("ph") is None:
            continue
        if match.start() > last:
            pieces.append(sql[last:match.start()])
        pieces.append(int(match.group("index")))
        last = match.end()
    if last < len(sql):
        pieces.append(sql[last:])
    return pieces


def placeholder_indices(sql: str) -> set[int]:
    return {p for p in split_placeholders(sql) if isinstance(p, int)}


def substitute(sql: str, replace: Callable[[int], str], num_inputs: int) -> str:
    """Replace each placeholder with `replace(index)`; an index without an input is an error."""
    out = []
    for piece in split_placeholders(sql):
        if isinstance(piece, int):
            if piece >= num_inputs:
                raise SqlError(f"placeholder {{{piece}}} has no input (the query has "
                               f"{num_inputs} input(s)): {sql}", sql=sql)
            out.append(replace(piece))
        else:
            out.append(piece)
    return "".join(out)
