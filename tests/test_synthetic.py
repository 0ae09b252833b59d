"""The synthetic sensor generator: determinism, layout, and that its truth is the truth."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsloom.sources.synthetic import (
    CSV_TS_FORMAT,
    DEMO_SPECS,
    DEMO_START,
    SensorSpec,
    SyntheticSpecError,
    Truth,
    demo_series,
    generate,
    load_truth,
    write_csv_rows,
    write_demo,
)

START = DEMO_START
TWO_WEEKS = START + timedelta(days=14)


@pytest.fixture(scope="module")
def demo() -> dict[str, object]:
    """The demo sources in memory, generated once for the module."""
    return {s.spec.dataset: s for s in demo_series(days=14, seed=7)}


def _round(x: float) -> int:
    return math.floor(x + 0.5)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_data() -> None:
    spec = DEMO_SPECS[1]
    a = generate(spec, START, TWO_WEEKS, seed=3)
    b = generate(spec, START, TWO_WEEKS, seed=3)
    assert a.frame.equals(b.frame)
    assert a.truth.to_dict() == b.truth.to_dict()


def test_different_seed_gives_different_data() -> None:
    spec = DEMO_SPECS[1]
    a = generate(spec, START, TWO_WEEKS, seed=3)
    b = generate(spec, START, TWO_WEEKS, seed=4)
    assert not a.frame.equals(b.frame)
    assert a.truth.missing_timestamps() != b.truth.missing_timestamps()
    assert a.frame.get_column("co2").to_list() != b.frame.get_column("co2").to_list()


def test_datasets_get_independent_streams_from_one_seed() -> None:
    a = generate(SensorSpec("x.one", timedelta(minutes=5)), START, TWO_WEEKS, seed=1)
    b = generate(SensorSpec("x.two", timedelta(minutes=5)), START, TWO_WEEKS, seed=1)
    assert a.frame.get_column("co2").to_list() != b.frame.get_column("co2").to_list()


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("spec", DEMO_SPECS, ids=lambda s: s.dataset)
def test_frame_layout(spec: SensorSpec, demo: dict) -> None:
    frame = demo[spec.dataset].frame
    assert frame.columns == ["ts", "sensor_id", "position", *spec.columns]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame.schema["sensor_id"] == pl.Int64
    assert frame.schema["position"] == pl.String
    for column in spec.columns:
        assert frame.schema[column] == pl.Float64
    assert frame.null_count().sum_horizontal().item() == 0
    assert sorted(frame.get_column("sensor_id").unique().to_list()) == list(
        range(1, spec.sensors + 1)
    )
    assert frame.get_column("position").unique().to_list() == [spec.position]
    micros = frame.get_column("ts").dt.epoch("us")
    assert (micros % 1_000_000 == 0).all(), "timestamps are whole seconds"
    first, last = frame.get_column("ts").min(), frame.get_column("ts").max()
    assert START - spec.jitter <= first <= START + spec.jitter
    assert last < TWO_WEEKS + spec.jitter


def test_demo_specs_cover_three_periods_and_distinct_columns() -> None:
    assert [s.dataset for s in DEMO_SPECS] == ["airq.gwangju", "airq.seoul", "weather.station"]
    assert [s.period for s in DEMO_SPECS] == [
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(hours=1),
    ]
    seoul = DEMO_SPECS[1]
    assert seoul.jitter == timedelta(seconds=49)
    assert DEMO_SPECS[0].sensors >= 2 and seoul.sensors >= 2
    assert set(DEMO_SPECS[2].columns).isdisjoint(DEMO_SPECS[0].columns)
    assert DEMO_SPECS[0].unit_map["co2"] == "ppm"
    assert DEMO_SPECS[2].unit_map == {"temperature": "degC", "humidity": "%"}


# --------------------------------------------------------------------------- period, jitter, gaps


@pytest.mark.parametrize("spec", DEMO_SPECS, ids=lambda s: s.dataset)
def test_period_jitter_and_gaps_match_truth(spec: SensorSpec, demo: dict) -> None:
    series = demo[spec.dataset]
    truth: Truth = series.truth
    p = spec.period.total_seconds()
    j = spec.jitter.total_seconds()
    start_s = START.timestamp()
    max_offset = 0.0
    for sid in range(1, spec.sensors + 1):
        ts = (
            series.frame.filter(pl.col("sensor_id") == sid)
            .get_column("ts")
            .unique()
            .sort()
            .dt.epoch("s")
            .to_numpy()
        )
        # Every reading sits within ± jitter of a nominal slot.
        slots = np.rint((ts - start_s) / p).astype(np.int64)
        offsets = ts - (start_s + slots * p)
        assert np.abs(offsets).max() <= j
        max_offset = max(max_offset, float(np.abs(offsets).max()))
        diffs = np.diff(ts)
        steps = np.rint(diffs / p).astype(np.int64)
        regular = diffs[steps == 1]
        assert regular.min() >= p - 2 * j and regular.max() <= p + 2 * j
        # Divide-and-round recovers every gap and every missing nominal time.
        sensor_gaps = truth.gaps.filter(pl.col("sensor_id") == sid)
        assert int((steps > 1).sum()) == sensor_gaps.height
        assert int((steps - 1).sum()) == sensor_gaps.get_column("missing").sum()
        missing = np.concatenate(
            [slots[i] + np.arange(1, steps[i]) for i in np.flatnonzero(steps > 1)] or [[]]
        )
        expected = [int(t.timestamp()) for t in truth.missing_timestamps(sid)]  # nominal times
        assert (start_s + missing * p).astype(np.int64).tolist() == expected
        assert slots[0] == 0, "the first slot of a series is never removed"
    if j:
        assert max_offset >= 0.8 * j, "jitter is actually used"
    else:
        assert max_offset == 0


@pytest.mark.parametrize("spec", DEMO_SPECS, ids=lambda s: s.dataset)
def test_counts_follow_the_rates(spec: SensorSpec, demo: dict) -> None:
    t: Truth = demo[spec.dataset].truth
    slots = 14 * 86_400 // int(spec.period.total_seconds())
    assert t.nominal_rows == slots * spec.sensors
    assert t.missing_count == _round(spec.gap_rate * t.nominal_rows)
    assert t.unique_rows == t.nominal_rows - t.missing_count
    assert t.duplicate_count == _round(spec.duplicate_rate * t.unique_rows)
    assert t.outlier_count == _round(spec.outlier_rate * t.unique_rows)
    assert t.conflicting_duplicate_count == _round(spec.conflicting_share * t.duplicate_count)
    assert t.exact_duplicate_count == t.duplicate_count - t.conflicting_duplicate_count
    assert t.rows == demo[spec.dataset].frame.height == t.unique_rows + t.duplicate_count
    assert t.gaps.get_column("missing").sum() == t.missing_count
    assert t.gaps.get_column("missing").max() <= spec.max_gap_periods


def test_gaps_come_in_runs_not_only_singletons() -> None:
    spec = SensorSpec("x.gaps", timedelta(minutes=1), gap_rate=0.05, max_gap_periods=10)
    t = generate(spec, START, START + timedelta(days=7), seed=2).truth
    lengths = t.gaps.get_column("missing")
    assert lengths.min() == 1
    assert (lengths > 1).sum() > t.gap_count // 3
    assert lengths.max() == 10
    assert t.missing_count == _round(0.05 * 7 * 1440)


# --------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("spec", DEMO_SPECS[:2], ids=lambda s: s.dataset)
def test_duplicates_in_frame_match_truth(spec: SensorSpec, demo: dict) -> None:
    series = demo[spec.dataset]
    frame, truth = series.frame, series.truth
    keys = ["sensor_id", "ts"]
    groups = frame.group_by(keys).agg(
        pl.len().alias("n"),
        *[pl.col(c).n_unique().alias(c) for c in spec.columns],
    )
    dup_groups = groups.filter(pl.col("n") > 1)
    assert dup_groups.get_column("n").max() == 2
    assert dup_groups.height == truth.duplicate_count
    conflicting = dup_groups.filter(pl.all_horizontal(pl.col(c) == 2 for c in spec.columns))
    exact = dup_groups.filter(pl.all_horizontal(pl.col(c) == 1 for c in spec.columns))
    assert conflicting.height == truth.conflicting_duplicate_count
    assert exact.height == truth.exact_duplicate_count
    assert frame.is_duplicated().sum() == 2 * truth.exact_duplicate_count
    truth_keys = truth.duplicates.filter(pl.col("conflicting")).select(keys).sort(keys)
    assert conflicting.select(keys).sort(keys).equals(truth_keys)


def test_rows_are_ordered_by_ts_except_late_duplicates(demo: dict) -> None:
    series = demo["airq.seoul"]
    ts = series.frame.get_column("ts")
    backwards = int((ts.diff().dt.total_seconds() < 0).sum())
    assert 1 <= backwards <= series.truth.late_duplicate_count
    firsts = series.frame.unique(["sensor_id", "ts"], keep="first", maintain_order=True)
    assert firsts.get_column("ts").is_sorted()


# --------------------------------------------------------------------------- outliers


@pytest.mark.parametrize("spec", DEMO_SPECS, ids=lambda s: s.dataset)
def test_outliers_are_in_the_frame_and_far_from_baseline(spec: SensorSpec, demo: dict) -> None:
    series = demo[spec.dataset]
    truth = series.truth
    spread = spec.spread()
    firsts = series.frame.unique(["sensor_id", "ts"], keep="first")
    for row in truth.outliers.iter_rows(named=True):
        found = firsts.filter(
            (pl.col("sensor_id") == row["sensor_id"]) & (pl.col("ts") == row["ts"])
        )
        assert found.height == 1
        assert found.get_column(row["column"]).item() == row["value"]
        deviation = abs(row["value"] - row["baseline"])
        assert 5.9 * spread[row["column"]] <= deviation <= 10.1 * spread[row["column"]]
    assert truth.outlier_timestamps() == sorted(truth.outliers.get_column("ts").to_list())


def test_iqr_rule_finds_exactly_the_outliers_of_a_flat_series() -> None:
    spec = SensorSpec(
        "x.flat",
        timedelta(minutes=5),
        level=100.0,
        trend_per_day=0.0,
        daily_amplitude=0.0,
        weekly_amplitude=0.0,
        noise_std=2.0,
        outlier_rate=0.01,
        duplicate_rate=0.0,
    )
    series = generate(spec, START, START + timedelta(days=14), seed=11)
    v = series.frame.get_column("co2").to_numpy()
    q1, q3 = np.percentile(v, [25, 75])
    flagged = (v < q1 - 3 * (q3 - q1)) | (v > q3 + 3 * (q3 - q1))
    got = series.frame.filter(pl.Series(flagged)).get_column("ts").sort().to_list()
    assert got == series.truth.outlier_timestamps()
    assert len(got) == _round(0.01 * series.truth.unique_rows)


# --------------------------------------------------------------------------- signal shape


def _on_grid(series, sid: int, column: str) -> np.ndarray:
    """One sensor's values on its nominal slot grid, NaN where a slot is missing."""
    spec = series.spec
    p = spec.period.total_seconds()
    frame = series.frame.filter(pl.col("sensor_id") == sid).unique("ts", keep="first")
    slots = np.rint((frame.get_column("ts").dt.epoch("s").to_numpy() - START.timestamp()) / p)
    grid = np.full(int(slots.max()) + 1, np.nan)
    grid[slots.astype(np.int64)] = frame.get_column(column).to_numpy()
    return grid


def _autocorr(x: np.ndarray, lag: int) -> float:
    a, b = x[:-lag], x[lag:]
    ok = ~(np.isnan(a) | np.isnan(b))
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def test_daily_seasonality_is_visible(demo: dict) -> None:
    grid = _on_grid(demo["airq.gwangju"], 1, "co2")
    assert len(grid) == 14 * 288
    assert _autocorr(grid, 288) > 0.8  # one day later
    assert _autocorr(grid, 144) < -0.3  # half a day later
    hourly = _on_grid(demo["weather.station"], 1, "temperature")
    assert _autocorr(hourly, 24) > 0.7
    temp, hum = (_on_grid(demo["weather.station"], 1, c) for c in ("temperature", "humidity"))
    ok = ~(np.isnan(temp) | np.isnan(hum))
    assert np.corrcoef(temp[ok], hum[ok])[0, 1] < -0.5  # humidity peaks when it is cool


def test_weekly_seasonality_and_trend() -> None:
    spec = SensorSpec(
        "x.weekly",
        timedelta(hours=1),
        level=50.0,
        trend_per_day=0.0,
        daily_amplitude=0.0,
        weekly_amplitude=10.0,
        weekly_peak_day=3.0,
        noise_std=1.0,
        outlier_rate=0.0,
    )
    series = generate(spec, START, START + timedelta(weeks=8), seed=5)
    daily = (
        series.frame.group_by(pl.col("ts").dt.truncate("1d").alias("day"))
        .agg(pl.col("co2").mean())
        .sort("day")
    )
    weekday = daily.get_column("day").dt.weekday().to_numpy() - 1  # Monday = 0
    expected = np.cos(2 * np.pi * (weekday + 0.5 - 3.0) / 7)
    assert np.corrcoef(daily.get_column("co2").to_numpy(), expected)[0, 1] > 0.95

    trending = SensorSpec(
        "x.trend",
        timedelta(hours=1),
        level=10.0,
        trend_per_day=2.0,
        daily_amplitude=3.0,
        weekly_amplitude=0.0,
        noise_std=0.5,
        outlier_rate=0.0,
    )
    frame = generate(trending, START, START + timedelta(days=30), seed=5).frame
    days = (frame.get_column("ts").dt.epoch("s").to_numpy() - START.timestamp()) / 86_400
    slope = np.polyfit(days, frame.get_column("co2").to_numpy(), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.05)


def test_per_column_parameters_and_sensors_differ(demo: dict) -> None:
    frame = demo["airq.gwangju"].frame
    means = frame.group_by("sensor_id").agg(pl.col("co2").median(), pl.col("pm10").median())
    assert means.get_column("co2").min() > 300 and means.get_column("pm10").max() < 100
    assert means.get_column("co2").n_unique() == 3
    s1, s2 = (_on_grid(demo["airq.gwangju"], sid, "co2") for sid in (1, 2))
    ok = ~(np.isnan(s1) | np.isnan(s2))
    assert not np.allclose(s1[ok], s2[ok])


# --------------------------------------------------------------------------- exact rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 4000),
    sensors=st.integers(1, 5),
    gap=st.sampled_from([0.0, 0.01, 0.1, 0.5]),
    dup=st.sampled_from([0.0, 0.01, 0.2, 0.5]),
    out=st.sampled_from([0.0, 0.005, 0.3]),
    jitter=st.integers(0, 74),
    seed=st.integers(0, 2**32),
)
def test_rows_gives_exactly_that_many_rows(
    rows: int, sensors: int, gap: float, dup: float, out: float, jitter: int, seed: int
) -> None:
    spec = SensorSpec(
        "x.rows",
        timedelta(minutes=5),
        jitter=timedelta(seconds=jitter),
        sensors=sensors,
        columns=("a", "b"),
        gap_rate=gap,
        duplicate_rate=dup,
        outlier_rate=out,
    )
    series = generate(spec, START, rows=rows, seed=seed)
    t = series.truth
    assert series.frame.height == rows == t.rows
    assert t.unique_rows + t.missing_count == t.nominal_rows
    assert series.frame.select("sensor_id", "ts").n_unique() == t.unique_rows
    assert t.missing.select("sensor_id", "ts").n_unique() == t.missing_count
    keyed = series.frame.select("sensor_id", pl.col("ts").dt.round(spec.period))
    assert keyed.join(t.missing, on=["sensor_id", "ts"], how="inner").height == 0


def test_ten_thousand_rows_over_many_sensors() -> None:
    spec = SensorSpec("x.many", timedelta(seconds=30), sensors=7, columns=("v",))
    series = generate(spec, START, rows=10_000, seed=0)
    assert series.frame.height == 10_000
    counts = series.frame.group_by("sensor_id").len().get_column("len")
    assert counts.max() - counts.min() < 0.1 * counts.mean()


# --------------------------------------------------------------------------- truth JSON, demo


def test_truth_round_trips_through_json(demo: dict) -> None:
    truth = demo["airq.seoul"].truth
    back = Truth.from_dict(json.loads(json.dumps(truth.to_dict())))
    assert back.to_dict() == truth.to_dict()
    for name in ("missing", "gaps", "outliers", "duplicates"):
        assert getattr(back, name).equals(getattr(truth, name))
    assert back.period == timedelta(minutes=10) and back.jitter == timedelta(seconds=49)
    assert back.start == START and back.end == TWO_WEEKS


def test_write_demo_writes_readable_csv_and_truth(tmp_path: Path, demo: dict) -> None:
    files = write_demo(tmp_path / "demo", days=14, seed=7)
    assert [f.dataset for f in files] == [s.dataset for s in DEMO_SPECS]
    for f, spec in zip(files, DEMO_SPECS, strict=True):
        assert f.path == tmp_path / "demo" / f"{spec.dataset}.csv"
        assert f.truth_path == tmp_path / "demo" / f"{spec.dataset}.truth.json"
        assert f.ts_column == "ts" and f.key_columns == ("sensor_id", "position")
        assert f.value_columns == spec.columns and f.units == spec.unit_map
        header = f.path.read_text().splitlines()[:2]
        assert header[0] == ",".join(["ts", "sensor_id", "position", *spec.columns])
        datetime.strptime(header[1].split(",")[0], CSV_TS_FORMAT)
        back = pl.read_csv(f.path, try_parse_dates=True)
        assert back.schema["ts"] == pl.Datetime("us", "UTC")
        assert back.height == f.rows == f.truth.rows
        assert back.equals(demo[spec.dataset].frame)
        payload = json.loads(f.truth_path.read_text())
        assert payload["spec"]["dataset"] == spec.dataset
        assert payload["duplicate_count"] == f.truth.duplicate_count
        assert load_truth(f.truth_path).to_dict() == f.truth.to_dict()


# --------------------------------------------------------------------------- big CSV


def test_write_csv_rows_writes_exactly_n_rows(tmp_path: Path) -> None:
    n = 200_003
    a = write_csv_rows(tmp_path / "a.csv", n, series=7, seed=3, chunk_rows=70_000)
    b = write_csv_rows(tmp_path / "b.csv", n, series=7, seed=3)
    assert a.read_bytes() == b.read_bytes(), "chunk size does not change the file"
    lines = a.read_text().splitlines()
    assert len(lines) == n + 1
    assert lines[0] == "ts,sensor_id,value"
    assert lines[1].startswith("2026-01-05T00:00:00Z,1,")
    frame = pl.read_csv(a, try_parse_dates=True)
    assert frame.height == n
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame.select("sensor_id", "ts").n_unique() == n
    assert frame.get_column("ts").is_sorted()
    assert frame.get_column("value").std() > 1.0
    c = write_csv_rows(tmp_path / "c.csv", 1000, series=7, seed=4)
    assert c.read_text().splitlines()[1] != lines[1]
    empty = write_csv_rows(tmp_path / "e.csv", 0)
    assert empty.read_text() == "ts,sensor_id,value\n"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dataset": "no_dot"},
        {"dataset": "../escape.table"},
        {"period": timedelta(0)},
        {"period": timedelta(seconds=1.5)},
        {"jitter": timedelta(minutes=2)},  # >= a quarter of 5 min
        {"sensors": 0},
        {"columns": ()},
        {"columns": ("a", "a")},
        {"columns": ("ts",)},
        {"columns": ("a", "b"), "level": (1.0,)},
        {"units": {"nope": "ppm"}},
        {"gap_rate": 0.7},
        {"duplicate_rate": -0.1},
        {"noise_std": -1.0},
    ],
)
def test_bad_specs_are_refused(kwargs: dict) -> None:
    args = {"dataset": "x.y", "period": timedelta(minutes=5), **kwargs}
    with pytest.raises(SyntheticSpecError):
        SensorSpec(**args)


def test_generate_needs_exactly_one_of_end_and_rows() -> None:
    spec = DEMO_SPECS[2]
    with pytest.raises(SyntheticSpecError):
        generate(spec, START)
    with pytest.raises(SyntheticSpecError):
        generate(spec, START, TWO_WEEKS, rows=10)
    with pytest.raises(SyntheticSpecError):
        generate(spec, START, START)
    with pytest.raises(ValueError):  # SyntheticSpecError is a ValueError too
        generate(spec, START, rows=0)


def test_naive_start_is_utc_and_units_accept_a_mapping() -> None:
    spec = SensorSpec(
        "x.units", timedelta(hours=1), columns=("t", "h"), units={"t": "degC"}, gap_rate=0
    )
    assert spec.units == ("degC", "") and spec.unit_map == {"t": "degC", "h": ""}
    naive = generate(spec, datetime(2026, 1, 5), rows=24, seed=1)
    aware = generate(spec, datetime(2026, 1, 5, tzinfo=UTC), rows=24, seed=1)
    assert naive.frame.equals(aware.frame)
    assert spec.to_dict()["period"] == 3600.0
    json.dumps(spec.to_dict())
