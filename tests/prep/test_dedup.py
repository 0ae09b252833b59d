"""Deduplication: exact copies and same-timestamp conflicts."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsloom.errors import PrepError
from tsloom.prep import deduplicate

T = [dt.datetime(2024, 1, 1, h, tzinfo=dt.UTC) for h in range(4)]


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sensor": ["a", "a", "a", "a", "b", "b", "a"],
            "ts": [T[1], T[0], T[1], T[1], T[0], T[0], T[2]],
            "x": [5.0, 1.0, 5.0, 7.0, 2.0, 2.0, 3.0],
            "unit": ["c", "c", "c", "f", "c", "c", "c"],
        }
    )


def test_exact_duplicates_and_first_policy(frame):
    out, rep = deduplicate(frame, by="sensor")
    assert rep.exact_duplicates == 2  # the repeated (a, T1, 5.0) and (b, T0, 2.0)
    assert rep.conflicts == 1  # (a, T1) has 5.0 and 7.0
    assert rep.conflict_rows_removed == 1
    assert (rep.rows_in, rep.rows_out) == (7, 4)
    assert out.select("sensor", "ts", "x").rows() == [
        ("a", T[0], 1.0),
        ("a", T[1], 5.0),
        ("a", T[2], 3.0),
        ("b", T[0], 2.0),
    ]


def test_last_and_mean_policies(frame):
    last, _ = deduplicate(frame, by="sensor", policy="last")
    assert last.filter(pl.col("ts") == T[1]).get_column("x").to_list() == [7.0]
    mean, rep = deduplicate(frame, by="sensor", policy="mean")
    row = mean.filter(pl.col("ts") == T[1])
    assert row.get_column("x").to_list() == [6.0]
    assert row.get_column("unit").to_list() == ["c"]  # non-numeric: first value
    assert mean.schema == frame.schema
    assert rep.to_dict()["policy"] == "mean"


def test_without_keys_timestamps_collide_across_sensors(frame):
    out, rep = deduplicate(frame.drop("sensor"))
    assert out.get_column("ts").to_list() == [T[0], T[1], T[2]]
    assert rep.conflicts == 2


def test_bad_policy_and_missing_column(frame):
    with pytest.raises(PrepError, match="policy"):
        deduplicate(frame, policy="median")  # type: ignore[arg-type]
    with pytest.raises(PrepError, match="station"):
        deduplicate(frame, by="station")


def test_last_means_last_received():
    df = pl.DataFrame({"ts": [T[0], T[0], T[0]], "x": [1.0, 2.0, 1.0]})  # A, B, A re-sent
    out, rep = deduplicate(df, policy="last")
    assert out.get_column("x").to_list() == [1.0]
    assert (rep.exact_duplicates, rep.conflicts, rep.conflict_rows_removed) == (1, 1, 1)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(0, 4), st.sampled_from([1.0, 2.0, 4.0])),
        max_size=30,
    ),
    policy=st.sampled_from(["first", "last", "mean"]),
)
def test_property_matches_a_plain_python_reference(rows, policy):
    df = pl.DataFrame(
        {
            "k": [r[0] for r in rows],
            "ts": [T[0] + dt.timedelta(hours=r[1]) for r in rows],
            "x": [r[2] for r in rows],
        },
        schema={"k": pl.String, "ts": pl.Datetime("us", "UTC"), "x": pl.Float64},
    )
    out, rep = deduplicate(df, by="k", policy=policy)
    groups: dict[tuple, list[float]] = {}
    for k, h, x in rows:
        groups.setdefault((k, h), []).append(x)
    expected = {}
    for key, xs in groups.items():
        distinct = list(dict.fromkeys(xs))
        expected[key] = {"first": xs[0], "last": xs[-1], "mean": sum(distinct) / len(distinct)}[
            policy
        ]
    got = {(k, int((t - T[0]).total_seconds() // 3600)): x for k, t, x in out.rows()}
    assert got == pytest.approx(expected)
    assert list(got) == sorted(got)  # sorted by key, then time
    assert rep.rows_out == len(groups)
    assert rep.exact_duplicates == len(rows) - len(set(rows))
    assert rep.conflicts == sum(len(set(xs)) > 1 for xs in groups.values())
