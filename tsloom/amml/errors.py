"""AMML errors: each one says where (line, column, a caret under the text) and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from tsloom.errors import TsloomError


class AmmlError(TsloomError):
    """Base class of the workflow language's errors.

    `line` and `column` are 1-based (None when the error has no place in the source, e.g.
    bytecode loaded from JSON); `snippet` is the offending source line with a caret under it.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
        width: int = 1,
    ) -> None:
        self.reason = message
        self.line = line
        self.column = column
        self.snippet = caret_snippet(source, line, column, width) if source is not None else ""
        where = f"line {line}, column {column}: " if line is not None and column else ""
        full = where + message
        if self.snippet:
            full += "\n" + self.snippet
        super().__init__(full, hint=hint)


class AmmlSyntaxError(AmmlError):
    """Text that is not an AMML program (the parser's only error)."""


class AmmlCompileError(AmmlError):
    """A well-formed program that cannot be compiled: unknown names, bad arguments, limits."""


class AmmlRuntimeError(AmmlError):
    """A callback script that fails on a record (e.g. a column holding text)."""


def caret_snippet(source: str | None, line: int | None, column: int | None, width: int = 1) -> str:
    """The source line `line` and a caret line under `column` (both 1-based)."""
    if source is None or not line or not column:
        return ""
    lines = source.splitlines() or [""]
    text = "" if line > len(lines) else lines[line - 1]
    text = text.replace("\t", " ")
    if len(text) > 200:  # keep huge lines readable: a window around the column
        start = max(0, column - 80)
        text = ("…" if start else "") + text[start : start + 160]
        column = column - start + (1 if start else 0)
    width = max(1, min(width, max(1, len(text) - column + 1)))
    return f"    {text}\n    {' ' * (column - 1)}{'^' * width}"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest choice to `word`, or None when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    return None
