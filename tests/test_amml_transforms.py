"""AMML's progress components and `sink`: batch by batch, they give what the same operation
gives on the whole frame at once; sinks are read back."""

from __future__ import annotations

import io
import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from test_amml_engine import Feed, frame, run

from tsloom.amml.errors import AmmlError
from tsloom.prep.resample import downsample


def one(text: str, settings, data: pl.DataFrame, batch: int = 7, **kw) -> pl.DataFrame:
    Feed.FRAMES = {"a": data}
    result = run(f"normalsource col=a batch_size={batch} | {text}", settings, **kw)
    assert result.status == "finished"
    (out,) = result.results
    return out


def with_gaps(n: int = 60) -> pl.DataFrame:
    data = frame(n)
    mask = pl.Series([i % 7 in (2, 3, 4) or i in (0, n - 1) for i in range(n)])
    return data.with_columns(pl.when(mask).then(None).otherwise(pl.col("v")).alias("v"))


def test_filter_select_assign(tsloom_home) -> None:
    data = frame(50).with_columns(w=pl.col("v") * 3)
    out = one(
        "filter cond=v > 0 and w < 2 | assign y=v*2 z=y+1 | select cols=[z, v]", tsloom_home, data
    )
    want = data.filter((pl.col("v") > 0) & (pl.col("w") < 2))
    assert out.columns == ["z", "v"]
    assert out["z"].to_list() == pytest.approx((want["v"] * 2 + 1).to_list())


def test_scalers_fit_the_whole_bounded_input(tsloom_home) -> None:
    data = frame(100)
    mm = one("minmax_scaler", tsloom_home, data)
    v = data["v"]
    assert mm["v"].to_list() == pytest.approx(((v - v.min()) / (v.max() - v.min())).to_list())
    z = one("zscore_scaler", tsloom_home, data)
    assert z["v"].to_list() == pytest.approx(((v - v.mean()) / v.std(ddof=0)).to_list())
    back = one("minmax_scaler | minmax_inverse", tsloom_home, data)
    assert back["v"].to_list() == pytest.approx(v.to_list())
    first = one("minmax_scaler fit_rows=20", tsloom_home, data)
    head = v.head(20)
    assert first["v"].to_list() == pytest.approx(
        ((v - head.min()) / (head.max() - head.min())).to_list()
    )


@pytest.mark.parametrize("agg", ["mean", "max", "first", "sum"])
def test_resample_across_batches(tsloom_home, agg: str) -> None:
    data = frame(300)
    out = one(f'resample every="1h" agg={agg}', tsloom_home, data, batch=13)
    assert out.equals(downsample(data, "1h", agg))


@pytest.mark.parametrize("method", ["linear", "ffill", "bfill", "zero", "mean"])
def test_impute_across_batches(tsloom_home, method: str) -> None:
    data = with_gaps()
    out = one(f"impute method={method}", tsloom_home, data, batch=5)
    v = pl.col("v")
    whole = {
        "linear": v.interpolate().backward_fill().forward_fill(),
        "ffill": v.forward_fill(),
        "bfill": v.backward_fill(),
        "zero": v.fill_null(0.0),
        "mean": v.fill_null(v.mean()),
    }[method]
    want = data.with_columns(whole)
    assert out["ts"].equals(data["ts"])
    assert out["v"].to_list() == pytest.approx(want["v"].to_list(), nan_ok=True)


def test_window_across_batches(tsloom_home) -> None:
    data = frame(40)
    out = one("window size=4 step=3 horizon=2", tsloom_home, data, batch=6)
    v = data["v"].to_list()
    ends = list(range(3, 40 - 2, 3))
    assert out.height == len(ends)
    assert out.columns == ["ts", "v_lag3", "v_lag2", "v_lag1", "v_lag0", "v_lead1", "v_lead2"]
    for row, e in zip(out.iter_rows(), ends, strict=True):
        assert row[0] == data["ts"][e]
        assert list(row[1:]) == pytest.approx(v[e - 3 : e + 3])


def test_inner_join_drops_unmatched(tsloom_home) -> None:
    Feed.FRAMES = {
        "a": frame(120),
        "b": frame(10, timedelta(minutes=3), col="v", seed=2),
    }
    text = """x = normalsource col=a batch_size=11
y = normalsource col=b batch_size=3
join x y tolerance="2min" how=inner | print"""
    (out,) = run(text, None).results
    want = Feed.FRAMES["a"].join_asof(
        Feed.FRAMES["b"].rename({"v": "v_y"}),
        on="ts",
        strategy="backward",
        tolerance=timedelta(minutes=2),
    )
    want = want.filter(pl.col("v_y").is_not_null())
    assert out.columns == ["ts", "v", "v_y"] and out.sort("ts").equals(want)


def keyed(n: int, every: timedelta, col: str, seed: int, keys: list[str]) -> pl.DataFrame:
    return frame(n, every, col=col, seed=seed).with_columns(
        sensor_id=pl.Series([keys[i % len(keys)] for i in range(n)])
    )


@pytest.mark.parametrize("tolerance", ['tolerance="7min"', ""])
def test_join_by_key_across_batches(tsloom_home, tolerance: str) -> None:
    left = keyed(150, timedelta(minutes=1), "v", 0, ["s0", "s1", "s2"])
    right = keyed(60, timedelta(minutes=2), "v", 3, ["s0", "s1"])
    # s2 shows up on the right only at the start: without a tolerance its row must be kept
    # (per key) for the whole stream; s3 never matches
    right = pl.concat([right, keyed(1, timedelta(minutes=1), "v", 4, ["s2"])]).sort("ts")
    left = left.with_columns(
        sensor_id=pl.when(pl.int_range(150) % 10 == 9).then(pl.lit("s3")).otherwise("sensor_id")
    )
    Feed.FRAMES = {"a": left, "b": right}
    text = f"""x = normalsource col=a batch_size=11
y = normalsource col=b batch_size=4
join x y on=ts by=sensor_id {tolerance} | print"""
    (out,) = run(text, None).results
    want = left.join_asof(
        right.rename({"v": "v_y"}),
        on="ts",
        by="sensor_id",
        strategy="backward",
        tolerance=timedelta(minutes=7) if tolerance else None,
        check_sortedness=False,
    )
    assert out.columns == ["ts", "v", "sensor_id", "v_y"]
    assert out.sort("ts").equals(want)
    assert out.filter(pl.col("sensor_id") == "s3")["v_y"].null_count() == 15
    if not tolerance:
        assert out.filter(pl.col("sensor_id") == "s2")["v_y"].null_count() == 0


def test_join_by_missing_key_column(tsloom_home) -> None:
    Feed.FRAMES = {
        "a": keyed(20, timedelta(minutes=1), "v", 0, ["s0"]),
        "b": frame(10, timedelta(minutes=2), col="w", seed=1),
    }
    text = """x = normalsource col=a batch_size=5
y = normalsource col=b batch_size=5
join x y by=[sensor_id] | print"""
    with pytest.raises(AmmlError, match=r"join: flow 'y' has no key column\(s\) sensor_id") as err:
        run(text, None)
    assert "every joined flow needs the by= columns" in (err.value.hint or "")
    assert err.value.line == 3


def test_print_every(tsloom_home) -> None:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    one("print every=3 limit=1", tsloom_home, frame(70), batch=10, console=console)
    assert console.file.getvalue().count("print (line 1)") == 3  # batches 1, 4, 7


def test_sink_csv_and_lake(tsloom_home, tmp_path: Path) -> None:
    from tsloom.lake import read_dataset

    data = frame(95)
    out = tmp_path / "out.csv"
    Feed.FRAMES = {"a": data}
    run(f'normalsource col=a batch_size=10 | sink to=csv path="{out}"', tsloom_home)
    back = pl.read_csv(out, try_parse_dates=True)
    assert back.height == 95 and back["v"].to_list() == pytest.approx(data["v"].to_list())
    result = run(
        'normalsource col=a batch_size=10 | sink to=lake name="amml.out" flush_rows=40',
        tsloom_home,
    )
    assert result.results == []
    lake = read_dataset("amml.out", settings=tsloom_home)
    assert lake.height == 95 and lake["v"].to_list() == pytest.approx(data["v"].to_list())


def _db_roundtrip(settings, url: str | None) -> None:
    import sqlalchemy as sa

    data = frame(33)
    Feed.FRAMES = {"a": data}
    arg = f' url="{url}"' if url else ""
    for _ in range(2):  # the second run appends to the table the first one created
        run(f"normalsource col=a batch_size=10 | sink to=db table=amml_out{arg}", settings)
    engine = sa.create_engine(url or settings.db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT v FROM amml_out")).all()
    engine.dispose()
    assert len(rows) == 66
    assert sorted(r[0] for r in rows) == pytest.approx(sorted(data["v"].to_list() * 2))


def test_sink_db_sqlite(tsloom_home) -> None:
    _db_roundtrip(tsloom_home, None)


def test_sink_db_postgresql(tsloom_home, pg_url: str) -> None:
    _db_roundtrip(tsloom_home, pg_url)


def test_sink_mqtt(tsloom_home, mqtt_broker) -> None:
    import paho.mqtt.client as mqtt

    host, port = mqtt_broker
    topic = f"tsloom/test/{uuid.uuid4().hex[:8]}"
    got: list[dict] = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(5)
        data = frame(12)
        Feed.FRAMES = {"a": data}
        run(
            f'normalsource col=a batch_size=5 | sink to=mqtt topic="{topic}" '
            f'url="mqtt://{host}:{port}"',
            tsloom_home,
        )
        for _ in range(50):
            if len(got) >= 12:
                break
            threading.Event().wait(0.1)
    finally:
        client.loop_stop()
        client.disconnect()
    assert len(got) == 12
    assert [g["v"] for g in got] == pytest.approx(data["v"].to_list())
    assert got[0]["ts"].startswith("2024-01-01T00:00:00")
