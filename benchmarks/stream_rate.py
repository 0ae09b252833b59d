"""Streaming rate of `tsloom stream`: readings/s in, forecasts/s out, for 10 000 sensors and
100 LSTM models.

    .venv/bin/python benchmarks/stream_rate.py [--quick] [--seconds 20]
        [--rates 100000,200000,300000] [--no-write]

Setup (cached in benchmarks/.work/stream-home, git-ignored): 10 000 sensors of one keyed
dataset ``bench.sensors`` (``sensor_id``, value ``v``, 1 s period), and 100 vanilla LSTMs
(hidden 16, one epoch: speed, not accuracy, is measured) each integrating its own block
of 100 sensors at 1 s and forecasting 3 s from 10 s; together they read every sensor.

The stream: every sensor reports 10 times per second of event time (100 000 readings per
event second), 50 readings per MQTT message (the ingestion mapping takes a JSON array).
Each completed 1 s step feeds all 100 models (100 forecasts, 300 forecast rows) and 10 000
step values to the lake.

Measurements, each over the same pre-generated payloads:

1. engine: parsed columns into :class:`StreamEngine` (buffers, watermark, windows,
   batched prediction), no JSON, no broker, no lake;
2. in-process: JSON payloads parsed by `BatchParser` (the runner's parser: the ingestion
   mapping's rows), the engine, and the lake sink (batched Delta appends of forecasts and
   step values on its writer thread, flushed at the end);
3. broker, once per rate of ``--rates``: a publisher process sends the payloads to
   Mosquitto (127.0.0.1:1883, QoS 0) at that many readings/s, paced in 10 ms ticks, while
   `StreamRunner` subscribes, predicts, publishes the forecasts back to the broker and
   appends to the lake. The rate counts readings the runner took in and processed, from
   its first message to its last (it cannot exceed the publishing rate); the notes give
   the share of published readings that arrived, the forecasts issued against those due,
   the runner's CPU seconds and the machine's load.
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
    return Settings.at_home(home)


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
    """The runner's path without the broker: `BatchParser` columns into
    `StreamEngine.process_columns`, 200 messages a round (timed with the parse if `parse`)."""
    from tsloom.stream.config import StreamConfig
    from tsloom.stream.engine import StreamEngine
    from tsloom.stream.intake import BatchParser
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
    parser = BatchParser(conf.mapping)
    batch = 200

    def rounds(payloads: list[bytes]):
        for i in range(0, len(payloads), batch):
            yield [("x", p) for p in payloads[i : i + batch]]

    route_started = time.perf_counter()
    for chunk in rounds(warmup):  # fill the windows first (not timed)
        columns = parser.parse(chunk)
        engine.process_columns(columns.ts, columns.keys, columns.values)
    warm_s = time.perf_counter() - route_started
    before = (engine.stats.readings, engine.stats.steps, engine.stats.forecasts)
    parsed = [] if parse else [parser.parse(chunk) for chunk in rounds(messages)]
    started = time.perf_counter()
    if parse:
        for chunk in rounds(messages):
            columns = parser.parse(chunk)
            engine.process_columns(columns.ts, columns.keys, columns.values)
            if sink is not None:
                sink.maybe_flush()
    else:
        for columns in parsed:
            engine.process_columns(columns.ts, columns.keys, columns.values)
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
        "warmup_seconds": warm_s,  # includes binding every series to its model feature
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


def _publish(messages: list[bytes], topic: str, rate: float, ready, done) -> None:
    """Publish `messages` at `rate` readings/s (QoS 0), in ticks of 10 ms; `done` gets the
    seconds the publishing took."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    ready.wait()
    per_tick = max(1, round(rate / PER_MESSAGE / 100))  # messages per 10 ms
    started = time.perf_counter()
    tick = started
    for lo in range(0, len(messages), per_tick):
        for i in range(lo, min(lo + per_tick, len(messages))):
            while client.publish(f"{topic}/in/{i % 16}", messages[i], qos=0).rc:
                time.sleep(0.001)
        while len(client._out_messages) > 2000:  # paho's own queue: let its thread drain
            time.sleep(0.0005)
        tick += 0.01
        pause = tick - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    while client._out_messages:
        time.sleep(0.005)
    done.value = time.perf_counter() - started
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def run_broker(cfg: dict, settings, messages: list[bytes], topic: str, rate: float) -> dict:
    """A publisher process sends `messages` at `rate` readings/s to Mosquitto while
    `StreamRunner` takes them in; the rate is the readings the runner processed from its
    first message to its last."""
    from tsloom.stream.runner import StreamRunner

    runner = StreamRunner(cfg, settings)
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(stats=runner.run(stop=stop)))
    thread.start()
    if not runner.ready.wait(15):
        raise SystemExit("the stream runner did not subscribe")
    ready, done = mp.Event(), mp.Value("d", float("nan"))
    proc = mp.Process(target=_publish, args=(messages, topic, rate, ready, done))
    proc.start()
    time.sleep(0.5)
    cpu0 = os.times()
    ready.set()
    first = last = None
    seen = 0
    deadline = time.monotonic() + 600
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now_received = runner.stats.received
        if now_received != seen:
            if first is None:
                first = time.perf_counter()
            last = time.perf_counter()
            seen = now_received
            idle_since = time.monotonic()
        elif not proc.is_alive() and not runner.backlog and time.monotonic() - idle_since > 3:
            break  # everything that arrived is processed and nothing came for 3 s
    proc.join()
    cpu1 = os.times()
    stop.set()
    thread.join()
    stats = result["stats"]
    elapsed = (last - first) if first and last and last > first else float("nan")
    sent = len(messages) * PER_MESSAGE
    per_step = len(runner.models)
    load = os.getloadavg()[0]
    return {
        "rate": rate,
        "publish_seconds": done.value,
        "published_per_s": sent / done.value,
        "seconds": elapsed,
        "sent": sent,
        "received": stats.received,
        "readings": stats.readings,
        "delivered": stats.received / sent,
        "readings_per_s": stats.readings / elapsed,
        "messages": stats.messages,
        "malformed": stats.malformed,
        "inbox_full": stats.inbox_full,
        "steps": stats.steps,
        "forecasts": stats.forecasts,
        "forecasts_expected": max(0, stats.steps - runner.models[0].steps + 1) * per_step,
        "windows_incomplete": stats.windows_incomplete,
        "forecasts_per_s": stats.forecasts / elapsed,
        "published": stats.published,
        "publish_dropped": stats.publish_dropped,
        "lake_rows": stats.prediction_rows + stats.actual_rows,
        "late": stats.late,
        "runner_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "load_1min": load,
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
    parser.add_argument(
        "--rates",
        default="100000,200000,300000",
        help="publishing rates (readings/s) of the broker runs, comma-separated",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    sensors = args.sensors or (1_000 if args.quick else 10_000)
    models = args.models or (10 if args.quick else 100)
    seconds = args.seconds or (10 if args.quick else 20)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

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
        for rate in rates:
            start = start + timedelta(seconds=WARMUP + seconds + 10)
            messages = payloads(sensors, WARMUP + seconds, start)
            key = f"broker@{rate:.0f}"
            results[key] = run_broker(cfg, settings, messages, topic, rate)
            print(f"{key}:", results[key])
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
        "engine": "engine only (parsed columns → buffers → windows → batched predict)",
        "in-process": "in-process: JSON parse (`BatchParser`) + engine + lake sink, no broker",
    }
    broker_rows = []
    for key, r in results.items():
        if key.startswith("broker@"):
            label = (
                f"through Mosquitto, published at {r['rate']:,.0f} readings/s: publisher "
                "process → broker → `StreamRunner` (forecasts published back, lake appends)"
            )
            extra = (
                f"{r['delivered']:.1%} of {r['sent']:,} sent readings arrived (published at "
                f"{r['published_per_s']:,.0f}/s); forecasts {r['forecasts']:,} of "
                f"{r['forecasts_expected']:,} due; runner CPU {r['runner_cpu_s']:.1f} s; "
                f"inbox full {r['inbox_full']}×; load {r['load_1min']:.1f}"
            )
            broker_rows.append(r)
        else:
            label = labels[key]
            if key == "in-process":
                extra = f"{r['lake_rows']:,} lake rows in {r['lake_commits']} commits"
            else:
                extra = (
                    f"buffers {r['buffer_mib']:.1f} MiB; binding {sensors:,} series + "
                    f"{WARMUP} warm-up s took {r['warmup_seconds']:.1f} s"
                )
        rows.append(
            f"| {label} | {r['readings']:,} | {r['seconds']:.2f} | "
            f"{r['readings_per_s']:,.0f} | {r['forecasts']:,} | {r['forecasts_per_s']:,.1f} | "
            f"{extra} |"
        )
    engine = results["engine"]
    full = [r for r in broker_rows if r["delivered"] >= 0.999]
    short = [r for r in broker_rows if r["delivered"] < 0.999]
    if not broker_rows:
        broker_line = "The broker path was not measured (no Mosquitto on 127.0.0.1:1883)."
    else:
        top = max(full, key=lambda r: r["readings_per_s"], default=None)
        met = top is not None and top["readings_per_s"] >= 100_000
        broker_line = (
            f"Through the broker every published reading arrived and was processed at up to "
            f"{top['readings_per_s']:,.0f} readings/s"
            if top
            else "Through the broker no run delivered every published reading"
        ) + f" — the aim is {'met' if met else 'not met'} through the stream path."
        for r in short:
            broker_line += (
                f" Offered {r['rate']:,.0f} readings/s, {r['delivered']:.1%} arrived and "
                f"{r['readings_per_s']:,.0f}/s were processed: the runner's process is then "
                "the bottleneck and Mosquitto drops QoS 0 messages to it."
            )
    section = f"""## Streaming

`.venv/bin/python {cmd}` — {today}, {machine()}; PyTorch {torch.__version__} on the CPU
with {args.threads} thread(s). The machine's 1-minute load average is in the notes: other
work on the same cores lowers the figures.

{sensors:,} sensors, each reporting {PER_SECOND}× per event second ({sensors * PER_SECOND:,}
readings per event second, {PER_MESSAGE} readings per MQTT message as a JSON array — the
ingestion mapping takes arrays), {models} vanilla LSTMs (hidden 16; each integrates its own
{sensors // models} sensors at 1 s and forecasts 3 s from 10 s), {seconds} event seconds
timed after {WARMUP} untimed ones that fill the windows (the broker runs stream and time
both: {WARMUP + seconds} event seconds, binding every series included), lateness 1 step.
Every completed step issues {models} forecasts ({3 * models} forecast rows) and
{sensors:,} step values. The broker runs publish at a fixed rate (QoS 0, paced in 10 ms
ticks) from a separate process; readings/s is what `StreamRunner` took in and processed,
from its first message to its last, so it matches the publishing rate when the runner
keeps up; "arrived" is the share of published readings it received (Mosquitto drops QoS 0
messages to a subscriber that falls behind).

| path | readings | seconds | readings/s | forecasts | forecasts/s | notes |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Aim: 100 000 readings/s through the stream path on this 2-core machine. Engine alone
{engine["readings_per_s"]:,.0f} readings/s. {broker_line} Publisher, Mosquitto, paho's
network thread and the runner share the same two cores.
"""
    write_section("## Streaming", section)
    print("wrote the Streaming section of docs/benchmarks.md")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
