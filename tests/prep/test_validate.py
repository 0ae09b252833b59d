"""Schema and timestamp validation."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsloom.errors import PrepError
from tsloom.prep import parse_timestamps, validate, validate_schema, validate_timestamps

NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_schema_report():
    df = pl.DataFrame({"ts": [_utc(2024, 1, 1)], "temp": ["12"], "extra": [1]})
    rep = validate_schema(
        df, {"ts": pl.Datetime, "temp": "float", "hum": "float"}, allow_extra=False
    )
    assert not rep.ok
    assert rep.count("missing_column") == 1
    assert rep.count("wrong_type") == 1
    assert rep.count("extra_column") == 1
    wrong = next(p for p in rep.problems if p.kind == "wrong_type")
    assert "temp" in wrong.examples[0] and "String" in wrong.examples[0]
    ok = validate_schema(df.with_columns(pl.col("temp").cast(pl.Float32)), {"temp": "float"})
    assert ok.ok


def test_clean_frame_is_ok():
    df = pl.DataFrame({"ts": [_utc(2024, 1, 1, h) for h in range(5)], "x": [1.0] * 5})
    rep = validate(df, {"ts": pl.Datetime("us", "UTC"), "x": pl.Float64}, now=NOW)
    assert rep.ok, rep.to_dict()
    assert rep.to_dict() == {"ok": True, "n_rows": 5, "problems": []}


def test_timestamp_problems_in_datetimes():
    ts = [
        _utc(2024, 1, 1, 0),
        _utc(2024, 1, 1, 2),
        _utc(2024, 1, 1, 1),  # out of order
        _utc(2024, 1, 1, 2),  # duplicate
        _utc(2030, 1, 1),  # future
        None,  # missing
    ]
    df = pl.DataFrame({"ts": ts, "x": [1.0] * 6})
    rep = validate_timestamps(df, now=NOW, start=_utc(2024, 1, 1, 0, 30))
    assert rep.count("out_of_order") == 1
    assert rep.count("duplicate") == 1
    assert rep.count("future") == 1
    assert rep.count("missing") == 1
    assert rep.count("before_start") == 1
    assert "naive" not in rep.kinds()
    out_of_order = next(p for p in rep.problems if p.kind == "out_of_order")
    assert out_of_order.examples[0].startswith("row 2")
    json.dumps(rep.to_dict())  # serialisable


def test_duplicates_and_order_are_per_key():
    df = pl.DataFrame(
        {
            "sensor": ["a", "b", "a", "b"],
            "ts": [
                _utc(2024, 1, 1, 0),
                _utc(2024, 1, 1, 0),
                _utc(2024, 1, 1, 1),
                _utc(2024, 1, 1, 1),
            ],
        }
    )
    assert validate_timestamps(df, by="sensor", now=NOW).ok
    assert validate_timestamps(df, now=NOW).count("duplicate") == 2


def test_strings_unparseable_and_naive():
    df = pl.DataFrame(
        {
            "ts": [
                "2024-01-01 00:00:00",
                "2024-01-01T01:00:00+02:00",
                "2024-01-01T02:00:00Z",
                "yesterday",
                "2024-13-01 00:00:00",
                None,
            ]
        }
    )
    rep = validate_timestamps(df, now=NOW)
    assert rep.count("missing") == 1
    assert rep.count("unparseable") == 2
    bad = next(p for p in rep.problems if p.kind == "unparseable")
    assert set(bad.examples) == {"yesterday", "2024-13-01 00:00:00"}
    assert rep.count("naive") == 1  # the two zoned strings are fine, garbage is unparseable
    assert rep.count("out_of_order") == 1  # 01:00+02:00 is 23:00 UTC the day before


def test_naive_datetime_column_and_end():
    df = pl.DataFrame({"ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1)]})
    rep = validate_timestamps(df, now=NOW, end=_utc(2024, 1, 15))
    assert rep.count("naive") == 2
    assert rep.count("after_end") == 1
    assert validate_timestamps(df, now=NOW, require_zone=False, end=_utc(2025, 1, 1)).ok


def test_parse_timestamps():
    df = pl.DataFrame({"ts": ["2024-01-01 00:00:00", "2024-01-01T03:00:00+02:00"], "x": [1, 2]})
    out = parse_timestamps(df)
    assert out.schema["ts"] == pl.Datetime("us", "UTC")
    assert out.get_column("ts").to_list() == [_utc(2024, 1, 1, 0), _utc(2024, 1, 1, 1)]
    berlin = parse_timestamps(df.head(1), assume_tz="Europe/Berlin")
    assert berlin.get_column("ts").to_list() == [_utc(2023, 12, 31, 23)]
    custom = parse_timestamps(pl.DataFrame({"ts": ["01.02.2024 10:00"]}), fmt="%d.%m.%Y %H:%M")
    assert custom.get_column("ts").to_list() == [_utc(2024, 2, 1, 10)]
    with pytest.raises(PrepError, match="not timestamps"):
        parse_timestamps(pl.DataFrame({"ts": ["2024-01-01", "soon"]}))
    lenient = parse_timestamps(pl.DataFrame({"ts": ["2024-01-01", "soon"]}), strict=False)
    assert lenient.get_column("ts").null_count() == 1


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 6)), max_size=25),
    in_order=st.booleans(),
)
def test_property_duplicate_and_order_counts(rows, in_order):
    if in_order:
        rows = sorted(rows, key=lambda r: r[1])
    df = pl.DataFrame(
        {"k": [r[0] for r in rows], "ts": [_utc(2024, 1, 1, r[1]) for r in rows]},
        schema={"k": pl.String, "ts": pl.Datetime("us", "UTC")},
    )
    rep = validate_timestamps(df, by="k", now=NOW)
    assert rep.count("duplicate") == len(rows) - len(set(rows))
    last: dict[str, int] = {}
    back = 0
    for k, h in rows:
        back += k in last and h < last[k]
        last[k] = h
    assert rep.count("out_of_order") == back
