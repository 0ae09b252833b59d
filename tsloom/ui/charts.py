"""Chart data for the vendored uPlot: one shared x axis (epoch seconds, or plain numbers),
one list of values per series, down-sampled server-side so a page never ships more than a
few thousand points (min/max per bucket, so a one-point spike stays visible)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

MAX_POINTS = 3000
PALETTE = ("#1f66c2", "#e07b00", "#2a9d8f", "#9c3fbf", "#c2185b", "#5d7a00", "#6d4c41")


def keep_indices(columns: Sequence[np.ndarray], max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices (sorted) that keep, per bucket, each column's minimum and maximum."""
    n = len(columns[0]) if columns else 0
    if n <= max_points or not columns:
        return np.arange(n)
    per_bucket = 2 * len(columns)
    buckets = max(1, (max_points - 2) // per_bucket)
    size = -(-n // buckets)
    buckets = -(-n // size)
    pad = buckets * size - n
    base = np.arange(buckets) * size
    parts = [np.array([0, n - 1])]
    for values in columns:
        y = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(y)
        lo = np.concatenate([np.where(finite, y, np.inf), np.full(pad, np.inf)])
        hi = np.concatenate([np.where(finite, y, -np.inf), np.full(pad, -np.inf)])
        parts += [
            base + lo.reshape(buckets, -1).argmin(1),
            base + hi.reshape(buckets, -1).argmax(1),
        ]
    idx = np.unique(np.concatenate(parts))
    return idx[idx < n]


def _clean(values: Any) -> list[float | None]:
    out = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        f = float(v)
        out.append(f if math.isfinite(f) else None)
    return out


def epoch_seconds(ts: pl.Series | Sequence[datetime]) -> list[float]:
    series = ts if isinstance(ts, pl.Series) else pl.Series("ts", list(ts))
    micro = series.cast(pl.Datetime("us", "UTC")).dt.epoch("us")
    return [float(v) / 1e6 for v in micro.to_list()]


def time_chart(
    frame: pl.DataFrame,
    columns: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    points: Sequence[str] = (),
    max_points: int = MAX_POINTS,
    title: str = "",
    ylabel: str = "",
) -> dict[str, Any]:
    """A time chart of `columns` of `frame` (``ts`` + values); `points` are drawn as
    markers only (e.g. anomalies, nulls elsewhere)."""
    if frame.height == 0:
        return {"x": [], "series": [], "time": True, "title": title, "ylabel": ylabel}
    lines = [c for c in columns if c not in points]
    arrays = [frame[c].cast(pl.Float64).to_numpy() for c in lines] or [np.zeros(frame.height)]
    idx = keep_indices(arrays, max_points)
    if points:  # every marker stays
        marked = np.zeros(frame.height, dtype=bool)
        for c in points:
            marked |= frame[c].is_not_null().to_numpy()
        idx = np.union1d(idx, np.flatnonzero(marked))
    part = frame[idx.tolist()] if len(idx) < frame.height else frame
    labels = labels or {}
    series = [
        {
            "label": labels.get(c, c),
            "values": _clean(part[c].cast(pl.Float64).to_list()),
            "color": PALETTE[i % len(PALETTE)] if c not in points else "#d62728",
            "points": c in points,
        }
        for i, c in enumerate(columns)
    ]
    return {
        "x": epoch_seconds(part["ts"]),
        "series": series,
        "time": True,
        "title": title,
        "ylabel": ylabel,
        "shown": part.height,
        "total": frame.height,
    }


def line_chart(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> dict[str, Any]:
    """A plain numeric chart (e.g. RMSE per epoch)."""
    return {
        "x": [float(v) for v in x],
        "series": [
            {"label": k, "values": _clean(v), "color": PALETTE[i % len(PALETTE)], "points": False}
            for i, (k, v) in enumerate(series.items())
        ],
        "time": False,
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
    }
