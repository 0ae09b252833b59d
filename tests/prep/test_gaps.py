"""Divide-and-round gap filling."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from _prep_synth import timestamps
from hypothesis import given, settings
from hypothesis import strategies as st

from tsloom.errors import PrepError
from tsloom.prep import estimate_period, estimate_periods, fill_gaps

UTC = dt.UTC


def _at(*hms: str) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(f"2024-03-01T{t}+00:00") for t in hms]


def test_source_co2_example():
    df = pl.DataFrame({"ts": _at("00:05:49", "00:15:49", "00:45:49"), "co2": [410.0, 412.0, 415.0]})
    out, report = fill_gaps(df, dt.timedelta(minutes=10))
    assert out.get_column("ts").to_list() == _at(
        "00:05:49", "00:15:49", "00:25:49", "00:35:49", "00:45:49"
    )
    assert out.get_column("co2").to_list() == [410.0, 412.0, None, None, 415.0]
    assert out.get_column("_inserted").to_list() == [False, False, True, True, False]
    assert (report.gaps, report.inserted, report.largest_gap_points) == (1, 2, 2)
    assert out.schema["ts"] == pl.Datetime("us", "UTC")


def test_rounding_tolerates_jitter():
    # 10-minute sensor: a 14-minute gap is round(1.4) - 1 = 0 missing,
    # a 26-minute gap is round(2.6) - 1 = 2 missing, placed one period apart
    df = pl.DataFrame({"ts": _at("00:00:00", "00:14:00", "00:40:00"), "x": [1.0, 2.0, 3.0]})
    out, report = fill_gaps(df, dt.timedelta(minutes=10))
    assert report.inserted == 2
    assert out.get_column("ts").to_list() == _at(
        "00:00:00", "00:14:00", "00:24:00", "00:34:00", "00:40:00"
    )


def test_per_key_and_period_table():
    df = pl.DataFrame(
        {
            "sensor": ["a", "a", "b", "b", "a"],
            "ts": _at("00:00:00", "00:20:00", "00:00:00", "00:30:00", "00:25:00"),
            "x": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    periods = pl.DataFrame(
        {"sensor": ["a", "b"], "period": [dt.timedelta(minutes=5), dt.timedelta(minutes=10)]}
    )
    out, report = fill_gaps(df, periods, by="sensor")
    a = out.filter(pl.col("sensor") == "a")
    b = out.filter(pl.col("sensor") == "b")
    assert a.get_column("ts").to_list() == _at(
        "00:00:00", "00:05:00", "00:10:00", "00:15:00", "00:20:00", "00:25:00"
    )
    assert b.get_column("ts").to_list() == _at("00:00:00", "00:10:00", "00:20:00", "00:30:00")
    assert (report.gaps, report.inserted) == (2, 3 + 2)
    # no rows invented between the end of one key and the start of the next
    assert out.filter(pl.col("_inserted")).get_column("sensor").to_list() == ["a"] * 3 + ["b"] * 2


def test_max_fill_skips_long_outages_and_duplicates_add_nothing():
    df = pl.DataFrame(
        {"ts": _at("00:00:00", "00:00:00", "00:10:00", "05:00:00", "05:30:00"), "x": [1.0] * 5}
    )
    out, report = fill_gaps(df, dt.timedelta(minutes=10), max_fill=10)
    assert report.skipped_gaps == 1 and report.skipped_points == 28
    assert report.inserted == 2
    assert out.height == 7


def test_existing_flag_is_kept_and_bad_period_rejected():
    df = pl.DataFrame({"ts": _at("00:00:00", "00:20:00"), "x": [1.0, 2.0]})
    once, _ = fill_gaps(df, dt.timedelta(minutes=10))
    twice, report = fill_gaps(once, dt.timedelta(minutes=10))
    assert report.inserted == 0
    assert twice.get_column("_inserted").to_list() == [False, True, False]
    with pytest.raises(PrepError):
        fill_gaps(df, dt.timedelta(0))


@settings(max_examples=25, deadline=None)
@given(
    period=st.sampled_from([1, 60, 600, 3600]),
    n=st.integers(50, 800),
    jitter=st.floats(0, 0.24),
    missing=st.floats(0, 0.3),
    seed=st.integers(0, 2**31),
)
def test_property_restores_every_slot(period, n, jitter, missing, seed):
    """With jitter under a quarter period every missing slot comes back exactly once."""
    t = np.unique(timestamps(n, period, jitter=jitter, missing=missing, seed=seed))
    df = pl.DataFrame({"ts": t}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.lit(1.0).alias("x")
    )
    est = estimate_period(df.get_column("ts"))
    out, report = fill_gaps(df, est)
    assert out.height == n
    assert report.inserted == n - t.size
    step = out.get_column("ts").diff().drop_nulls().dt.total_microseconds().to_numpy()
    assert np.all(np.abs(step - period * 1e6) <= 0.5 * period * 1e6)


def test_estimate_then_fill_per_key():
    t1 = timestamps(200, 300, jitter=0.1, missing=0.2, seed=1)
    t2 = timestamps(100, 600, jitter=0.1, missing=0.2, seed=2)
    df = pl.DataFrame(
        {"k": ["p"] * t1.size + ["q"] * t2.size, "ts": np.concatenate([t1, t2])}
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.lit(0.0).alias("x"))
    df = df.unique(["k", "ts"])
    out, _ = fill_gaps(df, estimate_periods(df, by="k"), by="k")
    assert out.group_by("k").len().sort("k").get_column("len").to_list() == [200, 100]


def test_report_counts_each_gap_without_a_limit() -> None:
    import datetime as dt

    import polars as pl

    from tsloom.prep import fill_gaps

    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    minutes = [0, 10, 30, 40, 70, 80]  # two gaps: one and two missing readings
    frame = pl.DataFrame(
        {"ts": [start + dt.timedelta(minutes=m) for m in minutes], "v": [1.0] * 6}
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    _, report = fill_gaps(frame, dt.timedelta(minutes=10))
    assert (report.gaps, report.inserted, report.largest_gap_points) == (2, 3, 2)
