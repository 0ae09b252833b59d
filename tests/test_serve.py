"""The REST server over the registry: search/show/predict/integrations, errors (404 with
nearest matches, 413, 422, integrity), the LRU model cache and coalesced loads, stage
aliases picked up without a restart, API keys, dynamic batching and overload (429),
preload/readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from conftest import shared_etth1_home
from fastapi.testclient import TestClient

import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.errors import ConfigError
from tsloom.forecast.job import train_on_integration
from tsloom.integrate import IntegrationSpec, integrate, integration_id
from tsloom.serve import ServeConfig, create_app, hash_key
from tsloom.serve.batching import predict_batch
from tsloom.serve.cache import ModelCache
from tsloom.serve.metrics import Metrics

SPEC = {"sources": ["power.etth1"], "freq": "1h", "start": "2016-07-01", "end": "2016-08-15"}
BASE = {"target": "OT", "method": "dlinear", "epochs": 1, "input_width": "24h"}
KEY = "s3cret-key"


class World:
    settings: Settings
    a: str  # 24h in, 6h out
    b: str  # 12h in, 3h out
    window: pl.DataFrame  # 24 hourly rows of ts + the integrated features, after training


def train(settings: Settings, **change) -> str:
    run = train_on_integration(SPEC, {**BASE, **change}, settings=settings)
    return reg.register(run, settings=settings)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with shared_etth1_home(tmp_path_factory, "serve") as settings:
        w = World()
        w.settings = settings
        w.a = train(w.settings, output_width="6h")
        w.b = train(w.settings, input_width="12h", output_width="3h")
        spec = IntegrationSpec.from_tables(
            ["power.etth1"], "1h", start="2016-09-01", end="2016-09-03"
        )
        w.window = integrate(spec, settings=w.settings).frame
        yield w
    torch.set_num_threads(threads)


def rows(frame: pl.DataFrame, columns: list[str] | None = None) -> list[dict]:
    frame = frame.select(["ts", *(columns or [c for c in frame.columns if c != "ts"])])
    frame = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame.to_dicts()


def ot_rows(w: World, n: int = 24, offset: int = 0) -> list[dict]:
    part = w.window.slice(offset, n).rename({"power.etth1.OT": "OT"})
    return rows(part, ["OT", *[c for c in part.columns if c.startswith("power.")]])


def client(w: World, **config) -> TestClient:
    return TestClient(create_app(w.settings, ServeConfig(**config)))


# ------------------------------------------------------------------ reads and predictions


def test_search_show_integrations_and_probes(world: World) -> None:
    iid = integration_id(["power.etth1"])
    with client(world) as c:
        tree = c.get("/v1/models").json()
        assert set(tree) == {iid}
        leaves = tree[iid]["power.etth1.OT"]["dlinear"]
        assert {v["ref"] for v in leaves.values()} == {world.a, world.b}
        assert c.get("/v1/models", params={"tables": "power.etth1", "target": "OT"}).json()
        assert c.get("/v1/models", params={"method": "vanilla"}).json() == {}
        assert c.get("/v1/models", params={"metric": "rmse", "max_value": -1}).json() == {}
        bad = c.get("/v1/models", params={"stage": "gold"})
        assert bad.status_code == 422 and "gold" in bad.json()["message"]

        shown = c.get(f"/v1/models/{world.a}").json()
        assert shown["ref"] == world.a and shown["verified"] is True
        assert shown["params"]["output_width"] and "rmse" in shown["metrics"]
        assert shown["lineage"]["integration"]["spec"]
        by_prefix = c.get(f"/v1/models/{world.a.rsplit('/', 1)[1][:10]}").json()
        assert by_prefix["ref"] == world.a

        made = c.post("/v1/integrations", json={"tables": ["power.etth1", "power.etth1"]})
        assert made.json() == {"integration_id": iid, "tables": ["power.etth1"]}
        assert c.post("/v1/integrations", json={"tables": ["../x"]}).status_code == 422
        assert c.post("/v1/integrations", json={"tables": []}).status_code == 422

        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert "/v1/models/{ref}/predict" in paths or "/v1/models/{ref:path}/predict" in paths


def test_predict_rows_latest_and_arrow_equal_the_registry(world: World) -> None:
    model = reg.load(world.a, settings=world.settings)
    window = world.window.head(24)
    expected = model.predict(window)
    with client(world) as c:
        got = c.post(f"/v1/models/{world.a}/predict", json={"rows": ot_rows(world)})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["ref"] == world.a and body["freq"] == "3600s"
        assert [p["step"] for p in body["predictions"]] == [1, 2, 3, 4, 5, 6]
        assert np.allclose([p["value"] for p in body["predictions"]], expected["power.etth1.OT"])
        assert [p["ts"] for p in body["predictions"]] == [
            t.isoformat() for t in expected["ts"].to_list()
        ]

        latest = c.post(f"/v1/models/{world.a}/predict", json={"latest": True}).json()
        offline = reg.predict_latest(world.a, settings=world.settings)
        assert np.allclose([p["value"] for p in latest["predictions"]], offline["power.etth1.OT"])

        buf = window.write_ipc_stream(None).getvalue()
        arrow = c.post(
            f"/v1/models/{world.a}/predict",
            content=buf,
            headers={"content-type": "application/vnd.apache.arrow.stream"},
        )
        assert arrow.status_code == 200, arrow.text
        assert arrow.json()["predictions"] == body["predictions"]


# ------------------------------------------------------------------ errors


def test_bad_payloads_are_422_with_what_was_wrong(world: World) -> None:
    url = f"/v1/models/{world.a}/predict"
    with client(world) as c:
        short = c.post(url, json={"rows": ot_rows(world, n=10)})
        assert short.status_code == 422
        assert short.json()["error"] == "bad_window" and "10 rows" in short.json()["message"]
        assert short.json()["hint"]
        gap = ot_rows(world, n=25)
        del gap[5]
        assert "step" in c.post(url, json={"rows": gap}).json()["message"]
        bad_ts = ot_rows(world)
        bad_ts[3]["ts"] = "yesterday"
        r = c.post(url, json={"rows": bad_ts})
        assert r.status_code == 422 and "rows.3.ts" in r.json()["message"]
        bad_value = ot_rows(world)
        bad_value[2]["OT"] = "hot"
        assert "OT" in c.post(url, json={"rows": bad_value}).json()["message"]
        missing = ot_rows(world)
        missing[7]["OT"] = None
        assert "missing value" in c.post(url, json={"rows": missing}).json()["message"]
        for body in ({}, {"rows": []}, {"rows": ot_rows(world), "latest": True}, {"x": 1}):
            r = c.post(url, json=body)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request", body
        assert c.post(url, content=b"{not json").status_code == 422


def test_unknown_models_are_404_with_nearest_matches(world: World) -> None:
    typo = world.a[:-1] + ("0" if world.a[-1] != "0" else "1")
    with client(world) as c:
        for method, path in (
            ("GET", f"/v1/models/{typo}"),
            ("POST", f"/v1/models/{typo}/predict"),
        ):
            r = c.request(method, path, json={"rows": ot_rows(world)})
            assert r.status_code == 404, r.text
            assert world.a in r.json()["matches"]
        r = c.get(f"/v1/models/{world.a.rsplit('/', 1)[1][:-3]}zzz")
        assert r.status_code == 404 and world.a in r.json()["matches"]
        assert c.get("/v1/models/nope/../../etc").status_code == 404


def test_body_limit_is_413(world: World) -> None:
    with client(world, max_body_bytes=2000) as c:
        r = c.post(f"/v1/models/{world.a}/predict", json={"rows": ot_rows(world)})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

        def chunks():  # no content-length: counted while streaming
            for _ in range(10):
                yield b" " * 500

        r = c.post(f"/v1/models/{world.a}/predict", content=chunks())
        assert r.status_code == 413


def test_tampered_model_is_a_clear_500_without_traceback(world: World) -> None:
    weights = Path(world.settings.registry_url) / world.b / "weights.pt"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-10] + b"0123456789")
        with client(world) as c:
            r = c.post(f"/v1/models/{world.b}/predict", json={"rows": ot_rows(world, 12)})
            assert r.status_code == 500
            body = r.json()
            assert body["error"] == "model_integrity" and "weights.pt" in body["message"]
            assert "Traceback" not in r.text
    finally:
        weights.write_bytes(original)


# ------------------------------------------------------------------ cache and aliases


def test_lru_cache_evicts_least_recently_used(world: World) -> None:
    app = create_app(world.settings, ServeConfig(cache_size=1))
    state = app.state.tsloom
    with TestClient(app) as c:
        for ref, n in ((world.a, 24), (world.b, 12), (world.a, 24), (world.a, 24)):
            r = c.post(f"/v1/models/{ref}/predict", json={"rows": ot_rows(world, n)})
            assert r.status_code == 200
        assert state.cache.load_count == 3 and state.cache.resident() == [world.a]
        assert "tsloom_models_resident 1.0" in c.get("/metrics").text

    cache = ModelCache(lambda ref: ref.upper(), capacity=2)
    for ref in ("a", "b", "a", "c"):
        cache.get(ref)
    assert cache.resident() == ["a", "c"]


def test_concurrent_loads_of_one_ref_coalesce() -> None:
    calls = []
    gate = threading.Event()

    def loader(ref: str) -> str:
        calls.append(ref)
        gate.wait(2)
        return ref * 2

    cache = ModelCache(loader, capacity=4)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(cache.get("x"))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join()
    assert calls == ["x"] and out == ["xx"] * 8

    def failing(ref: str) -> str:
        raise RuntimeError("boom")

    broken = ModelCache(failing, capacity=1)
    with pytest.raises(RuntimeError):
        broken.get("y")
    assert broken.resident() == []


def test_promotion_is_picked_up_without_restart(world: World) -> None:
    iid, segment = world.a.split("/")[:2]
    alias = f"/v1/models/{iid}/{segment}/production"
    auth = {"Authorization": f"Bearer {KEY}"}
    app = create_app(world.settings, ServeConfig(api_key_hashes=(hash_key(KEY),)))
    try:
        with TestClient(app) as c:
            none = c.post(f"{alias}/predict", json={"rows": ot_rows(world)})
            assert none.status_code == 404 and "production" in none.json()["message"]

            assert c.post(f"/v1/models/{world.a}/promote", headers=auth).status_code == 200
            r = c.post(f"{alias}/predict", json={"rows": ot_rows(world)})
            assert r.status_code == 200 and r.json()["ref"] == world.a
            q = c.post(
                f"/v1/models/{iid}/OT/predict?stage=production", json={"rows": ot_rows(world)}
            )
            assert q.json()["ref"] == world.a
            assert c.get(alias).json()["ref"] == world.a

            # promoted in the registry by someone else: seen once the alias TTL passes
            reg.promote(world.b, archive_others=True, settings=world.settings)
            app.state.tsloom.aliases.ttl = 0
            r = c.post(f"{alias}/predict", json={"rows": ot_rows(world, 12)})
            assert r.json()["ref"] == world.b and len(r.json()["predictions"]) == 3
    finally:
        for ref in (world.a, world.b):
            reg.promote(ref, "staged", settings=world.settings)


# ------------------------------------------------------------------ auth


def test_api_keys_guard_writes_before_anything_else(world: World) -> None:
    ghost = "0" * 40 + "/OT/dlinear/" + "f" * 40
    right = {"Authorization": f"Bearer {KEY}"}
    wrong = {"Authorization": "Bearer not-it"}
    with client(world, api_key_hashes=(hash_key(KEY),)) as c:
        for headers in ({}, wrong, {"Authorization": KEY}):
            for method, path in (
                ("POST", f"/v1/models/{ghost}/promote"),
                ("DELETE", f"/v1/models/{ghost}"),
                ("POST", "/v1/admin/reload"),
                ("POST", f"/v1/models/{world.a}/promote"),
            ):
                r = c.request(method, path, headers=headers, content=b"x" * 10_000_000)
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/models").status_code == 200  # reads are open by default
        assert c.delete(f"/v1/models/{ghost}", headers=right).status_code == 404
        assert c.post("/v1/admin/reload", headers=right).json()["evicted"] == []
        r = c.post(f"/v1/models/{world.a}/promote", headers=right, json={"stage": "archived"})
        assert r.status_code == 200 and r.json()["stage"] == "archived"
        bad = c.post(f"/v1/models/{world.a}/promote", headers=right, json={"stage": "gold"})
        assert bad.status_code == 422
        reg.promote(world.a, "staged", settings=world.settings)

        doomed = train(world.settings, output_width="2h")
        c.post(f"/v1/models/{doomed}/predict", json={"rows": ot_rows(world)})
        assert c.delete(f"/v1/models/{doomed}", headers=right).json()["ref"] == doomed
        assert c.get(f"/v1/models/{doomed}").status_code == 404
        gone = c.post(f"/v1/models/{doomed}/predict", json={"rows": ot_rows(world)})
        assert gone.status_code == 404

    with client(world, api_key_hashes=(hash_key(KEY),), read_requires_key=True) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers=wrong).status_code == 401
        assert c.get("/v1/models", headers=right).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200

    with client(world) as c:  # no keys configured: no write is possible
        assert c.post(f"/v1/models/{world.a}/promote", headers=right).status_code == 401


def test_switch_interval_is_set_while_the_server_runs(world: World) -> None:
    """`switch_interval_ms` sets the interpreter's switch interval for the server's life and
    gives the previous one back at shutdown; a negative value is refused."""
    import sys

    before = sys.getswitchinterval()
    app = create_app(world.settings, ServeConfig(switch_interval_ms=0.5))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before
    with pytest.raises(ConfigError, match="switch_interval_ms"):
        ServeConfig(switch_interval_ms=-1)


def test_serve_config() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(ConfigError, match="SHA-256"):
        ServeConfig(api_key_hashes=("plain-key",))
    cfg = ServeConfig.from_env(
        {
            "TSLOOM_SERVE_CACHE_SIZE": "3",
            "TSLOOM_SERVE_PRELOAD": "a, b",
            "TSLOOM_SERVE_READ_REQUIRES_KEY": "yes",
            "TSLOOM_SERVE_MAX_WAIT_MS": "1.5",
            "TSLOOM_SERVE_API_KEY_HASHES": hash_key("k").upper(),
        }
    )
    assert cfg.cache_size == 3 and cfg.preload == ("a", "b") and cfg.read_requires_key
    assert cfg.max_wait_ms == 1.5 and cfg.api_key_hashes == (hash_key("k"),)
    with pytest.raises(ConfigError):
        ServeConfig(cache_size=0)


# ------------------------------------------------------------------ batching and overload


def test_concurrent_requests_batch_and_equal_single_predictions(world: World) -> None:
    app = create_app(world.settings, ServeConfig(max_batch_size=8, max_wait_ms=30))
    model = reg.load(world.a, settings=world.settings)
    n = 16

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            await ac.post(f"/v1/models/{world.a}/predict", json={"rows": ot_rows(world)})
            return await asyncio.gather(
                *(
                    ac.post(f"/v1/models/{world.a}/predict", json={"rows": ot_rows(world, 24, i)})
                    for i in range(n)
                )
            )

    responses = asyncio.run(main())
    batches = app.state.tsloom.batcher.batches
    assert max(batches) > 1 and max(batches) <= 8, batches
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        single = model.predict(world.window.slice(i, 24))["power.etth1.OT"].to_numpy()
        got = np.array([p["value"] for p in r.json()["predictions"]])
        np.testing.assert_allclose(got, single, rtol=1e-6, atol=1e-6)
    text = TestClient(app).get("/metrics").text
    assert "tsloom_batch_size_count" in text and "tsloom_model_load_duration_seconds" in text

    feats = list(model.params.features)
    windows = [world.window.slice(i, 24).select(feats).to_numpy() for i in range(3)]
    batched = predict_batch(model, windows)
    for w, out in zip(windows, batched, strict=True):
        np.testing.assert_allclose(out, model.predict_values(w), rtol=1e-6, atol=1e-6)


def test_overload_is_refused_quickly_with_429(world: World) -> None:
    app = create_app(world.settings, ServeConfig(max_batch_size=1, max_queue=2, max_wait_ms=0))
    batcher = app.state.tsloom.batcher

    def slow(model, windows):
        time.sleep(0.6)
        return predict_batch(model, windows)

    batcher.run = slow

    async def main() -> tuple[list[httpx.Response], list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:

            async def one() -> tuple[httpx.Response, float]:
                t0 = time.perf_counter()
                r = await ac.post(f"/v1/models/{world.a}/predict", json={"rows": ot_rows(world)})
                return r, time.perf_counter() - t0

            await one()  # loaded and warm
            out = await asyncio.gather(*(one() for _ in range(8)))
            return [r for r, _ in out], [t for _, t in out]

    responses, times = asyncio.run(main())
    codes = [r.status_code for r in responses]
    assert codes.count(429) >= 4 and codes.count(200) >= 1, codes
    refused = [t for r, t in zip(responses, times, strict=True) if r.status_code == 429]
    served = [t for r, t in zip(responses, times, strict=True) if r.status_code == 200]
    # refused at once, not queued: every refusal returns before any served request does
    assert max(refused) < min(served)
    r429 = next(r for r in responses if r.status_code == 429)
    assert r429.headers["retry-after"] == "1" and r429.json()["error"] == "overloaded"
    assert "tsloom_requests_rejected_total" in TestClient(app).get("/metrics").text


# ------------------------------------------------------------------ preload and metrics


def test_preload_readiness_and_per_app_metrics(world: World) -> None:
    iid, segment = world.a.split("/")[:2]
    app = create_app(world.settings, ServeConfig(preload=(world.a, world.b)))
    with TestClient(app) as c:
        assert set(app.state.tsloom.cache.resident()) == {world.a, world.b}
        assert c.get("/readyz").json()["resident"] == 2
        c.get("/v1/models")
        text = c.get("/metrics").text
        assert 'tsloom_http_requests_total{method="GET",route="/v1/models",status="200"}' in text
        assert "tsloom_http_request_duration_seconds_bucket" in text
        assert "tsloom_models_resident 2.0" in text
    other = create_app(world.settings, ServeConfig(preload=(f"{iid}/{segment}/production",)))
    with TestClient(other) as c:  # a second app in the process: its own registry
        r = c.get("/readyz")
        assert r.status_code == 503 and "production" in str(r.json()["problems"])
        assert "tsloom_models_resident 0.0" in c.get("/metrics").text


# ------------------------------------------------------------------ the fast path


def test_rows_fast_path_equals_the_frame_path_and_refuses_what_it_cannot_check(
    world: World,
) -> None:
    """``RegisteredModel.rows_window`` (JSON rows → array, no frame) gives exactly what the
    frame path gives, and None for every payload the frame path rejects (the server then
    answers with the frame path's precise error)."""
    from tsloom.serve.app import rows_to_frame

    model = reg.load(world.a, settings=world.settings)
    for offset in (0, 5, 17):
        for variant in ("short", "full", "naive", "offset"):
            if variant == "full":
                payload = rows(world.window.slice(offset, 24))
            else:
                payload = ot_rows(world, 24, offset)
            if variant == "naive":
                payload = [{**r, "ts": r["ts"].rstrip("Z")} for r in payload]
            if variant == "offset":  # the same instants written in UTC+02:00
                payload = [
                    {
                        **r,
                        "ts": (pl.Series([r["ts"]]).str.to_datetime(time_zone="UTC"))
                        .dt.convert_time_zone("Etc/GMT-2")
                        .dt.strftime("%Y-%m-%dT%H:%M:%S%:z")[0],
                    }
                    for r in payload
                ]
            fast = model.rows_window(payload)
            assert fast is not None, variant
            values, last = model._window_values(rows_to_frame(payload))
            np.testing.assert_array_equal(fast[0], values)
            assert fast[1] == last and fast[1].utcoffset().total_seconds() == 0
            offline = model.predict(world.window.slice(offset, 24))
            np.testing.assert_array_equal(
                predict_batch(model, [fast[0]])[0], offline["power.etth1.OT"].to_numpy()
            )
            np.testing.assert_array_equal(model._predict(fast[0]), model.predict_values(values))

    good = ot_rows(world)
    bad_cases = {
        "10 rows": good[:10],
        "step": good[:5] + ot_rows(world, 19, 6),
        "rows.3.ts": [*good[:3], {**good[3], "ts": "yesterday"}, *good[4:]],
        "OT must be a number": [*good[:2], {**good[2], "OT": "hot"}, *good[3:]],
        "missing value": [*good[:7], {**good[7], "OT": None}, *good[8:]],
        "lacks column": [{k: v for k, v in r.items() if k != "OT"} for r in good],
        "flag must be a number": [{**r, "flag": True} for r in good],
        "numbers": [{**r, "OT": True} for r in good],
    }
    url = f"/v1/models/{world.a}/predict"
    with client(world) as c:
        for expected, payload in bad_cases.items():
            assert model.rows_window(payload) is None, expected
            r = c.post(url, json={"rows": payload})
            assert r.status_code == 422, (expected, r.text)
            if expected != "numbers":
                assert expected in r.json()["message"], (expected, r.json())
        assert model.rows_window([{**r, "extra": None} for r in good]) is not None
        assert c.post(url, json={"rows": good}).status_code == 200
    # what JSON cannot carry but Python callers can, and a mix of naive and aware stamps:
    # the frame path decides
    unusual = {
        "nan": [*good[:4], {**good[4], "OT": float("nan")}, *good[5:]],
        "inf": [*good[:4], {**good[4], "OT": float("inf")}, *good[5:]],
        "naive and aware": [*good[:9], {**good[9], "ts": good[9]["ts"].rstrip("Z")}, *good[10:]],
        "not a dict": [*good[:3], ["ts", 1.0], *good[4:]],
    }
    for name, payload in unusual.items():
        assert model.rows_window(payload) is None, name


def test_rows_fast_path_with_several_features(world: World) -> None:
    """A model of two features: the fast path reads both from each row, in the model's
    feature order whatever the rows' key order, as the frame path does; a bad value in
    either feature leaves it to the frame path."""
    from tsloom.serve.app import rows_to_frame

    ref = train(world.settings, output_width="6h", features=["HUFL", "OT"])
    model = reg.load(ref, settings=world.settings)
    assert len(model.params.features) == 2
    part = world.window.slice(2, 24)
    payload = rows(part, ["power.etth1.OT", "power.etth1.HUFL"])  # not the model's order
    fast = model.rows_window(payload)
    assert fast is not None
    values, last = model._window_values(rows_to_frame(payload))
    np.testing.assert_array_equal(fast[0], values)
    assert fast[0].shape == (24, 2) and fast[1] == last
    for column in ("power.etth1.OT", "power.etth1.HUFL"):
        bad = [*payload[:5], {**payload[5], column: "n/a"}, *payload[6:]]
        assert model.rows_window(bad) is None, column


def test_lone_requests_run_on_the_loop_and_equal_pool_results(world: World) -> None:
    """With `inline_ms` set, a lone request for a model with a fast forward pass runs on the
    event loop (no thread hand-off) and gives what the pool and the registry give; by
    default inference stays off the event loop."""
    from concurrent.futures import ThreadPoolExecutor

    from tsloom.serve.batching import Batcher

    model = reg.load(world.a, settings=world.settings)
    feats = list(model.params.features)
    windows = [world.window.slice(i, 24).select(feats).to_numpy() for i in range(6)]

    async def main() -> tuple[list, list, Batcher, Batcher]:
        with ThreadPoolExecutor(1) as pool:
            inline = Batcher(pool, max_batch=8, max_wait=0.001, inline_s=0.002)
            threaded = Batcher(pool, max_batch=8, max_wait=0.001)
            a = [await inline.submit("m", model, w) for w in windows]
            b = [await threaded.submit("m", model, w) for w in windows]
            together = await asyncio.gather(*(inline.submit("m", model, w) for w in windows))
            await inline.close()
            await threaded.close()
        return a, [*b, *together], inline, threaded

    a, b, inline, threaded = asyncio.run(main())
    assert inline.inline_batches >= len(windows) - 1 and threaded.inline_batches == 0
    assert max(inline.batches) > 1  # concurrent requests still batch
    for i, w in enumerate(windows):
        np.testing.assert_array_equal(a[i], b[i])
        batched = b[len(windows) + i]  # float32 batched kernels: equal to rounding
        np.testing.assert_allclose(a[i], batched, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a[i], model.predict_values(w), rtol=1e-6, atol=1e-6)


def test_batches_closed_together_run_half_on_the_partner_thread(world: World) -> None:
    """Inline batches of several models closed in the same turn of the loop run as one
    group, half of them on the partner thread while the loop runs the other half; each
    request still gets exactly its own model's answer."""
    from concurrent.futures import ThreadPoolExecutor

    from tsloom.serve.batching import Batcher

    models = [reg.load(ref, settings=world.settings) for ref in (world.a, world.a, world.b)]
    models.append(reg.load(world.b, settings=world.settings))

    def window(model, offset: int) -> np.ndarray:
        p = model.params
        return world.window.slice(offset, p.input_steps).select(list(p.features)).to_numpy()

    async def main() -> tuple[list, list, Batcher]:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(pool, max_batch=8, max_wait=0.001, inline_s=0.5)
            for i, m in enumerate(models):  # first batches: measured on the pool
                await batcher.submit(f"m{i}", m, window(m, 0))
            windows = [window(m, 3 + i) for i, m in enumerate(models)]
            out = await asyncio.gather(
                *(batcher.submit(f"m{i}", models[i], w) for i, w in enumerate(windows))
            )
            await batcher.close()
        return windows, out, batcher

    windows, out, batcher = asyncio.run(main())
    assert batcher.partnered == 2 and batcher.inline_batches == 4
    for m, w, got in zip(models, windows, out, strict=True):
        np.testing.assert_array_equal(got, predict_batch(m, [w])[0])


def test_batches_waiting_for_the_pool_go_as_one_job(world: World) -> None:
    """While the inference pool is busy, batches of other models that become ready wait
    and then go to the pool together as one job (one hand-off, one wake-up of the loop),
    and each still gets exactly its own model's answer."""
    from concurrent.futures import ThreadPoolExecutor

    from tsloom.serve.batching import Batcher

    model = reg.load(world.a, settings=world.settings)
    feats = list(model.params.features)
    windows = [world.window.slice(i, 24).select(feats).to_numpy() for i in range(5)]
    gate = threading.Event()
    jobs: list[int] = []

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            jobs.append(len(args[0]))  # batches in the job
            return super().submit(fn, *args, **kwargs)

    def gated(m, ws):
        gate.wait(10)
        return predict_batch(m, ws)

    metrics = Metrics()

    def queued() -> float | None:
        return metrics.registry.get_sample_value("tsloom_predictions_queued")

    async def main() -> list:
        with CountingPool(1) as pool:
            batcher = Batcher(
                pool, max_batch=8, max_wait=0.001, run=gated, parallel=1, metrics=metrics
            )
            first = asyncio.ensure_future(batcher.submit("m0", model, windows[0]))
            await asyncio.sleep(0.05)  # m0's batch is running on the pool, held at the gate
            again = asyncio.ensure_future(batcher.submit("m0", model, windows[0]))
            rest = [
                asyncio.ensure_future(batcher.submit(f"m{i}", model, windows[i]))
                for i in range(1, 5)
            ]
            await asyncio.sleep(0.05)  # their batches are ready, waiting for the pool
            assert queued() == 1  # m0's second request waits for m0's running batch
            gate.set()
            out = await asyncio.gather(first, *rest, again)
            assert queued() == 0
            await batcher.close()
        return out

    out = asyncio.run(main())
    assert jobs == [1, 4, 1]
    for window, got in zip([*windows, windows[0]], out, strict=True):
        np.testing.assert_array_equal(got, predict_batch(model, [window])[0])


def test_response_timestamps_are_isoformat() -> None:
    """The answer's timestamps read exactly as ``datetime.isoformat`` writes them (UTC,
    sub-second, other offsets), and a window without one gives nulls."""
    from datetime import UTC, datetime, timedelta, timezone
    from types import SimpleNamespace

    from tsloom.serve.answer import prediction_body

    for last, freq in (
        (datetime(2016, 9, 1, 23, tzinfo=UTC), timedelta(hours=1)),
        (datetime(2016, 2, 28, 23, 59, 30, tzinfo=UTC), timedelta(seconds=45)),
        (datetime(2016, 9, 1, 0, 0, 0, 1500, tzinfo=UTC), timedelta(minutes=15)),
        (datetime(2016, 9, 1, tzinfo=timezone(timedelta(hours=2))), timedelta(days=1)),
        (datetime(2016, 9, 1, tzinfo=UTC), timedelta(milliseconds=1500)),
    ):
        params = SimpleNamespace(output="step", output_steps=29, freq=freq, target="x.y.OT")
        values = np.linspace(0, 1, 29)
        values[3] = np.nan
        body = json.loads(prediction_body("a/b/c/d", SimpleNamespace(params=params), values, last))
        assert [p["ts"] for p in body["predictions"]] == [
            (last + k * freq).isoformat() for k in range(1, 30)
        ]
        assert [p["step"] for p in body["predictions"]] == list(range(1, 30))
        assert body["predictions"][3]["value"] is None
        assert body["predictions"][4]["value"] == values[4]
        assert body["ref"] == "a/b/c/d" and body["target"] == "x.y.OT"
        nulls = json.loads(prediction_body("r", SimpleNamespace(params=params), values, None))
        assert {p["ts"] for p in nulls["predictions"]} == {None}


def test_fast_lane_answers_as_the_route_and_declines_the_rest(world: World) -> None:
    """The fast lane in front of FastAPI gives the same answer as the FastAPI route for the
    same request, counts what it serves in /metrics under the predict route, and leaves to
    the app everything it does not serve: a model not yet loaded, ``latest``, extra keys,
    rows that need the frame path (whose 422 says what is wrong), a missing or wrong key
    when reads need one, and bodies over the limit (413, announced or streamed)."""
    app = create_app(world.settings, ServeConfig(api_key_hashes=(hash_key(KEY),)))
    lane = app.predict_lane
    url = f"/v1/models/{world.a}/predict"
    ok = 0
    with TestClient(app) as c:
        r = c.post(url, json={"rows": ot_rows(world)})  # not resident yet: the route loads
        assert r.status_code == 200 and lane.served == 0
        answers = [c.post(url, json={"rows": ot_rows(world, 24, k)}) for k in range(3)]
        assert [a.status_code for a in answers] == [200] * 3 and lane.served == 3
        assert answers[0].headers["content-type"] == "application/json"
        assert answers[0].json() != answers[1].json()
        app.predict_lane = None  # the same requests through FastAPI's route only
        try:
            for k, answer in enumerate(answers):
                assert c.post(url, json={"rows": ot_rows(world, 24, k)}).json() == answer.json()
        finally:
            app.predict_lane = lane
        ok += 1 + 3 + 3
        declined = [
            ({"latest": True}, 200),
            ({"rows": ot_rows(world), "extra": 1}, 422),
            ({"rows": ot_rows(world)[:10]}, 422),
            ({"rows": [{**r, "OT": "hot"} for r in ot_rows(world)]}, 422),
        ]
        for body, status in declined:
            r = c.post(url, json=body)
            assert r.status_code == status, (body, r.text)
            ok += status == 200
        assert "OT must be a number" in r.json()["message"]
        assert lane.served == 3
        assert c.post(url, json={"rows": ot_rows(world)}).status_code == 200 and lane.served == 4
        ok += 1
        text = c.get("/metrics").text
        assert f'route="/v1/models/{{ref:path}}/predict",status="200"}} {ok}.0' in text

    keyed = ServeConfig(api_key_hashes=(hash_key(KEY),), read_requires_key=True, preload=(world.a,))
    app = create_app(world.settings, keyed)
    with TestClient(app) as c:
        body = {"rows": ot_rows(world)}
        assert c.post(url, json=body).status_code == 401
        assert c.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert app.predict_lane.served == 0
        right = {"Authorization": f"Bearer {KEY}"}
        assert c.post(url, json=body, headers=right).status_code == 200
        assert app.predict_lane.served == 1

    app = create_app(world.settings, ServeConfig(max_body_bytes=2000, preload=(world.a,)))
    with TestClient(app) as c:
        assert c.post(url, json={"rows": ot_rows(world)}).status_code == 413

        def chunks():  # no content-length: the lane reads past the limit and declines
            for _ in range(10):
                yield b" " * 500

        r = c.post(url, content=chunks())
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert app.predict_lane.served == 0


def test_tsloom_serve_command_answers_over_http_on_onnx_runtime(world: World) -> None:
    """`tsloom serve --runtime onnx --preload REF` in its own process, over real HTTP
    (Uvicorn): ready once the model is resident, answers the fast lane's prediction as the
    registry model does offline, and refuses a runtime it does not know."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "TSLOOM_HOME": str(world.settings.home), "OMP_NUM_THREADS": "1"}
    tsloom = [sys.executable, "-m", "tsloom.cli"]
    bad = subprocess.run(
        [*tsloom, "serve", "--runtime", "tensorflow"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "'torch' or 'onnx'" in bad.stderr + bad.stdout
    cmd = [*tsloom, "serve", "--port", str(port), "--runtime", "onnx", "--preload", world.a]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "tsloom serve was not ready in time"
            with contextlib.suppress(httpx.HTTPError):  # not listening yet: ask again
                if httpx.get(f"{base}/readyz", timeout=2).json().get("resident") == 1:
                    break
            time.sleep(0.2)
        r = httpx.post(f"{base}/v1/models/{world.a}/predict", json={"rows": ot_rows(world)})
        assert r.status_code == 200, r.text
        got = [p["value"] for p in r.json()["predictions"]]
        offline = reg.load(world.a, settings=world.settings).predict(world.window.slice(0, 24))
        np.testing.assert_allclose(got, offline["power.etth1.OT"].to_numpy(), atol=1e-5)
        metrics = httpx.get(f"{base}/metrics").text
        assert 'route="/v1/models/{ref:path}/predict",status="200"} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(30)


def test_fast_route_errors_come_from_the_app_handlers(world: World) -> None:
    """A failure while predicting on the fast route gets the response the route's own
    exception handlers give (here a model error → 422 bad_window; anything else → 500)."""
    from tsloom.registry import WindowError

    app = create_app(world.settings, ServeConfig())
    batcher = app.state.tsloom.batcher
    url = f"/v1/models/{world.a}/predict"
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post(url, json={"rows": ot_rows(world)}).status_code == 200  # resident

        def refuse(model, windows):
            raise WindowError("the model refuses this window", hint="try another")

        batcher.run = refuse
        r = c.post(url, json={"rows": ot_rows(world)})
        assert r.status_code == 422 and r.json()["error"] == "bad_window", r.text
        assert r.json()["hint"] == "try another"

        def crash(model, windows):
            raise RuntimeError("boom")

        batcher.run = crash
        assert c.post(url, json={"rows": ot_rows(world)}).status_code == 500
        batcher.run = predict_batch
        assert c.post(url, json={"rows": ot_rows(world)}).status_code == 200
        text = c.get("/metrics").text
        assert 'route="/v1/models/{ref:path}/predict",status="422"' in text
