"""The ONNX Runtime side of served forecasts: a predictor over exported graph bytes.

Kept apart from :mod:`tsloom.forecast.onnx_export` so that a process which only runs
forward passes (the server's forward-pass process) imports ONNX Runtime and NumPy, not
PyTorch."""

from __future__ import annotations

import numpy as np

from tsloom.errors import TsloomError

__all__ = ["OnnxExportError", "OnnxPredictor"]


class OnnxExportError(TsloomError):
    """A network that could not be exported to ONNX, or whose export failed its check."""


class OnnxPredictor:
    """An ONNX Runtime session (CPUExecutionProvider) over exported network bytes.

    ``predictor(x)`` / ``predictor.predict_scaled(x)``: scaled windows (n, input_steps,
    features) → scaled predictions (n, output_dim) float32, like
    :func:`tsloom.forecast.training.predict_scaled`. `threads` sets the intra-op thread
    count (1 suits a server that runs several batches in parallel); the session is safe
    to call from several threads at once."""

    def __init__(self, model: bytes, *, threads: int = 1, batch_size: int = 4096) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(int(threads), 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.model_bytes = model
        self.batch_size = batch_size
        self.session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise OnnxExportError(
                f"the ONNX graph has {len(inputs)} inputs, not the one window: it does not read "
                "its input window (a forward pass that leaves torch traces to constants)"
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.input_steps = shape[1] if isinstance(shape[1], int) else None
        self.n_features = shape[2] if isinstance(shape[2], int) else None
        out_shape = self.session.get_outputs()[0].shape
        self.output_dim = out_shape[1] if isinstance(out_shape[1], int) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.predict_scaled(x)

    def predict_scaled(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or (
            self.input_steps is not None
            and (x.shape[1] != self.input_steps or x.shape[2] != self.n_features)
        ):
            raise OnnxExportError(
                f"ONNX model expects x of shape (batch, {self.input_steps}, "
                f"{self.n_features}), got {tuple(x.shape)}"
            )
        if len(x) == 0:
            return np.zeros((0, self.output_dim or 0), np.float32)
        if len(x) <= self.batch_size:
            return self.session.run(None, {self.input_name: x})[0]
        outs = [
            self.session.run(None, {self.input_name: x[i : i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]
