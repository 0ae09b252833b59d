"""Run an AMML program: compile it, check it, and stream batches through its components.

    >>> result = run_program('source id="ett" | minmax_scaler | train_lstm model="ett:0.1" | print')
    >>> result.status, [s.rows_out for s in result.stats]

The components form a graph (named flows, `join` with several inputs, `split` with several
outputs); batches (polars frames) flow along its edges through bounded queues with
back-pressure (`tsloom.amml.engine`). By default every component runs in its own thread of
this process (polars releases the GIL); ``mode="process"`` runs each in its own process
(`tsloom.amml.process_mode`).

Before anything runs, components without an implementation and arguments a component does
not honour are refused with an error naming the component and its line and column. A
component that fails stops the whole workflow (the others are stopped and closed) and its
error names it and points at it in the source. Ctrl-C — or setting ``stop`` from another
thread — asks the ingresses to end; the rest of the graph drains, sinks flush, and the
result comes back with ``status="stopped"``. Streaming sources run until stopped.

Ingress classes may set ``streaming = True`` (a class attribute or a property) when they do
not end on their own; every component gets ``streaming_input`` (is any ingress upstream of
it streaming?) before ``open()``, which the scalers use to pick how they fit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from tsloom.amml.base import Component, FlowContext, Ingress
from tsloom.amml.compiler import compile_program
from tsloom.amml.engine import Run, Stats, input_names, plan, run_threads, runtime_error
from tsloom.amml.implementations import implementations
from tsloom.config import Settings, load_settings

DEFAULT_QUEUE_SIZE = 4
DEFAULT_BATCH_ROWS = 100_000


@dataclass
class RunResult:
    """What a run produced.

    `results`: per end of the graph (an output port nobody reads, in component order) the
    frames that reached it, concatenated (empty unless ``keep_results``; ends that got no
    rows, such as sinks, are left out); `ends` the ``(component, port)`` of each result;
    `models` the models train_lstm stored; `stats` per component; `status` "finished" or
    "stopped" (Ctrl-C or the stop event)."""

    results: list[pl.DataFrame] = field(default_factory=list)
    ends: list[tuple[int, int]] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stats: list[Stats] = field(default_factory=list)
    status: Literal["finished", "stopped"] = "finished"


def _check(insts, impls: dict[str, type[Component]], text: str) -> dict[int, type[Component]]:
    classes: dict[int, type[Component]] = {}
    for inst in insts:
        cls = impls.get(inst.name)
        if cls is None:
            raise runtime_error(
                inst,
                text,
                "not supported by the runtime yet",
                f"it runs {', '.join(sorted(impls))}",
            )
        unsupported = sorted(set(inst.args) - cls.supported)
        if not getattr(cls, "extra_callbacks", False):
            unsupported += sorted(set(inst.callbacks) - cls.supported)
        if unsupported:
            raise runtime_error(
                inst,
                text,
                f"argument(s) {', '.join(unsupported)} not supported by the runtime yet",
                f"it honours {', '.join(sorted(cls.supported)) or 'no arguments'}",
            )
        classes[inst.index] = cls
    return classes


def _streaming(components: list[Component]) -> dict[int, bool]:
    """Component index → is a streaming ingress upstream of it (inputs precede their readers)."""
    out: dict[int, bool] = {}
    upstream: dict[int, bool] = {}
    for comp in components:
        inst = comp.inst
        upstream[inst.index] = any(out[src] for src, _ in inst.inputs)
        if isinstance(comp, Ingress):
            flag = getattr(comp, "streaming", False)
            out[inst.index] = bool(flag() if callable(flag) else flag)
        else:
            out[inst.index] = upstream[inst.index]
    return upstream


def run_program(
    text: str,
    *,
    settings: Settings | None = None,
    console: Any = None,
    mode: Literal["thread", "process"] = "thread",
    queue_size: int = DEFAULT_QUEUE_SIZE,
    batch_rows: int | None = DEFAULT_BATCH_ROWS,
    stop: threading.Event | None = None,
    run_id: int | None = None,
    flow_name: str | None = None,
    keep_results: bool = True,
    components: dict[str, type[Component]] | None = None,
) -> RunResult:
    """Compile `text` and run it; print goes to `console` (Rich) or stdout.

    `queue_size`: batches each component's inbox holds before its producers wait;
    `batch_rows`: ingress batches larger than this are sliced (None: as they come);
    `stop`: set it (from any thread) to stop the run as Ctrl-C does; `components`:
    implementations to use instead of the registered ones, by component name (tests,
    embedding applications)."""
    if mode not in ("thread", "process"):
        raise ValueError(f"mode must be 'thread' or 'process', not {mode!r}")
    if queue_size < 1:
        raise ValueError("queue_size must be at least 1")
    started = time.perf_counter()
    bytecode = compile_program(text)
    settings = settings or load_settings()
    caller_stop = stop or threading.Event()
    ctx = FlowContext(
        settings=settings,
        source=text,
        console=console,
        run_id=run_id,
        flow_name=flow_name,
        stop=threading.Event(),
    )
    insts = bytecode.components
    classes = _check(insts, {**implementations(), **(components or {})}, text)
    built = [classes[inst.index](inst, ctx) for inst in insts]
    streaming = _streaming(built)
    for comp in built:
        comp.streaming_input = streaming[comp.inst.index]  # type: ignore[attr-defined]
        comp.input_names = input_names(comp.inst, insts)  # type: ignore[attr-defined]
    graph = plan(insts)
    run = Run(threading.Event(), ctx.stop)
    if mode == "thread":
        ends, stats = run_threads(
            built,
            graph,
            queue_size=queue_size,
            batch_rows=batch_rows,
            keep_results=keep_results,
            on_interrupt=ctx.stop.set,
            run=run,
            caller_stop=caller_stop,
        )
    else:
        from tsloom.amml.process_mode import run_processes

        ends, stats = run_processes(
            classes,
            insts,
            graph,
            ctx=ctx,
            streaming=streaming,
            queue_size=queue_size,
            batch_rows=batch_rows,
            keep_results=keep_results,
            run=run,
            caller_stop=caller_stop,
        )
    if run.error is not None:
        raise run.error
    result = RunResult(models=list(ctx.models), stats=stats)
    for key in sorted(ends):
        frames = ends[key]
        result.results.append(
            frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
        )
        result.ends.append(key)
    result.status = "stopped" if ctx.stop.is_set() or caller_stop.is_set() else "finished"
    result.seconds = time.perf_counter() - started
    return result
