"""Descriptive, univariate and multivariate analysis of evenly spaced series.

Describe first (count, mean, spread, quantiles, how much is missing, the shape of the
distribution), then look at one series over time (autocorrelation, stationarity), then at
several together (correlation matrix, lagged cross-correlation: does one lead another?).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import gaussian_kde

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, as_list, check_values, value_columns
from tsloom.prep.decompose import _interpolated

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


def describe(
    df: pl.DataFrame,
    columns: str | Sequence[str] | None = None,
    *,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    quantiles: Sequence[float] = QUANTILES,
) -> pl.DataFrame:
    """One row per (key, column): count, missing, missing_share, mean, std, min, q.., max.

    NaN counts as missing. Quantile columns are named like q05, q25, q50.
    """
    keys = as_list(by)
    cols = value_columns(df, columns, ts, keys)
    long = df.select([*keys, *[pl.col(c).cast(pl.Float64).fill_nan(None) for c in cols]])
    long = long.unpivot(on=cols, index=keys or None, variable_name="column", value_name="_v")
    v = pl.col("_v")
    aggs = [
        v.count().alias("count"),
        v.null_count().alias("missing"),
        (v.null_count() / pl.len()).alias("missing_share"),
        v.mean().alias("mean"),
        v.std().alias("std"),
        v.min().alias("min"),
        *[v.quantile(q, interpolation="linear").alias(f"q{round(q * 100):02d}") for q in quantiles],
        v.max().alias("max"),
    ]
    return long.group_by([*keys, "column"], maintain_order=True).agg(aggs)


@dataclass(frozen=True, eq=False)
class Density:
    """A kernel density estimate evaluated on an even grid (for plotting)."""

    x: np.ndarray
    y: np.ndarray
    bandwidth: float

    def to_dict(self) -> dict[str, object]:
        return {"x": self.x.tolist(), "y": self.y.tolist(), "bandwidth": self.bandwidth}


def density(
    values: np.ndarray | pl.Series,
    *,
    grid_size: int = 200,
    max_points: int = 50_000,
    seed: int = 0,
    name: str = "value",
) -> Density:
    """Gaussian KDE (scipy, Scott's bandwidth) on a grid spanning the data ± 3 bandwidths.

    Above `max_points` values a random sample is used: the curve is for looking at, and
    the KDE costs points x grid.
    """
    arr = values.cast(pl.Float64).to_numpy() if isinstance(values, pl.Series) else values
    finite = check_values(np.asarray(arr, dtype=np.float64), name)
    if finite.size > max_points:
        finite = np.random.default_rng(seed).choice(finite, max_points, replace=False)
    kde = gaussian_kde(finite)
    bw = float(np.sqrt(kde.covariance[0, 0]))
    x = np.linspace(finite.min() - 3 * bw, finite.max() + 3 * bw, grid_size)
    return Density(x, kde(x), bw)


@dataclass(frozen=True, eq=False)
class Autocorrelation:
    """ACF and PACF for lags 0..nlags and the ±95% white-noise band."""

    acf: np.ndarray
    pacf: np.ndarray
    band: float

    def to_dict(self) -> dict[str, object]:
        return {"acf": self.acf.tolist(), "pacf": self.pacf.tolist(), "band": float(self.band)}


def acf_pacf(values: np.ndarray, nlags: int = 40, name: str = "value") -> Autocorrelation:
    """ACF/PACF (statsmodels) of an evenly spaced series; gaps are interpolated first."""
    from statsmodels.tsa.stattools import acf, pacf

    y = np.asarray(values, dtype=np.float64)
    check_values(y, name, min_points=4)
    y = _interpolated(y)
    nlags = min(nlags, y.size // 2 - 1)
    if nlags < 1:
        raise PrepError(f"column {name!r} is too short for autocorrelation", hint="need ≥ 4")
    return Autocorrelation(
        acf(y, nlags=nlags, fft=True), pacf(y, nlags=nlags), 1.96 / np.sqrt(y.size)
    )


@dataclass(frozen=True)
class Stationarity:
    """ADF (null: unit root) and KPSS (null: stationary) tests and their joint verdict."""

    adf_stat: float
    adf_pvalue: float
    kpss_stat: float
    kpss_pvalue: float
    alpha: float

    @property
    def stationary(self) -> bool:
        """Both tests agree: ADF rejects a unit root and KPSS does not reject stationarity."""
        return self.adf_pvalue < self.alpha and self.kpss_pvalue >= self.alpha

    @property
    def verdict(self) -> str:
        adf_says = self.adf_pvalue < self.alpha
        kpss_says = self.kpss_pvalue >= self.alpha
        if adf_says and kpss_says:
            return "stationary"
        if not adf_says and not kpss_says:
            return "non-stationary"
        return "trend-stationary" if not adf_says else "difference-stationary"

    def to_dict(self) -> dict[str, object]:
        return {
            "adf_stat": self.adf_stat,
            "adf_pvalue": self.adf_pvalue,
            "kpss_stat": self.kpss_stat,
            "kpss_pvalue": self.kpss_pvalue,
            "verdict": self.verdict,
        }


def stationarity(values: np.ndarray, *, alpha: float = 0.05, name: str = "value") -> Stationarity:
    """Run ADF and KPSS (level) on an evenly spaced series; gaps are interpolated first."""
    from statsmodels.tsa.stattools import adfuller, kpss

    y = np.asarray(values, dtype=np.float64)
    check_values(y, name, min_points=20)
    y = _interpolated(y)
    adf_stat, adf_p, *_ = adfuller(y, autolag="AIC", result_object=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KPSS warns when the p-value is off its table
        kpss_stat, kpss_p, *_ = kpss(y, regression="c", nlags="auto")
    return Stationarity(float(adf_stat), float(adf_p), float(kpss_stat), float(kpss_p), alpha)


def correlation_matrix(
    df: pl.DataFrame, columns: str | Sequence[str] | None = None, *, ts: str = TS
) -> pl.DataFrame:
    """Pearson correlations between value columns on the rows where all are present;
    a `column` column names the rows."""
    cols = value_columns(df, columns, ts)
    if len(cols) < 2:
        raise PrepError("a correlation matrix needs at least two numeric columns")
    data = df.select([pl.col(c).cast(pl.Float64).fill_nan(None) for c in cols]).drop_nulls()
    for c in cols:
        check_values(data.get_column(c).to_numpy(), c, min_points=3)
    corr = np.corrcoef(data.to_numpy(), rowvar=False)
    return pl.DataFrame({"column": cols, **{c: corr[:, i] for i, c in enumerate(cols)}})


@dataclass(frozen=True, eq=False)
class CrossCorrelation:
    """corr(x[t], y[t + lag]) per lag; a positive best lag means x leads y."""

    lags: np.ndarray
    values: np.ndarray

    @property
    def best_lag(self) -> int:
        return int(self.lags[int(np.nanargmax(np.abs(self.values)))])

    @property
    def best_value(self) -> float:
        return float(self.values[int(np.nanargmax(np.abs(self.values)))])

    def to_dict(self) -> dict[str, object]:
        return {
            "lags": self.lags.tolist(),
            "values": [None if np.isnan(v) else float(v) for v in self.values],
            "best_lag": self.best_lag,
            "best_value": self.best_value,
        }


def cross_correlation(
    x: np.ndarray, y: np.ndarray, max_lag: int = 48, *, names: tuple[str, str] = ("x", "y")
) -> CrossCorrelation:
    """Pearson correlation of x with y shifted by -max_lag..max_lag steps (equal-length,
    evenly spaced series; gaps interpolated)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.size != b.size:
        raise PrepError(f"series {names[0]!r} and {names[1]!r} differ in length")
    check_values(a, names[0], min_points=4)
    check_values(b, names[1], min_points=4)
    a, b = _interpolated(a), _interpolated(b)
    max_lag = min(max_lag, a.size - 3)
    lags = np.arange(-max_lag, max_lag + 1)
    vals = np.empty(lags.size)
    for i, lag in enumerate(lags):  # one vectorised Pearson per lag
        u, v = (a[: a.size - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: b.size + lag])
        su, sv = u.std(), v.std()
        vals[i] = (
            np.nan
            if su == 0 or sv == 0
            else float(np.mean((u - u.mean()) * (v - v.mean())) / (su * sv))
        )
    return CrossCorrelation(lags, vals)
