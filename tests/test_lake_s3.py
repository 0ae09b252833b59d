"""The same lake on S3, against moto's S3 server on 127.0.0.1 (no network needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from conftest import s3_client

from tsloom.catalog import Catalog
from tsloom.config import Settings, load_settings
from tsloom.ingest import ingest_frame
from tsloom.lake import read_dataset
from tsloom.lake.retention import apply_retention


@pytest.fixture
def s3_lake(tsloom_home: Settings, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TSLOOM_LAKE_URL", "s3://tsloom-lake/lake")
    s3_client(s3_endpoint).create_bucket(Bucket="tsloom-lake")
    return load_settings()


def test_ingest_read_and_retention_on_s3(s3_lake: Settings) -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {"t": [start + timedelta(hours=h) for h in range(96)], "v": [float(h) for h in range(96)]}
    )
    assert ingest_frame(frame, "plant.remote", ts="t").rows_written == 96
    assert ingest_frame(frame, "plant.remote", ts="t").rows_written == 0
    info = Catalog().get("plant.remote")
    assert info.lake_uri == "s3://tsloom-lake/lake/plant/remote"
    assert info.row_count == 96
    day2 = read_dataset("plant.remote", start="2024-03-02", end="2024-03-03")
    assert day2["v"].to_list() == [float(h) for h in range(24, 48)]
    plan = apply_retention(
        "plant.remote", timedelta(days=2), now=datetime(2024, 3, 4, 12, tzinfo=UTC), dry_run=False
    )
    # cutoff 2024-03-02 12:00 → whole days before 2024-03-02 go: only 2024-03-01
    assert plan.partitions["day"].to_list() == [1]
    assert read_dataset("plant.remote").height == 72
    assert Catalog().get("plant.remote").ts_min == datetime(2024, 3, 2, tzinfo=UTC)
