"""The report of one clean run: what each step did, the periods found, validation problems,
and raw against cleaned series with inserted and flagged points marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from tsloom.reports.html import Figure, Page, ReportPaths, Section, Table, Text, write_report
from tsloom.reports.plots import figure_html, raw_vs_cleaned_figure

INSERTED_COLUMN = "_inserted"
ANOMALY_SUFFIX = "_anomaly"
MAX_SERIES = 6
MAX_COLUMNS = 12
_KNOWN = {
    "dataset",
    "output_dataset",
    "parent_version",
    "rows_in",
    "rows_out",
    "steps",
    "periods",
    "validation",
}


def render_clean_report(
    directory: Path,
    name: str,
    payload: Mapping,
    raw: pl.DataFrame,
    cleaned: pl.DataFrame,
    *,
    keys: Sequence[str],
    columns: Sequence[str],
    max_series: int = MAX_SERIES,
    max_columns: int = MAX_COLUMNS,
) -> ReportPaths:
    """Write `<name>.json` (the payload) and `<name>.html` (tables and plots) to `directory`.

    `raw` holds ts, key and value columns as read; `cleaned` the same plus a boolean
    `_inserted` and, per value column c, an optional boolean `c_anomaly`. Nothing is
    written when rendering fails.
    """
    page = clean_page(
        payload,
        raw,
        cleaned,
        keys=keys,
        columns=columns,
        max_series=max_series,
        max_columns=max_columns,
    )
    return write_report(Path(directory), name, payload, page.render())


def clean_page(
    payload: Mapping,
    raw: pl.DataFrame,
    cleaned: pl.DataFrame,
    *,
    keys: Sequence[str],
    columns: Sequence[str],
    max_series: int = MAX_SERIES,
    max_columns: int = MAX_COLUMNS,
) -> Page:
    """The page model of a clean report (see `render_clean_report`)."""
    keys = list(keys)
    columns = list(columns)
    dataset = payload.get("dataset") or "dataset"
    page = Page(f"Clean report: {dataset}", summary=_summary(payload, cleaned, columns))
    if payload.get("output_dataset"):
        page.subtitle = f"{dataset} → {payload['output_dataset']}"
    steps = payload.get("steps")
    if steps:
        page.add(_steps_section(steps))
    periods = payload.get("periods")
    if periods:
        page.add(_periods_section(periods))
    validation = payload.get("validation")
    if validation:
        page.add(_validation_section(validation))
    extra = {k: v for k, v in payload.items() if k not in _KNOWN}
    if extra:
        page.add(
            Section("Other details").add(
                Table(["item", "value"], [[k, _plain(v)] for k, v in extra.items()])
            )
        )
    page.add(
        _plots_section(
            raw, cleaned, keys=keys, columns=columns, max_series=max_series, max_columns=max_columns
        )
    )
    return page


# --------------------------------------------------------------------------- tables


def _plain(value: object, nested: bool = False) -> object:
    """Numbers stay numbers (formatted by the table); nested things become short text."""
    if isinstance(value, Mapping):
        text = ", ".join(
            f"{k} ({_plain(v, True)})" if isinstance(v, Mapping) else f"{k}={_plain(v, True)}"
            for k, v in value.items()
        )
        return text or "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(_plain(v, True)) for v in value) or "—"
    return value


def _is_count(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    )


def _total(value: object) -> int:
    if isinstance(value, Mapping):
        return sum(int(v) for v in value.values())
    return int(value)  # type: ignore[call-overload]


def _summary(payload: Mapping, cleaned: pl.DataFrame, columns: list[str]) -> list:
    rows: list[tuple[str, object]] = []
    for label, key in (
        ("dataset", "dataset"),
        ("written to", "output_dataset"),
        ("parent lake version", "parent_version"),
        ("rows in", "rows_in"),
        ("rows out", "rows_out"),
    ):
        if payload.get(key) is not None:
            rows.append((label, payload[key]))
    if INSERTED_COLUMN in cleaned.columns:
        rows.append(("rows inserted for gaps", int(cleaned.get_column(INSERTED_COLUMN).sum())))
    flagged = {
        c: int(cleaned.get_column(f"{c}{ANOMALY_SUFFIX}").sum())
        for c in columns
        if f"{c}{ANOMALY_SUFFIX}" in cleaned.columns
    }
    if flagged:
        rows.append(("anomalies flagged", sum(flagged.values())))
    rows.append(("value columns", ", ".join(columns) or "—"))
    return rows


def _steps_section(steps: Sequence) -> Section:
    table_rows = []
    for i, step in enumerate(steps, 1):
        if not isinstance(step, Mapping):
            table_rows.append([i, str(step), "—", "—"])
            continue
        params = {k: v for k, v in step.items() if k != "step" and not _is_count(v)}
        counts = {k: v for k, v in step.items() if k != "step" and _is_count(v)}
        table_rows.append([i, step.get("step", "?"), _plain(params), _plain(counts)])
    return Section("Steps").add(
        Text("Each step in the order it ran, with its parameters and what it changed."),
        Table(["#", "step", "parameters", "counts"], table_rows),
    )


def _periods_section(periods: Sequence) -> Section:
    key_names: list[str] = []
    other: list[str] = []
    for p in periods:
        if not isinstance(p, Mapping):
            continue
        for k in (p.get("keys") or {}) if isinstance(p.get("keys"), Mapping) else ():
            if k not in key_names:
                key_names.append(k)
        for k in p:
            if k != "keys" and k not in other:
                other.append(k)
    rows = []
    for p in periods:
        if not isinstance(p, Mapping):
            continue
        kv = p.get("keys") if isinstance(p.get("keys"), Mapping) else {}
        rows.append([kv.get(k) for k in key_names] + [_plain(p.get(k)) for k in other])
    low = [
        p
        for p in periods
        if isinstance(p, Mapping)
        and isinstance(p.get("confidence"), float)
        and p["confidence"] < 0.5
    ]
    section = Section("Estimated periods").add(Table([*key_names, *other], rows))
    if low:
        section.add(
            Text(
                f"{len(low)} series have a period confidence below 0.5: their timestamps sit "
                "loosely on the grid; check the period or pass it explicitly.",
                "warning",
            )
        )
    return section


def _validation_section(validation: object) -> Section:
    section = Section("Validation")
    if not isinstance(validation, Mapping):
        return section.add(Text(str(validation)))
    problems = validation.get("problems") or []
    ok = validation.get("ok", not problems)
    n_rows = validation.get("n_rows")
    rows_text = f" in {n_rows:,} rows" if isinstance(n_rows, int) else ""
    if ok and not problems:
        section.add(Text(f"No problems found{rows_text}."))
    else:
        section.add(Text(f"{len(problems)} kind(s) of problem found{rows_text}.", "warning"))
    if problems:
        rows = []
        for p in problems:
            if isinstance(p, Mapping):
                rows.append([p.get("kind"), p.get("count"), _plain(p.get("examples") or [])])
            else:
                rows.append([str(p), None, "—"])
        section.add(Table(["problem", "count", "examples"], rows))
    rest = {k: v for k, v in validation.items() if k not in ("ok", "n_rows", "problems")}
    if rest:
        section.add(Table(["item", "value"], [[k, _plain(v)] for k, v in rest.items()]))
    return section


# --------------------------------------------------------------------------- plots


def first_series(
    df: pl.DataFrame, keys: Sequence[str], limit: int
) -> tuple[list[tuple[tuple, pl.DataFrame]], int]:
    """The first `limit` series (in key order) as (key tuple, frame sorted by ts), and how
    many series there are. Only the chosen series are copied out of `df`."""
    keys = list(keys)
    if not keys:
        return [((), df.sort("ts"))], 1
    distinct = df.select(keys).unique().sort(keys, nulls_last=True)
    chosen = distinct.head(max(0, limit)).iter_rows()
    return [(key, series_of(df, keys, key)) for key in chosen], distinct.height


def series_of(df: pl.DataFrame, keys: Sequence[str], key: tuple) -> pl.DataFrame:
    """The rows of one key combination (nulls match nulls), sorted by ts."""
    match = pl.lit(True)
    for k, v in zip(keys, key, strict=True):
        match = match & pl.col(k).eq_missing(pl.lit(v, dtype=df.schema[k]))
    return df.filter(match).sort("ts")


def _label(keys: list[str], key: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True)) or "all rows"


def _plots_section(
    raw: pl.DataFrame,
    cleaned: pl.DataFrame,
    *,
    keys: list[str],
    columns: list[str],
    max_series: int,
    max_columns: int,
) -> Section:
    section = Section("Raw and cleaned series")
    section.add(
        Text(
            "Grey: the raw readings; blue: the cleaned series; orange circles: rows inserted "
            "for missing readings and imputed; red crosses: readings flagged as anomalies, "
            "at their raw values. Long series are drawn with min/max down-sampling, which "
            "keeps every spike.",
            "note",
        )
    )
    if any(k not in cleaned.columns for k in keys):
        return section.add(Text("The cleaned frame lacks the key columns; nothing to draw."))
    shown, total = first_series(cleaned, keys, max_series)
    if total > len(shown):
        section.add(
            Text(
                f"Showing the first {len(shown)} of {total} series; the tables "
                "above and the JSON report cover all of them.",
                "warning",
            )
        )
    raw_ok = all(k in raw.columns for k in keys)
    cols = [c for c in columns if c in cleaned.columns]
    missing = [c for c in columns if c not in cleaned.columns]
    if missing:
        section.add(Text(f"Not in the cleaned frame: {', '.join(missing)}.", "warning"))
    if len(cols) > max_columns:
        section.add(
            Text(f"Showing the first {max_columns} of {len(cols)} value columns.", "warning")
        )
        cols = cols[:max_columns]
    for key, part in shown:
        sub = Section(_label(keys, key), level=3)
        raw_part = series_of(raw, keys, key) if raw_ok else None
        for col in cols:
            sub.add(_column_figure(part, raw_part, col, _label(keys, key)))
        section.add(sub)
    return section


def _column_figure(
    part: pl.DataFrame, raw_part: pl.DataFrame | None, col: str, series: str
) -> Figure:
    clean_ts = part.get_column("ts").to_numpy()
    clean_values = part.get_column(col).cast(pl.Float64).fill_null(np.nan).to_numpy()
    if raw_part is not None and col in raw_part.columns:
        raw_one = raw_part.select("ts", pl.col(col).cast(pl.Float64)).unique(
            subset="ts", keep="first", maintain_order=True
        )
    else:
        raw_one = pl.DataFrame(
            {"ts": part.get_column("ts").head(0), col: pl.Series([], dtype=pl.Float64)}
        )
    inserted = (
        part.get_column(INSERTED_COLUMN).fill_null(False).to_numpy()
        if INSERTED_COLUMN in part.columns
        else None
    )
    flag = f"{col}{ANOMALY_SUFFIX}"
    anomaly_ts = anomaly_values = None
    caption = f"{col}: raw and cleaned"
    if flag in part.columns:
        flagged = part.filter(pl.col(flag).fill_null(False)).select("ts", pl.col(col).alias("_c"))
        flagged = flagged.join(raw_one, on="ts", how="left", maintain_order="left")
        anomaly_ts = flagged.get_column("ts").to_numpy()
        anomaly_values = (
            flagged.select(pl.coalesce(pl.col(col), pl.col("_c")).cast(pl.Float64))
            .to_series()
            .fill_null(np.nan)
            .to_numpy()
        )
    else:
        caption += " (no anomaly flags for this column)"
    fig = raw_vs_cleaned_figure(
        raw_one.get_column("ts").to_numpy(),
        raw_one.get_column(col).fill_null(np.nan).to_numpy(),
        clean_ts,
        clean_values,
        inserted=inserted,
        anomaly_ts=anomaly_ts,
        anomaly_values=anomaly_values,
        title=f"{col} · {series}",
        ylabel=col,
    )
    return Figure(figure_html(fig, alt=f"{col} raw and cleaned, {series}"), caption)
