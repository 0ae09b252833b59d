"""The Delta lake: idempotent, atomic appends; reads by time, columns, keys and version."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tsloom.catalog import Catalog
from tsloom.config import Settings
from tsloom.errors import SchemaChangeError, TsloomError
from tsloom.ingest import ingest_frame
from tsloom.lake import dataset_uri, read_dataset
from tsloom.lake import table as lake_table


def readings(start: datetime, n: int, sensors: tuple[int, ...] = (1, 2), step_min: int = 10):
    rows = []
    for i in range(n):
        for s in sensors:
            rows.append(
                {"time": start + timedelta(minutes=step_min * i), "sensor": s, "co2": 400.0 + i + s}
            )
    return pl.DataFrame(rows)


START = datetime(2022, 11, 21, 22, 0, tzinfo=UTC)


def test_append_is_idempotent_and_partitioned(tsloom_home: Settings) -> None:
    frame = readings(START, 36)  # 6 hours over two days, two sensors
    first = ingest_frame(frame, "airq.gwangju", ts="time", keys=["sensor"])
    assert first.rows_written == 72
    again = ingest_frame(frame, "airq.gwangju", ts="time", keys=["sensor"])
    assert again.rows_written == 0
    assert again.rows_already_present == 72
    assert again.lake_version == first.lake_version
    info = Catalog().get("airq.gwangju")
    assert info.row_count == 72
    assert info.ts_min == START
    assert info.ts_max == START + timedelta(minutes=350)
    parts = sorted(
        p.relative_to(Path(dataset_uri(tsloom_home, "airq.gwangju"))).as_posix()
        for p in Path(dataset_uri(tsloom_home, "airq.gwangju")).glob("year=*/month=*/day=*")
    )
    assert parts == ["year=2022/month=11/day=21", "year=2022/month=11/day=22"]


def test_overlapping_batch_adds_only_new_rows(tsloom_home: Settings) -> None:
    ingest_frame(readings(START, 10), "airq.gwangju", ts="time", keys=["sensor"])
    result = ingest_frame(readings(START, 15), "airq.gwangju", ts="time", keys=["sensor"])
    assert result.rows_written == 10
    frame = read_dataset("airq.gwangju")
    assert frame.height == 30
    assert frame.select("ts", "sensor").is_duplicated().sum() == 0


def test_duplicate_keys_in_one_batch_keep_the_first(tsloom_home: Settings) -> None:
    frame = pl.DataFrame(
        {
            "time": ["2022-11-22 00:05:49", "2022-11-22 00:05:49", "2022-11-22 00:15:49"],
            "co2": [460.0, 999.0, 470.0],
        }
    )
    result = ingest_frame(frame, "airq.co2", ts="time")
    assert (result.rows_written, result.duplicates_dropped) == (2, 1)
    assert read_dataset("airq.co2")["co2"].to_list() == [460.0, 470.0]


def test_read_by_range_columns_keys_and_version(tsloom_home: Settings) -> None:
    v0 = ingest_frame(readings(START, 6), "airq.gwangju", ts="time", keys=["sensor"])
    v1 = ingest_frame(
        readings(START + timedelta(hours=1), 6, sensors=(3,)),
        "airq.gwangju",
        ts="time",
        keys=["sensor"],
    )
    assert v1.lake_version == v0.lake_version + 1
    window = read_dataset(
        "airq.gwangju", start=START + timedelta(minutes=20), end=START + timedelta(minutes=40)
    )
    assert window["ts"].to_list() == [START + timedelta(minutes=m) for m in (20, 30)] * 2
    only3 = read_dataset("airq.gwangju", keys={"sensor": 3}, columns=["co2"])
    assert only3.columns == ["ts", "sensor", "co2"]
    assert set(only3["sensor"]) == {3} and only3.height == 6
    assert read_dataset("airq.gwangju", version=v0.lake_version).height == 12
    assert read_dataset("airq.gwangju").height == 18
    with pytest.raises(TsloomError, match="version 9 does not exist"):
        read_dataset("airq.gwangju", version=9)
    with pytest.raises(TsloomError, match="no column"):
        read_dataset("airq.gwangju", columns=["pm10"])
    with pytest.raises(TsloomError, match="not a key column"):
        read_dataset("airq.gwangju", keys={"co2": 1})


def test_new_column_is_nullable_and_type_change_refused(tsloom_home: Settings) -> None:
    ingest_frame(readings(START, 3), "airq.gwangju", ts="time", keys=["sensor"])
    wider = readings(START + timedelta(hours=2), 3).with_columns(pm10=pl.lit(12.5))
    result = ingest_frame(wider, "airq.gwangju", ts="time", keys=["sensor"])
    assert result.new_columns == ("pm10",)
    frame = read_dataset("airq.gwangju")
    assert frame["pm10"].null_count() == 6 and frame["pm10"].drop_nulls().to_list() == [12.5] * 6
    assert "pm10" in Catalog().get("airq.gwangju").value_columns
    as_text = readings(START + timedelta(hours=5), 3).with_columns(pl.col("sensor").cast(pl.String))
    with pytest.raises(SchemaChangeError, match="'sensor' is Int64 in the lake but String"):
        ingest_frame(as_text, "airq.gwangju", ts="time", keys=["sensor"])
    with pytest.raises(SchemaChangeError, match="keyed by"):
        ingest_frame(readings(START, 3), "airq.gwangju", ts="time", keys=[])
    assert read_dataset("airq.gwangju").height == 12


def test_failed_write_leaves_previous_version(tsloom_home: Settings) -> None:
    ingest_frame(readings(START, 3), "airq.gwangju", ts="time", keys=["sensor"])
    uri = dataset_uri(tsloom_home, "airq.gwangju")
    before = DeltaTable(uri).version()
    good = lake_table.with_partitions(
        read_dataset("airq.gwangju").with_columns(pl.col("ts") + timedelta(days=3))
    ).to_arrow()

    def batches_then_crash():
        yield good.to_batches()[0]
        raise RuntimeError("disk pulled out mid-write")

    with pytest.raises(Exception, match="disk pulled out"):
        lake_table.write_batches(uri, batches_then_crash(), {}, create=False)
    assert DeltaTable(uri).version() == before
    assert read_dataset("airq.gwangju").height == 6


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta, UTC
    import polars as pl
    from tsloom.ingest import ingest_frame
    n = int(sys.argv[1])
    start = datetime(2023, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame({"time": pl.datetime_range(start, start + timedelta(seconds=n - 1),
                          "1s", eager=True), "v": pl.int_range(0, n, eager=True).cast(pl.Float64)})
    print("ready", flush=True)
    ingest_frame(frame, "plant.big", ts="time")
    print("done", flush=True)
    """
)


def test_killed_writer_leaves_all_or_nothing(tsloom_home: Settings) -> None:
    seed = pl.DataFrame({"time": [START + timedelta(hours=h) for h in range(6)], "v": [1.0] * 6})
    ingest_frame(seed, "plant.big", ts="time")
    n = 2_000_000
    env = {**os.environ, "TSLOOM_HOME": str(tsloom_home.home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(n)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    rows = DeltaTable(dataset_uri(tsloom_home, "plant.big")).to_pyarrow_table(columns=["ts"])
    assert rows.num_rows in (6, 6 + n)


def _ingest_same(home: str, path: str) -> int:
    os.environ["TSLOOM_HOME"] = home
    from tsloom.sources.files import ingest_file

    return ingest_file(path, "plant.shared", ts="time", keys=["sensor"]).rows_written


def test_concurrent_ingestion_of_same_file_writes_once(tsloom_home: Settings, tmp_path) -> None:
    path = tmp_path / "readings.csv"
    readings(START, 200).write_csv(path)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        written = pool.starmap(_ingest_same, [(str(tsloom_home.home), str(path))] * 4)
    assert sorted(written) == [0, 0, 0, 400]
    assert read_dataset("plant.shared").height == 400


def test_arrow_timestamps_are_utc_microseconds(tsloom_home: Settings) -> None:
    ingest_frame(readings(START, 2), "airq.gwangju", ts="time", keys=["sensor"])
    schema = DeltaTable(dataset_uri(tsloom_home, "airq.gwangju")).schema().to_arrow()
    ts_type = pa.schema(schema).field("ts").type
    assert ts_type == pa.timestamp("us", tz="UTC")


def test_sub_millisecond_timestamps_are_still_deduplicated(tsloom_home: Settings) -> None:
    """Delta's file statistics round timestamps to milliseconds; identity must not."""
    t = datetime(2024, 5, 1, 12, 0, 0, 336713, tzinfo=UTC)
    ingest_frame(pl.DataFrame({"t": [t], "v": [1.0]}), "plant.micro", ts="t")
    later = pl.DataFrame({"t": [t, t + timedelta(microseconds=1)], "v": [1.0, 2.0]})
    assert ingest_frame(later, "plant.micro", ts="t").rows_written == 1
    assert read_dataset("plant.micro")["ts"].to_list() == [t, t + timedelta(microseconds=1)]


def test_overwrite_replaces_rows_and_keeps_history(tsloom_home: Settings) -> None:
    first = ingest_frame(readings(START, 4), "airq.derived", ts="time", keys=["sensor"])
    fewer = readings(START, 2, sensors=(1,)).with_columns(pl.col("co2") * 2)
    result = ingest_frame(fewer, "airq.derived", ts="time", keys=["sensor"], mode="overwrite")
    assert result.rows_written == 2
    assert read_dataset("airq.derived")["co2"].to_list() == [802.0, 804.0]
    assert read_dataset("airq.derived", version=first.lake_version).height == 8
    info = Catalog().get("airq.derived")
    assert info.row_count == 2 and info.lake_version == first.lake_version + 1
