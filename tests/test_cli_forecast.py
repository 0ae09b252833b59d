"""`tsloom integrate` and `tsloom train` from the outside, on ETTh1 and synthetic sources."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from tsloom.cli import app
from tsloom.config import Settings
from tsloom.errors import TsloomError
from tsloom.ingest import ingest_frame
from tsloom.integrate import integration_id
from tsloom.names import path_segment
from tsloom.sources.files import ingest_file
from tsloom.sources.synthetic import DEMO_SPECS, generate

runner = CliRunner()


def test_integrate_prints_the_id_and_saves(tsloom_home: Settings, ett_dir: Path, tmp_path) -> None:
    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date")
    out = tmp_path / "frame.parquet"
    result = runner.invoke(
        app,
        [
            "integrate",
            "--tables",
            "power.etth1",
            "--freq",
            "1h",
            "--from",
            "2017-01-01",
            "--to",
            "2017-01-08",
            "--save",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert integration_id(["power.etth1"]) in result.output
    assert "168 rows × 7 features" in result.output
    assert pl.read_parquet(out).shape == (168, 8)


def test_train_with_flags_prints_ids_and_path(tsloom_home: Settings, ett_dir: Path) -> None:
    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date")
    args = [
        "train",
        "--tables",
        "power.etth1",
        "--target",
        "OT",
        "--freq",
        "1h",
        "--input-width",
        "24h",
        "--output-width",
        "6h",
        "--method",
        "dlinear",
        "--epochs",
        "2",
        "--from",
        "2016-07-01",
        "--to",
        "2016-09-01",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["integration_id"] == integration_id(["power.etth1"])
    assert re.fullmatch(r"[0-9a-f]{40}", summary["param_id"])
    assert summary["target"] == "power.etth1.OT"
    assert summary["model_path"].endswith(
        f"/{summary['integration_id']}/power.etth1.OT/dlinear/{summary['param_id']}"
    )
    assert summary["metrics"]["rmse"] > 0
    again = json.loads(runner.invoke(app, args).output)
    assert again["param_id"] == summary["param_id"] and again["metrics"] == summary["metrics"]


def test_train_from_a_params_file_on_two_periods(tsloom_home: Settings, tmp_path) -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    for spec in DEMO_SPECS[:2]:  # 5 min and 10 min ± 49 s
        frame = generate(spec, start, start + timedelta(days=2), seed=2).frame
        ingest_frame(frame, spec.dataset, ts="ts", keys=["sensor_id", "position"])
    params = tmp_path / "params.yaml"
    params.write_text(
        "tables: [airq.gwangju, airq.seoul]\nfreq: 10min\n"
        "target: airq.seoul.co2[sensor_id=1]\n"
        "features: ['airq.seoul.co2[sensor_id=1]', 'airq.gwangju.pm10[sensor_id=2]']\n"
        "input_width: 2h\noutput_width: 30min\nmethod: vanilla\nepochs: 2\nhidden_size: 8\n"
    )
    result = runner.invoke(app, ["train", "--params", str(params), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["integration_id"] == integration_id(["airq.seoul", "airq.gwangju"])
    assert "/airq.seoul.co2-sensor_id-1-" in summary["model_path"]


def test_ambiguous_target_is_an_error_naming_the_candidates(tsloom_home: Settings) -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    frame = generate(DEMO_SPECS[1], start, start + timedelta(days=1), seed=2).frame
    ingest_frame(frame, "airq.seoul", ts="ts", keys=["sensor_id", "position"])
    result = runner.invoke(
        app,
        [
            "train",
            "--tables",
            "airq.seoul",
            "--target",
            "co2",
            "--freq",
            "10min",
            "--input-width",
            "1h",
            "--output-width",
            "10min",
        ],
    )
    assert isinstance(result.exception, TsloomError)
    assert "co2[sensor_id=1]" in str(result.exception)


def test_path_segments_are_safe_and_distinct() -> None:
    assert path_segment("power.etth1.OT") == "power.etth1.OT"
    a, b = path_segment("x.y.co2[sensor_id=1]"), path_segment("x.y.co2[sensor_id-1]")
    assert a != b and "/" not in a and "[" not in a
    assert path_segment("../..").startswith("x-")
    assert path_segment("a/b") != "a/b"


def test_integration_specs_are_stored_under_their_id(tsloom_home: Settings, ett_dir: Path) -> None:
    from tsloom.integrate.store import integration_specs

    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date")
    base = ["integrate", "--tables", "power.etth1", "--from", "2017-01-01", "--to", "2017-01-03"]
    for freq in ("1h", "1h", "2h"):
        assert runner.invoke(app, [*base, "--freq", freq]).exit_code == 0
    specs = integration_specs(integration_id(["power.etth1"]))
    assert [s["spec"]["freq"] for s in specs] == ["3600s", "7200s"]
    assert specs[0]["features"][-1] == "power.etth1.OT"
