"""Anomaly (noise) detection: flag points that do not belong to the series.

Two detectors, both returning a score per point and a flag (score above a threshold):
- IQR rule: distance beyond the nearer quartile in units of the inter-quartile range,
  flagged above k (1.5 by Tukey's rule). Cheap, vectorised, blind to seasonality.
- residual analysis: STL removes trend and season, and the residual's robust z-score
  (distance from the median in units of 1.4826·MAD) is flagged above a threshold, so a
  spike at night is caught even if daytime values are higher. The STL fit is repeated
  without the flagged points so a big spike cannot bend the fit around itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

from tsloom.prep._checks import (
    TS,
    as_list,
    check_values,
    column_values,
    group_frames,
    require_datetime,
    value_columns,
)
from tsloom.prep.decompose import season_steps, stl


def _check_columns(df: pl.DataFrame, cols: list[str]) -> None:
    """All-missing or constant columns (over all keys) get a clear error, not NaN flags."""
    for c in cols:
        x = pl.col(c).cast(pl.Float64)
        finite = x.filter(x.is_finite())
        n, lo, hi = df.select(
            finite.len().alias("n"), finite.min().alias("lo"), finite.max().alias("hi")
        ).row(0)
        if n < 2 or not lo < hi:  # check_values fails; let it say why
            check_values(column_values(df, c), c)


def iqr_anomalies(
    df: pl.DataFrame,
    columns: str | Sequence[str] | None = None,
    *,
    k: float = 1.5,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
) -> pl.DataFrame:
    """Add `<col>_score` (IQRs beyond the nearer quartile, 0 inside) and `<col>_anomaly`
    (score > k) for each value column, quartiles per key with `by=`."""
    keys = as_list(by)
    cols = value_columns(df, columns, ts, keys)
    _check_columns(df, cols)
    out = df
    join = bool(keys) and not df.select(keys).null_count().sum_horizontal().item()
    for c in cols:
        x = pl.col(c).cast(pl.Float64).fill_nan(None)
        q1 = x.quantile(0.25, interpolation="linear").alias("_q1")
        q3 = x.quantile(0.75, interpolation="linear").alias("_q3")
        if join:  # quantiles skip missing values, and are much faster on a column without
            observed = df.select(*keys, x.alias(c)).filter(pl.col(c).is_not_null())
            quartiles = observed.group_by(keys).agg(q1, q3)
            out = out.drop("_q1", "_q3", strict=False)
            out = out.join(quartiles, on=keys, how="left", maintain_order="left")
        else:
            out = (
                out.with_columns(q1.over(keys), q3.over(keys)) if keys else out.with_columns(q1, q3)
            )
        lo, hi = pl.col("_q1"), pl.col("_q3")
        beyond = pl.max_horizontal(lo - x, x - hi, pl.lit(0.0))
        score = (
            pl.when(x.is_null())
            .then(None)
            .when(beyond == 0)
            .then(0.0)
            .when(hi == lo)
            .then(float("inf"))
            .otherwise(beyond / (hi - lo))
        )
        out = out.with_columns(score.alias(f"{c}_score")).with_columns(
            (pl.col(f"{c}_score") > k).fill_null(False).alias(f"{c}_anomaly")
        )
    return out.drop("_q1", "_q3")


def robust_z(values: np.ndarray) -> np.ndarray:
    """|x - median| / (1.4826·MAD); falls back to the mean absolute deviation when MAD is 0."""
    finite = values[np.isfinite(values)]
    med = float(np.median(finite))
    dev = np.abs(values - med)
    scale = 1.4826 * float(np.median(np.abs(finite - med)))
    if scale == 0:
        scale = 1.2533 * float(np.mean(np.abs(finite - med)))
    if scale == 0:
        return np.where(np.isfinite(values), 0.0, np.nan)
    return dev / scale


def stl_residual_scores(
    values: np.ndarray,
    season: int,
    threshold: float = 3.5,
    *,
    seasonal_window: int = 25,
    name: str = "value",
) -> tuple[np.ndarray, np.ndarray]:
    """(residual, robust z) of one evenly spaced series against an STL fit that outliers
    cannot bend.

    Plain STL smears a big spike into the trend and seasonal of its neighbours; robust STL
    resists spikes but fattens the residual's tails (several percent of clean Gaussian
    noise score above 3.5). So: robust STL first, points it scores above the threshold
    are replaced by its fitted value, plain STL on that cleaned series gives the final
    components, and every observed point is scored against them. A wide seasonal
    window (25 cycles) keeps noise out of the seasonal component; on noisy synthetic
    series this flags about 3 in 1000 clean points while catching every spike ≥ 6σ.
    """
    y = np.asarray(values, dtype=np.float64)
    first = stl(y, season, robust=True, seasonal_window=seasonal_window, name=name)
    fitted = np.asarray(first.trend) + np.asarray(first.seasonal)
    suspect = np.nan_to_num(robust_z(y - fitted), nan=0.0) > threshold
    cleaned = np.where(suspect, fitted, y)
    final = stl(cleaned, season, robust=False, seasonal_window=seasonal_window, name=name)
    resid = y - np.asarray(final.trend) - np.asarray(final.seasonal)
    return resid, robust_z(resid)


def residual_anomalies(
    df: pl.DataFrame,
    columns: str | Sequence[str] | None = None,
    *,
    season: int | dt.timedelta | None = None,
    threshold: float = 3.5,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    seasonal_window: int = 25,
) -> pl.DataFrame:
    """Add `<col>_resid`, `<col>_score` (robust z of the STL residual) and `<col>_anomaly`
    (score > threshold). Expects an evenly spaced frame; missing points are never flagged.
    The season defaults to a day (a week for daily data)."""
    keys = as_list(by)
    require_datetime(df, ts)
    cols = value_columns(df, columns, ts, keys)
    parts = []
    for _key, part in group_frames(df.sort([*keys, ts]), keys):
        steps = season_steps(season, part, ts)
        new = []
        for c in cols:
            resid, score = stl_residual_scores(
                column_values(part, c), steps, threshold, seasonal_window=seasonal_window, name=c
            )
            new += [
                pl.Series(f"{c}_resid", resid, nan_to_null=True),
                pl.Series(f"{c}_score", score, nan_to_null=True),
                pl.Series(f"{c}_anomaly", np.nan_to_num(score, nan=0.0) > threshold),
            ]
        parts.append(part.with_columns(new))
    return pl.concat(parts)
