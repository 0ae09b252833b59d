"""The ONNX Runtime path: every network exports with a dynamic batch axis and matches
PyTorch to 1e-5; a server with ``runtime="onnx"`` predicts what the torch runtime does,
exports once per ref, and falls back to torch (with a warning) when export fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
import torch
from conftest import shared_etth1_home

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import tsloom.forecast.onnx_export as ox
import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.errors import ConfigError
from tsloom.forecast.job import train_on_integration
from tsloom.forecast.networks import METHODS, build_network
from tsloom.forecast.training import predict_scaled
from tsloom.integrate import IntegrationSpec, integrate
from tsloom.serve import ServeConfig, create_app
from tsloom.serve.batching import predict_batch

TOL = 1e-5
SPEC = {"sources": ["power.etth1"], "freq": "1h", "start": "2016-07-01", "end": "2016-08-15"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net(method: str, subtract_last: bool = False, **extra) -> torch.nn.Module:
    torch.manual_seed(7)
    shape = {"n_features": 3, "input_steps": 24, "output_dim": 6, "target_index": 1}
    net = build_network(
        method, **shape, hidden_size=16, layers=2, subtract_last=subtract_last, **extra
    )
    if method == "seasonal_naive":  # no parameters; nothing random to set
        return net.eval()
    with torch.no_grad():  # move the weights off their init so every path is exercised
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _parity(net: torch.nn.Module, predictor: ox.OnnxPredictor, output: str = "step") -> float:
    from types import SimpleNamespace

    params = SimpleNamespace(output=output, output_dim=predictor.output_dim)
    worst = 0.0
    rng = np.random.default_rng(3)
    for n in (1, 7):  # the batch axis is dynamic
        x = rng.standard_normal((n, 24, 3)).astype(np.float32)
        with torch.inference_mode():
            expected = predict_scaled(net, x, params)  # type: ignore[arg-type]
        got = predictor(x)
        assert got.shape == expected.shape == (n, expected.shape[1])
        assert got.dtype == np.float32
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


CASES = [(m, False) for m in METHODS] + [(m, True) for m in METHODS]


@pytest.mark.parametrize(("method", "subtract_last"), CASES)
def test_every_network_exports_and_matches_torch(method: str, subtract_last: bool) -> None:
    net = _net(method, subtract_last)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = ox.export_onnx(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # untouched
    predictor = ox.OnnxPredictor(data, threads=1)
    assert (predictor.input_steps, predictor.n_features, predictor.output_dim) == (24, 3, 6)
    assert _parity(net, predictor) <= TOL


@pytest.mark.parametrize("output", ["mean", "min", "max"])
def test_summaries_of_seasonal_naive_are_in_the_graph(output: str) -> None:
    net = _net("seasonal_naive")
    predictor = ox.onnx_predictor(net, output=output)
    assert predictor.output_dim == 1
    assert _parity(net, predictor, output) <= TOL


def test_single_subsequence_conv_networks_export() -> None:
    for method in ("cnn_lstm", "conv_lstm"):
        net = _net(method, subsequences=1)
        assert _parity(net, ox.onnx_predictor(net)) <= TOL


def test_predictor_checks_shapes_and_empty_batches() -> None:
    predictor = ox.onnx_predictor(_net("dlinear"))
    assert predictor(np.zeros((0, 24, 3))).shape == (0, 6)
    with pytest.raises(ox.OnnxExportError, match="expects x of shape"):
        predictor(np.zeros((2, 12, 3), np.float32))
    big = ox.OnnxPredictor(predictor.model_bytes, batch_size=4)  # chunked runs
    x = np.random.default_rng(0).standard_normal((10, 24, 3))
    assert np.array_equal(big(x), predictor(x))


def test_export_failure_is_an_onnx_export_error() -> None:
    class Odd(torch.nn.Module):
        config: ClassVar[dict[str, int]] = {"input_steps": 4, "n_features": 1}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.fft.fft(x.numpy()).real)  # leaves the graph

    with pytest.raises(ox.OnnxExportError, match="does not read its input"):
        ox.export_onnx(Odd())  # traced to a constant graph: refused, not served wrong

    class Batchy(torch.nn.Module):
        config: ClassVar[dict[str, int]] = {"input_steps": 4, "n_features": 1}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, 0] * float(x.shape[0])  # the traced batch size becomes a constant

    with pytest.raises(ox.OnnxExportError, match="differs from PyTorch"):
        ox.export_onnx(Batchy())
    ox.export_onnx(Batchy(), verify=False)  # without the check it "works"


def test_runtime_setting() -> None:
    assert ServeConfig().runtime == "torch"
    assert ServeConfig.from_env({"TSLOOM_SERVE_RUNTIME": "ONNX"}).runtime == "onnx"
    assert ServeConfig.from_env({"TSLOOM_SERVE_ONNX_THREADS": "2"}).onnx_threads == 2
    with pytest.raises(ConfigError, match="runtime"):
        ServeConfig(runtime="tensorrt")  # type: ignore[arg-type]


# ------------------------------------------------------------------ served models


class World:
    settings: Settings
    refs: list[str]
    window: pl.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with shared_etth1_home(tmp_path_factory, "onnx") as settings:
        yield _build_world(settings)


def _build_world(settings: Settings) -> World:
    w = World()
    w.settings = settings
    base = {"target": "OT", "epochs": 1, "input_width": "24h", "output_width": "6h"}
    w.refs = [
        reg.register(
            train_on_integration(SPEC, {**base, **change}, settings=w.settings),
            settings=w.settings,
        )
        for change in (
            {"method": "vanilla", "hidden_size": 16, "subtract_last": True},
            {"method": "dlinear"},
        )
    ]
    spec = IntegrationSpec.from_tables(["power.etth1"], "1h", start="2016-09-01", end="2016-09-03")
    w.window = integrate(spec, settings=w.settings).frame
    return w


def _rows(w: World, offset: int = 0) -> list[dict]:
    part = w.window.slice(offset, 24).rename({"power.etth1.OT": "OT"})
    part = part.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return part.to_dicts()


def _served(w: World, ref: str, **config) -> np.ndarray:
    from fastapi.testclient import TestClient

    with TestClient(create_app(w.settings, ServeConfig(**config))) as c:
        out = []
        for offset in (0, 5, 11):
            got = c.post(f"/v1/models/{ref}/predict", json={"rows": _rows(w, offset)})
            assert got.status_code == 200, got.text
            out.append([p["value"] for p in got.json()["predictions"]])
        return np.array(out)


def test_onnx_runtime_serves_what_torch_serves(world: World) -> None:
    for ref in world.refs:
        torch_out = _served(world, ref)
        onnx_out = _served(world, ref, runtime="onnx")
        assert onnx_out.shape == torch_out.shape == (3, 6)
        # in original units (°C); the scaled outputs agree to 1e-5 (next test)
        assert np.abs(onnx_out - torch_out).max() <= TOL * max(1.0, np.abs(torch_out).max())


def test_onnx_runtime_batches_match_torch_and_export_once(world: World) -> None:
    app = create_app(world.settings, ServeConfig(runtime="onnx", cache_size=1))
    state = app.state.tsloom
    exports: list[str] = []
    real = ox.export_onnx
    try:
        ox.export_onnx = lambda net, **kw: exports.append(type(net).__name__) or real(net, **kw)
        for ref in world.refs:
            model = state.model(ref)
            assert model.onnx_predictor is not None and state.onnx_models[ref]
            torch_model = reg.load(ref, settings=world.settings)
            values = [model._window_values(world.window.slice(k, 24))[0] for k in range(7)]
            for n in (1, 7):
                p = model.params
                x = np.stack(values[:n])
                scaled = model.scaler.transform(x.reshape(-1, x.shape[2])).reshape(x.shape)
                with torch.inference_mode():
                    expected = predict_scaled(torch_model.model, scaled, p)
                assert np.abs(model.onnx_predictor(scaled) - expected).max() <= TOL
                got = np.stack(predict_batch(model, values[:n]))
                want = np.stack(predict_batch(torch_model, values[:n]))
                assert np.allclose(got, want, rtol=1e-5, atol=1e-4)
        assert len(exports) == 2
        state.model(world.refs[0])  # evicted (cache of 1) and reloaded: no new export
        assert len(exports) == 2 and state.cache.load_count == 3
    finally:
        ox.export_onnx = real
        state.executor.shutdown(wait=False)


def test_failed_export_falls_back_to_torch_with_a_warning(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(net: torch.nn.Module, **kw: object) -> bytes:
        raise ox.OnnxExportError(f"cannot export {type(net).__name__}")

    monkeypatch.setattr(ox, "export_onnx", fail)
    ref = world.refs[0]
    with caplog.at_level(logging.WARNING, logger="tsloom.serve"):
        fallback = _served(world, ref, runtime="onnx")
    assert any("serving it with torch" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert np.array_equal(fallback, _served(world, ref))  # exactly the torch path

    app = create_app(world.settings, ServeConfig(runtime="onnx"))
    state = app.state.tsloom
    monkeypatch.setattr(ox, "export_onnx", fail)
    try:
        model = state.model(ref)
        assert getattr(model, "onnx_predictor", None) is None
        assert state.onnx_models[ref] is None
    finally:
        state.executor.shutdown(wait=False)
