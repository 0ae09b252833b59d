"""AMML's core components: the min-max scaler and its inverse, and `print`
(the contract they implement is in `tsloom.amml.base`). Rules worth knowing:

* value columns are the numeric columns other than `ts` (keyed datasets are not supported yet).
* `minmax_scaler` fits min and max per value column (or `cols=`) and stashes them on the
  context under `id=` (default ``"default"``); `minmax_inverse` inverts the columns of the
  frame that the scaler with that id fitted.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from tsloom.amml.base import Component, Emitted, FrameComponent


def value_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c != "ts" and t.is_numeric()]


class MinMaxScaler(FrameComponent):
    name = "minmax_scaler"
    supported = frozenset({"cols", "id"})

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        cols = self.args.get("cols") or value_columns(frame)
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise self.fail(f"no column(s) {', '.join(missing)}", f"columns: {frame.columns}")
        state: dict[str, tuple[float, float]] = {}
        exprs = []
        for c in cols:
            lo, hi = frame[c].min(), frame[c].max()
            if lo is None or hi is None:
                raise self.fail(f"column {c} has no values to fit")
            state[c] = (float(lo), float(hi))  # type: ignore[arg-type]
            span = float(hi) - float(lo) or 1.0  # type: ignore[operator]
            exprs.append(((pl.col(c).cast(pl.Float64) - float(lo)) / span).alias(c))  # type: ignore[arg-type]
        self.ctx.scalers[self.args.get("id") or "default"] = state
        return frame.with_columns(exprs)


class MinMaxInverse(FrameComponent):
    name = "minmax_inverse"
    supported = frozenset({"cols", "id"})

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
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
        return frame.with_columns(exprs)


class Print(Component):
    name = "print"
    supported = frozenset({"limit"})

    def process(self, frame: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        limit = self.args.get("limit")
        shown = frame.head(limit) if limit else frame
        console = self.ctx.console
        if console is None:
            with pl.Config(tbl_rows=max(shown.height, 10), tbl_cols=-1):
                print(shown)
            return (frame,)
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{self.inst.name} (line {self.inst.line}) — {frame.height} rows")
        for c in shown.columns:
            table.add_column(escape(c), justify="right" if shown[c].dtype.is_numeric() else "left")
        for row in shown.iter_rows():
            table.add_row(*(f"{v:.6g}" if isinstance(v, float) else escape(str(v)) for v in row))
        console.print(table)
        return (frame,)


COMPONENTS: list[type[Component]] = [MinMaxScaler, MinMaxInverse, Print]
