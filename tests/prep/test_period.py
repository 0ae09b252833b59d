"""Period estimation: exact on ETT, robust to jitter, missing points and duplicates."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from _prep_synth import T0, timestamps
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tsloom.errors import PrepError
from tsloom.prep import approximate_gcd, estimate_period, estimate_periods
from tsloom.prep.period import NICE_PERIODS_US

NICE_S = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 86400]


def _ett_ts(path) -> pl.Series:
    df = pl.read_csv(path, columns=["date"])
    return df.get_column("date").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC")


@pytest.mark.parametrize(("name", "expected"), [("ETTh1", 3600), ("ETTm1", 900)])
def test_exact_on_ett(ett_dir, name, expected):
    est = estimate_period(_ett_ts(ett_dir / f"{name}.csv"))
    assert est.period == dt.timedelta(seconds=expected)
    assert est.confidence > 0.99
    assert est.modes[0] == dt.timedelta(seconds=expected)


def test_ett_with_missing_rows_and_duplicates(ett_dir):
    ts = _ett_ts(ett_dir / "ETTh1.csv")
    rng = np.random.default_rng(1)
    keep = rng.random(ts.len()) > 0.3
    damaged = pl.concat([ts.filter(pl.Series(keep)), ts.head(500)]).shuffle(seed=3)
    est = estimate_period(damaged)
    assert est.period == dt.timedelta(hours=1)
    # with 30% missing, gaps of 2 and 3 hours are common clusters, yet the GCD is 1 h
    assert dt.timedelta(hours=2) in est.modes


def test_source_example_jittered_ten_minutes():
    # the design's 10-minute sensor reporting gaps of 530 000, 610 000, 660 000 ms ...
    gaps_ms = np.tile([530_000, 610_000, 660_000, 600_000], 100)
    t = int(T0.timestamp() * 1e6) + np.concatenate([[0], np.cumsum(gaps_ms)]) * 1000
    est = estimate_period(t)
    assert est.period == dt.timedelta(minutes=10)
    assert est.confidence < 0.95  # jitter lowers the confidence, not the answer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    period=st.sampled_from(NICE_S),
    n=st.integers(150, 2000),
    jitter=st.floats(0, 0.25),
    missing=st.floats(0, 0.3),
    duplicates=st.floats(0, 0.1),
    seed=st.integers(0, 2**31),
)
def test_property_nice_periods_exact(period, n, jitter, missing, duplicates, seed):
    t = timestamps(n, period, jitter=jitter, missing=missing, duplicates=duplicates, seed=seed)
    est = estimate_period(t)
    assert est.period == dt.timedelta(seconds=period)
    assert 0 <= est.confidence <= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    period=st.integers(10, 900),
    n=st.integers(400, 2000),
    jitter=st.floats(0, 0.25),
    missing=st.floats(0, 0.3),
    duplicates=st.floats(0, 0.1),
    seed=st.integers(0, 2**31),
)
@example(period=599, n=400, jitter=0.25, missing=0.0, duplicates=0.0, seed=748)
def test_property_arbitrary_whole_second_periods_exact(
    period, n, jitter, missing, duplicates, seed
):
    """Exact, except where the documented rounding rule snaps to a nice period: one that
    the data cannot tell from the true period (within 5 standard errors, at most 1 %)."""
    t = timestamps(n, period, jitter=jitter, missing=missing, duplicates=duplicates, seed=seed)
    est = estimate_period(t)
    if est.period != dt.timedelta(seconds=period):
        nice_us = round(est.period.total_seconds() * 1e6)
        assert nice_us in NICE_PERIODS_US, (est, period)
        off_us = abs(period * 1e6 - nice_us)
        assert off_us <= min(0.01 * nice_us, 5 * est.stderr_us), (est, period)


@settings(max_examples=25, deadline=None)
@given(period=st.integers(1, 100_000), n=st.integers(3, 500), missing=st.floats(0, 0.3))
def test_property_exact_grid_any_period(period, n, missing):
    """Without jitter any whole-second period is found; a very short series with points
    missing may only show a multiple of it."""
    t = timestamps(n, period, missing=missing, seed=period)
    if np.unique(t).size < 3:
        with pytest.raises(PrepError, match="too few"):
            estimate_period(t)
        return
    got = estimate_period(t).period.total_seconds()
    assert got % period == 0
    if n >= 50:
        assert got == period


def test_confidence_separates_regular_from_random():
    regular = estimate_period(timestamps(1000, 600, jitter=0.05, missing=0.1))
    rng = np.random.default_rng(0)
    poisson = np.cumsum(rng.exponential(600e6, 1000)).astype(np.int64)
    random = estimate_period(poisson)
    assert regular.confidence > 0.8
    assert random.confidence < 0.3


def test_no_snap_keeps_off_grid_period():
    t = timestamps(2000, 598, jitter=0.1, seed=4)
    assert estimate_period(t).period == dt.timedelta(seconds=598)
    assert estimate_period(timestamps(2000, 601.3, seed=4), snap=False).period == dt.timedelta(
        seconds=601.3
    )


def test_accepts_datetimes_and_numpy_datetime64():
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    stamps = [base + dt.timedelta(minutes=5 * i) for i in range(50)]
    assert estimate_period(stamps).period == dt.timedelta(minutes=5)
    arr = np.array([s.replace(tzinfo=None) for s in stamps], dtype="datetime64[us]")
    assert estimate_period(arr).period == dt.timedelta(minutes=5)


def test_too_few_points():
    with pytest.raises(PrepError, match="too few distinct timestamps"):
        estimate_period(np.array([0, 0, 1_000_000]))


def test_approximate_gcd():
    assert approximate_gcd(np.array([600.0, 1200.0, 1800.0])) == 600.0
    assert approximate_gcd(np.array([600.0, 900.0])) == 300.0
    assert approximate_gcd(np.array([595.0, 1210.0, 1790.0])) == pytest.approx(605, abs=10)


def test_estimate_periods_by_key():
    a = timestamps(300, 300, jitter=0.1, seed=1)
    b = timestamps(300, 600, jitter=0.1, missing=0.2, seed=2)
    df = pl.DataFrame(
        {"sensor": ["a"] * a.size + ["b"] * b.size, "ts": np.concatenate([a, b])}
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    out = estimate_periods(df, by="sensor").sort("sensor")
    assert out.get_column("sensor").to_list() == ["a", "b"]
    assert out.get_column("period").to_list() == [
        dt.timedelta(minutes=5),
        dt.timedelta(minutes=10),
    ]
    assert out.schema["period"] == pl.Duration("us")


def test_estimate_periods_null_on_error_and_to_dict():
    df = pl.DataFrame(
        {
            "sensor": ["a"] * 50 + ["b"] * 2,
            "ts": [T0 + dt.timedelta(minutes=i) for i in range(50)] + [T0, T0],
        },
        schema={"sensor": pl.String, "ts": pl.Datetime("us", "UTC")},
    )
    with pytest.raises(PrepError, match="too few"):
        estimate_periods(df, by="sensor")
    out = estimate_periods(df, by="sensor", errors="null")
    assert out.get_column("period").to_list() == [dt.timedelta(minutes=1), None]
    assert out.get_column("confidence").to_list()[1] == 0.0
    d = estimate_period(df.get_column("ts").head(50)).to_dict()
    assert d["period_s"] == 60.0 and d["confidence"] == 1.0 and d["modes_s"] == [60.0]
