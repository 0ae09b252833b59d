"""Workflows: saved AMML workflows with their source, bytecode listing, versions and run
history; save a new one, run one as a background job and follow its output."""

from __future__ import annotations

import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tsloom.errors import TsloomError
from tsloom.jobs import JobContext, UnknownJobError, get_job
from tsloom.ui.common import FormErrors, Ui, error_text


def flow_job(ref: str):
    """Run a saved workflow, its printed output captured for the page to poll."""

    def run(ctx: JobContext) -> dict[str, Any]:
        from rich.console import Console

        from tsloom.amml.flow_store import run_saved_flow

        buffer = io.StringIO()
        ctx.state["buffer"] = buffer
        console = Console(file=buffer, width=110, color_system=None, force_terminal=False)
        run_id, result = run_saved_flow(ref, settings=ctx.settings, console=console, stop=ctx.stop)
        return {
            "ref": ref,
            "run_id": run_id,
            "status": getattr(result, "status", "finished"),
            "rows_out": sum(f.height for f in getattr(result, "results", [])),
        }

    return run


def flow_name(ref: str) -> str:
    """The workflow name of a ref (``name`` or ``name:version``)."""
    name, sep, version = ref.rpartition(":")
    return name if sep and version.isdigit() else ref


def routes(router: APIRouter, ui: Ui) -> None:
    from tsloom.amml import flow_store

    @router.get("/workflows", response_class=HTMLResponse)
    async def workflows_page(request: Request) -> HTMLResponse:
        def work() -> dict[str, Any]:
            return {
                "flows": flow_store.list_flows(settings=ui.settings),
                "runs": flow_store.flow_runs(limit=20, settings=ui.settings),
            }

        context = await ui.call(work)
        return ui.render(request, "workflows.html", active="workflows", values={}, **context)

    @router.post("/workflows/save", response_class=HTMLResponse)
    async def save(request: Request) -> Response:
        if not ui.auth.authorized(request):
            return ui.refuse(request, "saving a workflow", retarget="#save-flow-result")
        form = await request.form()
        values = {k: str(form.get(k, "")) for k in ("name", "description", "source")}
        errors = FormErrors()
        name = values["name"].strip()
        if not name:
            errors.add("name", "give the workflow a name")
        if not values["source"].strip():
            errors.add("source", 'write the workflow, e.g. source id="airq.seoul" | print')
        saved = None
        if not errors:
            try:
                saved = await ui.call(
                    lambda: flow_store.save_flow(
                        name,
                        values["source"],
                        description=values["description"].strip() or None,
                        settings=ui.settings,
                    )
                )
            except TsloomError as exc:
                field = (
                    "name"
                    if "name" in exc.message and "workflow name" in exc.message
                    else ("source")
                )
                errors.add(field, error_text(exc))
            except Exception as exc:  # the language's own errors (parse, compile)
                errors.add("source", error_text(exc))
        if errors or saved is None:
            return ui.render(
                request, "partials/flow_form.html", status_code=422, errors=errors, values=values
            )
        response = HTMLResponse("", status_code=200)
        response.headers["HX-Redirect"] = f"/ui/workflows/{saved.name}"
        return response

    @router.get("/workflows/{name}", response_class=HTMLResponse)
    async def workflow_page(
        request: Request, name: str, version: int | None = None
    ) -> HTMLResponse:
        ref = f"{name}:{version}" if version else name

        def work() -> dict[str, Any]:
            flow = flow_store.get_flow(ref, settings=ui.settings)
            return {
                "flow": flow,
                "versions": flow_store.flow_versions(name, settings=ui.settings),
                "runs": flow_store.flow_runs(name, limit=30, settings=ui.settings),
            }

        try:
            context = await ui.call(work)
        except TsloomError as exc:
            return ui.not_found(request, exc, active="workflows")
        return ui.render(request, "workflow.html", active="workflows", **context)

    @router.post("/workflows/{name}/run", response_class=HTMLResponse)
    async def run_flow(request: Request, name: str) -> Response:
        if not ui.auth.authorized(request):
            return ui.refuse(request, "running a workflow", retarget="#flow-run")
        form = await request.form()
        version = str(form.get("version", "")).strip()
        ref = f"{name}:{version}" if version.isdigit() else name
        try:
            flow = await ui.call(lambda: flow_store.get_flow(ref, settings=ui.settings))
        except TsloomError as exc:
            return ui.render(
                request,
                "partials/flow_run.html",
                status_code=422,
                failure=error_text(exc),
                job=None,
            )
        job = await ui.call(lambda: ui.flows.submit("flow", {"ref": flow.ref}, flow_job(flow.ref)))
        return ui.render(request, "partials/flow_run.html", job=job, output="", run=None)

    @router.get("/workflows/jobs/{job_id}", response_class=HTMLResponse)
    async def flow_output(request: Request, job_id: int) -> HTMLResponse:
        try:
            job = await ui.call(lambda: get_job(job_id, settings=ui.settings))
        except UnknownJobError as exc:
            return ui.render(
                request, "partials/flow_run.html", status_code=404, failure=exc.message, job=None
            )
        ctx = ui.flows.context(job_id)
        output, run, runs = "", None, None
        if ctx is not None and "buffer" in ctx.state:
            output = ctx.state["buffer"].getvalue()
        if job.done and job.result and job.result.get("run_id"):
            run = await ui.call(
                lambda: flow_store.get_run(job.result["run_id"], settings=ui.settings)
            )
            output = output or (run.output or "")
        if job.done:  # the last poll: the page's Runs table follows (out of band)
            name = run.flow_name if run is not None else flow_name(job.params.get("ref", ""))
            if name:
                runs = await ui.call(
                    lambda: flow_store.flow_runs(name, limit=30, settings=ui.settings)
                )
        return ui.render(
            request, "partials/flow_run.html", job=job, output=output, run=run, flow_runs=runs
        )

    @router.post("/workflows/jobs/{job_id}/stop", response_class=HTMLResponse)
    async def stop_flow(request: Request, job_id: int) -> Response:
        if not ui.auth.authorized(request):
            return ui.refuse(request, "stopping a workflow", retarget="#flow-run")
        ctx = ui.flows.context(job_id)
        if ctx is not None:
            ctx.stop.set()
        return Response(status_code=204)
