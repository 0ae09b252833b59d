"""Datasets: the catalog, and one dataset's series with its estimated period, gaps,
anomalies and the cleaning/analysis reports written for it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from markupsafe import escape

from tsloom.catalog import Catalog, DatasetInfo
from tsloom.errors import TsloomError
from tsloom.names import validate_dataset_name
from tsloom.ui.charts import time_chart
from tsloom.ui.common import Ui, error_text

_REPORT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.(html|json)$")
PERIOD_SAMPLE = 20_000  # timestamps of the newest rows used for the catalog's period column


@dataclass
class Gap:
    start: datetime
    end: datetime
    missing: int


@dataclass
class SeriesView:
    """What the dataset page shows about one value column of one series."""

    column: str
    key: dict[str, Any]
    rows: int
    period: str | None = None
    confidence: float | None = None
    period_error: str | None = None
    gaps: int = 0
    missing: int = 0
    largest: list[Gap] = field(default_factory=list)
    anomalies: int = 0
    anomaly_rows: list[tuple[datetime, float, float]] = field(default_factory=list)
    chart: dict[str, Any] = field(default_factory=dict)


def fmt_period(value: timedelta) -> str:
    """``1 h``, ``10 min``, ``15 s``, ``250 ms``: the largest whole unit."""
    us = round(value / timedelta(microseconds=1))
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000)):
        if us and us % size == 0:
            return f"{us // size} {unit}"
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000} s"
    return f"{us // 1_000} ms" if us % 1_000 == 0 else f"{us} µs"


def _series_keys(frame: pl.DataFrame, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    if not keys:
        return [{}]
    return frame.select(keys).unique().sort(keys).to_dicts()


def _only(frame: pl.DataFrame, key: dict[str, Any]) -> pl.DataFrame:
    for name, value in key.items():
        frame = frame.filter(pl.col(name).eq_missing(value))
    return frame


def analyse_series(frame: pl.DataFrame, column: str, key: dict[str, Any]) -> SeriesView:
    """Period (clustering + approximate GCD), gaps (divide and round), IQR anomalies."""
    from tsloom.prep import estimate_period, iqr_anomalies

    frame = frame.select("ts", column).sort("ts")
    view = SeriesView(column=column, key=key, rows=frame.height)
    try:
        est = estimate_period(frame["ts"])
        view.period, view.confidence = fmt_period(est.period), est.confidence
        p = est.period_us
        t = frame["ts"].unique().sort().dt.epoch("us").to_numpy()
        d = np.diff(t)
        missing = np.clip((d + p // 2) // p - 1, 0, None)
        where = np.flatnonzero(missing > 0)
        view.gaps, view.missing = int(where.size), int(missing.sum())
        for i in where[np.argsort(-missing[where], kind="stable")][:10]:
            view.largest.append(Gap(_dt(t[i]), _dt(t[i + 1]), int(missing[i])))
    except TsloomError as exc:
        view.period_error = error_text(exc)
    values = frame.with_columns(pl.col(column).cast(pl.Float64))
    flagged = iqr_anomalies(values, column).rename(
        {f"{column}_score": "iqr_score", f"{column}_anomaly": "iqr"}
    )
    view.anomalies = int(flagged["iqr"].sum())
    marked = flagged.with_columns(pl.when(pl.col("iqr")).then(pl.col(column)).alias("anomaly"))
    top = marked.filter(pl.col("iqr")).sort("iqr_score", descending=True)
    view.anomaly_rows = [
        (r["ts"], r[column], r["iqr_score"]) for r in top.head(10).iter_rows(named=True)
    ]
    view.chart = time_chart(
        marked, [column, "anomaly"], points=["anomaly"], labels={"anomaly": "IQR anomalies"}
    )
    return view


def _dt(us: int) -> datetime:
    from datetime import UTC

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def reports_for(ui: Ui, info: DatasetInfo) -> list[dict[str, str]]:
    """HTML reports under ``<home>/reports/<dataset>`` (newest first), and the cleaning
    report named by the dataset's lineage when it was cleaned from another one."""
    out: list[dict[str, str]] = []
    folder = Path(ui.settings.home) / "reports" / info.name
    if folder.is_dir():
        for path in sorted(folder.glob("*.html"), key=lambda p: p.name, reverse=True):
            kind = path.name.split("-", 1)[0]
            out.append(
                {
                    "kind": kind,
                    "name": path.name,
                    "href": f"/ui/reports/{info.name}/{path.name}",
                    "about": info.name,
                }
            )
    lineage = Catalog(ui.settings).lineage(info.name)
    if lineage and lineage.report_path:
        html = Path(lineage.report_path).with_suffix(".html")
        if html.is_file() and html.parent.name == lineage.parent:
            out.append(
                {
                    "kind": "clean",
                    "name": html.name,
                    "href": f"/ui/reports/{lineage.parent}/{html.name}",
                    "about": f"made this dataset from {lineage.parent}",
                }
            )
    return out


def routes(router: APIRouter, ui: Ui) -> None:
    @router.get("/datasets", response_class=HTMLResponse)
    async def datasets_page(request: Request) -> HTMLResponse:
        infos = await ui.call(lambda: Catalog(ui.settings).list())
        return ui.render(request, "datasets.html", active="datasets", datasets=infos)

    @router.get("/datasets/{name}/period", response_class=HTMLResponse)
    async def dataset_period(name: str) -> HTMLResponse:
        """The estimated period of the dataset's first series (cached per lake version)."""

        def work() -> str:
            info = Catalog(ui.settings).get(name)
            memo = ("period", name, info.lake_version)
            if memo in ui.cache:
                return ui.cache[memo]
            text = _catalog_period(ui, info)
            ui.cache[memo] = text
            return text

        try:
            text = await ui.call(work)
        except TsloomError as exc:
            text = f"? ({exc.message})"
        return HTMLResponse(str(escape(text)))

    @router.get("/datasets/{name}", response_class=HTMLResponse)
    async def dataset_page(
        request: Request, name: str, column: str | None = None, series: int = 0
    ) -> HTMLResponse:
        from tsloom.lake import read_dataset

        def work() -> dict[str, Any]:
            catalog = Catalog(ui.settings)
            info = catalog.get(name)
            values = list(info.value_columns)
            chosen = column if column in values else (values[0] if values else None)
            context: dict[str, Any] = {
                "info": info,
                "columns": values,
                "column": chosen,
                "runs": catalog.runs(name, limit=5),
                "lineage": catalog.lineage(name),
                "reports": reports_for(ui, info),
                "series_keys": [],
                "series": 0,
                "view": None,
            }
            if chosen is None or info.row_count == 0:
                return context
            frame = read_dataset(name, columns=[chosen], settings=ui.settings)
            keys = _series_keys(frame, info.keys)
            index = series if 0 <= series < len(keys) else 0
            context["series_keys"], context["series"] = keys, index
            context["view"] = analyse_series(_only(frame, keys[index]), chosen, keys[index])
            return context

        try:
            context = await ui.call(work)
        except TsloomError as exc:
            return ui.not_found(request, exc, active="datasets")
        return ui.render(request, "dataset.html", active="datasets", **context)

    @router.get("/reports/{dataset}/{filename}")
    async def report_file(dataset: str, filename: str) -> Response:
        try:
            validate_dataset_name(dataset)
        except TsloomError:
            return HTMLResponse("not a dataset name", status_code=404)
        if not _REPORT_FILE.match(filename):
            return HTMLResponse("not a report file name", status_code=404)
        folder = (Path(ui.settings.home) / "reports" / dataset).resolve()
        path = (folder / filename).resolve()
        if path.parent != folder or not path.is_file():
            return HTMLResponse("no such report", status_code=404)
        return FileResponse(path)


def _catalog_period(ui: Ui, info: DatasetInfo) -> str:
    from tsloom.lake import read_dataset
    from tsloom.prep import estimate_period

    if info.row_count < 3 or not info.value_columns:
        return "–"
    start = None
    if info.ts_min and info.ts_max and info.row_count > PERIOD_SAMPLE:
        share = PERIOD_SAMPLE / info.row_count
        start = info.ts_max - (info.ts_max - info.ts_min) * share
    frame = read_dataset(
        info.name, columns=[info.value_columns[0]], start=start, settings=ui.settings
    )
    keys = _series_keys(frame, info.keys)
    est = estimate_period(_only(frame, keys[0])["ts"])
    return f"{fmt_period(est.period)} ({est.confidence:.2f})"
