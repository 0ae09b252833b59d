"""Callback scripts: a small, safe expression language compiled to a stack bytecode.

Never Python `eval`: the text is parsed by the AMML grammar, type-checked, and compiled to
instructions that two back ends run with the same semantics:

* `Callback.to_polars()` lowers the bytecode to one polars expression (vectorised, whole batch);
* `Callback.evaluate(record)` is the reference: a stack machine over one dict.

Semantics (both back ends follow them; the property tests check it):

* Values are numbers (float64), booleans, or null. A column read with `LOAD_VALUE` is a number:
  integers and booleans become floats, **NaN is null**. Text is not supported.
* Arithmetic (`+ - * /`, unary `-`) on null gives null; division by zero gives null; any result
  that would be NaN (`inf - inf`) is null. Overflow gives ±inf.
* Comparisons with a null operand give null. `a < b < c` does not parse (no chaining).
* `and`/`or`/`not` use three-valued (Kleene) logic: `false and null` is false, `true or null`
  is true, otherwise null propagates. A number used as a condition is true when non-zero.
* `is_null(x)` is true for null (and so for NaN read from a column); never null itself.
* `if(c, a, b)`: `a` where `c` is true, otherwise `b` (null `c` counts as false).
* `abs exp sqrt log round(x[, digits]) min(…) max(…) clip(x, lo, hi)`: `log` of x ≤ 0 and
  `sqrt` of x < 0 are null; `round` rounds half to even; `min`/`max` ignore nulls (null only if
  all are); `clip` is `lo` where x < lo, else `hi` where x > hi, else x (a null bound is ignored).
* Where booleans and numbers meet (`(a > 1) + 1`, `if(c, 1, a > 2)`), booleans count as 1/0.

Limits, checked at compile time: nesting depth `MAX_DEPTH`, `MAX_INSTRUCTIONS` instructions,
numeric literals of at most `MAX_LITERAL_CHARS` characters and finite; no dunder names, no
attribute access or indexing, no Python keywords or built-ins such as `import` or `eval`.
"""

from __future__ import annotations

import keyword
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsloom.amml import nodes as n
from tsloom.amml.errors import AmmlCompileError, AmmlRuntimeError, AmmlSyntaxError, did_you_mean

MAX_DEPTH = 64
MAX_INSTRUCTIONS = 512
MAX_LITERAL_CHARS = 40
MAX_NAME_CHARS = 128

NUM, BOOL, NULL = "num", "bool", "null"

# Opcodes of callback scripts (workflow opcodes live in bytecode.py).
LOAD_CONST = "LOAD_CONST"  # (index) push consts[index]
LOAD_VALUE = "LOAD_VALUE"  # (column) push the record's value as a number (NaN → null)
TO_NUM = "TO_NUM"  # bool/null → number
TO_BOOL = "TO_BOOL"  # number/null → bool (non-zero is true)
ADD, SUB, MUL, DIV, NEG = "ADD", "SUB", "MUL", "DIV", "NEG"
CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE = (
    "CMP_EQ",
    "CMP_NE",
    "CMP_LT",
    "CMP_LE",
    "CMP_GT",
    "CMP_GE",
)
AND, OR, NOT = "AND", "OR", "NOT"
IS_NULL = "IS_NULL"
CALL = "CALL"  # (function, nargs)
ASSIGN = "ASSIGN"  # (target) the result; always the last instruction

ARITH = {"+": ADD, "-": SUB, "*": MUL, "/": DIV}
COMPARE = {"==": CMP_EQ, "!=": CMP_NE, "<": CMP_LT, "<=": CMP_LE, ">": CMP_GT, ">=": CMP_GE}
BOOLOPS = {"and": AND, "or": OR}
CALLBACK_OPCODES = (
    LOAD_CONST,
    LOAD_VALUE,
    TO_NUM,
    TO_BOOL,
    ADD,
    SUB,
    MUL,
    DIV,
    NEG,
    *COMPARE.values(),
    AND,
    OR,
    NOT,
    IS_NULL,
    CALL,
    ASSIGN,
)

# name: (min args, max args)
BUILTINS: dict[str, tuple[int, int]] = {
    "abs": (1, 1),
    "exp": (1, 1),
    "log": (1, 1),
    "sqrt": (1, 1),
    "round": (1, 2),
    "min": (1, 16),
    "max": (1, 16),
    "clip": (3, 3),
    "if": (3, 3),
    "is_null": (1, 1),
}

FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "dir",
        "breakpoint",
        "input",
        "type",
        "object",
        *keyword.kwlist,
    }
)


def _const_type(v: Any) -> str:
    if v is None:
        return NULL
    if isinstance(v, bool):
        return BOOL
    return NUM


@dataclass(frozen=True)
class Callback:
    """A compiled callback script. `code` is a tuple of instructions `(opcode, *operands)`."""

    source: str
    consts: tuple[Any, ...]
    code: tuple[tuple, ...]
    result_type: str = NUM
    line: int | None = None
    column: int | None = None
    names: tuple[str, ...] = field(default=())

    @property
    def target(self) -> str:
        return self.code[-1][1]

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "consts": list(self.consts),
            "code": [list(i) for i in self.code],
            "line": self.line,
            "column": self.column,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Callback:
        """Load (and re-verify: the JSON may come from anywhere) a callback."""
        try:
            consts = tuple(data["consts"])
            code = tuple(tuple(i) for i in data["code"])
            source = str(data.get("source", ""))
            line, column = data.get("line"), data.get("column")
        except (KeyError, TypeError, ValueError) as e:
            raise AmmlCompileError(f"invalid callback bytecode: {e}") from None
        return make_callback(source, consts, code, line=line, column=column)

    # --- back ends -----------------------------------------------------------------------

    def to_polars(self):
        """This callback as one polars expression, aliased to its target."""
        return _lower(self)

    def evaluate(self, record: Mapping[str, Any]) -> float | bool | None:
        """Run the callback on one record (a dict of column → value): the reference."""
        return _interpret(self, record)

    def listing(self, indent: str = "") -> str:
        lines = [f"{indent}CONST_DEF_START"]
        for i, c in enumerate(self.consts):
            lines.append(f"{indent}    {i:<4} {_show(c)}")
        lines.append(f"{indent}CONST_DEF_END")
        lines.append(f"{indent}INSTRUCTION_START")
        for i, ins in enumerate(self.code):
            lines.append(f"{indent}    {i:<4} {format_instruction(ins, self.consts)}")
        return "\n".join(lines)


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v)


def format_instruction(ins: Sequence, consts: Sequence | None = None) -> str:
    op, *args = ins
    text = op.ljust(18) + " ".join(str(a) for a in args)
    if op == LOAD_CONST and consts is not None and args and 0 <= args[0] < len(consts):
        text += f"  ({_show(consts[args[0]])})"
    return text.rstrip()


# --- verification: a static simulation of the stack ---------------------------------------


def _bad(msg: str) -> AmmlCompileError:
    return AmmlCompileError(f"invalid callback bytecode: {msg}")


def verify(consts: Sequence, code: Sequence[Sequence]) -> tuple[str, tuple[str, ...]]:
    """Check that `code` is well formed; return (result type, column names read)."""
    if not code:
        raise _bad("no instructions")
    if len(code) > MAX_INSTRUCTIONS:
        raise AmmlCompileError(
            f"callback script too long ({len(code)} instructions, at most {MAX_INSTRUCTIONS})",
            hint="split it over several `assign` arguments",
        )
    for c in consts:
        if c is not None and not isinstance(c, bool | int | float):
            raise _bad(f"constant {c!r} is not a number, boolean or null")
        if isinstance(c, float) and not math.isfinite(c):
            raise _bad("non-finite constant")
    stack: list[str] = []
    names: list[str] = []

    def pop(*allowed: str) -> str:
        if not stack:
            raise _bad("stack underflow")
        t = stack.pop()
        if allowed and t not in allowed:
            raise _bad(f"operand of type {t}, expected {'/'.join(allowed)}")
        return t

    for pc, ins in enumerate(code):
        if not isinstance(ins, tuple | list) or not ins or not isinstance(ins[0], str):
            raise _bad(f"instruction {pc} is malformed")
        op, *args = ins
        if op == ASSIGN:
            if pc != len(code) - 1:
                raise _bad("ASSIGN must be the last instruction")
            if len(args) != 1 or not isinstance(args[0], str):
                raise _bad("ASSIGN takes a target name")
            result = pop()
            if stack:
                raise _bad("values left on the stack")
            return result, tuple(dict.fromkeys(names))
        if op == LOAD_CONST:
            if len(args) != 1 or type(args[0]) is not int or not 0 <= args[0] < len(consts):
                raise _bad(f"LOAD_CONST with a bad index at {pc}")
            stack.append(_const_type(consts[args[0]]))
        elif op == LOAD_VALUE:
            if len(args) != 1 or not isinstance(args[0], str):
                raise _bad(f"LOAD_VALUE without a column at {pc}")
            check_name(args[0])
            names.append(args[0])
            stack.append(NUM)
        elif op == TO_NUM:
            pop()
            stack.append(NUM)
        elif op == TO_BOOL:
            pop()
            stack.append(BOOL)
        elif op in (ADD, SUB, MUL, DIV, CMP_LT, CMP_LE, CMP_GT, CMP_GE):
            pop(NUM)
            pop(NUM)
            stack.append(NUM if op in (ADD, SUB, MUL, DIV) else BOOL)
        elif op in (CMP_EQ, CMP_NE):
            b = pop(NUM, BOOL)
            pop(b)
            stack.append(BOOL)
        elif op == NEG:
            pop(NUM)
            stack.append(NUM)
        elif op in (AND, OR):
            pop(BOOL)
            pop(BOOL)
            stack.append(BOOL)
        elif op == NOT:
            pop(BOOL)
            stack.append(BOOL)
        elif op == IS_NULL:
            pop()
            stack.append(BOOL)
        elif op == CALL:
            if len(args) != 2 or args[0] not in BUILTINS or type(args[1]) is not int:
                raise _bad(f"CALL of an unknown function at {pc}")
            func, nargs = args
            lo, hi = BUILTINS[func]
            if func == "is_null" or not lo <= nargs <= hi or (func == "round" and nargs != 1):
                raise _bad(f"CALL {func} with {nargs} arguments")
            if func == "if":
                b = pop(NUM, BOOL)
                pop(b)
                pop(BOOL)
                stack.append(b)
            else:
                for _ in range(nargs):
                    pop(NUM)
                stack.append(NUM)
        else:
            raise _bad(f"unknown opcode {op!r}")
    raise _bad("missing ASSIGN")


def make_callback(
    source: str,
    consts: Sequence,
    code: Sequence[Sequence],
    *,
    line: int | None = None,
    column: int | None = None,
) -> Callback:
    consts = tuple(float(c) if _const_type(c) == NUM else c for c in consts)
    code = tuple(tuple(i) for i in code)
    result_type, names = verify(consts, code)
    return Callback(source, consts, code, result_type, line, column, names)


# --- the compiler: expression tree → bytecode ---------------------------------------------


def check_name(name: str) -> None:
    if name.startswith("__") or name.endswith("__"):
        raise AmmlCompileError(f"dunder name `{name}` is not allowed in callback scripts")
    if len(name) > MAX_NAME_CHARS:
        raise AmmlCompileError(f"name `{name[:20]}…` is too long")


class _ExprCompiler:
    def __init__(self, source: str) -> None:
        self.source = source
        self.consts: list[Any] = []
        self.code: list[tuple] = []

    def error(self, node: n.Node, message: str, hint: str | None = None) -> AmmlCompileError:
        width = max(1, node.end - node.pos) if node.end > node.pos else 1
        return AmmlCompileError(
            message,
            hint=hint,
            source=self.source,
            line=node.line,
            column=node.column,
            width=width,
        )

    def const(self, value: Any) -> None:
        for i, c in enumerate(self.consts):
            if type(c) is type(value) and c == value and str(c) == str(value):
                self.code.append((LOAD_CONST, i))
                return
        self.consts.append(value)
        self.code.append((LOAD_CONST, len(self.consts) - 1))

    def emit(self, *ins: Any) -> None:
        self.code.append(tuple(ins))
        if len(self.code) > MAX_INSTRUCTIONS:
            raise AmmlCompileError(
                f"callback script too long (more than {MAX_INSTRUCTIONS} instructions)",
                hint="split it over several `assign` arguments",
            )

    def coerce(self, have: str, want: str) -> None:
        if have != want:
            self.emit(TO_NUM if want == NUM else TO_BOOL)

    def expr(self, e: n.Expr, want: str | None = None) -> str:
        t = self._expr(e)
        if want is not None:
            self.coerce(t, want)
            return want
        return t

    def _expr(self, e: n.Expr) -> str:
        if isinstance(e, n.Num):
            v = e.value
            if len(e.text) > MAX_LITERAL_CHARS or not math.isfinite(float(v)):
                raise self.error(
                    e,
                    f"numeric literal too large ({len(e.text)} characters)",
                    hint=f"literals are finite numbers of at most {MAX_LITERAL_CHARS} characters",
                )
            self.const(float(v))
            return NUM
        if isinstance(e, n.Bool):
            self.const(e.value)
            return BOOL
        if isinstance(e, n.Null):
            self.const(None)
            return NULL
        if isinstance(e, n.Str):
            raise self.error(e, "text values are not supported in callback scripts")
        if isinstance(e, n.ListLit):
            raise self.error(e, "lists are not supported in callback scripts")
        if isinstance(e, n.Attr):
            raise self.error(
                e, f"attribute access (`.{e.name}`) is not allowed in callback scripts"
            )
        if isinstance(e, n.Index):
            raise self.error(e, "indexing (`x[…]`) is not allowed in callback scripts")
        if isinstance(e, n.Name):
            self.name(e)
            self.emit(LOAD_VALUE, e.id)
            return NUM
        if isinstance(e, n.Unary):
            if e.op == "not":
                self.expr(e.operand, BOOL)
                self.emit(NOT)
                return BOOL
            self.expr(e.operand, NUM)
            if e.op == "-":
                self.emit(NEG)
            return NUM
        if isinstance(e, n.Binary):
            if e.op in BOOLOPS:
                self.expr(e.left, BOOL)
                self.expr(e.right, BOOL)
                self.emit(BOOLOPS[e.op])
                return BOOL
            if e.op in ARITH:
                self.expr(e.left, NUM)
                self.expr(e.right, NUM)
                self.emit(ARITH[e.op])
                return NUM
            if e.op in ("==", "!="):
                # compare as booleans when one side is boolean and the other is not a number
                lt, rt = _static_type(e.left), _static_type(e.right)
                both = BOOL if {lt, rt} <= {BOOL, NULL} and BOOL in (lt, rt) else NUM
                self.expr(e.left, both)
                self.expr(e.right, both)
                self.emit(COMPARE[e.op])
                return BOOL
            self.expr(e.left, NUM)
            self.expr(e.right, NUM)
            self.emit(COMPARE[e.op])
            return BOOL
        if isinstance(e, n.Call):
            return self.call(e)
        raise self.error(e, "unsupported expression")  # pragma: no cover

    def name(self, e: n.Name) -> None:
        name = e.id
        if name.startswith("__") or name.endswith("__"):
            raise self.error(e, f"dunder name `{name}` is not allowed in callback scripts")
        if name == "import":
            raise self.error(e, "imports are not allowed in callback scripts")
        if name in ("True", "False", "None"):
            raise self.error(
                e,
                f"unknown name `{name}`",
                hint=f"use `{name.lower()}`" if name != "None" else "use `null`",
            )
        if name in FORBIDDEN_NAMES:
            raise self.error(
                e,
                f"`{name}` is not allowed in callback scripts (they are not Python)",
            )
        if len(name) > MAX_NAME_CHARS:
            raise self.error(e, f"name too long ({len(name)} characters)")

    def call(self, e: n.Call) -> str:
        func = e.func
        head = n.Name(line=e.line, column=e.column, pos=e.pos, end=e.func_end, id=func)
        if func not in BUILTINS:
            self.name(head)
            raise self.error(
                head,
                f"unknown function `{func}`",
                hint=did_you_mean(func, BUILTINS) or "built-ins: " + ", ".join(sorted(BUILTINS)),
            )
        lo, hi = BUILTINS[func]
        if not lo <= len(e.args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.error(
                e, f"`{func}` takes {want} argument{'s' if hi > 1 else ''}, got {len(e.args)}"
            )
        if func == "is_null":
            self.expr(e.args[0])
            self.emit(IS_NULL)
            return BOOL
        if func == "if":
            self.expr(e.args[0], BOOL)
            ta, tb = _static_type(e.args[1]), _static_type(e.args[2])
            both = BOOL if {ta, tb} <= {BOOL, NULL} and BOOL in (ta, tb) else NUM
            self.expr(e.args[1], both)
            self.expr(e.args[2], both)
            self.emit(CALL, "if", 3)
            return both
        if func == "round" and len(e.args) == 2:
            digits = _int_literal(e.args[1])
            if digits is None or not -15 <= digits <= 15:
                raise self.error(e.args[1], "`round` digits must be a whole number in -15…15")
            # round(x, d) = round(x * 10^d) / 10^d  (or / and * for negative d)
            self.expr(e.args[0], NUM)
            scale = float(10 ** abs(digits))
            self.const(scale)
            self.emit(MUL if digits >= 0 else DIV)
            self.emit(CALL, "round", 1)
            self.const(scale)
            self.emit(DIV if digits >= 0 else MUL)
            return NUM
        for a in e.args:
            self.expr(a, NUM)
        self.emit(CALL, func, len(e.args))
        return NUM


def _int_literal(e: n.Expr) -> int | None:
    sign = 1
    while isinstance(e, n.Unary) and e.op in "+-":
        sign = -sign if e.op == "-" else sign
        e = e.operand
    if isinstance(e, n.Num) and isinstance(e.value, int) and len(e.text) < 4:
        return sign * e.value
    return None


def _static_type(e: n.Expr) -> str:
    """The type an expression compiles to, without compiling it (no errors raised)."""
    if isinstance(e, n.Bool):
        return BOOL
    if isinstance(e, n.Null):
        return NULL
    if isinstance(e, n.Unary):
        return BOOL if e.op == "not" else NUM
    if isinstance(e, n.Binary):
        return NUM if e.op in ARITH else BOOL
    if isinstance(e, n.Call):
        if e.func == "is_null":
            return BOOL
        if e.func == "if" and len(e.args) == 3:
            ta, tb = _static_type(e.args[1]), _static_type(e.args[2])
            return BOOL if {ta, tb} <= {BOOL, NULL} and BOOL in (ta, tb) else NUM
    return NUM


def compile_expression(expr: n.Expr, source: str, target: str = "result") -> Callback:
    """Compile a parsed expression (from a program or `parse_expression`) to a Callback."""
    d = n.depth(expr)
    if d > MAX_DEPTH:
        raise AmmlCompileError(
            f"expression nested too deeply (depth {d}, at most {MAX_DEPTH})",
            hint="simplify it or split it over several `assign` arguments",
            source=source,
            line=expr.line,
            column=expr.column,
        )
    c = _ExprCompiler(source)
    c.expr(expr)
    c.emit(ASSIGN, target)
    text = source[expr.pos : expr.end]
    return make_callback(text, c.consts, c.code, line=expr.line, column=expr.column)


def compile_callback(
    text: str, target: str = "result", columns: Iterable[str] | None = None
) -> Callback:
    """Compile a callback script such as ``val1 > 1 and not is_null(val2)``.

    With `columns`, names that are not columns are rejected (`check_names`).
    """
    from tsloom.amml.parser import parse_expression

    source, expr = parse_expression(text)
    cb = compile_expression(expr, source, target)
    if columns is not None:
        check_names(cb, columns)
    return cb


def check_names(callback: Callback, columns: Iterable[str]) -> None:
    """Raise AmmlCompileError if the callback reads a name that is not one of `columns`."""
    cols = [str(c) for c in columns]
    known = set(cols)
    for name in callback.names:
        if name not in known:
            hint = did_you_mean(name, cols)
            if hint is None:
                shown = ", ".join(cols[:12]) + (" …" if len(cols) > 12 else "")
                hint = f"the columns are: {shown}" if cols else "the batch has no columns"
            where = ""
            if callback.line is not None:
                where = f" (callback `{callback.source[:40]}` at line {callback.line})"
            raise AmmlCompileError(f"unknown column `{name}`{where}", hint=hint)


# --- back end 1: polars -------------------------------------------------------------------


def _lower(cb: Callback):
    import polars as pl

    F64 = pl.Float64
    stack: list[tuple[Any, str]] = []

    def pop():
        return stack.pop()

    for ins in cb.code:
        op, *args = ins
        if op == LOAD_CONST:
            v = cb.consts[args[0]]
            t = _const_type(v)
            if t == NUM:
                stack.append((pl.lit(float(v), dtype=F64), NUM))
            elif t == BOOL:
                stack.append((pl.lit(v, dtype=pl.Boolean), BOOL))
            else:
                stack.append((pl.lit(None), NULL))
        elif op == LOAD_VALUE:
            stack.append((pl.col(args[0]).cast(F64).fill_nan(None), NUM))
        elif op == TO_NUM:
            e, t = pop()
            if t == NULL:
                e = pl.lit(None, dtype=F64)
            elif t == BOOL:
                e = e.cast(F64)
            stack.append((e, NUM))
        elif op == TO_BOOL:
            e, t = pop()
            if t == NULL:
                e = pl.lit(None, dtype=pl.Boolean)
            elif t == NUM:
                e = e != 0.0
            stack.append((e, BOOL))
        elif op in (ADD, SUB, MUL, DIV):
            b, _ = pop()
            a, _ = pop()
            if op == ADD:
                r = a + b
            elif op == SUB:
                r = a - b
            elif op == MUL:
                r = a * b
            else:
                r = pl.when(b != 0.0).then(a / b).otherwise(pl.lit(None, dtype=F64))
            stack.append((r.fill_nan(None), NUM))
        elif op == NEG:
            a, _ = pop()
            stack.append((-a, NUM))
        elif op in COMPARE.values():
            b, _ = pop()
            a, _ = pop()
            fn = {
                CMP_EQ: operator.eq,
                CMP_NE: operator.ne,
                CMP_LT: operator.lt,
                CMP_LE: operator.le,
                CMP_GT: operator.gt,
                CMP_GE: operator.ge,
            }[op]
            stack.append((fn(a, b), BOOL))
        elif op == AND:
            b, _ = pop()
            a, _ = pop()
            stack.append((a & b, BOOL))
        elif op == OR:
            b, _ = pop()
            a, _ = pop()
            stack.append((a | b, BOOL))
        elif op == NOT:
            a, _ = pop()
            stack.append((~a, BOOL))
        elif op == IS_NULL:
            a, t = pop()
            stack.append((pl.lit(True) if t == NULL else a.is_null(), BOOL))
        elif op == CALL:
            func, nargs = args
            vals = [pop() for _ in range(nargs)][::-1]
            es = [v[0] for v in vals]
            null = pl.lit(None, dtype=F64)
            if func == "abs":
                r, t = es[0].abs(), NUM
            elif func == "exp":
                r, t = es[0].exp(), NUM
            elif func == "log":
                r, t = pl.when(es[0] > 0.0).then(es[0].log()).otherwise(null), NUM
            elif func == "sqrt":
                r, t = pl.when(es[0] >= 0.0).then(es[0].sqrt()).otherwise(null), NUM
            elif func == "round":
                r, t = es[0].round(0, mode="half_to_even"), NUM
            elif func == "min":
                r, t = pl.min_horizontal(es), NUM
            elif func == "max":
                r, t = pl.max_horizontal(es), NUM
            elif func == "clip":
                x, lo, hi = es
                r = pl.when(x < lo).then(lo).when(x > hi).then(hi).otherwise(x)
                t = NUM
            elif func == "if":
                r, t = pl.when(es[0]).then(es[1]).otherwise(es[2]), vals[1][1]
            else:  # pragma: no cover - verify() rejects it
                raise _bad(f"unknown function {func}")
            stack.append((r, t))
        elif op == ASSIGN:
            e, t = pop()
            if t == NULL:
                e = pl.lit(None, dtype=F64)
            return e.alias(args[0])
    raise _bad("missing ASSIGN")  # pragma: no cover


# --- back end 2: the per-record reference interpreter --------------------------------------


def _num(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float) or hasattr(v, "__float__"):
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            f = None
        else:
            return None if math.isnan(f) else f
    raise AmmlRuntimeError(f"column `{name}` holds {type(v).__name__} {v!r}, not a number")


def _nan_null(x: float) -> float | None:
    return None if math.isnan(x) else x


def _interpret(cb: Callback, record: Mapping[str, Any]) -> float | bool | None:
    stack: list[Any] = []
    push, pop = stack.append, stack.pop
    for ins in cb.code:
        op = ins[0]
        if op == LOAD_CONST:
            push(cb.consts[ins[1]])
        elif op == LOAD_VALUE:
            name = ins[1]
            if name not in record:
                raise AmmlRuntimeError(
                    f"the record has no column `{name}`",
                    hint=did_you_mean(name, [str(k) for k in record]),
                )
            push(_num(record[name], name))
        elif op == TO_NUM:
            v = pop()
            push(None if v is None else float(v))
        elif op == TO_BOOL:
            v = pop()
            push(None if v is None else (v if isinstance(v, bool) else v != 0.0))
        elif op in (ADD, SUB, MUL, DIV):
            b, a = pop(), pop()
            if a is None or b is None:
                push(None)
            elif op == ADD:
                push(_nan_null(a + b))
            elif op == SUB:
                push(_nan_null(a - b))
            elif op == MUL:
                push(_nan_null(a * b))
            else:
                push(None if b == 0.0 else _nan_null(a / b))
        elif op == NEG:
            a = pop()
            push(None if a is None else -a)
        elif op in (CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE):
            b, a = pop(), pop()
            if a is None or b is None:
                push(None)
            else:
                push(
                    {
                        CMP_EQ: operator.eq,
                        CMP_NE: operator.ne,
                        CMP_LT: operator.lt,
                        CMP_LE: operator.le,
                        CMP_GT: operator.gt,
                        CMP_GE: operator.ge,
                    }[op](a, b)
                )
        elif op == AND:
            b, a = pop(), pop()
            push(False if a is False or b is False else None if a is None or b is None else True)
        elif op == OR:
            b, a = pop(), pop()
            push(True if a is True or b is True else None if a is None or b is None else False)
        elif op == NOT:
            a = pop()
            push(None if a is None else not a)
        elif op == IS_NULL:
            push(pop() is None)
        elif op == CALL:
            func, nargs = ins[1], ins[2]
            args = [pop() for _ in range(nargs)][::-1]
            push(_call(func, args))
        elif op == ASSIGN:
            return pop()
    raise _bad("missing ASSIGN")  # pragma: no cover


def _call(func: str, args: list[Any]) -> Any:
    if func == "if":
        return args[1] if args[0] is True else args[2]
    if func in ("min", "max"):
        vals = [a for a in args if a is not None]
        return (min if func == "min" else max)(vals) if vals else None
    if func == "clip":
        x, lo, hi = args
        if x is None:
            return None
        if lo is not None and x < lo:
            return lo
        if hi is not None and x > hi:
            return hi
        return x
    x = args[0]
    if x is None:
        return None
    if func == "abs":
        return abs(x)
    if func == "exp":
        try:
            return math.exp(x)
        except OverflowError:
            return math.inf
    if func == "log":
        return math.log(x) if x > 0 else None
    if func == "sqrt":
        return math.sqrt(x) if x >= 0 else None
    if func == "round":
        return float(round(x)) if math.isfinite(x) else x
    raise _bad(f"unknown function {func}")  # pragma: no cover


__all__ = [
    "BUILTINS",
    "CALLBACK_OPCODES",
    "MAX_DEPTH",
    "MAX_INSTRUCTIONS",
    "AmmlSyntaxError",
    "Callback",
    "check_names",
    "compile_callback",
    "compile_expression",
]
