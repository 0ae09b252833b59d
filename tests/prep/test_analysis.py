"""Descriptive statistics, univariate and multivariate analysis, decomposition, resampling."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from _prep_synth import T0, frame

from tsloom.errors import PrepError
from tsloom.prep import (
    acf_pacf,
    correlation_matrix,
    cross_correlation,
    decompose,
    default_season,
    density,
    describe,
    downsample,
    stationarity,
    upsample,
)


def _hourly(**cols) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    return pl.DataFrame(
        {"ts": [T0 + dt.timedelta(hours=i) for i in range(n)], **cols},
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def test_describe_matches_numpy_and_counts_missing():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, 1000)
    df = _hourly(x=x, y=np.where(np.arange(1000) % 4 == 0, np.nan, x * 2))
    out = describe(df)
    rx = out.filter(pl.col("column") == "x").row(0, named=True)
    ry = out.filter(pl.col("column") == "y").row(0, named=True)
    assert rx["count"] == 1000 and rx["missing"] == 0
    assert rx["mean"] == pytest.approx(x.mean())
    assert rx["std"] == pytest.approx(x.std(ddof=1))
    assert rx["q25"] == pytest.approx(np.quantile(x, 0.25))
    assert rx["q95"] == pytest.approx(np.quantile(x, 0.95))
    assert (ry["count"], ry["missing"], ry["missing_share"]) == (750, 250, 0.25)


def test_describe_by_key():
    df = pl.concat(
        [_hourly(v=[1.0, 2.0, 3.0]).with_columns(pl.lit(k).alias("k")) for k in ("a", "b")]
    ).with_columns(pl.when(pl.col("k") == "b").then(pl.col("v") * 10).otherwise("v").alias("v"))
    out = describe(df, by="k").sort("k")
    assert out.get_column("mean").to_list() == [2.0, 20.0]
    assert out.get_column("column").to_list() == ["v", "v"]


def test_density_integrates_to_one_and_peaks_at_the_mode():
    rng = np.random.default_rng(1)
    d = density(rng.normal(3, 1, 5000), grid_size=300)
    assert d.x.size == d.y.size == 300
    assert np.trapezoid(d.y, d.x) == pytest.approx(1, abs=0.01)
    assert d.x[np.argmax(d.y)] == pytest.approx(3, abs=0.25)
    with pytest.raises(PrepError, match="constant"):
        density(np.ones(10))


def test_acf_pacf_of_ar1():
    rng = np.random.default_rng(2)
    e = rng.normal(size=3000)
    x = np.zeros(3000)
    for t in range(1, 3000):  # test data only
        x[t] = 0.7 * x[t - 1] + e[t]
    ac = acf_pacf(x, nlags=5)
    assert ac.acf[1] == pytest.approx(0.7, abs=0.05)
    assert ac.acf[2] == pytest.approx(0.49, abs=0.06)
    assert ac.pacf[1] == pytest.approx(0.7, abs=0.05)
    assert abs(ac.pacf[2]) < ac.band * 2
    assert len(ac.acf) == 6


def test_stationarity_tests():
    rng = np.random.default_rng(3)
    noise = rng.normal(size=500)
    walk = np.cumsum(rng.normal(size=500))
    assert stationarity(noise).stationary
    assert stationarity(noise).verdict == "stationary"
    s = stationarity(walk)
    assert not s.stationary and s.verdict == "non-stationary"
    assert set(s.to_dict()) >= {"adf_pvalue", "kpss_pvalue", "verdict"}
    with pytest.raises(PrepError):
        stationarity(np.full(100, 3.0))


def test_correlation_matrix_and_cross_correlation():
    rng = np.random.default_rng(4)
    a = rng.normal(size=400)
    b = 2 * a + rng.normal(scale=0.1, size=400)
    c = rng.normal(size=400)
    m = correlation_matrix(_hourly(a=a, b=b, c=c))
    assert m.get_column("column").to_list() == ["a", "b", "c"]
    mat = m.drop("column").to_numpy()
    assert np.allclose(mat, mat.T) and np.allclose(np.diag(mat), 1)
    assert mat[0, 1] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert abs(mat[0, 2]) < 0.2
    lagged = np.roll(a, 5) + rng.normal(scale=0.1, size=400)  # follows a by 5 steps
    cc = cross_correlation(a, lagged, max_lag=10)
    assert cc.best_lag == 5 and cc.best_value > 0.9
    assert cc.lags.tolist() == list(range(-10, 11))
    with pytest.raises(PrepError, match="constant"):
        correlation_matrix(_hourly(a=a, z=np.zeros(400)))


def test_decompose_recovers_components():
    df = frame(24 * 20, 3600, season_steps=24, noise=0.02, seed=5)
    out = decompose(df, "value")
    assert out.columns == ["ts", "observed", "trend", "seasonal", "resid"]
    total = out.select(pl.col("trend") + pl.col("seasonal") + pl.col("resid")).to_series()
    assert np.allclose(total.to_numpy(), out.get_column("observed").to_numpy())
    seasonal = out.get_column("seasonal").to_numpy()
    assert (seasonal.max() - seasonal.min()) / 2 == pytest.approx(3, rel=0.1)
    trend = out.get_column("trend").to_numpy()
    assert trend[-1] - trend[0] == pytest.approx(0.01 * (df.height - 1), rel=0.15)
    assert out.get_column("resid").std() < 0.1


def test_default_season():
    assert default_season(dt.timedelta(hours=1)) == 24
    assert default_season(dt.timedelta(minutes=15)) == 96
    assert default_season(dt.timedelta(days=1)) == 7
    assert default_season(dt.timedelta(days=30)) == 12


def test_decompose_on_etth1(ett_dir):
    df = pl.read_csv(ett_dir / "ETTh1.csv", columns=["date", "OT"]).head(24 * 60)
    df = df.select(
        pl.col("date").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC").alias("ts"), "OT"
    )
    out = decompose(df, "OT")  # hourly → daily season of 24
    seasonal = out.get_column("seasonal").to_numpy()
    # the daily pattern repeats: correlation of the seasonal part with itself a day later
    assert np.corrcoef(seasonal[:-24], seasonal[24:])[0, 1] > 0.9


def test_downsample_aggregations():
    df = _hourly(x=[float(i) for i in range(6)])
    mean = downsample(df, "3h")
    assert mean.get_column("x").to_list() == [1.0, 4.0]
    many = downsample(df, dt.timedelta(hours=3), ["min", "max", "last", "sum"])
    assert many.columns == ["ts", "x_min", "x_max", "x_last", "x_sum"]
    assert many.row(1) == (T0 + dt.timedelta(hours=3), 3.0, 5.0, 5.0, 12.0)
    with pytest.raises(PrepError, match="aggregation"):
        downsample(df, "3h", "mode")  # type: ignore[arg-type]


def test_downsample_per_key():
    df = pl.concat(
        [
            _hourly(x=[1.0, 2.0, 3.0, 4.0]).with_columns(pl.lit("a").alias("k")),
            _hourly(x=[10.0, 20.0, 30.0, 40.0]).with_columns(pl.lit("b").alias("k")),
        ]
    )
    out = downsample(df, "2h", "sum", by="k").sort("k", "ts")
    assert out.select("k", "x").rows() == [("a", 3.0), ("a", 7.0), ("b", 30.0), ("b", 70.0)]


def test_upsample_interpolate_and_ffill():
    df = _hourly(x=[0.0, 4.0, 8.0])
    up = upsample(df, "15m")
    assert up.height == 9
    assert up.get_column("x").to_list() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    ff = upsample(df, dt.timedelta(minutes=30), "ffill")
    assert ff.get_column("x").to_list() == [0.0, 0.0, 4.0, 4.0, 8.0]
    keyed = pl.concat(
        [df.with_columns(pl.lit("a").alias("k")), df.with_columns(pl.lit("b").alias("k"))]
    )
    both = upsample(keyed, "30m", by="k")
    assert both.height == 10 and both.get_column("k").null_count() == 0
