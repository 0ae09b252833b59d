"""MQTT ingestion against the machine's Mosquitto: no reading lost, none doubled."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import polars as pl
import pytest

from tsloom.config import Settings
from tsloom.errors import ConfigError, SourceError
from tsloom.lake import read_dataset
from tsloom.sources.mqtt import (
    MalformedMessage,
    MqttIngestor,
    MqttIngestStats,
    MqttMapping,
    default_client_id,
    stop_on_signals,
)

DATASET = "mqtt.readings"
T0 = 1669102545000  # ms, 2022-11-22T07:35:45Z
EXAMPLE = {
    "ss_id": 2,
    "event_time": T0,
    "input_data": 460.0,
    "position": "Gwangju A",
    "type_name": "CO2",
    "unit": "ppm",
}
MAPPING = {
    "time": "event_time",
    "time_unit": "ms",
    "keys": ["ss_id", "position", "type_name"],
    "values": ["input_data"],
    "unit_field": "unit",
}


def reading(i: int, **extra: object) -> dict:
    """The i-th reading of sensor 2: one second apart."""
    return {**EXAMPLE, "event_time": T0 + 1000 * i, "input_data": 400.0 + i, **extra}


def publish(broker: tuple[str, int], topic: str, payloads: list) -> None:
    """Publish with QoS 1 and wait until the broker has every message."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(*broker)
    client.loop_start()
    try:
        infos = []
        for payload in payloads:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            infos.append(client.publish(topic, data, qos=1))
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def lake_rows(settings: Settings) -> pl.DataFrame:
    try:
        return read_dataset(DATASET, settings=settings)
    except Exception:  # no table yet
        return pl.DataFrame()


@contextlib.contextmanager
def running(ingestor: MqttIngestor, **kwargs) -> Iterator[dict]:
    """Run `ingestor` in a thread; on exit stop it and wait (bounded) for the flush."""
    out: dict = {}

    def target() -> None:
        try:
            out["stats"] = ingestor.run(**kwargs)
        except BaseException as exc:  # pragma: no cover - surfaced below
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        ingestor.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "ingestor did not stop"
    if "error" in out:
        raise out["error"]


@pytest.fixture
def topic() -> str:
    return f"tsloom-test/{uuid.uuid4().hex}/sensor"


@pytest.fixture
def make_ingestor(
    mqtt_broker: tuple[str, int], tsloom_home: Settings, topic: str
) -> Iterator[Callable[..., MqttIngestor]]:
    """Ingestors on this test's topic, sharing one client id; the broker session is
    deleted afterwards."""
    host, port = mqtt_broker
    client_id = f"tsloom-t-{uuid.uuid4().hex[:12]}"
    made: list[MqttIngestor] = []

    def make(cls: type[MqttIngestor] = MqttIngestor, **kwargs) -> MqttIngestor:
        options = {
            "host": host,
            "port": port,
            "client_id": client_id,
            "batch_size": 100,
            "batch_age": timedelta(seconds=0.3),
            "settings": tsloom_home,
        }
        options.update(kwargs)
        topics = options.pop("topics", topic)
        mapping = options.pop("mapping", MAPPING)
        dataset = options.pop("dataset", DATASET)
        ingestor = cls(dataset, topics, mapping, **options)
        made.append(ingestor)
        return ingestor

    yield make
    for ingestor in made:
        with contextlib.suppress(Exception):
            ingestor.reset_session()


# ---------------------------------------------------------------------------- mapping


def test_mapping_turns_the_example_payload_into_a_row() -> None:
    mapping = MqttMapping.load(MAPPING)
    (row,) = mapping.parse_payload(json.dumps(EXAMPLE).encode(), "t")
    assert row == {
        "ts": T0 * 1000,
        "ss_id": 2,
        "position": "Gwangju A",
        "type_name": "CO2",
        "unit": "ppm",
        "input_data": 460.0,
    }
    assert mapping.key_columns == ["ss_id", "position", "type_name", "unit"]
    assert mapping.value_columns == ["input_data"]


def test_mapping_loads_from_yaml_and_rejects_bad_mappings(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "time: event_time\ntime_unit: ms\nkeys: [ss_id, position, type_name]\n"
        "values: [input_data]\nunits: {input_data: ppm}\n"
    )
    mapping = MqttMapping.from_yaml(path)
    assert mapping.column_units == {"input_data": "ppm"}
    assert MqttMapping.load(str(path)) == mapping
    bad = [
        {"time": "t"},  # no values
        {"time": "t", "values": ["v"], "bogus": 1},  # unknown setting
        {"time": "t", "values": ["v"], "time_unit": "minutes"},
        {"time": "t", "values": ["v"], "units": {"w": "m"}},  # unit of a non-value
        {"time": "t", "values": ["v"], "keys": ["day"]},  # reserved lake column
        {"time": "t", "values": ["v", "v"]},
        {"time": "t", "values": ["v"], "tz": "Mars/Olympus"},
    ]
    for spec in bad:
        with pytest.raises(ConfigError, match="invalid MQTT mapping"):
            MqttMapping.load(spec)
    path.write_text("time: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        MqttMapping.from_yaml(path)


@pytest.mark.parametrize(
    ("unit", "value", "tz"),
    [
        ("s", 1669102545, None),
        ("s", "1669102545.0", None),
        ("ms", 1669102545000, None),
        ("us", 1669102545000000, None),
        ("ns", 1669102545000000000, None),
        ("iso", "2022-11-22T07:35:45Z", None),
        ("iso", "2022-11-22T16:35:45+09:00", None),
        ("iso", "2022-11-22 16:35:45", "Asia/Seoul"),
    ],
)
def test_mapping_time_units(unit: str, value: object, tz: str | None) -> None:
    mapping = MqttMapping(time="t", time_unit=unit, tz=tz, values=["v"])
    (row,) = mapping.parse_payload(json.dumps({"t": value, "v": 1}).encode(), "x")
    expected = datetime(2022, 11, 22, 7, 35, 45, tzinfo=UTC)
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=row["ts"]) == expected


def test_mapping_nested_fields_arrays_topic_key_and_lenient_numbers() -> None:
    mapping = MqttMapping(
        time="meta.at", time_unit="s", keys=["meta.id"], values=["data.temp"], topic_key="topic"
    )
    payload = [
        {"meta": {"at": 10, "id": "a"}, "data": {"temp": "21.5"}},
        {"meta": {"at": 11, "id": "a"}, "data": {"temp": None}},
    ]
    rows = mapping.parse_payload(json.dumps(payload).encode(), "site/a")
    assert rows == [
        {"ts": 10_000_000, "meta_id": "a", "topic": "site/a", "data_temp": 21.5},
        {"ts": 11_000_000, "meta_id": "a", "topic": "site/a", "data_temp": None},
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"42", "expected a JSON object"),
        (b"[]", "empty array"),
        (json.dumps({k: v for k, v in EXAMPLE.items() if k != "ss_id"}), "missing field 'ss_id'"),
        (json.dumps({**EXAMPLE, "input_data": "high"}), "'input_data' is 'high', not a number"),
        (json.dumps({**EXAMPLE, "input_data": True}), "not a number"),
        (json.dumps({**EXAMPLE, "input_data": 10**400}), "'input_data' is too large"),
        (json.dumps({**EXAMPLE, "event_time": "yesterday"}), "time field 'event_time'"),
        (json.dumps({**EXAMPLE, "event_time": 10**30}), "out of range"),
        (json.dumps({**EXAMPLE, "ss_id": None}), "key field 'ss_id' is null"),
        (json.dumps({**EXAMPLE, "ss_id": [1]}), "expected a string or an integer"),
        (json.dumps({**EXAMPLE, "unit": 5}), "unit field"),
        (json.dumps([EXAMPLE, {"ss_id": 1}]), "reading #1: missing field"),
    ],
)
def test_mapping_names_the_reason_for_malformed_payloads(payload, reason: str) -> None:
    mapping = MqttMapping.load(MAPPING)
    data = payload if isinstance(payload, bytes) else payload.encode()
    with pytest.raises(MalformedMessage, match=reason.replace("(", r"\(")):
        mapping.parse_payload(data, "t")


def test_client_id_is_stable_and_short_and_topic_filters_are_checked() -> None:
    a = default_client_id("d.t", ["a/#", "b/+"])
    assert a == default_client_id("d.t", ["b/+", "a/#"])
    assert a != default_client_id("d.u", ["a/#", "b/+"])
    assert len(a) <= 23
    for bad in ["a/#/b", "a/b#", "a+/b", ""]:
        with pytest.raises(ConfigError, match="invalid MQTT topic filter"):
            MqttIngestor(DATASET, bad, MAPPING)


def test_unreachable_broker_raises_source_error(tsloom_home: Settings) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ingestor = MqttIngestor(DATASET, "x/y", MAPPING, port=port, settings=tsloom_home)
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}") as info:
        ingestor.run(idle_timeout=1)
    assert "broker is running" in (info.value.hint or "")


def test_signals_stop_the_ingestor_and_handlers_are_restored(tsloom_home: Settings) -> None:
    ingestor = MqttIngestor(DATASET, "x/y", MAPPING, settings=tsloom_home)
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(ingestor):
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: ingestor.stopping, timeout=5, what="SIGTERM handling")
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------- with a broker


class CrashBeforeAck(MqttIngestor):
    """Dies after the lake commit and before acknowledging: the worst moment."""

    def _ack(self, acks):
        raise RuntimeError("simulated crash before ack")


def test_publish_stop_restart_keeps_exactly_n_rows(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    # First start creates the persistent session and subscription.
    stats = make_ingestor().run(idle_timeout=0.2)
    assert stats.session_present is False and stats.messages == 0

    # Published while stopped: the broker keeps them for the session.
    publish(mqtt_broker, topic, [reading(i) for i in range(10)])
    stats = make_ingestor().run(max_messages=10, idle_timeout=5)
    assert stats.session_present is True
    assert (stats.messages, stats.rows_written, stats.acked) == (10, 10, 10)
    assert lake_rows(tsloom_home).height == 10

    # Crash between the lake commit and the acks: rows are in, messages are not acked.
    publish(mqtt_broker, topic, [reading(i) for i in range(10, 20)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_ingestor(CrashBeforeAck).run(max_messages=10, idle_timeout=5)
    assert lake_rows(tsloom_home).height == 20

    # Restart: the 10 unacked messages come back (DUP) next to 10 new ones; the lake
    # drops the repeats.
    publish(mqtt_broker, topic, [reading(i) for i in range(20, 30)])
    stats = make_ingestor().run(max_messages=20, idle_timeout=5)
    assert stats.messages == 20
    assert stats.redelivered == 10
    assert (stats.rows_written, stats.duplicates_dropped, stats.acked) == (10, 10, 20)

    # And once more: nothing left in the session, still exactly N rows.
    stats = make_ingestor().run(idle_timeout=0.3)
    assert stats.messages == 0
    rows = lake_rows(tsloom_home)
    assert rows.height == 30
    assert rows["input_data"].sort().to_list() == [400.0 + i for i in range(30)]
    assert rows["ts"].n_unique() == 30
    assert rows.schema["ts"] == pl.Datetime("us", "UTC")
    assert rows["ts"].min() == datetime.fromtimestamp(T0 / 1000, tz=UTC)
    assert set(rows["unit"]) == {"ppm"} and set(rows["ss_id"]) == {2}


def test_batches_commit_by_size_and_flush_on_stop(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    make_ingestor().run(idle_timeout=0.1)
    ingestor = make_ingestor(batch_size=5, batch_age=timedelta(seconds=60))
    with running(ingestor) as out:
        publish(mqtt_broker, topic, [reading(i) for i in range(12)])
        wait_for(lambda: ingestor.stats.messages == 12, what="12 messages")
        wait_for(lambda: ingestor.stats.batches == 2, what="two size-triggered commits")
        assert lake_rows(tsloom_home).height == 10
        assert ingestor.stats.acked == 10  # the open batch's 2 are not acked yet
    stats: MqttIngestStats = out["stats"]
    assert stats.stop_reason == "stopped"
    assert (stats.batches, stats.rows_written, stats.acked) == (3, 12, 12)
    assert lake_rows(tsloom_home).height == 12
    assert make_ingestor().run(idle_timeout=0.3).messages == 0  # all acked


def test_batches_commit_by_age(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    make_ingestor().run(idle_timeout=0.1)
    ingestor = make_ingestor(batch_size=1000, batch_age=timedelta(seconds=0.5))
    with running(ingestor):
        publish(mqtt_broker, topic, [reading(i) for i in range(3)])
        wait_for(lambda: ingestor.stats.messages == 3, what="3 messages")
        # 3 readings never fill a batch of 1000 and the ingestor is still running: only
        # the batch's age can commit them (no wall-clock assertion, so load cannot flake it)
        wait_for(lambda: ingestor.stats.batches == 1, timeout=10, what="an age-triggered commit")
        assert ingestor.stats.acked == 3
        assert lake_rows(tsloom_home).height == 3


def test_shutdown_flushes_the_open_batch(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    make_ingestor().run(idle_timeout=0.1)
    ingestor = make_ingestor(batch_size=1000, batch_age=timedelta(minutes=10))
    stop = threading.Event()
    with running(ingestor, stop=stop) as out:
        publish(mqtt_broker, topic, [reading(i) for i in range(7)])
        wait_for(lambda: ingestor.stats.messages == 7, what="7 messages")
        time.sleep(0.2)
        assert ingestor.stats.batches == 0 and lake_rows(tsloom_home).height == 0
        stop.set()  # the caller's event works like .stop()
    assert out["stats"].acked == 7
    assert lake_rows(tsloom_home).height == 7
    assert make_ingestor().run(idle_timeout=0.3).messages == 0


def test_malformed_payloads_are_counted_logged_dead_lettered_and_acked(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings, caplog
) -> None:
    make_ingestor().run(idle_timeout=0.1)
    payloads = [
        reading(0),
        b"not json at all",
        {k: v for k, v in reading(1).items() if k != "event_time"},
        reading(2, input_data="n/a"),
        b"\x00\xff binary",
        reading(3),
    ]
    publish(mqtt_broker, topic, payloads)
    caplog.set_level(logging.WARNING, logger="tsloom.sources.mqtt")
    stats = make_ingestor().run(max_messages=6, idle_timeout=5)
    assert (stats.messages, stats.malformed, stats.rows_written, stats.acked) == (6, 4, 2, 6)
    assert lake_rows(tsloom_home)["input_data"].to_list() == [400.0, 403.0]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert all(topic in w for w in warnings)
    assert any("missing field 'event_time'" in w for w in warnings)
    assert any("'input_data' is 'n/a', not a number" in w for w in warnings)

    assert stats.dead_letter is not None
    assert stats.dead_letter.is_relative_to(tsloom_home.home)
    letters = [json.loads(line) for line in stats.dead_letter.read_text().splitlines()]
    assert len(letters) == 4
    assert {letter["topic"] for letter in letters} == {topic}
    assert letters[0]["payload"] == "not json at all" and "not JSON" in letters[0]["reason"]
    assert "payload_base64" in letters[3]

    # Acked: a restart gets nothing back.
    assert make_ingestor().run(idle_timeout=0.3).messages == 0


def test_malformed_without_dead_letter_file(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    make_ingestor().run(idle_timeout=0.1)
    publish(mqtt_broker, topic, [b"{}", reading(0)])
    stats = make_ingestor(dead_letter=False).run(max_messages=2, idle_timeout=5)
    assert (stats.malformed, stats.rows_written, stats.acked) == (1, 1, 2)
    assert stats.dead_letter is None
    assert not (tsloom_home.home / "dead-letter").exists()


def test_wildcards_and_topic_as_key(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    base = topic.rsplit("/", 1)[0]
    mapping = MqttMapping(time="t", time_unit="iso", values=["v"], topic_key="topic")
    make_ingestor(topics=[f"{base}/+/co2"], mapping=mapping).run(idle_timeout=0.1)
    stamp = {"t": "2024-01-01T00:00:00Z", "v": 1.0}
    publish(mqtt_broker, f"{base}/a/co2", [stamp])
    publish(mqtt_broker, f"{base}/b/co2", [stamp])
    publish(mqtt_broker, f"{base}/b/temp", [stamp])  # not subscribed
    ingestor = make_ingestor(topics=[f"{base}/+/co2"], mapping=mapping)
    stats = ingestor.run(max_messages=2, idle_timeout=5)
    assert stats.rows_written == 2
    rows = lake_rows(tsloom_home)
    assert sorted(rows["topic"]) == [f"{base}/a/co2", f"{base}/b/co2"]
    assert ingestor.run(idle_timeout=0.3).messages == 0


def test_mqtt_311_persistent_session(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    make_ingestor(protocol="3.1.1").run(idle_timeout=0.1)
    publish(mqtt_broker, topic, [reading(i) for i in range(5)])
    stats = make_ingestor(protocol="3.1.1").run(max_messages=5, idle_timeout=5)
    assert stats.session_present is True
    assert (stats.rows_written, stats.acked) == (5, 5)
    assert make_ingestor(protocol="3.1.1").run(idle_timeout=0.3).messages == 0


def test_failed_commit_acks_nothing_and_raises(
    make_ingestor, mqtt_broker, topic: str, tsloom_home: Settings
) -> None:
    from tsloom.errors import SchemaChangeError
    from tsloom.ingest import ingest_frame

    # The dataset already exists with other keys, so every commit is refused.
    frame = pl.DataFrame({"ts": [T0], "station": ["x"], "input_data": [1.0]})
    ingest_frame(frame, DATASET, ts="ts", ts_unit="ms", keys=["station"], settings=tsloom_home)
    make_ingestor().run(idle_timeout=0.1)
    publish(mqtt_broker, topic, [reading(i) for i in range(3)])
    with pytest.raises(SchemaChangeError):
        make_ingestor().run(max_messages=3, idle_timeout=5)
    assert lake_rows(tsloom_home).height == 1
    # Nothing was acknowledged: the broker delivers all three again.
    stats = make_ingestor(dataset="mqtt.other").run(max_messages=3, idle_timeout=5)
    assert (stats.redelivered, stats.rows_written, stats.acked) == (3, 3, 3)
