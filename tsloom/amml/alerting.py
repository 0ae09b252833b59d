"""AMML's alert path: `surveillance` flags anomalies, `alert` records them, `snapshot` keeps
the rows that led up to each one.

    source id="sensor" | surveillance cols=value method=zscore threshold=4 window=50
        | alert level="warning" | snapshot size=30

* `surveillance cols method threshold window` scores every row of every column in `cols`
  (default: the numeric columns) against the `window` rows before it, carried across
  batches (at most `window` values per column are kept): ``zscore`` (|x − mean| / std,
  flagged above `threshold`, default 3), ``iqr`` (distance outside the quartiles in IQRs,
  flagged above `threshold`, default 1.5) or ``threshold`` (|x|, flagged above
  `threshold`). It adds ``anomaly`` (bool), ``anomaly_score`` (the row's highest score;
  null until the window has enough history) and ``anomaly_column`` (the column that scored
  it, null on normal rows). Anomalous rows are the *alert events*.
* `alert level message topic db url` stores one :class:`~tsloom.db.models.FlowAlert` per
  event (rows with ``anomaly`` true, or every row when the input has no ``anomaly``
  column) unless ``db=false``, logs it, publishes it as JSON to MQTT `topic` if given, and
  passes the batch on with an ``alert_id`` column (null on other rows). `message` may use
  ``{column}``, ``{value}``, ``{ts}``, ``{score}``, ``{level}`` and any column name.
* `snapshot size name` keeps the last `size` rows in a ring buffer (across batches) and,
  at each event (a non-null ``alert_id``, or ``anomaly`` true), stores a
  :class:`~tsloom.db.models.FlowSnapshot` of the `size` rows up to and including it.

:func:`list_alerts` and :func:`get_snapshot` read them back.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from tsloom.amml.base import Component, Emitted
from tsloom.config import Settings, load_settings
from tsloom.errors import TsloomError

log = logging.getLogger(__name__)

METHODS = ("zscore", "iqr", "threshold")
_DEFAULT_THRESHOLD = {"zscore": 3.0, "iqr": 1.5}
_ADDED = ("anomaly", "anomaly_score", "anomaly_column", "alert_id")
LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_RING = 100_000


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows_json(frame: pl.DataFrame) -> dict[str, list[Any]]:
    """column → values, times as ISO 8601 text and NaN/inf as null (JSON columns)."""
    return {c: [_json_value(v) for v in frame[c].to_list()] for c in frame.columns}


# ---------------------------------------------------------------------------- surveillance


class Surveillance(Component):
    name = "surveillance"
    supported = frozenset({"cols", "method", "threshold", "window"})

    def open(self) -> None:
        method = str(self.args.get("method") or "zscore")
        if method not in METHODS:
            raise self.fail(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
        threshold = self.args.get("threshold", _DEFAULT_THRESHOLD.get(method))
        if threshold is None:
            raise self.fail("method=threshold needs threshold=VALUE")
        window = int(self.args.get("window") or 100)
        if not 2 <= window <= MAX_RING:
            raise self.fail(f"window={window}: give 2 to {MAX_RING} rows")
        self.method, self.threshold, self.window = method, float(threshold), window
        self.min_history = max(2, window // 5)
        self.history: dict[str, pl.Series] = {}  # last `window` values per column

    def _columns(self, batch: pl.DataFrame) -> list[str]:
        cols = self.args.get("cols")
        if cols:
            missing = [c for c in cols if c not in batch.columns]
            if missing:
                raise self.fail(
                    f"no column(s) {', '.join(missing)}", f"columns: {', '.join(batch.columns)}"
                )
            return list(cols)
        found = [c for c, t in batch.schema.items() if c not in ("ts", *_ADDED) and t.is_numeric()]
        if not found:
            raise self.fail("the input has no numeric column to watch")
        return found

    def _scores(self, name: str, values: pl.Series) -> pl.Series:
        """This batch's scores for one column, against the history before each row."""
        values = values.cast(pl.Float64)
        past = self.history.get(name, pl.Series(name, [], dtype=pl.Float64))
        full = pl.concat([past, values])
        self.history[name] = full.tail(self.window)
        if self.method == "threshold":
            return values.abs()
        prev = full.shift(1)
        k = dict(window_size=self.window, min_samples=self.min_history)
        frame = pl.DataFrame({"x": full, "prev": prev})
        if self.method == "zscore":
            expr = (pl.col("x") - pl.col("prev").rolling_mean(**k)).abs() / pl.col(
                "prev"
            ).rolling_std(**k)
        else:
            q1 = pl.col("prev").rolling_quantile(0.25, **k)
            q3 = pl.col("prev").rolling_quantile(0.75, **k)
            outside = pl.max_horizontal(q1 - pl.col("x"), pl.col("x") - q3, pl.lit(0.0))
            expr = outside / (q3 - q1)
        # 0/0 (a flat history and the same value again) is no anomaly
        score = frame.select(expr.fill_nan(0.0).alias(name)).to_series()
        return score.slice(past.len())

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        if batch.is_empty():
            return (batch,)
        cols = self._columns(batch)
        names = [f"s{i}" for i in range(len(cols))]
        scores = pl.DataFrame(
            [self._scores(c, batch[c]).alias(f"s{i}") for i, c in enumerate(cols)]
        )
        best = pl.max_horizontal(names)
        flagged = (best > self.threshold).fill_null(False)
        # the first column reaching the row's best score names the anomaly
        column = pl.coalesce(
            [pl.when(pl.col(n) == best).then(pl.lit(c)) for n, c in zip(names, cols, strict=True)]
        )
        added = scores.select(
            flagged.alias("anomaly"),
            best.alias("anomaly_score"),
            pl.when(flagged).then(column).otherwise(None).cast(pl.String).alias("anomaly_column"),
        )
        return (batch.drop([c for c in _ADDED[:3] if c in batch.columns]).hstack(added),)


# ---------------------------------------------------------------------------------- alert

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\[\]=,-]*)\}")


def render_message(template: str, values: dict[str, Any]) -> str:
    """`template` with ``{name}`` replaced by ``values[name]`` (unknown names are left
    as they are); plain substitution, never ``str.format``."""
    return _PLACEHOLDER.sub(
        lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )


class Alert(Component):
    name = "alert"
    supported = frozenset({"level", "message", "topic", "db", "url"})

    def open(self) -> None:
        level = str(self.args.get("level") or "warning").lower()
        if level == "warn":
            level = "warning"
        if level not in LEVELS:
            raise self.fail(f"unknown level {level!r}", f"use one of {', '.join(LEVELS)}")
        self.level = level
        self.template = str(
            self.args.get("message") or "{column}={value} at {ts} is anomalous (score {score})"
        )
        self.db = bool(self.args.get("db", True))
        self.topic = self.args.get("topic")
        self.client: Any = None
        self.pending: list[Any] = []
        self.count = 0
        if self.topic:
            self._connect_mqtt()

    def _connect_mqtt(self) -> None:
        from tsloom.amml.mqtt_link import connect, new_client

        client, host, port = new_client(self, "alert")
        connect(self, client, host, port)
        self.client = client

    def _events(self, batch: pl.DataFrame) -> pl.DataFrame:
        indexed = batch.with_row_index("__row")
        if "anomaly" in batch.columns:
            return indexed.filter(pl.col("anomaly").fill_null(False))
        return indexed

    def _describe(self, row: dict[str, Any]) -> tuple[str | None, Any, dict[str, Any]]:
        column = row.get("anomaly_column")
        if column is None:
            numeric = [
                k
                for k, v in row.items()
                if k not in ("ts", "__row", *_ADDED)
                and isinstance(v, int | float)
                and not isinstance(v, bool)
            ]
            column = numeric[0] if numeric else None
        value = row.get(column) if column else None
        payload = {k: _json_value(v) for k, v in row.items() if k not in ("__row", "alert_id")}
        return column, value, payload

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        from tsloom.db.engine import session_scope
        from tsloom.db.models import FlowAlert

        events = self._events(batch)
        ids: list[int | None] = [None] * batch.height
        if events.is_empty():
            return (batch.with_columns(pl.Series("alert_id", ids, dtype=pl.Int64)),)
        records = []
        for row in events.iter_rows(named=True):
            column, value, payload = self._describe(row)
            ts = row.get("ts")
            score = row.get("anomaly_score")
            message = render_message(
                self.template,
                {
                    **{k: _json_value(v) for k, v in row.items()},
                    "column": column,
                    "value": value,
                    "ts": _json_value(ts),
                    "score": f"{score:.3g}" if isinstance(score, float) else score,
                    "level": self.level,
                },
            )
            event_ts = ts if isinstance(ts, datetime) else None
            records.append((row["__row"], message, event_ts, payload, column, value))
        if self.db:
            with session_scope(self.ctx.settings.db_url) as s:
                rows = [
                    FlowAlert(
                        run_id=self.ctx.run_id,
                        flow=self.ctx.flow_name,
                        component=self.inst.name,
                        line=self.inst.line,
                        level=self.level,
                        message=message,
                        event_ts=event_ts,
                        payload=payload,
                    )
                    for _, message, event_ts, payload, _, _ in records
                ]
                s.add_all(rows)
                s.flush()
                for (index, *_), added in zip(records, rows, strict=True):
                    ids[index] = added.id
        for index, message, event_ts, payload, column, value in records:
            self.count += 1
            log.log(logging.getLevelName(self.level.upper()), "AMML alert: %s", message)
            if self.client is not None:
                doc = {
                    "alert_id": ids[index],
                    "run_id": self.ctx.run_id,
                    "flow": self.ctx.flow_name,
                    "level": self.level,
                    "message": message,
                    "ts": _json_value(event_ts),
                    "column": column,
                    "value": _json_value(value),
                    "payload": payload,
                }
                info = self.client.publish(str(self.topic), json.dumps(doc), qos=1)
                self.pending.append(info)
        return (batch.with_columns(pl.Series("alert_id", ids, dtype=pl.Int64)),)

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is None:
            return
        for info in self.pending:
            try:
                info.wait_for_publish(timeout=5)
            except (RuntimeError, ValueError):
                log.warning("an alert could not be published to MQTT")
        client.disconnect()
        client.loop_stop()


# ------------------------------------------------------------------------------- snapshot


class Snapshot(Component):
    name = "snapshot"
    supported = frozenset({"size", "name"})

    def open(self) -> None:
        size = int(self.args.get("size") or 100)
        if not 1 <= size <= MAX_RING:
            raise self.fail(f"size={size}: give 1 to {MAX_RING} rows")
        self.size = size
        self.label = str(self.args.get("name") or self.ctx.flow_name or "snapshot")
        self.ring: pl.DataFrame | None = None
        self.saved: list[int] = []

    def _triggers(self, batch: pl.DataFrame) -> list[tuple[int, int | None]]:
        """(row index, alert id) of the rows that fire a snapshot."""
        if "alert_id" in batch.columns:
            fire = pl.col("alert_id").is_not_null()
        elif "anomaly" in batch.columns:
            fire = pl.col("anomaly").fill_null(False)
        else:
            return []
        ids = batch["alert_id"] if "alert_id" in batch.columns else None
        rows = batch.with_row_index("__row").filter(fire)["__row"].to_list()
        return [(i, ids[i] if ids is not None else None) for i in rows]

    def process(self, batch: pl.DataFrame, port: int = 0) -> Iterable[Emitted]:
        from tsloom.db.engine import session_scope
        from tsloom.db.models import FlowSnapshot

        if batch.is_empty():
            return (batch,)
        past = self.ring if self.ring is not None else batch.clear()
        full = pl.concat([past, batch], how="diagonal_relaxed")
        triggers = self._triggers(batch)
        if triggers:
            snaps = []
            for index, alert_id in triggers:
                end = past.height + index + 1
                rows = full.slice(max(0, end - self.size), min(end, self.size))
                snaps.append(
                    FlowSnapshot(
                        alert_id=alert_id,
                        run_id=self.ctx.run_id,
                        name=self.label,
                        row_count=rows.height,
                        columns=rows.columns,
                        data=_rows_json(rows),
                    )
                )
            with session_scope(self.ctx.settings.db_url) as s:
                s.add_all(snaps)
                s.flush()
                self.saved.extend(snap.id for snap in snaps)
        self.ring = full.tail(self.size)
        return (batch,)


# --------------------------------------------------------------------------- reading back


def _alert_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "run_id": row.run_id,
        "flow": row.flow,
        "component": row.component,
        "line": row.line,
        "level": row.level,
        "message": row.message,
        "event_ts": _json_value(row.event_ts),
        "payload": row.payload,
        "created_at": _json_value(row.created_at),
    }


def list_alerts(
    settings: Settings | None = None,
    *,
    run_id: int | None = None,
    flow: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored alerts, oldest first (the newest `limit` if given), of a run or flow."""
    import sqlalchemy as sa

    from tsloom.db.engine import session_scope
    from tsloom.db.models import FlowAlert

    settings = settings or load_settings()
    query = sa.select(FlowAlert)
    if run_id is not None:
        query = query.where(FlowAlert.run_id == run_id)
    if flow is not None:
        query = query.where(FlowAlert.flow == flow)
    if limit is not None:
        query = query.order_by(FlowAlert.id.desc()).limit(limit)
    with session_scope(settings.db_url) as s:
        rows = [_alert_dict(r) for r in s.scalars(query)]
    return sorted(rows, key=lambda r: r["id"])


def _snapshot_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "alert_id": row.alert_id,
        "run_id": row.run_id,
        "name": row.name,
        "row_count": row.row_count,
        "columns": list(row.columns),
        "data": row.data,
        "created_at": _json_value(row.created_at),
    }


def get_snapshot(alert_id: int, settings: Settings | None = None) -> dict[str, Any]:
    """The snapshot stored for alert `alert_id` (the first, if several components took one):
    ``columns``, ``row_count`` and ``data`` (column → values, times as ISO text)."""
    import sqlalchemy as sa

    from tsloom.db.engine import session_scope
    from tsloom.db.models import FlowSnapshot

    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        row = s.scalar(
            sa.select(FlowSnapshot)
            .where(FlowSnapshot.alert_id == alert_id)
            .order_by(FlowSnapshot.id)
            .limit(1)
        )
        if row is None:
            raise TsloomError(
                f"no snapshot for alert {alert_id}",
                hint="a `snapshot` component after `alert` stores one per alert",
            )
        return _snapshot_dict(row)


def list_snapshots(
    settings: Settings | None = None, *, run_id: int | None = None
) -> list[dict[str, Any]]:
    """Stored snapshots (without their data), oldest first."""
    import sqlalchemy as sa

    from tsloom.db.engine import session_scope
    from tsloom.db.models import FlowSnapshot

    settings = settings or load_settings()
    query = sa.select(FlowSnapshot).order_by(FlowSnapshot.id)
    if run_id is not None:
        query = query.where(FlowSnapshot.run_id == run_id)
    with session_scope(settings.db_url) as s:
        return [
            {k: v for k, v in _snapshot_dict(r).items() if k != "data"} for r in s.scalars(query)
        ]


def snapshot_frame(snapshot: dict[str, Any]) -> pl.DataFrame:
    """A stored snapshot's rows as a frame (``ts`` parsed back to UTC times)."""
    frame = pl.DataFrame({c: snapshot["data"][c] for c in snapshot["columns"]}, strict=False)
    if "ts" in frame.columns and frame["ts"].dtype == pl.String:
        frame = frame.with_columns(pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"))
    return frame


COMPONENTS: list[type[Component]] = [Surveillance, Alert, Snapshot]
