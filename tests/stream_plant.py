"""What the stream tests share: two temperature sensors of `plant.sensors` (a daily sine
per sensor), their ingestion, and small vanilla LSTMs trained on them at 1 h."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import torch

import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.forecast.job import train_on_integration
from tsloom.ingest import ingest_frame

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
F1 = "plant.sensors.temp[sensor_id=1]"
F2 = "plant.sensors.temp[sensor_id=2]"


def level(sensor: int, hour: int) -> float:
    return 20.0 + 5.0 * np.sin(2 * np.pi * hour / 24) + 2.0 * sensor + 0.1 * (hour % 5)


def ingest_plant(settings: Settings, hours: int) -> None:
    """`hours` hourly readings of sensors 1 and 2 from T0."""
    rows = [
        {"ts": T0 + h * H, "sensor_id": s, "temp": level(s, h)}
        for h in range(hours)
        for s in (1, 2)
    ]
    ingest_frame(
        pl.DataFrame(rows), "plant.sensors", ts="ts", keys=["sensor_id"], settings=settings
    )


def train_plant(
    settings: Settings, features: list[str], *, hidden: int, in_steps: int, out_steps: int
) -> str:
    """Train (one epoch, one thread) and register a vanilla LSTM forecasting F1; its ref."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train_on_integration(
            {"sources": ["plant.sensors"], "freq": "1h"},
            {
                "target": F1,
                "features": features,
                "method": "vanilla",
                "hidden_size": hidden,
                "layers": 1,
                "epochs": 1,
                "input_width": f"{in_steps}h",
                "output_width": f"{out_steps}h",
            },
            settings=settings,
        )
        return reg.register(run, settings=settings)
    finally:
        torch.set_num_threads(threads)
