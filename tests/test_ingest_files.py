"""File ingestion: ETT as it is, three formats, time zones, and bad input that writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tsloom.catalog import Catalog
from tsloom.cli import app
from tsloom.config import Settings
from tsloom.errors import InputDataError, UnknownDatasetError
from tsloom.lake import dataset_uri, read_dataset
from tsloom.sources.files import ingest_file

runner = CliRunner()


def test_etth1_ingests_as_it_is(tsloom_home: Settings, ett_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["ingest", "file", str(ett_dir / "ETTh1.csv"), "--dataset", "power.etth1", "--ts", "date"],
    )
    assert result.exit_code == 0, result.output
    assert "17,420 new rows" in result.output
    shown = runner.invoke(app, ["datasets", "show", "power.etth1"])
    assert shown.exit_code == 0, shown.output
    assert "17,420 rows from 2016-07-01 00:00:00 to 2018-06-26 19:00:00 UTC" in shown.output
    assert "partitions year=/month=/day=: 726 days" in shown.output
    as_json = json.loads(runner.invoke(app, ["datasets", "show", "power.etth1", "--json"]).output)
    assert as_json["row_count"] == 17420
    assert {k: as_json["partitions"][-1][k] for k in ("year", "month", "day")} == {
        "year": 2018,
        "month": 6,
        "day": 26,
    }
    assert as_json["partitions"][-1]["rows"] == 20  # 00:00 … 19:00
    again = runner.invoke(
        app,
        ["ingest", "file", str(ett_dir / "ETTh1.csv"), "--dataset", "power.etth1", "--ts", "date"],
    )
    assert "0 new rows" in again.output and "17,420 already in the lake" in again.output


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_three_formats_give_the_same_rows(tsloom_home: Settings, tmp_path: Path, fmt: str) -> None:
    frame = pl.DataFrame(
        {
            "event_time": ["2022-11-22T00:05:49Z", "2022-11-22T00:15:49Z", "2022-11-22T00:45:49Z"],
            "ss_id": [2, 2, 2],
            "co2": [460.0, 470.5, 480.0],
        }
    )
    path = tmp_path / f"co2.{fmt}"
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "jsonl": frame.write_ndjson}[fmt](path)
    result = ingest_file(path, "airq.co2", ts="event_time", keys=["ss_id"], units={"co2": "ppm"})
    assert result.rows_written == 3
    back = read_dataset("airq.co2")
    assert back["ts"].to_list()[0] == datetime(2022, 11, 22, 0, 5, 49, tzinfo=UTC)
    assert back["co2"].to_list() == [460.0, 470.5, 480.0]
    assert Catalog().get("airq.co2").columns[1].unit == "ppm"


def test_local_time_zone_and_epoch_milliseconds(tsloom_home: Settings, tmp_path: Path) -> None:
    local = tmp_path / "local.csv"
    local.write_text("when,v\n2022-07-01 12:00:00,1\n2022-07-01 13:00:00,2\n")
    ingest_file(local, "site.berlin", ts="when", tz="Europe/Berlin")
    assert read_dataset("site.berlin")["ts"][0] == datetime(2022, 7, 1, 10, tzinfo=UTC)
    epoch = tmp_path / "epoch.jsonl"
    epoch.write_text('{"event_time":1669102545000,"input_data":460.0}\n')
    result = ingest_file(epoch, "site.epoch", ts="event_time")
    assert result.ts_unit_guessed == "ms"
    assert read_dataset("site.epoch")["ts"][0] == datetime(2022, 11, 22, 7, 35, 45, tzinfo=UTC)


def test_custom_timestamp_format(tsloom_home: Settings, tmp_path: Path) -> None:
    path = tmp_path / "eu.csv"
    path.write_text("t;v\n22/11/2022 00:05;1,5\n")
    with pytest.raises(InputDataError):
        ingest_file(path, "site.eu", ts="t", separator=";")
    path.write_text("t;v\n22/11/2022 00:05;1.5\n")
    ingest_file(path, "site.eu", ts="t", ts_format="%d/%m/%Y %H:%M", separator=";")
    assert read_dataset("site.eu")["ts"][0] == datetime(2022, 11, 22, 0, 5, tzinfo=UTC)


def _nothing_written(settings: Settings, dataset: str) -> None:
    assert Catalog().find(dataset) is None
    assert not Path(dataset_uri(settings, dataset)).exists()


BAD_FILES = {
    "bad_timestamp": (
        "date,OT\n2016-07-01 00:00:00,1.0\n2016-07-01 01:00:00,2.0\nyesterday,3.0\n",
        r"bad\.csv, line 4, column 'date': cannot parse timestamp 'yesterday'",
    ),
    "non_numeric": (
        "date,OT\n2016-07-01 00:00:00,1.0\n2016-07-01 01:00:00,hot\n",
        r"bad\.csv, line 3, column 'OT': value 'hot' is not a number",
    ),
    "missing_ts": ("time,OT\n2016-07-01 00:00:00,1.0\n", r"timestamp column 'date' not found"),
    "header_only": ("date,OT\n", r"has no rows"),
    "empty_key": (
        "date,site,OT\n2016-07-01 00:00:00,a,1.0\n2016-07-01 01:00:00,,2.0\n",
        r"line 3: key column 'site' is empty",
    ),
    "empty_ts": (
        "date,OT\n2016-07-01 00:00:00,1.0\n,2.0\n",
        r"line 3: timestamp column 'date' is empty",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_name_the_place_and_write_nothing(
    tsloom_home: Settings, tmp_path: Path, case: str
) -> None:
    content, message = BAD_FILES[case]
    path = tmp_path / "bad.csv"
    path.write_text(content)
    keys = ["site"] if case == "empty_key" else []
    with pytest.raises(InputDataError, match=message) as err:
        ingest_file(path, "power.bad", ts="date", keys=keys)
    assert err.value.hint
    _nothing_written(tsloom_home, "power.bad")


def test_non_numeric_far_down_the_file(tsloom_home: Settings, tmp_path: Path) -> None:
    lines = ["date,OT"] + [f"2016-07-01 00:{m:02d}:00,{m}.5" for m in range(60)]
    lines += [f"2016-07-02 {h:02d}:00:00,{h}" for h in range(24)] * 500
    lines[12_001] = "2016-07-03 00:00:00,n/a?"
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputDataError, match=r"line 12002, column 'OT': value 'n/a\?'"):
        ingest_file(path, "power.bad", ts="date")
    _nothing_written(tsloom_home, "power.bad")


def test_empty_file(tsloom_home: Settings, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputDataError, match="is empty"):
        ingest_file(path, "power.empty", ts="date")


def test_bad_data_for_existing_dataset_keeps_its_rows(
    tsloom_home: Settings, tmp_path: Path
) -> None:
    good = tmp_path / "good.csv"
    good.write_text("date,OT\n2016-07-01 00:00:00,1.0\n")
    ingest_file(good, "power.keep", ts="date")
    bad = tmp_path / "bad.csv"
    bad.write_text("date,OT\n2016-07-01 01:00:00,2.0\n2016-07-01 02:00:00,oops\n")
    with pytest.raises(InputDataError):
        ingest_file(bad, "power.keep", ts="date")
    assert read_dataset("power.keep")["OT"].to_list() == [1.0]
    assert Catalog().get("power.keep").lake_version == 0


def test_unknown_dataset_is_a_clear_error(tsloom_home: Settings) -> None:
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'power\.nothing'"):
        read_dataset("power.nothing")


def test_cli_prints_error_and_hint_not_a_traceback(tsloom_home: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("date,OT\nnot-a-date,1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsloom.cli",
            "ingest",
            "file",
            str(path),
            "--dataset",
            "power.x",
            "--ts",
            "date",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
