"""`StreamRunner`: subscribe, buffer, predict, publish, append — until stopped.

    runner = StreamRunner("stream.yaml")           # models load here: errors come early
    stop = threading.Event()
    stats = runner.run(stop=stop)                  # returns once stop is set

Paho's network thread only puts each message into a bounded inbox (``mqtt.max_inbox``);
when it is full the network thread waits (counted in ``inbox_full``), TCP pushes back and
the broker holds or drops messages by its own limits (Mosquitto drops QoS 0 messages to a
subscriber that falls behind), so a slow model never grows memory here. The loop takes up
to ``max_batch_messages`` messages at a time, parses them into columns
(:class:`~tsloom.stream.intake.BatchParser`: the ingestion mapping's rows, malformed
messages counted), feeds the :class:`~tsloom.stream.engine.StreamEngine`, publishes the
forecasts and hands rows to the :class:`~tsloom.stream.sink.LakeSink`. Stopping (the
event, :meth:`stop`, SIGINT or SIGTERM through :func:`stop_on_signals`) flushes the held
rows to the lake and disconnects; open steps (not yet passed by the watermark) are not
predicted from.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tsloom.config import Settings, load_settings
from tsloom.errors import SourceError
from tsloom.stream.config import StreamConfig
from tsloom.stream.engine import Forecast, StreamEngine
from tsloom.stream.intake import BatchParser
from tsloom.stream.models import BoundModel, bind_model, is_alias, load_models, resolve_ref
from tsloom.stream.publish import Publisher
from tsloom.stream.sink import LakeSink

log = logging.getLogger(__name__)

_LOG_MALFORMED = 20


@dataclass
class StreamStats:
    """What one :meth:`StreamRunner.run` did."""

    messages: int = 0
    malformed: int = 0  # messages refused whole (logged with topic and reason)
    received: int = 0  # readings parsed from the messages
    inbox_full: int = 0  # times the network thread waited: processing was behind
    readings: int = 0  # values routed to a model's series
    unbound: int = 0  # values of series no model reads
    late: int = 0  # values dropped: their step had completed
    steps: int = 0
    windows_incomplete: int = 0
    forecasts: int = 0
    published: int = 0
    publish_dropped: int = 0
    prediction_rows: int = 0  # written to the lake
    actual_rows: int = 0
    lake_commits: int = 0
    lake_dropped: int = 0
    lake_error: str | None = None
    swaps: int = 0  # models swapped in: a stage alias pointed to another model
    swap_errors: int = 0  # alias lookups or loads that failed (the old model kept)
    elapsed_s: float = 0.0
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StreamRunner:
    """Real-time inference on an MQTT stream; see the module docstring."""

    def __init__(
        self,
        config: StreamConfig | Mapping[str, Any] | str | Path,
        settings: Settings | None = None,
        *,
        device: str = "cpu",
        on_forecasts: Callable[[list[Forecast]], None] | None = None,
    ) -> None:
        self.config = StreamConfig.load(config)
        self.settings = settings or load_settings()
        self.device = device
        models = load_models(self.config.models, self.settings, device=device)
        self.sink = LakeSink(self.config.lake, self.settings) if self.config.lake.enabled else None
        self.engine = StreamEngine(
            self.config,
            models,
            on_forecasts=self._forecasts,
            on_actuals=self.sink.add_actuals if self.sink is not None else None,
        )
        self.user_on_forecasts = on_forecasts
        self.publisher: Publisher | None = None
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._closing = threading.Event()  # run() is leaving: the inbox is no longer read
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(self.config.mqtt.max_inbox)
        self._subscribed = threading.Event()
        self._fatal: SourceError | None = None
        self.ready = threading.Event()  # set once subscribed
        self._next_refresh = time.monotonic() + self.config.alias_refresh

    @property
    def models(self) -> list[BoundModel]:
        """The models running now (a promoted model replaces its alias's old one)."""
        return self.engine.models

    def stop(self) -> None:
        """Ask a running `run` to flush and return (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def backlog(self) -> int:
        """Messages received and not yet processed (at most ``mqtt.max_inbox``)."""
        return self._inbox.qsize()

    # -- forecasts -------------------------------------------------------------------

    def _forecasts(self, forecasts: list[Forecast]) -> None:
        if self.publisher is not None and self.config.publish.enabled:
            self.publisher.publish(forecasts)
        if self.sink is not None:
            self.sink.add_forecasts(forecasts)
        if self.user_on_forecasts is not None:
            self.user_on_forecasts(forecasts)

    # -- stage aliases ---------------------------------------------------------------

    def refresh_aliases(self) -> int:
        """Look every stage alias of the config up again and swap in the model it points
        to now, where that changed (loaded with `load_servable`, between steps: see
        :meth:`StreamEngine.swap_model`). A lookup or load that fails keeps the old model,
        is logged and counted (`swap_errors`). Returns the number of models swapped."""
        from tsloom.registry import load_servable

        self._next_refresh = time.monotonic() + self.config.alias_refresh
        swapped = 0
        loaded = {m.ref: m.model for m in self.engine.models}
        for old in list(self.engine.models):
            binding = old.binding
            if not is_alias(binding.ref):
                continue
            try:
                ref = resolve_ref(binding.ref, self.settings)
                if ref == old.ref:
                    continue
                model = loaded.get(ref)
                if model is None:
                    model = load_servable(ref, settings=self.settings, device=self.device)
                new = bind_model(old.index, binding, ref, model)
            except Exception as exc:  # any failure keeps the running model
                self.stats.swap_errors += 1
                log.error(
                    "stream: %s: cannot swap in its current model, keeping %s: %s",
                    binding.ref,
                    old.ref,
                    getattr(exc, "message", None) or exc,
                )
                continue
            loaded[ref] = model
            kept = self.engine.swap_model(new)
            self.stats.swaps += 1
            swapped += 1
            log.warning(
                "stream: %s now points to %s: swapped in for %s (%s)",
                binding.ref,
                ref,
                old.ref,
                "buffers kept" if kept else "features or frequency differ: a fresh window fills",
            )
        return swapped

    def _maybe_refresh(self) -> None:
        if self.config.alias_refresh > 0 and time.monotonic() >= self._next_refresh:
            self.refresh_aliases()

    # -- the loop --------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> StreamStats:
        """Run until stopped (`stop()`, the `stop` event), `max_messages` or
        `idle_timeout` seconds without a message; flushes to the lake before returning."""
        started = time.monotonic()
        last_message = started
        self.stats = StreamStats()
        self._closing.clear()
        client = self._connect()
        self.publisher = Publisher(client, self.config.publish)
        batch_size = self.config.max_batch_messages
        parser = BatchParser(self.config.mapping)
        reason = ""
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
                try:
                    first = self._inbox.get(timeout=0.1)
                except queue.Empty:
                    if idle_timeout is not None and time.monotonic() - last_message >= idle_timeout:
                        reason = "idle"
                        break
                    if self.sink is not None:
                        self.sink.maybe_flush()
                    self._maybe_refresh()
                    continue
                last_message = time.monotonic()
                batch = [first]
                limit = batch_size
                if max_messages is not None:
                    limit = min(limit, max_messages - self.stats.messages)
                while len(batch) < limit:
                    try:
                        batch.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                columns = parser.parse(batch)
                for i, (topic, reason) in enumerate(columns.problems):
                    if self.stats.malformed + i < _LOG_MALFORMED:
                        log.warning("stream: malformed message on %r: %s", topic, reason)
                self.stats.malformed += columns.malformed
                self.stats.messages += len(batch)
                self.stats.received += len(columns)
                self.engine.process_columns(columns.ts, columns.keys, columns.values)
                if self.sink is not None:
                    self.sink.maybe_flush()
                self._maybe_refresh()
        except KeyboardInterrupt:
            reason = "interrupted"
            raise
        finally:
            self._closing.set()  # paho's thread must not wait for an inbox nobody reads
            try:
                if self.sink is not None:
                    self.sink.close()
            finally:
                self._close(client)
                self._stop.clear()
                self._collect(reason or "error", time.monotonic() - started)
        log.info("stream stopped (%s): %s", reason, self.stats)
        return self.stats

    def _collect(self, reason: str, elapsed: float) -> None:
        e = self.engine.stats
        s = self.stats
        s.readings, s.unbound, s.late = e.readings, e.unbound, e.late
        s.steps, s.windows_incomplete, s.forecasts = e.steps, e.windows_incomplete, e.forecasts
        if self.publisher is not None:
            s.published, s.publish_dropped = self.publisher.published, self.publisher.dropped
        if self.sink is not None:
            k = self.sink.stats
            s.prediction_rows, s.actual_rows = k.prediction_rows, k.actual_rows
            s.lake_commits, s.lake_dropped, s.lake_error = k.commits, k.dropped_rows, k.last_error
        s.stop_reason = reason
        s.elapsed_s = elapsed

    # -- the connection --------------------------------------------------------------

    def _connect(self) -> Any:
        import paho.mqtt.client as mqtt

        m = self.config.mqtt
        client_id = m.client_id or f"tsloom-stream-{uuid.uuid4().hex[:10]}"
        if m.protocol == "5":
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
            )
        else:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
        client.max_queued_messages_set(self.config.publish.max_queue)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if m.username is not None:
            client.username_pw_set(m.username, m.password)
        if m.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._subscribed.clear()
        self._fatal = None
        try:
            client.connect(m.host, m.port, keepalive=m.keepalive)
        except (OSError, ValueError) as exc:
            raise SourceError(
                f"cannot reach the MQTT broker at {m.host}:{m.port}: {exc}",
                hint="check mqtt.url in the stream config and that the broker is running",
            ) from exc
        client.loop_start()
        deadline = time.monotonic() + m.connect_timeout
        while not self._subscribed.is_set() and self._fatal is None:
            if time.monotonic() > deadline:
                self._close(client)
                raise SourceError(
                    f"the MQTT broker at {m.host}:{m.port} did not accept our subscription "
                    f"within {m.connect_timeout:g}s"
                )
            self._subscribed.wait(0.05)
        if self._fatal is not None:
            self._close(client)
            raise self._fatal
        self.ready.set()
        log.info("stream: subscribed to %s on %s:%d", ", ".join(m.topics), m.host, m.port)
        return client

    def _close(self, client: Any) -> None:
        self.ready.clear()
        with contextlib.suppress(Exception):
            client.disconnect()
        with contextlib.suppress(Exception):
            client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        m = self.config.mqtt
        if reason_code.is_failure:
            self._fatal = SourceError(
                f"the MQTT broker at {m.host}:{m.port} refused the connection: {reason_code}",
                hint="check mqtt.username/password and the broker's access rules",
            )
            return
        result, _ = client.subscribe([(topic, m.qos) for topic in m.topics])
        if result != 0:
            self._fatal = SourceError(f"cannot subscribe to {m.topics}: error {result}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [
            topic
            for topic, code in zip(self.config.mqtt.topics, reason_codes, strict=False)
            if code.is_failure
        ]
        if failed:
            self._fatal = SourceError(
                f"the MQTT broker refused the subscription to {', '.join(failed)}",
                hint="check the topic filters and the broker's access rules",
            )
            return
        self._subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        # Only enqueue: paho's network thread must get back to the socket at once, or the
        # broker's queue for us fills and it drops QoS 0 messages.
        item = (message.topic, message.payload)
        try:
            self._inbox.put_nowait(item)
            return
        except queue.Full:
            self.stats.inbox_full += 1
        while True:
            try:
                self._inbox.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._closing.is_set() or self._stop.is_set():
                    return


def stop_on_signals(runner: StreamRunner) -> contextlib.AbstractContextManager[None]:
    """For the CLI: the first SIGINT/SIGTERM stops `runner` cleanly, a second interrupts."""
    from tsloom.signals import stop_on_signals as stop_on

    return stop_on(runner, "flushing to the lake and stopping")
