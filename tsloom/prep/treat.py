"""Anomaly treatment: what to do with the points a detector flagged.

- "drop": remove the rows (the series becomes irregular; fill_gaps can restore the grid);
- "null": blank the value so an imputation method can fill it;
- "clip": pull the value back to the min/max of the non-anomalous values;
- "ema": replace it with the exponential moving average of the non-anomalous values
  before it, so a spike becomes the level the series was at.
The source design compares them by the forecast error of a model trained on each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, as_list, require_columns, value_columns

Treatment = Literal["drop", "null", "clip", "ema"]
TREATMENTS: tuple[str, ...] = ("drop", "null", "clip", "ema")


def treat_anomalies(
    df: pl.DataFrame,
    column: str,
    method: Treatment = "clip",
    *,
    flags: str | None = None,
    alpha: float = 0.3,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
) -> pl.DataFrame:
    """Treat the points of `column` flagged in the boolean column `flags` (default
    `<column>_anomaly`, as written by the detectors), per key with `by=`."""
    keys = as_list(by)
    flag_col = flags or f"{column}_anomaly"
    require_columns(df, [ts, *keys, flag_col])
    value_columns(df, [column], ts, keys)
    if method not in TREATMENTS:
        raise PrepError(f"unknown treatment {method!r}", hint=", ".join(TREATMENTS))
    if not 0 < alpha <= 1:
        raise PrepError(f"alpha must be in (0, 1], got {alpha}")
    flag = pl.col(flag_col).fill_null(False)
    if method == "drop":
        return df.filter(~flag)
    x = pl.col(column).cast(pl.Float64)
    clean = pl.when(flag).then(None).otherwise(x)
    if method == "null":
        return df.with_columns(clean.alias(column))
    if method == "clip":
        lo, hi = clean.min(), clean.max()
        if keys:
            lo, hi = lo.over(keys), hi.over(keys)
        return df.with_columns(pl.when(flag).then(x.clip(lo, hi)).otherwise(x).alias(column))
    ema = clean.ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True).forward_fill()
    ema = ema.backward_fill()
    if keys:
        ema = ema.over(keys)
    work = df.sort([*keys, ts], maintain_order=True)
    return work.with_columns(pl.when(flag).then(ema).otherwise(x).alias(column))


def ema_smooth(
    df: pl.DataFrame,
    columns: str | Sequence[str] | None = None,
    *,
    alpha: float = 0.3,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
) -> pl.DataFrame:
    """Smooth whole columns with an exponential moving average (noise rather than spikes)."""
    keys = as_list(by)
    cols = value_columns(df, columns, ts, keys)
    if not 0 < alpha <= 1:
        raise PrepError(f"alpha must be in (0, 1], got {alpha}")
    exprs = []
    for c in cols:
        e = pl.col(c).cast(pl.Float64).ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True)
        exprs.append((e.over(keys) if keys else e).alias(c))
    return df.sort([*keys, ts], maintain_order=True).with_columns(exprs)
