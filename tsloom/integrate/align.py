"""Bring every selected series onto one regular grid at the reference frequency.

How one series reaches the grid depends on its sampling period ``p`` (estimated per
series with :func:`tsloom.prep.estimate_period`, or given in the spec) against the
reference frequency ``f``:

* ``p`` within 2 % of ``f`` — *align*: each reading goes to its nearest grid point; if
  two land on the same point they are combined with the down-sampling aggregation.
* ``p < f`` — *downsample*: the grid point ``t`` stands for the bucket
  ``[t - p/2, t + f - p/2)`` (the readings whose nominal time lies in ``[t, t + f)``, even
  when jitter moves one a little before ``t``), combined with mean/min/max/last/sum.
* ``p > f`` — *upsample*: ``interpolate`` (linear in time between the readings around each
  grid point), ``ffill`` (the last reading at or before it) or ``none`` (readings go to
  their nearest grid point as in *align*; the others stay empty for the gap policy).

The grid is ``start + k·f`` for ``start <= t < end``. Without ``start``/``end`` it spans the
overlap of the sources, from the latest first reading to the earliest last reading, each
rounded to the nearest multiple of ``f`` since the Unix epoch (UTC). Then the gap policy
fills what is still empty (``interpolate``/``ffill``), drops incomplete rows (``drop``)
or leaves the nulls (``keep``); with ``trim_edges`` (default) the rows before the first
and after the last complete row are dropped, so by default the result is regular and
complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl

from tsloom.catalog import Catalog, DatasetInfo
from tsloom.config import Settings, load_settings
from tsloom.errors import PrepError, TsloomError
from tsloom.integrate.features import feature_name, label_keys, resolve_feature
from tsloom.integrate.spec import IntegrationSpec, SourceSpec, format_duration
from tsloom.lake import read_dataset
from tsloom.prep import estimate_period

Mode = Literal["align", "downsample", "upsample"]

ALIGN_TOLERANCE = 0.02
"""A source whose period is within 2 % of the reference frequency is aligned, not resampled."""

_US = timedelta(microseconds=1)
_T = "_t"  # grid time as Int64 microseconds since the epoch, while aligning


class IntegrationError(TsloomError):
    """Sources that cannot be integrated as asked (columns, keys, ranges, empty results)."""


# --------------------------------------------------------------------------------------
# reports


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class SeriesReport:
    """What happened to one series (one key combination of one source)."""

    key: dict[str, Any]
    features: tuple[str, ...]
    rows_in: int
    """Readings of this series inside the integrated range (grid start to last bucket end)."""
    ts_min: datetime
    ts_max: datetime
    """First and last reading read (the range plus a margin of at least a day)."""
    period: timedelta
    period_estimated: bool
    """False when the spec gave the period."""
    confidence: float | None
    mode: Mode
    method: str
    """The aggregation (align, downsample) or the up-sampling method (upsample)."""
    missing: int = 0
    """Grid cells (rows kept × this series' features) with no value after resampling."""
    filled: int = 0
    """Of those, cells the gap policy filled."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": dict(self.key),
            "features": list(self.features),
            "rows_in": self.rows_in,
            "ts_min": _iso(self.ts_min),
            "ts_max": _iso(self.ts_max),
            "period": format_duration(self.period),
            "period_estimated": self.period_estimated,
            "confidence": self.confidence,
            "mode": self.mode,
            "method": self.method,
            "missing": self.missing,
            "filled": self.filled,
        }


@dataclass(frozen=True)
class SourceReport:
    """One source entry of the spec: its dataset, columns and series."""

    dataset: str
    columns: tuple[str, ...]
    series: tuple[SeriesReport, ...]

    @property
    def rows_in(self) -> int:
        return sum(s.rows_in for s in self.series)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f for s in self.series for f in s.features)

    @property
    def periods(self) -> tuple[timedelta, ...]:
        return tuple(dict.fromkeys(s.period for s in self.series))

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.mode for s in self.series))

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.series)

    @property
    def filled(self) -> int:
        return sum(s.filled for s in self.series)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "columns": list(self.columns),
            "rows_in": self.rows_in,
            "periods": [format_duration(p) for p in self.periods],
            "modes": list(self.modes),
            "missing": self.missing,
            "filled": self.filled,
            "features": list(self.features),
            "series": [s.to_dict() for s in self.series],
        }


@dataclass(frozen=True)
class IntegrationReport:
    freq: timedelta
    grid_start: datetime
    grid_end: datetime
    """The last grid point before gap handling (inclusive)."""
    grid_rows: int
    rows_out: int
    sources: tuple[SourceReport, ...]

    @property
    def rows_dropped(self) -> int:
        return self.grid_rows - self.rows_out

    def to_dict(self) -> dict[str, Any]:
        return {
            "freq": format_duration(self.freq),
            "grid_start": _iso(self.grid_start),
            "grid_end": _iso(self.grid_end),
            "grid_rows": self.grid_rows,
            "rows_out": self.rows_out,
            "rows_dropped": self.rows_dropped,
            "sources": [s.to_dict() for s in self.sources],
        }


@dataclass(frozen=True, eq=False)
class Integrated:
    """An integrated frame (``ts`` + one Float64 column per feature) and how it was made."""

    frame: pl.DataFrame
    spec: IntegrationSpec
    features: tuple[str, ...]
    report: IntegrationReport
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.spec.integration_id)

    @property
    def shape(self) -> tuple[int, int]:
        return self.frame.shape

    @property
    def start(self) -> datetime | None:
        return self.frame["ts"].min() if self.frame.height else None  # type: ignore[return-value]

    @property
    def end(self) -> datetime | None:
        """The last timestamp (inclusive)."""
        return self.frame["ts"].max() if self.frame.height else None  # type: ignore[return-value]

    def feature(self, name: str) -> str:
        """:func:`resolve_feature` over this integration's features."""
        return resolve_feature(name, self.features)

    def to_dict(self, preview: int = 0) -> dict[str, Any]:
        """JSON-ready summary: ids, spec, shape, range, features, report (and the first
        `preview` rows, timestamps as ISO text)."""
        out: dict[str, Any] = {
            "integration_id": self.id,
            "spec_hash": self.spec.spec_hash(),
            "tables": list(self.spec.tables),
            "spec": self.spec.canonical(),
            "features": list(self.features),
            "rows": self.frame.height,
            "columns": self.frame.width,
            "shape": list(self.frame.shape),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "freq": format_duration(self.spec.freq),
            "report": self.report.to_dict(),
        }
        if preview:
            head = self.frame.head(preview)
            out["preview"] = head.with_columns(
                pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.f%:z")
            ).to_dicts()
        return out


# --------------------------------------------------------------------------------------
# planning


@dataclass
class _Series:
    source: int
    dataset: str
    key: dict[str, Any]
    columns: tuple[str, ...]
    t: np.ndarray  # int64 µs, sorted
    frame: pl.DataFrame  # _t + columns
    period: timedelta
    estimated: bool
    confidence: float | None
    features: tuple[str, ...] = ()


def _check_source(src: SourceSpec, info: DatasetInfo) -> tuple[str, ...]:
    available = info.value_columns
    if not available:
        raise IntegrationError(f"dataset {src.dataset} has no value columns")
    columns = src.columns if src.columns is not None else available
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise IntegrationError(
            f"dataset {src.dataset} has no value column(s) {', '.join(map(repr, unknown))}",
            hint=f"its value columns are {', '.join(available)}",
        )
    bad_keys = [k for k in (src.keys or {}) if k not in info.keys]
    if bad_keys:
        raise IntegrationError(
            f"dataset {src.dataset}: {', '.join(map(repr, bad_keys))} "
            f"{'is not a key column' if len(bad_keys) == 1 else 'are not key columns'}",
            hint=f"its key columns are {', '.join(info.keys)}"
            if info.keys
            else "it has no key columns (one series); drop the key filter",
        )
    return tuple(columns)


def _read(
    src: SourceSpec,
    info: DatasetInfo,
    columns: tuple[str, ...],
    spec: IntegrationSpec,
    pad: timedelta,
    settings: Settings,
    version: int | None = None,
) -> pl.DataFrame:
    start = spec.start - pad if spec.start is not None else None
    end = spec.end + pad if spec.end is not None else None
    frame = read_dataset(
        src.dataset,
        start=start,
        end=end,
        columns=list(columns),
        keys={k: list(v) for k, v in src.keys.items()} if src.keys else None,
        version=version,
        settings=settings,
    )
    if frame.height == 0:
        where = []
        if src.keys:
            where.append("matching " + ", ".join(f"{k} in {list(v)}" for k, v in src.keys.items()))
        if spec.start is not None or spec.end is not None:
            where.append(f"in {_iso(spec.start) or '…'} → {_iso(spec.end) or '…'}")
        span = (
            f"its data spans {_iso(info.ts_min)} → {_iso(info.ts_max)}"
            if info.ts_min
            else "it is empty"
        )
        raise IntegrationError(
            f"dataset {src.dataset} has no rows {' '.join(where)}".rstrip(),
            hint=f"{span}; widen the range or change the key filter",
        )
    return frame


def _split(
    index: int,
    src: SourceSpec,
    info: DatasetInfo,
    columns: tuple[str, ...],
    frame: pl.DataFrame,
) -> list[_Series]:
    keys = list(info.keys)
    frame = frame.with_columns(pl.col("ts").dt.epoch("us").alias(_T))
    parts = frame.partition_by(keys, maintain_order=True, include_key=True) if keys else [frame]
    out = []
    for part in parts:
        key = {k: part[k][0] for k in keys}
        values = part.select(_T, *[pl.col(c).cast(pl.Float64) for c in columns])
        t = values[_T].to_numpy()
        if src.period is not None:
            period, estimated, confidence = src.period, False, None
        else:
            try:
                est = estimate_period(part["ts"])
            except PrepError as exc:
                label = f" ({', '.join(f'{k}={v}' for k, v in key.items())})" if key else ""
                raise IntegrationError(
                    f"cannot estimate the period of {src.dataset}{label}: {exc.message}",
                    hint=f"give it in the spec: sources: [{{dataset: {src.dataset}, "
                    "period: 10min}], or widen the range",
                ) from exc
            period, estimated, confidence = est.period, True, est.confidence
        out.append(
            _Series(index, src.dataset, key, columns, t, values, period, estimated, confidence)
        )
    return out


def _mode(period: timedelta, freq: timedelta) -> Mode:
    ratio = period / freq
    if abs(ratio - 1) <= ALIGN_TOLERANCE:
        return "align"
    return "downsample" if ratio < 1 else "upsample"


def _name_features(series: list[_Series], infos: Mapping[str, DatasetInfo]) -> None:
    by_dataset: dict[str, list[_Series]] = {}
    for s in series:
        by_dataset.setdefault(s.dataset, []).append(s)
    seen: dict[str, str] = {}
    for dataset, group in by_dataset.items():
        distinct = list({repr(sorted(s.key.items())): s.key for s in group}.values())
        label = label_keys(distinct, infos[dataset].keys)
        for s in group:
            names = tuple(feature_name(dataset, c, s.key, label) for c in s.columns)
            for n in names:
                if n in seen:
                    raise IntegrationError(
                        f"feature {n} is selected twice",
                        hint=f"{dataset} appears in several sources with overlapping columns "
                        "and key filters; select each column and series once",
                    )
                seen[n] = dataset
            s.features = names


# --------------------------------------------------------------------------------------
# grid


def _round_to(us: int, step: int) -> int:
    return ((us + step // 2) // step) * step


def _grid(spec: IntegrationSpec, series: list[_Series], names: Sequence[str]) -> np.ndarray:
    freq_us = spec.freq // _US
    by_source: dict[int, tuple[int, int]] = {}
    for s in series:
        lo, hi = int(s.t[0]), int(s.t[-1])
        old = by_source.get(s.source)
        by_source[s.source] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    first_data = max(lo for lo, _ in by_source.values())
    last_data = min(hi for _, hi in by_source.values())
    lo = first_data
    hi = last_data
    if spec.start is not None:
        lo = max(lo, _epoch_us(spec.start))
    if spec.end is not None:
        hi = min(hi, _epoch_us(spec.end) - 1)
    if lo > hi:
        ranges = "; ".join(
            f"{names[i]} {_iso(_dt(a))} → {_iso(_dt(b))}" for i, (a, b) in by_source.items()
        )
        within = (
            f" within {_iso(spec.start) or '…'} → {_iso(spec.end) or '…'}"
            if spec.start is not None or spec.end is not None
            else ""
        )
        raise IntegrationError(
            f"the sources do not overlap in time{within}: {ranges}",
            hint="pick tables whose time ranges overlap, or a range where all have data",
        )
    first = _epoch_us(spec.start) if spec.start is not None else _round_to(first_data, freq_us)
    # exclusive stop; by default the last grid point is the overlap end, rounded
    default_stop = last_data + freq_us // 2 + 1
    stop = _epoch_us(spec.end) if spec.end is not None else default_stop
    grid = np.arange(first, stop, freq_us, dtype=np.int64)
    if grid.size == 0:
        raise IntegrationError(
            f"no grid point at {format_duration(spec.freq)} between "
            f"{_iso(_dt(first))} and {_iso(_dt(stop))}",
            hint="widen the range or choose a finer frequency",
        )
    return grid


def _epoch_us(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // _US


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


# --------------------------------------------------------------------------------------
# resampling one series


def _agg_expr(column: str, agg: str) -> pl.Expr:
    c = pl.col(column)
    if agg == "last":
        return c.drop_nulls().last().alias(column)
    if agg == "sum":
        return pl.when(c.count() > 0).then(c.sum()).otherwise(None).alias(column)
    return getattr(c, agg)().alias(column)


def _bucket(
    s: _Series, anchor: int, freq_us: int, half_us: int, agg: str, names: Sequence[str]
) -> pl.DataFrame:
    slot = ((pl.col(_T) - anchor + half_us) // freq_us) * freq_us + anchor
    return (
        s.frame.with_columns(slot.alias(_T))
        .group_by(_T, maintain_order=True)
        .agg([_agg_expr(c, agg).alias(n) for c, n in zip(s.columns, names, strict=True)])
    )


def _fill_onto(s: _Series, grid: pl.DataFrame, method: str, names: Sequence[str]) -> pl.DataFrame:
    src = s.frame.rename(dict(zip(s.columns, names, strict=True)))
    if src[_T].n_unique() != src.height:
        src = src.group_by(_T, maintain_order=True).agg(pl.col(n).mean() for n in names)
    extra = grid.join(src.select(_T), on=_T, how="anti")
    both = pl.concat([src, extra], how="diagonal").sort(_T)
    if method == "interpolate":
        both = both.with_columns(pl.col(n).interpolate_by(_T) for n in names)
    else:
        both = both.with_columns(pl.col(n).forward_fill() for n in names)
    return both.join(grid, on=_T, how="semi")


def _resample(
    s: _Series, spec: IntegrationSpec, src: SourceSpec, grid: pl.DataFrame, anchor: int
) -> tuple[pl.DataFrame, Mode, str]:
    freq_us = spec.freq // _US
    agg = src.downsample or spec.downsample
    up = src.upsample or spec.upsample
    mode = _mode(s.period, spec.freq)
    if mode == "downsample":
        half = (s.period // _US) // 2
        return _bucket(s, anchor, freq_us, half, agg, s.features), mode, agg
    if mode == "align":
        return _bucket(s, anchor, freq_us, freq_us // 2, agg, s.features), mode, agg
    if up == "none":
        return _bucket(s, anchor, freq_us, freq_us // 2, agg, s.features), mode, up
    return _fill_onto(s, grid, up, s.features), mode, up


# --------------------------------------------------------------------------------------
# gaps


def _fill(wide: pl.DataFrame, gaps: str, features: Sequence[str]) -> pl.DataFrame:
    if gaps == "interpolate":
        return wide.with_columns(pl.col(c).interpolate_by(_T) for c in features)
    if gaps == "ffill":
        return wide.with_columns(pl.col(c).forward_fill() for c in features)
    return wide


def _select(wide: pl.DataFrame, spec: IntegrationSpec, features: Sequence[str]) -> pl.DataFrame:
    complete = pl.all_horizontal(pl.col(c).is_not_null() for c in features)
    if spec.gaps == "drop":
        return wide.filter(complete)
    if spec.trim_edges:
        idx = np.flatnonzero(wide.select(complete.alias("ok"))["ok"].to_numpy())
        if idx.size == 0:
            return wide.head(0)
        return wide.slice(int(idx[0]), int(idx[-1] - idx[0] + 1))
    return wide


# --------------------------------------------------------------------------------------
# entry point


def integrate(
    spec: IntegrationSpec | Mapping[str, Any],
    *,
    versions: Mapping[str, int | None] | None = None,
    settings: Settings | None = None,
) -> Integrated:
    """Read the spec's sources from the lake and align them on the reference grid.

    Returns an :class:`Integrated`: ``.frame`` (``ts`` + one Float64 column per feature,
    regular at ``spec.freq`` unless ``gaps="drop"`` or ``keep`` left holes), ``.id`` (the
    integration id), ``.features``, ``.report`` and ``.to_dict()``. Stores nothing.
    ``versions`` pins datasets to lake versions (time travel), e.g. to rebuild the exact
    frame a model was trained on.
    """
    if not isinstance(spec, IntegrationSpec):
        spec = IntegrationSpec.from_dict(spec)
    settings = settings or load_settings()
    catalog = Catalog(settings)
    infos = {src.dataset: catalog.get(src.dataset) for src in spec.sources}
    columns = [_check_source(src, infos[src.dataset]) for src in spec.sources]

    pad = max(2 * spec.freq, timedelta(days=1))
    margin = pad
    versions = dict(versions or {})
    frames = [
        _read(src, infos[src.dataset], cols, spec, pad, settings, versions.get(src.dataset))
        for src, cols in zip(spec.sources, columns, strict=True)
    ]
    series: list[_Series] = []
    for i, (src, cols, frame) in enumerate(zip(spec.sources, columns, frames, strict=True)):
        parts = _split(i, src, infos[src.dataset], cols, frame)
        need = 2 * max(p.period for p in parts)
        if need > pad and (spec.start is not None or spec.end is not None):
            frame = _read(
                src, infos[src.dataset], cols, spec, need, settings, versions.get(src.dataset)
            )
            parts = _split(i, src, infos[src.dataset], cols, frame)
            margin = max(margin, need)
        series.extend(parts)
    _name_features(series, infos)
    features = tuple(f for s in series for f in s.features)

    grid_t = _grid(spec, series, [src.dataset for src in spec.sources])
    freq_us = spec.freq // _US
    first, last = int(grid_t[0]), int(grid_t[-1])
    # Align and fill on a grid extended into the data around the range (at most `margin`),
    # so that a gap at the edge of the range is filled from readings beyond it.
    steps = -(-(margin // _US) // freq_us)
    before = min(steps, max(0, -(-(first - min(int(s.t[0]) for s in series)) // freq_us)))
    after = min(steps, max(0, -(-(max(int(s.t[-1]) for s in series) - last) // freq_us)))
    work_t = np.arange(first - before * freq_us, last + after * freq_us + 1, freq_us)
    work = pl.DataFrame({_T: work_t}, schema={_T: pl.Int64})
    wide = work
    modes: list[tuple[Mode, str]] = []
    for s in series:
        aligned, mode, method = _resample(s, spec, spec.sources[s.source], work, first)
        modes.append((mode, method))
        wide = wide.join(aligned, on=_T, how="left")
    wide = wide.with_columns(pl.col(f).cast(pl.Float64) for f in features).sort(_T)
    in_range = pl.col(_T).is_between(first, last)
    raw = wide.filter(in_range).with_row_index("_i")
    filled = _fill(wide, spec.gaps, features).filter(in_range).with_row_index("_i")
    filled = _select(filled, spec, features)
    if filled.height == 0:
        counts = raw.select(pl.col(f).count() for f in features).row(0)
        empty = [f for f, n in zip(features, counts, strict=True) if n == 0]
        detail = (
            f"{', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no value on the grid"
            if empty
            else "no grid row has a value for every feature"
        )
        raise IntegrationError(
            f"nothing left after gap handling (gaps={spec.gaps}): {detail}",
            hint="widen the range, change the key filters or columns, "
            "or use gaps: interpolate / keep",
        )

    kept = raw.join(filled.select("_i"), on="_i", how="semi")
    missing = kept.select(pl.col(f).null_count() for f in features).row(0, named=True)
    left = filled.select(pl.col(f).null_count() for f in features).row(0, named=True)
    grid_end_us = last + freq_us
    reports: list[list[SeriesReport]] = [[] for _ in spec.sources]
    for s, (mode, method) in zip(series, modes, strict=True):
        inside = int(((s.t >= first) & (s.t < grid_end_us)).sum())
        miss = sum(missing[f] for f in s.features)
        reports[s.source].append(
            SeriesReport(
                key=dict(s.key),
                features=s.features,
                rows_in=inside,
                ts_min=_dt(s.t[0]),
                ts_max=_dt(s.t[-1]),
                period=s.period,
                period_estimated=s.estimated,
                confidence=s.confidence,
                mode=mode,
                method=method,
                missing=miss,
                filled=miss - sum(left[f] for f in s.features),
            )
        )
    frame = filled.select(
        pl.from_epoch(pl.col(_T), time_unit="us").dt.replace_time_zone("UTC").alias("ts"),
        *features,
    )
    report = IntegrationReport(
        freq=spec.freq,
        grid_start=_dt(grid_t[0]),
        grid_end=_dt(grid_t[-1]),
        grid_rows=int(grid_t.size),
        rows_out=frame.height,
        sources=tuple(
            SourceReport(src.dataset, cols, tuple(r))
            for src, cols, r in zip(spec.sources, columns, reports, strict=True)
        ),
    )
    return Integrated(frame=frame, spec=spec, features=features, report=report)
