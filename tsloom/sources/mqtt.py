"""MQTT ingestion: JSON sensor readings from broker topics into the lake, losing none.

A reading such as
``{"ss_id": 2, "event_time": 1669102545000, "input_data": 460.0, "unit": "ppm"}`` is
turned into one lake row by an `MqttMapping` (which field is the time and in which unit,
which fields are keys, which are values, where units come from). Readings are collected
into batches that commit to the lake when they reach `batch_size` rows or `batch_age`,
and once more when the ingestor stops.

Data safety. The client keeps a persistent broker session (fixed client id, clean start
off, a session that does not expire), subscribes with QoS 1 and acknowledges each message
by hand (paho's ``manual_ack``) only after the batch holding it is committed to the lake.
A crash before that commit leaves the messages unacknowledged, so the broker delivers them
again on the next start; messages published while the ingestor is down are queued by the
broker and delivered at the next start. Redelivered readings are harmless because the
lake's append is idempotent (rows are identified by keys + ts).

Malformed messages (not JSON, missing fields, non-numeric values, unreadable times) do
not stop the ingestor: they are counted, logged with topic and reason, appended to a
dead-letter JSON-lines file under the tsloom home, and acknowledged with their batch.

MQTT v5 is used by default: its Receive Maximum (set to the largest value, 65535) lets
the broker send whole batches of unacknowledged messages, which wait in memory while a
batch commits rather than overflowing the broker's queue. With ``protocol="3.1.1"`` the
broker's own in-flight limit applies (Mosquitto: 20 messages), so batches larger than that
are committed by age. Brokers drop QoS 1 messages beyond their per-client queue limit
(Mosquitto's ``max_queued_messages``, default 1000) whatever the client does; raise it for
bursts or long outages.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tsloom.config import Settings, load_settings, read_yaml_file
from tsloom.errors import ConfigError, SourceError, validation_problems

log = logging.getLogger(__name__)

TimeUnit = Literal["s", "ms", "us", "ns", "iso"]
KeyType = Literal["int", "str"]
_RESERVED = frozenset({"ts", "year", "month", "day"})
_FACTOR_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QOS = 1
_MAX_RECEIVE = 65_535
_LOG_MALFORMED_PER_BATCH = 20


# --------------------------------------------------------------------------------------
# mapping


class MqttMapping(BaseModel):
    """How a JSON payload becomes a lake row.

    Field names may be dotted paths into nested objects (``data.temp``); the lake column
    is the path with ``.`` replaced by ``_``. A payload may hold one reading (an object)
    or several (an array of objects).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: str = Field(description="payload field holding the reading's time")
    time_unit: TimeUnit = Field(
        "ms", description="s, ms, us or ns since the Unix epoch, or iso for ISO 8601 strings"
    )
    tz: str | None = Field(
        None, description="time zone of ISO times written without an offset (default UTC)"
    )
    keys: list[str] = Field(default_factory=list, description="fields identifying the series")
    key_types: dict[str, KeyType] = Field(
        default_factory=dict,
        description="int or str per key field; undeclared keys take the type first seen",
    )
    values: list[str] = Field(min_length=1, description="numeric fields stored as Float64")
    units: dict[str, str] = Field(default_factory=dict, description="fixed unit per value")
    unit_field: str | None = Field(
        None, description="payload field naming the unit of each reading; stored as a key column"
    )
    topic_key: str | None = Field(
        None, description="if set, store the MQTT topic as a key column of this name"
    )

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttMapping:
        fields = [self.time, *self.keys, *self.values]
        if self.unit_field:
            fields.append(self.unit_field)
        for name in fields:
            if not name or any(not part for part in name.split(".")):
                raise ValueError(f"field name {name!r} is empty or has an empty path part")
        if len(set(fields)) != len(fields):
            raise ValueError("a payload field is used more than once among time/keys/values/unit")
        columns = self.key_columns + self.value_columns
        clash = sorted({c for c in columns if columns.count(c) > 1})
        if clash:
            raise ValueError(f"column name(s) {clash} would be used twice")
        reserved = sorted(set(columns) & _RESERVED)
        if reserved:
            raise ValueError(f"column name(s) {reserved} are reserved by the lake; rename them")
        unknown = sorted(set(self.units) - set(self.values) - set(self.value_columns))
        if unknown:
            raise ValueError(f"units given for {unknown}, which are not value fields")
        unknown = sorted(set(self.key_types) - set(self.keys))
        if unknown:
            raise ValueError(f"key_types given for {unknown}, which are not key fields")
        return self

    # -- derived names ---------------------------------------------------------------

    @staticmethod
    def column_of(path: str) -> str:
        return path.replace(".", "_")

    @property
    def key_columns(self) -> list[str]:
        cols = [self.column_of(k) for k in self.keys]
        if self.unit_field:
            cols.append(self.column_of(self.unit_field))
        if self.topic_key:
            cols.append(self.topic_key)
        return cols

    @property
    def value_columns(self) -> list[str]:
        return [self.column_of(v) for v in self.values]

    @property
    def column_units(self) -> dict[str, str]:
        return {self.column_of(name): unit for name, unit in self.units.items()}

    # -- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, source: MqttMapping | Mapping[str, Any] | str | Path) -> MqttMapping:
        """A mapping from itself, a dict, or a YAML file (raises ConfigError if invalid)."""
        if isinstance(source, MqttMapping):
            return source
        where = "mapping"
        if isinstance(source, str | Path):
            path = Path(source)
            where = str(path)
            data = read_yaml_file(path, "MQTT mapping", hint="fix the mapping file")
            if isinstance(data, dict) and isinstance(data.get("mapping"), dict):
                data = data["mapping"]
        else:
            data = source
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of settings, got {type(data).__name__}",
                hint=_MAPPING_HINT,
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = validation_problems(exc, "mapping")
            raise ConfigError(
                f"{where}: invalid MQTT mapping: {problems}", hint=_MAPPING_HINT
            ) from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> MqttMapping:
        return cls.load(Path(path))

    # -- parsing ---------------------------------------------------------------------

    def parse_payload(self, payload: bytes, topic: str) -> list[dict[str, Any]]:
        """Rows (column → value, ``ts`` in epoch microseconds) of one message.

        Raises `MalformedMessage` with a reason when any reading cannot be used; a message
        is taken whole or not at all.
        """
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedMessage(f"payload is not JSON ({exc})") from exc
        if isinstance(doc, dict):
            return [self.parse_reading(doc, topic)]
        if isinstance(doc, list) and doc:
            rows = []
            for i, item in enumerate(doc):
                if not isinstance(item, dict):
                    raise MalformedMessage(f"reading #{i} is {type(item).__name__}, not an object")
                try:
                    rows.append(self.parse_reading(item, topic))
                except MalformedMessage as exc:
                    raise MalformedMessage(f"reading #{i}: {exc.reason}") from exc
            return rows
        raise MalformedMessage(
            f"payload is {'an empty array' if doc == [] else type(doc).__name__}, "
            "expected a JSON object (or an array of objects)"
        )

    def parse_reading(self, doc: Mapping[str, Any], topic: str) -> dict[str, Any]:
        row: dict[str, Any] = {"ts": self._time_us(_lookup(doc, self.time))}
        for name in self.keys:
            row[self.column_of(name)] = _key(name, _lookup(doc, name))
        if self.unit_field:
            unit = _lookup(doc, self.unit_field)
            if not isinstance(unit, str) or not unit:
                raise MalformedMessage(f"unit field {self.unit_field!r} is not a non-empty string")
            row[self.column_of(self.unit_field)] = unit
        if self.topic_key:
            row[self.topic_key] = topic
        for name in self.values:
            row[self.column_of(name)] = _number(name, _lookup(doc, name))
        return row

    def _time_us(self, value: Any) -> int:
        if self.time_unit == "iso":
            if not isinstance(value, str):
                raise MalformedMessage(
                    f"time field {self.time!r} is {value!r}, expected an ISO 8601 string"
                )
            try:
                stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError as exc:
                raise MalformedMessage(
                    f"time field {self.time!r} is {value!r}, not an ISO 8601 time"
                ) from exc
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=ZoneInfo(self.tz) if self.tz else UTC)
            delta = stamp - _EPOCH
            return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value) if any(c in value for c in ".eE") else int(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedMessage(
                f"time field {self.time!r} is {value!r}, expected a number of "
                f"{self.time_unit} since the epoch"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise MalformedMessage(f"time field {self.time!r} is {value!r}")
        if self.time_unit == "ns":
            micros = int(value) // 1000 if isinstance(value, int) else math.floor(value / 1000)
        elif isinstance(value, int):
            micros = value * _FACTOR_US[self.time_unit]
        else:
            micros = round(value * _FACTOR_US[self.time_unit])
        try:
            _EPOCH + timedelta(microseconds=micros)
        except OverflowError as exc:
            raise MalformedMessage(
                f"time field {self.time!r} = {value!r} is out of range for unit {self.time_unit}"
            ) from exc
        return micros


_MAPPING_HINT = (
    "a mapping needs at least `time` and `values`, e.g. time: event_time, time_unit: ms, "
    "keys: [ss_id, position, type_name], values: [input_data], unit_field: unit"
)


class MalformedMessage(Exception):
    """A message that cannot become rows; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _lookup(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    if path in doc:  # a flat field whose name happens to contain a dot
        return doc[path]
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise MalformedMessage(f"missing field {path!r}")
        node = node[part]
    return node


def _key(name: str, value: Any) -> int | str:
    if value is None:
        raise MalformedMessage(f"key field {name!r} is null")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedMessage(f"key field {name!r} is {value!r}, expected a string or an integer")
    return value


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise MalformedMessage(f"value field {name!r} is {value!r}, not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(f"value field {name!r} is {value!r}, not a number")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        raise MalformedMessage(f"value field {name!r} is too large for a float") from None
    if not math.isfinite(value):
        raise MalformedMessage(f"value field {name!r} is {value!r}, not a finite number")
    return value


# --------------------------------------------------------------------------------------
# ingestor


@dataclass
class MqttIngestStats:
    """What one `MqttIngestor.run` did."""

    messages: int = 0  # messages taken from the broker (including malformed ones)
    redelivered: int = 0  # of those, flagged as redeliveries (DUP) by the broker
    rows_received: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0  # rows repeated in a batch or already in the lake
    malformed: int = 0
    acked: int = 0
    batches: int = 0  # lake commits
    lake_version: int | None = None
    dead_letter: Path | None = None
    session_present: bool | None = None  # did the broker keep our session from before?
    stop_reason: str = ""
    elapsed_s: float = 0.0


@dataclass
class _Inbound:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    dup: bool
    retain: bool


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    acks: list[tuple[int, int, int]] = field(default_factory=list)  # generation, mid, qos
    started: float | None = None
    malformed: int = 0
    unlogged_malformed: int = 0

    def __len__(self) -> int:
        return len(self.acks)


def default_client_id(dataset: str, topics: Sequence[str]) -> str:
    """A stable client id (≤ 23 characters) so restarts resume the same broker session."""
    digest = hashlib.sha1(f"{dataset}\n{chr(10).join(sorted(topics))}".encode()).hexdigest()
    return f"tsloom-{digest[:16]}"


class MqttIngestor:
    """Subscribe to `topics` and append their readings to `dataset` in batches."""

    def __init__(
        self,
        dataset: str,
        topics: str | Sequence[str],
        mapping: MqttMapping | Mapping[str, Any] | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        client_id: str | None = None,
        batch_size: int = 1000,
        batch_age: timedelta | float | str = timedelta(seconds=5),
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        protocol: Literal["5", "3.1.1"] = "5",
        keepalive: int = 60,
        session_expiry: timedelta | None = None,
        dead_letter: bool | str | Path = True,
        connect_timeout: float = 10.0,
        on_batch: Callable[[Any, MqttIngestStats], None] | None = None,
        settings: Settings | None = None,
    ) -> None:
        from tsloom.names import validate_dataset_name
        from tsloom.timeutil import parse_duration

        self.dataset = validate_dataset_name(dataset)
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ConfigError("no MQTT topic given", hint="pass at least one topic, e.g. sensors/#")
        for topic in self.topics:
            _check_topic_filter(topic)
        self.mapping = MqttMapping.load(mapping)
        self.host, self.port = host, int(port)
        self.client_id = client_id or default_client_id(self.dataset, self.topics)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.batch_age = parse_duration(batch_age).total_seconds()
        self.username, self.password, self.tls = username, password, tls
        if protocol not in ("5", "3.1.1"):
            raise ConfigError(f"unknown MQTT protocol {protocol!r}", hint="use '5' or '3.1.1'")
        self.protocol = protocol
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.connect_timeout = connect_timeout
        self.on_batch = on_batch
        self.settings = settings or load_settings()
        if dead_letter is True:
            safe = self.dataset.replace(".", "__")
            self.dead_letter_path: Path | None = (
                Path(self.settings.home) / "dead-letter" / f"mqtt-{safe}.jsonl"
            )
        elif dead_letter:
            self.dead_letter_path = Path(dead_letter)
        else:
            self.dead_letter_path = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards generation, connection state, acks
        self._inbox: queue.Queue[_Inbound] = queue.Queue()
        self._generation = 0
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._subscribed = threading.Event()
        self._fatal: SourceError | None = None
        self._client: Any = None
        self._key_types: dict[str, KeyType] = {
            self.mapping.column_of(k): t for k, t in self.mapping.key_types.items()
        }
        self._dead_letter_fh: Any = None
        self.stats = MqttIngestStats(dead_letter=self.dead_letter_path)

    @property
    def origin(self) -> str:
        return f"mqtt://{self.host}:{self.port}/{','.join(self.topics)}"

    def stop(self) -> None:
        """Ask a running `run` to flush its open batch and return (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the loop ------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> MqttIngestStats:
        """Ingest until stopped (`stop()`, `stop` event), `max_messages` or `idle_timeout`.

        `idle_timeout` (seconds) ends the run once no message has arrived for that long.
        The open batch is always flushed before returning; messages not yet committed stay
        unacknowledged in the broker and come back on the next run.
        """
        self.stats = MqttIngestStats(dead_letter=self.dead_letter_path)
        started = time.monotonic()
        last_message = started
        batch = _Batch()
        client = self._connect()
        self.stats.session_present = self._session_present
        reason = ""
        commit_failed = False
        try:
            while True:
                if self._stop.is_set() or (stop is not None and stop.is_set()):
                    reason = "stopped"
                    break
                if self._fatal is not None:
                    raise self._fatal
                if max_messages is not None and self.stats.messages >= max_messages:
                    reason = "max_messages"
                    break
                now = time.monotonic()
                if idle_timeout is not None and now - last_message >= idle_timeout:
                    reason = "idle"
                    break
                wait = 0.1
                if batch.started is not None:
                    wait = min(wait, max(0.0, batch.started + self.batch_age - now))
                try:
                    item = self._inbox.get(timeout=wait)
                except queue.Empty:
                    item = None
                if item is not None:
                    last_message = time.monotonic()
                    self._take(item, batch)
                if len(batch) and (
                    len(batch.rows) >= self.batch_size
                    or len(batch) >= self.batch_size  # messages that gave no rows count too
                    or time.monotonic() - (batch.started or 0.0) >= self.batch_age
                ):
                    try:
                        self._flush(batch)
                    except BaseException:
                        commit_failed = True
                        raise
                    batch = _Batch()
        except KeyboardInterrupt:
            reason = "interrupted"
            raise
        finally:
            try:
                if not commit_failed and self._fatal is None:
                    self._flush(batch)
            finally:
                self._close(client)
                self._stop.clear()
                self.stats.stop_reason = reason or "error"
                self.stats.elapsed_s = time.monotonic() - started
        log.info(
            "MQTT ingest into %s stopped (%s): %d messages, %d rows written, %d duplicates, "
            "%d malformed",
            self.dataset,
            reason,
            self.stats.messages,
            self.stats.rows_written,
            self.stats.duplicates_dropped,
            self.stats.malformed,
        )
        return self.stats

    def _take(self, item: _Inbound, batch: _Batch) -> None:
        self.stats.messages += 1
        self.stats.redelivered += int(item.dup)
        if batch.started is None:
            batch.started = time.monotonic()
        try:
            rows = self.mapping.parse_payload(item.payload, item.topic)
            for row in rows:
                self._coerce_keys(row)
        except MalformedMessage as exc:
            self._malformed(item, exc.reason, batch)
        else:
            batch.rows.extend(rows)
            self.stats.rows_received += len(rows)
        # The ack is queued only once the message's rows (or dead letter) are in the batch.
        batch.acks.append((item.generation, item.mid, item.qos))

    def _coerce_keys(self, row: dict[str, Any]) -> None:
        """Hold each key column to one type so batches never clash in the lake."""
        for name in self.mapping.keys:
            column = self.mapping.column_of(name)
            value = row[column]
            kind = self._key_types.get(column)
            if kind is None:
                self._key_types[column] = "int" if isinstance(value, int) else "str"
            elif kind == "str" and not isinstance(value, str):
                row[column] = str(value)
            elif kind == "int" and isinstance(value, str):
                try:
                    row[column] = int(value)
                except ValueError:
                    raise MalformedMessage(
                        f"key field {name!r} is {value!r}, expected an integer"
                    ) from None

    def _malformed(self, item: _Inbound, reason: str, batch: _Batch) -> None:
        self.stats.malformed += 1
        batch.malformed += 1
        if self.dead_letter_path is not None:
            self._write_dead_letter(item, reason)
        if batch.malformed <= _LOG_MALFORMED_PER_BATCH:
            where = f"written to {self.dead_letter_path}" if self.dead_letter_path else "dropped"
            log.warning(
                "malformed MQTT message on topic %r (dataset %s): %s; %s",
                item.topic,
                self.dataset,
                reason,
                where,
            )
        else:
            batch.unlogged_malformed += 1

    def _write_dead_letter(self, item: _Inbound, reason: str) -> None:
        if self._dead_letter_fh is None:
            assert self.dead_letter_path is not None
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            self._dead_letter_fh = self.dead_letter_path.open("a", encoding="utf-8")
        record: dict[str, Any] = {
            "received_at": datetime.now(UTC).isoformat(),
            "dataset": self.dataset,
            "topic": item.topic,
            "reason": reason,
            "qos": item.qos,
            "retain": item.retain,
        }
        try:
            record["payload"] = item.payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(item.payload).decode("ascii")
        self._dead_letter_fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _flush(self, batch: _Batch) -> None:
        """Commit the batch's rows, make the dead letters durable, then acknowledge."""
        if not len(batch):
            return
        if batch.rows:
            result = self._commit(batch.rows)
            self.stats.batches += 1
            self.stats.rows_written += result.rows_written
            self.stats.duplicates_dropped += result.rows_in - result.rows_written
            self.stats.lake_version = result.lake_version
            if self.on_batch is not None:
                self.on_batch(result, self.stats)
        if self._dead_letter_fh is not None:
            self._dead_letter_fh.flush()
            os.fsync(self._dead_letter_fh.fileno())
        if batch.unlogged_malformed:
            log.warning(
                "%d more malformed MQTT messages in this batch (not logged one by one)%s",
                batch.unlogged_malformed,
                f"; see {self.dead_letter_path}" if self.dead_letter_path else "",
            )
        self._ack(batch.acks)

    def _ack(self, acks: list[tuple[int, int, int]]) -> None:
        """Acknowledge, in arrival order, the messages of a committed batch."""
        with self._lock:
            for generation, mid, qos in acks:
                # An ack from an earlier connection could name a different message now; the
                # broker redelivers those, and the lake drops the repeat.
                if qos > 0 and generation == self._generation and self._connected.is_set():
                    self._client.ack(mid, qos)
                    self.stats.acked += 1

    def _commit(self, rows: list[dict[str, Any]]) -> Any:
        from tsloom.ingest import ingest_frame

        frame = self._frame(rows)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                return ingest_frame(
                    frame,
                    self.dataset,
                    ts="ts",
                    keys=self.mapping.key_columns,
                    values=self.mapping.value_columns,
                    units=self.mapping.column_units or None,
                    origin=self.origin,
                    row_label="reading",
                    settings=self.settings,
                )
            except OSError as exc:  # storage hiccup: the lake is unchanged, try again
                if attempt == attempts:
                    raise
                log.warning("lake commit for %s failed (%s); retrying", self.dataset, exc)
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def _frame(self, rows: list[dict[str, Any]]) -> pl.DataFrame:
        m = self.mapping
        schema: dict[str, pl.DataType] = {"ts": pl.Int64()}
        for name in m.keys:
            column = m.column_of(name)
            schema[column] = pl.Int64() if self._key_types.get(column) == "int" else pl.String()
        if m.unit_field:
            schema[m.column_of(m.unit_field)] = pl.String()
        if m.topic_key:
            schema[m.topic_key] = pl.String()
        for column in m.value_columns:
            schema[column] = pl.Float64()
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        return frame.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))

    # -- the connection --------------------------------------------------------------

    def _new_client(self, *, clean: bool) -> Any:
        import paho.mqtt.client as mqtt

        if self.protocol == "5":
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=clean,
                manual_ack=True,
            )
        client.connect_timeout = self.connect_timeout
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()
        return client

    def _connect_properties(self, *, clean: bool) -> Any:
        if self.protocol != "5":
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        if clean:
            props.SessionExpiryInterval = 0
        else:
            expiry = self.session_expiry
            props.SessionExpiryInterval = (
                0xFFFFFFFF if expiry is None else min(int(expiry.total_seconds()), 0xFFFFFFFE)
            )
            # Let the broker hand us as many unacknowledged messages as MQTT allows: they wait
            # in our memory while a batch commits instead of overflowing the broker's queue
            # (Mosquitto drops QoS 1 messages beyond max_queued_messages, default 1000).
            props.ReceiveMaximum = _MAX_RECEIVE
        return props

    def _tcp_connect(self, client: Any, *, clean: bool) -> None:
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            kwargs = {"clean_start": clean, "properties": self._connect_properties(clean=clean)}
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive, **kwargs)
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc}",
                hint="check that the broker is running and listening there "
                "(e.g. `systemctl start mosquitto`), or pass the right host and port",
            ) from exc

    def _connect(self) -> Any:
        client = self._new_client(clean=False)
        self._client = client
        self._connected.clear()
        self._subscribed.clear()
        self._fatal = None
        self._inbox = queue.Queue()  # leftovers of an earlier run are not ours to ack
        self._session_present: bool | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._tcp_connect(client, clean=False)
        client.loop_start()
        try:
            deadline = time.monotonic() + self.connect_timeout
            while not self._subscribed.is_set() and self._fatal is None:
                if time.monotonic() > deadline:
                    step = "subscribe" if self._connected.is_set() else "connect"
                    raise SourceError(
                        f"the MQTT broker at {self.host}:{self.port} did not answer our "
                        f"{step} within {self.connect_timeout:g}s",
                        hint="check that it is an MQTT broker and that it is not overloaded",
                    )
                self._subscribed.wait(0.05)
            if self._fatal is not None:
                raise self._fatal
        except BaseException:
            self._close(client)
            raise
        log.info(
            "MQTT ingest into %s: connected to %s:%d as %s (session %s), topics %s",
            self.dataset,
            self.host,
            self.port,
            self.client_id,
            "resumed" if self._session_present else "new",
            ", ".join(self.topics),
        )
        return client

    def _close(self, client: Any) -> None:
        was_connected = self._connected.is_set()
        with self._lock:
            self._connected.clear()
            self._generation += 1  # no acks after this point
        if was_connected:
            self._barrier(client)
        # paho's network thread writes queued packets (our acks, then DISCONNECT) only while
        # it runs: wait for the DISCONNECT to go out before stopping it, or acks are lost.
        self._disconnected.clear()
        with contextlib.suppress(Exception):
            if client.disconnect() == 0:
                self._disconnected.wait(self.connect_timeout)
        with contextlib.suppress(Exception):
            client.loop_stop()
        if self._dead_letter_fh is not None:
            with contextlib.suppress(OSError):
                self._dead_letter_fh.close()
            self._dead_letter_fh = None

    def _barrier(self, client: Any) -> None:
        """Wait until the broker has processed every ack we sent.

        A broker handles a connection's packets in order, so the answer to a harmless
        request (unsubscribing from a filter we never subscribed to) proves the acks before
        it were taken. Without this, a broker that sees our next connection before it has
        read the old one's last acks drops them, and those messages come back as repeats.
        """
        answered = threading.Event()
        client.on_unsubscribe = lambda *args: answered.set()
        with contextlib.suppress(Exception):
            result, _ = client.unsubscribe(f"tsloom/barrier/{self.client_id}")
            if result == 0:
                answered.wait(self.connect_timeout)

    # paho callbacks (network thread) ------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._fatal = SourceError(
                f"the MQTT broker at {self.host}:{self.port} refused the connection "
                f"of client {self.client_id!r}: {reason_code}",
                hint="check the username/password and the broker's access rules",
            )
            return
        with self._lock:
            self._generation += 1
            self._connected.set()
        present = bool(flags.session_present)
        if self._session_present is not None and not present:
            log.warning(
                "MQTT broker %s:%d had lost the session of %s; messages published while "
                "disconnected may be missing",
                self.host,
                self.port,
                self.client_id,
            )
        self._session_present = present
        if self.protocol == "5":
            from paho.mqtt.subscribeoptions import SubscribeOptions

            options = SubscribeOptions(
                qos=_QOS, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            )
            result, _ = client.subscribe([(topic, options) for topic in self.topics])
        else:
            result, _ = client.subscribe([(topic, _QOS) for topic in self.topics])
        if result != 0:
            self._fatal = SourceError(f"cannot subscribe to {self.topics}: error {result}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [
            f"{topic} ({code})"
            for topic, code in zip(self.topics, reason_codes, strict=False)
            if code.is_failure
        ]
        if failed:
            self._fatal = SourceError(
                f"the MQTT broker at {self.host}:{self.port} refused the subscription to "
                f"{', '.join(failed)}",
                hint="check the topic filters and the broker's access rules",
            )
            return
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self._connected.clear()
        self._disconnected.set()
        if not self._stop.is_set() and reason_code != 0:
            log.warning(
                "MQTT connection to %s:%d lost (%s); reconnecting",
                self.host,
                self.port,
                reason_code,
            )

    def _on_message(self, client, userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)
        self._inbox.put(
            _Inbound(
                generation=self._generation,
                mid=message.mid,
                qos=message.qos,
                topic=topic,
                payload=bytes(message.payload),
                dup=bool(message.dup),
                retain=bool(message.retain),
            )
        )

    # -- housekeeping ----------------------------------------------------------------

    def reset_session(self) -> None:
        """Delete this client's broker session, dropping any messages queued for it."""
        client = self._new_client(clean=True)
        done, gone = threading.Event(), threading.Event()
        client.on_connect = lambda *args: done.set()
        client.on_disconnect = lambda *args: gone.set()
        self._tcp_connect(client, clean=True)
        client.loop_start()
        try:
            if not done.wait(self.connect_timeout):
                raise SourceError(
                    f"the MQTT broker at {self.host}:{self.port} did not answer within "
                    f"{self.connect_timeout:g}s"
                )
        finally:
            if client.disconnect() == 0:
                gone.wait(self.connect_timeout)
            client.loop_stop()


def _check_topic_filter(topic: str) -> None:
    levels = topic.split("/")
    bad = (
        not topic
        or "\x00" in topic
        or any(("#" in level and level != "#") for level in levels)
        or ("#" in levels and levels.index("#") != len(levels) - 1)
        or any(("+" in level and level != "+") for level in levels)
    )
    if bad:
        raise ConfigError(
            f"invalid MQTT topic filter {topic!r}",
            hint="'+' matches one whole level and '#' only the last level, e.g. sensors/+/co2 "
            "or sensors/#",
        )


def stop_on_signals(ingestor: MqttIngestor) -> contextlib.AbstractContextManager[None]:
    """For the CLI: the first SIGINT/SIGTERM stops `ingestor` cleanly, a second interrupts."""
    from tsloom.signals import stop_on_signals as stop_on

    return stop_on(ingestor, "flushing the open batch and stopping")
