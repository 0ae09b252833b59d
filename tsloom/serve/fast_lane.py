"""The prediction fast lane: the common prediction — JSON rows for a resident model named
by its full ref — served in front of FastAPI, as plain ASGI.

Measured on 2 cores, FastAPI's middleware stack, routing, dependency solving and
response validation cost more per request than an LSTM's batched forward pass; Uvicorn
itself needs about 0.04 ms. The lane does only what such a request needs: the key check
when reads need one, the size limit, JSON decoding (orjson), the window check
(``RegisteredModel.rows_window``), the batcher, the answer and the metrics. Anything else
— an alias, a model not yet loaded, Arrow IPC, ``latest``, rows that need the frame path,
a missing key or a body over the limit — is declined before a byte is sent and goes
through the full app with what was read replayed, so its errors and status codes come
from one place."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tsloom.serve.answer import prediction_body
from tsloom.serve.asgi_io import BodyTooLarge, disconnected, read_body, replay
from tsloom.serve.batching import Overloaded

if TYPE_CHECKING:
    from tsloom.serve.app import ServerState

__all__ = ["PREDICT_ROUTE", "PredictLane", "ServeApp"]

log = logging.getLogger("tsloom.serve")

PREDICT_ROUTE = "/v1/models/{ref:path}/predict"
PREDICT_HEAD, PREDICT_TAIL = "/v1/models/", "/predict"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class PredictLane:
    """``await lane(scope, receive, send)`` → None when it answered, or the receive the
    full app must use (what the lane read, replayed) when it declined."""

    def __init__(
        self,
        state: ServerState,
        handlers: Mapping[Any, Callable[..., Any]],
        overloaded: Callable[[Overloaded], Response],
    ) -> None:
        self.state = state
        self.handlers = handlers  # the app's exception handlers, by exception class
        self.overloaded = overloaded  # Overloaded → the app's 429 response
        self.served = 0  # predictions answered here (for tests and stats)
        metrics = state.metrics
        self._ok = metrics.requests.labels("POST", PREDICT_ROUTE, "200")
        self._latency = metrics.latency.labels("POST", PREDICT_ROUTE)

    @staticmethod
    def wants(scope: Scope) -> bool:
        path = scope["path"]
        return (
            scope["method"] == "POST"
            and path.startswith(PREDICT_HEAD)
            and path.endswith(PREDICT_TAIL)
            and not scope.get("query_string")
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        started = time.perf_counter()
        state = self.state
        length = auth = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if value.split(b";", 1)[0].strip().lower() != b"application/json":
                    return receive  # Arrow IPC, or something the app should refuse
            elif name == b"content-length":
                length = value
            elif name == b"authorization":
                auth = value
        config = state.config
        if config.read_requires_key and not state.keys.accepts(
            auth.decode("latin-1") if auth is not None else None
        ):
            return receive  # the app answers 401
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return receive  # the app answers 413 (or whatever a bad length deserves)
        full = state.full_ref(scope["path"][len(PREDICT_HEAD) : -len(PREDICT_TAIL)])
        if full is None:
            return receive
        model = state.cache.peek(full)
        window = getattr(model, "rows_window", None)
        if window is None:  # not resident (the app loads it), or no fast path
            return receive
        try:
            state.batcher.check(full)  # overloaded: refuse before reading the body
        except Overloaded as exc:
            await self._respond(scope, send, self.overloaded(exc), started)
            return None
        try:
            raw, messages = await read_body(receive, config.max_body_bytes)
        except BodyTooLarge as exc:
            return replay(exc.messages, receive)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return replay(messages, receive)
        if type(body) is not dict or len(body) != 1 or "rows" not in body:
            return replay(messages, receive)  # {"latest": true}, extra keys: the app decides
        found = window(body["rows"])
        if found is None:
            return replay(messages, receive)  # the frame path says precisely what is wrong
        # The rows (a hundred-odd objects) are no longer needed: free them now rather than
        # after the batch. Held by every request waiting for its batch, they kept the
        # collector's young generation full and made its passes several times slower.
        del body
        try:
            out = await state.batcher.submit(full, model, found[0])
            answer = prediction_body(full, model, out, found[1])
        except Exception as exc:
            await self._respond(scope, send, await self._handle(scope, exc), started)
            return None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        self.served += 1
        self._ok.inc()
        self._latency.observe(time.perf_counter() - started)
        return None

    async def _handle(self, scope: Scope, exc: Exception) -> Response:
        """The app's response to `exc`, as its exception handlers give it (a 500 for
        anything they do not cover, logged with its traceback)."""
        for kind in type(exc).__mro__:
            handler = self.handlers.get(kind)
            if handler is not None:
                return await handler(Request(scope), exc)
        log.error("prediction failed on %s", scope["path"], exc_info=exc)
        return Response(
            orjson.dumps({"error": "internal", "message": f"{type(exc).__name__}: {exc}"}),
            status_code=500,
            media_type="application/json",
        )

    async def _respond(self, scope: Scope, send: Send, response: Response, started: float) -> None:
        await response(scope, disconnected, send)
        metrics = self.state.metrics
        metrics.requests.labels("POST", PREDICT_ROUTE, str(response.status_code)).inc()
        self._latency.observe(time.perf_counter() - started)


class ServeApp(FastAPI):
    """FastAPI with the prediction fast lane in front (``predict_lane``, set by
    :func:`tsloom.serve.create_app`)."""

    predict_lane: PredictLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.predict_lane
        if lane is not None and scope["type"] == "http" and lane.wants(scope):
            if self.root_path:  # FastAPI would set it: the lane's paths do not apply
                scope["root_path"] = self.root_path
            else:
                receive = await lane(scope, receive, send)
                if receive is None:
                    return
        await super().__call__(scope, receive, send)
