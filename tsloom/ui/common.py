"""What every page module shares: the :class:`Ui` object (server state, templates, login,
job runners), rendering with the right status, refusals of write actions, form errors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from tsloom.jobs import JobRunner, recover_interrupted
from tsloom.ui.auth import COOKIE, UiAuth

if TYPE_CHECKING:
    from tsloom.serve.app import ServerState

log = logging.getLogger("tsloom.ui")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
T = TypeVar("T")

NAV = (
    ("datasets", "Datasets", "/ui/datasets"),
    ("integration", "Integration", "/ui/integration"),
    ("create", "Train", "/ui/models/new"),
    ("search", "Models", "/ui/models"),
    ("predict", "Predict", "/ui/predict"),
    ("workflows", "Workflows", "/ui/workflows"),
    ("live", "Live", "/ui/live"),
    ("jobs", "Jobs", "/ui/jobs"),
)


class FormErrors(dict[str, str]):
    """Field name → message; ``errors.add(field, message)`` keeps the first per field."""

    def add(self, field: str, message: str) -> None:
        self.setdefault(field, message)


class Ui:
    """One per app: the server state it reads through, and what the pages share."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.settings = state.settings
        self.auth = UiAuth(state.keys, state.settings.home)
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.globals["nav"] = NAV
        self.templates.env.filters["short"] = lambda v, n=12: str(v)[:n] if v else ""
        self.templates.env.filters["num"] = fmt_number
        self.templates.env.filters["when"] = fmt_when
        self.jobs = JobRunner(state.settings, workers=1, name="tsloom-train")
        self.flows = JobRunner(state.settings, workers=2, name="tsloom-flow")
        self.cache: dict[Any, Any] = {}  # small memo (estimated periods per dataset version)
        try:
            failed = recover_interrupted(settings=state.settings)
            if failed:
                log.warning("marked %d interrupted job(s) failed: %s", len(failed), failed)
        except Exception as exc:  # the database may be down: pages will say so
            log.error("could not check for interrupted jobs: %s", exc)

    def shutdown(self) -> None:
        """Stop running jobs (training stops after its current epoch, flows at once)."""
        self.jobs.shutdown()
        self.flows.shutdown()

    # -------------------------------------------------------------- rendering

    def render(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        context.setdefault("errors", FormErrors())
        context.setdefault("active", "")
        context["logged_in"] = self.auth.authorized(request)
        context["keys_configured"] = self.auth.enabled
        context["htmx"] = is_htmx(request)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def not_found(self, request: Request, exc: BaseException, *, active: str) -> HTMLResponse:
        """404: what the page names does not exist (the error says what and how to fix)."""
        return self.render(
            request, "notfound.html", status_code=404, active=active, message=error_text(exc)
        )

    def refuse(self, request: Request, action: str, *, retarget: str | None = None) -> HTMLResponse:
        """401: a write action without a valid key (a partial for htmx, else a page);
        `retarget` swaps the partial into that element instead of the request's target."""
        given = request.cookies.get(COOKIE) is not None or (
            request.headers.get("authorization") is not None
        )
        template = "partials/refused.html" if is_htmx(request) else "refused.html"
        response = self.render(
            request,
            template,
            status_code=401,
            action=action,
            expired=given,
            next=_path_of(request.headers.get("hx-current-url")) or str(request.url.path),
        )
        if retarget and is_htmx(request):
            response.headers["HX-Retarget"] = retarget
            response.headers["HX-Reswap"] = "innerHTML"
        return response

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (database, lake, torch) off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


def _path_of(url: str | None) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def fmt_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits}g}"
        return f"{value:.3e}"
    return str(value)


def fmt_when(value: Any) -> str:
    """A timestamp as ``2026-01-05 10:20:00`` (UTC), ISO text accepted."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def error_text(exc: BaseException) -> str:
    """A TsloomError's message and hint, or the exception's text."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    return f"{message} — {hint}" if hint else message
