"""TorchServe handler for the serving benchmark (benchmarks/serve_load.py): the same
request and answer as tsloom's ``POST /v1/models/{ref}/predict`` — JSON rows of readings
in, inverse-scaled forecasts with timestamps out — around a TorchScript export of a tsloom
registry model. ``scaling.json`` (packed beside the model) carries the fitted z-score
scaler, the feature columns and the model's grid.

Runs inside TorchServe's own environment (torch, numpy; no tsloom). TorchServe hands it
a batch of requests (up to the model's ``batch_size`` within ``max_batch_delay``); the
whole batch goes through one forward pass.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler


class LSTMHandler(BaseHandler):
    def initialize(self, context) -> None:
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        self.model = torch.jit.load(os.path.join(model_dir, serialized), map_location="cpu")
        self.model.eval()
        with open(os.path.join(model_dir, "scaling.json")) as f:
            meta = json.load(f)
        self.columns = meta["columns"]  # request column per feature, in feature order
        self.center = np.asarray(meta["center"], dtype=np.float64)
        self.scale = np.asarray(meta["scale"], dtype=np.float64)
        self.target_index = int(meta["target_index"])
        self.input_steps = int(meta["input_steps"])
        self.freq = timedelta(seconds=float(meta["freq_s"]))
        self.target = meta["target"]
        self.initialized = True

    def _window(self, request: dict) -> tuple[np.ndarray, datetime]:
        body = request.get("data") or request.get("body")
        if isinstance(body, bytes | bytearray):
            body = json.loads(body)
        rows = body["rows"]
        if len(rows) != self.input_steps:
            raise ValueError(f"expected {self.input_steps} rows, got {len(rows)}")
        values = np.array([[row[c] for c in self.columns] for row in rows], dtype=np.float64)
        last = datetime.fromisoformat(rows[-1]["ts"].replace("Z", "+00:00"))
        return values, last

    def handle(self, data, context):
        self.context = context
        windows, lasts = zip(*(self._window(r) for r in data), strict=True)
        x = (np.stack(windows) - self.center) / self.scale
        with torch.inference_mode():
            out = self.model(torch.as_tensor(x, dtype=torch.float32)).numpy()
        t = self.target_index
        values = out.astype(np.float64) * self.scale[t] + self.center[t]
        return [
            {
                "target": self.target,
                "predictions": [
                    {"ts": (last + k * self.freq).isoformat(), "step": k, "value": float(v)}
                    for k, v in enumerate(row, start=1)
                ],
            }
            for row, last in zip(values, lasts, strict=True)
        ]
