"""Seeded synthetic sensor data: tsloom's demo data and the ground truth for its tests.

A :class:`SensorSpec` describes one source (a ``database.table`` dataset): its nominal
period, timestamp jitter, how many sensors (series) it has, its value columns with their
units, the shape of the signal (level, linear trend, daily and weekly seasonality, noise)
and how dirty the data is (gaps, duplicates, outliers). :func:`generate` turns a spec into
a polars frame plus a :class:`Truth` that records exactly what was done to it, so that
period estimation, gap detection, deduplication and anomaly detection can be tested
against known answers.

Everything is vectorised numpy and fully determined by ``seed`` (and the dataset name,
so that one seed gives independent streams to different sources).

Frame layout
    ``ts``: ``Datetime("us", "UTC")``, the nominal time ``start + k * period`` plus a
    jitter drawn uniformly from the whole seconds in ``[-jitter, +jitter]``; ``start`` is
    floored to a whole second, so every timestamp is a whole second (the first ones may
    lie up to ``jitter`` before ``start``).
    ``sensor_id`` (Int64, ``1..sensors``) and ``position`` (String) are the key columns,
    followed by one Float64 column per value column, rounded to ``spec.decimals``.
    Rows are ordered by ``ts`` except for *late* duplicates, which arrive one to three
    periods after their original, as re-sent readings from real sensors do.

Dirt, and what :class:`Truth` says about it
    * gaps: ``round(gap_rate * nominal_rows)`` nominal slots are removed, in runs of one
      to ``max_gap_periods`` periods; the first and last slot of each series is always
      kept and runs never touch, so dividing each timestamp gap by the period and
      rounding (``round(gap / period) - 1``) recovers every missing slot exactly
      (jitter is limited to less than a quarter period to guarantee that).
    * outliers: ``round(outlier_rate * unique_rows)`` readings of one value column are
      replaced by ``baseline ± U(6, 10) * spread`` where ``spread`` is the column's
      standard deviation without trend (noise, daily and weekly amplitudes together).
    * duplicates: ``round(duplicate_rate * unique_rows)`` non-outlier rows are sent twice
      with the same keys and ``ts``; about half are exact copies, the others carry a
      different value in every value column (*conflicting* duplicates).

Big files
    :func:`write_csv_rows` streams a clean ``ts,sensor_id,value`` CSV of exactly N rows
    (no gaps, duplicates or outliers) for ingestion benchmarks, in bounded memory.

CSV format
    Written CSVs use ISO-8601 UTC timestamps with a ``Z`` suffix and whole seconds,
    e.g. ``2026-01-05T00:05:03Z`` (:data:`CSV_TS_FORMAT`);
    ``polars.read_csv(path, try_parse_dates=True)`` reads them back as
    ``Datetime("us", "UTC")``. Floats are written in their shortest exact form.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tsloom.errors import TsloomError

__all__ = [
    "CSV_TS_FORMAT",
    "DEMO_SPECS",
    "DEMO_START",
    "DemoFile",
    "SensorSpec",
    "SyntheticSeries",
    "SyntheticSpecError",
    "Truth",
    "demo_series",
    "generate",
    "load_truth",
    "write_csv_rows",
    "write_demo",
    "write_frame_csv",
]

CSV_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""strftime format of ``ts`` in every CSV this module writes (ISO-8601, UTC, ``Z``)."""

DEMO_START = datetime(2026, 1, 5, tzinfo=UTC)
"""Default start of the demo data: a Monday, midnight UTC."""

TS_COLUMN = "ts"
KEY_COLUMNS = ("sensor_id", "position")

_US = 1_000_000
_DAY_US = 86_400 * _US
_HOUR_US = 3_600 * _US
_DATASET_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$")
_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DT = pl.Datetime("us", "UTC")
_SEED_MASK = (1 << 64) - 1


class SyntheticSpecError(TsloomError, ValueError):
    """A sensor spec or generate() call that cannot produce data."""


FloatOrPerColumn = float | tuple[float, ...]


@dataclass(frozen=True)
class SensorSpec:
    """One synthetic source (dataset). Per-column parameters take a float (all columns)
    or a tuple with one value per column."""

    dataset: str
    period: timedelta
    jitter: timedelta = timedelta(0)
    sensors: int = 1
    position: str = "Site A"
    columns: tuple[str, ...] = ("co2",)
    units: tuple[str, ...] | Mapping[str, str] = ()
    level: FloatOrPerColumn = 420.0
    trend_per_day: FloatOrPerColumn = 0.5
    daily_amplitude: FloatOrPerColumn = 40.0
    weekly_amplitude: FloatOrPerColumn = 15.0
    noise_std: FloatOrPerColumn = 8.0
    daily_peak_hour: FloatOrPerColumn = 14.0
    """Hour of day (UTC) at which the daily component peaks; a negative amplitude troughs."""
    weekly_peak_day: FloatOrPerColumn = 2.0
    """Day of week (0 = Monday, fractions allowed) at which the weekly component peaks."""
    gap_rate: float = 0.02
    duplicate_rate: float = 0.01
    outlier_rate: float = 0.005
    conflicting_share: float = 0.5
    """Share of duplicates that carry a different value (the rest are exact copies)."""
    late_share: float = 0.3
    """Share of duplicates that arrive one to three periods after their original."""
    max_gap_periods: int = 12
    outlier_scale: tuple[float, float] = (6.0, 10.0)
    decimals: int = 2

    def __post_init__(self) -> None:
        def fail(message: str, hint: str | None = None) -> None:
            raise SyntheticSpecError(f"sensor spec {self.dataset!r}: {message}", hint)

        if not isinstance(self.dataset, str) or not _DATASET_RE.match(self.dataset):
            fail(
                "dataset must be 'database.table'",
                "use lowercase letters, digits and '_', e.g. 'airq.gwangju'",
            )
        if not isinstance(self.period, timedelta) or self.period < timedelta(seconds=1):
            fail("period must be a timedelta of at least one second")
        if self.period % timedelta(seconds=1):
            fail("period must be a whole number of seconds")
        if not isinstance(self.jitter, timedelta) or self.jitter < timedelta(0):
            fail("jitter must be a non-negative timedelta")
        if self.jitter * 4 >= self.period:
            fail(
                f"jitter {self.jitter} must be less than a quarter of the period {self.period}",
                "larger jitter would make gaps ambiguous to divide-and-round",
            )
        if int(self.sensors) != self.sensors or self.sensors < 1:
            fail("sensors must be a positive integer")
        columns = tuple(self.columns)
        if not columns or len(set(columns)) != len(columns):
            fail("columns must be a non-empty tuple of distinct names")
        for name in columns:
            if not isinstance(name, str) or not _COLUMN_RE.match(name):
                fail(f"column name {name!r} is not a plain identifier")
            if name in (TS_COLUMN, *KEY_COLUMNS):
                fail(f"column name {name!r} clashes with a key or timestamp column")
        object.__setattr__(self, "columns", columns)
        if isinstance(self.units, Mapping):
            unknown = set(self.units) - set(columns)
            if unknown:
                fail(f"units given for unknown columns {sorted(unknown)}")
            units = tuple(str(self.units.get(c, "")) for c in columns)
        else:
            units = tuple(str(u) for u in self.units) or ("",) * len(columns)
            if len(units) != len(columns):
                fail(f"{len(units)} units for {len(columns)} columns")
        object.__setattr__(self, "units", units)
        for name in (
            "level",
            "trend_per_day",
            "daily_amplitude",
            "weekly_amplitude",
            "noise_std",
            "daily_peak_hour",
            "weekly_peak_day",
        ):
            raw = getattr(self, name)
            if isinstance(raw, int | float):
                values: tuple[float, ...] = (float(raw),)
            else:
                values = tuple(float(v) for v in raw)
                if len(values) != len(columns):
                    fail(f"{name} has {len(values)} values for {len(columns)} columns")
                object.__setattr__(self, name, values)
            if not all(math.isfinite(v) for v in values):
                fail(f"{name} must be finite")
        if any(v < 0 for v in self._per_column("noise_std")):
            fail("noise_std must be non-negative")
        for name in ("gap_rate", "duplicate_rate", "outlier_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 0.5:
                fail(f"{name} must be between 0 and 0.5, got {rate}")
        if self.duplicate_rate + self.outlier_rate > 0.9:
            fail("duplicate_rate + outlier_rate must stay below 0.9")
        for name in ("conflicting_share", "late_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(f"{name} must be between 0 and 1")
        if int(self.max_gap_periods) != self.max_gap_periods or self.max_gap_periods < 1:
            fail("max_gap_periods must be a positive integer")
        lo, hi = self.outlier_scale
        if not 0 < lo <= hi:
            fail("outlier_scale must be (low, high) with 0 < low <= high")
        object.__setattr__(self, "outlier_scale", (float(lo), float(hi)))
        if int(self.decimals) != self.decimals or not 0 <= self.decimals <= 9:
            fail("decimals must be an integer between 0 and 9")

    def _per_column(self, name: str) -> tuple[float, ...]:
        raw = getattr(self, name)
        if isinstance(raw, tuple):
            return raw
        return (float(raw),) * len(self.columns)

    @property
    def unit_map(self) -> dict[str, str]:
        """Column name -> unit ('' where unknown)."""
        return dict(zip(self.columns, self.units, strict=True))

    @property
    def key_columns(self) -> tuple[str, ...]:
        return KEY_COLUMNS

    @property
    def ts_column(self) -> str:
        return TS_COLUMN

    def spread(self) -> dict[str, float]:
        """Per column, the standard deviation of the signal without trend."""
        out = {}
        for i, c in enumerate(self.columns):
            noise = self._per_column("noise_std")[i]
            daily = self._per_column("daily_amplitude")[i]
            weekly = self._per_column("weekly_amplitude")[i]
            out[c] = math.sqrt(noise**2 + daily**2 / 2 + weekly**2 / 2)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (timedeltas as seconds)."""
        d = asdict(self)
        d["period"] = self.period.total_seconds()
        d["jitter"] = self.jitter.total_seconds()
        d["columns"] = list(self.columns)
        d["units"] = self.unit_map
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if us % _US else CSV_TS_FORMAT
    )


def _frame_to_json(frame: pl.DataFrame) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, dtype in frame.schema.items():
        col = frame.get_column(name)
        if dtype == _DT:
            out[name] = col.dt.strftime(CSV_TS_FORMAT).to_list()
        else:
            out[name] = col.to_list()
    return out


_TRUTH_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "missing": {"sensor_id": pl.Int64(), "ts": _DT},
    "gaps": {"sensor_id": pl.Int64(), "start": _DT, "missing": pl.Int64()},
    "outliers": {
        "sensor_id": pl.Int64(),
        "ts": _DT,
        "column": pl.String(),
        "value": pl.Float64(),
        "baseline": pl.Float64(),
    },
    "duplicates": {
        "sensor_id": pl.Int64(),
        "ts": _DT,
        "conflicting": pl.Boolean(),
        "late": pl.Boolean(),
    },
}


def _frame_from_json(name: str, data: Mapping[str, list[Any]]) -> pl.DataFrame:
    schema = _TRUTH_SCHEMAS[name]
    cols = []
    for col, dtype in schema.items():
        values = data.get(col, [])
        if dtype == _DT:
            s = pl.Series(col, values, dtype=pl.String).str.to_datetime(
                CSV_TS_FORMAT, time_unit="us", time_zone="UTC"
            )
        else:
            s = pl.Series(col, values, dtype=dtype)
        cols.append(s)
    return pl.DataFrame(cols)


@dataclass(frozen=True, eq=False)
class Truth:
    """What the generator did to one dataset.

    ``missing``: one row per removed nominal slot (``sensor_id``, nominal ``ts``).
    ``gaps``: one row per run of removed slots (``sensor_id``, first missing nominal
    ``start``, ``missing`` = run length in periods).
    ``outliers``: ``sensor_id``, ``ts`` (as in the frame), ``column``, ``value`` written,
    ``baseline`` (the clean signal there).
    ``duplicates``: one row per extra row (``sensor_id``, ``ts``, ``conflicting``, ``late``).
    """

    dataset: str
    seed: int
    period: timedelta
    jitter: timedelta
    start: datetime
    end: datetime
    """Exclusive end of the nominal grid: start + slots * period."""
    sensors: int
    columns: tuple[str, ...]
    nominal_rows: int
    """Nominal slots over all sensors, before gaps."""
    rows: int
    """Rows in the frame (unique_rows + duplicate_count)."""
    missing: pl.DataFrame = field(repr=False)
    gaps: pl.DataFrame = field(repr=False)
    outliers: pl.DataFrame = field(repr=False)
    duplicates: pl.DataFrame = field(repr=False)

    @property
    def unique_rows(self) -> int:
        """Rows left after dropping every duplicate (one per sensor and ts)."""
        return self.rows - self.duplicate_count

    @property
    def missing_count(self) -> int:
        return self.missing.height

    @property
    def gap_count(self) -> int:
        return self.gaps.height

    @property
    def outlier_count(self) -> int:
        return self.outliers.height

    @property
    def duplicate_count(self) -> int:
        return self.duplicates.height

    @property
    def conflicting_duplicate_count(self) -> int:
        return int(self.duplicates.get_column("conflicting").sum())

    @property
    def exact_duplicate_count(self) -> int:
        return self.duplicate_count - self.conflicting_duplicate_count

    @property
    def late_duplicate_count(self) -> int:
        return int(self.duplicates.get_column("late").sum())

    def _times(self, frame: pl.DataFrame, sensor_id: int | None) -> list[datetime]:
        if sensor_id is not None:
            frame = frame.filter(pl.col("sensor_id") == sensor_id)
        return frame.get_column("ts").sort().to_list()

    def missing_timestamps(self, sensor_id: int | None = None) -> list[datetime]:
        """Nominal times removed (of one sensor, or of all, sorted, with repeats)."""
        return self._times(self.missing, sensor_id)

    def outlier_timestamps(self, sensor_id: int | None = None) -> list[datetime]:
        """Frame timestamps of outlier readings (of one sensor, or of all)."""
        return self._times(self.outliers, sensor_id)

    def counts(self) -> dict[str, int]:
        return {
            "nominal_rows": self.nominal_rows,
            "rows": self.rows,
            "unique_rows": self.unique_rows,
            "missing_count": self.missing_count,
            "gap_count": self.gap_count,
            "outlier_count": self.outlier_count,
            "duplicate_count": self.duplicate_count,
            "conflicting_duplicate_count": self.conflicting_duplicate_count,
            "exact_duplicate_count": self.exact_duplicate_count,
            "late_duplicate_count": self.late_duplicate_count,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: scalars, counts, and the detail frames as column lists."""
        return {
            "dataset": self.dataset,
            "seed": self.seed,
            "period_seconds": self.period.total_seconds(),
            "jitter_seconds": self.jitter.total_seconds(),
            "start": self.start.strftime(CSV_TS_FORMAT),
            "end": self.end.strftime(CSV_TS_FORMAT),
            "sensors": self.sensors,
            "columns": list(self.columns),
            **self.counts(),
            "missing": _frame_to_json(self.missing),
            "gaps": _frame_to_json(self.gaps),
            "outliers": _frame_to_json(self.outliers),
            "duplicates": _frame_to_json(self.duplicates),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Truth:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""

        def when(text: str) -> datetime:
            return datetime.strptime(text, CSV_TS_FORMAT).replace(tzinfo=UTC)

        return cls(
            dataset=data["dataset"],
            seed=int(data["seed"]),
            period=timedelta(seconds=data["period_seconds"]),
            jitter=timedelta(seconds=data["jitter_seconds"]),
            start=when(data["start"]),
            end=when(data["end"]),
            sensors=int(data["sensors"]),
            columns=tuple(data["columns"]),
            nominal_rows=int(data["nominal_rows"]),
            rows=int(data["rows"]),
            missing=_frame_from_json("missing", data["missing"]),
            gaps=_frame_from_json("gaps", data["gaps"]),
            outliers=_frame_from_json("outliers", data["outliers"]),
            duplicates=_frame_from_json("duplicates", data["duplicates"]),
        )


def load_truth(path: str | Path) -> Truth:
    """Read a ``<dataset>.truth.json`` written by :func:`write_demo`."""
    return Truth.from_dict(json.loads(Path(path).read_text()))


def write_frame_csv(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a frame as CSV with ``ts`` in :data:`CSV_TS_FORMAT`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, datetime_format=CSV_TS_FORMAT)
    return path


@dataclass(frozen=True, eq=False)
class SyntheticSeries:
    spec: SensorSpec
    frame: pl.DataFrame
    truth: Truth

    def write_csv(self, path: str | Path) -> Path:
        return write_frame_csv(self.frame, path)


# --------------------------------------------------------------------------- generation


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _epoch_us(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _rng(seed: int, dataset: str, purpose: str = "") -> np.random.Generator:
    salt = zlib.crc32(f"{dataset}\x00{purpose}".encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed) & _SEED_MASK, salt]))


def _split_slots(total: int, sensors: int) -> np.ndarray:
    """Slots per series: ``total`` spread so counts differ by at most one (first get more)."""
    base, extra = divmod(total, sensors)
    return np.full(sensors, base, dtype=np.int64) + (np.arange(sensors) < extra)


def _gap_split(n_per: np.ndarray, gap_rate: float) -> np.ndarray:
    """Removed slots per series: round(gap_rate * total), proportional, never the ends."""
    total = int(n_per.sum())
    gaps = _round_half_up(gap_rate * total)
    if total == 0 or gaps == 0:
        return np.zeros_like(n_per)
    share = gaps * n_per // total
    rest = gaps - int(share.sum())
    share[:rest] += 1
    return np.minimum(share, np.maximum(n_per - 2, 0))


def _run_lengths(rng: np.random.Generator, total: int, max_run: int, kept: int) -> np.ndarray:
    """Run lengths summing to ``total``: ~35% singletons, else 2 + geometric, capped."""
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.where(rng.random(total) < 0.35, 1, 2 + rng.geometric(0.3, size=total) - 1).astype(
        np.int64
    )
    np.minimum(lengths, max_run, out=lengths)
    cum = np.cumsum(lengths)
    k = int(np.searchsorted(cum, total)) + 1
    lengths = lengths[:k]
    lengths[-1] -= int(cum[k - 1]) - total
    slots_between = kept - 1  # a run sits after kept slot 1..kept-1, at most one per place
    if k > slots_between:  # tiny series: fewer, longer runs
        k = max(slots_between, 1)
        lengths = _split_slots(total, k)
    return lengths


def _place_gaps(
    rng: np.random.Generator, n: int, removed: int, max_run: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(removed slot indices, run starts, run lengths) for one series of ``n`` slots."""
    if removed == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    kept = n - removed
    lengths = _run_lengths(rng, removed, max_run, kept)
    k = lengths.size
    # Run i goes just before kept slot after[i] (1..kept-1, distinct): never at an end,
    # and at least one kept slot between runs.
    after = np.sort(rng.choice(kept - 1, size=k, replace=False)) + 1
    offsets = np.cumsum(lengths) - lengths
    starts = after + offsets
    slots = np.repeat(starts - offsets, lengths) + np.arange(removed)
    return slots.astype(np.int64), starts.astype(np.int64), lengths


def _solve_rows(spec: SensorSpec, rows: int) -> tuple[int, int]:
    """Nominal slots T and duplicate count D so that kept(T) + D == rows exactly."""

    def kept(total: int) -> int:
        return total - int(_gap_split(_split_slots(total, spec.sensors), spec.gap_rate).sum())

    def reached(total: int) -> bool:
        if total <= 0:
            return False
        k = kept(total)
        return k + _round_half_up(spec.duplicate_rate * k) >= rows

    # Bisect for a boundary T: reached(T) and not reached(T - 1). Then
    # kept(T) <= kept(T - 1) + 1 <= rows, so 0 <= rows - kept(T) <= round(rate * kept(T)).
    lo, hi = 0, 2 * rows + 4 * spec.sensors + 16  # reached(0) is False, reached(hi) True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    total = hi
    duplicates = rows - kept(total)
    if duplicates < 0:  # pragma: no cover - guarded by the search above
        raise SyntheticSpecError(f"cannot produce exactly {rows} rows for {spec.dataset}")
    return total, duplicates


def generate(
    spec: SensorSpec,
    start: datetime,
    end: datetime | None = None,
    *,
    rows: int | None = None,
    seed: int = 0,
) -> SyntheticSeries:
    """Generate one dataset over ``[start, end)`` or with exactly ``rows`` frame rows.

    With ``end``, every sensor gets the nominal slots ``start + k * period < end``. With
    ``rows``, the slots are spread over the sensors (counts differ by at most one) and the
    duplicate count is adjusted by at most one so the frame has exactly ``rows`` rows.
    Naive datetimes are taken as UTC; ``start`` is floored to a whole second.
    """
    if (end is None) == (rows is None):
        raise SyntheticSpecError("generate() needs exactly one of end= or rows=")
    start_us = _epoch_us(start) // _US * _US
    period_us = int(spec.period // timedelta(microseconds=1))
    sensors = int(spec.sensors)
    if end is not None:
        end_us = _epoch_us(end)
        if end_us <= start_us:
            raise SyntheticSpecError(f"end {end} is not after start {start}")
        slots = -(-(end_us - start_us) // period_us)
        total = slots * sensors
        duplicates = None
    else:
        assert rows is not None
        if rows < 1:
            raise SyntheticSpecError(f"rows must be positive, got {rows}")
        total, duplicates = _solve_rows(spec, int(rows))
    n_per = _split_slots(total, sensors)
    n_max = int(n_per.max())
    removed_per = _gap_split(n_per, spec.gap_rate)

    # Gaps, per series, on the flattened (slot, sensor) grid: index = slot * sensors + s.
    rng_gaps = _rng(seed, spec.dataset, "gaps")
    keep = np.ones(total, dtype=bool)
    gap_sid, gap_start, gap_len, miss_sid, miss_slot = [], [], [], [], []
    for s in range(sensors):
        slots_s, starts, lengths = _place_gaps(
            rng_gaps, int(n_per[s]), int(removed_per[s]), int(spec.max_gap_periods)
        )
        keep[slots_s * sensors + s] = False
        gap_sid.append(np.full(starts.size, s + 1, dtype=np.int64))
        gap_start.append(starts)
        gap_len.append(lengths)
        miss_sid.append(np.full(slots_s.size, s + 1, dtype=np.int64))
        miss_slot.append(slots_s)
    idx = np.flatnonzero(keep)
    unique = idx.size
    slot = idx // sensors
    sidx = (idx - slot * sensors).astype(np.int64)

    rng = _rng(seed, spec.dataset, "values")
    jitter_s = int(spec.jitter.total_seconds())
    period_s = period_us // _US
    sec = slot * period_s  # seconds since start; ts = start + sec
    del slot
    if jitter_s:
        sec += rng.integers(-jitter_s, jitter_s + 1, size=unique)
    ts = sec * _US
    ts += start_us

    # Seasonality comes from one table per column over the 604800 seconds of a week
    # (Monday 00:00 UTC = 0), indexed by each row's second of week shifted by its
    # sensor's small phase offset: one gather per column instead of trigonometry per row.
    week_s = 7 * 86_400
    shift = np.round(rng.normal(0.0, 0.3, size=sensors) * 3600).astype(np.int64)
    week_index = sec + ((start_us // _US + 3 * 86_400) % week_s)
    week_index -= shift[sidx]
    week_index %= week_s
    sensor_level = rng.normal(0.0, 0.5, size=(len(spec.columns), sensors))
    table_hours = np.arange(week_s) * (1.0 / 3600.0)
    days = sec * (1.0 / 86_400)
    del sec

    ncols = len(spec.columns)
    if duplicates is None:
        duplicates = _round_half_up(spec.duplicate_rate * unique)
    # Duplicates come from non-outlier rows; only tiny series can run short of them.
    outliers_n = min(_round_half_up(spec.outlier_rate * unique), unique - duplicates)
    out_rows = np.sort(rng.choice(unique, size=outliers_n, replace=False))
    out_cols = rng.integers(0, ncols, size=outliers_n)
    out_sign = np.where(rng.random(outliers_n) < 0.5, -1.0, 1.0)
    lo, hi = spec.outlier_scale
    out_mag = rng.uniform(lo, hi, size=outliers_n)
    spread = spec.spread()
    values: list[np.ndarray] = []
    out_value = np.empty(outliers_n)
    out_base = np.empty(outliers_n)
    params = {
        name: spec._per_column(name)
        for name in (
            "level",
            "trend_per_day",
            "daily_amplitude",
            "weekly_amplitude",
            "noise_std",
            "daily_peak_hour",
            "weekly_peak_day",
        )
    }
    two_pi = 2.0 * np.pi
    for c, column in enumerate(spec.columns):
        level = params["level"][c] + sensor_level[c] * (
            params["noise_std"][c] + 0.02 * abs(params["level"][c])
        )
        table = params["daily_amplitude"][c] * np.cos(
            (table_hours - params["daily_peak_hour"][c]) * (two_pi / 24.0)
        )
        table += params["weekly_amplitude"][c] * np.cos(
            (table_hours / 24.0 - params["weekly_peak_day"][c]) * (two_pi / 7.0)
        )
        base = table[week_index]
        if sensors > 1 or level[0]:
            base += level[sidx] if sensors > 1 else level[0]
        if params["trend_per_day"][c]:
            base += params["trend_per_day"][c] * days
        col = rng.standard_normal(unique)
        col *= params["noise_std"][c]
        col += base
        mine = out_cols == c
        rows_c = out_rows[mine]
        col[rows_c] = base[rows_c] + out_sign[mine] * out_mag[mine] * spread[column]
        out_base[mine] = base[rows_c]
        del base
        col = np.round(col, spec.decimals)
        out_value[mine] = col[rows_c]
        values.append(col)
    del week_index, days

    # Duplicates: drawn from the non-outlier rows.
    pool_size = unique - outliers_n
    pick = np.sort(rng.choice(pool_size, size=duplicates, replace=False))
    if outliers_n:  # map positions in the non-outlier pool to row indices
        pool_mask = np.ones(unique, dtype=bool)
        pool_mask[out_rows] = False
        dup_src = np.flatnonzero(pool_mask)[pick]
    else:
        dup_src = pick
    conflicting = np.zeros(duplicates, dtype=bool)
    conflicting[
        rng.choice(
            duplicates, size=_round_half_up(spec.conflicting_share * duplicates), replace=False
        )
    ] = True
    late = np.zeros(duplicates, dtype=bool)
    late[
        rng.choice(duplicates, size=_round_half_up(spec.late_share * duplicates), replace=False)
    ] = True
    delay = np.where(late, rng.integers(1, 4, size=duplicates), 0) * period_us
    unit = 10.0 ** (-spec.decimals)
    dup_values = []
    for c in range(ncols):
        v = values[c][dup_src]
        n_conf = int(conflicting.sum())
        step = max(params["noise_std"][c], 2 * unit)
        delta = rng.uniform(0.5, 2.0, size=n_conf) * step
        delta *= np.where(rng.random(n_conf) < 0.5, -1.0, 1.0)
        v[conflicting] = np.round(v[conflicting] + delta, spec.decimals)
        dup_values.append(v)

    # Assemble: originals then duplicates, stably ordered by arrival time.
    dup_ts = ts[dup_src]
    key = np.concatenate((ts, dup_ts + delay))
    order = np.argsort(key, kind="stable")
    del key
    all_ts = np.concatenate((ts, dup_ts))[order]
    all_sid = np.concatenate((sidx, sidx[dup_src]))[order] + 1
    data: dict[str, Any] = {
        TS_COLUMN: pl.Series(TS_COLUMN, all_ts).cast(_DT),
        "sensor_id": pl.Series("sensor_id", all_sid, dtype=pl.Int64),
    }
    for c, column in enumerate(spec.columns):
        data[column] = pl.Series(column, np.concatenate((values[c], dup_values[c]))[order])
    frame = pl.DataFrame(data).select(
        TS_COLUMN,
        "sensor_id",
        pl.lit(spec.position, dtype=pl.String).alias("position"),
        *spec.columns,
    )

    def dt(arr: np.ndarray, name: str = "ts") -> pl.Series:
        return pl.Series(name, np.asarray(arr, dtype=np.int64)).cast(_DT)

    cat = np.concatenate
    missing = pl.DataFrame(
        {
            "sensor_id": pl.Series(cat(miss_sid), dtype=pl.Int64),
            "ts": dt(start_us + cat(miss_slot) * period_us),
        }
    ).sort("sensor_id", "ts")
    gaps = pl.DataFrame(
        {
            "sensor_id": pl.Series(cat(gap_sid), dtype=pl.Int64),
            "start": dt(start_us + cat(gap_start) * period_us, "start"),
            "missing": pl.Series(cat(gap_len), dtype=pl.Int64),
        }
    ).sort("sensor_id", "start")
    outliers = pl.DataFrame(
        {
            "sensor_id": pl.Series(sidx[out_rows] + 1, dtype=pl.Int64),
            "ts": dt(ts[out_rows]),
            "column": pl.Series([spec.columns[c] for c in out_cols], dtype=pl.String),
            "value": pl.Series(out_value, dtype=pl.Float64),
            "baseline": pl.Series(out_base, dtype=pl.Float64),
        }
    )
    dups = pl.DataFrame(
        {
            "sensor_id": pl.Series(sidx[dup_src] + 1, dtype=pl.Int64),
            "ts": dt(dup_ts),
            "conflicting": pl.Series(conflicting, dtype=pl.Boolean),
            "late": pl.Series(late, dtype=pl.Boolean),
        }
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    truth = Truth(
        dataset=spec.dataset,
        seed=int(seed),
        period=spec.period,
        jitter=timedelta(seconds=jitter_s),
        start=epoch + timedelta(microseconds=start_us),
        end=epoch + timedelta(microseconds=start_us + n_max * period_us),
        sensors=sensors,
        columns=spec.columns,
        nominal_rows=total,
        rows=frame.height,
        missing=missing,
        gaps=gaps,
        outliers=outliers,
        duplicates=dups,
    )
    return SyntheticSeries(spec=spec, frame=frame, truth=truth)


# --------------------------------------------------------------------------- demo data

DEMO_SPECS: tuple[SensorSpec, ...] = (
    SensorSpec(
        dataset="airq.gwangju",
        period=timedelta(minutes=5),
        jitter=timedelta(seconds=5),
        sensors=3,
        position="Gwangju A",
        columns=("co2", "pm10"),
        units={"co2": "ppm", "pm10": "ug/m3"},
        level=(430.0, 38.0),
        trend_per_day=(0.4, -0.1),
        daily_amplitude=(45.0, 12.0),
        weekly_amplitude=(15.0, 6.0),
        noise_std=(7.0, 3.0),
        daily_peak_hour=(8.0, 9.0),
        gap_rate=0.02,
        duplicate_rate=0.01,
        outlier_rate=0.005,
    ),
    SensorSpec(
        dataset="airq.seoul",
        period=timedelta(minutes=10),
        jitter=timedelta(seconds=49),
        sensors=2,
        position="Seoul Jongno",
        columns=("co2", "pm10", "pm2_5"),
        units={"co2": "ppm", "pm10": "ug/m3", "pm2_5": "ug/m3"},
        level=(450.0, 45.0, 24.0),
        trend_per_day=(0.6, 0.05, 0.03),
        daily_amplitude=(50.0, 15.0, 9.0),
        weekly_amplitude=(20.0, 8.0, 5.0),
        noise_std=(9.0, 4.0, 2.5),
        daily_peak_hour=(9.0, 10.0, 10.0),
        gap_rate=0.03,
        duplicate_rate=0.015,
        outlier_rate=0.005,
    ),
    SensorSpec(
        dataset="weather.station",
        period=timedelta(hours=1),
        jitter=timedelta(0),
        sensors=1,
        position="Gwangju AWS",
        columns=("temperature", "humidity"),
        units={"temperature": "degC", "humidity": "%"},
        level=(3.0, 62.0),
        trend_per_day=(0.05, 0.0),
        daily_amplitude=(5.0, -12.0),
        weekly_amplitude=(1.5, 4.0),
        noise_std=(0.6, 3.0),
        daily_peak_hour=(15.0, 15.0),
        gap_rate=0.01,
        duplicate_rate=0.01,
        outlier_rate=0.005,
    ),
)


@dataclass(frozen=True, eq=False)
class DemoFile:
    """One written demo source: where it is and how to ingest it."""

    dataset: str
    path: Path
    truth_path: Path
    ts_column: str
    key_columns: tuple[str, ...]
    value_columns: tuple[str, ...]
    units: dict[str, str]
    rows: int
    truth: Truth


def demo_series(
    *,
    days: int = 14,
    seed: int = 7,
    start: datetime = DEMO_START,
    specs: Sequence[SensorSpec] = DEMO_SPECS,
) -> list[SyntheticSeries]:
    """The demo sources, generated in memory over ``days`` days from ``start``."""
    if days <= 0:
        raise SyntheticSpecError(f"days must be positive, got {days}")
    end = start + timedelta(days=days)
    return [generate(spec, start, end, seed=seed) for spec in specs]


def write_demo(
    out_dir: str | Path,
    *,
    days: int = 14,
    seed: int = 7,
    start: datetime = DEMO_START,
    specs: Sequence[SensorSpec] = DEMO_SPECS,
) -> list[DemoFile]:
    """Write ``<dataset>.csv`` and ``<dataset>.truth.json`` per source into ``out_dir``.

    The JSON is :meth:`Truth.to_dict` plus ``"spec"`` (:meth:`SensorSpec.to_dict`);
    :func:`load_truth` reads it back.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for series in demo_series(days=days, seed=seed, start=start, specs=specs):
        spec, truth = series.spec, series.truth
        csv_path = series.write_csv(out / f"{spec.dataset}.csv")
        truth_path = out / f"{spec.dataset}.truth.json"
        payload = {**truth.to_dict(), "spec": spec.to_dict()}
        truth_path.write_text(json.dumps(payload, indent=1) + "\n")
        files.append(
            DemoFile(
                dataset=spec.dataset,
                path=csv_path,
                truth_path=truth_path,
                ts_column=TS_COLUMN,
                key_columns=KEY_COLUMNS,
                value_columns=spec.columns,
                units=spec.unit_map,
                rows=truth.rows,
                truth=truth,
            )
        )
    return files


# --------------------------------------------------------------------------- big CSV

_BLOCK = 1 << 16


def write_csv_rows(
    path: str | Path,
    rows: int,
    *,
    series: int = 10,
    seed: int = 0,
    start: datetime = DEMO_START,
    period: timedelta = timedelta(minutes=1),
    chunk_rows: int = 1 << 20,
) -> Path:
    """Write a clean CSV of exactly ``rows`` data rows: ``ts,sensor_id,value``.

    Row ``i`` is sensor ``i % series + 1`` at ``start + (i // series) * period``, so
    (sensor_id, ts) is unique and ts never decreases. Values are a daily cycle plus noise
    with two decimals. Written in chunks of about ``chunk_rows`` rows (memory stays
    bounded); the file's bytes depend only on the arguments other than ``chunk_rows``.
    """
    if rows < 0 or series < 1:
        raise SyntheticSpecError(
            f"write_csv_rows needs rows >= 0 and series >= 1 ({rows}, {series})"
        )
    if period < timedelta(seconds=1) or period % timedelta(seconds=1):
        raise SyntheticSpecError("period must be a whole number of seconds")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start_us = _epoch_us(start) // _US * _US
    period_us = int(period // timedelta(microseconds=1))
    chunk = max(_BLOCK, -(-chunk_rows // _BLOCK) * _BLOCK)
    phase = np.random.default_rng(np.random.SeedSequence([seed & _SEED_MASK, 1])).uniform(
        0, 24, series
    )
    level = 20.0 + np.arange(series) % 7
    with path.open("wb") as fh:
        if rows == 0:
            fh.write(b"ts,sensor_id,value\n")
        for lo in range(0, rows, chunk):
            hi = min(lo + chunk, rows)
            i = np.arange(lo, hi, dtype=np.int64)
            sid = i % series
            ts = start_us + (i // series) * period_us
            noise = np.concatenate(
                [
                    np.random.default_rng(
                        np.random.SeedSequence([seed & _SEED_MASK, 0, b])
                    ).standard_normal(_BLOCK)
                    for b in range(lo // _BLOCK, -(-hi // _BLOCK))
                ]
            )[lo % _BLOCK : lo % _BLOCK + (hi - lo)]
            hour = (ts % _DAY_US) * (1.0 / _HOUR_US)
            value = level[sid] + 5.0 * np.cos((hour - phase[sid]) * (2 * np.pi / 24)) + noise
            frame = pl.DataFrame(
                {
                    "ts": pl.Series("ts", ts).cast(_DT),
                    "sensor_id": pl.Series("sensor_id", sid + 1, dtype=pl.Int64),
                    "value": np.round(value, 2),
                }
            )
            frame.write_csv(fh, include_header=lo == 0, datetime_format=CSV_TS_FORMAT)
    return path
