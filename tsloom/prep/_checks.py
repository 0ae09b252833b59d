"""Shared input checks so every prep function fails with the same clear PrepError."""

from __future__ import annotations

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
