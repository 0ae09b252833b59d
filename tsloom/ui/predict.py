"""Prediction: pick a model, forecast from the lake's newest window or an uploaded CSV,
and see the forecast drawn after the recent actual values, as a table and a CSV file."""

from __future__ import annotations

import base64
import io
from typing import Any

import polars as pl
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tsloom.errors import TsloomError
from tsloom.ui.charts import time_chart
from tsloom.ui.common import FormErrors, Ui, error_text


def read_window_csv(data: bytes, model: Any) -> pl.DataFrame:
    """An uploaded CSV as a window: a ``ts`` column (or the first column) of times and the
    model's features (full or short names); the last `input_steps` rows are used."""
    try:
        frame = pl.read_csv(io.BytesIO(data), try_parse_dates=True)
    except Exception as exc:
        raise TsloomError(f"the file is not a readable CSV: {exc}") from exc
    if frame.height == 0:
        raise TsloomError("the CSV has no rows")
    if "ts" not in frame.columns:
        frame = frame.rename({frame.columns[0]: "ts"})
    ts = frame["ts"]
    if ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC", strict=False)
        if ts.null_count():
            raise TsloomError(
                "some times in the first column cannot be read",
                hint="write ISO 8601 times such as 2026-01-05T10:00:00",
            )
    if not isinstance(ts.dtype, pl.Datetime):
        raise TsloomError(
            f"the time column holds {ts.dtype}, not times",
            hint="the first column (or one named ts) must hold ISO 8601 times",
        )
    ts = ts.dt.replace_time_zone("UTC") if ts.dtype.time_zone is None else ts  # type: ignore[union-attr]
    frame = frame.with_columns(ts.dt.cast_time_unit("us").dt.convert_time_zone("UTC").alias("ts"))
    return frame.sort("ts").tail(model.params.input_steps)


def forecast_view(model: Any, window: pl.DataFrame, forecast: pl.DataFrame) -> dict[str, Any]:
    """Chart (actuals, then the forecast joined to the last actual), table and CSV."""
    p = model.params
    window = model._by_feature_names(window)
    actual = window.select(pl.col("ts"), pl.col(p.target).cast(pl.Float64).alias("actual"))
    ahead = forecast.select(pl.col("ts"), pl.col(p.target).alias("forecast"))
    last = actual.tail(1).select("ts", pl.col("actual").alias("forecast"))
    both = (
        pl.concat(
            [actual, ahead.with_columns(pl.lit(None, pl.Float64).alias("actual"))],
            how="diagonal_relaxed",
        )
        .join(last, on="ts", how="left", suffix="_join")
        .with_columns(pl.coalesce("forecast", "forecast_join").alias("forecast"))
        .drop("forecast_join")
        .sort("ts")
    )
    chart = time_chart(
        both,
        ["actual", "forecast"],
        labels={"actual": f"actual {p.target}", "forecast": "forecast"},
    )
    if chart["series"]:
        chart["series"][1]["dash"] = True
    out = forecast.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    text = out.write_csv()
    return {
        "chart": chart,
        "rows": out.to_dicts(),
        "target": p.target,
        "csv_href": "data:text/csv;base64," + base64.b64encode(text.encode()).decode(),
        "window_start": window["ts"].min(),
        "window_end": window["ts"].max(),
    }


def routes(router: APIRouter, ui: Ui) -> None:
    def model_rows() -> list[dict[str, Any]]:
        from tsloom.registry import records

        rows = records.all_rows(ui.settings)
        rows.sort(key=lambda r: r["created_at"] or "", reverse=True)
        return rows

    @router.get("/predict", response_class=HTMLResponse)
    async def predict_page(request: Request, ref: str | None = None) -> HTMLResponse:
        rows = await ui.call(model_rows)
        values = {"ref": ref or (rows[0]["ref"] if rows else ""), "source": "latest"}
        return ui.render(request, "predict.html", active="predict", models=rows, values=values)

    @router.post("/predict", response_class=HTMLResponse)
    async def predict(request: Request) -> HTMLResponse:
        form = await request.form()
        errors = FormErrors()
        ref = str(form.get("ref", "")).strip()
        source = str(form.get("source", "latest"))
        upload = form.get("file")
        context: dict[str, Any] = {"ref": ref}
        model = None
        if not ref:
            errors.add("ref", "choose a model")
        else:
            try:
                full = await ui.state.aresolve(ref)
                model = await ui.state.amodel(full)
                context["ref"] = full
            except TsloomError as exc:
                errors.add("ref", error_text(exc))
        if source not in ("latest", "csv"):
            errors.add("source", "choose the lake's latest window or a CSV file")
        data = b""
        if source == "csv":
            data = await upload.read() if upload is not None and hasattr(upload, "read") else b""
            if not data:
                errors.add("file", "choose a CSV file with ts and the model's features")
        if errors or model is None:
            return ui.render(request, "partials/prediction.html", status_code=422, errors=errors)
        m = model

        def work() -> dict[str, Any]:
            window = m.latest_window() if source == "latest" else read_window_csv(data, m)
            return forecast_view(m, window, m.predict(window))

        try:
            view = await ui.call(work)
        except TsloomError as exc:
            errors.add("file" if source == "csv" else "source", error_text(exc))
            return ui.render(request, "partials/prediction.html", status_code=422, errors=errors)
        context.update(view)
        context["model"] = model
        return ui.render(request, "partials/prediction.html", errors=errors, **context)
