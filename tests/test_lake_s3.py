"""The same lake on S3, against moto's S3 server on 127.0.0.1 (no network needed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from tsloom.catalog import Catalog
from tsloom.config import Settings, load_settings
from tsloom.ingest import ingest_frame
from tsloom.lake import read_dataset
from tsloom.lake.retention import apply_retention


@pytest.fixture
def s3_lake(tsloom_home: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TSLOOM_LAKE_URL": "s3://tsloom-lake/lake",
        "TSLOOM_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="tsloom-lake"
    )
    yield load_settings()
    server.stop()


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
