"""`tsloom clean` on lake datasets: a new dataset with lineage, and a report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tsloom.catalog import Catalog
from tsloom.clean import clean_dataset
from tsloom.cli import app
from tsloom.config import Settings
from tsloom.errors import PrepError, UnknownDatasetError
from tsloom.ingest import ingest_frame
from tsloom.lake import read_dataset
from tsloom.sources.files import ingest_file

runner = CliRunner()


def test_etth1_cleans_at_one_hour_with_a_report(tsloom_home: Settings, ett_dir: Path) -> None:
    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date")
    result = runner.invoke(
        app, ["clean", "power.etth1", "--from", "2017-01-01", "--to", "2017-03-01"]
    )
    assert result.exit_code == 0, result.output
    assert "period 1:00:00" in result.output
    html = next((tsloom_home.home / "reports" / "power.etth1").glob("clean-*.html"))
    page = html.read_text()
    assert "<svg" in page or "data:image/png" in page
    payload = json.loads(html.with_suffix(".json").read_text())
    assert payload["periods"][0]["period_s"] == 3600.0
    assert payload["parent_version"] == 0
    info = Catalog().get("power.etth1_clean")
    assert info.row_count == 59 * 24
    lineage = Catalog().lineage("power.etth1_clean")
    assert lineage.parent == "power.etth1" and lineage.parent_version == 0
    assert [s["step"] for s in lineage.steps][:3] == ["read", "validate", "dedup"]
    assert lineage.report_path == str(html.with_suffix(".json"))


def test_gaps_are_filled_and_rerun_replaces(tsloom_home: Settings) -> None:
    start = datetime(2022, 11, 22, 0, 5, 49, tzinfo=UTC)
    minutes = [0, 10, 40, 50, 60, 70, 80, 90, 100, 110, 120]  # 00:25:49 and 00:35:49 missing
    frame = pl.DataFrame(
        {"ts": [start + timedelta(minutes=m) for m in minutes], "co2": [460.0 + m for m in minutes]}
    )
    ingest_frame(frame, "airq.co2", ts="ts", units={"co2": "ppm"})
    run = clean_dataset("airq.co2", output="airq.co2_fixed")
    cleaned = read_dataset("airq.co2_fixed")
    inserted = [start + timedelta(minutes=m) for m in (20, 30)]
    assert set(inserted) <= set(cleaned["ts"].to_list())
    assert cleaned.filter(pl.col("ts").is_in(inserted))["co2"].to_list() == [480.0, 490.0]
    assert run.result.gaps.inserted == 2
    assert Catalog().get("airq.co2_fixed").columns[0].unit == "ppm"
    again = clean_dataset("airq.co2", output="airq.co2_fixed")
    assert again.written.lake_version == run.written.lake_version + 1
    assert read_dataset("airq.co2_fixed").height == cleaned.height


def test_bad_inputs_are_clear_and_write_nothing(tsloom_home: Settings) -> None:
    with pytest.raises(UnknownDatasetError):
        clean_dataset("airq.nothing")
    two = pl.DataFrame(
        {
            "ts": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 10, tzinfo=UTC)],
            "v": [1.0, 2.0],
        }
    )
    ingest_frame(two, "plant.tiny", ts="ts")
    with pytest.raises(PrepError, match="cannot estimate a period"):
        clean_dataset("plant.tiny")
    assert Catalog().find("plant.tiny_clean") is None
    hours = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(48)]
    empty = pl.DataFrame(
        {"ts": hours, "v": [None] * 48, "w": [1.0] * 48}, schema_overrides={"v": pl.Float64}
    )
    ingest_frame(empty, "plant.dead", ts="ts")
    with pytest.raises(PrepError, match="'v' is entirely missing"):
        clean_dataset("plant.dead")
    assert Catalog().find("plant.dead_clean") is None
    assert not (tsloom_home.home / "reports" / "plant.dead").exists() or not list(
        (tsloom_home.home / "reports" / "plant.dead").glob("*.html")
    )
