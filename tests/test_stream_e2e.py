"""`tsloom stream` end to end against the machine's Mosquitto: a model trained and
registered on two keyed sensors, a known series published to the broker (two readings per
step, one out of order within the lateness, one too late, a third sensor no model reads),
the forecasts received on the output topic equal to what the registry model gives offline
on the same windows, and both lake datasets holding them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from stream_plant import F1, F2, T0, H, ingest_plant, level, train_plant
from typer.testing import CliRunner

import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.lake import read_dataset
from tsloom.stream import StreamConfigError, StreamRunner

TRAIN_HOURS = 240
STREAM_HOURS = 16  # streamed after the training data
IN_STEPS = 6


@pytest.fixture
def trained(tsloom_home: Settings) -> str:
    ingest_plant(tsloom_home, TRAIN_HOURS)
    ref = train_plant(tsloom_home, [F1, F2], hidden=8, in_steps=IN_STEPS, out_steps=3)
    reg.promote(ref, "production", settings=tsloom_home)
    return ref


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def test_stream_predictions_equal_the_registry_model_offline(
    trained: str, tsloom_home: Settings, mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    import paho.mqtt.client as mqtt

    host, port = mqtt_broker
    run_id = uuid.uuid4().hex[:10]
    base = f"tsloom-test/{run_id}"
    iid, segment, _method, _pid = trained.split("/")
    config = {
        "mqtt": {"url": f"mqtt://{host}:{port}", "topics": [f"{base}/sensors/#"], "qos": 1},
        "dataset": "plant.sensors",
        "mapping": {"time": "t", "time_unit": "ms", "keys": ["sensor_id"], "values": ["temp"]},
        "models": [{"ref": f"{iid}/{segment}/production", "name": "m1"}],
        "allowed_lateness": "1 step",
        "publish": {"topic": f"{base}/pred/{{name}}", "qos": 1},
        "lake": {"flush_seconds": 0.5, "flush_rows": 10},
    }
    runner = StreamRunner(config, tsloom_home)
    assert runner.models[0].ref == trained  # the production alias resolved

    received: list[dict] = []
    got = threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{run_id}")
    listener.on_message = lambda c, u, msg: (received.append(json.loads(msg.payload)), got.set())
    listener.connect(host, port)
    listener.subscribe(f"{base}/pred/#", qos=1)
    listener.loop_start()

    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(stats=runner.run(stop=stop)))
    thread.start()
    assert runner.ready.wait(10), "the runner did not subscribe"

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{run_id}")
    publisher.connect(host, port)
    publisher.loop_start()

    # What the stream should see per step: the mean of the readings that count.
    readings: dict[tuple[int, int], list[float]] = {}
    sent = [0]
    messages = [0]  # published, to wait until the runner has taken every one

    def send(sensor: int, hour: int, minute: int, value: float, *, counts: bool = True) -> None:
        at = T0 + (TRAIN_HOURS + hour) * H + timedelta(minutes=minute)
        doc = {"t": ms(at), "sensor_id": sensor, "temp": value}
        publisher.publish(f"{base}/sensors/{sensor}", json.dumps(doc), qos=1).wait_for_publish(5)
        sent[0] += 1
        messages[0] += 1
        if counts and sensor in (1, 2):
            readings.setdefault((sensor, hour), []).append(value)

    for hour in range(STREAM_HOURS):
        h = TRAIN_HOURS + hour
        for sensor in (1, 2):
            send(sensor, hour, 10, level(sensor, h) - 0.25)
            send(sensor, hour, 40, level(sensor, h) + 0.75)
        send(3, hour, 20, 99.0)  # a sensor no model reads
        if hour == 9:
            send(1, 8, 55, level(1, h - 1) + 0.5)  # out of order, within the lateness
            send(2, 6, 30, 1000.0, counts=False)  # step 6 completed long ago: too late
        if hour == 12:  # several readings in one message (a JSON array)
            docs = [
                {"t": ms(T0 + (h * H) + timedelta(minutes=50)), "sensor_id": s, "temp": 0.0}
                for s in (1, 2)
            ]
            publisher.publish(f"{base}/sensors/batch", json.dumps(docs), qos=1).wait_for_publish(5)
            messages[0] += 1
            for s in (1, 2):
                readings[(s, hour)].append(0.0)
            sent[0] += 2
        if hour == 13:  # a malformed message is counted, not fatal
            publisher.publish(f"{base}/sensors/bad", b"not json", qos=1).wait_for_publish(5)
            messages[0] += 1

    # watermark = last reading (hour 15 + 40 min) - 1 h → steps up to hour 13 completed
    last_step = STREAM_HOURS - 3
    expected_steps = list(range(IN_STEPS - 1, last_step + 1))
    deadline = time.monotonic() + 30
    # every step's forecast, and every message taken (the last step can complete before
    # the last messages are read: stopping then would leave them uncounted)
    while (
        len(received) < len(expected_steps) or runner.stats.messages < messages[0]
    ) and time.monotonic() < deadline:
        got.wait(0.2)
        got.clear()
    stop.set()
    thread.join(30)
    publisher.loop_stop()
    listener.loop_stop()
    stats = result["stats"]

    assert len(received) == len(expected_steps), (len(received), stats)
    assert stats.late == 1 and stats.unbound == STREAM_HOURS
    assert stats.malformed == 1 and stats.received == sent[0]
    assert stats.forecasts == len(expected_steps) and stats.published == len(expected_steps)

    # the offline truth: the registry model on the same windows
    model = reg.load(trained, settings=tsloom_home)
    grid = pl.DataFrame(
        {
            "ts": [T0 + (TRAIN_HOURS + k) * H for k in range(STREAM_HOURS)],
            F1: [float(np.mean(readings[(1, k)])) for k in range(STREAM_HOURS)],
            F2: [float(np.mean(readings[(2, k)])) for k in range(STREAM_HOURS)],
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    by_issue = {msg["issued_step"]: msg for msg in received}
    offline_rows = []
    for k in expected_steps:
        issued = T0 + (TRAIN_HOURS + k) * H
        msg = by_issue[issued.isoformat().replace("+00:00", "Z")]
        assert msg["model"] == trained and msg["target"] == F1 and msg["name"] == "m1"
        offline = model.predict(grid.slice(k - IN_STEPS + 1, IN_STEPS))
        points = msg["forecast"][F1]
        assert [p["ts"] for p in points] == [
            t.isoformat().replace("+00:00", "Z") for t in offline["ts"].to_list()
        ]
        np.testing.assert_allclose(
            [p["value"] for p in points], offline[F1].to_numpy(), rtol=0, atol=1e-5
        )
        offline_rows += [
            (t, h, v) for t, h, v in zip(offline["ts"], offline["step"], offline[F1], strict=True)
        ]

    # the lake holds the same forecasts, and the completed steps
    preds = read_dataset("stream.predictions", settings=tsloom_home).sort("issued_step", "horizon")
    assert preds.height == len(offline_rows) == stats.prediction_rows
    assert set(preds["model"]) == {trained} and set(preds["target"]) == {F1}
    assert preds["horizon"].to_list() == [h for _, h, _ in offline_rows]
    assert preds["ts"].to_list() == [t for t, _, _ in offline_rows]
    np.testing.assert_allclose(preds["value"], [v for _, _, v in offline_rows], atol=1e-5)
    issued = preds["issued_step"].to_numpy()
    lead = (preds["ts"].dt.epoch("s").to_numpy() - issued) / 3600
    assert (lead == preds["horizon"].to_numpy()).all()

    actuals = read_dataset("stream.actuals", settings=tsloom_home)
    assert set(actuals["series"]) == {F1, F2}
    assert actuals.height == 2 * (last_step + 1) == stats.actual_rows
    one = actuals.filter(pl.col("series") == F1).sort("ts")
    np.testing.assert_allclose(one["value"], grid[F1][: last_step + 1], atol=1e-12)
    assert one["ts"].to_list() == grid["ts"][: last_step + 1].to_list()


def test_cli_stream_names_the_bad_field(tsloom_home: Settings, tmp_path: Path) -> None:
    from tsloom.cli import app

    path = tmp_path / "stream.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"url": "mqtt://127.0.0.1:1883", "topics": ["x/#"]},
                "mapping": {"time": "t", "values": ["v"]},
                "models": [{"ref": "abc"}],
                "allowed_lateness": "whenever",
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "tsloom.cli", "stream", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "allowed_lateness 'whenever' is not a duration" in out.stderr
    assert "stream" in CliRunner().invoke(app, ["stream", "--help"]).output
    with pytest.raises(StreamConfigError, match="allowed_lateness"):
        StreamRunner(path, tsloom_home)


def test_unknown_model_is_a_clear_error(tsloom_home: Settings) -> None:
    from tsloom.stream.models import StreamModelError

    config = {
        "mqtt": {"topics": ["x/#"]},
        "mapping": {"time": "t", "values": ["v"]},
        "models": ["0123456789abcdef0123456789abcdef01234567/v/vanilla/production"],
    }
    with pytest.raises(StreamModelError, match="no production model"):
        StreamRunner(config, tsloom_home)


def test_stopping_with_a_full_inbox_returns_and_counts_the_waits(
    trained: str, tsloom_home: Settings, mqtt_broker: tuple[str, int]
) -> None:
    """Paho's thread waits on a full inbox while processing is slow; stopping through the
    `stop` event must still return (it used to wait for that thread forever)."""
    import paho.mqtt.client as mqtt

    host, port = mqtt_broker
    base = f"tsloom-test/{uuid.uuid4().hex[:10]}"
    config = {
        "mqtt": {"url": f"mqtt://{host}:{port}", "topics": [f"{base}/in/#"], "max_inbox": 2},
        "dataset": "plant.sensors",
        "mapping": {"time": "t", "time_unit": "ms", "keys": ["sensor_id"], "values": ["temp"]},
        "models": [trained],
        "max_batch_messages": 1,
        "publish": {"enabled": False},
        "lake": {"enabled": False},
    }
    runner = StreamRunner(config, tsloom_home)
    slow = runner.engine.process_columns

    def process_slowly(*args):
        time.sleep(0.1)
        return slow(*args)

    runner.engine.process_columns = process_slowly  # type: ignore[method-assign]
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(stats=runner.run(stop=stop)))
    thread.start()
    assert runner.ready.wait(10), "the runner did not subscribe"
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect(host, port)
    publisher.loop_start()
    for i in range(20):
        doc = {"t": ms(T0) + i, "sensor_id": 1, "temp": 1.0}
        publisher.publish(f"{base}/in/1", json.dumps(doc), qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while runner.stats.inbox_full == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(15)
    publisher.loop_stop()
    assert not thread.is_alive(), "run() did not return after stop with a full inbox"
    stats = result["stats"]
    assert stats.inbox_full >= 1 and stats.stop_reason == "stopped"
    assert 1 <= stats.messages < 20 and stats.received == stats.messages
