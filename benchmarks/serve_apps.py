"""The two FastAPI apps that benchmarks/serve_load.py starts under Uvicorn (each in its own
process, ``uvicorn serve_apps:NAME --factory --app-dir benchmarks``).

- :func:`tsloom_app`: tsloom's server (``tsloom serve``) with its settings from
  ``TSLOOM_HOME`` and ``TSLOOM_SERVE_*``, as the CLI builds it.
- :func:`plain_app`: the comparison — a minimal hand-written endpoint that loads the same
  registry models (``BENCH_REFS``, comma separated) and runs one forward pass per request:
  JSON rows in, the same z-score scaling and inverse scaling, timestamps out; no batching,
  no cache, no metrics, no window checks beyond the row count.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


def tsloom_app() -> FastAPI:
    from tsloom.config import load_settings
    from tsloom.serve import ServeConfig, create_app

    return create_app(load_settings(), ServeConfig.from_env())


class Rows(BaseModel):
    rows: list[dict[str, Any]]


def plain_app() -> FastAPI:
    import tsloom.registry as reg
    from tsloom.config import load_settings

    settings = load_settings()
    refs = [r for r in os.environ["BENCH_REFS"].split(",") if r]
    models = {ref: reg.load(ref, settings=settings) for ref in refs}
    app = FastAPI(title="plain one-request-one-forward")

    @app.post("/predict/{ref:path}")
    async def predict(ref: str, body: Rows) -> dict[str, Any]:
        model = models.get(ref)
        if model is None:
            raise HTTPException(404, f"no model {ref}")
        p = model.params
        if len(body.rows) != p.input_steps:
            raise HTTPException(422, f"expected {p.input_steps} rows")
        columns = [f.rsplit(".", 1)[-1] for f in p.features]  # power.etth1.OT → OT
        values = np.array([[row[c] for c in columns] for row in body.rows], dtype=np.float64)
        last = datetime.fromisoformat(body.rows[-1]["ts"].replace("Z", "+00:00"))
        scaled = model.scaler.transform(values)[None]
        with torch.inference_mode():
            out = model.model(torch.as_tensor(scaled, dtype=torch.float32)).numpy()
        pred = model.scaler.inverse(out, p.target_index)[0]
        return {
            "ref": ref,
            "target": p.target,
            "predictions": [
                {"ts": (last + k * p.freq).isoformat(), "step": k, "value": float(v)}
                for k, v in enumerate(pred, start=1)
            ],
        }

    return app
