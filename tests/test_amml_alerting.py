"""The alert → snapshot path: surveillance flags injected anomalies, alert stores them,
snapshot keeps the rows that led up to each one — end to end and component by component."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tsloom.amml.alerting import (
    get_snapshot,
    list_alerts,
    list_snapshots,
    render_message,
    snapshot_frame,
)
from tsloom.amml.base import FlowContext
from tsloom.amml.compiler import compile_program
from tsloom.amml.errors import AmmlError
from tsloom.amml.implementations import implementations
from tsloom.amml.runtime import run_program
from tsloom.ingest.writer import ingest_frame

T0 = datetime(2024, 3, 1, tzinfo=UTC)
SPIKES = {150: 9.0, 400: -8.0, 777: 10.0, 1200: 8.5, 1650: -9.5, 2100: 12.0}


def _sensor(n: int = 2400, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    value = 20.0 + rng.normal(0.0, 1.0, n)
    for index, size in SPIKES.items():
        if index < n:
            value[index] += size
    return pl.DataFrame(
        {"ts": [T0 + timedelta(seconds=10 * i) for i in range(n)], "value": value}
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def _components(text: str, settings):
    ctx = FlowContext(settings=settings, source=text, run_id=42, flow_name="t")
    classes = implementations()
    comps = [classes[i.name](i, ctx) for i in compile_program(text).components]
    for comp in comps:
        comp.open()
    return comps, ctx


def _push(comp, batches: list[pl.DataFrame]) -> pl.DataFrame:
    out = [f for b in batches for f in comp.process(b)]
    return pl.concat(out, how="diagonal_relaxed")


def test_alert_snapshot_end_to_end(tsloom_home) -> None:
    source = _sensor()
    ingest_frame(source, "plant.sensor", ts="ts", settings=tsloom_home)
    flow = (
        'source id="sensor" batch_size=256 | surveillance cols=value method=zscore '
        'threshold=4 window=50 | alert level="warning" message="{column}={value} at {ts}" '
        "| snapshot size=30"
    )
    result = run_program(flow, settings=tsloom_home, run_id=7)
    (out,) = result.results
    assert out.height == source.height
    flagged = set(out.with_row_index("i").filter(pl.col("anomaly"))["i"].to_list())
    assert set(SPIKES) <= flagged  # every injected spike is caught
    assert len(flagged - set(SPIKES)) <= 3  # and few normal points are
    assert out.filter(pl.col("anomaly"))["anomaly_column"].to_list() == ["value"] * len(flagged)

    alerts = list_alerts(tsloom_home, run_id=7)
    assert len(alerts) == len(flagged)
    assert sorted(out["alert_id"].drop_nulls().to_list()) == [a["id"] for a in alerts]
    times = source["ts"].to_list()
    by_ts = {a["event_ts"]: a for a in alerts}
    for index in SPIKES:
        alert = by_ts[times[index].isoformat()]
        value = source["value"][index]
        assert alert["level"] == "warning" and alert["component"] == "alert"
        assert alert["line"] == 1
        assert alert["message"] == f"value={value} at {times[index].isoformat()}"
        assert alert["payload"]["value"] == value and alert["payload"]["anomaly"] is True

        snap = get_snapshot(alert["id"], tsloom_home)
        assert snap["row_count"] == 30 and snap["run_id"] == 7
        rows = snapshot_frame(snap)
        expected = source.slice(index - 29, 30)
        assert rows["ts"].to_list() == expected["ts"].to_list()  # the 30 rows up to the alert
        assert rows["value"].to_list() == expected["value"].to_list()
        assert rows["alert_id"].to_list()[-1] == alert["id"]
    assert len(list_snapshots(tsloom_home, run_id=7)) == len(flagged)


@pytest.mark.parametrize("method", ["zscore", "iqr"])
def test_surveillance_state_carries_across_batches(tsloom_home, method: str) -> None:
    frame = _sensor(900).with_columns((pl.col("value") * 2).alias("other"))
    text = f"normalsource col=v rows=1 | surveillance method={method} window=40"
    (_, one), _ = _components(text, tsloom_home)
    whole = _push(one, [frame])
    (_, many), _ = _components(text, tsloom_home)
    pieces = _push(many, [frame.slice(o, 37) for o in range(0, frame.height, 37)])
    # the same flags and (up to rounding of the rolling sums) the same scores
    assert pieces.drop("anomaly_score").equals(whole.drop("anomaly_score"))
    diff = (pieces["anomaly_score"] - whole["anomaly_score"]).abs().max()
    assert diff is not None and diff < 1e-9
    assert pieces["anomaly_score"].null_count() == whole["anomaly_score"].null_count()
    assert all(len(s) <= 40 for s in many.history.values())  # bounded state
    assert whole["anomaly_score"][:7].is_null().all()  # too little history yet
    assert whole.filter(pl.col("anomaly")).height >= len([i for i in SPIKES if i < 900])


def test_surveillance_threshold_and_column(tsloom_home) -> None:
    frame = pl.DataFrame({"a": [0.0, 5.0, -7.0, 1.0, None], "b": [0.0, 6.0, 1.0, -0.5, 9.0]})
    (_, comp), _ = _components(
        "normalsource col=v rows=1 | surveillance method=threshold threshold=4", tsloom_home
    )
    out = _push(comp, [frame])
    assert out["anomaly"].to_list() == [False, True, True, False, True]
    assert out["anomaly_column"].to_list() == [None, "b", "a", None, "b"]
    assert out["anomaly_score"].to_list() == [0.0, 6.0, 7.0, 1.0, 9.0]
    with pytest.raises(AmmlError, match="needs threshold"):
        _components("normalsource col=v rows=1 | surveillance method=threshold", tsloom_home)
    with pytest.raises(AmmlError, match="unknown method"):
        _components("normalsource col=v rows=1 | surveillance method=magic", tsloom_home)


def test_alert_without_db_and_without_anomaly_column(tsloom_home) -> None:
    frame = pl.DataFrame(
        {"ts": [T0, T0 + timedelta(seconds=1)], "temp": [30.5, 31.0]}
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    (_, alert), _ = _components(
        'normalsource col=v rows=1 | alert level=info message="hot: {temp} ({level})"', tsloom_home
    )
    out = _push(alert, [frame])  # no anomaly column: every row is an event
    stored = list_alerts(tsloom_home)
    assert [a["message"] for a in stored] == ["hot: 30.5 (info)", "hot: 31.0 (info)"]
    assert out["alert_id"].to_list() == [a["id"] for a in stored]
    assert stored[0]["run_id"] == 42 and stored[0]["flow"] == "t"

    (_, quiet), _ = _components("normalsource col=v rows=1 | alert db=false", tsloom_home)
    flagged = frame.with_columns(pl.Series("anomaly", [False, True]))
    out = _push(quiet, [flagged])
    assert out["alert_id"].null_count() == 2 and len(list_alerts(tsloom_home)) == 2


def test_render_message_is_plain_substitution() -> None:
    values = {"value": 3.5, "column": "x"}
    assert render_message("{column}={value}", values) == "x=3.5"
    assert render_message("{value.__class__} {nope}", values) == "{value.__class__} {nope}"


def test_snapshot_ring_spans_batches(tsloom_home) -> None:
    frame = pl.DataFrame({"i": list(range(20)), "anomaly": [i in (2, 13) for i in range(20)]})
    (_, snap), _ = _components("normalsource col=v rows=1 | snapshot size=5 name=ring", tsloom_home)
    out = _push(snap, [frame.slice(0, 4), frame.slice(4, 6), frame.slice(10, 10)])
    assert out.equals(frame)
    snaps = list_snapshots(tsloom_home)
    assert [s["row_count"] for s in snaps] == [3, 5] and snaps[0]["name"] == "ring"
    assert snap.ring.height == 5  # bounded
    from tsloom.db.engine import session_scope
    from tsloom.db.models import FlowSnapshot

    with session_scope(tsloom_home.db_url) as s:
        data = [s.get(FlowSnapshot, x["id"]).data for x in snaps]
    assert data[0]["i"] == [0, 1, 2] and data[1]["i"] == [9, 10, 11, 12, 13]
    with pytest.raises(Exception, match="no snapshot for alert"):
        get_snapshot(12345, tsloom_home)


def test_alert_publishes_to_mqtt(tsloom_home, mqtt_broker) -> None:
    import paho.mqtt.client as mqtt

    host, port = mqtt_broker
    topic = f"tsloom/test/alerts/{time.time_ns()}"
    received: list[dict] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *a: c.subscribe(topic, 1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    sub.connect(host, port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        frame = _sensor(300)
        (_, surv, alert), _ = _components(
            f"normalsource col=v rows=1 | surveillance cols=value threshold=4 window=50 | "
            f'alert topic="{topic}" url="mqtt://{host}:{port}"',
            tsloom_home,
        )
        out = _push(alert, list(surv.process(frame)))
        alert.close()
        events = out.filter(pl.col("anomaly"))
        assert events.height >= 1
        deadline = time.monotonic() + 10
        while len(received) < events.height and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [r["alert_id"] for r in received] == events["alert_id"].to_list()
    assert received[0]["level"] == "warning" and received[0]["column"] == "value"
    assert received[0]["value"] == events["value"][0]
