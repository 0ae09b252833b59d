"""AMML's progress components that reshape batches: filter, select, assign, resample, impute,
window, join and split. All are vectorised polars over one batch at a time; where a
result needs rows from the next batch, the few rows it needs are carried over.

* `filter cond=EXPR` keeps the rows where the callback is true (null counts as false).
* `select cols=[…]` keeps those columns (and their order).
* `assign new=EXPR …` adds or replaces columns, left to right (a later one may read an
  earlier one).
* `resample every="1h" agg=mean|min|max|sum|last|first|median|count` aggregates the value
  columns into buckets of `every` labelled by their start, per key column (the non-numeric
  columns) if any. The last bucket of a batch is carried into the next batch, so buckets
  are whole as long as the flow is in time order.
* `impute method=linear|ffill|bfill|zero|mean cols=… limit=N` fills nulls (and NaN) in the
  value columns. zero and ffill work per batch (ffill carries the last row across
  batches); linear and bfill hold back the rows after the last complete row until a later
  batch completes them (at the end of the input, edges take the nearest value); mean uses
  the whole input's mean in a bounded flow and the running mean in a streaming one.
  `limit` caps how many consecutive nulls ffill/bfill fill.
* `window size=N step=S horizon=H cols=…` emits one row per window: `ts` of the window's
  last row, then per value column ``c_lag{k}`` for k = N-1 … 0 (``c_lag0`` is the last
  row) and ``c_lead{h}`` for h = 1 … H (the targets), windows every S rows
  (default 1, H default 0). Rows are carried across batches.
* `join a b on=ts by=[k…] tolerance="5min" how=left|inner` is an as-of join on time: each
  row of the first flow gets the latest row of every other flow at or before its time (with
  `by`, the latest row with the same key values), within the tolerance; `how=inner` drops
  rows that found no match. Colliding column names of the other flows get the flow's name as
  suffix. Every input must be in time order; rows of
  the first flow are emitted as soon as every other flow has passed their time, and older
  rows of the other flows are dropped, so memory stays bounded on streams.
* `split a b cond=EXPR`: rows where the callback is true go to the first flow, the rest
  (null included) to the second; without `cond`, every flow gets every batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import polars as pl

from tsloom.amml.base import Component, Emitted
from tsloom.amml.callbacks import Callback, check_names
from tsloom.amml.components import value_columns
from tsloom.amml.errors import AmmlCompileError


def _duration(comp: Component, key: str) -> timedelta:
    """Argument `key` as a positive duration ("5min", "1h", "30s"), or a located error."""
    from tsloom.errors import TsloomError
    from tsloom.timeutil import parse_duration

    try:
        value = parse_duration(comp.args[key])
    except TsloomError as exc:
        raise comp.fail(f"{key}={comp.args[key]!r}: {exc.message}", exc.hint) from None
    if value <= timedelta(0):
        raise comp.fail(f"{key} must be positive")
    return value


class _Callbacks(Component):
    """Checks a callback's column names once per schema and lowers it to polars."""

    def _expr(self, cb: Callback, frame: pl.DataFrame) -> pl.Expr:
        cache = self.__dict__.setdefault("_exprs", {})
        key = (cb.target, cb.source, tuple(frame.columns))
        if key not in cache:
            try:
                check_names(cb, frame.columns)
            except AmmlCompileError as exc:
                raise self.fail(exc.reason, exc.hint) from None
            cache[key] = cb.to_polars()
        return cache[key]


class Filter(_Callbacks):
    name = "filter"
    supported = frozenset({"cond"})

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        return (batch.filter(self._expr(self.inst.callbacks["cond"], batch)),)


class Select(Component):
    name = "select"
    supported = frozenset({"cols"})

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        cols = self.args["cols"]
        missing = [c for c in cols if c not in batch.columns]
        if missing:
            raise self.fail(f"no column(s) {', '.join(missing)}", f"columns: {batch.columns}")
        return (batch.select(cols),)


class Assign(_Callbacks):
    name = "assign"
    extra_callbacks = True

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        for cb in self.inst.callbacks.values():
            batch = batch.with_columns(self._expr(cb, batch))
        return (batch,)


class Split(_Callbacks):
    name = "split"
    supported = frozenset({"cond"})

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        cb = self.inst.callbacks.get("cond")
        if cb is None:
            return [(p, batch) for p in sorted(self.inst.outputs) or [0]]
        mask = batch.select(self._expr(cb, batch).fill_null(False)).to_series()
        return [(0, batch.filter(mask)), (1, batch.filter(~mask))]


def _keys(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c != "ts" and not t.is_numeric()]


def _need_ts(comp: Component, frame: pl.DataFrame, on: str = "ts") -> None:
    if on not in frame.columns or not isinstance(frame.schema[on], pl.Datetime):
        raise comp.fail(f"needs a datetime column {on!r}", f"columns: {frame.columns}")


class Resample(Component):
    name = "resample"
    supported = frozenset({"every", "agg", "cols"})

    def open(self) -> None:
        from tsloom.prep.resample import AGGS

        self._every = _duration(self, "every")
        self._agg = self.args.get("agg") or "mean"
        if self._agg not in AGGS:
            raise self.fail(f"unknown agg {self._agg!r}", ", ".join(AGGS))
        self._carry: pl.DataFrame | None = None

    def _down(self, frame: pl.DataFrame) -> pl.DataFrame:
        from tsloom.prep.resample import downsample

        keys = _keys(frame)
        return downsample(
            frame, self._every, self._agg, columns=self.args.get("cols"), by=keys or None
        )

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        _need_ts(self, batch)
        work = batch if self._carry is None else pl.concat([self._carry, batch], how="vertical")
        bucket = pl.col("ts").dt.truncate(self._every)
        last = work.select(bucket.max()).item()
        done = work.filter(bucket < last)
        self._carry = work.filter(bucket >= last)
        return (self._down(done),) if done.height else ()

    def finish(self) -> Iterable[Emitted]:
        if self._carry is not None and self._carry.height:
            return (self._down(self._carry),)
        return ()


class Impute(Component):
    name = "impute"
    supported = frozenset({"method", "cols", "limit"})
    METHODS = ("linear", "ffill", "bfill", "zero", "mean")

    def open(self) -> None:
        self._method = self.args.get("method") or "linear"
        if self._method not in self.METHODS:
            raise self.fail(f"unknown method {self._method!r}", ", ".join(self.METHODS))
        self._limit = self.args.get("limit")
        self._cols: list[str] | None = None
        self._last: pl.DataFrame | None = None  # last row emitted (context for ffill/linear)
        self._held: list[pl.DataFrame] = []
        self._sums: dict[str, tuple[float, int]] = {}

    def _prepare(self, batch: pl.DataFrame) -> pl.DataFrame:
        if self._cols is None:
            cols = self.args.get("cols") or value_columns(batch)
            missing = [c for c in cols if c not in batch.columns]
            if missing:
                raise self.fail(f"no column(s) {', '.join(missing)}", f"columns: {batch.columns}")
            self._cols = cols
        return batch.with_columns(pl.col(self._cols).cast(pl.Float64).fill_nan(None))

    def _fill(self, frame: pl.DataFrame, final: bool) -> pl.DataFrame:
        cols, m, lim = self._cols or [], self._method, self._limit
        if m == "ffill":
            exprs = [pl.col(c).forward_fill(lim) for c in cols]
        elif m == "bfill":
            exprs = [pl.col(c).backward_fill(lim) for c in cols]
        else:  # linear
            exprs = [pl.col(c).interpolate().backward_fill() for c in cols]
        out = frame.with_columns(exprs)
        if final and m == "linear":
            out = out.with_columns(pl.col(cols).forward_fill())
        return out

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        batch = self._prepare(batch)
        cols = self._cols or []
        if self._method == "zero":
            return (batch.with_columns(pl.col(cols).fill_null(0.0)),)
        if self._method == "mean":
            return self._mean(batch)
        if self._method == "ffill":
            return (self._with_context(batch, final=False),)
        # linear / bfill: hold the rows after the last complete one
        work = pl.concat([*self._held, batch], how="vertical") if self._held else batch
        complete = work.select(pl.all_horizontal(pl.col(cols).is_not_null())).to_series()
        idx = complete.arg_true()
        if idx.len() == 0:
            self._held = [work]
            return ()
        cut = int(idx[-1]) + 1
        self._held = [work.slice(cut)] if cut < work.height else []
        return (self._with_context(work.slice(0, cut), final=False),)

    def _with_context(self, part: pl.DataFrame, final: bool) -> pl.DataFrame:
        if self._last is not None:
            filled = self._fill(pl.concat([self._last, part], how="vertical"), final).slice(1)
        else:
            filled = self._fill(part, final)
        if filled.height:
            self._last = filled.tail(1)
        return filled

    def _mean(self, batch: pl.DataFrame) -> Iterable[Emitted]:
        cols = self._cols or []
        if not getattr(self, "streaming_input", False):
            self._held.append(batch)
            return ()
        for c in cols:
            s, n = self._sums.get(c, (0.0, 0))
            col = batch.get_column(c)
            self._sums[c] = (s + float(col.sum() or 0.0), n + col.len() - col.null_count())
        return (self._fill_means(batch),)

    def _fill_means(self, frame: pl.DataFrame) -> pl.DataFrame:
        means = {c: (s / n if n else None) for c, (s, n) in self._sums.items()}
        return frame.with_columns(pl.col(c).fill_null(means.get(c)) for c in self._cols or [])

    def finish(self) -> Iterable[Emitted]:
        if not self._held:
            return ()
        held, self._held = self._held, []
        if self._method == "mean":
            whole = pl.concat(held, how="vertical", rechunk=False)
            for c in self._cols or []:
                col = whole.get_column(c)
                self._sums[c] = (float(col.sum() or 0.0), col.len() - col.null_count())
            return [self._fill_means(b) for b in held]
        return (self._with_context(pl.concat(held, how="vertical"), final=True),)


class Window(Component):
    name = "window"
    supported = frozenset({"size", "step", "horizon", "cols"})

    def open(self) -> None:
        self._size = self.args["size"]
        self._step = self.args.get("step") or 1
        self._horizon = self.args.get("horizon") or 0
        if self._size < 1 or self._step < 1 or self._horizon < 0:
            raise self.fail("size and step must be at least 1, horizon at least 0")
        self._carry: pl.DataFrame | None = None
        self._first = 0  # global index of the carry's first row
        self._next = self._size - 1  # global index of the next window end to emit

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        cols = self.args.get("cols") or value_columns(batch)
        work = batch if self._carry is None else pl.concat([self._carry, batch], how="vertical")
        n, first = work.height, self._first
        last_end = first + n - 1 - self._horizon  # the last window end whose leads are here
        out = ()
        if last_end >= self._next:
            g = pl.int_range(first, first + n, dtype=pl.Int64)
            lags = [
                pl.col(c).shift(k).alias(f"{c}_lag{k}")
                for c in cols
                for k in range(self._size - 1, -1, -1)
            ]
            leads = [
                pl.col(c).shift(-h).alias(f"{c}_lead{h}")
                for c in cols
                for h in range(1, self._horizon + 1)
            ]
            keep = (g >= self._next) & (g <= last_end) & ((g - (self._size - 1)) % self._step == 0)
            head = ["ts"] if "ts" in work.columns else []
            rows = work.select(*head, *lags, *leads, keep.alias("__keep"))
            out = (rows.filter(pl.col("__keep")).drop("__keep"),)
            self._next = last_end + 1
        keep_rows = self._size - 1 + self._horizon
        tail = min(keep_rows, n)
        self._carry = work.slice(n - tail) if tail else None
        self._first = first + n - tail
        return out


class Join(Component):
    name = "join"
    supported = frozenset({"on", "by", "tolerance", "how"})

    def open(self) -> None:
        self._on = self.args.get("on") or "ts"
        by = self.args.get("by") or []
        self._by: list[str] = [by] if isinstance(by, str) else list(by)
        if self._on in self._by:
            raise self.fail(f"by={self._by}: {self._on!r} is the time column (on=), not a key")
        self._tol = None if self.args.get("tolerance") is None else _duration(self, "tolerance")
        self._how = self.args.get("how") or "left"
        if self._how not in ("left", "inner"):
            raise self.fail(f"how={self._how!r}: use left or inner")
        n = len(self.inst.inputs)
        names = getattr(self, "input_names", None) or [f"in{k}" for k in range(n)]
        self._names = names
        self._left: list[pl.DataFrame] = []
        self._right: list[pl.DataFrame | None] = [None] * n
        self._seen: list[object | None] = [None] * n  # latest `on` value of each right input
        self._done = [False] * n

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        _need_ts(self, batch, self._on)
        self._need_keys(batch, port)
        batch = batch.sort(self._on)
        if port == 0:
            self._left.append(batch)
        else:
            r = self._right[port]
            self._right[port] = batch if r is None else pl.concat([r, batch], how="vertical")
            self._seen[port] = batch.get_column(self._on).max()
        return self._emit(final=False)

    def _need_keys(self, batch: pl.DataFrame, port: int) -> None:
        missing = [c for c in self._by if c not in batch.columns]
        if missing:
            flow = self._names[port] if port < len(self._names) else f"input {port}"
            raise self.fail(
                f"flow {flow!r} has no key column(s) {', '.join(missing)} (by=)",
                f"columns of {flow!r}: {batch.columns}; every joined flow needs the by= columns",
            )

    def input_ended(self, port: int) -> Iterable[Emitted]:
        self._done[port] = True
        return self._emit(final=False)

    def finish(self) -> Iterable[Emitted]:
        return self._emit(final=True)

    def _emit(self, final: bool) -> Iterable[Emitted]:
        if not self._left:
            return ()
        left = pl.concat(self._left, how="vertical").sort(self._on)
        rights = range(1, len(self._right))
        if final or all(self._done[p] for p in rights):
            ready, rest = left, left.clear()
        else:
            pending = [self._seen[p] for p in rights if not self._done[p]]
            if any(s is None for s in pending):
                self._left = [left]
                return ()
            cut = min(pending)  # type: ignore[type-var]
            ready = left.filter(pl.col(self._on) < cut)
            rest = left.filter(pl.col(self._on) >= cut)
        self._left = [rest] if rest.height else []
        out = ready
        for p in rights:
            out = self._join_one(out, p)
        self._prune(rest if rest.height else ready)
        return (out,) if out.height else ()

    def _join_one(self, left: pl.DataFrame, p: int) -> pl.DataFrame:
        right = self._right[p]
        if right is None or left.is_empty():
            return left.clear() if self._how == "inner" else left
        marker = f"__matched{p}"
        keys = {self._on, *self._by}
        for c in self._by:
            if left.schema[c] != right.schema[c]:
                raise self.fail(
                    f"key column {c!r} is {left.schema[c]} in {self._names[0]!r} "
                    f"but {right.schema[c]} in {self._names[p]!r}",
                    "cast one of them (assign) so the by= columns have the same type",
                )
        rename = {
            c: f"{c}_{self._names[p]}" for c in right.columns if c not in keys and c in left.columns
        }
        right = right.rename(rename).with_columns(pl.lit(True).alias(marker))
        out = left.join_asof(
            right,
            on=self._on,
            by=self._by or None,
            strategy="backward",
            tolerance=self._tol,
            check_sortedness=False,  # each input is sorted on `on`; by= groups stay sorted
        )
        if self._how == "inner":
            out = out.filter(pl.col(marker).is_not_null())
        return out.drop(marker)

    def _prune(self, remaining: pl.DataFrame) -> None:
        """Drop the rows of the other inputs no future left row can match."""
        if remaining.is_empty():
            return
        lo = remaining.get_column(self._on).min()
        for p in range(1, len(self._right)):
            r = self._right[p]
            if r is None or r.is_empty():
                continue
            ts = pl.col(self._on)
            if self._tol is not None:
                self._right[p] = r.filter(ts >= lo - self._tol)  # type: ignore[operator]
            elif self._by:  # keep, per key, the latest row at or before `lo` and all after
                keep_from = ts.filter(ts <= lo).max().over(self._by)
                self._right[p] = r.filter(keep_from.is_null() | (ts >= keep_from))
            else:
                before = r.filter(ts <= lo)
                keep_from = before.get_column(self._on).max() if before.height else None
                if keep_from is not None:
                    self._right[p] = r.filter(ts >= keep_from)


COMPONENTS: list[type[Component]] = [
    Filter,
    Select,
    Assign,
    Split,
    Resample,
    Impute,
    Window,
    Join,
]
