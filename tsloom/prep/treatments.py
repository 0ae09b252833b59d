"""Which anomaly treatment helps a forecaster most: the source design's comparison.

Each treatment (none, drop, clip to the non-anomalous bounds, EMA smoothing) is applied
to the same series; a baseline forecaster is trained on the first part of each treated
series and scored one step ahead on the rest (RMSE, MAE, MAPE). The baseline is a ridge
regression on the previous `lags` values, until the LSTM forecasters exist to take its
place; what matters is that every treatment is judged by the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.linear_model import Ridge

from tsloom.errors import PrepError
from tsloom.prep._checks import TS
from tsloom.prep.anomalies import iqr_anomalies, residual_anomalies
from tsloom.prep.treat import treat_anomalies

COMPARED = ("none", "drop", "clip", "ema")


@dataclass(frozen=True)
class TreatmentScore:
    treatment: str
    rmse: float
    mae: float
    mape: float
    flagged: int
    n_train: int
    n_test: int


@dataclass(frozen=True)
class TreatmentComparison:
    column: str
    detector: str
    scores: tuple[TreatmentScore, ...]

    @property
    def best(self) -> str:
        return min(self.scores, key=lambda s: s.rmse).treatment

    def to_dict(self) -> dict:
        return {
            "column": self.column,
            "detector": self.detector,
            "best": self.best,
            "scores": [s.__dict__ for s in self.scores],
        }


def _lagged(values: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    windows = np.lib.stride_tricks.sliding_window_view(values, lags + 1)
    return windows[:, :-1], windows[:, -1]


def _score(
    values: np.ndarray, lags: int, test_share: float
) -> tuple[float, float, float, int, int]:
    x, y = _lagged(values, lags)
    split = int(len(y) * (1 - test_share))
    if split < lags or len(y) - split < 2:
        raise PrepError(
            f"{len(values)} points are too few to compare treatments with {lags} lags",
            hint="use a longer time range or fewer --lags",
        )
    model = Ridge(alpha=1.0).fit(x[:split], y[:split])
    pred, truth = model.predict(x[split:]), y[split:]
    err = pred - truth
    nonzero = np.abs(truth) > 1e-9
    mape = float(np.mean(np.abs(err[nonzero] / truth[nonzero])) * 100) if nonzero.any() else np.nan
    return (
        float(np.sqrt(np.mean(err**2))),
        float(np.mean(np.abs(err))),
        mape,
        split,
        len(y) - split,
    )


def compare_treatments(
    frame: pl.DataFrame,
    column: str,
    *,
    detector: str = "iqr",
    k: float = 1.5,
    threshold: float = 3.5,
    treatments: Sequence[str] = COMPARED,
    lags: int = 24,
    test_share: float = 0.2,
    alpha: float = 0.3,
) -> TreatmentComparison:
    """Score each treatment of `column` (one evenly spaced series) with the baseline."""
    if column not in frame.columns:
        raise PrepError(f"no column {column!r}", hint=f"columns are {', '.join(frame.columns)}")
    series = frame.select(TS, column).sort(TS)
    if series[column].null_count():
        raise PrepError(
            f"column {column!r} has {series[column].null_count()} missing values",
            hint="clean the dataset first (tsloom clean) so the series is complete",
        )
    if detector == "iqr":
        flagged = iqr_anomalies(series, [column], k=k)
    elif detector == "residual":
        flagged = residual_anomalies(series, [column], threshold=threshold)
    else:
        raise PrepError(f"unknown detector {detector!r}", hint="iqr or residual")
    n_flagged = int(flagged[f"{column}_anomaly"].sum())
    scores = []
    for treatment in treatments:
        treated = (
            flagged
            if treatment == "none"
            else treat_anomalies(flagged, column, treatment, alpha=alpha)  # type: ignore[arg-type]
        )
        values = treated[column].to_numpy().astype(float)
        rmse, mae, mape, n_train, n_test = _score(values, lags, test_share)
        scores.append(TreatmentScore(treatment, rmse, mae, mape, n_flagged, n_train, n_test))
    return TreatmentComparison(column, detector, tuple(scores))
