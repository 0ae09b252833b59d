"""What the AMML ETTh1 tests share: the source design's two workflows, a small `ett:0.1`
model spec, and a slice of ETTh1 ingested as `power.ett` with that spec declared."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
from rich.console import Console

from tsloom.amml.spec_store import add_model_spec
from tsloom.config import Settings
from tsloom.ingest.writer import ingest_frame

SPEC = """
name: ett
version: "0.1"
layers:
  - {type: input, features: 1, steps: 24}
  - {type: lstm, units: 8}
  - {type: dense, units: 6}
training: {loss: mse, optimizer: adam, learning_rate: 0.01, epochs: 20, batch_size: 64}
"""
TRAIN = 'source id="ett" | minmax_scaler | train_lstm model="ett:0.1", epoch=2 | print'
PREDICT = 'source id="ett" | minmax_scaler | lstm model="ett:0.1" | minmax_inverse | print'


def ingest_ett(settings: Settings, ett_dir: Path, before: str) -> pl.DataFrame:
    """ETTh1 rows before `before` as `power.ett`, with `ett:0.1` declared."""
    df = pl.read_csv(ett_dir / "ETTh1.csv").filter(pl.col("date") < before)
    ingest_frame(df, "power.ett", ts="date", settings=settings)
    add_model_spec(SPEC, settings=settings)
    return df


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=120, color_system=None)
