"""Imputation: fill missing values, and measure which method fills a series best.

Methods, from cheapest to most careful:
- "linear": straight line between neighbours, by position (assumes an even grid);
- "time": straight line weighted by the time between neighbours (irregular grids);
- "ffill": carry the last observation forward (step-like signals, counters);
- "seasonal": the value at the same phase of the previous season (strong daily cycles),
  the next season's for the first one, interpolation for a phase never observed;
- "kalman": a local-level state-space model (plus seasonal harmonics when a season is
  given) smoothed by the Kalman smoother in statsmodels (noisy series, long gaps).
Values still missing at the edges (before the first / after the last observation) take
the nearest observed value, so every method returns a complete column.

`compare_imputation` hides known values, fills them with every method and reports MAE
and RMSE per method, the way the source design chose its imputation algorithm.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import (
    TS,
    as_list,
    check_values,
    column_values,
    group_frames,
    require_datetime,
    sort_frame,
    value_columns,
)
from tsloom.prep.decompose import season_steps

Method = Literal["linear", "time", "ffill", "seasonal", "kalman"]
METHODS: tuple[str, ...] = ("linear", "time", "ffill", "seasonal", "kalman")


def kalman_smooth(values: np.ndarray, season: int | None = None) -> np.ndarray:
    """Fill NaNs with the smoothed signal of a local-level (+ seasonal) state-space model."""
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    y = np.asarray(values, dtype=np.float64)
    finite = y[np.isfinite(y)]
    mu, sd = float(finite.mean()), float(finite.std()) or 1.0
    z = (y - mu) / sd  # standardised: the optimiser behaves better
    seasonal = None
    if season is not None and season >= 2 and np.isfinite(y).sum() >= 2 * season:
        seasonal = [{"period": season, "harmonics": min(3, season // 2)}]
    model = UnobservedComponents(z, level="llevel", freq_seasonal=seasonal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(disp=False, maxiter=100)
    signal = np.asarray(fit.smoother_results.smoothed_forecasts[0]) * sd + mu
    return np.where(np.isfinite(y), y, signal)


def _edges(expr: pl.Expr) -> pl.Expr:
    return expr.forward_fill().backward_fill()


def _fill_expr(method: str, col: str, ts: str, keys: list[str], phase: str) -> pl.Expr:
    c = pl.col(col)
    if method == "linear":
        e = c.interpolate()
    elif method == "time":
        e = c.interpolate_by(ts)
    elif method == "ffill":
        e = c.forward_fill()
    elif method == "seasonal":
        same_phase = c.forward_fill().backward_fill().over([*keys, phase])
        # a phase never observed falls back to interpolation between neighbours
        e = pl.coalesce(same_phase, c.interpolate())
    else:
        raise PrepError(f"unknown imputation method {method!r}", hint=", ".join(METHODS))
    e = _edges(e)
    return (e.over(keys) if keys else e).alias(col)


def impute(
    df: pl.DataFrame,
    method: Method = "time",
    *,
    columns: str | Sequence[str] | None = None,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    season: int | dt.timedelta | None = None,
) -> pl.DataFrame:
    """Fill nulls (and NaNs) in the value columns with `method`, per key with `by=`.

    "seasonal" and "kalman" expect an evenly spaced frame (run `fill_gaps` first); their
    season is given in steps, as a duration, or defaults to a day (a week for daily data).
    A key whose column is entirely missing stays missing (a whole column raises).
    """
    keys = as_list(by)
    require_datetime(df, ts)
    cols = value_columns(df, columns, ts, keys)
    if method not in METHODS:
        raise PrepError(f"unknown imputation method {method!r}", hint=", ".join(METHODS))
    work = sort_frame(df, [*keys, ts]).with_columns(
        [pl.col(c).cast(pl.Float64).fill_nan(None) for c in cols]
    )
    for c in cols:
        if work.get_column(c).null_count() == work.height:
            raise PrepError(
                f"column {c!r} is entirely missing; there is nothing to impute from",
                hint=f"drop {c!r} or check the source that feeds it",
            )
    if method == "kalman":
        return _impute_kalman(work, cols, keys, ts, season)
    phase = "_phase"
    if method == "seasonal":
        steps = season_steps(season, work, ts)
        idx = pl.int_range(pl.len()).over(keys) if keys else pl.int_range(pl.len())
        work = work.with_columns((idx % steps).alias(phase))
    out = work.with_columns([_fill_expr(method, c, ts, keys, phase) for c in cols])
    return out.drop(phase, strict=False)


def _impute_kalman(
    work: pl.DataFrame,
    cols: list[str],
    keys: list[str],
    ts: str,
    season: int | dt.timedelta | None,
) -> pl.DataFrame:
    parts = []
    for _key, part in group_frames(work, keys):
        steps = season_steps(season, part, ts) if part.height > 1 else None
        filled = []
        for c in cols:
            values = column_values(part, c)
            if np.isfinite(values).sum() < 3 or np.isfinite(values).all():
                filled.append(pl.Series(c, values, nan_to_null=True))
                continue
            filled.append(pl.Series(c, kalman_smooth(values, steps)))
        parts.append(part.with_columns(filled))
    out = pl.concat(parts)
    return out.with_columns(
        [_edges(pl.col(c)).over(keys) if keys else _edges(pl.col(c)) for c in cols]
    )


@dataclass(frozen=True)
class MethodScore:
    """Error of one method on the hidden values."""

    method: str
    mae: float
    rmse: float


@dataclass(frozen=True)
class ImputationComparison:
    """Scores per method, best (lowest RMSE) first."""

    column: str
    n_hidden: int
    scores: tuple[MethodScore, ...]

    @property
    def best(self) -> str:
        return self.scores[0].method

    def to_dict(self) -> dict[str, object]:
        return {
            "column": self.column,
            "n_hidden": self.n_hidden,
            "best": self.best,
            "scores": [{"method": s.method, "mae": s.mae, "rmse": s.rmse} for s in self.scores],
        }


def _hide_mask(observed: np.ndarray, fraction: float, block: int, seed: int) -> np.ndarray:
    """Pick observed points to hide, in runs of `block`, never the first or last one."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(observed)
    inner = idx[1:-1]
    target = max(1, round(fraction * idx.size))
    n_starts = max(1, target // block)
    starts = rng.choice(inner.size, size=min(n_starts, inner.size), replace=False)
    pos = (starts[:, None] + np.arange(block)[None, :]).ravel()
    pos = pos[pos < inner.size]
    mask = np.zeros(observed.size, dtype=bool)
    mask[inner[pos]] = True
    return mask


def compare_imputation(
    df: pl.DataFrame,
    column: str | None = None,
    methods: Sequence[str] = METHODS,
    *,
    hide_fraction: float = 0.1,
    seed: int = 0,
    block: int = 1,
    ts: str = TS,
    season: int | dt.timedelta | None = None,
) -> ImputationComparison:
    """Hide `hide_fraction` of the observed values (in runs of `block` points), fill them
    with every method and score MAE/RMSE against the truth; best method first."""
    require_datetime(df, ts)
    col = value_columns(df, column, ts)[0] if column is None else column
    value_columns(df, [col], ts)
    if not 0 < hide_fraction < 1:
        raise PrepError(f"hide_fraction must be between 0 and 1, got {hide_fraction}")
    work = df.select(ts, col).sort(ts)
    truth = column_values(work, col)
    check_values(truth, col, min_points=10)
    mask = _hide_mask(np.isfinite(truth), hide_fraction, block, seed)
    hidden = work.with_columns(
        pl.when(pl.Series(mask)).then(None).otherwise(pl.col(col)).alias(col)
    )
    scores = []
    for method in methods:
        filled = column_values(impute(hidden, method, columns=[col], ts=ts, season=season), col)
        err = filled[mask] - truth[mask]
        scores.append(
            MethodScore(method, float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2))))
        )
    scores.sort(key=lambda s: (s.rmse, s.mae))
    return ImputationComparison(col, int(mask.sum()), tuple(scores))
