"""Program → bytecode: resolves components and flows, checks arguments, compiles callbacks.

Rules checked here (each error points at the offending text):

* every stage names a known component (`catalog.COMPONENTS`) or, as the first stage of a
  pipeline, a flow defined on an earlier line; a pipeline starts with a source (ingress), a
  flow, or `join`; sources only start pipelines; egress components and `split` end them;
* arguments are known to the component, given once, of the right kind; required ones present;
* `join a b …` reads flows that exist (`x | join b` joins the flow x with b); `split a b`
  defines new flows (one per output port) and the statement that ends with it has no `name =`;
* flow names are defined once and are not component names.
"""

from __future__ import annotations

import math
from typing import Any

from tsloom.amml import nodes as n
from tsloom.amml.bytecode import (
    LOAD_CONST,
    WF_ADD_CALLBACK,
    WF_ADD_COMPONENT,
    WF_ASSIGN,
    WF_END,
    WF_FLOW_START,
    WF_LOAD_FLOW,
    WF_MAKE_COMPONENT,
    WF_SET_ARG,
    Bytecode,
)
from tsloom.amml.callbacks import MAX_LITERAL_CHARS, Callback, compile_expression
from tsloom.amml.catalog import COMPONENTS, ArgSpec, ComponentSpec
from tsloom.amml.errors import AmmlCompileError, did_you_mean
from tsloom.amml.parser import parse

MAX_COMPONENTS = 1000
MAX_STRING_CHARS = 10_000
MAX_LIST_ITEMS = 1000

_KIND_WORDS = {
    "str": "a string",
    "int": "a whole number",
    "number": "a number",
    "bool": "true or false",
    "list": "a list",
    "columns": "a column name or a list of them",
    "any": "a value",
}


class _NotLiteral(Exception):
    def __init__(self, node: n.Expr) -> None:
        self.node = node


class _Compiler:
    def __init__(self, program: n.Program) -> None:
        self.program = program
        self.source = program.source
        self.consts: list[Any] = []
        self.callbacks: list[Callback] = []
        self.code: list[tuple] = []
        self.flows: set[str] = set()
        self.n_components = 0

    def error(self, node: n.Node | None, message: str, hint: str | None = None, width=None):
        if node is None:
            return AmmlCompileError(message, hint=hint)
        if width is None:
            width = max(1, node.end - node.pos) if node.end > node.pos else 1
            first_line = self.source[node.pos : node.end].split("\n", 1)[0]
            width = max(1, min(width, len(first_line)))
        return AmmlCompileError(
            message,
            hint=hint,
            source=self.source,
            line=node.line,
            column=node.column,
            width=width,
        )

    def const(self, value: Any) -> int:
        for i, c in enumerate(self.consts):
            if type(c) is type(value) and c == value:
                return i
        self.consts.append(value)
        return len(self.consts) - 1

    def emit(self, *ins: Any) -> None:
        self.code.append(tuple(ins))

    # --- program / statements ------------------------------------------------------------

    def run(self) -> Bytecode:
        for st in self.program.statements:
            self.statement(st)
        self.emit(WF_END)
        return Bytecode(self.source, self.consts, self.callbacks, self.code)

    def check_flow_name(self, name: str, node: n.Node, width: int) -> None:
        if name in COMPONENTS:
            raise self.error(
                node,
                f"`{name}` is a component; it cannot also name a flow",
                hint=f"call the flow e.g. `{name}_flow`",
                width=width,
            )
        if name in self.flows:
            raise self.error(
                node,
                f"flow `{name}` is already defined",
                hint="each flow is defined once; pick another name",
                width=width,
            )
        if name.startswith("__"):
            raise self.error(node, f"dunder name `{name}` is not allowed", width=width)

    def statement(self, st: n.Statement) -> None:
        self.emit(WF_FLOW_START, st.line)
        last = len(st.stages) - 1
        for i, comp in enumerate(st.stages):
            if i == 0 and comp.name in self.flows:
                if comp.args or comp.positionals:
                    raise self.error(
                        comp,
                        f"`{comp.name}` is a flow; it takes no arguments",
                        hint=f"write `{comp.name} | component …`",
                        width=len(comp.name),
                    )
                self.emit(WF_LOAD_FLOW, comp.name)
                if last == 0 and st.target is None:
                    raise self.error(
                        comp,
                        f"flow `{comp.name}` goes nowhere",
                        hint=f"pipe it into a component: `{comp.name} | print`",
                        width=len(comp.name),
                    )
                continue
            spec = COMPONENTS.get(comp.name)
            if spec is None:
                choices = list(COMPONENTS) + (sorted(self.flows) if i == 0 else [])
                raise self.error(
                    comp,
                    f"unknown component `{comp.name}`",
                    hint=did_you_mean(comp.name, choices)
                    or "components: " + ", ".join(sorted(COMPONENTS)),
                    width=len(comp.name),
                )
            self.component(spec, comp, first=i == 0, last=i == last, st=st)
        if st.target is not None:
            node = n.Node(st.target_line, st.target_column, st.pos, st.pos + len(st.target))
            self.check_flow_name(st.target, node, len(st.target))
            self.flows.add(st.target)
            self.emit(WF_ASSIGN, st.target, 0)

    # --- components ----------------------------------------------------------------------

    def component(
        self, spec: ComponentSpec, comp: n.Component, *, first: bool, last: bool, st
    ) -> None:
        width = len(comp.name)
        if self.n_components >= MAX_COMPONENTS:
            raise self.error(comp, f"too many components (at most {MAX_COMPONENTS})", width=width)
        if spec.role == "ingress" and not first:
            raise self.error(
                comp,
                f"`{comp.name}` is a source; it can only start a pipeline",
                hint="start a new line: `name = " + comp.name + " …`",
                width=width,
            )
        if first and spec.role != "ingress" and spec.positionals != "in":
            flows = sorted(self.flows)
            raise self.error(
                comp,
                f"a pipeline starts with a source or a flow, not `{comp.name}`",
                hint=(f"flows so far: {', '.join(flows)}" if flows else None)
                or "sources: "
                + ", ".join(sorted(k for k, s in COMPONENTS.items() if s.role == "ingress")),
                width=width,
            )
        if (spec.role == "egress" or spec.positionals == "out") and not last:
            raise self.error(
                comp,
                f"`{comp.name}` ends a pipeline; nothing can follow it",
                width=width,
            )
        index = self.n_components
        self.n_components += 1
        self.emit(WF_MAKE_COMPONENT, index, comp.name, comp.line, comp.column)
        self.arguments(spec, comp)
        n_inputs = 0 if first else 1
        if spec.positionals == "none" and comp.positionals:
            p = comp.positionals[0]
            hint = None
            if spec.arg(p.name) is not None:
                hint = f"did you mean `{p.name}=…`?"
            raise self.error(
                p,
                f"`{comp.name}` takes key=value arguments, not the bare name `{p.name}`",
                hint=hint or "write key=value; quote text values",
            )
        if spec.positionals == "in":
            need = max(spec.min_positionals, 2 if first else 1)
            if len(comp.positionals) < need:
                raise self.error(
                    comp,
                    f"`{comp.name}` needs {need} flow name{'s' if need > 1 else ''} here",
                    hint=f"e.g. `{comp.name} a b on=ts`" if first else f"`x | {comp.name} b`",
                    width=width,
                )
            for p in comp.positionals:
                if p.name not in self.flows:
                    raise self.error(
                        p,
                        f"unknown flow `{p.name}`",
                        hint=did_you_mean(p.name, self.flows)
                        or ("define it on an earlier line: `" + p.name + " = source …`"),
                    )
                self.emit(WF_LOAD_FLOW, p.name)
            n_inputs += len(comp.positionals)
        self.emit(WF_ADD_COMPONENT, n_inputs)
        if spec.positionals == "out":
            if len(comp.positionals) < spec.min_positionals:
                raise self.error(
                    comp,
                    f"`{comp.name}` needs at least {spec.min_positionals} flow names",
                    hint=f"e.g. `raw | {comp.name} a b`",
                    width=width,
                )
            if st.target is not None:
                node = n.Node(st.target_line, st.target_column, st.pos, st.pos)
                raise self.error(
                    node,
                    f"`{comp.name}` names its own output flows; drop `{st.target} =`",
                    width=len(st.target),
                )
            if "cond" in {a.key for a in comp.args} and len(comp.positionals) != 2:
                raise self.error(
                    comp, f"`{comp.name} … cond=…` routes to exactly 2 flows", width=width
                )
            for port, p in enumerate(comp.positionals):
                self.check_flow_name(p.name, p, len(p.name))
                self.flows.add(p.name)
                self.emit(WF_ASSIGN, p.name, port)

    def arguments(self, spec: ComponentSpec, comp: n.Component) -> None:
        seen: set[str] = set()
        for arg in comp.args:
            key_node = n.Node(arg.line, arg.column, arg.pos, arg.pos + len(arg.key))
            if arg.key in seen:
                raise self.error(key_node, f"argument `{arg.key}` given twice")
            seen.add(arg.key)
            aspec = spec.arg(arg.key)
            if aspec is None and spec.extra_args is not None:
                if arg.key.startswith("__"):
                    raise self.error(key_node, f"dunder name `{arg.key}` is not allowed")
                aspec = ArgSpec(arg.key, spec.extra_args)
            if aspec is None:
                names = [a.name for a in spec.args]
                raise self.error(
                    key_node,
                    f"`{comp.name}` has no argument `{arg.key}`",
                    hint=did_you_mean(arg.key, names)
                    or (
                        f"`{comp.name}` takes: " + ", ".join(names)
                        if names
                        else f"`{comp.name}` takes no arguments"
                    ),
                )
            if aspec.kind == "callback":
                cb = compile_expression(arg.value, self.source, target=arg.key)
                self.callbacks.append(cb)
                self.emit(WF_ADD_CALLBACK, arg.key, len(self.callbacks) - 1)
                continue
            value = self.value(arg, aspec, comp)
            self.emit(LOAD_CONST, self.const(value))
            self.emit(WF_SET_ARG, arg.key)
        for a in spec.args:
            if a.required and a.name not in seen:
                raise self.error(
                    comp,
                    f"`{comp.name}` needs the argument `{a.name}`",
                    hint=f"{a.name}=…" + (f"  ({a.help})" if a.help else ""),
                    width=len(comp.name),
                )
        for group in spec.one_of:
            if not seen.intersection(group):
                raise self.error(
                    comp,
                    f"`{comp.name}` needs one of: " + ", ".join(f"`{g}`" for g in group),
                    width=len(comp.name),
                )

    # --- literal values ------------------------------------------------------------------

    def literal(self, e: n.Expr, depth: int = 0) -> Any:
        if isinstance(e, n.Num):
            if len(e.text) > MAX_LITERAL_CHARS or not math.isfinite(float(e.value)):
                raise self.error(e, f"numeric literal too large ({len(e.text)} characters)")
            return e.value
        if isinstance(e, n.Unary) and e.op in "+-" and isinstance(e.operand, n.Num):
            v = self.literal(e.operand, depth)
            return -v if e.op == "-" else v
        if isinstance(e, n.Str):
            if len(e.value) > MAX_STRING_CHARS:
                raise self.error(
                    e, f"string too long ({len(e.value)} characters, at most {MAX_STRING_CHARS})"
                )
            return e.value
        if isinstance(e, n.Bool):
            return e.value
        if isinstance(e, n.Null):
            return None
        if isinstance(e, n.Name):
            if e.id.startswith("__"):
                raise self.error(e, f"dunder name `{e.id}` is not allowed")
            return e.id
        if isinstance(e, n.ListLit) and depth < 4:
            if len(e.items) > MAX_LIST_ITEMS:
                raise self.error(e, f"list too long (at most {MAX_LIST_ITEMS} items)")
            return [self.literal(x, depth + 1) for x in e.items]
        raise _NotLiteral(e)

    def value(self, arg: n.Arg, aspec: ArgSpec, comp: n.Component) -> Any:
        try:
            v = self.literal(arg.value)
        except _NotLiteral as e:
            raise self.error(
                e.node,
                f"`{arg.key}` of `{comp.name}` takes {_KIND_WORDS[aspec.kind]}, not an expression",
                hint=f'quote text: {arg.key}="…"',
            ) from None
        kind = aspec.kind
        if v is None or kind == "any":
            return v
        ok = {
            "str": lambda x: isinstance(x, str),
            "int": lambda x: type(x) is int,
            "number": lambda x: type(x) in (int, float),
            "bool": lambda x: type(x) is bool,
            "list": lambda x: isinstance(x, list),
            "columns": lambda x: (
                isinstance(x, str) or (isinstance(x, list) and all(isinstance(i, str) for i in x))
            ),
        }[kind](v)
        if not ok:
            raise self.error(
                arg.value,
                f"`{arg.key}` of `{comp.name}` takes {_KIND_WORDS[kind]}, got {_describe(v)}",
            )
        if kind == "columns" and isinstance(v, str):
            v = [v]
        return v


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return f"the number {v}"
    if isinstance(v, str):
        return f'the text "{v[:30]}"'
    return "a list"


def compile_program(program: str | n.Program) -> Bytecode:
    """Compile AMML source text (or a parsed `Program`) to `Bytecode`."""
    if not isinstance(program, n.Program):
        program = parse(program)
    return _Compiler(program).run()
