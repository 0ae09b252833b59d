"""Dynamic batching per model: concurrent predictions for one model are grouped up to
`max_batch` requests or `max_wait` seconds, then run in one forward pass on a thread pool
(never on the event loop). A model whose queue already holds `max_queue` requests refuses
new ones at once (:class:`Overloaded`), and so does the whole server once `max_queue_total`
predictions are outstanding across all its models (queued, or popped into a batch and
waiting for or running on the thread pool): however many models are resident, a burst
cannot grow an unbounded backlog."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsloom.serve.metrics import Metrics


class Overloaded(Exception):
    """A model's queue, or the server's (`total`), is full; the client should retry later."""

    def __init__(self, key: str, pending: int, *, total: bool = False) -> None:
        if total:
            text = f"the server has {pending} predictions outstanding across all models"
        else:
            text = f"model {key} has {pending} predictions waiting"
        super().__init__(f"{text}; retry shortly")
        self.key = key
        self.pending = pending
        self.total = total


def predict_batch(model: Any, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Original-unit forecasts for several validated windows (input_steps, features) of
    one registered model in one forward pass; the same arithmetic as
    ``RegisteredModel.predict`` does for one window. A model loaded by a server with
    ``runtime="onnx"`` carries an ``onnx_predictor`` that replaces the torch forward pass."""
    import torch

    from tsloom.forecast.training import predict_scaled

    p = model.params
    x = np.stack([np.asarray(w, dtype=np.float64) for w in windows])
    n, steps, feats = x.shape
    scaled = model.scaler.transform(x.reshape(-1, feats)).reshape(n, steps, feats)
    onnx = getattr(model, "onnx_predictor", None)  # set at load when runtime="onnx"
    if onnx is not None:
        out = onnx(scaled)
    else:
        with torch.inference_mode():
            out = predict_scaled(model.model, scaled, p)
    return list(model.scaler.inverse(out, p.target_index))


@dataclass
class _Lane:
    items: deque = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    loop: asyncio.AbstractEventLoop | None = None


class Batcher:
    """One lane (queue + worker task) per model key; ``await submit(key, model, window)``."""

    def __init__(
        self,
        executor: Executor,
        *,
        max_batch: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 256,
        max_queue_total: int | None = None,
        metrics: Metrics | None = None,
        run: Callable[[Any, Sequence[np.ndarray]], list[np.ndarray]] = predict_batch,
    ) -> None:
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.max_queue_total = max_queue_total  # None: no bound across models
        self.metrics = metrics
        self.run = run
        self._lanes: dict[str, _Lane] = {}
        self._outstanding = 0  # admitted and not yet answered, across all lanes
        self.batches: list[int] = []  # recent batch sizes (bounded), for tests and stats

    def pending(self, key: str | None = None) -> int:
        if key is not None:
            lane = self._lanes.get(key)
            return len(lane.items) if lane else 0
        return sum(len(lane.items) for lane in self._lanes.values())

    @property
    def outstanding(self) -> int:
        """Predictions admitted and not yet answered, across all models."""
        return self._outstanding

    def check(self, key: str | None = None) -> None:
        """Raise :class:`Overloaded` if a prediction for `key` (or for any model) would be
        refused now — so a caller can refuse before parsing the request."""
        if self.max_queue_total is not None and self._outstanding >= self.max_queue_total:
            if self.metrics:
                self.metrics.rejected.inc()
            raise Overloaded(key or "*", self._outstanding, total=True)
        lane = self._lanes.get(key) if key is not None else None
        if lane is not None and len(lane.items) >= self.max_queue:
            if self.metrics:
                self.metrics.rejected.inc()
            raise Overloaded(key, len(lane.items))

    async def submit(self, key: str, model: Any, window: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        self.check(key)
        lane = self._lanes.get(key)
        if lane is None or lane.loop is not loop:  # first use, or a new event loop
            lane = self._lanes[key] = _Lane(loop=loop)
        if lane.task is None or lane.task.done():
            lane.task = loop.create_task(self._work(key, lane))
        future: asyncio.Future = loop.create_future()
        lane.items.append((model, window, future))
        self._outstanding += 1
        if self.metrics:
            self.metrics.queued.inc()
        lane.ready.set()
        if len(lane.items) >= self.max_batch:
            lane.full.set()
        try:
            return await future
        finally:
            self._outstanding -= 1

    async def _work(self, key: str, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await lane.ready.wait()
            if len(lane.items) < self.max_batch and self.max_wait > 0:
                lane.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.full.wait(), self.max_wait)
            take = min(self.max_batch, len(lane.items))
            batch = [lane.items.popleft() for _ in range(take)]
            if not lane.items:
                lane.ready.clear()
            if self.metrics:
                self.metrics.queued.dec(len(batch))
            batch = [item for item in batch if not item[2].done()]  # cancelled callers
            if not batch:
                continue
            self.batches.append(len(batch))
            del self.batches[:-1000]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self._run_safely, batch)
            except Exception as exc:
                results = [exc] * len(batch)
            if self.metrics:
                self.metrics.batch_size.observe(len(batch))
                self.metrics.inference.observe(time.perf_counter() - started)
            for (_model, _window, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _run_safely(self, batch: list[tuple[Any, np.ndarray, Any]]) -> list[Any]:
        """Run the batch; if it fails, run each request alone so one bad window only fails
        its own request."""
        model = batch[0][0]
        if all(item[0] is model for item in batch):
            try:
                return list(self.run(model, [item[1] for item in batch]))
            except Exception:
                if len(batch) == 1:
                    raise
        out: list[Any] = []
        for item_model, window, _future in batch:
            try:
                out.append(self.run(item_model, [window])[0])
            except Exception as exc:
                out.append(exc)
        return out

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for lane in self._lanes.values():
            for _m, _w, future in lane.items:
                if not future.done():
                    future.cancel()
        self._lanes.clear()
