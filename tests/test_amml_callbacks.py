"""AMML callback scripts: compile-time safety and vectorised (polars) ≡ per-record semantics."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsloom.amml import AmmlCompileError, AmmlSyntaxError, Callback, check_names, compile_callback
from tsloom.amml.callbacks import MAX_DEPTH, MAX_INSTRUCTIONS
from tsloom.errors import TsloomError

COLS = ["a", "b", "c"]


def run_both(cb: Callback, data: dict[str, list]) -> tuple[list, list]:
    df = pl.DataFrame(data, schema={k: pl.Float64 for k in data})
    vec = df.with_columns(cb.to_polars())[cb.target].to_list()
    ref = [cb.evaluate(r) for r in df.to_dicts()]
    return vec, ref


def same(x, y) -> bool:
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, bool) or isinstance(y, bool):
        return x == y and type(x) is type(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-300)


def test_filter_example_compiles_to_the_documented_opcodes():
    cb = compile_callback("val1 > 1", target="cond")
    assert [i[0] for i in cb.code] == ["LOAD_VALUE", "LOAD_CONST", "CMP_GT", "ASSIGN"]
    assert cb.names == ("val1",)
    assert cb.target == "cond"
    vec, ref = run_both(cb, {"val1": [0.0, 1.0, 2.0, None, float("nan")]})
    assert vec == ref == [False, False, True, None, None]


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("a / b", {"a": 1.0, "b": 0.0}, None),  # division by zero is null
        ("a / b", {"a": 1.0, "b": -0.0}, None),
        ("a - b", {"a": math.inf, "b": math.inf}, None),  # NaN results are null
        ("a + 1", {"a": float("nan")}, None),  # NaN read from a column is null
        ("is_null(a)", {"a": float("nan")}, True),
        ("is_null(a)", {"a": 2.0}, False),
        ("a > 1 and b > 1", {"a": 0.0, "b": None}, False),  # Kleene logic
        ("a > 1 or b > 1", {"a": 2.0, "b": None}, True),
        ("a > 1 or b > 1", {"a": 0.0, "b": None}, None),
        ("not a", {"a": 0.0}, True),
        ("if(a > 1, 10, 20)", {"a": None}, 20.0),  # null condition → else branch
        ("log(a)", {"a": 0.0}, None),
        ("sqrt(a)", {"a": -1.0}, None),
        ("exp(a)", {"a": 1000.0}, math.inf),
        ("round(a)", {"a": 2.5}, 2.0),  # half to even
        ("round(a, 1)", {"a": 0.25}, 0.2),
        ("min(a, b, 3)", {"a": None, "b": 5.0}, 3.0),  # nulls ignored
        ("max(a, b)", {"a": None, "b": None}, None),
        ("clip(a, 0, 1)", {"a": 7.0}, 1.0),
        ("abs(-a) * 2", {"a": -3.0}, 6.0),
        ("(a > 1) + 1", {"a": 5.0}, 2.0),
        ("a == true", {"a": 1.0}, True),
        ("null", {}, None),
    ],
)
def test_semantics_cases_agree(text, record, expected):
    cb = compile_callback(text)
    data = {k: [v] for k, v in record.items()} or {"a": [1.0]}
    vec, ref = run_both(cb, data)
    assert same(ref[0], expected), (text, ref)
    assert same(vec[0], expected), (text, vec)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("__class__", "dunder"),
        ("a.__class__", "attribute access"),
        ("a.real", "attribute access"),
        ("a[0]", "indexing"),
        ("import", "imports are not allowed"),
        ("__import__(a)", "dunder"),
        ("eval(a)", "not allowed"),
        ("exec(a)", "not allowed"),
        ("open(a)", "not allowed"),
        ("lambda", "not allowed"),
        ("mean(a)", "unknown function"),
        ('a == "x"', "text values"),
        ("[1, 2]", "lists"),
        ("1" * 50, "too large"),
        ("1e999", "too large"),
        ("abs(a, b)", "takes 1 argument"),
        ("round(a, b)", "round"),
        ("abs(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1), "nested too deeply"),
        ("-" * (MAX_DEPTH + 5) + "a", "nested too deeply"),
        ("True", "use `true`"),
    ],
)
def test_unsafe_or_absurd_scripts_are_rejected_at_compile_time(text, needle):
    with pytest.raises(AmmlCompileError) as info:
        compile_callback(text)
    assert needle in str(info.value)
    assert isinstance(info.value, TsloomError)
    assert info.value.line == 1


def test_too_many_instructions_rejected():
    # shallow but long: a sum of many products inside max()
    text = "max(" + ", ".join(["a * b + c * a + b * c - a * a + b"] * 16) + ")"
    text = " + ".join([text] * 6)
    with pytest.raises(AmmlCompileError, match="too long"):
        compile_callback(text)
    assert MAX_INSTRUCTIONS < 1000


def test_syntax_errors_are_syntax_errors():
    for text in ["a >", "a < b < c", "a = 1", "a && b", "1 +* 2", ")", ""]:
        with pytest.raises(AmmlSyntaxError):
            compile_callback(text)


def test_check_names_suggests_columns():
    cb = compile_callback("val1 > 1 and vla2 < 3")
    check_names(compile_callback("val1 > 1"), ["val1", "val2"])
    with pytest.raises(AmmlCompileError, match="unknown column `vla2`") as info:
        check_names(cb, ["val1", "val2"])
    assert "did you mean `val2`" in str(info.value)
    with pytest.raises(AmmlCompileError):
        compile_callback("x + 1", columns=["a"])


def test_callback_json_round_trip_and_verification():
    cb = compile_callback("if(a > b, clip(a, 0, 1), -b) + round(c, 2)", target="y")
    again = Callback.from_json(cb.to_json())
    assert again == cb
    bad = cb.to_json()
    bad["code"] = [["LOAD_VALUE", "a"], ["CALL", "system", 1], ["ASSIGN", "y"]]
    with pytest.raises(AmmlCompileError, match="invalid callback bytecode"):
        Callback.from_json(bad)
    bad["code"] = [["LOAD_VALUE", "__class__"], ["ASSIGN", "y"]]
    with pytest.raises(AmmlCompileError):
        Callback.from_json(bad)
    bad["code"] = [["ADD"], ["ASSIGN", "y"]]
    with pytest.raises(AmmlCompileError, match="underflow"):
        Callback.from_json(bad)


def test_text_in_a_column_is_a_runtime_error_in_the_reference():
    cb = compile_callback("a + 1")
    with pytest.raises(TsloomError, match="not a number"):
        cb.evaluate({"a": "x"})
    with pytest.raises(TsloomError, match="no column"):
        cb.evaluate({"b": 1})


# --- property test: random expressions over random data -----------------------------------

_atoms = st.one_of(
    st.sampled_from(COLS),
    st.sampled_from(["0", "1", "2.5", "-3", "0.5", "1e3", "true", "false", "null"]),
)


def _extend(inner):
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(inner, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"(not {x})"),
        inner.map(lambda x: f"(-{x})"),
        st.tuples(st.sampled_from(["abs", "exp", "log", "sqrt", "round", "is_null"]), inner).map(
            lambda t: f"{t[0]}({t[1]})"
        ),
        st.tuples(inner, st.integers(-2, 3)).map(lambda t: f"round({t[0]}, {t[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=1, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"clip({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"if({t[0]}, {t[1]}, {t[2]})"),
    )


expressions = st.recursive(_atoms, _extend, max_leaves=12)
values = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.5, math.nan, math.inf, -math.inf, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=expressions,
    rows=st.lists(st.tuples(values, values, values), min_size=1, max_size=8),
)
def test_vectorised_equals_per_record(text, rows):
    cb = compile_callback(text)
    data = {c: [r[i] for r in rows] for i, c in enumerate(COLS)}
    vec, ref = run_both(cb, data)
    for v, r in zip(vec, ref, strict=True):
        assert same(v, r), (text, rows, vec, ref)
