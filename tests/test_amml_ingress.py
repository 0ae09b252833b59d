"""AMML ingress components: lake datasets (keyed too), saved integrations, synthetic noise,
CSV files, SQL queries (SQLite and PostgreSQL) and MQTT topics, batch by batch."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from tsloom.amml.base import FlowContext
from tsloom.amml.compiler import compile_program
from tsloom.amml.errors import AmmlError
from tsloom.amml.implementations import implementations
from tsloom.amml.runtime import run_program
from tsloom.ingest.writer import ingest_frame

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _component(text: str, settings, ctx: FlowContext | None = None):
    """The first component of `text`, opened, with its context."""
    ctx = ctx or FlowContext(settings=settings, source=text)
    inst = compile_program(text).components[0]
    comp = implementations()[inst.name](inst, ctx)
    comp.open()
    return comp, ctx


def _batches(text: str, settings) -> tuple[list[pl.DataFrame], FlowContext]:
    comp, ctx = _component(text, settings)
    try:
        return list(comp.batches()), ctx
    finally:
        comp.close()


def _series(n: int, *, step_s: int = 60) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "time": [T0 + timedelta(seconds=step_s * i) for i in range(n)],
            "a": [float(i) for i in range(n)],
            "b": [float(i) * 0.5 for i in range(n)],
        }
    )


def test_source_batches_keyed_dataset_and_cols(tsloom_home) -> None:
    ingest_frame(_series(25), "plant.flat", ts="time", settings=tsloom_home)
    batches, ctx = _batches('source id="flat" batch_size=10', tsloom_home)
    assert [b.height for b in batches] == [10, 10, 5]
    whole = pl.concat(batches)
    assert whole.columns == ["ts", "a", "b"] and whole["a"].to_list() == [
        float(i) for i in range(25)
    ]
    assert whole["ts"].dtype == pl.Datetime("us", "UTC") and ctx.datasets == ["plant.flat"]

    keyed = pl.concat(
        [_series(6).with_columns(pl.lit(k).alias("sensor")) for k in ("s1", "s2")]
    ).with_columns(pl.when(pl.col("sensor") == "s2").then(pl.col("a") + 100).otherwise("a"))
    ingest_frame(keyed, "plant.keyed", ts="time", keys=["sensor"], settings=tsloom_home)
    batches, _ = _batches('source id="keyed" cols=a batch_size=5', tsloom_home)
    out = pl.concat(batches)
    assert out.columns == ["ts", "sensor", "a"] and out.height == 12
    assert out["ts"].is_sorted()  # time order across keys, not key by key
    assert out.filter(pl.col("sensor") == "s2")["a"].to_list() == [100.0 + i for i in range(6)]


def test_source_saved_integration(tsloom_home) -> None:
    from tsloom.integrate import IntegrationSpec, integrate
    from tsloom.integrate.store import save_integration

    ingest_frame(_series(120), "plant.one", ts="time", settings=tsloom_home)
    ingest_frame(_series(60, step_s=120), "plant.two", ts="time", settings=tsloom_home)
    spec = IntegrationSpec.from_tables(["plant.one", "plant.two"], "2min")
    integrated = integrate(spec, settings=tsloom_home)
    save_integration(integrated, tsloom_home)

    batches, ctx = _batches(f'source integration="{integrated.id}" batch_size=16', tsloom_home)
    out = pl.concat(batches)
    assert out.equals(integrated.frame)
    assert max(b.height for b in batches) == 16
    assert sorted(ctx.datasets) == ["plant.one", "plant.two"]

    with pytest.raises(AmmlError, match="no saved integration"):
        _batches(f'source integration="{"0" * 40}"', tsloom_home)


def test_normalsource_bounded_is_seeded(tsloom_home) -> None:
    text = 'normalsource col=v mean=5 std=2 rows=2000 freq="10s" seed=3 start="2024-01-01"'
    result = run_program(text + " | print limit=1", settings=tsloom_home, console=None)
    batches, _ = _batches(text + " batch_size=300", tsloom_home)
    frame = pl.concat(batches)
    assert max(b.height for b in batches) == 300
    assert frame.height == 2000 and frame.columns == ["ts", "v"]
    assert frame["ts"][0] == T0 and (frame["ts"].diff().drop_nulls() == timedelta(seconds=10)).all()
    assert abs(frame["v"].mean() - 5) < 0.2 and abs(frame["v"].std() - 2) < 0.2
    again, _ = _batches(text, tsloom_home)  # same seed, other batch size: same values
    assert pl.concat(again).equals(frame)
    assert result.results[0]["v"].to_list() == frame["v"].to_list()


def test_normalsource_streams_until_stopped(tsloom_home) -> None:
    comp, ctx = _component("normalsource col=x batch_size=50", tsloom_home)
    seen = 0
    for batch in comp.batches():
        seen += batch.height
        if seen >= 500:
            ctx.stop.set()
    assert seen == 500


def test_csv_batches_and_bad_time(tsloom_home, tmp_path: Path) -> None:
    path = tmp_path / "readings.csv"
    n = 23
    lines = ["when,temp,site"] + [f"2024-01-01 00:{i:02d}:00,{i * 1.5},north" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    batches, _ = _batches(f'csv path="{path}" ts=when batch_size=10', tsloom_home)
    assert [b.height for b in batches] == [10, 10, 3]
    out = pl.concat(batches)
    assert out.columns == ["ts", "temp", "site"]
    assert out["ts"].dtype == pl.Datetime("us", "UTC") and out["ts"][3] == T0 + timedelta(minutes=3)
    assert out["temp"].to_list() == [i * 1.5 for i in range(n)]

    lines[15] = "yesterday,1.0,north"  # file line 16
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AmmlError, match=r"line 16.*yesterday"):
        _batches(f'csv path="{path}" ts=when batch_size=10', tsloom_home)
    with pytest.raises(AmmlError, match="no such file"):
        _batches(f'csv path="{tmp_path / "nope.csv"}"', tsloom_home)


def _fill_table(url: str, n: int) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "readings",
        meta,
        sa.Column("stamp", sa.DateTime(timezone=True)),
        sa.Column("temp", sa.Float),
        sa.Column("site", sa.String(16)),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"stamp": T0 + timedelta(minutes=i), "temp": i * 0.25, "site": f"s{i % 3}"}
                for i in range(n)
            ],
        )
    engine.dispose()


def _check_sql(url: str, settings) -> None:
    _fill_table(url, 45)
    text = (
        f'sql url="{url}" query="select stamp, temp, site from readings where temp >= 1 '
        'order by stamp" ts=stamp batch_size=20'
    )
    batches, _ = _batches(text, settings)
    assert [b.height for b in batches] == [20, 20, 1]
    out = pl.concat(batches)
    assert out.columns == ["ts", "temp", "site"]
    assert out["ts"].dtype == pl.Datetime("us", "UTC")
    assert out["ts"][0] == T0 + timedelta(minutes=4)
    assert out["temp"].to_list() == [i * 0.25 for i in range(4, 45)]
    with pytest.raises(AmmlError, match=r"sql: query on .* failed"):
        _batches(f'sql url="{url}" query="select * from missing_table"', settings)


def test_sql_sqlite(tsloom_home, tmp_path: Path) -> None:
    _check_sql(f"sqlite:///{tmp_path / 'src.db'}", tsloom_home)


def test_sql_postgresql(tsloom_home, pg_url: str) -> None:
    _check_sql(pg_url, tsloom_home)


def test_mqtt_streams_until_stopped(tsloom_home, mqtt_broker) -> None:
    import paho.mqtt.client as mqtt

    host, port = mqtt_broker
    topic = f"tsloom/test/amml/{time.time_ns()}"
    comp, ctx = _component(
        f'mqtt topic="{topic}" url="mqtt://{host}:{port}" qos=1 batch_size=20 wait=0.2',
        tsloom_home,
    )
    got: list[pl.DataFrame] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            got.extend(comp.batches())
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert comp.subscribed.wait(15), errors
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(host, port)
    pub.loop_start()
    n = 50
    infos = []
    for i in range(n):
        doc = {"ts": (T0 + timedelta(seconds=i)).isoformat(), "temp": i * 1.0, "site": "a"}
        infos.append(pub.publish(topic, json.dumps(doc), qos=1))
        if i == 10:
            infos.append(pub.publish(topic, b"not json", qos=1))
    # epoch milliseconds and an array of readings are understood too
    epoch_ms = int((T0 + timedelta(seconds=n)).timestamp() * 1000)
    infos.append(pub.publish(topic, json.dumps([{"ts": epoch_ms, "temp": 99.0}]), qos=1))
    for info in infos:
        info.wait_for_publish(5)
    deadline = time.monotonic() + 15
    while sum(b.height for b in got) < n + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    ctx.stop.set()
    reader.join(10)
    pub.disconnect()
    pub.loop_stop()
    assert not reader.is_alive() and not errors
    out = pl.concat(got, how="diagonal_relaxed").sort("ts")
    assert out.height == n + 1 and max(b.height for b in got) <= 21
    assert out["ts"].dtype == pl.Datetime("us", "UTC")
    assert out["ts"].to_list() == [T0 + timedelta(seconds=i) for i in range(n + 1)]
    assert out["temp"].to_list() == [*(float(i) for i in range(n)), 99.0]
    assert out["site"].to_list()[:n] == ["a"] * n


def test_mqtt_urls_parse_the_same_for_every_component() -> None:
    from tsloom.amml.mqtt_link import mqtt_address
    from tsloom.errors import ConfigError

    assert mqtt_address(None) == ("127.0.0.1", 1883, None, None, False)
    assert mqtt_address("mqtts://u:p@broker") == ("broker", 8883, "u", "p", True)
    with pytest.raises(ConfigError, match="not mqtt://host"):
        mqtt_address("http://broker")
