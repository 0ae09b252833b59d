"""A batch of MQTT messages → columns of readings, the same rows `MqttMapping` gives, fast.

`MqttMapping.parse_payload` builds one dict per reading through several Python calls; at
100 000 readings/s that alone fills a core. :class:`BatchParser` decodes each payload
with ``json.loads`` and takes whole fields at once (one list per field, types checked per
column), which is exact for the common shape — flat fields, numeric times, integer or
string keys, numeric values. Any message it cannot vouch for (nested or missing fields,
ISO or string times, string values, non-finite numbers, times out of range, not JSON…)
goes through ``MqttMapping.parse_payload`` itself, so the rows, and the reasons a message
is refused, are the mapping's own. A message is taken whole or counted as malformed;
nothing in a payload stops the stream.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tsloom.sources.mqtt import MalformedMessage, MqttMapping

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_FACTOR = {"s": 1_000_000, "ms": 1_000, "us": 1}
_NUMBERS = frozenset({int, float})
_VALUES = frozenset({int, float, type(None)})
_KEYS = frozenset({int, str})


@dataclass
class Columns:
    """Readings as columns: ``ts`` (µs since the epoch), one list per key column and per
    value column (``MqttMapping.key_columns`` / ``value_columns`` order; None where a
    value is null)."""

    key_names: list[str]
    value_names: list[str]
    ts: list[int] = field(default_factory=list)
    keys: list[list[Any]] = field(default_factory=list)
    values: list[list[float | None]] = field(default_factory=list)
    messages: int = 0
    malformed: int = 0
    slow: int = 0  # messages that went through MqttMapping.parse_payload
    problems: list[tuple[str, str]] = field(default_factory=list)  # (topic, reason), first few

    def __post_init__(self) -> None:
        self.keys = self.keys or [[] for _ in self.key_names]
        self.values = self.values or [[] for _ in self.value_names]

    def __len__(self) -> int:
        return len(self.ts)

    def rows(self) -> list[dict[str, Any]]:
        """As `MqttMapping.parse_payload` rows (for tests and small consumers)."""
        names = ["ts", *self.key_names, *self.value_names]
        columns = zip(self.ts, *self.keys, *self.values, strict=True)
        return [dict(zip(names, row, strict=True)) for row in columns]


class BatchParser:
    """Parses batches of (topic, payload) with an `MqttMapping`; see the module docstring."""

    def __init__(self, mapping: MqttMapping, *, max_problems: int = 20) -> None:
        self.mapping = mapping
        self.max_problems = max_problems
        self._fast = mapping.time_unit != "iso"
        self._time = mapping.time
        self._factor = _FACTOR.get(mapping.time_unit, 1)
        self._keys = list(mapping.keys)
        self._unit = mapping.unit_field
        self._topic = mapping.topic_key is not None
        self._values = list(mapping.values)

    def new_columns(self) -> Columns:
        return Columns(list(self.mapping.key_columns), list(self.mapping.value_columns))

    def parse(self, messages: Iterable[tuple[str, bytes]], into: Columns | None = None) -> Columns:
        """Append the readings of `messages` to `into` (a new `Columns` if None)."""
        out = into if into is not None else self.new_columns()
        for topic, payload in messages:
            out.messages += 1
            if self._fast and self._columns(payload, topic, out):
                continue
            out.slow += 1
            try:
                rows = self.mapping.parse_payload(payload, topic)
            except MalformedMessage as exc:
                self._refuse(out, topic, exc.reason)
                continue
            except Exception as exc:  # a payload must never stop the stream
                self._refuse(out, topic, f"cannot be read ({type(exc).__name__}: {exc})")
                continue
            out.ts.extend(r["ts"] for r in rows)
            for name, column in zip(out.key_names, out.keys, strict=True):
                column.extend(r[name] for r in rows)
            for name, column in zip(out.value_names, out.values, strict=True):
                column.extend(r[name] for r in rows)
        return out

    def _refuse(self, out: Columns, topic: str, reason: str) -> None:
        out.malformed += 1
        if len(out.problems) < self.max_problems:
            out.problems.append((topic, reason))

    def _columns(self, payload: bytes, topic: str, out: Columns) -> bool:
        """Append one message's readings if it has the common shape; False (nothing
        appended) if the mapping must decide."""
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            return False
        if type(doc) is dict:
            items = [doc]
        elif type(doc) is list and doc:
            items = doc
        else:
            return False
        try:  # a non-object reading or a missing (or nested) field: TypeError / KeyError
            t = [d[self._time] for d in items]
            keys = [[d[k] for d in items] for k in self._keys]
            unit = [d[self._unit] for d in items] if self._unit else None
            values = [[d[v] for d in items] for v in self._values]
        except (KeyError, TypeError):
            return False
        ts = self._micros(t)
        if ts is None:
            return False
        for column in keys:
            if not set(map(type, column)) <= _KEYS:
                return False
        if unit is not None:
            if set(map(type, unit)) != {str} or not all(unit):
                return False
            keys.append(unit)
        if self._topic:
            keys.append([topic] * len(items))
        floats = []
        for column in values:
            kinds = set(map(type, column))
            if kinds == {float}:
                if not all(map(math.isfinite, column)):
                    return False
                floats.append(column)
                continue
            if not kinds <= _VALUES:
                return False
            try:
                converted = [None if x is None else float(x) for x in column]
            except OverflowError:
                return False
            if not all(math.isfinite(x) for x in converted if x is not None):
                return False
            floats.append(converted)
        out.ts.extend(ts)
        for target, column in zip(out.keys, keys, strict=True):
            target.extend(column)
        for target, column in zip(out.values, floats, strict=True):
            target.extend(column)
        return True

    def _micros(self, t: list[Any]) -> list[int] | None:
        """Times in µs as `MqttMapping` computes them, or None to let it decide."""
        kinds = set(map(type, t))
        unit = self.mapping.time_unit
        if kinds == {int}:
            if unit == "ns":
                us = [x // 1000 for x in t]
            else:
                f = self._factor
                us = t if f == 1 else [x * f for x in t]
        elif kinds <= _NUMBERS and unit != "ns":
            try:
                if not all(map(math.isfinite, t)):
                    return None
            except OverflowError:
                return None
            f = self._factor
            us = [x * f if type(x) is int else round(x * f) for x in t]
        else:
            return None
        if min(us) < _MIN_US or max(us) > _MAX_US:
            return None
        return us
