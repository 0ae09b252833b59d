"""AMML: tsloom's workflow language.

    >>> from tsloom.amml import compile_program, listing
    >>> bc = compile_program('source id="ett" | filter cond=val1 > 1 | print')
    >>> [c.name for c in bc.components]
    ['source', 'filter', 'print']

`parse` gives the syntax tree, `compile_program` the bytecode (JSON round trip with
`to_json`/`Bytecode.from_json`), `listing` a readable listing, `compile_callback` a single
callback script (`to_polars()` vectorised, `evaluate(record)` the reference interpreter).
See grammar.py for the syntax and callbacks.py for the expression semantics.
"""

from tsloom.amml.bytecode import WORKFLOW_OPCODES, Bytecode, ComponentInstance, listing
from tsloom.amml.callbacks import (
    BUILTINS,
    CALLBACK_OPCODES,
    Callback,
    check_names,
    compile_callback,
)
from tsloom.amml.catalog import COMPONENTS, ArgSpec, ComponentSpec, register
from tsloom.amml.compiler import compile_program
from tsloom.amml.errors import (
    AmmlCompileError,
    AmmlError,
    AmmlRuntimeError,
    AmmlSyntaxError,
)
from tsloom.amml.nodes import Program
from tsloom.amml.parser import parse, parse_expression

__all__ = [
    "BUILTINS",
    "CALLBACK_OPCODES",
    "COMPONENTS",
    "WORKFLOW_OPCODES",
    "AmmlCompileError",
    "AmmlError",
    "AmmlRuntimeError",
    "AmmlSyntaxError",
    "ArgSpec",
    "Bytecode",
    "Callback",
    "ComponentInstance",
    "ComponentSpec",
    "Program",
    "check_names",
    "compile_callback",
    "compile_program",
    "listing",
    "parse",
    "parse_expression",
    "register",
]
