"""Bring an incoming frame to the lake's shape: UTC `ts`, key columns, Float64 values.

Every check happens here, before anything is written, and every failure names the
input, the row and the column, and says how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import available_timezones

import polars as pl

from tsloom.errors import InputDataError
from tsloom.names import RESERVED_COLUMNS, validate_column_name

_EPOCH_UNITS = ("s", "ms", "us", "ns")


@dataclass(frozen=True)
class Normalized:
    frame: pl.DataFrame  # ts, keys..., values...
    keys: tuple[str, ...]
    values: tuple[str, ...]
    duplicates_dropped: int
    ts_unit_guessed: str | None


@dataclass(frozen=True)
class Where:
    """How errors name the input: `origin`, and the number of its first row."""

    origin: str
    first_row: int = 1
    row_label: str = "row"

    def row(self, index: int) -> str:
        return f"{self.row_label} {self.first_row + index}"


def _closest(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.4)
    return f"did you mean {close[0]!r}? " if close else ""


def _first_bad(original: pl.Series, parsed: pl.Series) -> int | None:
    bad = original.is_not_null() & parsed.is_null()
    if not bad.any():
        return None
    return int(bad.arg_true()[0])


def _guess_epoch_unit(values: pl.Series) -> str:
    magnitude = float(values.abs().max() or 0)
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if magnitude < limit:
            return unit
    return "ns"


# Formats tried in order on a sample; an explicit format parses ~20x faster than
# polars' per-value inference, which matters for files of millions of rows.
_COMMON_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%#z",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)


def _try_format(column: pl.Series, fmt: str | None) -> pl.Series | None:
    try:
        return column.str.to_datetime(format=fmt, strict=False, time_unit="us")
    except pl.exceptions.PolarsError:
        return None


def _guess_format(sample: pl.Series) -> str | None:
    """The common format that reads most of `sample` (None: leave it to polars)."""
    best, best_count = None, 0
    for fmt in _COMMON_FORMATS:
        parsed = _try_format(sample, fmt)
        count = 0 if parsed is None else len(parsed) - parsed.null_count()
        if count > best_count:
            best, best_count = fmt, count
        if count == len(sample):
            break
    return best


def _parse_strings(column: pl.Series, ts_format: str | None) -> pl.Series:
    """Parse text timestamps; unparseable values become null (reported by the caller)."""
    if ts_format is None:
        ts_format = _guess_format(column.drop_nulls().head(200))
    parsed = _try_format(column, ts_format)
    if parsed is None or parsed.null_count() > column.null_count():
        # Stray spaces, or a format only polars' inference knows: the slow path.
        stripped = column.str.strip_chars()
        retry = _try_format(stripped, ts_format)
        if retry is None or retry.null_count() > column.null_count():
            retry = _try_format(stripped, None)
        if retry is not None and (parsed is None or retry.null_count() < parsed.null_count()):
            parsed = retry
    if parsed is None:
        return pl.Series(column.name, [None] * len(column), dtype=pl.Datetime("us"))
    return parsed


def parse_timestamps(
    column: pl.Series,
    *,
    ts_format: str | None,
    ts_unit: str | None,
    tz: str | None,
    where: Where,
) -> tuple[pl.Series, str | None]:
    """Any reasonable timestamp column → Datetime("us", "UTC"); (series, guessed epoch unit)."""
    name = column.name
    guessed = None
    if tz is not None and tz not in available_timezones() and tz != "UTC":
        raise InputDataError(
            f"unknown time zone {tz!r}", hint="use an IANA name such as UTC or Europe/Berlin"
        )
    dtype = column.dtype
    if dtype == pl.String:
        parsed = _parse_strings(column, ts_format)
        bad = _first_bad(column, parsed)
        if bad is not None or (parsed.null_count() == len(parsed) and len(parsed)):
            index = bad if bad is not None else 0
            raise InputDataError(
                f"{where.origin}, {where.row(index)}, column {name!r}: cannot parse timestamp "
                f"{column[index]!r}" + (f" with format {ts_format!r}" if ts_format else ""),
                hint="give the format with --ts-format (e.g. '%Y-%m-%d %H:%M:%S' or "
                "'%d/%m/%Y %H:%M'), or fix that row",
            )
    elif dtype.is_integer() or dtype.is_float():
        unit = ts_unit or _guess_epoch_unit(column.drop_nulls())
        if unit not in _EPOCH_UNITS:
            raise InputDataError(
                f"unknown epoch unit {unit!r}", hint=f"use one of {', '.join(_EPOCH_UNITS)}"
            )
        guessed = None if ts_unit else unit
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}[unit]
        parsed = (
            (column.cast(pl.Float64) * scale).round(0).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
        )
        tz = None  # epochs are instants already
    elif dtype == pl.Date:
        parsed = column.cast(pl.Datetime("us"))
    elif isinstance(dtype, pl.Datetime):
        parsed = column.dt.cast_time_unit("us")
    else:
        raise InputDataError(
            f"{where.origin}: timestamp column {name!r} has type {dtype}, not a time",
            hint="point --ts at a column of date-times, ISO strings or epoch numbers",
        )
    if parsed.null_count():
        index = int(parsed.is_null().arg_true()[0])
        raise InputDataError(
            f"{where.origin}, {where.row(index)}: timestamp column {name!r} is empty",
            hint="every reading needs a time; drop or fill those rows",
        )
    parsed_dtype = parsed.dtype
    assert isinstance(parsed_dtype, pl.Datetime)
    if parsed_dtype.time_zone is None:
        try:
            parsed = parsed.dt.replace_time_zone(
                tz or "UTC", ambiguous="raise", non_existent="raise"
            )
        except pl.exceptions.ComputeError as exc:
            raise InputDataError(
                f"{where.origin}, column {name!r}: local times that do not exist or are "
                f"ambiguous in {tz} (a daylight-saving change): {exc}",
                hint="ingest timestamps with an explicit UTC offset, or as UTC (no --tz)",
            ) from exc
    return parsed.dt.convert_time_zone("UTC").alias("ts"), guessed


def _as_float(column: pl.Series, where: Where) -> pl.Series:
    dtype = column.dtype
    if dtype.is_float() or dtype.is_integer() or dtype == pl.Boolean or dtype == pl.Null:
        return column.cast(pl.Float64)
    if dtype == pl.String:
        stripped = column.str.strip_chars()
        cleaned = pl.when(stripped == "").then(None).otherwise(stripped)
        parsed = pl.select(cleaned.cast(pl.Float64, strict=False)).to_series()
        source = pl.select(cleaned).to_series()
        bad = _first_bad(source, parsed)
        if bad is None:
            return parsed.alias(column.name)
        count = int((source.is_not_null() & parsed.is_null()).sum())
        raise InputDataError(
            f"{where.origin}, {where.row(bad)}, column {column.name!r}: value {column[bad]!r} "
            f"is not a number ({count} such value{'s' if count > 1 else ''} in the column)",
            hint=f"fix the value, or make {column.name!r} a key column (--keys) if it labels "
            "series, or leave it out (--values)",
        )
    raise InputDataError(
        f"{where.origin}, column {column.name!r}: type {dtype} cannot be a value column",
        hint="value columns must be numbers; pass --values to choose the columns",
    )


def _as_key(column: pl.Series) -> pl.Series:
    if column.dtype.is_integer():
        return column.cast(pl.Int64)
    return column.cast(pl.String)


def normalize(
    frame: pl.DataFrame,
    *,
    ts: str,
    keys: Sequence[str] = (),
    values: Sequence[str] | None = None,
    ts_format: str | None = None,
    ts_unit: str | None = None,
    tz: str | None = None,
    where: Where,
) -> Normalized:
    """Check and convert `frame`; raise InputDataError before anything is written."""
    if frame.height == 0:
        raise InputDataError(
            f"{where.origin} has no rows", hint="check the file or query; nothing was written"
        )
    columns = frame.columns
    if ts not in columns:
        raise InputDataError(
            f"{where.origin}: timestamp column {ts!r} not found; columns are {', '.join(columns)}",
            hint=f"{_closest(ts, columns)}name the time column with --ts",
        )
    for key in keys:
        if key not in columns:
            raise InputDataError(
                f"{where.origin}: key column {key!r} not found; columns are {', '.join(columns)}",
                hint=f"{_closest(key, columns)}fix --keys",
            )
    if values is None:
        values = [c for c in columns if c != ts and c not in keys]
    else:
        for value in values:
            if value not in columns:
                raise InputDataError(
                    f"{where.origin}: value column {value!r} not found; "
                    f"columns are {', '.join(columns)}",
                    hint=f"{_closest(value, columns)}fix --values",
                )
    if not values:
        raise InputDataError(
            f"{where.origin}: no value columns besides the time and key columns",
            hint="a dataset needs at least one numeric column",
        )
    for name in (*keys, *values):
        validate_column_name(name, where=where.origin)
        if name in RESERVED_COLUMNS:
            raise InputDataError(
                f"{where.origin}: column {name!r} clashes with a lake column "
                f"({', '.join(sorted(RESERVED_COLUMNS))})",
                hint="rename it in the input before ingesting",
            )
    if len(set(keys) | set(values)) != len(keys) + len(values):
        raise InputDataError(f"{where.origin}: a column is both a key and a value column")
    for key in keys:
        nulls = frame[key].is_null()
        if nulls.any():
            index = int(nulls.arg_true()[0])
            raise InputDataError(
                f"{where.origin}, {where.row(index)}: key column {key!r} is empty",
                hint="every reading needs its key values to tell its series apart; "
                "fill them or drop those rows",
            )
    ts_series, guessed = parse_timestamps(
        frame[ts], ts_format=ts_format, ts_unit=ts_unit, tz=tz, where=where
    )
    out = pl.DataFrame(
        [
            ts_series,
            *(_as_key(frame[k]) for k in keys),
            *(_as_float(frame[v], where) for v in values),
        ]
    )
    before = out.height
    if _may_have_duplicates(out, ["ts", *keys]):
        out = out.unique(subset=["ts", *keys], keep="first", maintain_order=True)
    return Normalized(out, tuple(keys), tuple(values), before - out.height, guessed)


def _may_have_duplicates(frame: pl.DataFrame, columns: list[str]) -> bool:
    """Cheap proofs of uniqueness before the exact (and costly) `unique`: rows strictly
    increasing in (ts, keys), or no two rows with the same hash."""
    increasing = None
    for column in reversed(columns):
        col, prev = pl.col(column), pl.col(column).shift()
        step = col > prev if increasing is None else (col > prev) | ((col == prev) & increasing)
        increasing = step
    assert increasing is not None
    if frame.select(increasing.fill_null(True).all()).item():
        return False
    return bool(frame.select(columns).hash_rows().is_duplicated().any())


def units_for(values: Sequence[str], units: Mapping[str, str] | None, where: Where) -> dict:
    units = dict(units or {})
    unknown = [c for c in units if c not in values]
    if unknown:
        raise InputDataError(
            f"{where.origin}: units given for unknown value column(s) {', '.join(unknown)}",
            hint=f"value columns are {', '.join(values)}",
        )
    return units
