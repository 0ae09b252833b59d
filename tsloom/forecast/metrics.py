"""Forecast error measures, the same everywhere (training, benchmarks, the registry)."""

from __future__ import annotations

import numpy as np


def regression_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE and MAPE (percent, over targets not close to zero)."""
    truth = np.asarray(truth, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - truth
    mse = float(np.mean(err**2)) if err.size else float("nan")
    nonzero = np.abs(truth) > 1e-8
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
