"""The prediction answer as JSON bytes, written directly: validating and encoding a
pydantic :class:`~tsloom.serve.schemas.PredictResponse` per request costs about as much as
a small forward pass, and this is every prediction's last step."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

__all__ = ["prediction_body"]


@lru_cache(maxsize=4096)
def _head(ref: str, target: str, freq: timedelta) -> bytes:
    """``{"ref":…,"target":…,"freq":…,"predictions":`` — the same for every answer of a
    model, so made once."""
    from tsloom.integrate import format_duration

    whole = orjson.dumps({"ref": ref, "target": target, "freq": format_duration(freq)})
    return whole[:-1] + b',"predictions":'


@lru_cache(maxsize=256)
def _steps(output: str, output_steps: int, freq: timedelta) -> tuple[tuple[int, timedelta], ...]:
    """Each forecast's step number and its offset from the window's last timestamp."""
    steps = range(1, output_steps + 1) if output == "step" else (output_steps,)
    return tuple((k, k * freq) for k in steps)


def prediction_body(ref: str, model: Any, values: Any, last: datetime | None) -> bytes:
    """The JSON that :class:`~tsloom.serve.schemas.PredictResponse` describes for
    forecasts `values` (one per step) after the window ending at `last`. Timestamps are
    written as ``datetime.isoformat`` writes them (orjson's RFC 3339), NaN and infinities
    as null, as FastAPI would."""
    p = model.params
    steps = _steps(p.output, p.output_steps, p.freq)
    numbers = np.atleast_1d(np.asarray(values, dtype=np.float64)).tolist()
    if len(numbers) != len(steps):
        raise ValueError(f"{len(numbers)} forecasts for {len(steps)} steps")
    if last is None:
        items = [
            {"ts": None, "step": k, "value": v} for (k, _), v in zip(steps, numbers, strict=True)
        ]
    else:
        items = [
            {"ts": last + d, "step": k, "value": v}
            for (k, d), v in zip(steps, numbers, strict=True)
        ]
    return _head(ref, p.target, p.freq) + orjson.dumps(items) + b"}"
