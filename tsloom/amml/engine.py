"""The AMML execution engine: a compiled workflow as a graph of workers joined by bounded
queues, each component in its own thread.

* **Graph.** `plan(components)` turns the compiled components (`inst.inputs` are
  ``(component, port)`` pairs) into edges: output port → the inboxes that read it. An
  output port nobody reads is an *end*: what reaches it is the run's result.
* **Inboxes.** Every non-ingress component has one inbox, a bounded queue of
  ``(input port, frame)`` items; a ``None`` frame marks the end of one input edge. A
  producer blocks while a consumer's inbox is full (back-pressure), so a fast source runs
  at most ``queue_size`` batches ahead of its slowest reader. Every worker drains its
  inbox unconditionally (a join buffers internally), so fan-out and diamonds cannot
  deadlock.
* **Stopping.** ``ctx.stop`` (Ctrl-C, the caller's stop event) asks ingresses to end; the
  rest of the graph then drains normally — `finish` runs, sinks flush. ``abort`` (a
  component failed) stops every worker at once: no `finish`, only `close`.

`Worker.run` is the loop of one component and is shared with process mode
(`tsloom.amml.process_mode`), which gives it inboxes that carry Arrow IPC bytes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from tsloom.amml.base import Component, Emitted, Ingress
from tsloom.amml.bytecode import ComponentInstance
from tsloom.amml.errors import AmmlError, AmmlRuntimeError
from tsloom.errors import TsloomError

POLL_S = 0.05  # how often blocked puts and gets look at the abort flag


class Aborted(Exception):
    """Raised inside a worker when another component failed."""


@dataclass
class Plan:
    """Who reads whom: `consumers[i][port]` are the ``(component, input port)`` pairs that
    read output `port` of component `i`; `n_inputs[i]` its number of input edges."""

    consumers: dict[int, dict[int, list[tuple[int, int]]]]
    n_inputs: dict[int, int]


def plan(components: Sequence[ComponentInstance]) -> Plan:
    consumers: dict[int, dict[int, list[tuple[int, int]]]] = {c.index: {} for c in components}
    n_inputs = {c.index: len(c.inputs) for c in components}
    for c in components:
        for dst_port, (src, src_port) in enumerate(c.inputs):
            consumers[src].setdefault(src_port, []).append((c.index, dst_port))
    return Plan(consumers, n_inputs)


def input_names(inst: ComponentInstance, insts: Sequence[ComponentInstance]) -> list[str]:
    """The flow name of each input of `inst` (as `join a b` names them), or ``in<k>``."""
    names = []
    for k, (src, port) in enumerate(inst.inputs):
        named = insts[src].outputs.get(port)
        names.append(named[0] if named else f"in{k}")
    return names


@dataclass
class Stats:
    """What one component did in a run."""

    index: int
    name: str
    line: int | None
    column: int | None
    batches_in: int = 0
    batches_out: int = 0
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0  # busy in open/batches/process/finish/close


class Outbox(Protocol):
    """Where a producer puts ``(port, frame)`` items (a consumer's inbox)."""

    def put(self, item: Any, timeout: float | None = None) -> None: ...


class Inbox(Protocol):
    """What a worker reads its ``(port, frame)`` items from."""

    def get(self, timeout: float | None = None) -> Any: ...


def put(box: Outbox, item: Any, abort: threading.Event | Any) -> None:
    """Put with back-pressure, giving up when the run is aborted."""
    while True:
        try:
            box.put(item, timeout=POLL_S)
            return
        except queue.Full:
            if abort.is_set():
                raise Aborted from None


def get(box: Inbox, abort: threading.Event | Any) -> Any:
    while True:
        try:
            return box.get(timeout=POLL_S)
        except queue.Empty:
            if abort.is_set():
                raise Aborted from None


def as_amml_error(component: Component, exc: BaseException) -> AmmlError:
    """Any failure of a component as an error naming it and its place in the source."""
    if isinstance(exc, AmmlError) and exc.line is not None:
        return exc
    if isinstance(exc, AmmlError):
        return component.fail(exc.reason, exc.hint)
    if isinstance(exc, TsloomError):
        return component.fail(exc.message, exc.hint)
    if isinstance(exc, pl.exceptions.PolarsError):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return component.fail(f"{type(exc).__name__}: {text}")
    return component.fail(f"{type(exc).__name__}: {exc}")


@dataclass
class Worker:
    """Runs one component: reads its inbox (or its ingress), sends what it emits.

    `send(port, frame)` delivers a frame (or the end marker None) to output `port`;
    `on_error(error)` records a failure (the first one wins) and aborts the run."""

    component: Component
    inbox: Inbox | None
    n_inputs: int
    ports: Iterable[int]
    send: Callable[[int, pl.DataFrame | None], None]
    on_error: Callable[[AmmlError], None]
    abort: Any
    batch_rows: int | None = None
    stats: Stats = field(init=False)

    def __post_init__(self) -> None:
        inst = self.component.inst
        self.stats = Stats(inst.index, inst.name, inst.line, inst.column)
        self.ports = list(self.ports)

    def run(self) -> None:
        comp = self.component
        try:
            self._timed(comp.open)
            if isinstance(comp, Ingress):
                self._pump()
            else:
                self._consume()
            if not self.abort.is_set():
                self._emit(self._timed(lambda: list(comp.finish())))
        except Aborted:
            pass  # another worker failed or the run was stopped hard: only close() is due
        except BaseException as exc:
            self.on_error(as_amml_error(comp, exc))
        finally:
            try:
                self._timed(comp.close)
            except BaseException as exc:
                self.on_error(as_amml_error(comp, exc))
            if not self.abort.is_set():
                for port in self.ports:
                    try:
                        self.send(port, None)
                    except Aborted:
                        break

    def _timed(self, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.stats.seconds += time.perf_counter() - t0

    def _pump(self) -> None:
        batches = iter(self.component.batches())  # type: ignore[attr-defined]
        try:
            stop = self.component.ctx.stop
            while not (self.abort.is_set() or stop.is_set()):
                batch = self._timed(lambda: next(batches, None))
                if batch is None:
                    return
                if self.batch_rows and batch.height > self.batch_rows:
                    self._emit(
                        batch.slice(o, self.batch_rows)
                        for o in range(0, batch.height, self.batch_rows)
                    )
                else:
                    self._emit((batch,))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _consume(self) -> None:
        assert self.inbox is not None
        remaining = self.n_inputs
        comp = self.component
        while remaining:
            port, frame = get(self.inbox, self.abort)
            if frame is None:
                remaining -= 1
                ended = getattr(comp, "input_ended", None)
                if ended is not None and remaining:
                    self._emit(self._timed(lambda p=port, f=ended: list(f(p))))
                continue
            self.stats.batches_in += 1
            self.stats.rows_in += frame.height
            self._emit(self._timed(lambda f=frame, p=port: list(comp.process(f, p))))

    def _emit(self, out: Iterable[Emitted]) -> None:
        for item in out:
            port, frame = (0, item) if isinstance(item, pl.DataFrame) else item
            if frame.height == 0:
                continue
            self.stats.batches_out += 1
            self.stats.rows_out += frame.height
            self.send(port, frame)


class Run:
    """Shared state of one run: the first error, the abort flag, results by end."""

    def __init__(self, abort: Any, stop: Any) -> None:
        self.abort, self.stop = abort, stop
        self.error: AmmlError | None = None
        self._lock = threading.Lock()

    def fail(self, error: AmmlError) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        self.abort.set()
        self.stop.set()


def run_threads(
    components: list[Component],
    graph: Plan,
    *,
    queue_size: int,
    batch_rows: int | None,
    keep_results: bool,
    on_interrupt: Callable[[], None],
    run: Run,
    caller_stop: threading.Event | None = None,
) -> tuple[dict[tuple[int, int], list[pl.DataFrame]], list[Stats]]:
    """Run every component in its own thread; return the frames at the ends and the stats.

    KeyboardInterrupt in the waiting (main) thread calls `on_interrupt` (which sets the stop
    flag) and keeps waiting for the graph to drain; a second one aborts."""
    inboxes: dict[int, queue.Queue] = {
        c.inst.index: queue.Queue(maxsize=queue_size) for c in components if c.inst.inputs
    }
    ends: dict[tuple[int, int], list[pl.DataFrame]] = {}
    ends_lock = threading.Lock()
    workers = []
    for comp in components:
        i = comp.inst.index
        readers = graph.consumers[i]

        def send(port: int, frame: pl.DataFrame | None, i=i, readers=readers) -> None:
            targets = readers.get(port)
            if not targets:
                if frame is not None and keep_results:
                    with ends_lock:
                        ends.setdefault((i, port), []).append(frame)
                return
            for dst, dst_port in targets:
                put(inboxes[dst], (dst_port, frame), run.abort)

        ports = sorted(set(readers) | {0})
        workers.append(
            Worker(
                comp,
                inboxes.get(i),
                graph.n_inputs[i],
                ports,
                send,
                run.fail,
                run.abort,
                batch_rows if isinstance(comp, Ingress) else None,
            )
        )
    threads = [
        threading.Thread(target=w.run, name=f"amml-{w.stats.name}-{w.stats.index}", daemon=True)
        for w in workers
    ]
    for t in threads:
        t.start()
    interrupted = 0
    for t in threads:
        while t.is_alive():
            try:
                if caller_stop is not None and caller_stop.is_set() and not run.stop.is_set():
                    run.stop.set()
                t.join(0.1)
            except KeyboardInterrupt:
                interrupted += 1
                if interrupted == 1:
                    on_interrupt()
                else:
                    run.abort.set()
    return ends, [w.stats for w in workers]


def runtime_error(inst: ComponentInstance, source: str, message: str, hint: str | None = None):
    """An error naming `inst` and its place in `source` (before any component exists)."""
    return AmmlRuntimeError(
        f"{inst.name}: {message}",
        hint,
        source=source,
        line=inst.line,
        column=inst.column,
        width=len(inst.name),
    )
