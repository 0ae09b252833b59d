"""Text → syntax tree (`parse`). The only error that leaves `parse` is AmmlSyntaxError."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from tsloom.amml import nodes as n
from tsloom.amml.errors import AmmlError, AmmlSyntaxError
from tsloom.amml.grammar import GRAMMAR, TERMINAL_NAMES

MAX_SOURCE_CHARS = 1_000_000
MAX_BRACKET_DEPTH = 200  # a cheap pre-check; the compiler enforces the real nesting limit

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


class _BracketNewlines:
    """Post-lexer: newlines inside ( ) and [ ] are not statement separators."""

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


@functools.cache
def _lark() -> Lark:
    return Lark(
        GRAMMAR,
        parser="lalr",
        lexer="contextual",
        postlex=_BracketNewlines(),
        propagate_positions=True,
        maybe_placeholders=True,
        start=["start", "callback"],
    )


def _unescape(raw: str, tok: Token, source: str) -> str:
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise AmmlSyntaxError(
                    f"unknown escape `\\{nxt}` in a string",
                    hint="use \\\\ for a backslash; known escapes: \\n \\t \\r \\\" \\'",
                    source=source,
                    line=tok.line,
                    column=(tok.column or 1) + i + 1,
                    width=2,
                )
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _number(text: str) -> int | float:
    if len(text) > 400:  # absurd; the compiler rejects it as a huge literal
        return math.inf
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _tokpos(tok: Token) -> dict:
    return {"line": tok.line, "column": tok.column, "pos": tok.start_pos, "end": tok.end_pos}


def _metapos(meta) -> dict:
    return {"line": meta.line, "column": meta.column, "pos": meta.start_pos, "end": meta.end_pos}


@v_args(meta=True)
class _ToNodes(Transformer_NonRecursive):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    # atoms
    def number(self, meta, c):
        return n.Num(value=_number(str(c[0])), text=str(c[0]), **_tokpos(c[0]))

    def string(self, meta, c):
        return n.Str(value=_unescape(str(c[0]), c[0], self.source), **_tokpos(c[0]))

    def true(self, meta, c):
        return n.Bool(value=True, **_tokpos(c[0]))

    def false(self, meta, c):
        return n.Bool(value=False, **_tokpos(c[0]))

    def null(self, meta, c):
        return n.Null(**_tokpos(c[0]))

    def name(self, meta, c):
        return n.Name(id=str(c[0]), **_tokpos(c[0]))

    def paren(self, meta, c):
        return c[1]

    def list(self, meta, c):
        items = [x for x in c[1:-1] if isinstance(x, n.Expr)]
        return n.ListLit(items=items, **_metapos(meta))

    def call(self, meta, c):
        args = [x for x in c[2:-1] if isinstance(x, n.Expr)]
        return n.Call(func=str(c[0]), args=args, func_end=c[0].end_pos, **_metapos(meta))

    def attr(self, meta, c):
        return n.Attr(obj=c[0], name=str(c[2]), **_metapos(meta))

    def index(self, meta, c):
        return n.Index(obj=c[0], index=c[2], **_metapos(meta))

    def unary(self, meta, c):
        return n.Unary(op=str(c[0]), operand=c[1], **_metapos(meta))

    def binop(self, meta, c):
        return n.Binary(op=str(c[1]), left=c[0], right=c[2], **_metapos(meta))

    boolop = binop

    # workflow
    def arg(self, meta, c):
        value = c[2]
        text = self.source[value.pos : value.end]
        return n.Arg(key=str(c[0]), value=value, text=text, **_metapos(meta))

    def positional(self, meta, c):
        return n.Positional(name=str(c[0]), **_tokpos(c[0]))

    def stage(self, meta, c):
        comp = n.Component(name=str(c[0]), **_tokpos(c[0]))
        for item in c[1:]:
            if isinstance(item, n.Arg):
                comp.args.append(item)
            elif isinstance(item, n.Positional):
                comp.positionals.append(item)
        comp.end = meta.end_pos
        return comp

    def pipeline(self, meta, c):
        stages = [x for x in c if isinstance(x, n.Component)]
        return n.Statement(stages=stages, **_metapos(meta))

    def assignment(self, meta, c):
        st = c[2]
        st.target = str(c[0])
        st.target_line, st.target_column = c[0].line, c[0].column
        st.line, st.column, st.pos = c[0].line, c[0].column, c[0].start_pos
        return st

    def bare(self, meta, c):
        return c[0]

    def callback(self, meta, c):
        return next(x for x in c if isinstance(x, n.Expr))

    def start(self, meta, c):
        return [x for x in c if isinstance(x, n.Statement)]


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of the program"
    if tok.type in ("_NL",):
        return "end of the line"
    text = str(tok).strip() or str(tok)
    if tok.type == "PIPE":
        text = "|"
    if len(text) > 30:
        text = text[:27] + "…"
    return f"`{text}`"


def _expected(names: set[str]) -> str:
    human = sorted({TERMINAL_NAMES.get(x, x) for x in names if not x.startswith("__")})
    if not human:
        return ""
    if len(human) > 8:
        human = [*human[:8], "…"]
    return "expected " + ", ".join(human)


def _end_position(source: str) -> tuple[int, int]:
    lines = source.split("\n")
    return len(lines), len(lines[-1]) + 1


def _syntax_error(e: UnexpectedInput, source: str) -> AmmlSyntaxError:
    hint = None
    if isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else "?"
        hints = {
            "&": "use `and` to combine conditions",
            "!": "use `not` to negate, `!=` to compare",
            "%": "the modulo operator is not supported",
            "=": "to compare, use `==`",
            ":": 'quote values that contain `:`, e.g. model="ett:0.1"',
            "'": "a string must end on the line where it starts",
            '"': "a string must end on the line where it starts",
        }
        hint = hints.get(ch)
        if hint is None and e.allowed:
            hint = _expected(set(e.allowed))
        return AmmlSyntaxError(
            f"unexpected character `{ch}`",
            hint=hint,
            source=source,
            line=e.line,
            column=e.column,
        )
    if isinstance(e, UnexpectedToken):
        tok = e.token
        line, column = tok.line, tok.column
        if tok.type == "$END" or not line or line < 1:
            line, column = _end_position(source)
        width = max(1, len(str(tok).strip())) if tok.type not in ("$END", "_NL", "PIPE") else 1
        if tok.type == "PIPE":
            # point at the `|` itself, not at the newlines the token absorbed
            offset = str(tok).find("|")
            before = str(tok)[:offset]
            if "\n" in before:
                line = tok.line + before.count("\n")
                column = len(before) - before.rfind("\n")
            else:
                column = (tok.column or 1) + offset
        expected = set(e.expected or ())
        if tok.type == "EQ" and "COMP_OP" in expected:
            hint = "to compare, use `==`; an unquoted value ends at `,`, `|` or the next `name=`"
        elif tok.type == "COMP_OP" and "AND" in expected:
            hint = "comparisons do not chain; write `a < b and b < c`"
        elif tok.type == "PIPE" and (
            ("NAME" in expected and "LPAR" in expected)
            or source[: tok.start_pos + str(tok).find("|")].rstrip().endswith("|")
        ):
            hint = "use `or` to combine conditions; a single `|` joins components"
        elif tok.type == "EQ" and expected == {"NAME"}:
            hint = "an argument is written key=value after a component name"
        else:
            hint = _expected(expected) or None
        return AmmlSyntaxError(
            f"unexpected {_describe(tok)}",
            hint=hint,
            source=source,
            line=line,
            column=column,
            width=width,
        )
    if isinstance(e, UnexpectedEOF):
        line, column = _end_position(source)
        return AmmlSyntaxError(
            "unexpected end of the program",
            hint=_expected(set(e.expected or ())) or None,
            source=source,
            line=line,
            column=column,
        )
    return AmmlSyntaxError(str(e))


def _check_brackets(source: str) -> None:
    depth = 0
    for i, ch in enumerate(source):
        if ch in "([":
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                line = source.count("\n", 0, i) + 1
                column = i - (source.rfind("\n", 0, i) + 1) + 1
                raise AmmlSyntaxError(
                    f"brackets nested more than {MAX_BRACKET_DEPTH} deep",
                    hint="simplify the expression",
                    source=source,
                    line=line,
                    column=column,
                )
        elif ch in ")]":
            depth = max(0, depth - 1)


def parse(text: str) -> n.Program:
    """Parse AMML source text into a `Program`. Raises only `AmmlSyntaxError`."""
    source, statements = _parse(text, "start")
    return n.Program(statements=statements, source=source)


def parse_expression(text: str) -> tuple[str, n.Expr]:
    """Parse one callback script (an expression); returns (normalised source, tree)."""
    return _parse(text, "callback")


def _parse(text: str, start: str):
    if not isinstance(text, str):
        raise AmmlSyntaxError(f"AMML source is text, not {type(text).__name__}")
    if len(text) > MAX_SOURCE_CHARS:
        raise AmmlSyntaxError(
            f"program too large ({len(text)} characters, at most {MAX_SOURCE_CHARS})"
        )
    source = text.replace("\r\n", "\n")
    try:
        _check_brackets(source)
        tree = _lark().parse(source, start=start)
        result = _ToNodes(source).transform(tree)
    except AmmlSyntaxError:
        raise
    except VisitError as e:
        if isinstance(e.orig_exc, AmmlSyntaxError):
            raise e.orig_exc from None
        raise AmmlSyntaxError(f"cannot read the program: {e.orig_exc}") from None
    except UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    except (LarkError, AmmlError, RecursionError, ValueError) as e:
        raise AmmlSyntaxError(f"cannot read the program: {e}") from None
    return source, result
