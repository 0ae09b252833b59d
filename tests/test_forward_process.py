"""The forward-pass process: what it answers equals the in-process ONNX path, one bad
window fails only its own request (as the error it raised), collected models leave it,
and when it dies the batches it held are run in-process instead of being lost."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import shared_etth1_home

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import tsloom.registry as reg
from tsloom.errors import TsloomError
from tsloom.forecast.job import train_on_integration
from tsloom.forecast.scalers import FittedScaler
from tsloom.integrate import IntegrationSpec, integrate
from tsloom.serve import ServeConfig, create_app
from tsloom.serve.batching import Batcher, predict_batch
from tsloom.serve.forward_process import TO_CHILD, ForwardProcess, NotRunHere

SPEC = {"sources": ["power.etth1"], "freq": "1h", "start": "2016-07-01", "end": "2016-08-15"}


class World:
    settings: Any
    ref: str
    model: Any  # loaded with runtime onnx: carries an onnx_predictor
    windows: list[np.ndarray]
    rows: list[dict]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with shared_etth1_home(tmp_path_factory, "forward_process") as settings:
        w = World()
        w.settings = settings
        params = {"target": "OT", "method": "vanilla", "hidden_size": 16, "epochs": 1}
        params |= {"input_width": "24h", "output_width": "6h", "subtract_last": True}
        w.ref = reg.register(
            train_on_integration(SPEC, params, settings=settings), settings=settings
        )
        app = create_app(settings, ServeConfig(runtime="onnx"))
        w.model = app.state.tsloom.model(w.ref)
        app.state.tsloom.executor.shutdown(wait=False)
        assert w.model.onnx_predictor is not None
        spec = IntegrationSpec.from_tables(
            ["power.etth1"], "1h", start="2016-09-01", end="2016-09-04"
        )
        frame = integrate(spec, settings=settings).frame
        w.windows = [w.model._window_values(frame.slice(k, 24))[0] for k in range(8)]
        part = frame.slice(0, 24).rename({"power.etth1.OT": "OT"})
        w.rows = part.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
        yield w


async def _ask(proc: ForwardProcess, model: Any, windows: list[np.ndarray]) -> Any:
    future = asyncio.get_running_loop().create_future()
    proc.send(model, windows, lambda results, _seconds: future.set_result(results))
    return await asyncio.wait_for(future, 60)


def test_answers_equal_the_in_process_onnx_path(world: World) -> None:
    async def main() -> None:
        proc = ForwardProcess(asyncio.get_running_loop())
        try:
            for n in (1, 5, 8):
                got = await _ask(proc, world.model, world.windows[:n])
                want = predict_batch(world.model, world.windows[:n])
                assert len(got) == n
                assert np.array_equal(np.stack(got), np.stack(want))
            assert proc.in_flight == 0
        finally:
            proc.close()
        assert proc.proc.poll() is not None  # closing the socket ends the child

    asyncio.run(main())


def test_the_child_sessions_get_the_configured_intra_op_threads(world: World) -> None:
    async def tasks(threads: int) -> int:
        proc = ForwardProcess(asyncio.get_running_loop(), threads=threads)
        try:
            await _ask(proc, world.model, world.windows[:1])
            return len(os.listdir(f"/proc/{proc.proc.pid}/task"))
        finally:
            proc.close()

    async def main() -> None:
        one, three = await tasks(1), await tasks(3)
        assert three == one + 2  # ONNX Runtime's intra-op pool: threads - 1 of its own

    asyncio.run(main())


class LogScaled:
    """The world's network behind a log scaler: a window holding 0 cannot be scaled."""

    def __init__(self, world: World) -> None:
        self.onnx_predictor = world.model.onnx_predictor
        self.scaler = FittedScaler("log", ("OT",), (0.0,), (1.0,))
        self.params = SimpleNamespace(target_index=0)
        self.model = None  # predict_batch takes the ONNX path


def test_a_bad_window_fails_only_its_own_request_with_its_own_error(world: World) -> None:
    model = LogScaled(world)
    good = [np.abs(w) + 1.0 for w in world.windows[:3]]
    bad = good[1].copy()
    bad[5, 0] = 0.0

    async def main() -> None:
        proc = ForwardProcess(asyncio.get_running_loop())
        try:
            got = await _ask(proc, model, [good[0], bad, good[2]])
            want = predict_batch(model, [good[0], good[2]])
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[1])
            assert isinstance(got[1], TsloomError)
            assert "log scaler needs values above 0" in got[1].message
            assert got[1].hint and "zscore" in got[1].hint  # the whole error, hint included
            alone = await _ask(proc, model, [bad])
            assert isinstance(alone, TsloomError)  # a batch of one fails as a whole
        finally:
            proc.close()

    asyncio.run(main())


def test_collected_models_are_forgotten_by_the_child(world: World) -> None:
    async def main() -> None:
        proc = ForwardProcess(asyncio.get_running_loop())
        try:
            model = LogScaled(world)
            window = np.abs(world.windows[0]) + 1.0
            assert len(await _ask(proc, model, [window])) == 1
            mid = proc.register(model)
            del model
            gc.collect()
            assert proc._ids == {}  # no id kept for a model that is gone
            proc._write()  # sends the forget record
            # then a job for the forgotten id, written by hand
            proc._out += TO_CHILD.pack(2, 999, mid, 1, *window.shape, window.nbytes)
            proc._out += window.tobytes()
            future = asyncio.get_running_loop().create_future()
            proc._jobs[999] = lambda results, _s: future.set_result(results)
            proc._schedule_write()
            error = await asyncio.wait_for(future, 60)
            assert isinstance(error, NotRunHere) and "not loaded" in str(error)
        finally:
            proc.close()

    asyncio.run(main())


def test_when_the_child_dies_its_batches_run_in_process_and_it_restarts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tsloom.serve.forward_process as forward_process

    monkeypatch.setattr(forward_process, "RESTARTS", 1)  # one restart, then in-process for good
    want = predict_batch(world.model, world.windows[:1])[0]

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(pool, max_wait=0.0, forward_process=True)
            batcher.prepare([world.model])

            def current() -> ForwardProcess:
                return next(iter(batcher._forward._by_loop.values()))

            async def ask() -> np.ndarray:
                return await asyncio.wait_for(
                    batcher.submit("m", world.model, world.windows[0]), 60
                )

            first = current()
            assert np.array_equal(await ask(), want)
            os.kill(first.proc.pid, signal.SIGSTOP)  # the next batch stays in flight ...
            pending = asyncio.ensure_future(ask())
            while first.in_flight == 0:
                await asyncio.sleep(0.01)
            os.kill(first.proc.pid, signal.SIGKILL)  # ... until the child dies
            assert np.array_equal(await pending, want)  # run in-process instead
            assert not first.alive
            assert batcher.forward_process_state().startswith("failed (exit code -9)")

            assert np.array_equal(await ask(), want)  # the next batch starts a new child
            second = current()
            assert second is not first and second.alive and second.proc.pid != first.proc.pid
            assert second.in_flight == 0 and first.proc.poll() is not None
            state = batcher.forward_process_state()
            assert state.startswith("running (pid") and "last after exit code -9" in state

            os.kill(second.proc.pid, signal.SIGKILL)  # a second failure: no more restarts
            while second.alive:
                await asyncio.sleep(0.01)
            assert np.array_equal(await ask(), want)  # in-process from now on
            assert current() is second and batcher.forward_process_state().startswith("failed")
            await batcher.close()

    asyncio.run(main())


def test_a_model_the_child_cannot_open_runs_in_process(world: World) -> None:
    class Unopenable:
        """The world's predictor in-process, but bytes the child cannot open."""

        model_bytes = b"not an ONNX graph"

        def __call__(self, x: np.ndarray) -> np.ndarray:
            return world.model.onnx_predictor(x)

    model = LogScaled(world)
    model.onnx_predictor = Unopenable()
    window = np.abs(world.windows[0]) + 1.0

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(pool, max_wait=0.0, forward_process=True)
            got = await asyncio.wait_for(batcher.submit("m", model, window), 60)
            assert np.array_equal(got, predict_batch(LogScaled(world), [window])[0])
            assert len(batcher.forward_processes) == 1  # the child lives on
            await batcher.close()

    asyncio.run(main())


def test_the_server_sends_onnx_forward_passes_to_the_process(world: World) -> None:
    from fastapi.testclient import TestClient

    answers = {}
    for enabled in (True, False):
        app = create_app(
            world.settings,
            ServeConfig(runtime="onnx", preload=(world.ref,), forward_process=enabled),
        )
        batcher = app.state.tsloom.batcher
        with TestClient(app) as client:
            got = client.post(f"/v1/models/{world.ref}/predict", json={"rows": world.rows})
            assert got.status_code == 200, got.text
            answers[enabled] = got.json()["predictions"]
            procs = batcher.forward_processes
            assert len(procs) == (1 if enabled else 0)
            ready = client.get("/readyz").json()["forward_process"]
            assert ready.startswith("running (pid") if enabled else ready == "off"
            running = f"tsloom_forward_processes_running {1.0 if enabled else 0.0}"
            assert running in client.get("/metrics").text
        if enabled:  # stopped with the server
            assert procs[0].proc.poll() is not None
    assert answers[True] == answers[False]
    assert ServeConfig.from_env({"TSLOOM_SERVE_FORWARD_PROCESS": "0"}).forward_process is False
