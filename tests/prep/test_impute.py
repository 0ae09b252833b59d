"""Imputation methods and their comparison."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from _prep_synth import T0, frame

from tsloom.errors import PrepError
from tsloom.prep import compare_imputation, impute


def _series(values, minutes=None, key=None) -> pl.DataFrame:
    minutes = minutes if minutes is not None else [10 * i for i in range(len(values))]
    df = pl.DataFrame(
        {"ts": [T0 + dt.timedelta(minutes=m) for m in minutes], "x": values},
        schema={"ts": pl.Datetime("us", "UTC"), "x": pl.Float64},
    )
    return df if key is None else df.with_columns(pl.lit(key).alias("k"))


def test_linear_time_and_ffill():
    df = _series([1.0, None, None, 4.0, None], minutes=[0, 10, 20, 30, 90])
    assert impute(df, "linear").get_column("x").to_list() == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert impute(df, "ffill").get_column("x").to_list() == [1.0, 1.0, 1.0, 4.0, 4.0]
    irregular = _series([0.0, None, 30.0], minutes=[0, 10, 30])
    assert impute(irregular, "time").get_column("x").to_list() == [0.0, 10.0, 30.0]
    assert impute(irregular, "linear").get_column("x").to_list() == [0.0, 15.0, 30.0]


def test_leading_gap_takes_first_observation_and_nan_counts_as_missing():
    df = _series([None, float("nan"), 2.0, 3.0])
    for method in ("linear", "time", "ffill"):
        assert impute(df, method).get_column("x").to_list() == [2.0, 2.0, 2.0, 3.0]


def test_seasonal_uses_previous_season():
    values = [1.0, 2.0, 3.0, 11.0, 12.0, 13.0, None, None, 23.0, None, 32.0, 33.0]
    out = impute(_series(values), "seasonal", season=3).get_column("x").to_list()
    assert out == [1.0, 2.0, 3.0, 11.0, 12.0, 13.0, 11.0, 12.0, 23.0, 11.0, 32.0, 33.0]
    # a season as a duration: 30 minutes of 10-minute steps = 3 steps
    again = impute(_series(values), "seasonal", season=dt.timedelta(minutes=30))
    assert again.get_column("x").to_list() == out


def test_by_key_never_borrows_from_another_series():
    a = _series([1.0, None, 3.0], key="a")
    b = _series([None, 100.0, None], key="b")
    out = impute(pl.concat([b, a]), "linear", by="k", columns="x")
    assert out.filter(pl.col("k") == "a").get_column("x").to_list() == [1.0, 2.0, 3.0]
    assert out.filter(pl.col("k") == "b").get_column("x").to_list() == [100.0] * 3
    season = impute(pl.concat([b, a]), "seasonal", by="k", season=2)
    # phase 1 of "a" was never observed: falls back to interpolation, not to "b"'s 100
    assert season.filter(pl.col("k") == "a").get_column("x").to_list() == [1.0, 2.0, 3.0]
    assert season.filter(pl.col("k") == "b").get_column("x").to_list() == [100.0] * 3


def test_kalman_fills_close_to_truth():
    truth = frame(480, 3600, season_steps=24, noise=0.05, seed=3)
    gappy = truth.with_columns(
        pl.when(pl.int_range(pl.len()).is_between(200, 205))
        .then(None)
        .otherwise(pl.col("value"))
        .alias("value")
    )
    out = impute(gappy, "kalman", season=24)
    err = (out.get_column("value") - truth.get_column("value")).abs().to_numpy()[200:206]
    assert out.get_column("value").null_count() == 0
    assert err.max() < 0.5  # linear interpolation across the 6-hour gap misses the daily swing
    lin = impute(gappy, "linear")
    lin_err = (lin.get_column("value") - truth.get_column("value")).abs().to_numpy()[200:206]
    assert err.mean() < lin_err.mean()


def test_errors():
    with pytest.raises(PrepError, match="entirely missing"):
        impute(_series([None, None]), "linear")
    with pytest.raises(PrepError, match="unknown imputation"):
        impute(_series([1.0, None]), "spline")  # type: ignore[arg-type]
    with pytest.raises(PrepError, match="not numeric"):
        impute(_series([1.0]).with_columns(pl.lit("a").alias("s")), "linear", columns="s")


def test_compare_imputation_prefers_seasonal_methods_on_seasonal_data():
    df = frame(24 * 20, 3600, season_steps=24, noise=0.05, seed=1)
    result = compare_imputation(df, "value", hide_fraction=0.1, block=6, seed=2, season=24)
    assert result.n_hidden >= 0.08 * df.height
    methods = [s.method for s in result.scores]
    assert sorted(methods) == sorted(["linear", "time", "ffill", "seasonal", "kalman"])
    rmse = {s.method: s.rmse for s in result.scores}
    assert result.best in ("seasonal", "kalman")
    assert rmse[result.best] < rmse["linear"] < rmse["ffill"]
    assert [s.rmse for s in result.scores] == sorted(s.rmse for s in result.scores)
    d = result.to_dict()
    assert d["best"] == result.best and len(d["scores"]) == 5


def test_compare_imputation_is_reproducible_and_validates():
    df = frame(200, 600, seed=5)
    one = compare_imputation(df, methods=("linear", "ffill"), seed=1)
    two = compare_imputation(df, methods=("linear", "ffill"), seed=1)
    assert one == two
    assert np.isfinite([s.mae for s in one.scores]).all()
    with pytest.raises(PrepError):
        compare_imputation(df, hide_fraction=1.5)
