"""AMML language: grammar, parser errors, compiler, bytecode, listing, and a parser fuzz test."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsloom.amml import (
    CALLBACK_OPCODES,
    WORKFLOW_OPCODES,
    AmmlCompileError,
    AmmlError,
    AmmlSyntaxError,
    Bytecode,
    compile_program,
    listing,
    parse,
)
from tsloom.amml import nodes as n
from tsloom.errors import TsloomError

TRAIN = 'source id="ett" | minmax_scaler | train_lstm model="ett:0.1", epoch=20 | print'
PREDICT = 'source id="ett" | minmax_scaler | lstm model="ett:0.1" | minmax_inverse | print'

MULTI = """\
# two sensors, merged on time, then fanned out
left  = source id="ett"            # lake dataset
right = csv path="b.csv" ts=time
both  = join left right on=ts tolerance="5min"
both | filter cond=val1 > 1 and not is_null(val2)
     | split hot cold

hot
  | assign y=val1 * 2, z=log(val2)
  | sink to=lake name=hot_out
cold |
  # a comment between continued lines
  print limit=5
"""


def test_design_examples_parse_and_compile():
    bc = compile_program(TRAIN)
    assert [c.name for c in bc.components] == ["source", "minmax_scaler", "train_lstm", "print"]
    assert bc.components[0].args == {"id": "ett"}
    assert bc.components[2].args == {"model": "ett:0.1", "epoch": 20}
    assert [c.inputs for c in bc.components] == [[], [(0, 0)], [(1, 0)], [(2, 0)]]
    bc = compile_program(PREDICT)
    assert [c.name for c in bc.components][-2:] == ["minmax_inverse", "print"]


def test_filter_callback_and_argument_separators():
    bc = compile_program("source id=ett | filter cond=val1 > 1 | print")
    f = bc.components[1]
    assert list(f.callbacks) == ["cond"]
    assert f.callbacks["cond"].source == "val1 > 1"
    # an unquoted expression ends at a top-level comma or at the next `name=`
    for text in ("window size=3, step=1", "window size=3 step=1", "window size=3,step=1"):
        bc = compile_program(f"source id=ett | {text} | print")
        assert bc.components[1].args == {"size": 3, "step": 1}
    bc = compile_program("source id=ett | split a b cond=val1 > 1")
    assert bc.components[1].callbacks["cond"].source == "val1 > 1"
    assert bc.flows == {"a": (1, 0), "b": (1, 1)}
    prog = parse("x k=max(a, b) > 1, other=2 j=[1, 2]")
    args = prog.statements[0].stages[0].args
    assert [(a.key, a.text) for a in args] == [
        ("k", "max(a, b) > 1"),
        ("other", "2"),
        ("j", "[1, 2]"),
    ]


def test_values_strings_numbers_booleans_lists():
    bc = compile_program(
        "normalsource col=v mean=-1.5 std=2e-1 rows=10 | select cols=[v, 'w'] | "
        'alert level="warn\\n" db=true'
    )
    src, sel, alert = bc.components
    assert src.args == {"col": "v", "mean": -1.5, "std": 0.2, "rows": 10}
    assert sel.args == {"cols": ["v", "w"]}
    assert alert.args == {"level": "warn\n", "db": True}
    assert compile_program("source id=x | minmax_scaler cols=v | print").components[1].args == {
        "cols": ["v"]
    }


def test_multiline_named_flows_join_split_comments():
    bc = compile_program(MULTI)
    names = [c.name for c in bc.components]
    assert names == ["source", "csv", "join", "filter", "split", "assign", "sink", "print"]
    assert bc.flows == {
        "left": (0, 0),
        "right": (1, 0),
        "both": (2, 0),
        "hot": (4, 0),
        "cold": (4, 1),
    }
    join = bc.components[2]
    assert join.inputs == [(0, 0), (1, 0)]
    assert join.args == {"on": "ts", "tolerance": "5min"}
    assign = bc.components[5]
    assert set(assign.callbacks) == {"y", "z"}
    assert assign.callbacks["z"].target == "z"
    assert bc.components[7].inputs == [(4, 1)]
    assert bc.components[7].line == 13
    # mid-pipeline join: the upstream flow is the left input
    bc = compile_program("a = source id=x\nb = source id=y\na | join b on=ts | print")
    assert bc.components[2].inputs == [(0, 0), (1, 0)]


def test_empty_and_comment_only_programs():
    assert parse("").statements == []
    assert parse("# nothing\n\n   # here\n").statements == []
    assert compile_program("# nothing").components == []


def test_ast_positions():
    prog = parse('\n  raw = source id="ett"')
    st_ = prog.statements[0]
    assert st_.target == "raw" and (st_.target_line, st_.target_column) == (2, 3)
    comp = st_.stages[0]
    assert isinstance(comp, n.Component) and (comp.line, comp.column) == (2, 9)
    assert isinstance(comp.args[0].value, n.Str)


# --- errors --------------------------------------------------------------------------------


def err(text: str, kind=AmmlError) -> AmmlError:
    with pytest.raises(kind) as info:
        compile_program(text)
    assert isinstance(info.value, TsloomError)
    return info.value


def test_unknown_component_suggests_and_points():
    e = err('source id="ett"\nx = source id="ett" | minmax_scalr | print', AmmlCompileError)
    assert (e.line, e.column) == (2, 23)
    assert e.hint == "did you mean `minmax_scaler`?"
    text = str(e)
    assert "line 2, column 23: unknown component `minmax_scalr`" in text
    assert '    x = source id="ett" | minmax_scalr | print\n' in text
    assert "\n                          ^^^^^^^^^^^^" in text  # caret under the name


def test_unknown_argument_suggests():
    e = err('source id="ett" | train_lstm model="m" epochs=3 | print', AmmlCompileError)
    assert "has no argument `epochs`" in e.message and e.hint == "did you mean `epoch`?"
    assert e.column == len('source id="ett" | train_lstm model="m" ') + 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("print", "starts with a source"),
        ("source id=x | csv path=a", "can only start"),
        ("source id=x | print | filter cond=a", "ends a pipeline"),
        ("source id=x | window", "needs the argument `size`"),
        ("source", "needs one of"),
        ("source id=x | window size=1.5", "whole number"),
        ("source id=x | window size=a+1", "not an expression"),
        ("source id=x | window size=1 size=2", "given twice"),
        ("source id=x | filter cond=a.b", "attribute access"),
        ("source id=x | filter cond=__class__", "dunder"),
        ("source id=x | filter cond=import", "imports"),
        ("source id=x | filter cond=" + "abs(" * 70 + "a" + ")" * 70, "nested too deeply"),
        ("source id=x | window size=" + "9" * 60, "too large"),
        ("source id=x | print hello", "bare name"),
        ("a = source id=x\na = source id=y", "already defined"),
        ("print = source id=x", "is a component"),
        ("a = source id=x\nb = join a nope", "unknown flow `nope`"),
        ("a = source id=x\njoin a | print", "needs 2 flow names"),
        ("a = source id=x\nb = a | split c d", "names its own output"),
        ("a = source id=x\na", "goes nowhere"),
        ("a = source id=x\na x=1 | print", "takes no arguments"),
    ],
)
def test_compile_errors(text, needle):
    e = err(text, AmmlCompileError)
    assert needle in str(e)
    assert e.line is not None and e.column is not None
    assert "^" in e.snippet


@pytest.mark.parametrize(
    ("text", "line", "column", "hint"),
    [
        ("source id=x | filter cond=a = 1", 1, 29, "use `==`"),
        ("source id=x | filter cond=a < b < c", 1, 33, "do not chain"),
        ("source id=x | filter cond=a || b", 1, 30, "use `or`"),
        ("source id=x | filter cond=a && b", 1, 29, "use `and`"),
        ('source id="ett', 1, 11, "must end on the line"),
        ("source id=x |\n\n", 3, 1, None),
        ("a = source id=x\nb = a | | print", 2, 9, None),
        ("source id=ett:0.1", 1, 14, "quote values"),
        ("source id=x | filter cond=(a > 1", 1, 33, None),
    ],
)
def test_syntax_errors_have_place_and_caret(text, line, column, hint):
    e = err(text, AmmlSyntaxError)
    assert (e.line, e.column) == (line, column), str(e)
    lines = e.snippet.split("\n")
    assert len(lines) == 2 and lines[1].index("^") == 4 + column - 1
    if hint:
        assert hint in (e.hint or "")


# --- bytecode --------------------------------------------------------------------------------


def test_bytecode_json_round_trip():
    bc = compile_program(MULTI)
    text = bc.to_json()
    json.loads(text)  # plain JSON
    again = Bytecode.from_json(text)
    assert again == bc
    assert [c.name for c in again.components] == [c.name for c in bc.components]
    assert again.flows == bc.flows
    assert listing(again) == listing(bc)
    assert again.components[3].callbacks["cond"].evaluate({"val1": 2, "val2": 1}) is True


def test_bytecode_from_json_rejects_tampering():
    data = compile_program(TRAIN).to_dict()
    for broken in (
        {**data, "format": "x"},
        {**data, "code": data["code"][:-1]},  # no WF_END
        {**data, "code": [["WF_LOAD_FLOW", "nope"], ["WF_END"]]},
        {**data, "code": [["OS_SYSTEM", "rm"], ["WF_END"]]},
        {**data, "consts": [{"a": 1}]},
    ):
        with pytest.raises(AmmlCompileError):
            b = Bytecode.from_json(json.dumps(broken))
            _ = b.components


def test_listing_contains_opcodes_in_order():
    text = listing("source id=ett | filter cond=val1 > 1 | print")
    order = [
        "CONST_DEF_START",
        '"ett"',
        "CONST_DEF_END",
        "WF_DEF_CALLBACK",
        "INSTRUCTION_START",
        "LOAD_VALUE        val1",
        "LOAD_CONST        0  (1.0)",
        "CMP_GT",
        "ASSIGN            cond",
        "WF_FLOW_START",
        "WF_MAKE_COMPONENT 0 source",
        "WF_SET_ARG        id",
        "WF_ADD_COMPONENT",
        "WF_MAKE_COMPONENT 1 filter",
        "WF_ADD_CALLBACK   cond 0",
        "WF_MAKE_COMPONENT 2 print",
        "WF_END",
    ]
    pos = -1
    for needle in order:
        nxt = text.find(needle, pos + 1)
        assert nxt > pos, f"{needle!r} missing or out of order in\n{text}"
        pos = nxt
    assert "WF_ASSIGN" in listing("a = source id=x\na | print")
    every = set(WORKFLOW_OPCODES) | set(CALLBACK_OPCODES)
    assert {"WF_MAKE_COMPONENT", "CMP_GT", "ASSIGN", "WF_END", "LOAD_CONST"} <= every


# --- fuzz: nothing escapes but the language's own errors ----------------------------------

_pieces = st.sampled_from(
    [
        "source", "id", "=", "==", '"ett"', "'x'", '"', "|", "||", ",", " ", "\n", "#c\n", "(",
        ")", "[", "]", "1", "1.5e3", "-", "+", "*", "/", "and", "or", "not", "true", "null",
        "filter", "cond", "val1", ">", "<=", "join", "split", "a", "b", "print", "\\\n", ".",
        "__x__", ":", "!", "&", "abs(", "if(", "\t", "\r\n", "é", "\x00",
    ]
)  # fmt: skip
_texts = st.one_of(
    st.text(max_size=60),
    st.lists(_pieces, max_size=30).map("".join),
    st.lists(_pieces, max_size=30).map(" ".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts)
def test_fuzz_parser_raises_only_syntax_errors(text):
    try:
        parse(text)
    except AmmlSyntaxError as e:
        assert e.message  # a message, with a place when there is one
    # any other exception fails the test


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts)
def test_fuzz_compiler_raises_only_amml_errors(text):
    try:
        bc = compile_program(text)
    except AmmlError:
        return
    assert Bytecode.from_json(bc.to_json()) == bc
    listing(bc)


def test_absurd_inputs_fail_cleanly():
    for text in ("(" * 10_000, "[" * 300 + "]" * 300, "x k=" + "-" * 50_000 + "1", "a" * 2_000_000):
        with pytest.raises(AmmlError):
            compile_program(text)


def test_cli_flow_compile_prints_the_listing(tmp_path) -> None:
    from typer.testing import CliRunner

    from tsloom.cli import app

    source = tmp_path / "train.amml"
    source.write_text('source id="ett" | minmax_scaler | train_lstm model="ett:0.1", epoch=20\n')
    result = CliRunner().invoke(app, ["flow", "compile", str(source)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("WF_MAKE_COMPONENT 0 source") < out.index("WF_MAKE_COMPONENT 2 train_lstm")
    assert "WF_END" in out
    bad = tmp_path / "bad.amml"
    bad.write_text('source id="ett" | minmax_scalr\n')
    failed = CliRunner().invoke(app, ["flow", "compile", str(bad)])
    assert "did you mean `minmax_scaler`" in str(failed.exception.hint)
