"""The pure clean pipeline against the synthetic generator's ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from tsloom.errors import PrepError
from tsloom.prep.gaps import INSERTED
from tsloom.prep.pipeline import CleanConfig, clean_frame
from tsloom.prep.treatments import compare_treatments
from tsloom.sources.synthetic import DEMO_SPECS, generate

START = datetime(2026, 1, 5, tzinfo=UTC)
KEYS = ["sensor_id", "position"]


@pytest.fixture(scope="module")
def seoul():
    spec = next(s for s in DEMO_SPECS if s.dataset == "airq.seoul")  # 10 min ± 49 s
    return generate(spec, START, START + timedelta(days=7), seed=11)


def test_clean_recovers_period_and_every_missing_slot(seoul) -> None:
    result = clean_frame(seoul.frame, keys=KEYS)
    assert {p["period_s"] for p in result.periods_list()} == {600.0}
    inserted = result.frame.filter(pl.col(INSERTED))
    assert inserted.height == seoul.truth.missing_count
    # every reading is there once, nothing is missing any more
    assert result.frame.select([*KEYS, "ts"]).is_duplicated().sum() == 0
    assert all(result.frame[c].null_count() == 0 for c in result.columns)
    steps = {s["step"]: s for s in result.steps}
    assert steps["dedup"]["removed"] == seoul.truth.duplicate_count
    assert steps["gaps"]["inserted"] == seoul.truth.missing_count
    assert steps["impute"]["filled"] == seoul.truth.missing_count * len(result.columns)


def test_outliers_are_flagged_and_clipped(seoul) -> None:
    result = clean_frame(seoul.frame, keys=KEYS, config=CleanConfig(anomalies="iqr", treat="clip"))
    truth = seoul.truth.outliers.select("sensor_id", "ts", "column")
    found = 0
    for column in result.columns:
        flagged = result.frame.filter(pl.col(f"{column}_anomaly")).select("sensor_id", "ts")
        expected = truth.filter(pl.col("column") == column).select("sensor_id", "ts")
        found += flagged.join(expected, on=["sensor_id", "ts"]).height
    assert found >= 0.8 * truth.height  # spikes of 6-10 spreads are caught
    for column in result.columns:
        normal = result.frame.filter(~pl.col(f"{column}_anomaly"))[column]
        treated = result.frame.filter(pl.col(f"{column}_anomaly"))[column]
        assert treated.max() <= normal.max() and treated.min() >= normal.min()


def test_given_period_and_no_anomaly_step(seoul) -> None:
    config = CleanConfig(period=timedelta(minutes=10), anomalies="none", impute="ffill")
    result = clean_frame(seoul.frame, keys=KEYS, config=config)
    assert [s["step"] for s in result.steps] == ["validate", "dedup", "period", "gaps", "impute"]
    assert not any(result.frame[f"{c}_anomaly"].any() for c in result.columns)


def test_bad_configuration_and_input_are_clear(seoul) -> None:
    with pytest.raises(PrepError, match="unknown anomaly detector 'zscore'"):
        clean_frame(seoul.frame, keys=KEYS, config=CleanConfig(anomalies="zscore"))
    with pytest.raises(PrepError, match="unknown imputation method"):
        clean_frame(seoul.frame, keys=KEYS, config=CleanConfig(impute="magic"))
    two = pl.DataFrame({"ts": [START, START + timedelta(minutes=10)], "v": [1.0, 2.0]})
    with pytest.raises(PrepError, match="cannot estimate a period"):
        clean_frame(two.with_columns(pl.col("ts").dt.cast_time_unit("us")))


def test_treatment_comparison_ranks_untreated_last(seoul) -> None:
    one = clean_frame(
        seoul.frame.filter(pl.col("sensor_id") == 1),
        keys=KEYS,
        config=CleanConfig(anomalies="none"),
    )
    comparison = compare_treatments(one.output, "co2", lags=12)
    scores = {s.treatment: s for s in comparison.scores}
    assert set(scores) == {"none", "drop", "clip", "ema"}
    assert scores["none"].flagged > 0
    assert comparison.best != "none"
    assert scores["none"].rmse > min(s.rmse for s in comparison.scores)
    assert all(s.mae <= s.rmse for s in comparison.scores)
