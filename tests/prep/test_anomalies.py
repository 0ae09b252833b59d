"""IQR and STL-residual anomaly detection, and anomaly treatment."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from _prep_synth import T0, frame

from tsloom.errors import PrepError
from tsloom.prep import ema_smooth, iqr_anomalies, residual_anomalies, treat_anomalies


def _series(values, key=None) -> pl.DataFrame:
    df = pl.DataFrame(
        {"ts": [T0 + dt.timedelta(hours=i) for i in range(len(values))], "x": values},
        schema={"ts": pl.Datetime("us", "UTC"), "x": pl.Float64},
    )
    return df if key is None else df.with_columns(pl.lit(key).alias("k"))


def test_iqr_scores_and_k():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 30.0, None]
    out = iqr_anomalies(_series(values))
    # q1 = 3.25, q3 = 7.75 over the ten observed values, IQR = 4.5
    assert out.get_column("x_score")[9] == pytest.approx((30 - 7.75) / 4.5)
    assert out.get_column("x_anomaly").to_list() == [False] * 9 + [True, False]
    assert out.get_column("x_score")[10] is None
    assert out.get_column("x_score")[3:7].to_list() == [0.0] * 4  # inside the quartiles
    assert out.get_column("x_score")[0] == pytest.approx((3.25 - 1) / 4.5)
    lenient = iqr_anomalies(_series(values), k=5.0)
    assert not lenient.get_column("x_anomaly").any()


def test_iqr_quartiles_per_key():
    low = _series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], key="low")
    high = _series([100.0, 102.0, 98.0, 100.0, 101.0, 99.0, 100.0, 1.0], key="high")
    out = iqr_anomalies(pl.concat([low, high]), "x", by="k")
    flagged = out.filter(pl.col("x_anomaly")).select("k", "x").rows()
    assert flagged == [("high", 1.0)]  # 1.0 is normal for "low", an outlier for "high"


def test_iqr_bad_columns():
    with pytest.raises(PrepError, match="constant"):
        iqr_anomalies(_series([2.0] * 10))
    with pytest.raises(PrepError, match="entirely missing"):
        iqr_anomalies(_series([None] * 5))
    with pytest.raises(PrepError, match="not numeric"):
        iqr_anomalies(_series([1.0, 2.0]).with_columns(pl.lit("a").alias("s")), "s")


def test_residual_catches_in_range_spike_that_iqr_misses():
    df = frame(24 * 30, 3600, season_steps=24, noise=0.05, seed=11)
    i = 24 * 10 + 18  # the trough of the daily cycle
    v = df.get_column("value").to_numpy().copy()
    v[i] += 2.5  # still inside the overall range: IQR cannot see it
    v[24 * 20 + 6] += 40.0  # a huge spike must not bend the fit onto its neighbours
    df = df.with_columns(pl.Series("value", v))
    res = residual_anomalies(df, "value", season=24)
    iqr = iqr_anomalies(df, "value")
    flags = res.get_column("value_anomaly").to_numpy()
    assert flags[i] and flags[24 * 20 + 6]
    assert not iqr.get_column("value_anomaly")[i]
    assert flags.sum() <= 2 + 0.01 * df.height  # few false alarms on clean noise
    assert res.get_column("value_score")[i] > 3.5


def test_residual_default_season_and_missing_points_not_flagged():
    df = frame(24 * 14, 3600, season_steps=24, seed=2)
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 50).then(None).otherwise(pl.col("value")).alias("value")
    )
    res = residual_anomalies(df)  # hourly data: a daily season of 24 steps
    assert res.get_column("value_anomaly")[50] is False
    assert res.get_column("value_score")[50] is None
    with pytest.raises(PrepError, match="STL"):
        residual_anomalies(df.head(30))


def test_treatments():
    df = iqr_anomalies(_series([1.0, 2.0, 3.0, 50.0, 4.0, 5.0, -40.0, 6.0, 7.0, 8.0]))
    assert df.get_column("x_anomaly").sum() == 2
    dropped = treat_anomalies(df, "x", "drop")
    assert dropped.height == 8 and dropped.get_column("x").max() == 8.0
    nulled = treat_anomalies(df, "x", "null")
    assert nulled.get_column("x").null_count() == 2 and nulled.height == 10
    clipped = treat_anomalies(df, "x", "clip").get_column("x").to_list()
    assert clipped[3] == 8.0 and clipped[6] == 1.0  # non-anomalous max / min
    assert clipped[:3] == [1.0, 2.0, 3.0]
    ema = treat_anomalies(df, "x", "ema", alpha=0.5).get_column("x").to_list()
    assert ema[3] == pytest.approx(2.25)  # EMA of 1, 2, 3 with alpha 0.5
    e5 = 0.5 * 5.0 + 0.5 * (0.5 * 4.0 + 0.5 * 2.25)
    assert ema[6] == pytest.approx(e5)
    assert ema[4] == 4.0


def test_treatment_per_key_and_errors():
    a = _series([1.0, 2.0, 90.0, 3.0], key="a").with_columns((pl.col("x") > 50).alias("x_anomaly"))
    b = _series([100.0, 200.0, 300.0, 400.0], key="b").with_columns(
        pl.lit(False).alias("x_anomaly")
    )
    out = treat_anomalies(pl.concat([a, b]), "x", "clip", by="k")
    assert out.filter(pl.col("k") == "a").get_column("x").to_list() == [1.0, 2.0, 3.0, 3.0]
    with pytest.raises(PrepError, match="treatment"):
        treat_anomalies(a, "x", "smooth")  # type: ignore[arg-type]
    with pytest.raises(PrepError, match="x_flag"):
        treat_anomalies(a, "x", "clip", flags="x_flag")


def test_ema_smooth_reduces_noise():
    df = frame(500, 60, noise=1.0, season_steps=100, seed=4)
    smooth = ema_smooth(df, alpha=0.2)
    rough = np.diff(df.get_column("value").to_numpy()).std()
    assert np.diff(smooth.get_column("value").to_numpy()).std() < rough / 2
