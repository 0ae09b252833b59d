"""Overload across many models: `max_queue_total` bounds the predictions outstanding in
the whole server (not only per model), refusals are immediate 429s with Retry-After,
nothing hangs, and the server serves normally again once the burst has passed."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator

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
from tsloom.integrate import IntegrationSpec, integrate
from tsloom.serve import ServeConfig, create_app
from tsloom.serve.batching import Batcher, Overloaded, predict_batch

SPEC = {"sources": ["power.etth1"], "freq": "1h", "start": "2016-07-01", "end": "2016-08-01"}
PARAMS = {"target": "OT", "method": "dlinear", "epochs": 1, "input_width": "24h"}
MODELS = 6


class Fleet:
    settings: Settings
    refs: list[str]  # MODELS models: one training filed under MODELS param ids (seeds)
    rows: list[dict]  # a valid 24-row window for all of them


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with shared_etth1_home(tmp_path_factory, "overload") as settings:
        f = Fleet()
        f.settings = settings
        run = train_on_integration(SPEC, {**PARAMS, "output_width": "3h"}, settings=settings)
        f.refs = [
            reg.register(
                dataclasses.replace(run, params=run.params.model_copy(update={"seed": seed})),
                settings=settings,
            )
            for seed in range(MODELS)
        ]
        spec = IntegrationSpec.from_tables(["power.etth1"], "1h", start="2016-09-01")
        window = integrate(spec, settings=settings).frame.head(24)
        window = window.select(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "power.etth1.OT")
        f.rows = window.rename({"power.etth1.OT": "OT"}).to_dicts()
        yield f
    torch.set_num_threads(threads)


def test_config_field_and_env() -> None:
    assert ServeConfig().max_queue_total >= ServeConfig().max_queue
    cfg = ServeConfig.from_env({"TSLOOM_SERVE_MAX_QUEUE_TOTAL": "7"})
    assert cfg.max_queue_total == 7
    with pytest.raises(ConfigError, match="max_queue_total"):
        ServeConfig(max_queue_total=0)
    with pytest.raises(ConfigError, match="MAX_QUEUE_TOTAL"):
        ServeConfig.from_env({"TSLOOM_SERVE_MAX_QUEUE_TOTAL": "lots"})


def test_batcher_bounds_outstanding_predictions_across_lanes() -> None:
    """Popped batches waiting for the thread pool count too: with one worker blocked, each
    lane would otherwise hand its batch to the executor's unbounded queue."""
    gate = threading.Event()
    ran: list[int] = []

    def run(model, windows):
        gate.wait(5)
        ran.append(len(windows))
        return [np.array([np.asarray(w).sum() * model]) for w in windows]

    async def main() -> None:
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(1)
        batcher = Batcher(executor, max_batch=2, max_wait=0, max_queue=100, max_queue_total=5)
        batcher.run = run
        tasks = [
            asyncio.ensure_future(batcher.submit(f"m{i % 10}", 1.0, np.full((3, 1), i)))
            for i in range(40)
        ]
        await asyncio.sleep(0.05)  # every lane has popped what it could
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 35 and batcher.outstanding == 5
        for t in refused:
            exc = t.exception()
            assert isinstance(exc, Overloaded) and exc.total and "across all models" in str(exc)
        with pytest.raises(Overloaded):
            batcher.check()
        gate.set()
        served = await asyncio.wait_for(asyncio.gather(*(t for t in tasks if not t.done())), 5)
        assert [float(s[0]) for s in served] == [3.0 * i for i in range(5)]
        assert batcher.outstanding == 0 and batcher.pending() == 0
        again = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(f"m{i}", 2.0, np.ones((3, 1))) for i in range(5))), 5
        )
        assert [float(a[0]) for a in again] == [6.0] * 5
        await batcher.close()
        executor.shutdown()

    asyncio.run(main())


def test_many_models_overload_is_429_at_once_and_the_server_recovers(fleet: Fleet) -> None:
    config = ServeConfig(
        cache_size=MODELS,
        preload=tuple(fleet.refs),
        max_batch_size=1,
        max_wait_ms=0,
        max_queue=100,  # the per-model bound alone would admit all of them
        max_queue_total=3,
        workers=1,
    )
    app = create_app(fleet.settings, config)
    batcher = app.state.tsloom.batcher

    def slow(model, windows):
        time.sleep(0.3)
        return predict_batch(model, windows)

    async def main() -> tuple[list[tuple[httpx.Response, float]], list[httpx.Response]]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:

                async def one(ref: str) -> tuple[httpx.Response, float]:
                    t0 = time.perf_counter()
                    r = await ac.post(f"/v1/models/{ref}/predict", json={"rows": fleet.rows})
                    return r, time.perf_counter() - t0

                batcher.run = slow
                burst = [one(fleet.refs[i % MODELS]) for i in range(4 * MODELS)]
                out = await asyncio.wait_for(asyncio.gather(*burst), 30)  # none hangs
                assert batcher.outstanding == 0 and batcher.pending() == 0
                batcher.run = predict_batch
                after = [(await one(ref))[0] for ref in fleet.refs]
                return out, after

    out, after = asyncio.run(main())
    codes = [r.status_code for r, _ in out]
    assert set(codes) <= {200, 429}, codes
    assert 3 <= codes.count(200) < len(codes) and codes.count(429) >= len(codes) - 2 * 3, codes
    refused = [t for r, t in out if r.status_code == 429]
    served = [t for r, t in out if r.status_code == 200]
    assert max(refused) < min(served)  # refused at once, not after waiting in a queue
    r429 = next(r for r, _ in out if r.status_code == 429)
    assert r429.headers["retry-after"] == "1" and r429.json()["error"] == "overloaded"
    assert "across all models" in r429.json()["message"]

    assert [r.status_code for r in after] == [200] * MODELS  # recovered
    model = reg.load(fleet.refs[0], settings=fleet.settings)
    window = pl.DataFrame(fleet.rows).with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
    expected = model.predict(window).get_column(model.params.target).to_list()
    assert np.allclose([p["value"] for p in after[0].json()["predictions"]], expected)
    text = TestClient(app).get("/metrics").text
    rejected = next(
        line for line in text.splitlines() if line.startswith("tsloom_requests_rejected_total")
    )
    assert float(rejected.split()[-1]) == codes.count(429)


def test_inference_stays_off_the_event_loop_unless_inline_ms_is_set(tmp_path) -> None:
    settings = Settings.at_home(tmp_path)
    assert ServeConfig().inline_ms == 0
    assert create_app(settings, ServeConfig()).state.tsloom.batcher.inline_s == 0
    tuned = ServeConfig.from_env({"TSLOOM_SERVE_INLINE_MS": "2"})
    assert create_app(settings, tuned).state.tsloom.batcher.inline_s == pytest.approx(0.002)
    with pytest.raises(ConfigError, match="inline_ms"):
        ServeConfig(inline_ms=-1)
