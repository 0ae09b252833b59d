"""Missing-value detection by divide-and-round: make every expected reading a row.

A gap of g between two readings of a series with period p hides round(g / p) - 1
readings. They are inserted as rows with null values at prev + k·p (k = 1, 2, …), so the
source design's CO2 example (00:05:49, 00:15:49, 00:45:49 every 10 min) gains rows at
00:25:49 and 00:35:49. Inserted rows are flagged so imputation and plots can tell them
apart from measured ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import (
    TS,
    as_list,
    packing,
    require_columns,
    require_datetime,
    sort_frame,
)
from tsloom.prep.period import PeriodEstimate

INSERTED = "_inserted"


@dataclass(frozen=True)
class GapReport:
    """How many gaps were found and how many rows were inserted or left out."""

    gaps: int
    inserted: int
    skipped_gaps: int
    skipped_points: int
    largest_gap_points: int

    def to_dict(self) -> dict[str, int]:
        return {
            "gaps": self.gaps,
            "inserted": self.inserted,
            "skipped_gaps": self.skipped_gaps,
            "skipped_points": self.skipped_points,
            "largest_gap_points": self.largest_gap_points,
        }


def _period_us(period: dt.timedelta | PeriodEstimate) -> int:
    if isinstance(period, PeriodEstimate):
        period = period.period
    us = (period.days * 86_400 + period.seconds) * 1_000_000 + period.microseconds
    if us <= 0:
        raise PrepError(f"period must be positive, got {period}", hint="estimate it first")
    return us


def fill_gaps(
    df: pl.DataFrame,
    period: dt.timedelta | PeriodEstimate | pl.DataFrame,
    *,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    max_fill: int | None = None,
    flag: str = INSERTED,
) -> tuple[pl.DataFrame, GapReport]:
    """Insert null rows for the readings each gap is missing; flag them in `flag`.

    `period` is one period for all series, or a frame with the key columns and a
    `period` Duration column (as from `estimate_periods`) for one period per key. Gaps
    missing more than `max_fill` points (e.g. a week-long outage) are left as they are.
    The result is sorted by keys and ts.
    """
    keys = as_list(by)
    require_columns(df, keys)
    require_datetime(df, ts)
    work = sort_frame(df, [*keys, ts])
    if flag in work.columns:
        work = work.with_columns(pl.col(flag).fill_null(False))
    else:
        work = work.with_columns(pl.lit(False).alias(flag))
    if isinstance(period, pl.DataFrame):
        require_columns(period, [*keys, "period"], "period-table column")
        table = period.select([*keys, pl.col("period").dt.total_microseconds().alias("_p")])
        stamps = work.select([*keys, ts]).join(table, on=keys, how="left", maintain_order="left")
        if stamps.get_column("_p").null_count():
            raise PrepError("the period table has no period for some keys", hint=str(keys))
    else:
        stamps = work.select([*keys, ts]).with_columns(pl.lit(_period_us(period)).alias("_p"))
    # sorted by key: the next row is the same key's next reading unless the key changes
    nxt = pl.col(ts).shift(-1)
    if keys:
        same_key = pl.all_horizontal(pl.col(k).eq_missing(pl.col(k).shift(-1)) for k in keys)
        nxt = pl.when(same_key).then(nxt)
    gap = (nxt - pl.col(ts)).dt.total_microseconds()
    missing = ((gap + pl.col("_p") // 2) // pl.col("_p") - 1).clip(lower_bound=0).fill_null(0)
    stamps = stamps.with_columns(missing.alias("_n")).filter(pl.col("_n") > 0)
    skip = pl.col("_n") > (max_fill if max_fill is not None else np.iinfo(np.int64).max)
    summary = stamps.select(
        (~skip).sum().alias("gaps"),
        pl.col("_n").filter(~skip).sum().alias("inserted"),
        skip.sum().alias("skipped_gaps"),
        pl.col("_n").filter(skip).sum().alias("skipped_points"),
        pl.col("_n").max().alias("largest"),
    ).row(0, named=True)
    new = (
        stamps.filter(~skip)
        .with_columns(pl.int_ranges(1, pl.col("_n") + 1).alias("_k"))
        .explode("_k")
        .select(
            [
                *keys,
                (pl.col(ts) + pl.duration(microseconds=pl.col("_k") * pl.col("_p")))
                .cast(df.schema[ts])
                .alias(ts),
                pl.lit(True).alias(flag),
            ]
        )
    )
    both = pl.concat([work, new], how="diagonal_relaxed")
    packed = packing(both, [*keys, ts]) if new.height else None
    if packed is None:
        out = sort_frame(both, [*keys, ts])
    else:  # both parts are in (key, ts) order already: merge them rather than sort
        key = packed[0].alias("__merge_key")
        left = both.slice(0, work.height).with_columns(key)
        right = both.slice(work.height).with_columns(key)
        out = left.merge_sorted(right, "__merge_key").drop("__merge_key")
    report = GapReport(
        gaps=int(summary["gaps"] or 0),
        inserted=int(summary["inserted"] or 0),
        skipped_gaps=int(summary["skipped_gaps"] or 0),
        skipped_points=int(summary["skipped_points"] or 0),
        largest_gap_points=int(summary["largest"] or 0),
    )
    return out, report
