"""A minimal in-process AMML runtime: runs a program's components in source order.

    >>> result = run_program('source id="ett" | minmax_scaler | train_lstm model="ett:0.1" | print')

Each component gets the frame of its one input and returns a frame (see
`tsloom.amml.components` for what each one does). Supported for now: linear pipelines (and
named flows read by one-input components) of source, minmax_scaler, minmax_inverse,
train_lstm, lstm and print. Anything else — join, split, other components, arguments a
component does not honour yet — is refused before anything runs, with an error naming the
component and its line and column.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from tsloom.amml import catalog
from tsloom.amml.base import FlowContext, Ingress
from tsloom.amml.catalog import ArgSpec
from tsloom.amml.compiler import compile_program
from tsloom.amml.errors import AmmlRuntimeError
from tsloom.amml.implementations import implementations
from tsloom.config import Settings, load_settings

# train_lstm takes a seed (deterministic training); the compiler checks args against this.
_train = catalog.COMPONENTS["train_lstm"]
if _train.arg("seed") is None:
    catalog.register(
        replace(_train, args=(*_train.args, ArgSpec("seed", "int", help="random seed (default 0)")))
    )


@dataclass
class RunResult:
    """Frames by component index; `results` are the frames of the components nobody reads
    (the ends of the pipelines); `models` the models train_lstm stored (their metadata)."""

    frames: dict[int, pl.DataFrame] = field(default_factory=dict)
    results: list[pl.DataFrame] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _error(inst: Any, source: str, message: str, hint: str | None = None) -> AmmlRuntimeError:
    return AmmlRuntimeError(
        f"{inst.name}: {message}",
        hint,
        source=source,
        line=inst.line,
        column=inst.column,
        width=len(inst.name),
    )


def run_program(text: str, *, settings: Settings | None = None, console: Any = None) -> RunResult:
    """Compile `text` and run it in this process; print goes to `console` (Rich) or stdout."""
    started = time.perf_counter()
    bytecode = compile_program(text)
    settings = settings or load_settings()
    ctx = FlowContext(settings=settings, source=text, console=console)
    comps = bytecode.components
    COMPONENTS = implementations()

    # refuse what the runtime cannot do before running anything
    for inst in comps:
        cls = COMPONENTS.get(inst.name)
        if cls is None:
            raise _error(
                inst,
                text,
                "not supported by the runtime yet",
                f"it runs {', '.join(sorted(COMPONENTS))} in linear pipelines",
            )
        if len(inst.inputs) > 1 or any(port for _, port in inst.inputs):
            raise _error(inst, text, "several inputs are not supported by the runtime yet")
        if any(port for port in inst.outputs if port):
            raise _error(inst, text, "several outputs are not supported by the runtime yet")
        unsupported = sorted(set(inst.args) - cls.supported)
        if unsupported:
            raise _error(
                inst,
                text,
                f"argument(s) {', '.join(unsupported)} not supported by the runtime yet",
                f"it honours {', '.join(sorted(cls.supported)) or 'no arguments'}",
            )
        if inst.callbacks:
            raise _error(inst, text, "callbacks are not supported by the runtime yet")

    result = RunResult()
    read: set[int] = set()
    for inst in comps:
        component = COMPONENTS[inst.name](inst, ctx)
        component.open()
        try:
            if isinstance(component, Ingress):
                out = list(component.batches())
            else:
                src = inst.inputs[0][0]
                if src not in result.frames:
                    raise _error(inst, text, f"its input (component {src}) has not run before it")
                read.add(src)
                out = [*component.process(result.frames[src]), *component.finish()]
        finally:
            component.close()
        frames = [f if isinstance(f, pl.DataFrame) else f[1] for f in out]
        result.frames[inst.index] = (
            pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()
        )
    result.results = [f for i, f in result.frames.items() if i not in read]
    result.models = ctx.models
    result.seconds = time.perf_counter() - started
    return result
