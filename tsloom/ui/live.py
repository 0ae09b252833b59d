"""Live: for a running ``tsloom stream``, predicted against actual values per model,
refreshed every few seconds from the lake.

The stream's contract: predictions in dataset ``stream.predictions`` (ts = the predicted
time; keys ``model``, ``target``, ``horizon`` (1-based); value ``value``), completed step
values in ``stream.actuals`` (ts = step start; key ``series``; value ``value``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tsloom.catalog import Catalog
from tsloom.errors import TsloomError
from tsloom.ui.charts import time_chart
from tsloom.ui.common import Ui, error_text

PREDICTIONS = "stream.predictions"
ACTUALS = "stream.actuals"
LOOKBACKS = {"15min": 15, "1h": 60, "6h": 360, "1d": 1440, "7d": 10080}


def _matches(series: str, target: str) -> bool:
    return series == target or target.endswith(f".{series}") or series.endswith(f".{target}")


def live_models(
    predictions: pl.DataFrame, actuals: pl.DataFrame, horizon: int
) -> list[dict[str, Any]]:
    """Per model: chart of actual vs predicted (at `horizon`), error summary, freshness."""
    out = []
    if predictions.height == 0:
        return out
    for (model, target), part in predictions.group_by(["model", "target"], maintain_order=True):
        horizons = sorted(part["horizon"].unique().to_list())
        h = horizon if horizon in horizons else horizons[0]
        pred = (
            part.filter(pl.col("horizon") == h)
            .group_by("ts")
            .agg(pl.col("value").last().alias("predicted"))
        )
        act = (
            actuals.filter(
                pl.col("series").map_elements(
                    lambda s, t=target: _matches(s, t), return_dtype=pl.Boolean
                )
            )
            if actuals.height
            else actuals
        )
        act = (
            act.group_by("ts").agg(pl.col("value").last().alias("actual"))
            if act.height
            else pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "actual": pl.Float64})
        )
        pred = pred.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        act = act.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        both = pred.join(act, on="ts", how="full", coalesce=True).sort("ts")
        paired = both.drop_nulls(["actual", "predicted"])
        errors = (paired["predicted"] - paired["actual"]).abs()
        out.append(
            {
                "model": model,
                "target": target,
                "horizon": h,
                "horizons": horizons,
                "chart": time_chart(
                    both,
                    ["actual", "predicted"],
                    labels={"actual": f"actual {target}", "predicted": f"predicted (h={h})"},
                ),
                "paired": paired.height,
                "mae": float(errors.mean()) if paired.height else None,
                "last_error": float(errors[-1]) if paired.height else None,
                "last_prediction": pred["ts"].max(),
                "last_actual": act["ts"].max() if act.height else None,
            }
        )
    return out


def routes(router: APIRouter, ui: Ui) -> None:
    @router.get("/live", response_class=HTMLResponse)
    async def live_page(request: Request, lookback: str = "6h", horizon: int = 1) -> HTMLResponse:
        lookback = lookback if lookback in LOOKBACKS else "6h"
        return ui.render(
            request,
            "live.html",
            active="live",
            lookback=lookback,
            horizon=horizon,
            lookbacks=list(LOOKBACKS),
        )

    @router.get("/live/panel", response_class=HTMLResponse)
    async def live_panel(request: Request, lookback: str = "6h", horizon: int = 1) -> HTMLResponse:
        from tsloom.lake import read_dataset

        minutes = LOOKBACKS.get(lookback, 360)

        def work() -> dict[str, Any]:
            catalog = Catalog(ui.settings)
            pinfo, ainfo = catalog.find(PREDICTIONS), catalog.find(ACTUALS)
            if pinfo is None and ainfo is None:
                return {"empty": True}
            ends = [i.ts_max for i in (pinfo, ainfo) if i is not None and i.ts_max is not None]
            if not ends:
                return {"empty": True}
            start = max(ends) - timedelta(minutes=minutes)
            preds = (
                read_dataset(PREDICTIONS, start=start, settings=ui.settings)
                if pinfo is not None
                else pl.DataFrame()
            )
            acts = (
                read_dataset(ACTUALS, start=start, settings=ui.settings)
                if ainfo is not None
                else pl.DataFrame(
                    schema={
                        "ts": pl.Datetime("us", "UTC"),
                        "series": pl.String,
                        "value": pl.Float64,
                    }
                )
            )
            return {
                "empty": False,
                "models": live_models(preds, acts, horizon),
                "actual_series": sorted(acts["series"].unique().to_list()) if acts.height else [],
                "newest": max(ends),
            }

        try:
            context = await ui.call(work)
        except TsloomError as exc:
            context = {"empty": False, "models": [], "failure": error_text(exc)}
        return ui.render(
            request, "partials/live_panel.html", lookback=lookback, horizon=horizon, **context
        )
