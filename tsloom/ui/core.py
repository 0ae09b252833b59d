"""Home, login/logout and the background jobs pages (progress polled by htmx)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import escape

from tsloom.jobs import JobInfo, UnknownJobError, get_job, list_jobs
from tsloom.ui.auth import COOKIE, LIFETIME_S, cookie_secure
from tsloom.ui.charts import line_chart
from tsloom.ui.common import FormErrors, Ui


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/ui") and not value.startswith("//"):
        return value
    return "/ui"


def rmse_chart(job: JobInfo) -> dict[str, Any]:
    rows = [r for r in job.progress if "epoch" in r]
    return line_chart(
        [r["epoch"] for r in rows],
        {
            "train RMSE": [r.get("train_rmse") for r in rows],
            "validation RMSE": [r.get("val_rmse") for r in rows],
        },
        xlabel="epoch",
        ylabel="RMSE (scaled)",
    )


def routes(router: APIRouter, ui: Ui) -> None:
    @router.get("", response_class=HTMLResponse)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/datasets", status_code=307)

    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/ui") -> HTMLResponse:
        insecure = not cookie_secure(request)
        return ui.render(request, "login.html", next=_safe_next(next), insecure=insecure)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request, key: str = Form(""), next: str = Form("/ui")) -> Response:
        errors = FormErrors()
        token = ui.auth.login(key)
        if token is None:
            errors.add(
                "key", "enter an API key" if not key.strip() else "this API key is not accepted"
            )
            return ui.render(
                request, "login.html", status_code=401, errors=errors, next=_safe_next(next)
            )
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=LIFETIME_S,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=cookie_secure(request),
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> RedirectResponse:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(
            COOKIE, path="/ui", httponly=True, samesite="strict", secure=cookie_secure(request)
        )
        return response

    @router.get("/jobs", response_class=HTMLResponse)
    async def jobs_page(request: Request) -> HTMLResponse:
        jobs = await ui.call(lambda: list_jobs(limit=100, settings=ui.settings))
        return ui.render(request, "jobs.html", active="jobs", jobs=jobs)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: int) -> HTMLResponse:
        try:
            job = await ui.call(lambda: get_job(job_id, settings=ui.settings))
        except UnknownJobError as exc:
            return ui.not_found(request, exc, active="jobs")
        return ui.render(request, "job.html", active="jobs", job=job, chart=rmse_chart(job))

    @router.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
    async def job_progress(request: Request, job_id: int) -> HTMLResponse:
        try:
            job = await ui.call(lambda: get_job(job_id, settings=ui.settings))
        except UnknownJobError as exc:
            return HTMLResponse(
                f'<div class="notice error">{escape(exc.message)}</div>', status_code=404
            )
        return ui.render(request, "partials/job_progress.html", job=job, chart=rmse_chart(job))
