"""SQL text -> statements with their lines, `${name}` parameters bound as literals, and errors
that name the statement and point at the offending SQL."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from smallpond.errors import SqlError

# sqlglot warns on stderr when it parses a statement as an opaque command (`RESET x`,
# `EXPLAIN ...`); smallpond decides what those statements mean and says so itself
logging.getLogger("sqlglot").setLevel(logging.ERROR)

__all__ = ["Statement", "split_statements", "parse_statement", "bind_parameters",
           "sql_error", "literal_for"]

_PARAM = re.compile(
    r"""(?P<squote>'(?:[^']|'')*'?) | (?P<dquote>"(?:[^"]|"")*"?) | (?P<line>--[^\n]*)
    | (?P<block>/\*.*?(?:\*/|$)) | (?P<param>\$\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\})""",
    re.VERBOSE | re.DOTALL)
PARAM_PREFIX = "__sp_param_"


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL text: its text, 1-based index and first line."""

    text: str
    index: int
    line: int
    source: str = "<sql>"

    def where(self) -> str:
        return f"{self.source}: statement {self.index} (line {self.line})"


def _mark_parameters(text: str) -> str:
    """`${name}` outside quotes and comments -> `$__sp_param_name`, a DuckDB-style named
    parameter that the parser keeps as a node (bound to a literal after parsing)."""
    def swap(match: re.Match) -> str:
        if match.group("param") is None:
            return match.group(0)
        return f"${PARAM_PREFIX}{match.group('name')}"

    return _PARAM.sub(swap, text)


def sql_error(message: str, statement: Statement | None, line: int | None = None,
              column: int | None = None, sql: str | None = None) -> SqlError:
    """A SqlError naming the statement, with the offending line and a caret when known."""
    where = ""
    absolute = None
    if statement is not None:
        absolute = statement.line + (line - 1 if line else 0)
        where = f"{statement.source}: statement {statement.index}, line {absolute}: "
    pointer = ""
    if statement is not None and line:
        lines = statement.text.splitlines()
        if 0 < line <= len(lines):
            pointer = f"\n  {lines[line - 1]}"
            if column:
                pointer += "\n  " + " " * max(0, column - 1) + "^"
    return SqlError(f"{where}{message}{pointer}", sql=sql or (statement.text if statement
                                                              else None),
                    statement=statement.index if statement else None, line=absolute)


def split_statements(text: str, source: str = "<sql>") -> list[Statement]:
    """Statements separated by `;` (outside quotes and comments), with their first line."""
    marked = _mark_parameters(text)
    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(marked)
    except TokenError as error:
        raise SqlError(f"{source}: cannot read the SQL: {error}", sql=text) from error
    statements: list[Statement] = []
    start, first = 0, None
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if first is not None:
                statements.append(_statement(marked, start, token.start, len(statements) + 1,
                                             first, source))
            start, first = token.end + 1, None
        elif first is None:
            first = token
            start = token.start
    if first is not None:
        statements.append(_statement(marked, start, len(marked), len(statements) + 1, first,
                                     source))
    return statements


def _statement(text: str, start: int, end: int, index: int, first, source: str) -> Statement:
    # lines from offsets: the tokenizer's own line count drifts after `$` parameters
    return Statement(text[start:end].strip(), index, text.count("\n", 0, first.start) + 1,
                     source)


def parse_statement(statement: Statement) -> exp.Expression:
    """The sqlglot tree of one statement; a ParseError becomes a SqlError that points at it."""
    try:
        trees = sqlglot.parse(statement.text, read="duckdb")
    except ParseError as error:
        info = error.errors[0] if error.errors else {}
        message = info.get("description") or str(error).splitlines()[0]
        message = re.sub(r"<Token token_type: [^,]*, text: (.*?), line: .*?>", r"'\1'", message)
        raise sql_error(f"syntax error: {message}", statement, info.get("line"),
                        info.get("col")) from error
    except TokenError as error:
        raise sql_error(f"cannot read the SQL: {error}", statement) from error
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise sql_error("expected exactly one statement", statement)
    return trees[0]


def literal_for(value: object) -> exp.Expression:
    """A SQL literal: numbers stay numbers, everything else is one string."""
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(value)
    text = str(value)
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return exp.Literal.number(text)
    return exp.Literal.string(text)


def bind_parameters(tree: exp.Expression, params: dict[str, object],
                    statement: Statement | None = None) -> exp.Expression:
    """Replace `${name}` parameter nodes by literals of their values."""
    missing = []

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            name = str(node.this.this if isinstance(node.this, exp.Expression) else node.this)
            if name.startswith(PARAM_PREFIX):
                key = name[len(PARAM_PREFIX):]
                if key not in params:
                    missing.append(key)
                    return node
                return literal_for(params[key])
        return node

    bound = tree.transform(swap, copy=True)
    if missing:
        raise sql_error(f"parameter ${{{missing[0]}}} has no value (pass -p {missing[0]}=...)",
                        statement)
    for node in bound.find_all(exp.Placeholder, exp.Parameter):
        raise sql_error(f"unexpected parameter {node.sql(dialect='duckdb')}; use ${{name}} "
                        "with a value", statement)
    return bound
