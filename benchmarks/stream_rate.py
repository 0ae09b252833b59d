"""Streaming rate of `tsloom stream`: readings/s in, forecasts/s out, for 10 000 sensors and
100 LSTM models.

    .venv/bin/python benchmarks/stream_rate.py [--quick] [--seconds 20] [--no-write]

Setup (cached in benchmarks/.work/stream-home, git-ignored): 10 000 sensors of one keyed
dataset ``bench.sensors`` (``sensor_id``, value ``v``, 1 s period), and 100 vanilla LSTMs
(hidden 16, one epoch: speed, not accuracy, is measured) each integrating its own block
of 100 sensors at 1 s and forecasting 3 s from 10 s; together they read every sensor.

The stream: every sensor reports 10 times per second of event time (100 000 readings per
event second), 50 readings per MQTT message (the ingestion mapping takes a JSON array).
Each completed 1 s step feeds all 100 models (100 forecasts, 300 forecast rows) and 10 000
step values to the lake.

Three measurements, each over the same pre-generated payloads:

1. engine: parsed rows into :class:`StreamEngine` (buffers, watermark, windows, batched
   prediction), no JSON, no broker, no lake;
2. in-process: JSON payloads parsed by the mapping, the engine, and the lake sink (batched
   Delta appends of forecasts and step values on its writer thread, flushed at the end);
3. broker: a publisher process sends the payloads to Mosquitto (127.0.0.1:1883, QoS 0) as
   fast as it can while `StreamRunner` subscribes, predicts, publishes the forecasts back to
   the broker and appends to the lake; the rate counts readings the runner took in, from
   its first message to its last, and the share of published readings that arrived.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _common import machine, write_section

WORK = Path(__file__).resolve().parent / ".work"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PER_MESSAGE = 50
PER_SECOND = 10  # readings per sensor per event second
WARMUP = 11  # event seconds streamed first (untimed in-process) to fill the 10-step windows
MAPPING = {"time": "t", "time_unit": "ms", "keys": ["sensor_id"], "values": ["v"]}


def settings_for(home: Path):
    from tsloom.config import Settings

    home.mkdir(parents=True, exist_ok=True)
    return Settings(
        home=home,
        db_url=f"sqlite:///{home / 'tsloom.db'}",
        lake_url=str(home / "lake"),
        registry_url=str(home / "registry"),
    )


def setup(home: Path, sensors: int, models: int, rows: int = 120) -> list[str]:
    """Train and register `models` small LSTMs over `sensors` sensors (cached)."""
    import polars as pl
    import torch

    import tsloom.registry as reg
    from tsloom.forecast.job import train_on_integration
    from tsloom.ingest import ingest_frame
    from tsloom.registry import records

    settings = settings_for(home)
    tag = f"stream-bench-{sensors}-{models}"
    try:
        refs = [r["ref"] for r in records.all_rows(settings) if tag in r["tags"]]
    except Exception:  # a fresh home has no tables yet
        refs = []
    if len(refs) == models:
        return refs
    torch.set_num_threads(1)
    started = time.perf_counter()
    ids = np.repeat(np.arange(sensors), rows)
    t = np.tile(np.arange(rows), sensors)
    frame = pl.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=int(s)) for s in t],
            "sensor_id": ids,
            "v": np.sin(2 * np.pi * t / 30 + ids) + 0.01 * (ids % 7),
        }
    )
    ingest_frame(frame, "bench.sensors", ts="ts", keys=["sensor_id"], settings=settings)
    per = sensors // models
    refs = []
    for m in range(models):
        block = list(range(m * per, (m + 1) * per))
        names = [f"bench.sensors.v[sensor_id={i}]" for i in block]
        spec = {
            "sources": [{"dataset": "bench.sensors", "keys": {"sensor_id": block}, "period": "1s"}],
            "freq": "1s",
        }
        params = {
            "target": names[0],
            "features": names,
            "method": "vanilla",
            "hidden_size": 16,
            "layers": 1,
            "epochs": 1,
            "input_width": "10s",
            "output_width": "3s",
        }
        run = train_on_integration(spec, params, settings=settings)
        refs.append(reg.register(run, tags=[tag], settings=settings))
        print(f"  model {m + 1}/{models} registered ({time.perf_counter() - started:.0f} s)")
    return refs


def payloads(sensors: int, seconds: int, start: datetime) -> list[bytes]:
    """`seconds` event seconds of readings, PER_MESSAGE readings a message, in time order."""
    out = []
    base = int(start.timestamp() * 1000)
    rng = np.random.default_rng(1)
    ids = np.arange(sensors)
    for s in range(seconds):
        for r in range(PER_SECOND):
            at = base + s * 1000 + r * 100
            values = np.round(np.sin(2 * np.pi * (s + r / 10) / 30 + ids) + rng.normal(0, 0.01), 4)
            for lo in range(0, sensors, PER_MESSAGE):
                docs = [
                    {"t": at, "sensor_id": int(i), "v": float(values[i])}
                    for i in range(lo, min(lo + PER_MESSAGE, sensors))
                ]
                out.append(json.dumps(docs, separators=(",", ":")).encode())
    return out


def config(refs: list[str], topic: str, lake: bool) -> dict:
    return {
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "topics": [f"{topic}/in/#"], "max_inbox": 20_000},
        "dataset": "bench.sensors",
        "mapping": MAPPING,
        "models": [{"ref": r, "name": f"m{i}"} for i, r in enumerate(refs)],
        "allowed_lateness": "1 step",
        "publish": {"topic": f"{topic}/out/{{name}}"},
        "lake": {"enabled": lake, "flush_seconds": 2.0, "flush_rows": 200_000},
    }


def run_engine(
    cfg: dict, settings, warmup: list[bytes], messages: list[bytes], *, parse: bool, lake: bool
) -> dict:
    from tsloom.stream.config import StreamConfig
    from tsloom.stream.engine import StreamEngine
    from tsloom.stream.models import load_models
    from tsloom.stream.sink import LakeSink

    conf = StreamConfig.load({**cfg, "lake": {**cfg["lake"], "enabled": lake}})
    models = load_models(conf.models, settings)
    sink = LakeSink(conf.lake, settings) if lake else None
    engine = StreamEngine(
        conf,
        models,
        on_forecasts=sink.add_forecasts if sink else None,
        on_actuals=sink.add_actuals if sink else None,
    )
    mapping = conf.mapping
    batch = 200
    for i in range(0, len(warmup), batch):  # fill the windows first (not timed)
        rows = []
        for p in warmup[i : i + batch]:
            rows.extend(mapping.parse_payload(p, "x"))
        engine.process(rows)
    before = (engine.stats.readings, engine.stats.steps, engine.stats.forecasts)
    if not parse:
        rows_batches = []
        for i in range(0, len(messages), batch):
            rows = []
            for p in messages[i : i + batch]:
                rows.extend(mapping.parse_payload(p, "x"))
            rows_batches.append(rows)
    started = time.perf_counter()
    if parse:
        for i in range(0, len(messages), batch):
            rows = []
            for p in messages[i : i + batch]:
                rows.extend(mapping.parse_payload(p, "x"))
            engine.process(rows)
            if sink is not None:
                sink.maybe_flush()
    else:
        for rows in rows_batches:
            engine.process(rows)
    if sink is not None:
        sink.close()
    elapsed = time.perf_counter() - started
    s = engine.stats
    sizes = engine.buffer_sizes()
    readings, steps, forecasts = (
        s.readings - before[0],
        s.steps - before[1],
        s.forecasts - before[2],
    )
    return {
        "seconds": elapsed,
        "readings": readings,
        "late": s.late,
        "steps": steps,
        "forecasts": forecasts,
        "readings_per_s": readings / elapsed,
        "forecasts_per_s": forecasts / elapsed,
        "lake_rows": (sink.stats.prediction_rows + sink.stats.actual_rows) if sink else 0,
        "lake_commits": sink.stats.commits if sink else 0,
        "buffer_mib": sum(z.nbytes for z in sizes) / 2**20,
    }


def _publish(messages: list[bytes], topic: str, ready) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    ready.wait()
    for i, payload in enumerate(messages):
        while True:
            info = client.publish(f"{topic}/in/{i % 16}", payload, qos=0)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                break
            time.sleep(0.001)
        if i % 500 == 499:  # let paho's thread drain its queue
            while len(client._out_messages) > 2000:
                time.sleep(0.0005)
    while client._out_messages:
        time.sleep(0.01)
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def run_broker(cfg: dict, settings, messages: list[bytes], topic: str) -> dict:
    from tsloom.stream.runner import StreamRunner

    runner = StreamRunner(cfg, settings)
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(stats=runner.run(stop=stop)))
    thread.start()
    if not runner.ready.wait(15):
        raise SystemExit("the stream runner did not subscribe")
    ready = mp.Event()
    proc = mp.Process(target=_publish, args=(messages, topic, ready))
    proc.start()
    time.sleep(0.5)
    ready.set()
    first = last = None
    seen = 0
    deadline = time.monotonic() + 600
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now_readings = runner.engine.stats.readings
        if now_readings != seen:
            if first is None:
                first = time.perf_counter()
            last = time.perf_counter()
            seen = now_readings
            idle_since = time.monotonic()
        elif not proc.is_alive() and time.monotonic() - idle_since > 3:
            break
    proc.join()
    stop.set()
    thread.join()
    stats = result["stats"]
    elapsed = (last - first) if first and last and last > first else float("nan")
    sent = sum(len(json.loads(m)) for m in messages)
    return {
        "seconds": elapsed,
        "sent": sent,
        "readings": stats.readings,
        "delivered": stats.readings / sent,
        "readings_per_s": stats.readings / elapsed,
        "forecasts": stats.forecasts,
        "forecasts_per_s": stats.forecasts / elapsed,
        "published": stats.published,
        "publish_dropped": stats.publish_dropped,
        "lake_rows": stats.prediction_rows + stats.actual_rows,
        "late": stats.late,
    }


def broker_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 000 sensors, 10 models, 10 s")
    parser.add_argument("--sensors", type=int, default=None)
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=None, help="event seconds streamed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    sensors = args.sensors or (1_000 if args.quick else 10_000)
    models = args.models or (10 if args.quick else 100)
    seconds = args.seconds or (10 if args.quick else 20)

    import torch

    torch.set_num_threads(args.threads)
    home = WORK / f"stream-home-{sensors}-{models}"
    print(f"setup: {sensors} sensors, {models} models in {home}")
    refs = setup(home, sensors, models)
    settings = settings_for(home)
    # each run streams a fresh event range so the lake appends are new rows
    start = T0 + timedelta(days=1 + int(time.time()) % 10_000)
    warmup = payloads(sensors, WARMUP, start)
    messages = payloads(sensors, seconds, start + timedelta(seconds=WARMUP))
    total = len(messages) * PER_MESSAGE
    print(f"{len(messages):,} messages, {total:,} readings over {seconds} event seconds")
    topic = f"tsloom-bench/{os.getpid()}"
    cfg = config(refs, topic, lake=True)

    results = {}
    results["engine"] = run_engine(cfg, settings, warmup, messages, parse=False, lake=False)
    print("engine:", results["engine"])
    lake_dir = Path(settings.lake_url)
    results["in-process"] = run_engine(cfg, settings, warmup, messages, parse=True, lake=True)
    print("in-process:", results["in-process"])
    if broker_up():
        start = start + timedelta(seconds=WARMUP + seconds + 10)
        messages = payloads(sensors, WARMUP + seconds, start)
        results["broker"] = run_broker(cfg, settings, messages, topic)
        print("broker:", results["broker"])
    else:
        print("no MQTT broker on 127.0.0.1:1883: broker path not measured")
    if not args.no_write:
        write_doc(results, sensors, models, seconds, args)
    if lake_dir.exists() and os.environ.get("TSLOOM_BENCH_KEEP_LAKE") != "1":
        for name in ("stream",):  # keep the training data, drop the stream's output
            shutil.rmtree(lake_dir / name, ignore_errors=True)


def write_doc(results: dict, sensors: int, models: int, seconds: int, args) -> None:
    import torch

    cmd = "benchmarks/stream_rate.py" + (" --quick" if args.quick else "")
    today = datetime.now(UTC).date().isoformat()
    rows = []
    labels = {
        "engine": "engine only (parsed rows → buffers → windows → batched predict)",
        "in-process": "in-process: JSON parse + engine + lake sink (no broker)",
        "broker": "through Mosquitto: publisher process → broker → `StreamRunner` "
        "(predictions published back, lake appends)",
    }
    for key, r in results.items():
        extra = ""
        if key == "broker":
            extra = f"{r['delivered']:.1%} of {r['sent']:,} sent readings arrived"
        elif key == "in-process":
            extra = f"{r['lake_rows']:,} lake rows in {r['lake_commits']} commits"
        else:
            extra = f"buffers {r['buffer_mib']:.1f} MiB"
        rows.append(
            f"| {labels[key]} | {r['readings']:,} | {r['seconds']:.2f} | "
            f"{r['readings_per_s']:,.0f} | {r['forecasts']:,} | {r['forecasts_per_s']:,.1f} | "
            f"{extra} |"
        )
    engine = results["engine"]
    aim = "met" if engine["readings_per_s"] >= 100_000 else "not met"
    broker = results.get("broker")
    broker_line = (
        f"Through the broker {broker['readings_per_s']:,.0f} readings/s "
        f"({'meets' if broker['readings_per_s'] >= 100_000 else 'below'} the aim)"
        if broker
        else "The broker path was not measured (no Mosquitto on 127.0.0.1:1883)"
    )
    section = f"""## Streaming

`.venv/bin/python {cmd}` — {today}, {machine()}; PyTorch {torch.__version__} on the CPU
with {args.threads} thread(s). The machine was shared with other work, so the figures are
indicative.

{sensors:,} sensors, each reporting {PER_SECOND}× per event second ({sensors * PER_SECOND:,}
readings per event second, {PER_MESSAGE} readings per MQTT message as a JSON array — the
ingestion mapping takes arrays), {models} vanilla LSTMs (hidden 16; each integrates its own
{sensors // models} sensors at 1 s and forecasts 3 s from 10 s), {seconds} event seconds
timed after {WARMUP} untimed ones that fill the windows (the broker run streams and times
both), lateness 1 step. Every completed step issues {models} forecasts ({3 * models} forecast rows)
and {sensors:,} step values.

| path | readings | seconds | readings/s | forecasts | forecasts/s | notes |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Aim: 100 000 readings/s through the stream path on this 2-core machine — {aim} for the
stream engine ({engine["readings_per_s"]:,.0f} readings/s). {broker_line}; the broker path
includes JSON parsing in Python (one `MqttMapping.parse_reading` per reading) and paho's
network thread on the same two cores as the publisher process and Mosquitto.
"""
    write_section("## Streaming", section)
    print("wrote the Streaming section of docs/benchmarks.md")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
