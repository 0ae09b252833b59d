"""ONNX export of the forecasting networks and an ONNX Runtime predictor for CPU inference.

    data = export_onnx(net, output="step")          # ONNX bytes, dynamic batch axis
    predictor = OnnxPredictor(data, threads=1)
    out = predictor(scaled)                         # (n, input_steps, F) → (n, output_dim)

The exported graph is the whole served forward pass: the network (with its
``SubtractLast`` wrapper when it has one) and, for a non-trainable network (seasonal naive)
whose target is a window summary, the ``mean``/``min``/``max`` reduction that
:func:`tsloom.forecast.training.predict_scaled` applies — so ``predictor(x)`` equals
``predict_scaled(net, x, params)`` (to float32 rounding, ≤ 1e-5 in the parity tests).

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'tsloom[onnx]'``); this
module imports them only when called.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from tsloom.forecast.onnx_runtime import OnnxExportError, OnnxPredictor

__all__ = ["OPSET", "OnnxExportError", "OnnxPredictor", "export_onnx", "onnx_predictor"]

OPSET = 17
INPUT = "x"
OUTPUT = "y"
VERIFY_TOL = 1e-4  # the check at export; the parity tests hold exports to 1e-5


class _Served(nn.Module):
    """The network plus the summary that `predict_scaled` applies to non-trainable ones."""

    def __init__(self, net: nn.Module, output: str) -> None:
        super().__init__()
        self.net = net
        summarise = output != "step" and getattr(net, "trainable", True) is False
        self.summary = output if summarise else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.summary == "mean":
            return out.mean(dim=1, keepdim=True)
        if self.summary == "min":
            return out.min(dim=1, keepdim=True).values
        if self.summary == "max":
            return out.max(dim=1, keepdim=True).values
        return out


def _input_shape(net: nn.Module) -> tuple[int, int]:
    config = getattr(net, "config", {}) or {}
    try:
        return int(config["input_steps"]), int(config["n_features"])
    except KeyError:
        raise OnnxExportError(
            f"{type(net).__name__} has no input_steps/n_features in its .config",
            hint="build networks with tsloom.forecast.networks.build_network",
        ) from None


def export_onnx(
    net: nn.Module,
    *,
    output: str = "step",
    opset: int = OPSET,
    verify: bool = True,
    verify_tol: float = VERIFY_TOL,
) -> bytes:
    """The ONNX model (serialised bytes) of `net`'s forward pass on CPU, float32, with a
    dynamic batch axis: input ``x`` (batch, input_steps, n_features) → output ``y``
    (batch, output_dim). `output` is the params' output preparation (``step``, ``mean``,
    ``min``, ``max``). Uses the TorchScript-based exporter (``dynamo=False``), which handles
    ``nn.LSTM`` as the ONNX ``LSTM`` operator and unrolls the ConvLSTM loop.

    With `verify` (the default) the exported graph is run in ONNX Runtime on random
    windows at two batch sizes and compared with PyTorch: a graph that does not take the
    input, or whose outputs differ by more than `verify_tol` (relative to the output's
    magnitude, at least 1), is refused — tracing can otherwise bake values computed
    outside torch into constants without failing.

    Raises :class:`OnnxExportError` when export or verification fails; `net` itself is
    left untouched (a CPU copy in eval mode is exported)."""
    steps, feats = _input_shape(net)
    module = _Served(copy.deepcopy(net).cpu().float().eval(), output).eval()
    example = torch.zeros(2, steps, feats, dtype=torch.float32)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings from the shape checks
            torch.onnx.export(
                module,
                (example,),
                buffer,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise OnnxExportError(
            f"could not export {type(net).__name__} to ONNX: {type(exc).__name__}: {exc}"
        ) from exc
    data = buffer.getvalue()
    if verify:
        _verify(module, data, steps, feats, verify_tol)
    return data


def _verify(module: nn.Module, data: bytes, steps: int, feats: int, tol: float) -> None:
    try:
        predictor = OnnxPredictor(data)
    except OnnxExportError:
        raise
    except Exception as exc:
        raise OnnxExportError(f"ONNX Runtime cannot load the exported graph: {exc}") from exc
    generator = torch.Generator().manual_seed(0)
    for n in (1, 3):
        x = torch.randn(n, steps, feats, generator=generator)
        with torch.no_grad():
            expected = module(x).numpy()
        got = predictor(x.numpy())
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
        if not diff <= tol * max(1.0, float(np.abs(expected).max())):
            raise OnnxExportError(
                f"the exported graph differs from PyTorch by {diff:.3g} at batch size {n}"
            )


def onnx_predictor(
    net: nn.Module, *, output: str = "step", threads: int = 1, **kwargs: Any
) -> OnnxPredictor:
    """Export `net` and open a predictor on it in one step."""
    return OnnxPredictor(export_onnx(net, output=output, **kwargs), threads=threads)
