"""Sliding windows: `input_steps` of every feature in, the next `output_steps` of the
target out (or their mean/min/max), with a chronological train/validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsloom.errors import TsloomError


@dataclass(frozen=True)
class Windows:
    x: np.ndarray  # (n, input_steps, features)
    y: np.ndarray  # (n, output_dim)
    starts: np.ndarray  # index of each window's first input row

    def __len__(self) -> int:
        return len(self.y)


def count_windows(rows: int, input_steps: int, output_steps: int) -> int:
    return max(0, rows - input_steps - output_steps + 1)


def make_windows(
    values: np.ndarray,
    *,
    input_steps: int,
    output_steps: int,
    target_index: int,
    output: str = "step",
) -> Windows:
    """Every window sliding one step; window i reads rows i … i+input_steps-1 and predicts
    rows i+input_steps … i+input_steps+output_steps-1 of the target."""
    values = np.asarray(values, dtype=np.float32)
    n = count_windows(len(values), input_steps, output_steps)
    if n <= 0:
        raise TsloomError(
            f"{len(values)} rows are too few for one window of {input_steps} input and "
            f"{output_steps} output steps (need {input_steps + output_steps})",
            hint="use a longer time range, or shorter --input-width/--output-width",
        )
    span = np.lib.stride_tricks.sliding_window_view(values, input_steps + output_steps, axis=0)
    span = span[:n].transpose(0, 2, 1)  # (n, input+output, features)
    x = np.ascontiguousarray(span[:, :input_steps, :])
    future = span[:, input_steps:, target_index]
    if output == "step":
        y = future
    elif output == "mean":
        y = future.mean(axis=1, keepdims=True)
    elif output == "min":
        y = future.min(axis=1, keepdims=True)
    elif output == "max":
        y = future.max(axis=1, keepdims=True)
    else:
        raise TsloomError(f"unknown output preparation {output!r}", hint="step, mean, min or max")
    return Windows(x, np.ascontiguousarray(y, dtype=np.float32), np.arange(n))


def split_boundary(rows: int, input_steps: int, output_steps: int, split: float) -> int:
    """The first validation row B: training windows lie wholly in rows [0, B); validation
    windows in rows [B - input_steps, end), so the first validation target is row B and no
    target is shared (the literature's protocol, as in the Informer and DLinear code)."""
    boundary = round(rows * split)
    train = count_windows(boundary, input_steps, output_steps)
    valid = count_windows(rows - boundary + input_steps, input_steps, output_steps)
    if train < 1 or valid < 1:
        raise TsloomError(
            f"{rows} rows split {split:.0%} / {1 - split:.0%} leave {max(train, 0)} training "
            f"and {max(valid, 0)} validation windows of {input_steps} + {output_steps} steps",
            hint="use a longer time range, shorter widths, or another --split",
        )
    return boundary
