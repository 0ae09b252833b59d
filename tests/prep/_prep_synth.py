"""Small synthetic sensor series for the prep tests (independent of tsloom.sources)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def timestamps(
    n: int,
    period_s: float,
    *,
    jitter: float = 0.0,
    missing: float = 0.0,
    duplicates: float = 0.0,
    seed: int = 0,
    start: dt.datetime = T0,
) -> np.ndarray:
    """int64 µs timestamps on a grid of `n` slots: uniform jitter of ±jitter·period,
    a `missing` share of slots dropped, a `duplicates` share of readings sent twice,
    shuffled order."""
    rng = np.random.default_rng(seed)
    p = period_s * 1e6
    base = int(start.timestamp() * 1e6)
    slots = np.arange(n)
    keep = rng.random(n) >= missing
    keep[[0, -1]] = True
    slots = slots[keep]
    t = base + np.rint(slots * p + rng.uniform(-jitter, jitter, slots.size) * p).astype(np.int64)
    dup = t[rng.random(t.size) < duplicates]
    t = np.concatenate([t, dup])
    rng.shuffle(t)
    return t


def frame(
    n: int = 500,
    period_s: float = 600,
    *,
    seed: int = 0,
    season_steps: int = 24,
    noise: float = 0.1,
    key: str | None = None,
) -> pl.DataFrame:
    """A regular series `ts, value` with a trend and one seasonal cycle plus noise."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    value = 10 + 0.01 * i + 3 * np.sin(2 * np.pi * i / season_steps) + rng.normal(0, noise, n)
    ts = (int(T0.timestamp() * 1e6) + (i * period_s * 1e6).astype(np.int64)).astype(
        "datetime64[us]"
    )
    df = pl.DataFrame({"ts": ts, "value": value}).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC")
    )
    if key is not None:
        df = df.with_columns(pl.lit(key).alias("sensor")).select("sensor", "ts", "value")
    return df
