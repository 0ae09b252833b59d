"""Change the frequency of a series: aggregate down, or insert points and fill them up.

Integration aligns series of different periods at a reference frequency, so both
directions are needed: 5-minute data down to 10 minutes (mean/min/max/last/sum per
bucket), 10-minute data up to 5 minutes (interpolate or carry forward).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, as_list, require_datetime, value_columns

Agg = Literal["mean", "min", "max", "last", "first", "sum", "median", "count"]
AGGS: tuple[str, ...] = ("mean", "min", "max", "last", "first", "sum", "median", "count")


def _every(every: str | dt.timedelta) -> str | dt.timedelta:
    if isinstance(every, dt.timedelta) and every <= dt.timedelta(0):
        raise PrepError(f"the target frequency must be positive, got {every}")
    return every


def downsample(
    df: pl.DataFrame,
    every: str | dt.timedelta,
    agg: Agg | Sequence[Agg] = "mean",
    *,
    columns: str | Sequence[str] | None = None,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
) -> pl.DataFrame:
    """Aggregate into buckets of `every` ("10m", "1h" or a timedelta), labelled by the
    bucket start. One aggregation keeps column names; several make `<col>_<agg>`."""
    keys = as_list(by)
    require_datetime(df, ts)
    cols = value_columns(df, columns, ts, keys)
    aggs = [agg] if isinstance(agg, str) else list(agg)
    for a in aggs:
        if a not in AGGS:
            raise PrepError(f"unknown aggregation {a!r}", hint=", ".join(AGGS))
    exprs = [
        getattr(pl.col(c), a)().alias(c if len(aggs) == 1 else f"{c}_{a}")
        for c in cols
        for a in aggs
    ]
    work = df.sort([*keys, ts])
    return work.group_by_dynamic(
        ts, every=_every(every), group_by=keys or None, closed="left", label="left"
    ).agg(exprs)


def upsample(
    df: pl.DataFrame,
    every: str | dt.timedelta,
    method: Literal["interpolate", "ffill", "none"] = "interpolate",
    *,
    columns: str | Sequence[str] | None = None,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
) -> pl.DataFrame:
    """Insert rows every `every` from each series' first timestamp and fill the value
    columns: "interpolate" (time-weighted), "ffill", or "none" (leave nulls)."""
    keys = as_list(by)
    require_datetime(df, ts)
    cols = value_columns(df, columns, ts, keys)
    if method not in ("interpolate", "ffill", "none"):
        raise PrepError(f"unknown upsampling method {method!r}", hint="interpolate, ffill, none")
    work = df.sort([*keys, ts]).upsample(ts, every=_every(every), group_by=keys or None)
    if method == "none":
        return work
    exprs = []
    for c in cols:
        e = pl.col(c).interpolate_by(ts) if method == "interpolate" else pl.col(c).forward_fill()
        exprs.append((e.over(keys) if keys else e).alias(c))
    return work.with_columns(exprs)
