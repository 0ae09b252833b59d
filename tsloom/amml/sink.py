"""`sink`: where a workflow's rows end up — the lake, a database table, a CSV file or MQTT.

    … | sink to=lake name="derived.ett_scaled"
    … | sink to=db table="scaled" [url="postgresql+psycopg://…"]   (default: the metadata DB)
    … | sink to=csv path="out.csv"
    … | sink to=mqtt topic="tsloom/out" [url="mqtt://127.0.0.1:1883"] [qos=1]

Rules:

* A sink is an egress: it passes nothing on (its rows are counted in the run's stats).
* lake and db buffer rows and write them in chunks of `flush_rows` (default 1,000,000
  for the lake, 50,000 for a table), so a 10M-row flow makes ten Delta commits, not a
  thousand. The lake goes through `tsloom.ingest.writer.ingest_frame` (append, idempotent
  on ts); a table is created if missing (columns from the first batch) and each chunk is
  appended in one transaction.
* csv writes to ``PATH.part`` (header once, then one append per batch) and renames it to
  PATH when the input ends: a failed run leaves no half-written PATH.
* mqtt publishes one JSON object per row (times in ISO 8601) with QoS `qos` (default 1)
  and waits for the broker's acknowledgements at each flush.
* Everything buffered is written when the input ends — including after Ctrl-C or a stop,
  which let the flow drain. When another component *fails*, buffered rows are dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from tsloom.amml.base import Component, Emitted
from tsloom.errors import TsloomError

TARGETS = ("lake", "db", "csv", "mqtt")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Sink(Component):
    name = "sink"
    supported = frozenset({"to", "name", "path", "table", "topic", "url", "flush_rows", "qos"})

    def open(self) -> None:
        to = self.args["to"]
        if to not in TARGETS:
            raise self.fail(f"to={to!r}: use one of {', '.join(TARGETS)}")
        need = {"lake": "name", "db": "table", "csv": "path", "mqtt": "topic"}[to]
        if not self.args.get(need):
            raise self.fail(f"to={to} needs {need}=")
        self._to = to
        self._buf: list[pl.DataFrame] = []
        self._rows = 0
        self._finished = False
        default = {"lake": 1_000_000, "db": 50_000, "csv": 1, "mqtt": 10_000}[to]
        self._flush_rows = self.args.get("flush_rows") or default
        self._writer: Any = None
        getattr(self, f"_open_{to}")()

    # --- the buffer ------------------------------------------------------------------------

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        self._buf.append(batch)
        self._rows += batch.height
        if self._rows >= self._flush_rows:
            self._flush()
        return ()

    def finish(self) -> Iterable[Emitted]:
        self._flush()
        getattr(self, f"_finish_{self._to}", lambda: None)()
        self._finished = True
        return ()

    def close(self) -> None:
        to = getattr(self, "_to", None)
        if to is not None:
            getattr(self, f"_close_{to}", lambda: None)()

    def _flush(self) -> None:
        if not self._buf:
            return
        frame = self._buf[0] if len(self._buf) == 1 else pl.concat(self._buf, how="vertical")
        self._buf, self._rows = [], 0
        getattr(self, f"_write_{self._to}")(frame)

    # --- lake ------------------------------------------------------------------------------

    def _open_lake(self) -> None:
        from tsloom.names import validate_dataset_name

        try:
            validate_dataset_name(self.args["name"])
        except Exception as exc:
            raise self.fail(getattr(exc, "message", str(exc)), getattr(exc, "hint", None)) from exc

    def _write_lake(self, frame: pl.DataFrame) -> None:
        from tsloom.ingest.writer import ingest_frame

        if "ts" not in frame.columns:
            raise self.fail("to=lake needs a ts column", f"columns: {frame.columns}")
        ingest_frame(
            frame,
            self.args["name"],
            ts="ts",
            keys=[c for c, t in frame.schema.items() if c != "ts" and t == pl.String],
            origin=f"amml:{self.ctx.flow_name or 'flow'}",
            settings=self.ctx.settings,
        )

    # --- database ----------------------------------------------------------------------------

    def _open_db(self) -> None:
        import sqlalchemy as sa

        table = self.args["table"]
        if not _IDENT.match(table):
            raise self.fail(f"table={table!r} is not a plain SQL name", "letters, digits and _")
        url = self.args.get("url")
        self._own_engine = url is not None
        try:
            if url is None:  # the metadata database (created and migrated if new)
                from tsloom.db.engine import get_engine

                self._engine = get_engine(self.ctx.settings.db_url)
            else:
                self._engine = sa.create_engine(url)
        except TsloomError:
            raise
        except Exception as exc:
            raise self.fail(f"cannot use database URL: {exc}") from exc
        self._table: sa.Table | None = None

    def _sa_table(self, frame: pl.DataFrame):
        import sqlalchemy as sa

        if self._table is not None:
            return self._table
        name = self.args["table"]
        meta = sa.MetaData()
        if sa.inspect(self._engine).has_table(name):
            table = sa.Table(name, meta, autoload_with=self._engine)
            missing = [c for c in frame.columns if c not in table.c]
            if missing:
                raise self.fail(
                    f"table {name} has no column(s) {', '.join(missing)}",
                    "select the table's columns first, or sink to a new table",
                )
        else:
            table = sa.Table(
                name, meta, *(sa.Column(c, _sa_type(t)) for c, t in frame.schema.items())
            )
            meta.create_all(self._engine)
        self._table = table
        return table

    def _write_db(self, frame: pl.DataFrame) -> None:
        table = self._sa_table(frame)
        rows = frame.to_dicts()
        with self._engine.begin() as conn:
            conn.execute(table.insert(), rows)

    def _close_db(self) -> None:
        if getattr(self, "_engine", None) is not None and self._own_engine:
            self._engine.dispose()

    # --- csv -----------------------------------------------------------------------------------

    def _open_csv(self) -> None:
        self._path = Path(self.args["path"])
        self._part = self._path.with_name(self._path.name + ".part")
        self._header_written = False
        self._flush_rows = self.args.get("flush_rows") or 1
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._part, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise self.fail(f"cannot write {self._path}: {exc.strerror}", "check the path") from exc

    def _write_csv(self, frame: pl.DataFrame) -> None:
        frame.write_csv(self._file, include_header=not self._header_written)
        self._header_written = True

    def _finish_csv(self) -> None:
        self._file.close()
        os.replace(self._part, self._path)

    def _close_csv(self) -> None:
        if getattr(self, "_file", None) is None:
            return
        if not self._file.closed:
            self._file.close()
        if not self._finished and self._part.exists():
            self._part.unlink()

    # --- mqtt ----------------------------------------------------------------------------------

    def _open_mqtt(self) -> None:
        from tsloom.amml.mqtt_link import connect, new_client

        self._qos = self.args.get("qos", 1)
        if self._qos not in (0, 1, 2):
            raise self.fail("qos must be 0, 1 or 2")
        client, host, port = new_client(self, "sink")
        connect(self, client, host, port)
        self._client = client

    def _write_mqtt(self, frame: pl.DataFrame) -> None:
        topic = self.args["topic"]
        infos = [
            self._client.publish(topic, json.dumps(row, default=_json_default), qos=self._qos)
            for row in frame.iter_rows(named=True)
        ]
        for info in infos:
            info.wait_for_publish(timeout=30)
            if not info.is_published() and self._qos:
                raise self.fail(f"the broker did not acknowledge a message on {topic}")

    def _close_mqtt(self) -> None:
        if getattr(self, "_client", None) is None:
            return
        self._client.loop_stop()
        self._client.disconnect()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _sa_type(dtype: pl.DataType):
    import sqlalchemy as sa

    if isinstance(dtype, pl.Datetime):
        return sa.DateTime(timezone=dtype.time_zone is not None)
    if dtype == pl.Date:
        return sa.Date()
    if dtype == pl.Boolean:
        return sa.Boolean()
    if dtype.is_integer():
        return sa.BigInteger()
    if dtype.is_float():
        return sa.Float()
    return sa.Text()


COMPONENTS: list[type[Component]] = [Sink]
