"""Dataset analysis: statistics, period and season, correlation, problem columns, report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tsloom.analyze import analysis_page, analyze_dataset, analyze_frame, write_analysis_report
from tsloom.config import Settings
from tsloom.errors import PrepError, TsloomError

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def _hourly(n: int, **cols) -> pl.DataFrame:
    ts = pl.Series("ts", [T0 + dt.timedelta(hours=i) for i in range(n)])
    return pl.DataFrame(
        [ts.cast(pl.Datetime("us", "UTC")), *[pl.Series(k, v) for k, v in cols.items()]]
    )


def _daily_wave(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 5 + 2 * np.sin(np.arange(n) * 2 * np.pi / 24) + rng.normal(0, 0.3, n)


def test_etth1_analysis_and_report(tsloom_home: Settings, ett_dir: Path):
    from tsloom.sources.files import ingest_file

    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date")
    result = analyze_dataset("power.etth1", start="2016-07-01", end="2016-07-15")
    assert result.rows == 14 * 24 and result.series_total == 1
    s = result.series[0]
    assert s.period is not None and s.period.period == dt.timedelta(hours=1)
    assert s.season == 24  # a daily season of hourly data
    assert s.ok_columns == ETT_COLUMNS and s.inserted == 0
    ot = s.column("OT")
    assert ot.stats["count"] == 336 and ot.stats["missing_share"] == 0.0
    assert ot.decomposition is not None and ot.decomposition.season == 24
    np.testing.assert_allclose(
        ot.decomposition.trend + ot.decomposition.seasonal + ot.decomposition.resid,
        ot.decomposition.observed,
    )
    assert ot.stationarity is not None and ot.autocorrelation is not None
    assert ot.autocorrelation.acf.size == 49  # lags 0..2 seasons

    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["dataset"] == "power.etth1" and data["problems"] == []
    js = data["series"][0]
    assert js["season"]["duration_s"] == 86_400 and js["period"]["period_s"] == 3600
    corr = np.array(js["correlation"]["matrix"])
    assert js["correlation"]["columns"] == ETT_COLUMNS
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr, corr.T)
    assert np.all(np.abs(corr) <= 1 + 1e-12)
    assert corr[0, 2] > 0.8  # HUFL and MUFL move together
    assert len(js["cross_correlation"]) == 21
    assert all(abs(c["best_value"]) <= 1 for c in js["cross_correlation"])
    preview = js["columns"]["OT"]["preview"]
    assert len(preview["ts"]) == len(preview["value"]) <= 500
    assert preview["ts"][0] == "2016-07-01T00:00:00Z"
    assert js["columns"]["OT"]["stationarity"]["verdict"] in {
        "stationary",
        "non-stationary",
        "trend-stationary",
        "difference-stationary",
    }

    home = tsloom_home.home / "reports" / "power.etth1"
    taken = home / f"analysis-{result.created_at:%Y%m%dT%H%M%SZ}.json"
    home.mkdir(parents=True)
    taken.write_text("{}")  # an earlier report in the same second is not overwritten
    paths = write_analysis_report(result)
    assert paths.json == taken.with_name(taken.stem + "-2.json")
    assert paths.html == paths.json.with_suffix(".html") and taken.read_text() == "{}"
    assert json.loads(paths.json.read_text())["series"][0]["season"]["steps"] == 24
    text = paths.html.read_text()
    assert "<svg" in text and "http://" not in text and "https://" not in text
    assert "Pearson correlation" in text and "STL decomposition" in text

    with pytest.raises(TsloomError, match="'nope'"):
        analyze_dataset("power.etth1", columns=["OT", "nope"])
    with pytest.raises(TsloomError, match="no rows"):
        analyze_dataset("power.etth1", start="2030-01-01")
    with pytest.raises(TsloomError, match="unknown dataset"):
        analyze_dataset("power.ett")


def test_constant_and_missing_columns_are_reported_not_fatal():
    n = 24 * 8
    df = _hourly(
        n,
        a=_daily_wave(n, 1),
        b=_daily_wave(n, 2) * 3,
        flat=np.full(n, 7.0),
        empty=pl.Series([None] * n, dtype=pl.Float64),
    )
    result = analyze_frame(df, dataset="x.y")
    s = result.series[0]
    assert [c.status for c in s.columns] == ["ok", "ok", "constant", "all_missing"]
    assert s.column("flat").message == "column 'flat' is constant (7)"
    assert s.column("empty").stats["missing_share"] == 1.0
    assert s.correlation is not None
    assert s.correlation.get_column("column").to_list() == ["a", "b"]  # bad columns left out
    assert [(p.x, p.y) for p in s.cross_correlations] == [("a", "b")]
    problems = {p["column"]: p["status"] for p in result.problems}
    assert problems == {"flat": "constant", "empty": "all_missing"}
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["series"][0]["columns"]["flat"]["status"] == "constant"
    assert data["series"][0]["columns"]["flat"]["density"] is None
    text = analysis_page(result).render()
    assert "Not analysed: column &#x27;flat&#x27; is constant (7)." in text
    assert "entirely missing" in text


def test_nothing_analysable_is_a_clear_error():
    n = 100
    with pytest.raises(PrepError, match="nothing to analyse: column 'flat' is constant"):
        analyze_frame(_hourly(n, flat=np.full(n, 1.0)))
    with pytest.raises(PrepError, match="entirely missing"):
        analyze_frame(_hourly(n, e=pl.Series([None] * n, dtype=pl.Float64)))
    with pytest.raises(PrepError, match="5 observed values"):
        analyze_frame(_hourly(5, v=[1.0, 2.0, 3.0, 2.0, 1.0]))
    with pytest.raises(PrepError, match="unknown column"):
        analyze_frame(_hourly(n, v=np.arange(n, dtype=float)), columns=["w"])
    with pytest.raises(PrepError, match="not numeric"):
        analyze_frame(_hourly(n, v=np.arange(n, dtype=float), s=["x"] * n), columns=["v", "s"])


def test_gaps_duplicates_keys_and_series_cap():
    n = 24 * 6
    parts = []
    for k in ("a", "b", "c"):
        df = _hourly(n, v=_daily_wave(n, ord(k))).with_columns(pl.lit(k).alias("site"))
        parts.append(df.filter((pl.int_range(pl.len()) % 10) != 3))  # 10% missing
    frame = pl.concat([*parts, parts[0].head(5)])  # five duplicated readings in site a
    result = analyze_frame(frame, keys=["site"], max_series=2)
    assert result.series_total == 3 and [s.keys for s in result.series] == [
        {"site": "a"},
        {"site": "b"},
    ]
    a = result.series[0]
    assert a.duplicates == 5 and a.period.period == dt.timedelta(hours=1)
    # rows 3, 13, …, 143 are missing: the last one ends the series, 14 gaps are filled
    assert (a.grid_rows, a.inserted) == (143, 14)
    col = a.column("v")
    assert col.stats["missing_share"] == pytest.approx(a.inserted / a.grid_rows)
    assert col.decomposition is not None
    text = analysis_page(result).render()
    assert "Only the first 2 of 3 series" in text and "Series site=b" in text


def test_long_season_is_decomposed_on_block_means():
    n = 288 * 4  # four days of 5-minute readings: a daily season of 288 steps
    rng = np.random.default_rng(5)
    ts = pl.Series("ts", [T0 + dt.timedelta(minutes=5 * i) for i in range(n)])
    y = 400 + 50 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 2, n)
    df = pl.DataFrame([ts.cast(pl.Datetime("us", "UTC")), pl.Series("co2", y)])
    s = analyze_frame(df).series[0]
    assert s.season == 288
    d = s.column("co2").decomposition
    assert d is not None and (d.factor, d.season, d.points) == (3, 96, n // 3)
    assert d.to_dict()["seasonal_strength"] > 0.9
    np.testing.assert_allclose(d.observed[:2], [y[0:3].mean(), y[3:6].mean()])
