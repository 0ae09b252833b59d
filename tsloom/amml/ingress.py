"""AMML's ingress components: where a workflow's batches come from. Each one wraps the
platform's own readers and yields polars frames of at most `batch_size` rows (default
:data:`DEFAULT_BATCH`), with a ``ts`` column of UTC times where the data has one.

* `source id=NAME` reads a lake dataset: the exact name when it exists; otherwise the
  datasets whose table part (after the dot) equals NAME, or, if none does, starts with NAME.
  One candidate is used; none or several is an error that lists the candidates. A keyed
  dataset comes out long: ``ts``, its key columns, its values, in time order.
  `source integration=ID` runs the saved integration spec stored under that integration id
  (the newest one) and reads its aligned frame (``ts`` + one column per feature).
* `normalsource col mean std rows freq seed start realtime` draws N(mean, std) values every
  `freq` (default 1s) from `start` (default now); without `rows` it streams until stopped,
  paced to the wall clock with `realtime=true`.
* `csv path ts` reads a CSV (or Parquet / JSON-lines, by suffix) file in batches; the `ts`
  column (default ``ts`` when present) is parsed as ingestion parses it.
* `sql url query ts` runs a query on a SQL database and streams its rows in batches.
* `mqtt topic url qos time wait` subscribes to a topic and emits the JSON readings that
  arrive (an object, or an array of objects, with a time field `time` (default ``ts``): ISO
  text or epoch numbers; numeric fields become Float64 columns, text fields text columns);
  a batch is emitted at `batch_size` readings or `wait` seconds after its first one (0.5 s);
  it runs until the workflow is stopped.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from tsloom.amml.base import Component, Ingress
from tsloom.amml.errors import AmmlRuntimeError
from tsloom.config import Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH = 50_000
"""Rows per batch when a source is not given `batch_size`."""


def resolve_dataset(name: str, settings: Settings) -> str:
    """The lake dataset `source id=name` means (see the module docstring for the rule)."""
    from tsloom.catalog import Catalog
    from tsloom.errors import TsloomError

    names = Catalog(settings).names()
    if name in names:
        return name
    tables = {n: n.partition(".")[2] for n in names}
    found = [n for n, t in tables.items() if t == name] or [
        n for n, t in tables.items() if t.startswith(name)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise TsloomError(
            f"no lake dataset matches {name!r}",
            hint=f"datasets: {', '.join(names)}" if names else "ingest one first",
        )
    raise TsloomError(
        f"{name!r} is ambiguous: it matches {', '.join(found)}",
        hint="give the full database.table name",
    )


class _Ingress(Ingress):
    """Shared helpers: the batch size, and platform errors turned into located ones."""

    @property
    def batch_size(self) -> int:
        size = self.args.get("batch_size")
        if size is None:
            return DEFAULT_BATCH
        if int(size) < 1:
            raise self.fail(f"batch_size={size}: give at least 1")
        return int(size)

    def _slices(self, frame: pl.DataFrame) -> Iterator[pl.DataFrame]:
        size = self.batch_size
        for offset in range(0, frame.height, size):
            if self.ctx.stop.is_set():
                return
            yield frame.slice(offset, size)

    def _parse_ts(self, frame: pl.DataFrame, column: str, origin: str, first_row: int, label: str):
        """`column` parsed to UTC times as ingestion does, moved first and named ``ts``."""
        from tsloom.errors import TsloomError
        from tsloom.ingest.normalize import Where, parse_timestamps

        if column not in frame.columns:
            raise self.fail(f"no time column {column!r}", f"columns: {', '.join(frame.columns)}")
        try:
            ts, _ = parse_timestamps(
                frame[column],
                ts_format=None,
                ts_unit=None,
                tz=None,
                where=Where(origin, first_row=first_row, row_label=label),
            )
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        rest = [c for c in frame.columns if c not in (column, "ts")]
        return frame.select(rest).with_columns(ts).select(["ts", *rest])


class Source(_Ingress):
    name = "source"
    supported = frozenset({"id", "integration", "start", "end", "cols", "batch_size"})

    def batches(self) -> Iterator[pl.DataFrame]:
        from tsloom.errors import TsloomError

        if self.args.get("id") and self.args.get("integration"):
            raise self.fail("give either id= (a dataset) or integration= (a saved integration)")
        try:
            if self.args.get("integration"):
                out, what = self._integration(str(self.args["integration"]))
            else:
                out, what = self._dataset(str(self.args["id"]))
        except AmmlRuntimeError:
            raise
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        if out.is_empty():
            raise self.fail(f"{what} has no rows in the range asked for")
        yield from self._slices(out)

    def _dataset(self, name: str) -> tuple[pl.DataFrame, str]:
        from tsloom.catalog import Catalog
        from tsloom.lake import read_dataset

        settings = self.ctx.settings
        dataset = resolve_dataset(name, settings)
        keys = list(Catalog(settings).get(dataset).keys)
        out = read_dataset(
            dataset,
            start=self.args.get("start"),
            end=self.args.get("end"),
            columns=self.args.get("cols"),
            settings=settings,
        )
        if keys:  # long form, in time order (the lake sorts by keys first)
            out = out.sort(["ts", *keys], maintain_order=True)
        self.ctx.datasets.append(dataset)
        return out, f"dataset {dataset}"

    def _integration(self, iid: str) -> tuple[pl.DataFrame, str]:
        from tsloom.integrate import IntegrationSpec, integrate
        from tsloom.integrate.store import integration_specs

        settings = self.ctx.settings
        stored = integration_specs(iid, settings)
        if not stored:
            raise self.fail(
                f"no saved integration {iid!r}",
                "integrations are saved when a model is trained on them (`tsloom train`)",
            )
        data = dict(stored[-1]["spec"])
        for bound in ("start", "end"):
            if self.args.get(bound):
                data[bound] = self.args[bound]
        spec = IntegrationSpec.from_dict(data)
        frame = integrate(spec, settings=settings).frame
        cols = self.args.get("cols")
        if cols:
            from tsloom.integrate import resolve_feature

            frame = frame.select(["ts", *(resolve_feature(c, frame.columns[1:]) for c in cols)])
        self.ctx.datasets.extend(t for t in spec.tables if t not in self.ctx.datasets)
        return frame, f"integration {iid}"


class NormalSource(_Ingress):
    name = "normalsource"
    supported = frozenset(
        {"col", "mean", "std", "rows", "freq", "seed", "start", "realtime", "batch_size"}
    )

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        """Without `rows=` it runs until the flow is stopped."""
        return self.args.get("rows") is None

    def batches(self) -> Iterator[pl.DataFrame]:
        import numpy as np

        from tsloom.errors import TsloomError
        from tsloom.timeutil import parse_duration, to_utc

        col = str(self.args["col"])
        if col == "ts":
            raise self.fail("col=ts: `ts` is the time column; name the values otherwise")
        mean, std = float(self.args.get("mean", 0.0)), float(self.args.get("std", 1.0))
        if std < 0:
            raise self.fail(f"std={std} must not be negative")
        rows = self.args.get("rows")
        if rows is not None and int(rows) < 0:
            raise self.fail(f"rows={rows} must not be negative")
        try:
            freq = parse_duration(self.args.get("freq") or "1s")
            start = to_utc(self.args["start"]) if self.args.get("start") else None
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        if freq.total_seconds() <= 0:
            raise self.fail("freq must be positive")
        step_us = int(freq.total_seconds() * 1_000_000)
        if start is None:  # now, on the freq grid
            now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
            start_us = now_us - now_us % step_us
        else:
            start_us = int(start.timestamp() * 1_000_000)
        rng = np.random.default_rng(int(self.args.get("seed") or 0))
        realtime = bool(self.args.get("realtime"))
        size = self.batch_size
        if realtime:  # small batches, a few a second, so that rows flow as they are due
            size = min(size, max(1, int(0.25 / freq.total_seconds())))
        wall0 = time.monotonic()
        done = 0
        while rows is None or done < int(rows):
            if self.ctx.stop.is_set():
                return
            n = size if rows is None else min(size, int(rows) - done)
            if realtime:  # wait until the batch's last reading is due
                due = wall0 + (done + n - 1) * freq.total_seconds()
                while (left := due - time.monotonic()) > 0:
                    if self.ctx.stop.wait(min(left, 0.2)):
                        return
            ts = start_us + step_us * np.arange(done, done + n, dtype=np.int64)
            yield pl.DataFrame(
                {
                    "ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
                    col: rng.normal(mean, std, n),
                }
            )
            done += n


_SCANS = {"csv": pl.scan_csv, "parquet": pl.scan_parquet, "jsonl": pl.scan_ndjson}


class Csv(_Ingress):
    name = "csv"
    supported = frozenset({"path", "ts", "batch_size"})

    def batches(self) -> Iterator[pl.DataFrame]:
        from tsloom.errors import TsloomError
        from tsloom.sources.files import detect_format

        path = Path(str(self.args["path"])).expanduser()
        if not path.is_file():
            raise self.fail(f"{path}: no such file", "check the path (relative to where you run)")
        try:
            fmt = detect_format(path)
        except TsloomError:
            fmt = "csv"
        ts = self.args.get("ts")
        try:
            if fmt == "csv":
                separator = "\t" if path.suffix == ".tsv" else ","
                lazy = pl.scan_csv(
                    path,
                    separator=separator,
                    schema_overrides={ts: pl.String} if ts else None,
                    infer_schema_length=10_000,
                )
            else:
                lazy = _SCANS[fmt](path)
            names = lazy.collect_schema().names()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise self.fail(f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from exc
        if ts is None and "ts" in names:
            ts = "ts"
        first, label = (2, "line") if fmt == "csv" else (1, "row" if fmt == "parquet" else "line")
        offset = 0
        try:
            for batch in lazy.collect_batches(chunk_size=self.batch_size):
                if self.ctx.stop.is_set():
                    return
                if batch.is_empty():
                    continue
                out = self._parse_ts(batch, ts, str(path), first + offset, label) if ts else batch
                offset += batch.height
                yield out
        except pl.exceptions.PolarsError as exc:
            raise self.fail(
                f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}",
                "check the file format and separator",
            ) from exc


class Sql(_Ingress):
    name = "sql"
    supported = frozenset({"url", "query", "ts", "batch_size"})

    def batches(self) -> Iterator[pl.DataFrame]:
        import sqlalchemy as sa

        from tsloom.errors import TsloomError
        from tsloom.sources.sql import SqlSource

        ts = self.args.get("ts")
        try:
            # SqlSource owns connecting (drivers, timeouts, UTC sessions on MySQL); the
            # query is ours, so its table name is only a label here.
            src = SqlSource(str(self.args["url"]), "amml_query", ts_column=ts or "ts")
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        where = src.display_url
        offset = 0
        try:
            with src.engine.connect() as conn:
                conn = conn.execution_options(stream_results=True)
                chunks = pl.read_database(
                    sa.text(str(self.args["query"])),
                    conn,
                    iter_batches=True,
                    batch_size=self.batch_size,
                    infer_schema_length=None,
                )
                for batch in chunks:
                    if self.ctx.stop.is_set():
                        return
                    if batch.is_empty():
                        continue
                    if ts is None and "ts" in batch.columns:
                        ts = "ts"
                    out = self._parse_ts(batch, ts, where, 1 + offset, "row") if ts else batch
                    offset += batch.height
                    yield out
        except sa.exc.DBAPIError as exc:
            orig = getattr(exc, "orig", None) or exc
            message = str(orig).strip().splitlines()[0] if str(orig).strip() else repr(orig)
            raise self.fail(
                f"query on {where} failed: {message}",
                "check the URL, the query and your privileges",
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise self.fail(f"query on {where} failed: {exc}") from exc
        finally:
            src.close()


def _epoch_unit(value: float) -> str:
    magnitude = abs(value)
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if magnitude < limit:
            return unit
    return "ns"


class MqttReadings:
    """JSON readings → rows, through :class:`tsloom.sources.mqtt.MqttMapping` (one mapping
    per shape of reading: its numeric fields are values, its text fields keys)."""

    def __init__(self, time_field: str = "ts") -> None:
        self.time_field = time_field
        self._mappings: dict[tuple, Any] = {}
        self.malformed = 0

    def _mapping(self, doc: dict) -> Any:
        from tsloom.sources.mqtt import MqttMapping

        stamp = doc.get(self.time_field)
        unit = "iso" if isinstance(stamp, str) else None
        if unit is None:
            if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                raise ValueError(f"no time field {self.time_field!r} (ISO text or epoch number)")
            unit = _epoch_unit(stamp)
        values = tuple(
            k
            for k, v in doc.items()
            if k != self.time_field and isinstance(v, int | float) and not isinstance(v, bool)
        )
        keys = tuple(k for k, v in doc.items() if k != self.time_field and isinstance(v, str))
        if not values:
            raise ValueError("the reading has no numeric field")
        shape = (unit, values, keys)
        if shape not in self._mappings:
            self._mappings[shape] = MqttMapping(
                time=self.time_field,
                time_unit=unit,
                values=list(values),
                keys=list(keys),
                key_types=dict.fromkeys(keys, "str"),
            )
        return self._mappings[shape]

    def rows(self, payload: bytes, topic: str) -> list[dict[str, Any]]:
        """The rows of one message (``ts`` in epoch µs); [] (and counted) if malformed."""
        from tsloom.sources.mqtt import MalformedMessage

        try:
            doc = json.loads(payload)
            docs = doc if isinstance(doc, list) else [doc]
            if not docs or not all(isinstance(d, dict) for d in docs):
                raise ValueError("expected a JSON object or an array of objects")
            return [self._mapping(d).parse_reading(d, topic) for d in docs]
        except (ValueError, MalformedMessage) as exc:
            self.malformed += 1
            reason = getattr(exc, "reason", None) or str(exc)
            log.warning("mqtt %s: skipped a malformed message: %s", topic, reason)
            return []

    @staticmethod
    def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
        frame = pl.from_dicts(rows, infer_schema_length=None)
        casts = [pl.col("ts").cast(pl.Datetime("us", "UTC"))]
        numeric = [c for c, t in frame.schema.items() if c != "ts" and t.is_numeric()]
        casts += [pl.col(c).cast(pl.Float64) for c in numeric]
        return frame.with_columns(casts)


class Mqtt(_Ingress):
    name = "mqtt"
    streaming = True
    supported = frozenset({"topic", "url", "qos", "time", "wait", "batch_size"})

    def open(self) -> None:
        import threading

        self._client: Any = None
        self.subscribed = threading.Event()  # set once the broker confirmed the subscription

    def _connect(self, inbox: queue.Queue) -> Any:
        import threading

        from tsloom.amml.mqtt_link import connect, new_client

        topic, qos = str(self.args["topic"]), int(self.args.get("qos") or 0)
        if qos not in (0, 1, 2):
            raise self.fail(f"qos={qos}: use 0, 1 or 2")
        subscribed = threading.Event()
        client, host, port = new_client(self, "amml")

        def on_connect(client, userdata, flags, reason_code, properties) -> None:
            if not reason_code.is_failure:
                client.subscribe(topic, qos)

        def on_message(client, userdata, message) -> None:
            inbox.put((message.topic, message.payload))

        client.on_connect = on_connect
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_message = on_message
        connect(self, client, host, port)
        self._client = client
        if not subscribed.wait(10):
            raise self.fail(f"the MQTT broker at {host}:{port} did not confirm the subscription")
        self.subscribed.set()
        return client

    def batches(self) -> Iterator[pl.DataFrame]:
        inbox: queue.Queue = queue.Queue(maxsize=100_000)  # full: paho waits (back-pressure)
        readings = MqttReadings(str(self.args.get("time") or "ts"))
        wait = float(self.args.get("wait") if self.args.get("wait") is not None else 0.5)
        size = self.batch_size
        self._connect(inbox)
        try:
            rows: list[dict[str, Any]] = []
            first_at = 0.0
            while not self.ctx.stop.is_set():
                left = first_at + wait - time.monotonic()
                timeout = 0.1 if not rows else max(0.0, min(0.1, left))
                try:
                    topic, payload = inbox.get(timeout=timeout)
                    if not rows:
                        first_at = time.monotonic()
                    rows.extend(readings.rows(payload, topic))
                except queue.Empty:
                    pass  # nothing new: the batch may still be due by its age
                if rows and (len(rows) >= size or time.monotonic() >= first_at + wait):
                    yield MqttReadings.frame(rows)
                    rows = []
            if rows:
                yield MqttReadings.frame(rows)
        finally:
            self.close()

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.disconnect()
            client.loop_stop()


COMPONENTS: list[type[Component]] = [Source, NormalSource, Csv, Sql, Mqtt]
