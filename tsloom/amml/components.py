"""AMML's core components: the min-max and z-score scalers, the min-max inverse, and
`print` (the contract they implement is in `tsloom.amml.base`). Rules worth knowing:

* value columns are the numeric columns other than `ts` (or `cols=`).
* **How a scaler fits.** With ``fit_rows=N`` it fits on the first N rows, emits them scaled,
  then scales every later batch as it comes. Without it, a *bounded* flow (every ingress
  upstream ends) fits on the whole input — the batches are held until the input ends, then
  emitted scaled, batch by batch — and a *streaming* flow (an ingress upstream that runs
  until stopped) fits on the first `DEFAULT_FIT_ROWS` rows. A flow that ends before the
  rows are there fits on what it got.
* `minmax_scaler` stashes (min, max) per column on the context under `id=` (default
  ``"default"``); `zscore_scaler` stashes (mean, std) under ``"zscore:" + id``;
  `minmax_inverse` inverts, batch by batch, the columns that the min-max scaler with that
  id fitted. A constant column scales with a span (or std) of 1.
* `print limit=N` shows the first N rows of a batch, `every=N` every Nth batch (1st,
  N+1th, …); it passes every batch on.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

import polars as pl

from tsloom.amml.base import Component, Emitted

DEFAULT_FIT_ROWS = 10_000


def value_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c != "ts" and t.is_numeric()]


class _Scaler(Component):
    """Holds batches until it has fitted (see the module docstring), then scales each."""

    supported = frozenset({"cols", "id", "fit_rows"})
    kind = ""

    def open(self) -> None:
        self._held: list[pl.DataFrame] = []
        self._rows = 0
        self._state: dict[str, tuple[float, float]] | None = None
        fit_rows = self.args.get("fit_rows")
        if fit_rows is not None and fit_rows < 1:
            raise self.fail("fit_rows must be at least 1")
        if fit_rows is None and getattr(self, "streaming_input", False):
            fit_rows = DEFAULT_FIT_ROWS
        self._fit_rows: int | None = fit_rows

    def key(self) -> str:
        return self.args.get("id") or "default"

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        if self._state is not None:
            return (self._apply(batch),)
        self._held.append(batch)
        self._rows += batch.height
        if self._fit_rows is not None and self._rows >= self._fit_rows:
            return self._fit_and_release()
        return ()

    def finish(self) -> Iterable[Emitted]:
        if self._state is None and self._held:
            return self._fit_and_release()
        return ()

    def _fit_and_release(self) -> list[pl.DataFrame]:
        held, self._held = self._held, []
        first = held[0]
        cols = self.args.get("cols") or value_columns(first)
        missing = [c for c in cols if c not in first.columns]
        if missing:
            raise self.fail(f"no column(s) {', '.join(missing)}", f"columns: {first.columns}")
        fit_on = pl.concat([b.select(cols) for b in held], how="vertical_relaxed", rechunk=False)
        if self._fit_rows is not None:
            fit_on = fit_on.head(self._fit_rows)
        state = self.fit(fit_on, cols)
        self._state = state
        self.ctx.scalers[self.key()] = state
        return [self._apply(b) for b in held]

    @abstractmethod
    def fit(self, frame: pl.DataFrame, cols: list[str]) -> dict[str, tuple[float, float]]:
        """The scaler's state per column, fitted on `frame`."""

    def _apply(self, batch: pl.DataFrame) -> pl.DataFrame:
        assert self._state is not None
        return batch.with_columns(
            ((pl.col(c).cast(pl.Float64) - a) / b).alias(c) for c, (a, b) in self._scale()
        )

    @abstractmethod
    def _scale(self) -> list[tuple[str, tuple[float, float]]]:
        """Per column (offset, divisor)."""


class MinMaxScaler(_Scaler):
    name = "minmax_scaler"

    def fit(self, frame: pl.DataFrame, cols: list[str]) -> dict[str, tuple[float, float]]:
        lo = frame.select(pl.col(cols).min()).row(0)
        hi = frame.select(pl.col(cols).max()).row(0)
        state = {}
        for c, a, b in zip(cols, lo, hi, strict=True):
            if a is None or b is None:
                raise self.fail(f"column {c} has no values to fit")
            state[c] = (float(a), float(b))
        return state

    def _scale(self):
        assert self._state is not None
        return [(c, (lo, (hi - lo) or 1.0)) for c, (lo, hi) in self._state.items()]


class ZScoreScaler(_Scaler):
    name = "zscore_scaler"

    def key(self) -> str:
        return "zscore:" + super().key()

    def fit(self, frame: pl.DataFrame, cols: list[str]) -> dict[str, tuple[float, float]]:
        means = frame.select(pl.col(cols).cast(pl.Float64).mean()).row(0)
        stds = frame.select(pl.col(cols).cast(pl.Float64).std(ddof=0)).row(0)
        state = {}
        for c, m, s in zip(cols, means, stds, strict=True):
            if m is None:
                raise self.fail(f"column {c} has no values to fit")
            state[c] = (float(m), float(s or 0.0))
        return state

    def _scale(self):
        assert self._state is not None
        return [(c, (m, s or 1.0)) for c, (m, s) in self._state.items()]


class MinMaxInverse(Component):
    name = "minmax_inverse"
    supported = frozenset({"cols", "id"})

    def process(self, frame: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        sid = self.args.get("id") or "default"
        state = self.ctx.scalers.get(sid)
        if state is None:
            raise self.fail(
                f"no minmax_scaler with id {sid!r} ran before it in this workflow",
                "put `minmax_scaler` upstream (same id=)",
            )
        cols = self.args.get("cols") or [c for c in frame.columns if c in state]
        unfitted = [c for c in cols if c not in state]
        if unfitted:
            raise self.fail(f"the scaler {sid!r} did not fit column(s) {', '.join(unfitted)}")
        exprs = [
            (pl.col(c) * ((state[c][1] - state[c][0]) or 1.0) + state[c][0]).alias(c) for c in cols
        ]
        return (frame.with_columns(exprs),)


class Print(Component):
    name = "print"
    supported = frozenset({"limit", "every"})

    def open(self) -> None:
        every = self.args.get("every") or 1
        if every < 1:
            raise self.fail("every must be at least 1")
        self._every, self._seen = every, 0

    def process(self, frame: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        self._seen += 1
        if (self._seen - 1) % self._every:
            return (frame,)
        limit = self.args.get("limit")
        shown = frame.head(limit) if limit else frame
        console = self.ctx.console
        if console is None:
            with pl.Config(tbl_rows=max(shown.height, 10), tbl_cols=-1):
                print(shown)
            return (frame,)
        from rich.markup import escape
        from rich.table import Table

        title = f"{self.inst.name} (line {self.inst.line}) — {frame.height} rows"
        if self._every > 1 or self._seen > 1:
            title += f", batch {self._seen}"
        table = Table(title=title)
        for c in shown.columns:
            table.add_column(escape(c), justify="right" if shown[c].dtype.is_numeric() else "left")
        for row in shown.iter_rows():
            table.add_row(*(f"{v:.6g}" if isinstance(v, float) else escape(str(v)) for v in row))
        console.print(table)
        return (frame,)


COMPONENTS: list[type[Component]] = [MinMaxScaler, ZScoreScaler, MinMaxInverse, Print]
