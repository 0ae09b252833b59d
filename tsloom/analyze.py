"""Analyse a lake dataset: per series and value column, then across columns; write a report.

Per series (one key combination, the first `max_series` of them) the timestamps are put on
the estimated period's grid (duplicates averaged, gaps inserted as missing by
divide-and-round), then per value column: descriptive statistics with the missing share,
a density curve, ACF/PACF, stationarity (ADF + KPSS), an STL decomposition whose season
follows from the period (a day for sub-daily data), and a down-sampled preview. Across the
columns of a series: the Pearson correlation matrix and lagged cross-correlations.

A column that cannot be analysed (constant, entirely missing, too short) is reported as
such and the others go on; only when nothing at all can be analysed is it an error.

`analyze_dataset` + `write_analysis_report` are everything the CLI needs;
`analyze_frame` does the same on a frame already in memory (no I/O).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from tsloom.config import Settings, load_settings
from tsloom.errors import PrepError, TsloomError
from tsloom.prep import (
    Autocorrelation,
    CrossCorrelation,
    Density,
    PeriodEstimate,
    Stationarity,
    acf_pacf,
    correlation_matrix,
    cross_correlation,
    deduplicate,
    default_season,
    density,
    describe,
    estimate_period,
    fill_gaps,
    stationarity,
    stl,
)
from tsloom.reports.clean_report import first_series
from tsloom.reports.html import (
    Figure,
    Page,
    ReportPaths,
    Section,
    Table,
    Text,
    fmt_duration,
    fmt_value,
    to_jsonable,
    write_report,
)
from tsloom.reports.plots import (
    cross_correlation_figure,
    decomposition_figure,
    distribution_figure,
    figure_html,
    heatmap_figure,
    minmax_indices,
)
from tsloom.timeutil import to_utc

MAX_SERIES = 6
MIN_POINTS = 10
MAX_LAGS = 100
STATIONARITY_MAX_POINTS = 4_000  # ADF's lag search grows fast; the recent past suffices
STL_MAX_POINTS = 20_000
STL_ROBUST_MAX_POINTS = 5_000
STL_MAX_SEASON = 96  # longer seasons are decomposed on block means
PREVIEW_POINTS = 500
MAX_PAIRS = 28
MAX_CURVES = 6
GRID_GROWTH_LIMIT = 20  # refuse to grid when it would multiply the rows by more than this

OK = "ok"
CONSTANT = "constant"
ALL_MISSING = "all_missing"
TOO_SHORT = "too_short"

_COMPUTE_ERRORS = (PrepError, ValueError, ArithmeticError, np.linalg.LinAlgError)


# --------------------------------------------------------------------------- results


@dataclass(eq=False)
class Decomposition:
    """STL components on the series' grid (the most recent `points` steps)."""

    ts: np.ndarray
    observed: np.ndarray
    trend: np.ndarray
    seasonal: np.ndarray
    resid: np.ndarray
    season: int
    robust: bool
    factor: int = 1  # steps averaged per point (1: the series' own resolution)

    @property
    def points(self) -> int:
        return int(self.ts.size)

    def strength(self, component: np.ndarray) -> float | None:
        """1 − var(resid) / var(component + resid), floored at 0 (Hyndman & Athanasopoulos)."""
        total = np.nanvar(component + self.resid)
        if not np.isfinite(total) or total == 0:
            return None
        return float(max(0.0, 1.0 - np.nanvar(self.resid) / total))

    def to_dict(self) -> dict[str, object]:
        return {
            "season_steps": self.season,
            "steps_per_point": self.factor,
            "robust": self.robust,
            "points": self.points,
            "trend_strength": self.strength(self.trend),
            "seasonal_strength": self.strength(self.seasonal),
        }


@dataclass(eq=False)
class ColumnAnalysis:
    """Everything computed for one value column of one series."""

    column: str
    status: str
    message: str | None
    stats: dict[str, object]
    values: np.ndarray = field(repr=False)
    ts: np.ndarray = field(repr=False)
    density: Density | None = None
    autocorrelation: Autocorrelation | None = None
    stationarity: Stationarity | None = None
    stationarity_points: int | None = None
    decomposition: Decomposition | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def preview(self, points: int = PREVIEW_POINTS) -> dict[str, list]:
        idx = minmax_indices(self.values, points)
        stamps = pl.Series(self.ts[idx].astype("datetime64[us]")).dt.to_string(
            "%Y-%m-%dT%H:%M:%S%.fZ"
        )
        return {"ts": stamps.to_list(), "value": self.values[idx]}

    def to_dict(self) -> dict[str, object]:
        stationary = None
        if self.stationarity is not None:
            stationary = {**self.stationarity.to_dict(), "points": self.stationarity_points}
        return {
            "status": self.status,
            "message": self.message,
            "stats": self.stats,
            "density": self.density.to_dict() if self.density else None,
            "autocorrelation": self.autocorrelation.to_dict() if self.autocorrelation else None,
            "stationarity": stationary,
            "decomposition": self.decomposition.to_dict() if self.decomposition else None,
            "errors": self.errors,
            "preview": self.preview(),
        }


@dataclass(eq=False)
class PairCorrelation:
    """Lagged cross-correlation of column x with column y (positive best lag: x leads)."""

    x: str
    y: str
    result: CrossCorrelation
    step: dt.timedelta | None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"x": self.x, "y": self.y, **self.result.to_dict()}
        out["best_lag_s"] = (
            self.result.best_lag * self.step.total_seconds() if self.step is not None else None
        )
        return out


@dataclass(eq=False)
class SeriesAnalysis:
    """One key combination: its grid, period, per-column results and cross-column results."""

    keys: dict[str, object]
    rows: int
    start: dt.datetime | None
    end: dt.datetime | None
    ts: np.ndarray = field(repr=False)
    columns: list[ColumnAnalysis] = field(default_factory=list)
    period: PeriodEstimate | None = None
    period_error: str | None = None
    season: int | None = None
    grid_rows: int = 0
    inserted: int = 0
    duplicates: int = 0
    correlation: pl.DataFrame | None = None
    cross_correlations: list[PairCorrelation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.keys.items()) or "all rows"

    @property
    def ok_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.ok]

    def column(self, name: str) -> ColumnAnalysis:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        period = None
        if self.period is not None:
            period = {"period": str(self.period.period), **self.period.to_dict()}
        season = None
        if self.season is not None and self.period is not None:
            span = self.period.period * self.season
            season = {
                "steps": self.season,
                "duration": str(span),
                "duration_s": span.total_seconds(),
            }
        corr = None
        if self.correlation is not None:
            names = self.correlation.get_column("column").to_list()
            corr = {"columns": names, "matrix": self.correlation.select(names).to_numpy()}
        return {
            "keys": self.keys,
            "rows": self.rows,
            "start": self.start,
            "end": self.end,
            "duplicates_merged": self.duplicates,
            "period": period,
            "period_error": self.period_error,
            "season": season,
            "grid": {"rows": self.grid_rows, "inserted": self.inserted},
            "columns": {c.column: c.to_dict() for c in self.columns},
            "correlation": corr,
            "cross_correlation": [p.to_dict() for p in self.cross_correlations],
            "notes": self.notes,
        }


@dataclass(eq=False)
class AnalysisResult:
    """The analysis of one dataset (or frame); `to_dict()` is the JSON report."""

    dataset: str
    key_columns: list[str]
    columns: list[str]
    rows: int
    series: list[SeriesAnalysis]
    series_total: int
    lake_version: int | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    key_filter: dict[str, object] | None = None
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    settings: Settings | None = field(default=None, repr=False)

    @property
    def problems(self) -> list[dict[str, object]]:
        """Columns that could not be analysed, and analyses that failed on a column."""
        out: list[dict[str, object]] = []
        for s in self.series:
            if s.period_error:
                out.append(
                    {
                        "series": s.label,
                        "column": None,
                        "status": "period",
                        "message": s.period_error,
                    }
                )
            for c in s.columns:
                if not c.ok:
                    out.append(
                        {
                            "series": s.label,
                            "column": c.column,
                            "status": c.status,
                            "message": c.message,
                        }
                    )
                for what, msg in c.errors.items():
                    out.append(
                        {"series": s.label, "column": c.column, "status": what, "message": msg}
                    )
        return out

    def to_dict(self) -> dict[str, object]:
        ts_min = min((s.start for s in self.series if s.start), default=None)
        ts_max = max((s.end for s in self.series if s.end), default=None)
        return to_jsonable(
            {
                "kind": "analysis",
                "dataset": self.dataset,
                "lake_version": self.lake_version,
                "created_at": self.created_at,
                "range": {"start": self.start, "end": self.end, "ts_min": ts_min, "ts_max": ts_max},
                "key_filter": self.key_filter,
                "key_columns": self.key_columns,
                "columns": self.columns,
                "rows": self.rows,
                "series_total": self.series_total,
                "series_analysed": len(self.series),
                "problems": self.problems,
                "series": [s.to_dict() for s in self.series],
            }
        )  # type: ignore[return-value]


# --------------------------------------------------------------------------- analysis


def analyze_dataset(
    dataset: str,
    *,
    columns: Sequence[str] | None = None,
    keys: Mapping[str, object] | None = None,
    start: dt.datetime | str | None = None,
    end: dt.datetime | str | None = None,
    max_series: int = MAX_SERIES,
    version: int | None = None,
    settings: Settings | None = None,
) -> AnalysisResult:
    """Read `dataset` from the lake (optionally a time range `start <= ts < end`, some value
    `columns`, key values `keys` such as {"sensor_id": "3"}) and analyse it."""
    from tsloom.catalog import Catalog
    from tsloom.lake import read_dataset

    settings = settings or load_settings()
    info = Catalog(settings).get(dataset)
    if columns is not None:
        columns = list(dict.fromkeys(columns))
        wrong = [c for c in columns if c not in info.value_columns]
        if wrong:
            what = "is a key column" if all(c in info.keys for c in wrong) else "does not exist"
            raise TsloomError(
                f"dataset {dataset}: column(s) {', '.join(map(repr, wrong))} {what}",
                hint=f"its value columns are {', '.join(info.value_columns) or '(none)'}",
            )
        if not columns:
            raise TsloomError("no columns given to analyse", hint="leave --column out for all")
    lo = to_utc(start) if start is not None else None
    hi = to_utc(end) if end is not None else None
    if lo is not None and hi is not None and lo >= hi:
        raise TsloomError(f"the time range is empty: {lo} is not before {hi}")
    frame = read_dataset(
        dataset, start=lo, end=hi, columns=columns, keys=keys, version=version, settings=settings
    )
    if frame.height == 0:
        where = []
        if lo or hi:
            where.append(f"between {lo or 'the start'} and {hi or 'the end'}")
        if keys:
            where.append("for " + ", ".join(f"{k}={v}" for k, v in keys.items()))
        raise TsloomError(
            f"dataset {dataset} has no rows {' '.join(where)}".rstrip(),
            hint=f"its data span {info.ts_min} to {info.ts_max}",
        )
    result = analyze_frame(
        frame,
        dataset=dataset,
        keys=info.keys,
        columns=columns or [c for c in info.value_columns if c in frame.columns],
        max_series=max_series,
    )
    result.lake_version = info.lake_version if version is None else version
    result.start, result.end = lo, hi
    result.key_filter = dict(keys) if keys else None
    result.settings = settings
    return result


def analyze_frame(
    df: pl.DataFrame,
    *,
    dataset: str = "frame",
    keys: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    max_series: int = MAX_SERIES,
) -> AnalysisResult:
    """Analyse a frame with `ts`, key columns and numeric value columns (no I/O)."""
    keys = list(keys)
    if "ts" not in df.columns or not isinstance(df.schema["ts"], pl.Datetime):
        raise PrepError("the frame needs a Datetime column 'ts'")
    missing_keys = [k for k in keys if k not in df.columns]
    if missing_keys:
        raise PrepError(f"missing key column(s): {', '.join(missing_keys)}")
    if columns is None:
        columns = [
            c
            for c, t in df.schema.items()
            if c != "ts" and c not in keys and not c.startswith("_") and t.is_numeric()
        ]
    columns = list(columns)
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise PrepError(
            f"unknown column(s): {', '.join(map(repr, unknown))}",
            hint=f"the columns are {', '.join(c for c in df.columns if c != 'ts')}",
        )
    odd = [c for c in columns if not (df.schema[c].is_numeric() or df.schema[c] == pl.Null)]
    if odd:
        raise PrepError(
            f"column(s) {', '.join(map(repr, odd))} are not numeric",
            hint="analysis works on numbers; leave these columns out",
        )
    if not columns:
        raise PrepError("no numeric value columns to analyse")
    if max_series < 1:
        raise PrepError(f"max_series must be at least 1, got {max_series}")
    work = df.select(["ts", *keys, *[pl.col(c).cast(pl.Float64) for c in columns]])
    work = work.filter(pl.col("ts").is_not_null())
    groups, total = first_series(work, keys, max_series)
    with _small_blas():
        series = [
            _analyze_series(dict(zip(keys, key, strict=True)), part, keys, columns)
            for key, part in groups
        ]
    result = AnalysisResult(
        dataset=dataset,
        key_columns=keys,
        columns=columns,
        rows=work.height,
        series=series,
        series_total=total,
    )
    if not any(s.ok_columns for s in series):
        reasons = list(dict.fromkeys(c.message for s in series for c in s.columns if c.message))
        raise PrepError(
            "nothing to analyse: " + ("; ".join(reasons[:6]) or "no usable values"),
            hint="pick other columns, a longer time range or other keys",
        )
    return result


def _small_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread: the regressions here are small, and BLAS threads competing with
    polars' pool make ADF and PACF many times slower on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)


def _analyze_series(
    key: dict[str, object], part: pl.DataFrame, keys: list[str], columns: list[str]
) -> SeriesAnalysis:
    ts = part.get_column("ts")
    out = SeriesAnalysis(
        keys=key,
        rows=part.height,
        start=ts.min() if part.height else None,  # type: ignore[arg-type]
        end=ts.max() if part.height else None,  # type: ignore[arg-type]
        ts=ts.to_numpy(),
    )
    grid = part
    if part.height and ts.n_unique() < part.height:
        grid, report = deduplicate(part, by=keys, policy="mean")
        out.duplicates = report.rows_in - report.rows_out
        out.notes.append(f"{out.duplicates:,} rows sharing a timestamp were averaged")
    try:
        out.period = _quiet(estimate_period, grid.get_column("ts"))
    except PrepError as exc:
        out.period_error = exc.message
    if out.period is not None:
        step = out.period.period
        span = grid.get_column("ts").max() - grid.get_column("ts").min()  # type: ignore[operator]
        expected = span / step + 1
        if expected > GRID_GROWTH_LIMIT * grid.height + 1000:
            out.notes.append(
                f"the timestamps are too irregular for a {fmt_duration(step)} grid "
                f"({expected:,.0f} steps for {grid.height:,} rows); analysed as they are"
            )
        else:
            grid, gaps = fill_gaps(grid, step, by=keys)
            out.inserted = gaps.inserted
        out.season = default_season(step)
    out.grid_rows = grid.height
    out.ts = grid.get_column("ts").to_numpy()
    stats = {
        row["column"]: {k: v for k, v in row.items() if k not in ("column", *keys)}
        for row in describe(grid, columns, by=keys or None).iter_rows(named=True)
    }
    for col in columns:
        values = grid.get_column(col).fill_null(np.nan).to_numpy().astype(np.float64)
        col_stats = {**stats.get(col, {}), "rows": grid.height, "gap_rows": out.inserted}
        out.columns.append(_analyze_column(col, values, out.ts, col_stats, out.season))
    ok = out.ok_columns
    if len(ok) >= 2:
        try:
            out.correlation = _quiet(correlation_matrix, grid, ok)
        except _COMPUTE_ERRORS as exc:
            out.notes.append(f"correlation matrix: {_message(exc)}")
        pairs = list(itertools.combinations(ok, 2))
        if len(pairs) > MAX_PAIRS:
            out.notes.append(f"cross-correlation for the first {MAX_PAIRS} of {len(pairs)} pairs")
            pairs = pairs[:MAX_PAIRS]
        max_lag = min(max(out.season or 24, 12), 96)
        for x, y in pairs:
            try:
                cc = _quiet(
                    cross_correlation,
                    out.column(x).values,
                    out.column(y).values,
                    max_lag,
                    names=(x, y),
                )
            except _COMPUTE_ERRORS as exc:
                out.notes.append(f"cross-correlation {x} × {y}: {_message(exc)}")
                continue
            step = out.period.period if out.period is not None else None
            out.cross_correlations.append(PairCorrelation(x, y, cc, step))
    return out


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PrepError) else f"{type(exc).__name__}: {exc}"


def _analyze_column(
    col: str, values: np.ndarray, ts: np.ndarray, stats: dict, season: int | None
) -> ColumnAnalysis:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        status, message = ALL_MISSING, f"column {col!r} is entirely missing"
    elif np.ptp(finite) == 0:
        status, message = CONSTANT, f"column {col!r} is constant ({finite[0]:g})"
    elif finite.size < MIN_POINTS:
        status = TOO_SHORT
        message = f"column {col!r} has {finite.size} observed values; at least {MIN_POINTS} needed"
    else:
        status, message = OK, None
    out = ColumnAnalysis(col, status, message, stats, values=values, ts=ts)
    if status != OK:
        return out
    try:
        out.density = _quiet(density, finite, name=col)
    except _COMPUTE_ERRORS as exc:
        out.errors["density"] = _message(exc)
    nlags = min(max(40, 2 * (season or 0)), MAX_LAGS)
    try:
        out.autocorrelation = _quiet(acf_pacf, values, nlags, name=col)
    except _COMPUTE_ERRORS as exc:
        out.errors["autocorrelation"] = _message(exc)
    recent = values[-STATIONARITY_MAX_POINTS:]
    try:
        out.stationarity = _quiet(stationarity, recent, name=col)
        out.stationarity_points = int(recent.size)
    except _COMPUTE_ERRORS as exc:
        out.errors["stationarity"] = _message(exc)
    if season is not None:
        try:
            out.decomposition = _decompose(col, values, ts, season)
        except _COMPUTE_ERRORS as exc:
            out.errors["decomposition"] = _message(exc)
    else:
        out.errors["decomposition"] = "no period, so no season to decompose by"
    return out


def _block_means(values: np.ndarray, factor: int) -> np.ndarray:
    """Means of `factor` consecutive values, ignoring NaN (NaN where a block has none)."""
    n = values.size // factor * factor
    blocks = values[values.size - n :].reshape(-1, factor)
    ok = np.isfinite(blocks)
    count = ok.sum(axis=1)
    total = np.where(ok, blocks, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _decompose(col: str, values: np.ndarray, ts: np.ndarray, season: int) -> Decomposition:
    """STL of the most recent STL_MAX_POINTS steps. A long season (5-minute data: 288
    steps a day) is decomposed on block means with at most STL_MAX_SEASON steps per season,
    which costs a fraction and shows the same trend and daily shape."""
    factor = 1
    if season > STL_MAX_SEASON:
        factor = -(-season // STL_MAX_SEASON)
    y = values[-STL_MAX_POINTS * factor :]
    t = ts[-y.size :]
    if factor > 1:
        y = _block_means(y, factor)
        t = t[t.size - y.size * factor :: factor]
    steps = max(2, round(season / factor))
    robust = y.size <= STL_ROBUST_MAX_POINTS
    fit = _quiet(stl, y, steps, robust=robust, name=col)
    return Decomposition(
        ts=t,
        observed=y,
        trend=np.asarray(fit.trend),
        seasonal=np.asarray(fit.seasonal),
        resid=np.asarray(fit.resid),
        season=steps,
        robust=robust,
        factor=factor,
    )


# --------------------------------------------------------------------------- report


def default_report_directory(dataset: str, settings: Settings | None = None) -> Path:
    """`<TSLOOM_HOME>/reports/<dataset>`."""
    settings = settings or load_settings()
    return Path(settings.home) / "reports" / dataset


def write_analysis_report(result: AnalysisResult, directory: Path | None = None) -> ReportPaths:
    """Write `analysis-<UTC timestamp>.json` and `.html` (default directory:
    `<TSLOOM_HOME>/reports/<dataset>`); returns their paths."""
    if directory is None:
        directory = default_report_directory(result.dataset, result.settings)
    directory = Path(directory)
    base = f"analysis-{result.created_at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    name = base
    for i in itertools.count(2):
        if not (directory / f"{name}.json").exists() and not (directory / f"{name}.html").exists():
            break
        name = f"{base}-{i}"
    payload = result.to_dict()
    return write_report(directory, name, payload, analysis_page(result).render())


def analysis_page(result: AnalysisResult) -> Page:
    """The page model of an analysis report."""
    ts_min = min((s.start for s in result.series if s.start), default=None)
    ts_max = max((s.end for s in result.series if s.end), default=None)
    summary: list[tuple[str, object]] = [("dataset", result.dataset)]
    if result.lake_version is not None:
        summary.append(("lake version", result.lake_version))
    summary += [
        ("rows read", result.rows),
        ("from", ts_min),
        ("to", ts_max),
        ("series analysed", f"{len(result.series)} of {result.series_total}"),
        ("value columns", ", ".join(result.columns)),
    ]
    if result.key_filter:
        summary.append(("key filter", result.key_filter))
    page = Page(f"Analysis: {result.dataset}", summary=summary)
    if len(result.series) < result.series_total:
        page.subtitle = (
            f"Only the first {len(result.series)} of {result.series_total} series are analysed; "
            "narrow the keys to see others."
        )
    problems = result.problems
    if problems:
        section = page.add(Section("Problems"))
        section.add(
            Text(
                "These columns or analyses were left out; the rest of the report is unaffected.",
                "warning",
            ),
            Table(
                ["series", "column", "what", "message"],
                [[p["series"], p["column"] or "—", p["status"], p["message"]] for p in problems],
            ),
        )
    for s in result.series:
        page.add(_series_section(s, show_label=bool(result.key_columns)))
    return page


def _series_section(s: SeriesAnalysis, *, show_label: bool) -> Section:
    title = f"Series {s.label}" if show_label else "Series"
    section = Section(title)
    facts = [f"{s.rows:,} rows from {fmt_value(s.start)} to {fmt_value(s.end)}."]
    if s.period is not None:
        facts.append(
            f"Estimated period {fmt_duration(s.period.period)} "
            f"(confidence {s.period.confidence:.2f})."
        )
    elif s.period_error:
        facts.append(f"No period: {s.period_error}.")
    if s.season is not None and s.period is not None:
        span = fmt_duration(s.period.period * s.season)
        facts.append(f"Season for decomposition: {s.season} steps ({span}).")
    if s.inserted:
        facts.append(f"{s.inserted:,} missing readings inserted as gaps (divide-and-round).")
    section.add(Text(" ".join(facts)))
    for note in s.notes:
        section.add(Text(note, "note"))
    section.add(_stats_table(s))
    if s.correlation is not None:
        names = s.correlation.get_column("column").to_list()
        matrix = s.correlation.select(names).to_numpy()
        fig = heatmap_figure(names, matrix, title="Pearson correlation")
        section.add(Figure(figure_html(fig, alt="correlation heat map"), "Correlation matrix"))
    if s.cross_correlations:
        section.add(_cross_table(s))
        strongest = sorted(s.cross_correlations, key=lambda p: -abs(p.result.best_value))
        curves = [
            (f"{p.x} → {p.y}", p.result.lags, p.result.values) for p in strongest[:MAX_CURVES]
        ]
        fig = cross_correlation_figure(curves, title="Lagged cross-correlation")
        caption = "corr(x[t], y[t+lag]) for the most strongly related pairs"
        section.add(Figure(figure_html(fig, alt="cross-correlation"), caption))
    for c in s.columns:
        section.add(_column_section(c, s))
    return section


def _stats_table(s: SeriesAnalysis) -> Table:
    head = [
        "column",
        "status",
        "count",
        "missing",
        "mean",
        "std",
        "min",
        "q05",
        "q25",
        "median",
        "q75",
        "q95",
        "max",
        "stationarity",
        "ADF p",
        "KPSS p",
    ]
    rows = []
    for c in s.columns:
        st = c.stats
        share = st.get("missing_share")
        rows.append(
            [
                c.column,
                c.status.replace("_", " "),
                st.get("count"),
                f"{share:.1%}" if isinstance(share, float) else "—",
                st.get("mean"),
                st.get("std"),
                st.get("min"),
                st.get("q05"),
                st.get("q25"),
                st.get("q50"),
                st.get("q75"),
                st.get("q95"),
                st.get("max"),
                c.stationarity.verdict if c.stationarity else "—",
                c.stationarity.adf_pvalue if c.stationarity else None,
                c.stationarity.kpss_pvalue if c.stationarity else None,
            ]
        )
    return Table(head, rows, caption="Descriptive statistics (missing: share of grid rows)")


def _cross_table(s: SeriesAnalysis) -> Table:
    rows = []
    for p in sorted(s.cross_correlations, key=lambda p: -abs(p.result.best_value)):
        lag = p.result.best_lag
        when = fmt_duration(abs(lag) * p.step) if p.step is not None else "—"
        lead = "—" if lag == 0 else (f"{p.x} leads" if lag > 0 else f"{p.y} leads")
        zero = p.result.values[p.result.lags == 0]
        rows.append(
            [p.x, p.y, float(zero[0]) if zero.size else None, lag, when, lead, p.result.best_value]
        )
    return Table(
        ["x", "y", "r at lag 0", "best lag (steps)", "best lag (time)", "", "r at best lag"],
        rows,
        caption="Lagged cross-correlation, strongest first",
    )


def _column_section(c: ColumnAnalysis, s: SeriesAnalysis) -> Section:
    section = Section(c.column, level=3)
    if not c.ok:
        return section.add(Text(f"Not analysed: {c.message}.", "warning"))
    for what, msg in c.errors.items():
        section.add(Text(f"{what}: {msg}", "warning"))
    d = c.decomposition
    if d is not None:
        fig = decomposition_figure(
            d.ts, d.observed, d.trend, d.seasonal, d.resid, title=f"{c.column}: STL decomposition"
        )
        info = d.to_dict()
        parts = [f"season {d.season} points", "robust" if d.robust else "not robust"]
        if d.factor > 1:
            step = fmt_duration(s.period.period * d.factor) if s.period else f"{d.factor} steps"
            parts.append(f"on {step} means")
        if d.points * d.factor < c.values.size:
            parts.append(f"the most recent {d.points:,} points")
        for label in ("trend", "seasonal"):
            value = info[f"{label}_strength"]
            if value is not None:
                parts.append(f"{label} strength {value:.2f}")
        section.add(Figure(figure_html(fig, alt=f"{c.column} decomposition"), "; ".join(parts)))
    if c.density is not None or c.autocorrelation is not None:
        fig = distribution_figure(c.values, c.density, c.autocorrelation, title=c.column)
        caption = "Histogram with density curve"
        if c.autocorrelation is not None:
            caption += "; ACF and PACF with the 95% white-noise band"
        if c.stationarity is not None:
            caption += (
                f". Stationarity ({c.stationarity_points:,} most recent points): "
                f"{c.stationarity.verdict} (ADF p={c.stationarity.adf_pvalue:.3g}, "
                f"KPSS p={c.stationarity.kpss_pvalue:.3g})"
            )
        section.add(Figure(figure_html(fig, alt=f"{c.column} distribution"), caption))
    return section
