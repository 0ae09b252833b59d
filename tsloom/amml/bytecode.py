"""The compiled form of an AMML program: workflow instructions plus callback scripts.

Workflow instructions run on two stacks, a value stack and a flow stack (references to the
output port of a component). `Bytecode.components` and `Bytecode.flows` are what you get by
running them; a runtime builds its graph from those.

=================  ===========================  ==============================================
opcode             operands                     effect
=================  ===========================  ==============================================
WF_FLOW_START      line                         a new statement: clear the flow stack
WF_MAKE_COMPONENT  index, name, line, column    create component `index` (becomes current)
LOAD_CONST         k                            push workflow constant k on the value stack
WF_SET_ARG         key                          pop a value into the current component's `key`
WF_ADD_CALLBACK    key, callback                attach callback script `callback` as `key`
WF_LOAD_FLOW       name                         push the named flow on the flow stack
WF_ADD_COMPONENT   n_inputs                     pop n inputs, wire them into the current
                                                component, push its output (port 0)
WF_ASSIGN          name, port                   name port `port` of the top component a flow
WF_END             —                            end of the program
=================  ===========================  ==============================================

Callback scripts are listed as `WF_DEF_CALLBACK i` blocks (see callbacks.py for their opcodes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tsloom.amml.callbacks import Callback, _show, format_instruction
from tsloom.amml.errors import AmmlCompileError

FORMAT = "amml-bytecode"
VERSION = 1

WF_FLOW_START = "WF_FLOW_START"
WF_MAKE_COMPONENT = "WF_MAKE_COMPONENT"
LOAD_CONST = "LOAD_CONST"
WF_SET_ARG = "WF_SET_ARG"
WF_ADD_CALLBACK = "WF_ADD_CALLBACK"
WF_LOAD_FLOW = "WF_LOAD_FLOW"
WF_ADD_COMPONENT = "WF_ADD_COMPONENT"
WF_ASSIGN = "WF_ASSIGN"
WF_END = "WF_END"
WORKFLOW_OPCODES = (
    WF_FLOW_START,
    WF_MAKE_COMPONENT,
    LOAD_CONST,
    WF_SET_ARG,
    WF_ADD_CALLBACK,
    WF_LOAD_FLOW,
    WF_ADD_COMPONENT,
    WF_ASSIGN,
    WF_END,
)


@dataclass
class ComponentInstance:
    """One component of a compiled workflow, with its wiring."""

    index: int
    name: str
    line: int | None = None
    column: int | None = None
    args: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Callback] = field(default_factory=dict)
    inputs: list[tuple[int, int]] = field(default_factory=list)  # (component, port)
    outputs: dict[int, list[str]] = field(default_factory=dict)  # port → flow names

    def where(self) -> str:
        return f"`{self.name}` (component {self.index}, line {self.line}, column {self.column})"


@dataclass
class Bytecode:
    source: str
    consts: list[Any]
    callbacks: list[Callback]
    code: list[tuple]
    _decoded: tuple | None = field(default=None, init=False, repr=False, compare=False)

    # --- decoding ------------------------------------------------------------------------

    def _decode(self) -> tuple[list[ComponentInstance], dict[str, tuple[int, int]]]:
        if self._decoded is None:
            self._decoded = _run(self)
        return self._decoded

    @property
    def components(self) -> list[ComponentInstance]:
        """The components, in source order, with their arguments, callbacks and inputs."""
        return self._decode()[0]

    @property
    def flows(self) -> dict[str, tuple[int, int]]:
        """Named flows: name → (component index, output port)."""
        return self._decode()[1]

    # --- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "consts": list(self.consts),
            "callbacks": [c.to_json() for c in self.callbacks],
            "code": [list(i) for i in self.code],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping) -> Bytecode:
        """Load bytecode saved by `to_json` (verified again: it may have been edited)."""
        try:
            if isinstance(data, str | bytes):
                data = json.loads(data)
            if not isinstance(data, Mapping) or data.get("format") != FORMAT:
                raise ValueError("not AMML bytecode")
            if data.get("version") != VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            bc = cls(
                source=str(data.get("source", "")),
                consts=list(data["consts"]),
                callbacks=[Callback.from_json(c) for c in data["callbacks"]],
                code=[tuple(i) for i in data["code"]],
            )
        except AmmlCompileError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise AmmlCompileError(f"invalid AMML bytecode: {e}") from None
        bc._decode()
        return bc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bytecode) and self.to_dict() == other.to_dict()


def _run(bc: Bytecode) -> tuple[list[ComponentInstance], dict[str, tuple[int, int]]]:
    def bad(msg: str) -> AmmlCompileError:
        return AmmlCompileError(f"invalid AMML bytecode: {msg}")

    comps: list[ComponentInstance] = []
    flows: dict[str, tuple[int, int]] = {}
    values: list[Any] = []
    stack: list[tuple[int, int]] = []
    current: ComponentInstance | None = None
    ended = False
    for pc, ins in enumerate(bc.code):
        if ended:
            raise bad("instructions after WF_END")
        if not ins or not isinstance(ins[0], str):
            raise bad(f"malformed instruction {pc}")
        op, *a = ins
        try:
            if op == WF_FLOW_START:
                stack.clear()
            elif op == WF_MAKE_COMPONENT:
                index, name, line, column = a
                if index != len(comps) or not isinstance(name, str):
                    raise bad(f"component index {index} out of order")
                current = ComponentInstance(index, name, line, column)
            elif op == LOAD_CONST:
                (k,) = a
                if type(k) is not int or not 0 <= k < len(bc.consts):
                    raise bad(f"constant {k} out of range")
                values.append(bc.consts[k])
            elif op == WF_SET_ARG:
                (key,) = a
                if current is None or not values:
                    raise bad(f"WF_SET_ARG without a component or value at {pc}")
                current.args[str(key)] = values.pop()
            elif op == WF_ADD_CALLBACK:
                key, cb = a
                if current is None or type(cb) is not int or not 0 <= cb < len(bc.callbacks):
                    raise bad(f"WF_ADD_CALLBACK with a bad callback at {pc}")
                current.callbacks[str(key)] = bc.callbacks[cb]
            elif op == WF_LOAD_FLOW:
                (name,) = a
                if name not in flows:
                    raise bad(f"flow {name!r} used before it is defined")
                stack.append(flows[name])
            elif op == WF_ADD_COMPONENT:
                (k,) = a
                if current is None or type(k) is not int or not 0 <= k <= len(stack):
                    raise bad(f"WF_ADD_COMPONENT with {k} inputs at {pc}")
                current.inputs = stack[len(stack) - k :] if k else []
                del stack[len(stack) - k :]
                comps.append(current)
                stack.append((current.index, 0))
                current = None
            elif op == WF_ASSIGN:
                name, port = a
                if not stack or name in flows or type(port) is not int or port < 0:
                    raise bad(f"WF_ASSIGN {name!r} at {pc}")
                comp = stack[-1][0]
                flows[str(name)] = (comp, port)
                comps[comp].outputs.setdefault(port, []).append(str(name))
            elif op == WF_END:
                ended = True
            else:
                raise bad(f"unknown opcode {op!r}")
        except ValueError:
            raise bad(f"wrong operands for {op} at {pc}") from None
    if not ended:
        raise bad("missing WF_END")
    if values or current is not None:
        raise bad("unfinished component at WF_END")
    return comps, flows


def listing(program: Bytecode | str) -> str:
    """A readable listing of compiled bytecode (compiles `program` first if it is text)."""
    if not isinstance(program, Bytecode):
        from tsloom.amml.compiler import compile_program

        program = compile_program(program)
    bc = program
    out = [f"; AMML bytecode v{VERSION}", "CONST_DEF_START"]
    for i, c in enumerate(bc.consts):
        out.append(f"    {i:<4} {_show(c)}")
    out.append("CONST_DEF_END")
    owner: dict[int, str] = {}
    comp_name = ""
    for ins in bc.code:
        if ins[0] == WF_MAKE_COMPONENT:
            comp_name = ins[2]
        elif ins[0] == WF_ADD_CALLBACK:
            owner[ins[2]] = f"{comp_name}.{ins[1]}"
    for i, cb in enumerate(bc.callbacks):
        src = cb.source.replace("\n", " ")
        out.append(f"WF_DEF_CALLBACK    {i}  ; {owner.get(i, '?')} = {src}")
        out.append(cb.listing(indent="    "))
    out.append("INSTRUCTION_START")
    for pc, ins in enumerate(bc.code):
        text = format_instruction(ins, bc.consts)
        if ins[0] == WF_MAKE_COMPONENT:
            text = f"{ins[0]:<18}{ins[1]} {ins[2]}  ; line {ins[3]}, column {ins[4]}"
        out.append(f"    {pc:<4} {text}")
    return "\n".join(out)
