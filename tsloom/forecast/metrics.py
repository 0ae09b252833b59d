"""Forecast error measures, the same everywhere (training, benchmarks, the registry)."""

from __future__ import annotations

import numpy as np


def regression_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and MAPE (percent).

    MAPE skips targets smaller than 1% of the mean absolute target: a sensor reading of
    0.001 would otherwise turn one ordinary error into a percentage in the millions.
    """
    truth = np.asarray(truth, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - truth
    mse = float(np.mean(err**2)) if err.size else float("nan")
    floor = max(1e-8, 0.01 * float(np.mean(np.abs(truth)))) if truth.size else 1e-8
    nonzero = np.abs(truth) >= floor
    mape = (
        float(np.mean(np.abs(err[nonzero] / truth[nonzero])) * 100)
        if nonzero.any()
        else float("nan")
    )
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "mape": mape,
    }
