"""Process mode (the source design's): every component in its own process.

Same graph and worker loop as the threaded engine (`tsloom.amml.engine`), with
multiprocessing pieces in place of the in-process ones:

* inboxes are bounded ``multiprocessing.Queue``s (back-pressure as in thread mode) carrying
  ``(input port, Arrow IPC bytes)``; ``None`` still marks the end of an input edge;
* processes are *spawned* (forking a process that runs polars' thread pool can deadlock);
  each rebuilds its component from the compiled instance, so components must be
  importable classes;
* what components share on `FlowContext` lives in a manager process: fitted scalers
  (`minmax_scaler` → `minmax_inverse` works across processes), datasets read, models
  trained; ``stop`` and the abort flag are multiprocessing events;
* `print` renders in its process and the parent writes the text to the run's console;
  results, statistics and errors come back on one event queue;
* children ignore SIGINT: Ctrl-C reaches the parent, which sets ``stop`` so ingresses end
  and the graph drains (sinks flush); a second Ctrl-C aborts.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import queue
import signal
import threading
from dataclasses import asdict, dataclass
from multiprocessing.managers import SyncManager
from typing import Any

import polars as pl

from tsloom.amml.base import Component, FlowContext, Ingress
from tsloom.amml.bytecode import ComponentInstance
from tsloom.amml.engine import Plan, Run, Stats, Worker, input_names, put
from tsloom.amml.errors import AmmlError, AmmlRuntimeError
from tsloom.config import Settings

JOIN_S = 5.0  # how long an aborted run waits for a child before terminating it


def encode(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    return buf.getvalue()


def decode(data: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(data))


class _ConsoleProxy:
    """A console for a child process: renders with Rich there, prints in the parent."""

    def __init__(self, events: Any, width: int) -> None:
        self.events, self.width = events, width

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=self.width, color_system=None).print(*objects, **kwargs)
        self.events.put(("print", buf.getvalue()))


class _DecodingInbox:
    """A child's own inbox: what the parent's queue holds, Arrow IPC decoded to frames."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def get(self, timeout: float | None = None) -> Any:
        port, data = self.q.get(timeout=timeout)
        return port, None if data is None else decode(data)


@dataclass
class _ChildConfig:
    settings: Settings
    source: str
    run_id: int | None
    flow_name: str | None
    console_width: int | None
    shared: tuple[Any, Any, Any]  # scalers, datasets, models (manager proxies)
    stop: Any
    abort: Any
    events: Any
    inboxes: dict[int, Any]
    consumers: dict[int, list[tuple[int, int]]]
    n_inputs: int
    keep_results: bool
    batch_rows: int | None
    streaming: bool
    input_names: list[str]


def _child(cls: type[Component], inst: ComponentInstance, cfg: _ChildConfig) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    events = cfg.events
    ctx = FlowContext(settings=cfg.settings, source=cfg.source, run_id=cfg.run_id)
    ctx.flow_name = cfg.flow_name
    ctx.scalers, ctx.datasets, ctx.models = cfg.shared
    ctx.stop = cfg.stop
    if cfg.console_width:
        ctx.console = _ConsoleProxy(events, cfg.console_width)
    i = inst.index

    def on_error(error: AmmlError) -> None:
        events.put(("error", i, error.reason, error.hint, error.line, error.column))
        cfg.abort.set()
        cfg.stop.set()

    def send(port: int, frame: pl.DataFrame | None) -> None:
        targets = cfg.consumers.get(port)
        if not targets:
            if frame is not None and cfg.keep_results:
                events.put(("result", i, port, encode(frame)))
            return
        data = None if frame is None else encode(frame)
        for dst, dst_port in targets:
            put(cfg.inboxes[dst], (dst_port, data), cfg.abort)

    try:
        component = cls(inst, ctx)
        component.streaming_input = cfg.streaming  # type: ignore[attr-defined]
        component.input_names = cfg.input_names  # type: ignore[attr-defined]
    except BaseException as exc:
        events.put(("error", i, f"{inst.name}: {exc}", None, inst.line, inst.column))
        cfg.abort.set()
        return
    own = cfg.inboxes.get(i)
    worker = Worker(
        component,
        _DecodingInbox(own) if own is not None else None,
        cfg.n_inputs,
        sorted(set(cfg.consumers) | {0}),
        send,
        on_error,
        cfg.abort,
        cfg.batch_rows if isinstance(component, Ingress) else None,
    )
    worker.run()
    events.put(("stats", i, asdict(worker.stats)))
    if cfg.abort.is_set():  # nobody drains the queues any more: do not wait on them at exit
        for q in cfg.inboxes.values():
            q.cancel_join_thread()
    events.close()
    events.join_thread()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_processes(
    classes: dict[int, type[Component]],
    insts: list[ComponentInstance],
    graph: Plan,
    *,
    ctx: FlowContext,
    streaming: dict[int, bool],
    queue_size: int,
    batch_rows: int | None,
    keep_results: bool,
    run: Run,
    caller_stop: threading.Event,
) -> tuple[dict[tuple[int, int], list[pl.DataFrame]], list[Stats]]:
    """Run each component in its own process; results and stats as `run_threads` gives."""
    mpx = mp.get_context("spawn")
    manager = SyncManager(ctx=mpx)
    manager.start(initializer=_ignore_sigint)
    try:
        shared = (manager.dict(), manager.list(), manager.list())
        stop, abort, events = mpx.Event(), mpx.Event(), mpx.Queue()
        inboxes = {c.index: mpx.Queue(maxsize=queue_size) for c in insts if c.inputs}
        width = getattr(ctx.console, "width", None) if ctx.console is not None else None
        procs = []
        for inst in insts:
            cfg = _ChildConfig(
                settings=ctx.settings,
                source=ctx.source,
                run_id=ctx.run_id,
                flow_name=ctx.flow_name,
                console_width=int(width or 120) if ctx.console is not None else None,
                shared=shared,
                stop=stop,
                abort=abort,
                events=events,
                inboxes=inboxes,
                consumers=graph.consumers[inst.index],
                n_inputs=graph.n_inputs[inst.index],
                keep_results=keep_results,
                batch_rows=batch_rows,
                streaming=streaming[inst.index],
                input_names=input_names(inst, insts),
            )
            proc = mpx.Process(
                target=_child,
                args=(classes[inst.index], inst, cfg),
                name=f"amml-{inst.name}-{inst.index}",
                daemon=True,
            )
            procs.append(proc)
        for p in procs:
            p.start()
        ends, stats = _supervise(procs, events, insts, ctx, run, stop, abort, caller_stop)
        ctx.scalers.update(dict(shared[0]))
        ctx.datasets.extend(list(shared[1]))
        ctx.models.extend(list(shared[2]))
        return ends, stats
    finally:
        manager.shutdown()


def _supervise(procs, events, insts, ctx, run: Run, stop, abort, caller_stop):
    ends: dict[tuple[int, int], list[pl.DataFrame]] = {}
    stats: dict[int, Stats] = {}
    by_index = {c.index: c for c in insts}
    interrupted = 0

    def handle(msg: tuple) -> None:
        kind = msg[0]
        if kind == "result":
            _, i, port, data = msg
            ends.setdefault((i, port), []).append(decode(data))
        elif kind == "stats":
            stats[msg[1]] = Stats(**msg[2])
        elif kind == "print":
            if ctx.console is not None:
                ctx.console.out(msg[1].rstrip("\n"), highlight=False)
        elif kind == "error":
            _, i, reason, hint, line, column = msg
            inst = by_index[i]
            width = len(inst.name) if (line, column) == (inst.line, inst.column) else 1
            run.fail(
                AmmlRuntimeError(
                    reason, hint, source=ctx.source, line=line, column=column, width=width
                )
            )
            abort.set()
            stop.set()

    while any(p.is_alive() for p in procs) or _pending(events):
        try:
            if caller_stop.is_set() and not stop.is_set():
                stop.set()
            with contextlib.suppress(queue.Empty):
                handle(events.get(timeout=0.1))
            if abort.is_set() and not any(p.is_alive() for p in procs):
                break
        except KeyboardInterrupt:
            interrupted += 1
            ctx.stop.set()
            stop.set()
            if interrupted > 1:
                abort.set()
    for p in procs:
        p.join(JOIN_S if abort.is_set() else None)
        if p.is_alive():
            p.terminate()
            p.join()
    while _pending(events):
        try:
            handle(events.get(timeout=0.1))
        except queue.Empty:
            break
    if stop.is_set():
        ctx.stop.set()
    return ends, [stats[c.index] for c in insts if c.index in stats]


def _pending(events: Any) -> bool:
    try:
        return not events.empty()
    except (OSError, ValueError):
        return False
