"""The stream's core without a broker: readings in, completed steps and forecasts out.

`StreamEngine.process(rows)` takes parsed readings (what `MqttMapping.parse_payload`
returns: ``ts`` in µs, key columns, value columns), routes every value to the step buffer
of each model frequency that reads its series, completes the steps the watermark has
passed, and predicts, per model in one batch, from every window that completed. Forecasts
and completed step values go to the `on_forecasts` / `on_actuals` callbacks (the runner
publishes them and appends them to the lake); the benchmark drives the engine directly.
`StreamEngine.process_columns` does the same for the columns of
:class:`~tsloom.stream.intake.BatchParser` with numpy instead of a loop over rows.

A series is bound to model features once, when first seen. The feature rules are indexed
by (column, label) so binding looks up the few rules that can match instead of testing
every feature of every model: with 10 000 series and 100 models of 100 features each, a
scan is 10⁸ rule tests (minutes during which the broker drops messages), the index a few
dictionary lookups per series.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from tsloom.stream.buffers import StepBuffer
from tsloom.stream.config import StreamConfig
from tsloom.stream.models import BoundModel, predict_windows, series_name

log = logging.getLogger(__name__)

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_INDEXED_KEYS = 10  # beyond it a series' key subsets are too many: scan the rules


def utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


@dataclass(frozen=True)
class Forecast:
    """One model's forecast issued at one completed step."""

    model: BoundModel
    issued_us: int  # grid time of the window's last step
    ts_us: np.ndarray  # predicted grid times
    horizons: np.ndarray  # steps ahead, 1-based
    values: np.ndarray  # original units

    @property
    def issued(self) -> datetime:
        return utc(self.issued_us)


@dataclass
class EngineStats:
    readings: int = 0  # values taken from rows
    unbound: int = 0  # values of series no model reads
    series_dropped: int = 0  # values of new series beyond max_series
    late: int = 0  # values for steps already completed
    steps: int = 0  # steps completed (summed over frequencies)
    windows_incomplete: int = 0  # model windows with a missing value: not predicted
    forecasts: int = 0  # model forecasts issued
    forecast_values: int = 0  # forecast rows (forecasts × horizons)


@dataclass
class _Group:
    index: int
    buffer: StepBuffer
    models: list[BoundModel] = field(default_factory=list)
    features: list[str] = field(default_factory=list)  # per slot: the feature name
    feature_array: np.ndarray | None = None
    slots: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


ForecastCallback = Callable[[list[Forecast]], None]
ActualsCallback = Callable[[int, np.ndarray, np.ndarray], None]
"""on_actuals(grid time µs, feature names, values) of one completed step."""


class StreamEngine:
    """Routes readings to step buffers and predicts on completed steps."""

    def __init__(
        self,
        config: StreamConfig,
        models: Sequence[BoundModel],
        *,
        on_forecasts: ForecastCallback | None = None,
        on_actuals: ActualsCallback | None = None,
    ) -> None:
        self.config = config
        self.models = list(models)
        self.on_forecasts = on_forecasts
        self.on_actuals = on_actuals
        self.stats = EngineStats()
        mapping = config.mapping
        self._keys = mapping.key_columns
        self._values = mapping.value_columns
        self._dataset = config.dataset
        self.groups: list[_Group] = []  # one per model frequency, made by _regroup
        self._group_of: dict[int, _Group] = {}
        self._pending: list[tuple[BoundModel, int, np.ndarray]] = []
        self._regroup()

    def _index_rules(self) -> None:
        """(column, label items) → the (model position, rule index) pairs with that label;
        explicit series name → pairs; what `_candidates` looks a series up in."""
        self._explicit: dict[str, list[tuple[int, int]]] = {}
        self._by_label: dict[tuple[str, frozenset], list[tuple[int, int]]] = {}
        for mi, m in enumerate(self.models):
            for ri, rule in enumerate(m.rules):
                if rule.explicit is not None:
                    self._explicit.setdefault(rule.explicit, []).append((mi, ri))
                elif self._dataset is None or rule.dataset == self._dataset:
                    key = (rule.column, frozenset(rule.label.items()))
                    self._by_label.setdefault(key, []).append((mi, ri))

    def _candidates(self, name: str, column: str, keys: list[tuple[str, str]]) -> list:
        """The rules that may match a series, in model then feature order (the order a scan
        of every rule would meet them in); `FeatureRule.matches` still decides."""
        if len(keys) > _MAX_INDEXED_KEYS:
            return [(mi, ri) for mi, m in enumerate(self.models) for ri in range(len(m.rules))]
        found: set[tuple[int, int]] = set()
        short = name.split(".", 2)[-1] if self._dataset else name
        for alias in {name, short}:
            found.update(self._explicit.get(alias, ()))
        by_label = self._by_label
        for size in range(len(keys) + 1):
            for subset in itertools.combinations(keys, size):
                found.update(by_label.get((column, frozenset(subset)), ()))
        return sorted(found)

    # -- routing ---------------------------------------------------------------------

    def _route(self, keyvals: tuple) -> list[list[tuple[int, int]]] | None:
        if len(self._routes) >= self.config.max_series:
            return None
        keys = [(k, str(v)) for k, v in zip(self._keys, keyvals, strict=True)]
        key_map = dict(keys)
        routes: list[list[tuple[int, int]]] = []
        for column in self._values:
            name = series_name(self._dataset, column, keys)
            found: list[tuple[int, int]] = []
            for mi, i in self._candidates(name, column, keys):
                m = self.models[mi]
                group = self._group_of[m.index]
                rule = m.rules[i]
                if not rule.matches(name, self._dataset, column, key_map):
                    continue
                current = m.slots[i]
                if current is not None and group.buffer.names[current] != name:
                    if name not in m.ambiguous:
                        m.ambiguous.add(name)
                        log.warning(
                            "stream: series %s also matches feature %s of model %s, "
                            "which already reads %s; ignored for it (map it under "
                            "`features:`)",
                            name,
                            rule.feature,
                            m.ref,
                            group.buffer.names[current],
                        )
                    continue
                try:
                    slot = group.buffer.slot(name)
                except OverflowError:
                    continue
                if slot == len(group.features):
                    group.features.append(rule.feature)
                    group.feature_array = None
                if current is None:
                    m.slots[i] = slot
                    m._slot_array = None
                    log.info("stream: model %s reads %s as %s", m.name, name, rule.feature)
                if (group.index, slot) not in found:
                    found.append((group.index, slot))
            routes.append(found)
        self._routes[keyvals] = routes
        return routes

    # -- input -----------------------------------------------------------------------

    def process(self, rows: Sequence[dict[str, Any]]) -> list[Forecast]:
        """Take readings, complete the steps they close, predict; returns the forecasts
        (also passed to `on_forecasts`)."""
        keys, values, routes_of = self._keys, self._values, self._routes
        groups = self.groups
        stats = self.stats
        for row in rows:
            keyvals = tuple([row[k] for k in keys])
            routes = routes_of.get(keyvals)
            if routes is None:
                routes = self._route(keyvals)
                if routes is None:
                    stats.series_dropped += len(values)
                    continue
            ts = row["ts"]
            for column, route in zip(values, routes, strict=True):
                value = row[column]
                if value is None:
                    continue
                if not route:
                    stats.unbound += 1
                    continue
                stats.readings += 1
                for gi, slot in route:
                    g = groups[gi]
                    g.slots.append(slot)
                    g.ts.append(ts)
                    g.values.append(value)
        return self.flush_input()

    def process_columns(
        self,
        ts_us: Sequence[int],
        keys: Sequence[Sequence[Any]],
        values: Sequence[Sequence[float | None]],
    ) -> list[Forecast]:
        """:meth:`process` for readings as columns (``ts`` in µs, one list per key column
        and per value column, in the mapping's order; None for a missing value): the same
        steps, counts and forecasts, with the routing done by array lookups."""
        n = len(ts_us)
        if n == 0:
            return self.flush_input()
        stats = self.stats
        sid_of = self._sid_of
        if len(keys) == 1:
            series: Sequence[Any] = keys[0]
            as_tuple = False
        else:
            series = list(zip(*keys, strict=True)) if keys else [()] * n
            as_tuple = True
        batch: dict[Any, int] = {}
        for kv in dict.fromkeys(series):
            sid = sid_of.get(kv)
            if sid is None:
                routes = self.route_keys(kv if as_tuple else (kv,))
                if routes is not None:
                    sid = self._new_series(kv, routes)
            batch[kv] = -1 if sid is None else sid
        sids = np.fromiter(map(batch.__getitem__, series), dtype=np.int64, count=n)
        ts = np.asarray(ts_us, dtype=np.int64)
        vals = np.array(values, dtype=np.float64).T  # (n, columns); None → NaN
        present = ~np.isnan(vals)
        dropped = sids < 0
        if dropped.any():
            stats.series_dropped += int(dropped.sum()) * len(self._values)
            present &= ~dropped[:, None]
        table = self._slot_table[:, :, sids]  # (columns, groups, n)
        routed = present & (table >= 0).any(axis=1).T
        stats.readings += int(routed.sum())
        stats.unbound += int(present.sum()) - int(routed.sum())
        ts2 = np.broadcast_to(ts[:, None], vals.shape)
        self.flush_input()  # readings `process` may have left (none: it flushes)
        for g in self.groups:
            slots = table[:, g.index, :].T  # (n, columns)
            mask = present & (slots >= 0)
            if mask.any():  # row-major: the order `process` feeds the buffer in
                stats.late += g.buffer.add(
                    slots[mask], ts2[mask], vals[mask], on_step=self._on_step
                )
        return self._predict()

    def _new_series(self, kv: Any, routes: list[list[tuple[int, int]]]) -> int:
        sid = len(self._sid_of)
        if sid >= self._slot_table.shape[2]:
            grown = np.full((*self._slot_table.shape[:2], 2 * sid), -1, np.int64)
            grown[:, :, :sid] = self._slot_table
            self._slot_table = grown
        for c, route in enumerate(routes):
            for gi, slot in route:
                self._slot_table[c, gi, sid] = slot
        self._sid_of[kv] = sid
        return sid

    def process_arrays(
        self, group: int, slots: np.ndarray, ts_us: np.ndarray, values: np.ndarray
    ) -> list[Forecast]:
        """Vectorised input for one frequency group (slots from :meth:`route_keys`),
        skipping the per-row routing: for producers that already hold arrays."""
        g = self.groups[group]
        self.stats.readings += int(np.asarray(values).size)
        self.stats.late += g.buffer.add(slots, ts_us, values, on_step=self._on_step)
        return self._predict()

    def route_keys(self, keyvals: tuple) -> list[list[tuple[int, int]]] | None:
        """The (group, slot) pairs per value column of a series' key values (bound now)."""
        return self._routes.get(keyvals) or self._route(keyvals)

    def flush_input(self) -> list[Forecast]:
        for g in self.groups:
            if g.slots:
                slots = np.fromiter(g.slots, dtype=np.int64, count=len(g.slots))
                ts = np.fromiter(g.ts, dtype=np.int64, count=len(g.ts))
                vals = np.fromiter(g.values, dtype=np.float64, count=len(g.values))
                g.slots, g.ts, g.values = [], [], []
                self.stats.late += g.buffer.add(slots, ts, vals, on_step=self._on_step)
        return self._predict()

    def advance(self, ts_us: int) -> list[Forecast]:
        """Move every watermark to a reading time `ts_us` (a heartbeat without values)."""
        for g in self.groups:
            g.buffer.advance(ts_us, on_step=self._on_step)
        return self._predict()

    # -- completed steps -------------------------------------------------------------

    def _on_step(
        self, buffer: StepBuffer, step: int, observed: np.ndarray, filled: np.ndarray
    ) -> None:
        self.stats.steps += 1
        group = self._by_buffer[id(buffer)]
        if self.on_actuals is not None:
            seen = ~np.isnan(observed)
            if seen.any():
                if group.feature_array is None or len(group.feature_array) != len(group.features):
                    group.feature_array = np.asarray(group.features, dtype=object)
                names = group.feature_array[: observed.size]
                self.on_actuals(buffer.grid_time(step), names[seen], observed[seen])
        for m in group.models:
            if not m.ready:
                continue
            window = buffer.window_of(step, m.slot_array, m.steps)
            if np.isnan(window).any():
                self.stats.windows_incomplete += 1
                continue
            self._pending.append((m, step, window))

    def _predict(self) -> list[Forecast]:
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        by_model: dict[int, list[tuple[BoundModel, int, np.ndarray]]] = {}
        for item in pending:
            by_model.setdefault(item[0].index, []).append(item)
        out: list[Forecast] = []
        for items in by_model.values():
            m = items[0][0]
            p = m.params
            freq = p.freq // _US
            preds = predict_windows(m.model, np.stack([w for _, _, w in items]))
            if p.output == "step":
                horizons = np.arange(1, p.output_steps + 1, dtype=np.int64)
            else:
                horizons = np.asarray([p.output_steps], dtype=np.int64)
            for (_, step, _), values in zip(items, preds, strict=True):
                issued = step * freq
                out.append(Forecast(m, issued, issued + horizons * freq, horizons, values))
        out.sort(key=lambda f: (f.issued_us, f.model.index))
        self.stats.forecasts += len(out)
        self.stats.forecast_values += sum(f.values.size for f in out)
        if self.on_forecasts is not None and out:
            self.on_forecasts(out)
        return out

    # -- model swaps -----------------------------------------------------------------

    def swap_model(self, new: BoundModel) -> bool:
        """Put `new` in place of the model of the same `index` (a stage alias now points
        to it), between steps. With the same features and frequency it takes over the old
        model's series slots and buffers: the next completed step is predicted by it, no
        gap (the history grows if its window is longer). Otherwise it is bound afresh: to
        the buffer of its frequency (its history kept; a new, empty one for a frequency no
        model had) and, as series are seen again, to its features; every series is routed
        again. Returns whether the old model's slots were kept."""
        pos = next((i for i, m in enumerate(self.models) if m.index == new.index), None)
        if pos is None:
            raise KeyError(f"no stream model with index {new.index}")
        self.flush_input()  # steps completed before the swap are the old model's
        old = self.models[pos]
        group = self._group_of[old.index]
        same = old.params.freq == new.params.freq and list(old.params.features) == list(
            new.params.features
        )
        if same:
            new.slots = list(old.slots)
            new._slot_array = None
            new.group = group.buffer
            group.buffer.ensure_window(new.steps)
            group.models = [new if m is old else m for m in group.models]
            self.models[pos] = new
            self._index_rules()
            return True
        group.models = [m for m in group.models if m is not old]
        self.models[pos] = new
        self._regroup()
        return False

    def _regroup(self) -> None:
        """The groups, at start and after a model changed frequency or features: a buffer
        per frequency in use (kept where it exists, dropped when no model reads it), rules
        re-indexed and every series routed again when next seen."""
        by_freq = {g.buffer.freq_us: g for g in self.groups}  # history kept per frequency
        offset = self.config.bucket_offset // _US
        for m in self.models:
            freq = m.params.freq // _US
            group = by_freq.get(freq)
            if group is None:
                buffer = StepBuffer(
                    freq,
                    window=m.steps,
                    lateness_us=self.config.allowed_lateness.micros(freq),
                    offset_us=offset,
                    aggregate=self.config.aggregate,
                    fill_limit=self.config.fill_limit,
                    max_series=self.config.max_series,
                )
                group = by_freq[freq] = _Group(0, buffer)
            if not any(x is m for x in group.models):
                group.models.append(m)
                m.slots = [None] * len(m.rules)
                m._slot_array = None
            group.buffer.ensure_window(m.steps)
            m.group = group.buffer
            self._group_of[m.index] = group
        self.groups = [g for g in by_freq.values() if g.models]
        for i, g in enumerate(self.groups):
            g.index = i
        self._by_buffer = {id(g.buffer): g for g in self.groups}
        self._index_rules()
        # key values → per value column: (group index, slot) pairs
        self._routes: dict[tuple, list[list[tuple[int, int]]]] = {}
        # columnar input: key value(s) → series id → slot per (value column, group), -1: none
        self._sid_of: dict[Any, int] = {}
        self._slot_table = np.full((len(self._values), len(self.groups), 1024), -1, np.int64)

    # -- state -----------------------------------------------------------------------

    def buffer_sizes(self) -> list[Any]:
        return [g.buffer.sizes() for g in self.groups]
