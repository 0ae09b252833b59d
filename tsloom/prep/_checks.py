"""Shared input checks so every prep function fails with the same clear PrepError."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from tsloom.errors import PrepError

TS = "ts"


def as_list(by: str | Sequence[str] | None) -> list[str]:
    """Normalise a `by=` argument (None, one name or several) to a list."""
    if by is None:
        return []
    if isinstance(by, str):
        return [by]
    return list(by)


def require_columns(df: pl.DataFrame, names: Sequence[str], what: str = "column") -> None:
    """Fail early, naming the missing columns and the ones that exist."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise PrepError(
            f"missing {what}(s): {', '.join(missing)}",
            hint=f"the frame has columns: {', '.join(df.columns)}",
        )


def require_datetime(df: pl.DataFrame, ts: str = TS) -> None:
    """Prep functions work on parsed timestamps; strings must go through validation first."""
    require_columns(df, [ts], "timestamp column")
    if not isinstance(df.schema[ts], pl.Datetime):
        raise PrepError(
            f"timestamp column {ts!r} has type {df.schema[ts]}, not Datetime",
            hint="parse it first, e.g. with tsloom.prep.parse_timestamps",
        )


def value_columns(
    df: pl.DataFrame,
    columns: str | Sequence[str] | None,
    ts: str = TS,
    by: Sequence[str] = (),
) -> list[str]:
    """The numeric columns to work on: the ones named, or every numeric non-key column.

    Columns starting with an underscore are bookkeeping (e.g. `_inserted`) and are skipped
    unless named explicitly.
    """
    if columns is None:
        skip = {ts, *by}
        cols = [
            c
            for c, t in df.schema.items()
            if c not in skip and not c.startswith("_") and t.is_numeric()
        ]
        if not cols:
            raise PrepError(
                "no numeric value columns to work on",
                hint=f"the frame has columns: {', '.join(df.columns)}; pass columns=[...]",
            )
        return cols
    cols = as_list(columns)
    require_columns(df, cols)
    for c in cols:
        if not df.schema[c].is_numeric():
            raise PrepError(
                f"column {c!r} is {df.schema[c]}, not numeric",
                hint=f"cast {c!r} to a float type or leave it out of columns=",
            )
    return cols


def check_values(values: np.ndarray, name: str, min_points: int = 2) -> np.ndarray:
    """Return the finite values of a series, failing on all-missing, too short or constant."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        raise PrepError(
            f"column {name!r} is entirely missing",
            hint=f"drop {name!r} or check the source that feeds it",
        )
    if finite.size < min_points:
        raise PrepError(
            f"column {name!r} has {finite.size} observed values; at least {min_points} needed",
            hint="use a longer time range",
        )
    if np.ptp(finite) == 0:
        raise PrepError(
            f"column {name!r} is constant ({finite[0]:g})",
            hint=f"a constant series carries no signal; drop {name!r}",
        )
    return finite


def column_values(df: pl.DataFrame, column: str) -> np.ndarray:
    """A column as float64 numpy with nulls as NaN."""
    return df.get_column(column).cast(pl.Float64).fill_null(np.nan).to_numpy()


def group_frames(df: pl.DataFrame, by: Sequence[str]) -> list[tuple[tuple, pl.DataFrame]]:
    """Split by key columns (one frame when no keys), keeping first-seen key order."""
    if not by:
        return [((), df)]
    parts = df.partition_by(list(by), as_dict=True, maintain_order=True)
    return list(parts.items())


_INT64_MAX = 2**63 - 1


def _int_like(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or isinstance(dtype, pl.Datetime | pl.Duration | pl.Date)


def packed_key(df: pl.DataFrame, by: Sequence[str]) -> pl.Expr | None:
    """One Int64 expression ordered (and equal) exactly as the row tuples of `by`, or None.

    Sorting or hashing one integer is several times faster than sorting or hashing
    several columns. It applies when every column is an integer, date, datetime or
    duration without nulls and the product of their ranges fits in 63 bits (e.g. a
    series id and a timestamp in microseconds over years).
    """
    packed = packing(df, by)
    return None if packed is None else packed[0]


def packing(df: pl.DataFrame, by: Sequence[str]) -> tuple[pl.Expr, list[int]] | None:
    """`packed_key` and the span (max - min + 1) of each column: the key is the mixed-radix
    number of the columns' offsets from their minimum, so the last column's span
    separates the other columns' part from it (key // span)."""
    by = list(by)
    if not by or not all(_int_like(df.schema[c]) for c in by):
        return None
    if df.height == 0:
        return None
    stats = df.select(
        *(pl.col(c).null_count().alias(f"n{i}") for i, c in enumerate(by)),
        *(pl.col(c).to_physical().min().alias(f"lo{i}") for i, c in enumerate(by)),
        *(pl.col(c).to_physical().max().alias(f"hi{i}") for i, c in enumerate(by)),
    ).row(0, named=True)
    lows = [int(stats[f"lo{i}"]) for i in range(len(by))]
    highs = [int(stats[f"hi{i}"]) for i in range(len(by))]
    if any(stats[f"n{i}"] for i in range(len(by))) or max(highs) > _INT64_MAX:
        return None
    spans = [hi - lo + 1 for lo, hi in zip(lows, highs, strict=True)]
    total = 1
    for span in spans:
        total *= span
    if total > _INT64_MAX:
        return None
    key: pl.Expr | None = None
    scale = 1
    for c, lo, span in reversed(list(zip(by, lows, spans, strict=True))):
        part = pl.col(c).to_physical().cast(pl.Int64) - lo
        if scale != 1:
            part = part * scale
        key = part if key is None else key + part
        scale *= span
    assert key is not None
    return key, spans


def sort_frame(df: pl.DataFrame, by: Sequence[str], *, nulls_last: bool = False) -> pl.DataFrame:
    """`df.sort(by, maintain_order=True, nulls_last=nulls_last)`, faster when `by` packs
    into one integer (see `packing`), and free when the frame is already in order."""
    by = list(by)
    packed = packing(df, by)
    if packed is None:
        return df.sort(by, maintain_order=True, nulls_last=nulls_last)
    key, spans = packed
    in_order: pl.Expr | None = None  # each row <= the next, column by column (no nulls)
    for c in reversed(by):
        this, nxt = pl.col(c), pl.col(c).shift(-1)
        in_order = this <= nxt if in_order is None else (this < nxt) | ((this == nxt) & in_order)
    assert in_order is not None
    if df.select(in_order.fill_null(True).all()).item():
        return df
    order = stable_order(df, by, key, spans)
    if order is None:
        return df.sort(key, maintain_order=True)
    return df.rechunk()[pl.Series(order, dtype=pl.get_index_type())]


def stable_order(
    df: pl.DataFrame, by: list[str], key: pl.Expr, spans: list[int]
) -> np.ndarray | None:
    """The stable sort order of `by`, packed in `key` (see `packing`), in two passes; None
    when the leading columns take too many values (then let polars sort).

    The leading columns (e.g. a series id) take few values: numpy sorts them as 16-bit
    integers by radix, in linear time, keeping input order within each. Within a series
    the last column (e.g. a timestamp) is then nearly in order in the usual inputs
    (readings arrive in time order), which numpy's stable sort (timsort) finishes in
    about linear time too; ties keep their input order through both passes.
    """
    first, values = lead_order(df, by[:-1], key, spans)
    if first is None:
        return None
    return first[np.argsort(values[first], kind="stable")]


def lead_order(
    df: pl.DataFrame, lead: list[str], key: pl.Expr, spans: list[int]
) -> tuple[np.ndarray | None, np.ndarray]:
    """(stable order of the `lead` columns or None, the packed `key` as numpy): the first
    pass of `stable_order`, by radix on 16 bits, when the lead takes at most 65536 values."""
    head = packing(df, lead) if lead and math.prod(spans[:-1]) <= 1 << 16 else None
    if head is None:
        return None, df.select(key).to_series().to_numpy()
    got = df.select(key.alias("key"), head[0].cast(pl.UInt16).alias("lead"))
    first = np.argsort(got.to_series(1).to_numpy(), kind="stable")
    return first, got.to_series(0).to_numpy()
