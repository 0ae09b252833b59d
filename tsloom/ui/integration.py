"""Integration: choose tables and columns, a reference frequency and a range; see the
integration id and a preview before saving (the source design's "Integration Info")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tsloom.catalog import Catalog
from tsloom.config import Settings
from tsloom.db.engine import session_scope
from tsloom.db.models import IntegrationRecord
from tsloom.errors import TsloomError
from tsloom.ui.charts import time_chart
from tsloom.ui.common import FormErrors, Ui, error_text

DOWNSAMPLE = ("mean", "min", "max", "last", "sum")
UPSAMPLE = ("interpolate", "ffill", "none")
GAPS = ("interpolate", "ffill", "drop", "keep")
PREVIEW_ROWS = 8


@dataclass(frozen=True)
class SavedIntegration:
    id: int
    integration_id: str
    spec_hash: str
    tables: list[str]
    spec: dict[str, Any]
    features: list[str]

    @property
    def label(self) -> str:
        return f"{', '.join(self.tables)} @ {self.spec.get('freq')} · {self.integration_id[:10]}"


def saved_integrations(settings: Settings) -> list[SavedIntegration]:
    """Every stored integration spec, newest first."""
    with session_scope(settings.db_url) as s:
        rows = s.scalars(sa.select(IntegrationRecord).order_by(IntegrationRecord.id.desc()))
        return [
            SavedIntegration(
                r.id, r.integration_id, r.spec_hash, list(r.tables), dict(r.spec), list(r.features)
            )
            for r in rows
        ]


async def form_values(request: Request) -> dict[str, Any]:
    form = await request.form()
    tables = [str(t) for t in form.getlist("tables")]
    columns: dict[str, list[str]] = {}
    for item in form.getlist("col"):
        dataset, _, column = str(item).partition("::")
        columns.setdefault(dataset, []).append(column)
    values = {
        k: str(form.get(k, "")).strip()
        for k in ("freq", "start", "end", "downsample", "upsample", "gaps")
    }
    values.update(tables=tables, columns=columns)
    return values


def build_spec(values: dict[str, Any], known: list[str], errors: FormErrors) -> dict[str, Any]:
    """The spec dict from the form's values, with a message per invalid field."""
    from tsloom.timeutil import parse_duration, to_utc

    tables = values["tables"]
    if not tables:
        errors.add("tables", "choose at least one table")
    unknown = [t for t in tables if t not in known]
    if unknown:
        errors.add("tables", f"unknown dataset(s): {', '.join(unknown)}")
    if not values["freq"]:
        errors.add("freq", "give the reference frequency, e.g. 10min, 30min, 1h")
    else:
        try:
            if parse_duration(values["freq"]).total_seconds() <= 0:
                errors.add("freq", "the frequency must be positive")
        except TsloomError:
            errors.add("freq", f"{values['freq']!r} is not a duration: write e.g. 10min or 1h")
    bounds = {}
    for name in ("start", "end"):
        if values[name]:
            try:
                bounds[name] = to_utc(values[name])
            except TsloomError:
                errors.add(name, f"{values[name]!r} is not a time: use ISO 8601, 2026-01-05T00:00")
    if "start" in bounds and "end" in bounds and bounds["start"] >= bounds["end"]:
        errors.add("end", "the end must be after the start (the range is [start, end))")
    for name, allowed in (("downsample", DOWNSAMPLE), ("upsample", UPSAMPLE), ("gaps", GAPS)):
        if values[name] and values[name] not in allowed:
            errors.add(name, f"choose one of {', '.join(allowed)}")
    sources: list[Any] = []
    for table in tables:
        cols = values["columns"].get(table)
        sources.append({"dataset": table, "columns": cols} if cols else table)
    spec: dict[str, Any] = {"sources": sources, "freq": values["freq"]}
    for name in ("start", "end"):
        if values[name]:
            spec[name] = values[name]
    for name in ("downsample", "upsample", "gaps"):
        if values[name]:
            spec[name] = values[name]
    return spec


def preview_context(integrated: Any) -> dict[str, Any]:
    frame = integrated.frame
    features = list(integrated.features)
    short = {f: f.split(".", 2)[-1] if f.count(".") >= 2 else f for f in features}
    return {
        "summary": integrated.to_dict(),
        "chart": time_chart(frame, features, labels=short),
        "head": frame.head(PREVIEW_ROWS).to_dicts(),
        "features": features,
        "spec_json": json.dumps(integrated.spec.canonical(), sort_keys=True),
    }


def routes(router: APIRouter, ui: Ui) -> None:
    @router.get("/integration", response_class=HTMLResponse)
    async def integration_page(request: Request) -> HTMLResponse:
        infos = await ui.call(lambda: Catalog(ui.settings).list())
        chosen = request.query_params.getlist("tables")
        saved = await ui.call(lambda: saved_integrations(ui.settings))
        values = {"tables": chosen, "columns": {}, "freq": "", "gaps": "interpolate"}
        return ui.render(
            request,
            "integration.html",
            active="integration",
            datasets=infos,
            values=values,
            saved=saved,
            integration_id=_iid(chosen),
        )

    @router.post("/integration/id", response_class=HTMLResponse)
    async def integration_id_partial(request: Request) -> HTMLResponse:
        values = await form_values(request)
        return ui.render(
            request,
            "partials/integration_id.html",
            integration_id=_iid(values["tables"]),
            tables=sorted(set(values["tables"])),
        )

    @router.post("/integration/preview", response_class=HTMLResponse)
    async def integration_preview(request: Request) -> HTMLResponse:
        from tsloom.integrate import integrate

        values = await form_values(request)
        known = await ui.call(lambda: Catalog(ui.settings).names())
        errors = FormErrors()
        spec = build_spec(values, known, errors)
        if errors:
            return ui.render(
                request, "partials/integration_preview.html", status_code=422, errors=errors
            )
        try:
            integrated = await ui.call(lambda: integrate(spec, settings=ui.settings))
        except TsloomError as exc:
            return ui.render(
                request,
                "partials/integration_preview.html",
                status_code=422,
                errors=errors,
                failure=error_text(exc),
            )
        return ui.render(
            request,
            "partials/integration_preview.html",
            errors=errors,
            **preview_context(integrated),
        )

    @router.post("/integration/save", response_class=HTMLResponse)
    async def integration_save(request: Request) -> HTMLResponse:
        from tsloom.integrate import integrate
        from tsloom.integrate.store import save_integration

        if not ui.auth.authorized(request):
            return ui.refuse(request, "saving an integration")
        form = await request.form()
        try:
            spec = json.loads(str(form.get("spec", "")))
        except ValueError:
            return ui.render(
                request,
                "partials/integration_saved.html",
                status_code=422,
                failure="the form lost its integration spec; preview again",
            )

        def work() -> tuple[str, str, int]:
            integrated = integrate(spec, settings=ui.settings)
            spec_hash = save_integration(integrated, ui.settings)
            record = next(
                s
                for s in saved_integrations(ui.settings)
                if s.integration_id == integrated.id and s.spec_hash == spec_hash
            )
            return integrated.id, spec_hash, record.id

        try:
            iid, spec_hash, record_id = await ui.call(work)
        except TsloomError as exc:
            return ui.render(
                request,
                "partials/integration_saved.html",
                status_code=422,
                failure=error_text(exc),
            )
        return ui.render(
            request,
            "partials/integration_saved.html",
            integration_id=iid,
            spec_hash=spec_hash,
            record_id=record_id,
        )


def _iid(tables: list[str]) -> str | None:
    from tsloom.integrate import integration_id

    if not tables:
        return None
    try:
        return integration_id(tables)
    except TsloomError:
        return None
