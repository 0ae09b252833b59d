"""Pure preprocessing and analysis of time series: no I/O, frames in, frames out.

A frame has a UTC timestamp column `ts`, optional key columns (passed as `by=`) and float
value columns. Typical cleaning order: validate → deduplicate → estimate_period →
fill_gaps → impute → detect anomalies → treat them.
"""

from tsloom.prep.anomalies import iqr_anomalies, residual_anomalies, robust_z
from tsloom.prep.decompose import decompose, default_season, season_steps, spacing, stl
from tsloom.prep.dedup import DedupReport, deduplicate
from tsloom.prep.gaps import INSERTED, GapReport, fill_gaps
from tsloom.prep.impute import (
    METHODS,
    ImputationComparison,
    MethodScore,
    compare_imputation,
    impute,
    kalman_smooth,
)
from tsloom.prep.period import (
    NICE_PERIODS_US,
    PeriodEstimate,
    approximate_gcd,
    estimate_period,
    estimate_periods,
)
from tsloom.prep.resample import downsample, upsample
from tsloom.prep.stats import (
    Autocorrelation,
    CrossCorrelation,
    Density,
    Stationarity,
    acf_pacf,
    correlation_matrix,
    cross_correlation,
    density,
    describe,
    stationarity,
)
from tsloom.prep.treat import TREATMENTS, ema_smooth, treat_anomalies
from tsloom.prep.validate import (
    Problem,
    ValidationReport,
    parse_timestamps,
    validate,
    validate_schema,
    validate_timestamps,
)

__all__ = [
    "INSERTED",
    "METHODS",
    "NICE_PERIODS_US",
    "TREATMENTS",
    "Autocorrelation",
    "CrossCorrelation",
    "DedupReport",
    "Density",
    "GapReport",
    "ImputationComparison",
    "MethodScore",
    "PeriodEstimate",
    "Problem",
    "Stationarity",
    "ValidationReport",
    "acf_pacf",
    "approximate_gcd",
    "compare_imputation",
    "correlation_matrix",
    "cross_correlation",
    "decompose",
    "deduplicate",
    "default_season",
    "density",
    "describe",
    "downsample",
    "ema_smooth",
    "estimate_period",
    "estimate_periods",
    "fill_gaps",
    "impute",
    "iqr_anomalies",
    "kalman_smooth",
    "parse_timestamps",
    "residual_anomalies",
    "robust_z",
    "season_steps",
    "spacing",
    "stationarity",
    "stl",
    "treat_anomalies",
    "upsample",
    "validate",
    "validate_schema",
    "validate_timestamps",
]
