"""Decomposition into trend, seasonality and residual (STL), and the season to use.

The season length follows from the sampling period: sub-daily sensors repeat daily,
daily ones weekly, coarser ones yearly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl
from statsmodels.tsa.seasonal import STL, DecomposeResult

from tsloom.errors import PrepError
from tsloom.prep._checks import (
    TS,
    as_list,
    check_values,
    column_values,
    group_frames,
    require_datetime,
    value_columns,
)

_DAY = dt.timedelta(days=1)


def default_season(period: dt.timedelta) -> int:
    """Steps per natural season: a day below daily sampling, else a week, else a year."""
    if period <= dt.timedelta(0):
        raise PrepError(f"period must be positive, got {period}")
    if period < _DAY:
        season = _DAY / period
    elif period < 7 * _DAY:
        season = 7 * _DAY / period
    else:
        season = dt.timedelta(days=365.25) / period
    return max(2, round(season))


def spacing(df: pl.DataFrame, ts: str = TS) -> dt.timedelta:
    """The median step between consecutive timestamps (the period of a regular frame)."""
    require_datetime(df, ts)
    step = df.get_column(ts).sort().diff().drop_nulls()
    step = step.filter(step > dt.timedelta(0))
    if step.len() == 0:
        raise PrepError(f"too few distinct timestamps in {ts!r} to find the spacing")
    return step.median()  # type: ignore[return-value]


def season_steps(
    season: int | dt.timedelta | None, df: pl.DataFrame | None = None, ts: str = TS
) -> int:
    """A season given in steps, as a duration (divided by the frame's spacing), or None
    for the default season of the frame's spacing."""
    if isinstance(season, int):
        if season < 2:
            raise PrepError(f"season must be at least 2 steps, got {season}")
        return season
    if df is None:
        raise PrepError("a season as a duration needs the frame to measure the spacing")
    step = spacing(df, ts)
    if season is None:
        return default_season(step)
    return max(2, round(season / step))


def _interpolated(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaNs (edges: nearest value) for methods that need no gaps."""
    idx = np.arange(values.size)
    ok = np.isfinite(values)
    return np.interp(idx, idx[ok], values[ok])


def stl(
    values: np.ndarray,
    season: int,
    *,
    robust: bool = True,
    seasonal_window: int = 7,
    name: str = "value",
) -> DecomposeResult:
    """Fit STL on one evenly spaced series (gaps interpolated); returns the fit result.

    `seasonal_window` (odd, ≥ 7) is how many cycles the seasonal smoother spans: small
    follows a changing season, large holds it steady.
    """
    check_values(values, name)
    if values.size < 2 * season + 1:
        raise PrepError(
            f"column {name!r} has {values.size} points; STL with a season of {season} "
            f"needs at least {2 * season + 1}",
            hint="use a shorter season or a longer time range",
        )
    window = max(7, seasonal_window | 1)
    return STL(_interpolated(values), period=season, seasonal=window, robust=robust).fit()


def decompose(
    df: pl.DataFrame,
    column: str | None = None,
    *,
    season: int | dt.timedelta | None = None,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    robust: bool = True,
    seasonal_window: int = 7,
) -> pl.DataFrame:
    """Split one column of an evenly spaced frame into trend + seasonal + resid (STL).

    Returns keys, ts, observed, trend, seasonal, resid. Missing values are interpolated
    for the fit; `observed` keeps them missing.
    """
    keys = as_list(by)
    require_datetime(df, ts)
    col = value_columns(df, column, ts, keys)[0] if column is None else column
    value_columns(df, [col], ts, keys)
    parts = []
    for _key, part in group_frames(df.sort([*keys, ts]), keys):
        steps = season_steps(season, part, ts)
        values = column_values(part, col)
        fit = stl(values, steps, robust=robust, seasonal_window=seasonal_window, name=col)
        parts.append(
            part.select([*keys, ts]).with_columns(
                pl.Series("observed", values, nan_to_null=True),
                pl.Series("trend", np.asarray(fit.trend)),
                pl.Series("seasonal", np.asarray(fit.seasonal)),
                pl.Series("resid", np.asarray(fit.resid)),
            )
        )
    return pl.concat(parts)
