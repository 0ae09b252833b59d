"""Dynamic batching per model: concurrent predictions for one model are grouped up to
`max_batch` requests or `max_wait` seconds, then run in one forward pass on a thread pool —
or, when the model's forward pass is known to be short (under `inline_s` for the batch),
on the event loop itself, where it costs less than the hand-off. A model whose queue
already holds `max_queue` requests refuses new ones at once (:class:`Overloaded`), and so
does the whole server once `max_queue_total` predictions are outstanding across all its
models (queued, or popped into a batch and waiting for or running): however many models
are resident, a burst cannot grow an unbounded backlog."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from tsloom.serve.forward_process import ForwardProcess, ForwardProcesses, NotRunHere, can_run
from tsloom.serve.metrics import Metrics

INLINE_S = 0.0  # a batch expected to run within this runs on the event loop (0: never)


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
    if len(windows) == 1:
        x = np.asarray(windows[0], dtype=np.float64)[None]
    else:
        x = np.stack([np.asarray(w, dtype=np.float64) for w in windows])
    onnx = getattr(model, "onnx_predictor", None)  # set at load when runtime="onnx"
    forward = onnx if onnx is not None else functools.partial(_torch_forward, model)
    return list(model.scaler.around(forward, x, model.params.target_index))


def _torch_forward(model: Any, scaled: np.ndarray) -> np.ndarray:
    """The registered network on scaled windows: what ``predict_scaled`` does."""
    import torch  # only here: the ONNX path needs neither import (each costs per call)

    from tsloom.forecast.training import _summarise, predict_scaled

    net, p = model.model, model.params
    if net.training or len(scaled) > 4096:  # predict_scaled puts it in eval mode, in chunks
        with torch.inference_mode():
            return predict_scaled(net, scaled, p)
    # what predict_scaled does for one chunk, without walking the modules each time
    device = next((q.device for q in net.parameters()), torch.device("cpu"))
    with torch.inference_mode():
        y = net(torch.as_tensor(scaled.astype(np.float32), device=device))
        if p.output != "step" and getattr(net, "trainable", True) is False:
            y = _summarise(y, p.output)
        return y.cpu().numpy()


def _failed(group: list, exc: BaseException) -> list[tuple[list[Any], None]]:
    """The outcomes of a group that failed as a whole: every caller gets `exc`."""
    return [([exc] * len(batch), None) for _lane, batch in group]


class _Partner:
    """A thread that runs one list of batches while the event loop runs another."""

    def __init__(self, run: Callable[[list], list]) -> None:
        self._run = run
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._work, name="tsloom-partner", daemon=True).start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._done.put((self._run(job), None))
            except BaseException as exc:  # handed back to the loop
                self._done.put((None, exc))

    def start(self, group: list) -> None:
        self._jobs.put(group)

    def wait(self) -> list:
        out, exc = self._done.get()
        if exc is not None:
            raise exc
        return out

    def close(self) -> None:
        self._jobs.put(None)


class _Lane:
    """One model's queue and the state of its batches (all touched on the event loop)."""

    __slots__ = ("busy", "cost", "cost_n", "handle", "items", "lone", "loop", "urgent")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.items: deque = deque()
        self.loop = loop
        self.handle: asyncio.Handle | None = None  # the scheduled flush, if any
        self.urgent = False  # the scheduled flush runs at once (a full batch)
        self.busy = False  # a batch is running (on the pool, or in this turn's inline group)
        self.cost: float | None = None  # seconds the last batch took to run
        self.cost_n = 1  # and how many requests it held
        self.lone = False  # the last batch held one request: waiting found no company


class Batcher:
    """One lane (queue) per model key; ``await submit(key, model, window)``.

    A lane's first request arms a timer of `max_wait`; the batch closes when it fires or
    when `max_batch` requests are queued, whichever comes first (timer handles on the event
    loop, no task per lane). While a lane's batch runs, its next requests queue up and form
    the next batch. After a batch of one (no company came), the next batch closes at the
    event loop's next turn instead of waiting — with requests spread over many models,
    waiting only adds latency — until a batch holds several again.

    A batch runs on the event loop itself when its model's last batch, scaled linearly to
    this batch's size, ran within `inline_s` (`ServeConfig.inline_ms`; off by default);
    otherwise on `executor` (a model's
    first batch always does, to be measured). For small models the hand-off costs more than
    it saves: the thread's Python code contends with the loop for the GIL, and measured on
    2 cores, running batches of a 0.25 ms LSTM on the loop served 10–20 % more requests/s
    at a lower p99 with less CPU per request; a slow model stays off the loop. Batches
    closed in the same turn of the loop run together at the turn's end; when there are
    several, a partner thread runs half of them meanwhile — the forward passes release the
    GIL, so both cores compute while the loop pays one hand-off for the whole group (with
    requests spread over 100 models: about a quarter more requests/s, at the same CPU per
    request).

    Batches bound for the pool go there as jobs, at most `parallel` at once (the pool's
    threads); batches that become ready meanwhile wait and leave together as one job when
    one finishes, and finished jobs come back to the loop with one wake-up for however many
    finished meanwhile — with requests spread over 100 models (batches of one, all inference
    on the pool) this took the server's CPU per request from about 0.8 to 0.55 ms.

    With `forward_process`, every batch of a model with an ONNX predictor goes instead to
    a child process (:class:`~tsloom.serve.forward_process.ForwardProcesses`: one per event
    loop, started with the first such batch or by :meth:`prepare`, started again after a
    failure within a budget), which runs its forward pass with an interpreter of its own.
    A batch that process could not run — it died, or could not open the model — runs here
    as above."""

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
        inline_s: float = INLINE_S,
        parallel: int = 1,
        forward_process: bool = False,
        onnx_threads: int = 1,
    ) -> None:
        self.executor = executor
        self._forward = ForwardProcesses(threads=onnx_threads) if forward_process else None
        self.parallel = max(1, parallel)  # pool jobs in flight at once (its threads)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.max_queue_total = max_queue_total  # None: no bound across models
        self.metrics = metrics
        self.run = run
        self.inline_s = inline_s  # 0: never on the event loop
        self._lanes: dict[str, _Lane] = {}
        # batches waiting for a pool job, pool jobs running, and jobs finished but not yet
        # delivered — per event loop (a test may run several loops one after another)
        self._ready: dict[asyncio.AbstractEventLoop, list] = {}
        self._inline_ready: dict[asyncio.AbstractEventLoop, list] = {}
        self._partner: _Partner | None = None
        self._in_flight: dict[asyncio.AbstractEventLoop, int] = {}
        self._returns: dict[asyncio.AbstractEventLoop, list] = {}
        self._returns_lock = threading.Lock()
        self._outstanding = 0  # admitted and not yet answered, across all lanes
        if metrics:  # read when scraped, not counted per request
            metrics.queued.set_function(self.pending)
            metrics.forward_processes.set_function(lambda: len(self.forward_processes))
        self.batches: list[int] = []  # recent batch sizes (bounded), for tests and stats
        self.inline_batches = 0  # batches run on the event loop (for tests and stats)
        self.partnered = 0  # of those, run by the partner thread while the loop waited

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
            lane = self._lanes[key] = _Lane(loop)
        future: asyncio.Future = loop.create_future()
        lane.items.append((model, window, future, loop.time()))
        self._outstanding += 1
        if not lane.busy:  # else the running batch's end schedules the next one
            if len(lane.items) >= self.max_batch:
                if not lane.urgent:
                    self._schedule(lane, 0.0)
            elif lane.handle is None:  # wait for company, unless none came last time
                self._schedule(lane, 0.0 if lane.lone else self.max_wait)
        try:
            return await future
        finally:
            self._outstanding -= 1

    def _schedule(self, lane: _Lane, delay: float) -> None:
        if lane.handle is not None:
            lane.handle.cancel()
        lane.urgent = delay <= 0
        if lane.urgent:
            lane.handle = lane.loop.call_soon(self._flush, lane)
        else:
            lane.handle = lane.loop.call_later(delay, self._flush, lane)

    def _flush(self, lane: _Lane) -> None:
        """Close a batch: run it on the loop (a fast batch of one) or hand it to the pool."""
        lane.handle = None
        lane.urgent = False
        if lane.busy or not lane.items:
            return
        take = min(self.max_batch, len(lane.items))
        batch = [lane.items.popleft() for _ in range(take)]
        batch = [item for item in batch if not item[2].done()]  # cancelled callers
        lane.lone = len(batch) == 1
        if not batch:
            self._next(lane)
            return
        self.batches.append(len(batch))
        if len(self.batches) > 2000:
            del self.batches[:-1000]
        n = len(batch)
        if self._to_process(lane, batch):
            return
        if (  # expected to take at most inline_s (linear in n: an overestimate)
            self.inline_s > 0
            and lane.cost is not None
            and lane.cost * max(1.0, n / lane.cost_n) <= self.inline_s
        ):
            lane.busy = True
            group = self._inline_ready.setdefault(lane.loop, [])
            group.append((lane, batch))
            if len(group) == 1:  # the first this turn: run them all at the turn's end
                lane.loop.call_soon(self._run_inline, lane.loop)
            return
        self._to_pool(lane, batch)

    def _to_pool(self, lane: _Lane, batch: list) -> None:
        lane.busy = True
        loop = lane.loop
        ready = self._ready.setdefault(loop, [])
        ready.append((lane, batch))
        if len(ready) == 1:  # the first since the last job left: send them at the turn's end
            loop.call_soon(self._dispatch, loop)

    def prepare(self, models: Sequence[Any]) -> None:
        """On the event loop that will serve: start the forward-pass process now (when
        enabled) and send it `models`, so the first requests do not wait for either."""
        runnable = [m for m in models if can_run(m)]
        if self._forward is not None and runnable:
            proc = self._forward.on(asyncio.get_running_loop())
            for model in runnable:
                proc.register(model)

    @property
    def forward_processes(self) -> list[ForwardProcess]:
        """The forward-pass processes alive now (none when off)."""
        return self._forward.alive() if self._forward is not None else []

    def forward_process_state(self) -> str:
        """What the forward-pass process is doing, for /readyz: off, not started yet,
        running, or failed (forward passes then run in-process)."""
        return self._forward.describe() if self._forward is not None else "off"

    def _to_process(self, lane: _Lane, batch: list) -> bool:
        """Send `batch` to the forward-pass process, if it is enabled, alive and can run
        the batch's model."""
        model = batch[0][0]
        if self._forward is None or not can_run(model):
            return False
        shape = batch[0][1].shape
        if any(item[0] is not model or item[1].shape != shape for item in batch):
            return False  # the in-process path runs such a batch request by request
        proc = self._forward.on(lane.loop)
        if not proc.alive:
            return False
        lane.busy = True
        proc.send(
            model,
            [item[1] for item in batch],
            lambda results, seconds: self._from_process(lane, batch, results, seconds),
        )
        return True

    def _from_process(self, lane: _Lane, batch: list, results: Any, seconds: float | None) -> None:
        if isinstance(results, NotRunHere):  # the child died, or cannot run this model
            self._to_pool(lane, batch)  # so it runs here: the callers still get answers
            return
        lane.busy = False
        if isinstance(results, BaseException):
            results = [results] * len(batch)
        self._deliver(lane, batch, results, seconds)

    def _run_inline(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the batches closed this turn on the loop — half of them, when there are
        several, on a partner thread at the same time: the forward passes release the GIL,
        so two cores compute while one hand-off is paid for the whole group."""
        group = self._inline_ready.pop(loop, [])
        if not group:
            return
        if len(group) > 1:
            if self._partner is None:
                self._partner = _Partner(self._run_group)
            half = len(group) // 2
            self._partner.start(group[:half])
            mine = self._run_group(group[half:])
            try:
                theirs = self._partner.wait()
            except BaseException as exc:  # the partner failed as a whole: its callers learn why
                theirs = _failed(group[:half], exc)
            outcomes = theirs + mine
        else:
            outcomes = self._run_group(group)
        self.inline_batches += len(group)
        self.partnered += len(group) // 2
        self._deliver_group(group, outcomes)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand every batch ready on `loop` to the pool as one job — unless `parallel` jobs
        are running already: then they wait, and more join them, until one finishes. With
        requests spread over many models, batches of one each would otherwise cost a
        thread hand-off and a wake-up of the loop apiece, more than a small forward pass."""
        if self._in_flight.get(loop, 0) >= self.parallel or not self._ready.get(loop):
            return
        group = self._ready.pop(loop)
        try:
            done = self.executor.submit(self._run_group, group)
        except RuntimeError as exc:  # the pool is shut down
            self._deliver_group(group, _failed(group, exc))
            return
        self._in_flight[loop] = self._in_flight.get(loop, 0) + 1
        done.add_done_callback(lambda f: self._from_thread(loop, group, f))

    def _run_group(self, group: list) -> list[tuple[list[Any], float | None]]:
        """On the pool: each batch of the group in turn, timed; a failure is its own."""
        out: list[tuple[list[Any], float | None]] = []
        for _lane, batch in group:
            started = time.perf_counter()
            try:
                out.append((self._run_safely(batch), time.perf_counter() - started))
            except Exception as exc:
                out.append(([exc] * len(batch), None))
        return out

    def _from_thread(self, loop: asyncio.AbstractEventLoop, group: list, done: Future) -> None:
        """A job finished on the pool: queue it for its event loop, and wake the loop only
        when no wake-up is pending — under load, one wake-up delivers many jobs."""
        with self._returns_lock:
            waiting = self._returns.setdefault(loop, [])
            waiting.append((group, done))
            if len(waiting) > 1:
                return  # a drain is already scheduled on that loop
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(self._drain_returns, loop)

    def _drain_returns(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._returns_lock:
            finished = self._returns.pop(loop, [])
        for group, done in finished:
            self._in_flight[loop] -= 1
            try:
                outcomes = done.result()
            except BaseException as exc:  # handed to the callers
                outcomes = _failed(group, exc)
            self._deliver_group(group, outcomes)
        self._dispatch(loop)  # what became ready meanwhile

    def _deliver_group(self, group: list, outcomes: list) -> None:
        """Each batch of a finished group to its callers; its lane is free again."""
        for (lane, batch), (results, seconds) in zip(group, outcomes, strict=True):
            lane.busy = False
            self._deliver(lane, batch, results, seconds)

    def _deliver(self, lane: _Lane, batch: list, results: list, seconds: float | None) -> None:
        if seconds is not None:
            lane.cost, lane.cost_n = seconds, len(batch)
            if self.metrics:
                self.metrics.batch_size.observe(len(batch))
                self.metrics.inference.observe(seconds)
        for (_model, _window, future, _t), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, asyncio.CancelledError):
                future.cancel()
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._next(lane)

    def _next(self, lane: _Lane) -> None:
        """After a batch: what queued meanwhile forms the next one, closed when it is full
        or when its oldest request has waited `max_wait`."""
        if lane.items and lane.handle is None:
            waited = lane.loop.time() - lane.items[0][3]
            full = len(lane.items) >= self.max_batch
            self._schedule(lane, 0.0 if full else self.max_wait - waited)

    def _run_safely(self, batch: list[tuple[Any, np.ndarray, Any, float]]) -> list[Any]:
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
        for item_model, window, _future, _t in batch:
            try:
                out.append(self.run(item_model, [window])[0])
            except Exception as exc:
                out.append(exc)
        return out

    async def close(self) -> None:
        for lane in self._lanes.values():
            if lane.handle is not None:
                lane.handle.cancel()
                lane.handle = None
            for _m, _w, future, _t in lane.items:
                if not future.done():
                    future.cancel()
            lane.items.clear()
        self._lanes.clear()
        for waiting in (self._ready, self._inline_ready):  # for a run that will not come
            for group in waiting.values():
                for _lane, batch in group:
                    for _m, _w, future, _t in batch:
                        if not future.done():
                            future.cancel()
            waiting.clear()
        if self._partner is not None:
            self._partner.close()
            self._partner = None
        if self._forward is not None:
            self._forward.close()
