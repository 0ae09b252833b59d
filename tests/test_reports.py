"""Reports: self-contained HTML, JSON payloads, atomic writes, down-sampling, clean plots."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tsloom.errors import TsloomError
from tsloom.reports import (
    Page,
    Section,
    Table,
    Text,
    clean_page,
    downsample_xy,
    figure_html,
    minmax_indices,
    render_clean_report,
    to_jsonable,
    write_report,
)
from tsloom.reports import clean_report as clean_report_module
from tsloom.reports.plots import heatmap_figure, line_figure

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//"""
)


def assert_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not EXTERNAL.search(text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "@import" not in text
    for src in re.findall(r"""src\s*=\s*["']([^"']*)""", text):
        assert src.startswith("data:image/")
    assert "<svg" in text or "data:image/png" in text


# --------------------------------------------------------------------------- down-sampling


def test_minmax_downsampling_keeps_spikes_and_caps_points():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 200_003)
    y[123_457] = 50.0
    y[7] = -40.0
    idx = minmax_indices(y, 4000)
    assert idx.size <= 4000
    assert np.all(np.diff(idx) > 0)
    assert {0, 7, 123_457, y.size - 1} <= set(idx.tolist())
    x = np.arange(y.size)
    dx, dy = downsample_xy(x, y, 4000)
    assert dy.max() == 50.0 and dy.min() == -40.0
    np.testing.assert_array_equal(dy, y[dx])


def test_minmax_downsampling_keeps_gaps_and_short_series():
    y = np.sin(np.arange(50_000) / 100.0)
    y[20_000:21_000] = np.nan
    idx = minmax_indices(y, 3000)
    assert idx.size <= 3000
    assert np.isnan(y[idx]).any()  # the drawn line still breaks at the gap
    assert minmax_indices(np.arange(10.0), 4000).tolist() == list(range(10))


# --------------------------------------------------------------------------- page and JSON


def test_page_escapes_text_and_formats_cells():
    page = Page("<script>alert(1)</script>", summary=[("rows", 12345), ("share", 0.123456)])
    page.add(Section("A & B")).add(
        Text("x < y", "warning"),
        Table(["col", "value"], [["a", 1.5], ["b", None], ["c", float("nan")]]),
    )
    text = page.render()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "A &amp; B" in text and "x &lt; y" in text
    assert "12,345" in text and "0.1235" in text
    assert text.count("—") >= 2  # None and NaN cells


def test_to_jsonable_handles_numpy_datetimes_and_nan():
    payload = {
        1: np.float64(1.5),
        "arr": np.array([1.0, np.nan]),
        "when": dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC),
        "span": dt.timedelta(minutes=10),
        "frame": pl.DataFrame({"a": [1, 2]}),
        "flag": np.bool_(True),
        "inf": float("inf"),
    }
    out = to_jsonable(payload)
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "1": 1.5,
        "arr": [1.0, None],
        "when": "2024-01-02T03:04:00+00:00",
        "span": "0:10:00",
        "frame": [{"a": 1}, {"a": 2}],
        "flag": True,
        "inf": None,
    }
    with pytest.raises(TsloomError, match="cannot write a object"):
        to_jsonable({"x": object()})


def test_figure_html_is_inline_svg_or_png_fallback():
    fig = line_figure(
        np.datetime64("2024-01-01T00:00") + np.arange(100) * np.timedelta64(1, "h"),
        np.sin(np.arange(100.0)),
        title="sine wave",
    )
    svg = figure_html(fig)
    assert svg.startswith("<svg") and "viewBox" in svg and "sine wave" in svg
    assert_self_contained(svg)
    png = figure_html(fig, max_svg_bytes=100)
    assert png.startswith("<img") and "data:image/png;base64," in png


def test_heatmap_writes_the_coefficients_in_the_cells():
    svg = figure_html(heatmap_figure(["a", "b"], np.array([[1.0, -0.37], [-0.37, 1.0]])))
    assert svg.count(">-0.37<") == 2
    assert svg.count(">1.00<") >= 2  # the diagonal (the colour bar may say 1.00 too)
    assert "Pearson r" in svg


def test_write_report_is_atomic(tmp_path: Path):
    paths = write_report(tmp_path / "r", "one", {"a": 1}, "<html>first</html>")
    assert paths.json.read_text().strip() == '{\n  "a": 1\n}'
    with pytest.raises(TsloomError):  # the payload fails before anything is touched
        write_report(tmp_path / "r", "one", {"a": object()}, "<html>second</html>")
    assert paths.html.read_text() == "<html>first</html>"
    assert json.loads(paths.json.read_text()) == {"a": 1}
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["one.html", "one.json"]
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(TsloomError, match="invalid report name"):
            write_report(tmp_path / "r", bad, {}, "")


def test_write_report_cleans_up_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import tsloom.reports.html as html_module

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(html_module.os, "replace", broken)
    with pytest.raises(TsloomError, match="No space left"):
        write_report(tmp_path, "rep", {"a": 1}, "<html></html>")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- clean report


def _clean_frames() -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Two sensors, 10-minute data; 35 rows missing per sensor (inserted in `cleaned`) and
    one spike per sensor in co2 (flagged and clipped in `cleaned`)."""
    rng = np.random.default_rng(3)
    n = 3000
    parts = []
    for sid in (1, 2):
        y = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 144) + rng.normal(0, 0.3, n)
        y[500 + sid] = 80.0
        parts.append(
            pl.DataFrame(
                {
                    "ts": [T0 + dt.timedelta(minutes=10 * i) for i in range(n)],
                    "sensor_id": sid,
                    "co2": y,
                    "temp": y * 0.5,
                }
            )
        )
    full = pl.concat(parts).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    gap = np.zeros(n, dtype=bool)
    gap[800:830] = True
    gap[2000:2005] = True
    inserted = pl.Series("_inserted", np.concatenate([gap, gap]))
    raw = full.filter(~inserted)
    cleaned = full.with_columns(inserted, (pl.col("co2") > 50).alias("co2_anomaly"))
    cleaned = cleaned.with_columns(
        pl.when(pl.col("co2_anomaly")).then(14.0).otherwise(pl.col("co2")).alias("co2")
    )
    payload = {
        "dataset": "airq.seoul",
        "output_dataset": "airq.seoul_clean",
        "parent_version": 0,
        "rows_in": raw.height,
        "rows_out": cleaned.height,
        "steps": [
            {"step": "validate"},
            {"step": "dedup", "policy": "first", "exact": 0, "conflicts": 0},
            {"step": "period", "method": "auto"},
            {"step": "gaps", "inserted": 70},
            {"step": "anomalies", "method": "iqr", "k": 1.5, "flagged": {"co2": 2}},
            {"step": "treat", "method": "clip"},
            {"step": "impute", "method": "time", "filled": 70},
        ],
        "periods": [
            {"keys": {"sensor_id": s}, "period": "0:10:00", "period_s": 600.0, "confidence": c}
            for s, c in ((1, 0.98), (2, 0.31))
        ],
        "validation": {
            "ok": False,
            "n_rows": raw.height,
            "problems": [{"kind": "duplicate_ts", "count": 3, "examples": ["2024-01-01"]}],
        },
        "finished_at": dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
        "sizes": np.array([1, 2]),
    }
    return raw, cleaned, payload


def _segment(svg: str, start: str, end: str) -> str:
    i = svg.index(start)
    j = svg.index(end, i)
    return svg[i:j]


def test_clean_report_marks_inserted_and_flagged_points(tmp_path: Path):
    raw, cleaned, payload = _clean_frames()
    paths = render_clean_report(
        tmp_path, "clean-1", payload, raw, cleaned, keys=["sensor_id"], columns=["co2", "temp"]
    )
    text = paths.html.read_text()
    assert_self_contained(text)
    assert text.count("<svg") == 4  # 2 sensors x 2 columns
    # legends name the markers with their counts
    assert text.count("inserted / imputed (35)") == 4
    assert text.count("flagged anomaly (1)") == 2  # co2 only: temp has no flags
    assert "no anomaly flags for this column" in text
    # every inserted point is drawn as one marker in its own group, anomalies likewise
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    co2 = svgs[0]
    inserted = _segment(co2, 'id="inserted-points-', 'id="anomaly-points-')
    assert inserted.count("<use ") == 35
    anomalies = _segment(co2, 'id="anomaly-points-', 'id="legend')
    assert anomalies.count("<use ") == 1
    # tables: steps with parameters and counts, periods per key, validation problems
    assert "policy=first" in text and "flagged (co2=2)" in text
    assert "sensor_id" in text and "0:10:00" in text
    assert "confidence below 0.5" in text
    assert "duplicate_ts" in text
    # the JSON is the payload, made JSON-safe
    data = json.loads(paths.json.read_text())
    assert data["steps"] == payload["steps"]
    assert data["finished_at"] == "2024-03-01T00:00:00+00:00"
    assert data["sizes"] == [1, 2]


def test_clean_report_anomaly_marker_sits_at_the_raw_spike():
    raw, cleaned, payload = _clean_frames()
    page = clean_page(
        payload,
        raw,
        cleaned.filter(pl.col("sensor_id") == 1),
        keys=["sensor_id"],
        columns=["co2"],
    )
    text = page.render()
    svg = re.findall(r"<svg.*?</svg>", text, re.S)[0]
    # the y axis must reach the raw spike (80), not just the clipped value
    ticks = [float(t.replace("−", "-")) for t in re.findall(r">(−?\d+(?:\.\d+)?)</text>", svg)]
    assert max(ticks) >= 70


def test_clean_report_caps_series_and_survives_a_minimal_payload(tmp_path: Path):
    raw, cleaned, _ = _clean_frames()
    page = clean_page(
        {}, raw, cleaned.drop("co2_anomaly"), keys=["sensor_id"], columns=["co2"], max_series=1
    )
    text = page.render()
    assert "Showing the first 1 of 2 series" in text
    assert text.count("<svg") == 1
    assert "flagged anomaly" not in text
    no_keys = cleaned.filter(pl.col("sensor_id") == 1).drop("sensor_id")
    paths = render_clean_report(
        tmp_path, "minimal", {"dataset": "x.y"}, no_keys, no_keys, keys=[], columns=["temp"]
    )
    assert json.loads(paths.json.read_text()) == {"dataset": "x.y"}
    assert "all rows" in paths.html.read_text()


def test_clean_report_writes_nothing_when_rendering_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    raw, cleaned, payload = _clean_frames()

    def boom(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(clean_report_module, "raw_vs_cleaned_figure", boom)
    with pytest.raises(RuntimeError, match="drawing failed"):
        render_clean_report(
            tmp_path / "out", "c", payload, raw, cleaned, keys=["sensor_id"], columns=["co2"]
        )
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
