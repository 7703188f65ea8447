"""Placeholders in partition SQL, found by a tokenizer (never ``str.format``).

As in smallpond 0.15, `{0}`, `{1}` stand for the inputs' partitions and the named placeholders
`{__data_partition__}` (the partition index), `{rand_seed}`, `{batch_index}`, `{query_index}`,
`{cpu_limit}`, `{memory_limit}` and `{output_filename}` for values of the running task; `{{` and
`}}` are literal braces. Unlike ``str.format`` nothing is ever evaluated (no attribute or item
access), and placeholders inside string literals, quoted identifiers and comments stay text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from smallpond.errors import SqlError

__all__ = [
    "split_placeholders",
    "substitute",
    "placeholder_indices",
    "named_placeholders",
    "NAMED",
    "PARSE_VALUES",
    "check_fragment",
    "strip_terminator",
]

NAMED = ("__data_partition__", "rand_seed", "batch_index", "query_index", "cpu_limit",
         "memory_limit", "output_filename")
# values that make a template parseable when only its shape matters (checks, schemas)
PARSE_VALUES = {name: ("x" if name == "output_filename" else 0) for name in NAMED}

_TOKEN = re.compile(
    r"""
    (?P<squote>'(?:[^']|'')*'?)              # string literal
    | (?P<dquote>"(?:[^"]|"")*"?)            # quoted identifier
    | (?P<line>--[^\n]*)                     # line comment
    | (?P<block>/\*.*?(?:\*/|$))             # block comment
    | (?P<escape>\{\{|\}\})                  # a literal brace
    | (?P<ph>\{\s*(?P<index>\d+|[A-Za-z_]\w*)\s*\})   # placeholder
    """,
    re.VERBOSE | re.DOTALL,
)


class Named(str):
    """A named placeholder's name, as a piece of split SQL."""


def split_placeholders(sql: str, unescape: bool = True) -> list[str | int | Named]:
    """Split SQL into text pieces, input indices (int) and named placeholders (Named).

    With `unescape`, `{{`/`}}` become single braces (also inside quotes, as str.format does);
    without, they stay as written (for templates that are substituted again later).
    Unknown names stay text.
    """
    pieces: list[str | int | Named] = []
    last = 0

    def text(upto: int, extra: str = "") -> None:
        chunk = sql[last:upto] + extra
        if chunk:
            if pieces and isinstance(pieces[-1], str) and not isinstance(pieces[-1], Named):
                pieces[-1] = pieces[-1] + chunk
            else:
                pieces.append(chunk)

    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind in ("squote", "dquote", "line", "block"):
            if unescape and ("{{" in match.group() or "}}" in match.group()):
                body = match.group().replace("{{", "{").replace("}}", "}")
                text(match.start(), body)
                last = match.end()
            continue
        if kind == "escape":
            text(match.start(), match.group()[0] if unescape else match.group())
            last = match.end()
            continue
        index = match.group("index")
        if index.isdigit():
            text(match.start())
            pieces.append(int(index))
        elif index in NAMED:
            text(match.start())
            pieces.append(Named(index))
        else:
            continue
        last = match.end()
    text(len(sql))
    return pieces


def placeholder_indices(sql: str) -> set[int]:
    return {p for p in split_placeholders(sql) if type(p) is int}


def named_placeholders(sql: str) -> set[str]:
    return {str(p) for p in split_placeholders(sql) if isinstance(p, Named)}


def substitute(sql: str, replace: Callable[[int], str], num_inputs: int,
               values: Mapping[str, object] | None = None, final: bool = True) -> str:
    """Replace each input placeholder with `replace(index)` and named ones with `values`.

    `final=False` keeps brace escapes and named placeholders without a value as they are
    (the result is a template again); `final=True` produces runnable SQL. An input index
    without an input is an error.
    """
    out = []
    for piece in split_placeholders(sql, unescape=final):
        if type(piece) is int:
            if piece >= num_inputs:
                raise SqlError(f"placeholder {{{piece}}} has no input (the query has "
                               f"{num_inputs} input(s)): {sql}", sql=sql)
            out.append(replace(piece))
        elif isinstance(piece, Named):
            if values is not None and str(piece) in values:
                out.append(str(values[str(piece)]))
            elif final:
                raise SqlError(f"placeholder {{{piece}}} has no value here: {sql}", sql=sql)
            else:
                out.append(f"{{{piece}}}")
        else:
            out.append(piece)
    return "".join(out)


def check_fragment(text: str, what: str) -> str:
    """A SQL fragment (a predicate, a select list, a sort key) that cannot leave the query it
    is placed in: parentheses balance and never close one it did not open, and no `;` outside
    quotes and comments. Returns the text; raises SqlError naming `what`."""
    depth = 0
    position = 0
    for match in re.finditer(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*.*?(?:\*/|$)"
                             r"|[();]", text, re.DOTALL):
        token = match.group()
        position = match.start()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth < 0:
                break
        elif token == ";":
            raise SqlError(f"{what} must be one SQL expression, without ';' (at character "
                           f"{position + 1}): {text}", sql=text)
    if depth != 0:
        raise SqlError(f"{what} has unbalanced parentheses (near character {position + 1}): "
                       f"{text}", sql=text)
    return text


def strip_terminator(sql: str) -> str:
    """The statement without its final `;` (comments after it stay), trimmed."""
    text = sql.strip()
    end = None
    for match in re.finditer(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*.*?(?:\*/|$)"
                             r"|;|\S", text, re.DOTALL):
        token = match.group()
        if token.startswith(("--", "/*")):
            continue
        end = match if token == ";" else None
    if end is None:
        return text
    return strip_terminator(text[:end.start()] + text[end.end():])
