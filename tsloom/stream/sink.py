"""Batched lake appends of forecasts and completed steps, off the stream's loop.

Rows gather in memory and go to the lake in one commit per dataset when `flush_rows` rows
wait or `flush_seconds` have passed (and at stop), on a writer thread, so a commit never
stalls the readings. At most two flushes wait for the writer; past `max_pending_rows` the
oldest held rows are dropped and counted, so a lake that stalls cannot exhaust memory.

Lake layout (the web UI's Live page reads it):

- predictions (``stream.predictions``): ``ts`` the predicted time (UTC); keys ``model``
  (the ref), ``target`` (the feature), ``horizon`` (steps ahead, 1-based); values
  ``value`` and ``issued_step`` (the grid time of the window's last step, epoch seconds;
  the lake keeps one timestamp column per dataset).
- actuals (``stream.actuals``): ``ts`` the step's grid time; key ``series`` (the feature
  name); value ``value`` (the step's aggregate).

Appends are idempotent (keys + ts), so replaying a stream adds nothing twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from tsloom.config import Settings
from tsloom.stream.config import LakeSettings
from tsloom.stream.engine import Forecast

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class SinkStats:
    prediction_rows: int = 0  # rows written to the predictions dataset
    actual_rows: int = 0
    commits: int = 0
    dropped_rows: int = 0  # held rows dropped because the lake fell behind
    errors: int = 0
    last_error: str | None = None


class _Columns:
    """Column chunks of one dataset, concatenated at flush."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.chunks: list[dict[str, Any]] = []
        self.rows = 0

    def add(self, chunk: dict[str, Any], rows: int) -> None:
        self.chunks.append(chunk)
        self.rows += rows

    def drop_oldest(self) -> int:
        chunk = self.chunks.pop(0)
        n = len(chunk["ts"])
        self.rows -= n
        return n

    def take(self) -> list[dict[str, Any]]:
        chunks, self.chunks, self.rows = self.chunks, [], 0
        return chunks


class LakeSink:
    """Collects forecasts and step values; appends them in batches on a writer thread."""

    def __init__(self, config: LakeSettings, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.stats = SinkStats()
        self._preds = _Columns(["ts", "model", "target", "horizon", "value", "issued_step"])
        self._acts = _Columns(["ts", "series", "value"])
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None

    # -- input (stream loop) ---------------------------------------------------------

    def add_forecasts(self, forecasts: Sequence[Forecast]) -> None:
        if not forecasts:
            return
        ts = np.concatenate([f.ts_us for f in forecasts])
        counts = [f.values.size for f in forecasts]
        chunk = {
            "ts": ts,
            "model": np.repeat(np.asarray([f.model.ref for f in forecasts], dtype=object), counts),
            "target": np.repeat(
                np.asarray([f.model.target for f in forecasts], dtype=object), counts
            ),
            "horizon": np.concatenate([f.horizons for f in forecasts]),
            "value": np.concatenate([f.values for f in forecasts]),
            "issued_step": np.repeat(
                np.asarray([f.issued_us / 1e6 for f in forecasts], dtype=np.float64), counts
            ),
        }
        with self._lock:
            self._preds.add(chunk, int(ts.size))
            self._bound()

    def add_actuals(self, grid_us: int, names: np.ndarray, values: np.ndarray) -> None:
        if not len(values):
            return
        chunk = {
            "ts": np.full(len(values), grid_us, dtype=np.int64),
            "series": names,
            "value": np.asarray(values, dtype=np.float64),
        }
        with self._lock:
            self._acts.add(chunk, len(values))
            self._bound()

    def _bound(self) -> None:
        while self._preds.rows + self._acts.rows > self.config.max_pending_rows:
            biggest = self._acts if self._acts.rows >= self._preds.rows else self._preds
            self.stats.dropped_rows += biggest.drop_oldest()

    @property
    def pending_rows(self) -> int:
        return self._preds.rows + self._acts.rows

    def maybe_flush(self) -> bool:
        """Flush if enough rows wait or the last flush is old enough."""
        due = time.monotonic() - self._last_flush >= self.config.flush_seconds
        if self.pending_rows and (due or self.pending_rows >= self.config.flush_rows):
            self.flush()
            return True
        if due:
            self._last_flush = time.monotonic()
        return False

    def flush(self) -> None:
        """Hand the held rows to the writer (waits while two flushes are queued)."""
        with self._lock:
            preds, acts = self._preds.take(), self._acts.take()
        self._last_flush = time.monotonic()
        if not preds and not acts:
            return
        self._start()
        self._queue.put((preds, acts))

    def close(self) -> None:
        """Flush what is held and wait for the writer to finish."""
        self.flush()
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    # -- writer thread ---------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tsloom-stream-lake")
            self._thread.daemon = True
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            preds, acts = item
            if preds:
                self._write(
                    self.config.predictions_dataset,
                    _frame(preds, {"horizon": pl.Int64}),
                    ["model", "target", "horizon"],
                    ["value", "issued_step"],
                    "prediction_rows",
                )
            if acts:
                self._write(
                    self.config.actuals_dataset,
                    _frame(acts, {}),
                    ["series"],
                    ["value"],
                    "actual_rows",
                )

    def _write(
        self, dataset: str, frame: pl.DataFrame, keys: list[str], values: list[str], what: str
    ) -> None:
        from tsloom.ingest import ingest_frame

        for attempt in range(1, 4):
            try:
                result = ingest_frame(
                    frame,
                    dataset,
                    ts="ts",
                    keys=keys,
                    values=values,
                    origin="tsloom stream",
                    settings=self.settings,
                )
            except OSError as exc:  # storage hiccup: nothing was committed, try again
                if attempt < 3:
                    time.sleep(0.5 * attempt)
                    continue
                self._failed(dataset, frame, exc)
                return
            except Exception as exc:  # the stream goes on; the error is kept in the stats
                self._failed(dataset, frame, exc)
                return
            self.stats.commits += 1
            setattr(self.stats, what, getattr(self.stats, what) + result.rows_written)
            return

    def _failed(self, dataset: str, frame: pl.DataFrame, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.dropped_rows += frame.height
        self.stats.last_error = f"{dataset}: {exc}"
        log.error("stream: appending %d rows to %s failed: %s", frame.height, dataset, exc)


def _frame(chunks: list[dict[str, Any]], casts: dict[str, Any]) -> pl.DataFrame:
    columns: dict[str, Any] = {}
    for name in chunks[0]:
        columns[name] = np.concatenate([np.asarray(c[name]) for c in chunks])
    frame = pl.DataFrame(
        {
            name: pl.Series(name, values.tolist() if values.dtype == object else values)
            for name, values in columns.items()
        }
    )
    frame = frame.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    for name, dtype in casts.items():
        frame = frame.with_columns(pl.col(name).cast(dtype))
    return frame
