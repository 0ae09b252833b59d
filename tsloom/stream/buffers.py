"""Per-series step buffers in event time, with bounded memory.

A :class:`StepBuffer` holds every series that models of one reference frequency read.
Time is cut into steps: step ``k`` stands for grid time ``T = k·freq`` (UTC, from the Unix
epoch, as the integration's grid) and holds the readings with
``T - offset <= ts < T - offset + freq``; readings that fall in one step are combined
(mean by default).

Steps complete in event time, never by the wall clock: the *watermark* is the latest
reading time seen minus the allowed lateness, and a step completes once the watermark
passes its end. Until then late and out-of-order readings are still added to it; a reading
whose step the watermark had already passed when it arrived (in arrival order, also within
one batch) is counted in :attr:`StepBuffer.late` and dropped. Steps complete, and
`on_step` is called for each in order, at the end of each :meth:`StepBuffer.add` call
(one batch of MQTT messages).

Memory is fixed by the number of series: an open-step ring of ``lateness + 2`` steps and a
history ring of the longest model window, each an array (steps × series). A completed
step's value is its aggregate; a series without readings in a step carries its last value
over at most `fill_limit` steps, after that it is missing (NaN) and windows holding it are
not predicted from. A jump in time longer than both rings clears them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CompletedCallback = Callable[["StepBuffer", int, np.ndarray, np.ndarray], None]
"""on_step(buffer, step, observed, filled): `observed` is the aggregate per slot (NaN where
no reading fell in the step), `filled` the value the history keeps (observed, or carried)."""

_AGGREGATES = ("mean", "sum", "min", "max", "last")


@dataclass(frozen=True)
class BufferSizes:
    """The buffer's footprint, for tests and metrics: it must not grow with time."""

    open_steps: int
    history_steps: int
    series_capacity: int
    nbytes: int


class StepBuffer:
    """Step aggregates of many series at one frequency; see the module docstring."""

    def __init__(
        self,
        freq_us: int,
        *,
        window: int,
        lateness_us: int = 0,
        offset_us: int = 0,
        aggregate: str = "mean",
        fill_limit: int = 1,
        capacity: int = 64,
        max_series: int = 1_000_000,
    ) -> None:
        if freq_us <= 0:
            raise ValueError("freq_us must be positive")
        if window < 1:
            raise ValueError("window must be at least 1 step")
        if lateness_us < 0:
            raise ValueError("lateness_us must not be negative")
        if aggregate not in _AGGREGATES:
            raise ValueError(f"aggregate must be one of {_AGGREGATES}, not {aggregate!r}")
        self.freq_us = int(freq_us)
        self.lateness_us = int(lateness_us)
        self.offset_us = int(offset_us)
        self.aggregate = aggregate
        self.fill_limit = int(fill_limit)
        self.max_series = int(max_series)
        self.window = int(window)
        self.ring = -(-self.lateness_us // self.freq_us) + 2  # open steps at most + 1
        self.n = 0  # series slots in use
        self.names: list[str] = []
        self._slot_of: dict[str, int] = {}
        self.first_open: int | None = None  # the oldest step not yet completed
        self.max_ts: int | None = None
        self.late = 0  # readings dropped: their step had completed
        self.completed = 0  # steps completed
        self.skipped = 0  # steps passed over by a jump in time
        self.readings = 0  # readings taken into an open step
        self._started = False  # has a step with readings completed yet?
        self._alloc(max(1, min(int(capacity), self.max_series)))

    # -- storage ---------------------------------------------------------------------

    def _alloc(self, cap: int) -> None:
        old = getattr(self, "_cap", 0)
        self._cap = cap

        def grow(arr: np.ndarray | None, rows: int, fill: float) -> np.ndarray:
            new = np.full((rows, cap), fill, dtype=np.float64)
            if arr is not None and old:
                new[:, :old] = arr
            return new

        fresh = old == 0
        self._sum = grow(None if fresh else self._sum, self.ring, 0.0)
        self._count = grow(None if fresh else self._count, self.ring, 0.0)
        if self.aggregate in ("min", "max", "last"):
            start = {"min": np.inf, "max": -np.inf, "last": np.nan}[self.aggregate]
            self._ext = grow(None if fresh else self._ext, self.ring, start)
            self._ext_ts = grow(None if fresh else self._ext_ts, self.ring, -np.inf)
        self._hist = grow(None if fresh else self._hist, self.window, np.nan)
        last = np.full(cap, np.nan)
        age = np.zeros(cap, dtype=np.int64)
        if not fresh:
            last[:old], age[:old] = self._last, self._age
        self._last, self._age = last, age

    def slot(self, name: str) -> int:
        """The slot of series `name`, made on first use; raises OverflowError past
        `max_series`."""
        found = self._slot_of.get(name)
        if found is not None:
            return found
        if self.n >= self.max_series:
            raise OverflowError(f"more than {self.max_series} series")
        if self.n >= self._cap:
            self._alloc(min(self._cap * 2, self.max_series))
        slot = self.n
        self.n += 1
        self._slot_of[name] = slot
        self.names.append(name)
        return slot

    def ensure_window(self, window: int) -> None:
        """Keep at least `window` completed steps (a model with a longer input joined)."""
        if window <= self.window:
            return
        hist = np.full((window, self._cap), np.nan)
        if self.first_open is not None:
            for k in range(max(0, self.first_open - self.window), self.first_open):
                hist[k % window] = self._hist[k % self.window]
        self._hist, self.window = hist, window

    def sizes(self) -> BufferSizes:
        arrays = [self._sum, self._count, self._hist, self._last, self._age]
        if self.aggregate in ("min", "max", "last"):
            arrays += [self._ext, self._ext_ts]
        return BufferSizes(
            open_steps=self.ring,
            history_steps=self.window,
            series_capacity=self._cap,
            nbytes=sum(a.nbytes for a in arrays),
        )

    # -- time ------------------------------------------------------------------------

    def step_of(self, ts_us: int) -> int:
        return (int(ts_us) + self.offset_us) // self.freq_us

    def grid_time(self, step: int) -> int:
        """The grid time (µs since the epoch) that step `step` stands for."""
        return int(step) * self.freq_us

    @property
    def watermark(self) -> int | None:
        return None if self.max_ts is None else self.max_ts - self.lateness_us

    def _last_complete(self) -> int:
        assert self.max_ts is not None
        return (self.max_ts - self.lateness_us + self.offset_us) // self.freq_us - 1

    # -- input -----------------------------------------------------------------------

    def add(
        self,
        slots: np.ndarray,
        ts_us: np.ndarray,
        values: np.ndarray,
        on_step: CompletedCallback | None = None,
    ) -> int:
        """Take readings (slot, time in µs, value), then complete every step the watermark
        has passed, calling `on_step` for each in order. Returns the number of readings
        dropped as too late. NaN values are ignored."""
        slots = np.asarray(slots, dtype=np.int64)
        ts = np.asarray(ts_us, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float64)
        keep = ~np.isnan(vals)
        if not keep.all():
            slots, ts, vals = slots[keep], ts[keep], vals[keep]
        if ts.size == 0:
            return 0
        steps = (ts + self.offset_us) // self.freq_us
        if self.first_open is None:
            self.max_ts = int(ts[0])
            self.first_open = self._last_complete() + 1
        # The watermark each reading met on arrival: the latest time that arrived before it.
        before = np.maximum.accumulate(np.r_[self.max_ts, ts[:-1]])
        done = (before - self.lateness_us + self.offset_us) // self.freq_us - 1
        late = steps <= done
        dropped = int(late.sum())
        if dropped:
            self.late += dropped
            keep = ~late
            slots, ts, vals, steps = slots[keep], ts[keep], vals[keep], steps[keep]
        while steps.size:
            fit = steps < self.first_open + self.ring
            every = bool(fit.all())
            if every:
                self._accumulate(slots, steps, ts, vals)
            elif fit.any():
                self._accumulate(slots[fit], steps[fit], ts[fit], vals[fit])
            if fit.any():
                self.max_ts = max(self.max_ts, int(ts[fit].max()))  # type: ignore[type-var]
                self._complete(on_step)
            if every:
                break
            rest = ~fit
            slots, ts, vals, steps = slots[rest], ts[rest], vals[rest], steps[rest]
            # the earliest reading beyond the open steps moves the watermark up to it
            self.max_ts = max(self.max_ts, int(ts.min()))  # type: ignore[type-var]
            self._complete(on_step)
        return dropped

    def advance(self, ts_us: int, on_step: CompletedCallback | None = None) -> None:
        """Move the watermark as if a reading at `ts_us` had arrived (a heartbeat)."""
        if self.first_open is None:
            self.max_ts = int(ts_us)
            self.first_open = self._last_complete() + 1
            return
        if int(ts_us) > self.max_ts:  # type: ignore[operator]
            self.max_ts = int(ts_us)
            self._complete(on_step)

    def _accumulate(
        self, slots: np.ndarray, steps: np.ndarray, ts: np.ndarray, vals: np.ndarray
    ) -> None:
        rows = steps % self.ring
        self.readings += int(vals.size)
        np.add.at(self._count, (rows, slots), 1.0)
        agg = self.aggregate
        if agg in ("mean", "sum"):
            np.add.at(self._sum, (rows, slots), vals)
        elif agg == "min":
            np.minimum.at(self._ext, (rows, slots), vals)
        elif agg == "max":
            np.maximum.at(self._ext, (rows, slots), vals)
        else:  # last: the reading with the latest time (the latest arrival on a tie)
            flat = rows * self._cap + slots
            order = np.lexsort((np.arange(flat.size), ts, flat))
            flat, ts, vals = flat[order], ts[order], vals[order]
            final = np.r_[flat[1:] != flat[:-1], True]
            flat, ts, vals = flat[final], ts[final].astype(np.float64), vals[final]
            ext, ext_ts = self._ext.reshape(-1), self._ext_ts.reshape(-1)
            newer = ts >= ext_ts[flat]
            ext[flat[newer]] = vals[newer]
            ext_ts[flat[newer]] = ts[newer]

    # -- completion ------------------------------------------------------------------

    def _complete(self, on_step: CompletedCallback | None) -> None:
        assert self.first_open is not None
        last = self._last_complete()
        if last - self.first_open + 1 > self.ring + self.window:
            # a jump longer than both rings: complete what the open steps hold, then clear
            for k in range(self.first_open, self.first_open + self.ring):
                self._complete_one(k, on_step)
            self.skipped += last - (self.first_open + self.ring) + 1
            self._hist[:] = np.nan
            self._last[:] = np.nan
            self._age[:] = 0
            self.first_open = last + 1
            return
        while self.first_open <= last:
            self._complete_one(self.first_open, on_step)
            self.first_open += 1

    def _complete_one(self, step: int, on_step: CompletedCallback | None) -> None:
        n = self.n
        row = step % self.ring
        count = self._count[row, :n]
        seen = count > 0
        if not self._started:
            if not seen.any():  # steps before the first reading's: nothing to say
                return
            self._started = True
        if self.aggregate in ("mean", "sum"):
            total = self._sum[row, :n]
            if self.aggregate == "mean":
                with np.errstate(invalid="ignore", divide="ignore"):
                    observed = np.where(seen, total / np.where(seen, count, 1.0), np.nan)
            else:
                observed = np.where(seen, total, np.nan)
            self._sum[row, :n] = 0.0
        else:
            observed = np.where(seen, self._ext[row, :n], np.nan)
            self._ext[row, :n] = {"min": np.inf, "max": -np.inf, "last": np.nan}[self.aggregate]
            self._ext_ts[row, :n] = -np.inf
        self._count[row, :n] = 0.0
        filled = observed.copy()
        if self.fill_limit > 0:
            missing = ~seen
            age = self._age[:n]
            age[missing] += 1
            carry = missing & (age <= self.fill_limit)
            filled[carry] = self._last[:n][carry]
            age[seen] = 0
            self._last[:n][seen] = observed[seen]
        self._hist[step % self.window, :n] = filled
        self.completed += 1
        if on_step is not None:
            on_step(self, step, observed, filled)

    # -- windows ---------------------------------------------------------------------

    def window_of(self, step: int, slots: np.ndarray | list[int], length: int) -> np.ndarray:
        """The last `length` completed values (length, len(slots)) up to and including
        `step`, oldest first; call it from `on_step` (the history ring moves on)."""
        if length > self.window:
            raise ValueError(f"window {length} is longer than the history ({self.window})")
        rows = np.arange(step - length + 1, step + 1) % self.window
        return self._hist[np.ix_(rows, np.asarray(slots, dtype=np.int64))]
