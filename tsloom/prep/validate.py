"""Schema and timestamp validation: find what is wrong with a batch before cleaning it.

Validation never changes data; it returns a `ValidationReport` listing each kind of
problem with a count and a few examples, so a person (or a CLI) can decide what to fix.
`parse_timestamps` is the one place strings become UTC timestamps.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, as_list, lead_order, packing, require_columns

MAX_EXAMPLES = 5
_ZONED = r"(?:[Zz]|[+-]\d{2}:?\d{2})$"
_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S%.f",
    "%d/%m/%Y %H:%M:%S",
)
_ZONED_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z")


@dataclass(frozen=True)
class Problem:
    """One kind of problem: how many rows (or columns) have it and a few examples."""

    kind: str
    count: int
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "count": self.count, "examples": list(self.examples)}


@dataclass(frozen=True)
class ValidationReport:
    """Problems found in one frame; `ok` when there are none."""

    n_rows: int
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, kind: str) -> int:
        return sum(p.count for p in self.problems if p.kind == kind)

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def __add__(self, other: ValidationReport) -> ValidationReport:
        return ValidationReport(max(self.n_rows, other.n_rows), self.problems + other.problems)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "n_rows": self.n_rows,
            "problems": [p.to_dict() for p in self.problems],
        }


def _examples(values: Iterable[object]) -> tuple[str, ...]:
    if isinstance(values, pl.Series):
        values = values.head(MAX_EXAMPLES).to_list()
    return tuple(str(v) for v in itertools.islice(values, MAX_EXAMPLES))


def _problem(kind: str, count: int, examples: Iterable[object] = ()) -> list[Problem]:
    return [Problem(kind, int(count), _examples(examples))] if count else []


_TYPE_NAMES: dict[str, type[pl.DataType] | pl.DataType] = {
    "float": pl.Float64,
    "int": pl.Int64,
    "str": pl.String,
    "string": pl.String,
    "bool": pl.Boolean,
    "datetime": pl.Datetime,
    "date": pl.Date,
}


def _type_ok(actual: pl.DataType, expected: object) -> bool:
    """Loose match: 'float'/'int' accept any width; pl.Datetime accepts any unit/zone."""
    if expected in ("float", pl.Float64, pl.Float32, float):
        return actual.is_float()
    if expected in ("int", int):
        return actual.is_integer()
    if expected in ("numeric", "number"):
        return actual.is_numeric()
    if isinstance(expected, str):
        expected = _TYPE_NAMES.get(expected.lower(), expected)
    if expected is pl.Datetime:
        return isinstance(actual, pl.Datetime)
    try:
        return bool(actual == expected)
    except TypeError:
        return False


def validate_schema(
    df: pl.DataFrame | pl.Schema | Mapping[str, pl.DataType],
    expected: Mapping[str, object],
    *,
    allow_extra: bool = True,
) -> ValidationReport:
    """Compare columns and types with the expected ones (e.g. {'ts': pl.Datetime, 'x': 'float'}).

    Reports `missing_column`, `wrong_type` and (unless allow_extra) `extra_column`.
    """
    schema = df.schema if isinstance(df, pl.DataFrame) else dict(df)
    n_rows = df.height if isinstance(df, pl.DataFrame) else 0
    missing = [c for c in expected if c not in schema]
    wrong = [
        f"{c}: expected {expected[c]}, got {schema[c]}"
        for c in expected
        if c in schema and not _type_ok(schema[c], expected[c])
    ]
    extra = [] if allow_extra else [c for c in schema if c not in expected]
    problems = (
        _problem("missing_column", len(missing), missing)
        + _problem("wrong_type", len(wrong), wrong)
        + _problem("extra_column", len(extra), extra)
    )
    return ValidationReport(n_rows, tuple(problems))


def _parse_expr(col: str, fmt: str | None, assume_tz: str) -> pl.Expr:
    """Strings → UTC Datetime(us); zoned strings are converted, naive ones get assume_tz."""
    raw = pl.col(col).str.strip_chars()
    if fmt is not None:
        parsed = raw.str.to_datetime(fmt, time_unit="us", strict=False)
        if "%z" in fmt or "%:z" in fmt or "%#z" in fmt:
            return parsed.dt.convert_time_zone("UTC")
        return parsed.dt.replace_time_zone(assume_tz).dt.convert_time_zone("UTC")
    zoned = raw.str.contains(_ZONED)
    z = raw.str.replace(r"[Zz]$", "+00:00")
    as_zoned = pl.coalesce(
        [
            z.str.to_datetime(f, time_unit="us", strict=False).dt.convert_time_zone("UTC")
            for f in _ZONED_FORMATS
        ]
    )
    as_naive = pl.coalesce([raw.str.to_datetime(f, time_unit="us", strict=False) for f in _FORMATS])
    as_naive = as_naive.dt.replace_time_zone(assume_tz).dt.convert_time_zone("UTC")
    return pl.when(zoned).then(as_zoned).otherwise(as_naive)


def parse_timestamps(
    df: pl.DataFrame,
    ts: str = TS,
    *,
    fmt: str | None = None,
    assume_tz: str = "UTC",
    strict: bool = True,
) -> pl.DataFrame:
    """Make `ts` a UTC Datetime("us"): strings are parsed (with `fmt`, or common ISO-like
    formats), naive values are taken to be in `assume_tz`, zoned values are converted.

    With strict=True an unparseable value raises PrepError naming examples; otherwise it
    becomes null.
    """
    require_columns(df, [ts], "timestamp column")
    dtype = df.schema[ts]
    if dtype == pl.String:
        out = df.with_columns(_parse_expr(ts, fmt, assume_tz).alias(ts))
        bad = df.filter(out.get_column(ts).is_null() & df.get_column(ts).is_not_null())
        if strict and bad.height:
            raise PrepError(
                f"{bad.height} value(s) in {ts!r} are not timestamps, e.g. "
                + ", ".join(repr(v) for v in bad.get_column(ts).head(3).to_list()),
                hint="pass fmt= with the strftime format the source uses",
            )
        return out
    if isinstance(dtype, pl.Datetime):
        expr = pl.col(ts).dt.cast_time_unit("us")
        if dtype.time_zone is None:
            expr = expr.dt.replace_time_zone(assume_tz)
        return df.with_columns(expr.dt.convert_time_zone("UTC").alias(ts))
    if dtype == pl.Date:
        return df.with_columns(
            pl.col(ts)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone(assume_tz)
            .dt.convert_time_zone("UTC")
            .alias(ts)
        )
    raise PrepError(
        f"timestamp column {ts!r} has type {dtype}",
        hint="timestamps must be strings, dates or datetimes",
    )


def _order_rows(
    valid: pl.DataFrame, keys: list[str], ts: str
) -> tuple[np.ndarray, np.ndarray, Callable[[], np.ndarray]] | None:
    """Positions (ascending) of the rows of `valid` (no null stamps) that are earlier
    than the previous stamp of their key, equal to it, and (on demand) that share their
    (key, ts) with another row.

    Rows are grouped by key with one stable sort (input order kept within a key) and the
    duplicates found by a second, stable sort by (key, ts), which is cheap on stamps that
    are nearly in order already. Both need the key and ts packed into one integer
    (`packing`); None otherwise, and the caller hashes instead.
    """
    packed = packing(valid, [*keys, ts])
    if packed is None:
        return None
    full, spans = packed
    if keys:
        first, values = lead_order(valid, keys, full, spans)
        if first is None:  # too many keys for a radix pass: polars sorts them
            by_key = pl.arg_sort_by(full // spans[-1], maintain_order=True)
            first = valid.select(by_key).to_series().to_numpy()
        order = first
        grouped = values[order]
        key = grouped // spans[-1]  # the key's part of the packed (key, ts)
        same_key = key[1:] == key[:-1]
    else:
        order = np.arange(valid.height)
        grouped = valid.select(full).to_series().to_numpy()
        same_key = np.ones(max(valid.height - 1, 0), dtype=bool)
    back = np.sort(order[1:][same_key & (grouped[1:] < grouped[:-1])])
    same = np.sort(order[1:][same_key & (grouped[1:] == grouped[:-1])])

    def duplicated() -> np.ndarray:
        by_stamp = np.argsort(grouped, kind="stable")
        ordered = grouped[by_stamp]
        equal = np.flatnonzero(ordered[1:] == ordered[:-1])
        return np.sort(order[by_stamp[np.union1d(equal, equal + 1)]])

    return back, same, duplicated


def validate_timestamps(
    df: pl.DataFrame,
    ts: str = TS,
    *,
    by: str | Sequence[str] | None = None,
    fmt: str | None = None,
    now: dt.datetime | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    require_zone: bool = True,
) -> ValidationReport:
    """Check timestamps: unparseable, missing, out of order, duplicated (per key), in the
    future (after `now`, default: the current time), outside [start, end], and naive
    (no time zone) when `require_zone`."""
    keys = as_list(by)
    require_columns(df, [ts, *keys])
    dtype = df.schema[ts]
    problems: list[Problem] = []
    work = df.select([*keys, ts]).with_row_index("_row")
    if dtype == pl.String:
        raw = work.get_column(ts)
        parsed = work.with_columns(_parse_expr(ts, fmt, "UTC").alias(ts))
        ok = parsed.get_column(ts).is_not_null()
        bad = raw.filter(~ok & raw.is_not_null())
        naive = raw.filter(ok & ~raw.str.contains(_ZONED))
        problems += _problem("unparseable", bad.len(), bad)
        if require_zone:
            problems += _problem("naive", naive.len(), naive)
        work = parsed
    elif isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            if require_zone:
                problems += _problem("naive", work.height, ["column has no time zone"])
            work = work.with_columns(pl.col(ts).dt.replace_time_zone("UTC"))
        work = work.with_columns(pl.col(ts).dt.cast_time_unit("us").dt.convert_time_zone("UTC"))
    else:
        return ValidationReport(df.height, (Problem("wrong_type", 1, (f"{ts}: {dtype}",)),))

    col = pl.col(ts)
    absent = df.get_column(ts).is_null()  # missing in the input, not unparseable
    problems += _problem("missing", int(absent.sum()), work.filter(absent).get_column("_row"))
    valid = work.filter(col.is_not_null())
    rows = _order_rows(valid, keys, ts)
    if rows is None:
        prev = col.shift(1).over(keys) if keys else col.shift(1)
        valid = valid.with_columns((col < prev).alias("_back"), (col == prev).alias("_same"))
        back = valid.filter(pl.col("_back"))
    else:
        back = valid[rows[0]]
    problems += _problem(
        "out_of_order",
        back.height,
        [f"row {r}: {t}" for r, t in back.head(MAX_EXAMPLES).select("_row", ts).rows()],
    )
    if back.height == 0:  # in order: a repeated stamp follows its first occurrence
        dups = valid.filter(pl.col("_same")) if rows is None else valid[rows[1]]
        n_dup = dups.height
    else:  # out of order: hash (key, ts), or sort it (see _order_rows)
        if rows is None:
            dups = valid.filter(pl.struct([*keys, ts]).is_duplicated())
        else:
            dups = valid[rows[2]()]
        n_dup = dups.height - dups.select([*keys, ts]).n_unique() if dups.height else 0
    examples = dups.get_column(ts).head(MAX_EXAMPLES * 10).unique(maintain_order=True)
    problems += _problem("duplicate", n_dup, examples)
    now = now or dt.datetime.now(dt.UTC)
    for kind, cond in (
        ("future", col > _utc(now)),
        ("before_start", col < _utc(start) if start else None),
        ("after_end", col > _utc(end) if end else None),
    ):
        if cond is not None:
            hit = valid.filter(cond)
            problems += _problem(kind, hit.height, hit.get_column(ts))
    return ValidationReport(df.height, tuple(problems))


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def validate(
    df: pl.DataFrame,
    expected: Mapping[str, object] | None = None,
    ts: str = TS,
    **timestamp_options: object,
) -> ValidationReport:
    """Schema (when `expected` is given) plus timestamp validation in one report."""
    report = ValidationReport(df.height)
    if expected is not None:
        report = report + validate_schema(df, expected)
    if ts in df.columns:
        report = report + validate_timestamps(df, ts, **timestamp_options)  # type: ignore[arg-type]
    elif expected is None or ts not in expected:
        report = report + ValidationReport(df.height, (Problem("missing_column", 1, (ts,)),))
    return report
