"""Integration of fragmented series: spec, id, alignment at a reference frequency, names."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tsloom.errors import InvalidNameError, TsloomError, UnknownDatasetError
from tsloom.ingest import ingest_frame
from tsloom.integrate import (
    FeatureError,
    IntegrationError,
    IntegrationSpec,
    IntegrationSpecError,
    integrate,
    integration_id,
    resolve_feature,
    split_feature,
)
from tsloom.sources.files import ingest_file
from tsloom.sources.synthetic import DEMO_SPECS, generate

T0 = datetime(2026, 1, 5, tzinfo=UTC)
SPECS = {s.dataset: s for s in DEMO_SPECS}


def _ingest_synthetic(settings, *names: str) -> None:
    for name in names:
        spec = SPECS[name]
        data = generate(spec, T0 - timedelta(hours=12), T0 + timedelta(days=2, hours=12), seed=7)
        ingest_frame(data.frame, name, ts="ts", keys=["sensor_id", "position"], settings=settings)


def _ingest_series(settings, name: str, start: datetime, step: timedelta, values, jitter=None):
    n = len(values)
    ts = [start + i * step for i in range(n)]
    if jitter is not None:
        ts = [t + timedelta(seconds=int(j)) for t, j in zip(ts, jitter, strict=True)]
    frame = pl.DataFrame(
        {"ts": ts, "v": [float(v) for v in values]},
        schema={"ts": pl.Datetime("us", "UTC"), "v": pl.Float64},
    )
    ingest_frame(frame, name, ts="ts", settings=settings)


def _diffs(frame: pl.DataFrame) -> set:
    return set(frame["ts"].diff().drop_nulls().to_list())


# -- integration id --------------------------------------------------------------------


def test_integration_id_is_sha1_of_sorted_unique_names_joined_by_comma():
    expected = hashlib.sha1(b"airq.gwangju,airq.seoul").hexdigest()
    assert integration_id(["airq.seoul", "airq.gwangju"]) == expected
    assert integration_id(["airq.gwangju", "airq.seoul"]) == expected
    assert integration_id(("airq.seoul", "airq.gwangju", "airq.seoul")) == expected
    assert len(expected) == 40 and all(c in "0123456789abcdef" for c in expected)
    assert integration_id(["power.etth1"]) == hashlib.sha1(b"power.etth1").hexdigest()
    assert integration_id(["airq.seoul"]) != expected
    three = ["weather.station", "airq.seoul", "airq.gwangju"]
    assert integration_id(three) == integration_id(sorted(three, reverse=True))
    with pytest.raises(InvalidNameError):
        integration_id(["Airq.Seoul"])
    with pytest.raises(IntegrationSpecError):
        integration_id([])


def test_spec_id_ignores_options_but_spec_hash_does_not():
    a = IntegrationSpec.from_tables(["airq.seoul", "airq.gwangju"], "10min")
    b = IntegrationSpec.from_tables(["airq.gwangju", "airq.seoul"], "30min", start="2026-01-05")
    c = IntegrationSpec.from_dict(
        {
            "sources": [{"dataset": "airq.seoul", "keys": {"sensor_id": 1}}, "airq.gwangju"],
            "freq": "10min",
        }
    )
    assert a.integration_id == b.integration_id == c.integration_id
    assert a.integration_id == hashlib.sha1(b"airq.gwangju,airq.seoul").hexdigest()
    assert len({a.spec_hash(), b.spec_hash(), c.spec_hash()}) == 3
    explicit = IntegrationSpec.from_tables(
        ["airq.seoul", "airq.gwangju"], "600s", downsample="mean", gaps="interpolate"
    )
    assert explicit.spec_hash() == a.spec_hash()
    assert a.freq == timedelta(minutes=10)


def test_spec_from_yaml_round_trips_through_canonical_json():
    spec = IntegrationSpec.from_yaml(
        """
freq: 30min
start: 2026-01-05
end: 2026-01-07T00:00:00Z
gaps: ffill
sources:
  - airq.gwangju
  - dataset: airq.seoul
    columns: [co2, pm10]
    keys: {sensor_id: [2, 1, 2]}
    period: 10min
    downsample: max
"""
    )
    assert spec.freq == timedelta(minutes=30)
    assert spec.start == T0 and spec.end == T0 + timedelta(days=2)
    seoul = spec.sources[1]
    assert seoul.keys == {"sensor_id": (1, 2)} and seoul.period == timedelta(minutes=10)
    data = json.loads(spec.canonical_json())
    assert data["freq"] == "1800s" and data["sources"][1]["period"] == "600s"
    assert data["start"] == "2026-01-05T00:00:00+00:00"
    again = IntegrationSpec.from_dict(data)
    assert again == spec and again.spec_hash() == spec.spec_hash()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"sources": ["airq.seoul"], "freq": "ten minutes"}, "not a duration"),
        ({"sources": ["airq.seoul"], "freq": "0s"}, "must be positive"),
        ({"sources": ["airq.seoul"], "freq": "1h", "start": "2026-02", "end": "x"}, "time"),
        (
            {"sources": ["airq.seoul"], "freq": "1h", "start": "2026-01-02", "end": "2026-01-01"},
            "not before",
        ),
        ({"sources": [], "freq": "1h"}, "at least one source"),
        ({"sources": ["airq.seoul"], "freq": "1h", "downsample": "avg"}, "downsample"),
        ({"sources": ["airq.seoul"], "freq": "1h", "colour": "red"}, "colour"),
        ({"sources": [{"dataset": "airq.seoul", "columns": []}], "freq": "1h"}, "empty column"),
    ],
)
def test_bad_specs_raise_clear_errors(data, fragment):
    with pytest.raises(TsloomError) as err:
        IntegrationSpec.from_dict(data)
    assert fragment in str(err.value)
    assert err.value.hint


def test_freq_error_has_duration_hint():
    with pytest.raises(IntegrationSpecError) as err:
        IntegrationSpec.from_tables(["airq.seoul"], "fortnightly")
    assert "'fortnightly' is not a duration" in err.value.message
    assert "10min" in err.value.hint


# -- alignment of synthetic sources ----------------------------------------------------


@pytest.mark.parametrize(
    ("freq", "rows", "seoul_mode"), [("10min", 288, "align"), ("30min", 96, "downsample")]
)
def test_two_sources_of_different_periods_on_a_regular_grid(tsloom_home, freq, rows, seoul_mode):
    _ingest_synthetic(tsloom_home, "airq.gwangju", "airq.seoul")
    spec = IntegrationSpec.from_tables(
        ["airq.seoul", "airq.gwangju"], freq, start=T0, end=T0 + timedelta(days=2)
    )
    result = integrate(spec, settings=tsloom_home)
    frame = result.frame
    step = spec.freq
    assert frame.height == rows
    assert _diffs(frame) == {step}
    assert frame["ts"][0] == T0 and frame["ts"][-1] == T0 + timedelta(days=2) - step
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    expected = [f"airq.seoul.{c}[sensor_id={k}]" for k in (1, 2) for c in ("co2", "pm10", "pm2_5")]
    expected += [f"airq.gwangju.{c}[sensor_id={k}]" for k in (1, 2, 3) for c in ("co2", "pm10")]
    assert list(result.features) == expected
    assert frame.columns == ["ts", *expected]
    assert frame.null_count().sum_horizontal().item() == 0
    assert result.id == hashlib.sha1(b"airq.gwangju,airq.seoul").hexdigest()

    seoul, gwangju = result.report.sources
    assert seoul.periods == (timedelta(minutes=10),) and seoul.modes == (seoul_mode,)
    assert gwangju.periods == (timedelta(minutes=5),) and gwangju.modes == ("downsample",)
    assert all(s.period_estimated for s in seoul.series)
    # 2 days of readings per sensor minus the generator's gaps
    assert 0.9 * 2 * 2 * 144 < seoul.rows_in <= 2 * 2 * 144
    assert 0.9 * 3 * 2 * 288 < gwangju.rows_in <= 3 * 2 * 288
    assert seoul.filled == seoul.missing > 0  # the generator's gaps, interpolated

    # co2 levels of the two cities (~430 and ~450 ppm) come through the averaging intact
    assert 380 < frame["airq.gwangju.co2[sensor_id=1]"].median() < 480
    summary = result.to_dict(preview=3)
    json.dumps(summary)
    assert summary["integration_id"] == result.id and summary["shape"] == [rows, 13]
    assert summary["spec"]["freq"] == f"{int(step.total_seconds())}s"
    assert len(summary["preview"]) == 3 and summary["preview"][0]["ts"].startswith("2026-01-05")


def test_default_range_is_the_overlap_of_the_sources(tsloom_home):
    _ingest_synthetic(tsloom_home, "airq.seoul")
    _ingest_series(tsloom_home, "lab.late", T0, timedelta(minutes=10), np.arange(100))
    result = integrate(
        {"sources": ["airq.seoul", "lab.late"], "freq": "10min"}, settings=tsloom_home
    )
    assert result.frame["ts"][0] == T0
    assert result.frame["ts"][-1] == T0 + 99 * timedelta(minutes=10)
    assert result.frame.height == 100 and _diffs(result.frame) == {timedelta(minutes=10)}
    assert "lab.late.v" in result.features  # one series: no key label


# -- hand-made series ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        ("mean", lambda k: 10 * k + 4.5),
        ("min", lambda k: 10 * k),
        ("max", lambda k: 10 * k + 9),
        ("last", lambda k: 10 * k + 9),
        ("sum", lambda k: 100 * k + 45),
    ],
)
def test_downsampling_aggregates_each_bucket(tsloom_home, agg, expected):
    # 1-minute readings 0, 1, 2, …, jittered by up to ±10 s: bucket k holds readings 10k..10k+9
    rng = np.random.default_rng(3)
    n = 24 * 60
    _ingest_series(
        tsloom_home,
        "lab.fast",
        T0 - timedelta(hours=2),
        timedelta(minutes=1),
        np.arange(n) - 120,
        jitter=rng.integers(-10, 11, n),
    )
    spec = {
        "sources": [{"dataset": "lab.fast", "downsample": agg}],
        "freq": "10min",
        "start": T0,
        "end": T0 + timedelta(hours=6),
    }
    result = integrate(spec, settings=tsloom_home)
    assert result.frame.height == 36
    got = result.frame["lab.fast.v"].to_numpy()
    np.testing.assert_allclose(got, [expected(k) for k in range(36)])
    series = result.report.sources[0].series[0]
    assert series.mode == "downsample" and series.method == agg
    assert series.period == timedelta(minutes=1) and abs(series.rows_in - 360) <= 2


def test_upsampling_an_hourly_source_onto_30_minutes(tsloom_home):
    values = np.array([10.0, 20.0, 15.0, 30.0, 30.0, 0.0, 5.0, 7.0, 8.0, 9.0])
    _ingest_series(tsloom_home, "lab.hourly", T0, timedelta(hours=1), values)
    base = {"sources": ["lab.hourly"], "freq": "30min"}

    interp = integrate(base, settings=tsloom_home)
    v = interp.frame["lab.hourly.v"].to_numpy()
    assert interp.frame.height == 19 and _diffs(interp.frame) == {timedelta(minutes=30)}
    np.testing.assert_allclose(v[0::2], values)
    np.testing.assert_allclose(v[1::2], (values[:-1] + values[1:]) / 2)
    s = interp.report.sources[0].series[0]
    assert (s.mode, s.method, s.period) == ("upsample", "interpolate", timedelta(hours=1))
    assert s.rows_in == 10

    ffill = integrate({**base, "upsample": "ffill"}, settings=tsloom_home)
    np.testing.assert_allclose(ffill.frame["lab.hourly.v"].to_numpy()[1::2], values[:-1])

    # no up-sampling and gaps kept: every half hour stays empty
    kept = integrate({**base, "upsample": "none", "gaps": "keep"}, settings=tsloom_home)
    assert kept.frame.height == 19 and kept.frame["lab.hourly.v"].null_count() == 9
    assert kept.report.sources[0].missing == 9 and kept.report.sources[0].filled == 0
    # … or filled by the gap policy, or dropped (the grid then has holes)
    filled = integrate({**base, "upsample": "none"}, settings=tsloom_home)
    np.testing.assert_allclose(filled.frame["lab.hourly.v"].to_numpy(), v)
    assert filled.report.sources[0].filled == 9
    dropped = integrate({**base, "upsample": "none", "gaps": "drop"}, settings=tsloom_home)
    assert dropped.frame.height == 10 and _diffs(dropped.frame) == {timedelta(hours=1)}


def test_gaps_interpolated_inside_and_trimmed_at_the_edges(tsloom_home):
    # 10-min readings with a hole of 3 slots; a second source starting 30 min later
    vals = np.arange(30, dtype=float)
    keep = np.ones(30, bool)
    keep[10:13] = False
    ts = [T0 + i * timedelta(minutes=10) for i in range(30) if keep[i]]
    frame = pl.DataFrame(
        {"ts": ts, "v": vals[keep]}, schema={"ts": pl.Datetime("us", "UTC"), "v": pl.Float64}
    )
    ingest_frame(frame, "lab.holey", ts="ts", settings=tsloom_home)
    _ingest_series(
        tsloom_home, "lab.other", T0 + timedelta(minutes=30), timedelta(minutes=10), np.ones(40)
    )
    spec = {
        "sources": ["lab.holey", "lab.other"],
        "freq": "10min",
        "start": T0,
        "end": T0 + timedelta(hours=5),
    }
    result = integrate(spec, settings=tsloom_home)
    assert result.frame["ts"][0] == T0 + timedelta(minutes=30)  # leading rows trimmed
    assert result.frame.height == 27
    np.testing.assert_allclose(result.frame["lab.holey.v"].to_numpy(), vals[3:])
    holey = result.report.sources[0]
    assert holey.missing == 3 and holey.filled == 3
    assert result.report.grid_rows == 30 and result.report.rows_dropped == 3

    untrimmed = integrate({**spec, "gaps": "keep", "trim_edges": False}, settings=tsloom_home)
    assert untrimmed.frame.height == 30
    assert untrimmed.frame["lab.other.v"].null_count() == 3
    assert untrimmed.frame["lab.holey.v"].null_count() == 3


# -- key filters and names -------------------------------------------------------------


def test_key_filters_select_series_and_shape_names(tsloom_home):
    _ingest_synthetic(tsloom_home, "airq.seoul")
    window = {"freq": "10min", "start": T0, "end": T0 + timedelta(hours=6)}
    one = integrate(
        {
            "sources": [{"dataset": "airq.seoul", "columns": ["co2"], "keys": {"sensor_id": [2]}}],
            **window,
        },
        settings=tsloom_home,
    )
    assert one.features == ("airq.seoul.co2",)
    assert one.report.sources[0].series[0].key == {"sensor_id": 2, "position": "Seoul Jongno"}
    both = integrate(
        {
            "sources": [
                {"dataset": "airq.seoul", "columns": ["co2"], "keys": {"sensor_id": 1}},
                {"dataset": "airq.seoul", "columns": ["pm10"], "keys": {"sensor_id": 2}},
            ],
            **window,
        },
        settings=tsloom_home,
    )
    assert both.features == ("airq.seoul.co2[sensor_id=1]", "airq.seoul.pm10[sensor_id=2]")
    assert both.frame.height == 36
    # the filtered series are exactly the ones integrated on their own
    alone = integrate(
        {
            "sources": [{"dataset": "airq.seoul", "columns": ["pm10"], "keys": {"sensor_id": 2}}],
            **window,
        },
        settings=tsloom_home,
    )
    assert alone.features == ("airq.seoul.pm10",)
    assert both.frame["airq.seoul.pm10[sensor_id=2]"].to_list() == (
        alone.frame["airq.seoul.pm10"].to_list()
    )
    assert (
        both.frame["airq.seoul.co2[sensor_id=1]"].to_list() != one.frame["airq.seoul.co2"].to_list()
    )
    assert split_feature("airq.seoul.co2[sensor_id=1]") == ("airq.seoul", "co2", "sensor_id=1")

    with pytest.raises(IntegrationError, match="selected twice"):
        integrate(
            {"sources": ["airq.seoul", {"dataset": "airq.seoul", "columns": ["co2"]}], **window},
            settings=tsloom_home,
        )
    with pytest.raises(IntegrationError) as err:
        integrate(
            {"sources": [{"dataset": "airq.seoul", "keys": {"site": ["x"]}}], **window},
            settings=tsloom_home,
        )
    assert "not a key column" in err.value.message and "sensor_id" in err.value.hint
    with pytest.raises(IntegrationError) as err:
        integrate(
            {"sources": [{"dataset": "airq.seoul", "keys": {"sensor_id": [9]}}], **window},
            settings=tsloom_home,
        )
    assert "no rows" in err.value.message and "spans" in err.value.hint


def test_resolve_feature_accepts_unambiguous_short_forms():
    features = [
        "power.etth1.OT",
        "power.etth1.HUFL",
        "airq.seoul.co2[sensor_id=1]",
        "airq.seoul.co2[sensor_id=2]",
        "airq.gwangju.pm10",
    ]
    assert resolve_feature("OT", features) == "power.etth1.OT"
    assert resolve_feature("power.etth1.OT", features) == "power.etth1.OT"
    assert resolve_feature("etth1.HUFL", features) == "power.etth1.HUFL"
    assert resolve_feature("pm10", features) == "airq.gwangju.pm10"
    assert resolve_feature("co2[sensor_id=2]", features) == "airq.seoul.co2[sensor_id=2]"
    with pytest.raises(FeatureError) as err:
        resolve_feature("co2", features)
    assert "ambiguous" in err.value.message
    assert "airq.seoul.co2[sensor_id=1]" in err.value.message
    assert "airq.seoul.co2[sensor_id=2]" in err.value.message
    with pytest.raises(FeatureError) as err:
        resolve_feature("airq.seoul.co2", features)
    assert "ambiguous" in err.value.message
    with pytest.raises(FeatureError) as err:
        resolve_feature("OTT", features)
    assert "power.etth1.OT" in err.value.hint


# -- ETTh1 -----------------------------------------------------------------------------


def test_etth1_month_at_one_hour(tsloom_home, ett_dir):
    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date", settings=tsloom_home)
    spec = IntegrationSpec.from_tables(["power.etth1"], "1h", start="2016-07-01", end="2016-08-01")
    result = integrate(spec, settings=tsloom_home)
    assert result.frame.height == 24 * 31
    assert _diffs(result.frame) == {timedelta(hours=1)}
    assert result.features == tuple(
        f"power.etth1.{c}" for c in ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
    )
    assert resolve_feature("OT", result.features) == "power.etth1.OT"
    assert result.feature("OT") == "power.etth1.OT"
    raw = pl.read_csv(ett_dir / "ETTh1.csv").head(24 * 31)
    np.testing.assert_allclose(result.frame["power.etth1.OT"].to_numpy(), raw["OT"].to_numpy())
    s = result.report.sources[0].series[0]
    assert (s.mode, s.period, s.missing, s.rows_in) == ("align", timedelta(hours=1), 0, 744)
    assert result.id == hashlib.sha1(b"power.etth1").hexdigest()

    with pytest.raises(IntegrationError) as err:
        integrate(
            {"sources": [{"dataset": "power.etth1", "columns": ["OT", "temp"]}], "freq": "1h"},
            settings=tsloom_home,
        )
    assert "'temp'" in err.value.message and "HUFL" in err.value.hint


# -- errors ----------------------------------------------------------------------------


def test_unknown_dataset_suggests_close_names(tsloom_home):
    _ingest_series(tsloom_home, "lab.hourly", T0, timedelta(hours=1), np.arange(10))
    with pytest.raises(UnknownDatasetError) as err:
        integrate({"sources": ["lab.hourly", "lab.hourlx"], "freq": "1h"}, settings=tsloom_home)
    assert "lab.hourlx" in err.value.message and "lab.hourly" in err.value.hint


def test_sources_that_do_not_overlap(tsloom_home):
    _ingest_series(tsloom_home, "lab.jan", T0, timedelta(hours=1), np.arange(48))
    _ingest_series(
        tsloom_home, "lab.feb", T0 + timedelta(days=30), timedelta(hours=1), np.arange(48)
    )
    with pytest.raises(IntegrationError) as err:
        integrate({"sources": ["lab.jan", "lab.feb"], "freq": "1h"}, settings=tsloom_home)
    message = err.value.message
    assert "do not overlap" in message
    assert "lab.jan 2026-01-05T00:00:00+00:00 → 2026-01-06T23:00:00+00:00" in message
    assert "lab.feb 2026-02-04T00:00:00+00:00" in message


def test_nothing_left_after_gap_handling(tsloom_home):
    # hourly at :00 and hourly at :30 never share a 30-min slot when nothing is filled
    _ingest_series(tsloom_home, "lab.even", T0, timedelta(hours=1), np.arange(12))
    _ingest_series(
        tsloom_home, "lab.odd", T0 + timedelta(minutes=30), timedelta(hours=1), np.arange(12)
    )
    spec = {"sources": ["lab.even", "lab.odd"], "freq": "30min", "upsample": "none", "gaps": "drop"}
    with pytest.raises(IntegrationError) as err:
        integrate(spec, settings=tsloom_home)
    assert "nothing left after gap handling" in err.value.message and err.value.hint
    result = integrate({**spec, "gaps": "interpolate"}, settings=tsloom_home)
    assert result.frame.height == 22 and result.frame.null_count().sum_horizontal().item() == 0
