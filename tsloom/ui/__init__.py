"""The web UI, served by ``tsloom serve`` from the same process and the same Python API:
datasets, integration, model training and search, prediction, workflows and live streams.

Server-rendered pages (Jinja2 templates in ``templates/``) with light interactivity from
the vendored htmx and charts from the vendored uPlot (``static/vendor``, see
``static/VENDORED.md``): nothing is fetched from a CDN. ``mount_ui(app, state)`` adds it
to the REST app under ``/ui``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from tsloom.ui.common import STATIC, Ui

if TYPE_CHECKING:
    from tsloom.serve.app import ServerState


def mount_ui(app: FastAPI, state: ServerState) -> Ui:
    """Add the UI's pages under ``/ui`` (and ``/`` → ``/ui``); at mount, jobs left queued
    or running by an earlier server are marked failed; at shutdown, running jobs stop."""
    from tsloom.ui import core, datasets, integration, live, models, predict, workflows

    ui = Ui(state)
    app.state.ui = ui
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")

    def reads_guard(request: Request) -> None:
        """When reads need a key (`read_requires_key`), every page but the login page
        needs a login (or a bearer key); a browser is sent to the login page."""
        if not state.config.read_requires_key or request.url.path == "/ui/login":
            return
        if not ui.auth.authorized(request):
            target = quote(request.url.path, safe="/")
            raise HTTPException(303, headers={"Location": f"/ui/login?next={target}"})

    router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(reads_guard)])
    for module in (core, datasets, integration, models, predict, workflows, live):
        module.routes(router, ui)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as value:
            try:
                yield value
            finally:
                ui.shutdown()

    app.router.lifespan_context = lifespan
    return ui


__all__ = ["Ui", "mount_ui"]
