"""Models: create one from a form (training runs as a background job whose RMSE curve the
page draws as it trains), and search the registry the source design's way — tables →
integration id → target → method → param id — with promote/archive at the leaf."""

from __future__ import annotations

import json
import typing
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from tsloom.catalog import Catalog
from tsloom.errors import TsloomError
from tsloom.forecast.params import LearningParams, Method, OutputPrep, ScalerKind
from tsloom.jobs import training_job
from tsloom.ui.charts import line_chart
from tsloom.ui.common import FormErrors, Ui, error_text
from tsloom.ui.core import rmse_chart
from tsloom.ui.integration import SavedIntegration, saved_integrations

METHODS = typing.get_args(Method)
OUTPUTS = typing.get_args(OutputPrep)
SCALERS = typing.get_args(ScalerKind)
INPUT_STEPS, OUTPUT_STEPS = 24, 6

# form field → (type, pydantic default); durations and choices are handled apart
NUMBERS: dict[str, type] = {
    "split": float,
    "hidden_size": int,
    "layers": int,
    "dropout": float,
    "learning_rate": float,
    "batch_size": int,
    "epochs": int,
    "patience": int,
    "seed": int,
}


def duration_text(value: timedelta) -> str:
    """``1d``, ``4h``, ``30min``, ``15s``: what the duration fields accept."""
    us = round(value / timedelta(microseconds=1))
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000)):
        if us and us % size == 0:
            return f"{us // size}{unit}"
    return f"{us // 1_000_000}s" if us % 1_000_000 == 0 else f"{us // 1000}ms"


def default_values(saved: SavedIntegration | None) -> dict[str, Any]:
    defaults = LearningParams.model_fields
    values: dict[str, Any] = {name: defaults[name].default for name in NUMBERS}
    values.update(
        method=defaults["method"].default,
        output=defaults["output"].default,
        scaler=defaults["scaler"].default,
        subtract_last=False,
        features=[],
        target="",
        input_width="",
        output_width="",
    )
    if saved is not None:
        from tsloom.timeutil import parse_duration

        freq = parse_duration(saved.spec["freq"])
        values.update(
            target=saved.features[0] if saved.features else "",
            input_width=duration_text(freq * INPUT_STEPS),
            output_width=duration_text(freq * OUTPUT_STEPS),
        )
    return values


def parse_training_form(
    form: Any, saved: SavedIntegration
) -> tuple[dict[str, Any], dict[str, Any], FormErrors]:
    """(form values to show again, raw learning parameters, field errors)."""
    from tsloom.timeutil import parse_duration

    errors = FormErrors()
    values: dict[str, Any] = {
        k: str(form.get(k, "")).strip()
        for k in ("target", "input_width", "output_width", "method", "output", "scaler", *NUMBERS)
    }
    values["features"] = [str(f) for f in form.getlist("features")]
    values["subtract_last"] = form.get("subtract_last") in ("on", "true", "1")
    raw: dict[str, Any] = {}
    if values["target"] not in saved.features:
        errors.add("target", "choose the target feature among the integration's features")
    else:
        raw["target"] = values["target"]
    unknown = [f for f in values["features"] if f not in saved.features]
    if unknown:
        errors.add("features", f"not features of this integration: {', '.join(unknown)}")
    features = [f for f in values["features"] if f in saved.features]
    if raw.get("target") and raw["target"] not in features:
        features.insert(0, raw["target"])
    raw["features"] = features
    for name in ("input_width", "output_width"):
        if not values[name]:
            errors.add(name, "give a duration, e.g. 1d or 6h")
            continue
        try:
            parse_duration(values[name])
            raw[name] = values[name]
        except TsloomError:
            errors.add(name, f"{values[name]!r} is not a duration: write e.g. 24h, 6h, 30min")
    for name, allowed in (("method", METHODS), ("output", OUTPUTS), ("scaler", SCALERS)):
        if values[name] not in allowed:
            errors.add(name, f"choose one of {', '.join(allowed)}")
        else:
            raw[name] = values[name]
    for name, kind in NUMBERS.items():
        text = values[name]
        if text == "":
            continue  # the default
        try:
            raw[name] = kind(text)
        except ValueError:
            errors.add(name, f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
    raw["subtract_last"] = values["subtract_last"]
    if raw.get("target") and not errors.get("input_width") and not errors.get("output_width"):
        # the fields that read well are checked together (a bad number keeps its default)
        data = {**raw, "freq": saved.spec["freq"]}
        try:
            LearningParams.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = [str(p) for p in err["loc"]]
                message = err["msg"].removeprefix("Value error, ")
                name = (
                    loc[0]
                    if loc
                    else next(
                        (f for f in ("input_width", "output_width", "features") if f in message),
                        "target",
                    )
                )
                errors.add(name, message)
    return values, raw, errors


def routes(router: APIRouter, ui: Ui) -> None:
    # ------------------------------------------------------------------ create

    async def creation_context(integration: int | None) -> dict[str, Any]:
        saved = await ui.call(lambda: saved_integrations(ui.settings))
        chosen = next((s for s in saved if s.id == integration), saved[0] if saved else None)
        return {"saved": saved, "chosen": chosen}

    @router.get("/models/new", response_class=HTMLResponse)
    async def create_page(request: Request, integration: int | None = None) -> HTMLResponse:
        context = await creation_context(integration)
        return ui.render(
            request,
            "models_new.html",
            active="create",
            values=default_values(context["chosen"]),
            methods=METHODS,
            outputs=OUTPUTS,
            scalers=SCALERS,
            **context,
        )

    @router.post("/models/train", response_class=HTMLResponse)
    async def train(request: Request) -> Response:
        if not ui.auth.authorized(request):
            return ui.refuse(request, "training a model", retarget="#train-result")
        form = await request.form()
        try:
            integration = int(str(form.get("integration", "")))
        except ValueError:
            integration = -1
        context = await creation_context(integration)
        chosen = context["chosen"]
        panel = {"methods": METHODS, "outputs": OUTPUTS, "scalers": SCALERS, **context}
        if chosen is None or chosen.id != integration:
            errors = FormErrors(integration="choose a saved integration (save one first)")
            return ui.render(
                request,
                "partials/train_panel.html",
                status_code=422,
                errors=errors,
                values=default_values(chosen),
                **panel,
            )
        values, raw, errors = parse_training_form(form, chosen)
        if errors:
            return ui.render(
                request,
                "partials/train_panel.html",
                status_code=422,
                errors=errors,
                values=values,
                **panel,
            )
        spec = dict(chosen.spec)
        job = await ui.call(
            lambda: ui.jobs.submit(
                "train",
                {"spec": spec, "params": raw, "integration_id": chosen.integration_id},
                training_job(spec, raw),
            )
        )
        return ui.render(
            request,
            "partials/train_panel.html",
            values=values,
            job=job,
            chart=rmse_chart(job),
            **panel,
        )

    # ------------------------------------------------------------------ search

    @router.get("/models", response_class=HTMLResponse)
    async def search_page(
        request: Request,
        target: str | None = None,
        method: str | None = None,
        param: str | None = None,
        ref: str | None = None,
    ) -> HTMLResponse:
        tables = [t for t in request.query_params.getlist("tables") if t]

        def work() -> dict[str, Any]:
            return search_context(ui, tables, target, method, param, ref)

        try:
            context = await ui.call(work)
        except TsloomError as exc:
            context = search_context(ui, [], None, None, None, None)
            context["failure"] = error_text(exc)
        return ui.render(request, "models_search.html", active="search", **context)

    @router.post("/models/stage", response_class=HTMLResponse)
    async def set_stage(request: Request) -> Response:
        from tsloom.registry import promote

        if not ui.auth.authorized(request):
            return ui.refuse(request, "changing a model's stage")
        form = await request.form()
        ref, stage = str(form.get("ref", "")), str(form.get("stage", ""))
        if stage not in ("staged", "production", "archived"):
            return ui.render(
                request,
                "partials/stage.html",
                status_code=422,
                failure=f"unknown stage {stage!r}",
                ref=ref,
                stage=None,
            )
        try:
            row = await ui.call(lambda: promote(ref, stage, settings=ui.settings))
        except TsloomError as exc:
            return ui.render(
                request,
                "partials/stage.html",
                status_code=422,
                failure=error_text(exc),
                ref=ref,
                stage=None,
            )
        ui.state.aliases.clear()  # the REST aliases (…/production) follow at once
        if not request.headers.get("hx-request"):
            return RedirectResponse(f"/ui/models?ref={row['ref']}", status_code=303)
        return ui.render(
            request,
            "partials/stage.html",
            ref=row["ref"],
            stage=row["stage"],
            oob_param=row["param_id"],  # the badge in the param-id list follows
        )


def search_context(
    ui: Ui,
    tables: list[str],
    target: str | None,
    method: str | None,
    param: str | None,
    ref: str | None,
) -> dict[str, Any]:
    """Everything the search page shows for the current choice (the tree, and the leaf)."""
    from tsloom.integrate import integration_id
    from tsloom.registry import records, search

    rows = records.all_rows(ui.settings)
    if ref:
        row = records.get(ui.settings, ref)
        if row is not None:
            tables = sorted(row["datasets"]) or tables
            target, method, param = row["target"], row["method"], row["param_id"]
    known = set(Catalog(ui.settings).names())
    for row in rows:
        known.update(row["datasets"])
    by_integration: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_integration.setdefault(
            row["integration_id"], {"tables": sorted(row["datasets"]), "models": 0}
        )
        entry["models"] += 1
    context: dict[str, Any] = {
        "all_tables": sorted(known),
        "tables": tables,
        "integrations": by_integration,
        "integration_id": integration_id(tables) if tables else None,
        "target": target,
        "method": method,
        "param": param,
        "targets": [],
        "methods": [],
        "params": [],
        "leaf": None,
        "total": len(rows),
    }
    if not tables:
        return context
    tree = search(tables, settings=ui.settings)
    branch = tree.get(context["integration_id"], {})
    context["targets"] = sorted(branch)
    if target not in branch:
        context["target"] = target = None
        return context
    context["methods"] = sorted(branch[target])
    if method not in branch[target]:
        context["method"] = method = None
        return context
    leaves = branch[target][method]
    context["params"] = sorted(
        leaves.items(),
        key=lambda kv: (kv[1]["metrics"].get("rmse") is None, kv[1]["metrics"].get("rmse") or 0),
    )
    if param not in leaves:
        context["param"] = None
        return context
    context["leaf"] = leaf_details(ui, leaves[param]["ref"])
    return context


def leaf_details(ui: Ui, ref: str) -> dict[str, Any]:
    from tsloom.registry import show
    from tsloom.registry.store import backend

    out = show(ref, settings=ui.settings)
    history = backend(ui.settings).read(f"{ref}/history.json")
    chart = None
    if history:
        epochs = json.loads(history).get("epochs", [])
        chart = line_chart(
            [e["epoch"] for e in epochs],
            {
                "train RMSE": [e.get("train_rmse") for e in epochs],
                "validation RMSE": [e.get("val_rmse") for e in epochs],
            },
            xlabel="epoch",
            ylabel="RMSE (scaled)",
        )
    out["chart"] = chart
    out["resident"] = ref in ui.state.cache.resident()
    return out
