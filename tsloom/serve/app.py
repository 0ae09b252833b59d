"""The FastAPI app: registry search and inspection, predictions through the model cache
and the batcher, promotion/deletion behind API keys, health, readiness and metrics.

    app = create_app()                      # settings from the environment
    app = create_app(settings, ServeConfig(cache_size=64, api_key_hashes=(hash_key(k),)))
"""

from __future__ import annotations

import difflib
import gc
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import Body, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tsloom.config import Settings, load_settings
from tsloom.errors import ConfigError, InvalidNameError, TsloomError
from tsloom.serve.answer import prediction_body
from tsloom.serve.asgi_io import BodyTooLarge
from tsloom.serve.auth import KeyCheck, is_open, is_write
from tsloom.serve.batching import Batcher, Overloaded
from tsloom.serve.cache import ModelCache, TTLCache
from tsloom.serve.config import ServeConfig
from tsloom.serve.fast_lane import PREDICT_ROUTE, PredictLane, ServeApp
from tsloom.serve.metrics import Metrics
from tsloom.serve.schemas import (
    ErrorBody,
    IntegrationRequest,
    IntegrationResponse,
    PredictRequest,
    PredictResponse,
    PromoteRequest,
)

log = logging.getLogger("tsloom.serve")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
STAGE_NAMES = ("staged", "production", "archived")


class NotFound(TsloomError):
    """An unknown model (reference, alias or param id)."""

    def __init__(self, message: str, hint: str | None = None, matches: list[str] | None = None):
        super().__init__(message, hint)
        self.matches = matches or []


# ------------------------------------------------------------------ state


class ServerState:
    """What one app holds: settings, config, the model cache, the batcher, metrics."""

    def __init__(self, settings: Settings, config: ServeConfig) -> None:
        self.settings = settings
        self.config = config
        self.metrics = Metrics()
        self.keys = KeyCheck(config.api_key_hashes)
        self.cache = ModelCache(self._load, config.cache_size, self.metrics)
        self.aliases = TTLCache(config.alias_ttl_s)
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="tsloom-infer")
        self.batcher = Batcher(
            self.executor,
            max_batch=config.max_batch_size,
            max_wait=config.max_wait_ms / 1000.0,
            max_queue=config.max_queue,
            max_queue_total=config.max_queue_total,
            inline_s=config.inline_ms / 1000.0,
            parallel=config.workers,
            metrics=self.metrics,
            forward_process=config.runtime == "onnx" and config.forward_process,
            onnx_threads=config.onnx_threads,
        )
        self.ready = False
        self.preload_errors: dict[str, str] = {}
        self._full_refs: dict[str, str] = {}  # full ref text → its canonical form
        # runtime="onnx": exported ONNX bytes per ref (None: export failed, serve torch),
        # kept across evictions so a reload does not export again; bounded.
        self.onnx_models: OrderedDict[str, bytes | None] = OrderedDict()
        self._onnx_lock = threading.Lock()
        if config.runtime == "onnx":
            import importlib.util

            if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
                raise ConfigError(
                    "serve runtime 'onnx' needs the onnx and onnxruntime packages",
                    hint="pip install 'tsloom[onnx]', or use runtime 'torch'",
                )

    # -- loading

    def _load(self, ref: str) -> Any:
        from tsloom.registry import load_servable, records

        if records.get(self.settings, ref) is None:
            raise self.not_found(ref)
        model = load_servable(ref, settings=self.settings)
        if self.config.runtime == "onnx":
            self._use_onnx(ref, model)
        return model

    def _use_onnx(self, ref: str, model: Any) -> None:
        """Export the model to ONNX (once per ref) and give it an ``onnx_predictor`` that
        the batcher uses instead of the torch forward pass; on failure, keep torch."""
        from tsloom.forecast.onnx_export import OnnxPredictor, export_onnx

        with self._onnx_lock:
            known = ref in self.onnx_models
            data = self.onnx_models.get(ref)
            if known:
                self.onnx_models.move_to_end(ref)
        predictor = None
        if known and data is None:
            return  # export failed before (and was logged): torch
        try:
            if data is None:
                data = export_onnx(model.model, output=model.params.output)
            predictor = OnnxPredictor(data, threads=self.config.onnx_threads)
        except Exception as exc:
            data = None
            log.warning("ONNX export of %s failed, serving it with torch: %s", ref, exc)
        with self._onnx_lock:
            self.onnx_models[ref] = data
            self.onnx_models.move_to_end(ref)
            while len(self.onnx_models) > max(4 * self.config.cache_size, 64):
                self.onnx_models.popitem(last=False)
        if predictor is not None:
            model.onnx_predictor = predictor

    def model(self, ref: str) -> Any:
        return self.cache.get(ref)

    # -- resolution

    def known_refs(self) -> list[str]:
        from tsloom.registry import records

        return records.refs(self.settings)

    def not_found(self, text: str, message: str | None = None) -> NotFound:
        known = self.known_refs()
        by_param = {r.rsplit("/", 1)[-1]: r for r in known}
        close = difflib.get_close_matches(text, [*known, *by_param], n=5, cutoff=0.5)
        matches = list(dict.fromkeys(by_param.get(c, c) for c in close))
        if not matches:  # same integration/target: a likelier neighbour than nothing
            head = "/".join(text.split("/")[:2])
            matches = [r for r in known if head and r.startswith(head)][:5]
        return NotFound(
            message or f"no registered model {text}",
            hint=("nearest: " + ", ".join(matches))
            if matches
            else "GET /v1/models lists the registered models",
            matches=matches,
        )

    def resolve(self, text: str, stage: str | None = None) -> str:
        """A full ref from a full ref, a param id prefix, an alias
        ``<iid>/<target>[/<method>]/<stage>``, or ``<iid>/<target>[/<method>]`` with
        `stage`. Aliases and prefixes are looked up in the registry (cached `alias_ttl_s`)."""
        text = text.strip().strip("/")
        parts = text.split("/")
        if stage is None and len(parts) in (3, 4) and parts[-1] in STAGE_NAMES:
            stage, parts = parts[-1], parts[:-1]
        if stage is not None:
            if stage not in STAGE_NAMES:
                raise NotFound(f"unknown stage {stage!r}", hint=f"use one of {STAGE_NAMES}")
            if len(parts) == 4:  # a full ref with ?stage=: its integration/target/method
                parts = parts[:3]
            if len(parts) not in (2, 3):
                raise self.not_found(text, f"{text!r} is not <integration_id>/<target>[/<method>]")
            key = (*parts, stage)
            found = self.aliases.get(key)
            if found is None:
                found = self._by_stage(parts, stage, text)
                self.aliases.put(key, found)
            return found
        if len(parts) == 4:
            from tsloom.registry import Ref

            try:
                return str(Ref.parse(text))
            except InvalidNameError as exc:
                raise self.not_found(text, exc.message) from exc
        found = self.aliases.get(("prefix", text))
        if found is None:
            from tsloom.registry import records

            try:
                found = str(records.resolve(self.settings, text))
            except TsloomError as exc:
                raise self.not_found(text, exc.message) from exc
            self.aliases.put(("prefix", text), found)
        return found

    def _by_stage(self, parts: list[str], stage: str, text: str) -> str:
        from tsloom.registry import records
        from tsloom.registry.browse import _matches_target

        iid, target = parts[0], parts[1]
        method = parts[2] if len(parts) == 3 else None
        rows = [
            r
            for r in records.all_rows(self.settings, integration_id=iid, method=method, stage=stage)
            if target in (r["target_segment"], r["target"]) or _matches_target(target, r["target"])
        ]
        if not rows:
            raise self.not_found(
                text, f"no {stage} model for {'/'.join(parts)}" + (f" ({text})" if text else "")
            )
        rows.sort(key=lambda r: (r["updated_at"] or "", r["created_at"] or ""))
        return rows[-1]["ref"]

    def full_ref(self, text: str) -> str | None:
        """`text` checked as a full ref (``<iid>/<target>/<method>/<param_id>``, no I/O:
        only parsed, and remembered), or None when it is anything else — an alias, a
        prefix, or not a valid ref (:meth:`resolve` says why)."""
        found = self._full_refs.get(text)
        if found is None:
            parts = text.strip().strip("/").split("/")
            if len(parts) != 4 or parts[-1] in STAGE_NAMES:
                return None
            try:
                found = self.resolve(text)
            except TsloomError:
                return None
            if len(self._full_refs) >= 4096:
                self._full_refs.clear()
            self._full_refs[text] = found
        return found

    async def aresolve(self, text: str, stage: str | None = None) -> str:
        if stage is None and (found := self.full_ref(text)) is not None:
            return found
        return await run_in_threadpool(self.resolve, text, stage)

    async def amodel(self, ref: str) -> Any:
        return self.cache.peek(ref) or await run_in_threadpool(self.cache.get, ref)

    def forget(self, ref: str | None = None) -> list[str]:
        """Drop cached resolutions, and the model `ref` (or every model)."""
        self.aliases.clear()
        if ref is None:
            return self.cache.clear()
        return [ref] if self.cache.evict(ref) else []

    def preload(self) -> None:
        self.preload_errors = {}
        for text in self.config.preload:
            try:
                self.cache.get(self.resolve(text))
            except Exception as exc:
                log.error("preloading %s failed: %s", text, exc)
                self.preload_errors[text] = getattr(exc, "message", None) or str(exc)
        self.ready = True

    async def apreload(self) -> None:
        """:meth:`preload` off the event loop, then hand the resident models to the
        batcher's forward-pass process, so that neither waits for the first requests."""
        await run_in_threadpool(self.preload)
        self.batcher.prepare([self.cache.peek(ref) for ref in self.cache.resident()])


# ------------------------------------------------------------------ request helpers


def _parse_ts(value: Any, row: int) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str):
        raise _invalid(["rows", row, "ts"], f"ts must be an ISO 8601 string, not {value!r}")
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _invalid(["rows", row, "ts"], f"ts {value!r} is not an ISO 8601 time") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _invalid(loc: list[Any], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


def rows_to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """JSON readings → a frame of ``ts`` (UTC) and Float64 columns; 422 on bad values."""
    columns: dict[str, None] = {}
    stamps = []
    for i, row in enumerate(rows):
        if "ts" not in row:
            raise _invalid(["rows", i], "each row needs a ts")
        stamps.append(_parse_ts(row["ts"], i))
        for name, value in row.items():
            if name == "ts":
                continue
            columns.setdefault(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise _invalid(["rows", i, name], f"{name} must be a number or null")
    data: dict[str, pl.Series] = {"ts": pl.Series("ts", stamps, dtype=pl.Datetime("us", "UTC"))}
    for name in columns:
        data[name] = pl.Series(name, [row.get(name) for row in rows], dtype=pl.Float64)
    return pl.DataFrame(data)


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorBody(error=kind, message=message, **extra).model_dump(exclude_none=True)
    return JSONResponse(jsonable_encoder(body), status_code=status)


# ------------------------------------------------------------------ ASGI middleware


def _overloaded_response(exc: Overloaded) -> JSONResponse:
    response = _error(429, "overloaded", str(exc), hint="retry after a moment")
    response.headers["Retry-After"] = "1"
    return response


class GuardMiddleware:
    """Outermost layer of the FastAPI stack: metrics for every request, then API keys
    (before anything else, so an unauthenticated write is 401 whatever it names), then the
    body size limit. Only the prediction fast lane (:mod:`tsloom.serve.fast_lane`) sits in
    front; it makes the same checks, and declines to here whenever one fails."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status = {"code": 500, "sent": False}

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
            await send(message)

        try:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            needs_key = is_write(method, path) or (
                state.config.read_requires_key and not is_open(path)
            )
            if needs_key and not state.keys.accepts(headers.get("authorization")):
                given = headers.get("authorization") is not None
                response = _error(
                    401,
                    "unauthorized",
                    "a valid API key is required" if not given else "the API key is not accepted",
                    hint="send `Authorization: Bearer <key>`",
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send_tracked)
                return
            limit = state.config.max_body_bytes
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await self._too_large(scope, receive, send_tracked, limit)
                return
            seen = 0

            async def receive_limited() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise BodyTooLarge
                return message

            try:
                await self.app(scope, receive_limited, send_tracked)
            except BodyTooLarge:
                if status["sent"]:
                    raise
                await self._too_large(scope, receive, send_tracked, limit)
        finally:
            label = getattr(scope.get("route"), "path", None) or "unmatched"
            state.metrics.requests.labels(method, label, str(status["code"])).inc()
            state.metrics.latency.labels(method, label).observe(time.perf_counter() - started)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = _error(
            413,
            "payload_too_large",
            f"the request body exceeds {limit} bytes",
            hint="send fewer rows per request, or raise max_body_bytes",
        )
        await response(scope, receive, send)


# ------------------------------------------------------------------ the app


def create_app(settings: Settings | None = None, config: ServeConfig | None = None) -> FastAPI:
    """The server over the registry of `settings` (default: from the environment)."""
    settings = settings or load_settings()
    config = config or ServeConfig()
    state = ServerState(settings, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.apreload()
        # What exists now (libraries, preloaded models) lives as long as the server: out
        # of the collector's sight, a full collection no longer walks it — on a server
        # with many models resident each took hundreds of milliseconds, stalling requests.
        gc.freeze()
        switch = sys.getswitchinterval()
        if config.switch_interval_ms > 0:
            sys.setswitchinterval(config.switch_interval_ms / 1000.0)
        try:
            yield
        finally:
            sys.setswitchinterval(switch)
            await state.batcher.close()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = ServeApp(
        title="tsloom",
        summary="Forecasts from the tsloom model registry",
        version="1",
        lifespan=lifespan,
    )
    app.state.tsloom = state
    app.add_middleware(GuardMiddleware, state=state)
    _handlers(app, state)
    app.predict_lane = PredictLane(state, app.exception_handlers, _overloaded_response)
    _routes(app, state)
    from tsloom.ui import mount_ui

    mount_ui(app, state)  # the web UI under /ui, and / → /ui
    return app


def _handlers(app: FastAPI, state: ServerState) -> None:
    from tsloom.registry import IntegrityError, WindowError

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", exc.message, hint=exc.hint, matches=exc.matches)

    @app.exception_handler(WindowError)
    async def _window(request: Request, exc: WindowError) -> JSONResponse:
        return _error(422, "bad_window", exc.message, hint=exc.hint)

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        log.error("integrity check failed: %s", exc.message)
        return _error(
            500,
            "model_integrity",
            exc.message,
            hint=exc.hint or "the model's files do not match their manifest; re-register it",
        )

    @app.exception_handler(TsloomError)
    async def _tsloom(request: Request, exc: TsloomError) -> JSONResponse:
        return _error(422, "invalid", exc.message, hint=exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return _error(422, "invalid_request", summary or "invalid request", detail=errors)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _overloaded_response(exc)


_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()},
        ARROW_STREAM: {
            "schema": {"type": "string", "format": "binary"},
            "description": "an Arrow IPC stream of ts + the model's features (bulk)",
        },
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 404, 413, 422, 429, 500)
}


def _routes(app: FastAPI, state: ServerState) -> None:
    # -------------------------------------------------------------- probes

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        from tsloom.db.engine import session_scope

        problems: dict[str, Any] = {}
        if not state.ready:
            problems["preload"] = "in progress"
        elif state.preload_errors:
            problems["preload"] = state.preload_errors
        try:
            import sqlalchemy as sa

            def ping() -> None:
                with session_scope(state.settings.db_url) as s:
                    s.execute(sa.text("select 1"))

            await run_in_threadpool(ping)
        except Exception as exc:
            problems["database"] = str(exc).splitlines()[0]
        body = {
            "status": "ready" if not problems else "not ready",
            "resident": len(state.cache.resident()),
            "forward_process": state.batcher.forward_process_state(),
            **({"problems": problems} if problems else {}),
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    # -------------------------------------------------------------- registry reads

    @app.get("/v1/models", tags=["models"], responses=_ERRORS)
    async def search_models(
        tables: Annotated[list[str] | None, Query(description="database.table names")] = None,
        integration_id: str | None = None,
        target: str | None = None,
        method: str | None = None,
        stage: str | None = None,
        metric: str | None = None,
        max_value: float | None = None,
        min_value: float | None = None,
        tag: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        """The search tree integration id → target → method → param id → model."""
        from tsloom.registry import search

        names = [t.strip() for raw in tables or [] for t in raw.split(",") if t.strip()]
        return await run_in_threadpool(
            lambda: search(
                names or None,
                integration_id=integration_id,
                target=target,
                method=method,
                stage=stage,
                metric=metric,
                max_value=max_value,
                min_value=min_value,
                tags=tag or (),
                settings=state.settings,
            )
        )

    @app.post(
        PREDICT_ROUTE,
        tags=["models"],
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={"requestBody": _PREDICT_BODY},
    )
    async def predict(ref: str, request: Request, stage: str | None = None) -> Response:
        """Forecast from raw readings (JSON rows, or an Arrow IPC stream) or from the
        lake's newest window (``{"latest": true}``); `ref` may be an alias such as
        ``<iid>/<target>/production``."""
        raw = await request.body()
        full = await state.aresolve(ref, stage)
        state.batcher.check(full)  # overloaded: refuse before loading or parsing
        model = await state.amodel(full)
        if request.headers.get("content-type", "").split(";")[0].strip() == ARROW_STREAM:
            try:
                window = pl.read_ipc_stream(raw)
            except Exception as exc:
                raise _invalid([], f"not an Arrow IPC stream: {exc}") from None
            if "ts" in window.columns:
                window = window.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        else:
            try:
                body = PredictRequest.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
                ) from None
            if body.latest:
                window = await run_in_threadpool(model.latest_window)
            else:
                rows = body.rows or []
                fast = getattr(model, "rows_window", None)
                found = fast(rows) if fast is not None else None
                if found is not None:  # the common case: no frame is built
                    out = await state.batcher.submit(full, model, found[0])
                    return _json_response(full, model, np.asarray(out), found[1])
                window = rows_to_frame(rows)  # unusual rows: this path says what is wrong
        values, last = model._window_values(window)
        out = await state.batcher.submit(full, model, values)
        return _json_response(full, model, np.asarray(out), last)

    @app.post("/v1/models/{ref:path}/promote", tags=["admin"], responses=_ERRORS)
    async def promote(
        ref: str, body: Annotated[PromoteRequest | None, Body()] = None
    ) -> dict[str, Any]:
        """Set a model's stage (API key required); aliases follow at once."""
        from tsloom.registry import promote as do_promote

        body = body or PromoteRequest()
        full = await state.aresolve(ref)
        await _must_exist(state, full)
        row = await run_in_threadpool(
            lambda: do_promote(
                full, body.stage, archive_others=body.archive_others, settings=state.settings
            )
        )
        state.aliases.clear()
        return {k: row[k] for k in ("ref", "stage", "updated_at")}

    @app.get("/v1/models/{ref:path}", tags=["models"], responses=_ERRORS)
    async def show_model(ref: str, stage: str | None = None) -> dict[str, Any]:
        """One model: parameters, metrics, lineage, files and whether they verify."""
        from tsloom.registry import show

        full = await state.aresolve(ref, stage)
        await _must_exist(state, full)
        out = await run_in_threadpool(lambda: show(full, settings=state.settings))
        out["resident"] = full in state.cache.resident()
        return out

    @app.delete("/v1/models/{ref:path}", tags=["admin"], responses=_ERRORS)
    async def delete_model(ref: str) -> dict[str, Any]:
        """Remove a model's files and row (API key required)."""
        from tsloom.registry import delete

        full = await state.aresolve(ref)
        await _must_exist(state, full)
        out = await run_in_threadpool(lambda: delete(full, settings=state.settings))
        state.forget(full)
        return out

    @app.post("/v1/admin/reload", tags=["admin"], responses=_ERRORS)
    async def reload(
        ref: Annotated[list[str] | None, Query(description="only these refs")] = None,
    ) -> dict[str, Any]:
        """Drop cached models and alias resolutions (API key required), then preload."""
        if ref:
            evicted = [r for text in ref for r in state.forget(await state.aresolve(text))]
        else:
            evicted = state.forget()
            await state.apreload()
        return {"evicted": evicted, "resident": state.cache.resident()}

    # -------------------------------------------------------------- integrations

    @app.post(
        "/v1/integrations",
        tags=["integrations"],
        response_model=IntegrationResponse,
        responses=_ERRORS,
    )
    async def integration(body: IntegrationRequest) -> IntegrationResponse:
        """The integration id (SHA-1 of the sorted, unique ``database.table`` names)."""
        from tsloom.integrate import integration_id

        return IntegrationResponse(
            integration_id=integration_id(body.tables), tables=sorted(set(body.tables))
        )


async def _must_exist(state: ServerState, ref: str) -> None:
    if state.cache.peek(ref) is not None:
        return
    from tsloom.registry import records

    if await run_in_threadpool(records.get, state.settings, ref) is None:
        raise await run_in_threadpool(state.not_found, ref)


def _json_response(ref: str, model: Any, values: np.ndarray, last: datetime | None) -> Response:
    return Response(prediction_body(ref, model, values, last), media_type="application/json")


__all__ = ["ServerState", "create_app", "rows_to_frame", "serve"]


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    settings: Settings | None = None,
    config: ServeConfig | None = None,
    log_level: str = "info",
) -> None:
    """Run the server with Uvicorn (what ``tsloom serve`` calls)."""
    import uvicorn

    uvicorn.run(create_app(settings, config), host=host, port=port, log_level=log_level)
