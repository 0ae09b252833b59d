"""The AMML syntax tree: a program is statements; a statement is a pipeline of components.

Every node keeps its place in the source (1-based `line`/`column`, 0-based `pos`/`end` offsets)
so that the compiler can point at it. Expression nodes are plain data; walking them is done
iteratively by the compiler (after a depth check), never by recursion on untrusted input.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Node:
    line: int
    column: int
    pos: int
    end: int


# --- expressions (argument values and callback scripts) -----------------------------------


@dataclass(eq=False)
class Expr(Node):
    """Any expression: an argument value or a callback script."""


@dataclass(eq=False)
class Num(Expr):
    value: int | float
    text: str


@dataclass(eq=False)
class Str(Expr):
    value: str


@dataclass(eq=False)
class Bool(Expr):
    value: bool


@dataclass(eq=False)
class Null(Expr):
    """The literal `null`."""


@dataclass(eq=False)
class Name(Expr):
    id: str


@dataclass(eq=False)
class Unary(Expr):
    op: str  # "-", "+", "not"
    operand: Expr


@dataclass(eq=False)
class Binary(Expr):
    op: str  # + - * /  == != < <= > >=  and or
    left: Expr
    right: Expr


@dataclass(eq=False)
class Call(Expr):
    func: str
    args: list[Expr]
    func_end: int = 0


@dataclass(eq=False)
class ListLit(Expr):
    items: list[Expr]


@dataclass(eq=False)
class Attr(Expr):
    """`x.y`: parsed only to be rejected with a clear message."""

    obj: Expr
    name: str


@dataclass(eq=False)
class Index(Expr):
    """`x[i]`: parsed only to be rejected with a clear message."""

    obj: Expr
    index: Expr


def children(e: Expr) -> list[Expr]:
    """The direct sub-expressions of `e`, left to right."""
    if isinstance(e, Unary):
        return [e.operand]
    if isinstance(e, Binary):
        return [e.left, e.right]
    if isinstance(e, Call):
        return list(e.args)
    if isinstance(e, ListLit):
        return list(e.items)
    if isinstance(e, Attr):
        return [e.obj]
    if isinstance(e, Index):
        return [e.obj, e.index]
    return []


def depth(e: Expr) -> int:
    """Nesting depth of an expression, computed without recursion."""
    best = 0
    stack = [(e, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in children(node))
    return best


# --- workflow ------------------------------------------------------------------------------


@dataclass(eq=False)
class Arg(Node):
    key: str
    value: Expr
    text: str  # the value's source text


@dataclass(eq=False)
class Positional(Node):
    name: str


@dataclass(eq=False)
class Component(Node):
    name: str
    positionals: list[Positional] = field(default_factory=list)
    args: list[Arg] = field(default_factory=list)


@dataclass(eq=False)
class Statement(Node):
    """`[target =] stage | stage | …`"""

    stages: list[Component]
    target: str | None = None
    target_line: int = 0
    target_column: int = 0


@dataclass(eq=False)
class Program:
    statements: list[Statement]
    source: str
