"""The contract every AMML component implements, and what the components of one run share.

Batches (polars frames) stream through a workflow. A component sees them one at a time:

* an **ingress** yields batches from :meth:`Ingress.batches` (bounded sources end, streaming
  ones run until ``ctx.stop`` is set);
* every other component gets :meth:`Component.process` per input batch (``port`` is the
  index of the input for `join`) and :meth:`Component.finish` once its inputs are
  exhausted; both return the batches to pass on, as frames (to output 0) or
  ``(port, frame)`` pairs (to output ``port``, for `split`);
* :meth:`Component.open` runs before the first batch and :meth:`Component.close` always
  runs at the end (success, failure or Ctrl-C) — sinks flush there.

A component that needs its whole input at once (fitting a scaler on all of it, training a
model) derives from :class:`FrameComponent` and implements ``transform(frame)``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from tsloom.amml.bytecode import ComponentInstance
from tsloom.amml.errors import AmmlRuntimeError
from tsloom.config import Settings

Emitted = pl.DataFrame | tuple[int, pl.DataFrame]


@dataclass
class FlowContext:
    """What the components of one run share: settings, the program text (for error carets),
    the console print writes to, fitted scalers by id, the datasets read, the models
    trained, the run's id in the database (None for ad hoc runs not recorded) and the stop
    flag that Ctrl-C or a failing component sets."""

    settings: Settings
    source: str
    console: Any = None
    scalers: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    run_id: int | None = None
    flow_name: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)


class Component(ABC):
    """Base class: `args` are the compiled arguments; `supported` those the runtime honours."""

    name: ClassVar[str] = ""
    supported: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, inst: ComponentInstance, ctx: FlowContext) -> None:
        self.inst, self.ctx, self.args = inst, ctx, inst.args

    def fail(self, message: str, hint: str | None = None) -> AmmlRuntimeError:
        """An error naming this component and pointing at it in the source."""
        return AmmlRuntimeError(
            f"{self.inst.name}: {message}",
            hint,
            source=self.ctx.source,
            line=self.inst.line,
            column=self.inst.column,
            width=len(self.inst.name),
        )

    def open(self) -> None:
        """Called once before the first batch (connect, create tables)."""
        return None

    @abstractmethod
    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        """The batches this input batch turns into (often just one)."""

    def finish(self) -> Iterable[Emitted]:
        """The batches to emit once every input has ended (default: none)."""
        return ()

    def close(self) -> None:
        """Called once at the end, whatever happened (flush and release)."""
        return None


class Ingress(Component):
    """A component that starts a flow: it has no input and yields batches. `streaming`
    says whether it runs until stopped (components downstream adapt, e.g. scalers fit on
    the first rows instead of the whole input)."""

    streaming: bool = False

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        raise self.fail("an ingress component takes no input")

    @abstractmethod
    def batches(self) -> Iterator[pl.DataFrame]:
        """Yield batches until the source ends or ``self.ctx.stop`` is set."""


class FrameComponent(Component):
    """A component that needs its whole input: batches are gathered and
    :meth:`transform` runs once at the end of the input."""

    def __init__(self, inst: ComponentInstance, ctx: FlowContext) -> None:
        super().__init__(inst, ctx)
        self._gathered: list[pl.DataFrame] = []

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        self._gathered.append(batch)
        return ()

    def finish(self) -> Iterable[Emitted]:
        if not self._gathered:
            return ()
        frame = pl.concat(self._gathered, how="vertical_relaxed")
        self._gathered = []
        return (self.transform(frame),)

    @abstractmethod
    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """This component's output for its whole input."""
