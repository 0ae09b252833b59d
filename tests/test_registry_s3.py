"""The model registry on S3 (moto's server on 127.0.0.1) with PostgreSQL metadata: the
same layout, manifest-last publication, checksum refusal, eight concurrent processes,
delete and gc. The lake stays on local disk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
import torch
from conftest import s3_client
from test_registry import (
    TABLES,
    count_rows,
    ingest,
    make_settings,
    register_concurrently,
    train,
    window_of,
)

import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.db.engine import dispose_engines
from tsloom.integrate import integration_id
from tsloom.registry.store import MODEL_FILES

BUCKET = "tsloom-models"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def s3(tsloom_home: Settings, pg_url: str, s3_endpoint: str) -> Iterator:
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    local = make_settings(tsloom_home.home, pg_url, f"s3://{BUCKET}/registry")
    settings = Settings(
        home=local.home,
        db_url=local.db_url,
        lake_url=local.lake_url,
        registry_url=local.registry_url,
        s3_endpoint_url=s3_endpoint,
    )
    yield settings, client
    dispose_engines()


def keys(client) -> set[str]:
    """Every object under the registry prefix, without pyarrow's zero-byte folder markers."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    found = {o["Key"] for page in pages for o in page.get("Contents", [])}
    assert all(k.startswith("registry/") for k in found)
    return {k.removeprefix("registry/") for k in found if not k.endswith("/")}


def get(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=f"registry/{key}")["Body"].read()


def put(client, key: str, data: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key=f"registry/{key}", Body=data)


def test_registry_on_s3(s3) -> None:
    settings, client = s3
    ingest(settings)
    run = train(settings)
    ref = reg.register(run, tags=["s3"], settings=settings)
    iid = integration_id(TABLES)
    scaler = f"{iid}/scalers/{run.result.scaler.scaler_id}.json"
    layout = {*(f"{ref}/{n}" for n in (*MODEL_FILES, "manifest.json")), scaler}
    assert keys(client) == layout
    manifest = json.loads(get(client, f"{ref}/manifest.json"))
    for name in MODEL_FILES:
        data = get(client, f"{ref}/{name}")
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert reg.register(run, settings=settings) == ref and count_rows(settings) == 1

    model = reg.load(ref, settings=settings)
    window = window_of(run)
    expected = run.result.predict(window.drop("ts").to_numpy())
    got = model.predict(window)["plant.a.v"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert reg.rebuild_training_frame(ref, settings=settings).equals(run.integration.frame)
    assert reg.search(["plant.a", "plant.b"], settings=settings)[iid]["plant.a.v"]["dlinear"]

    original = get(client, f"{ref}/metrics.json")
    put(client, f"{ref}/metrics.json", original.replace(b'"rmse": ', b'"rmse": 1'))
    with pytest.raises(reg.IntegrityError, match=r"metrics\.json .*truncated or modified"):
        reg.load(ref, settings=settings)
    put(client, f"{ref}/metrics.json", original[:-1] + b" ")
    with pytest.raises(reg.IntegrityError, match=r"metrics\.json .*SHA-256"):
        reg.load(ref, settings=settings)
    put(client, f"{ref}/metrics.json", original)
    assert reg.show(ref, settings=settings)["verified"]

    # an interrupted registration: files written, no manifest → incomplete, gc removes it
    other = train(settings, method="vanilla", epochs=1)
    files = reg.prepare(other, settings=settings).files
    half = f"{iid}/plant.a.v/vanilla/{other.params.param_id}"
    put(client, f"{half}/weights.pt", files["weights.pt"])
    with pytest.raises(reg.IntegrityError, match=r"no manifest\.json"):
        reg.load(half, settings=settings)
    assert reg.search(method="vanilla", settings=settings) == {}
    assert reg.gc(settings=settings)["incomplete"] == []  # too young to be sure
    assert reg.gc(older_than=timedelta(0), settings=settings)["incomplete"] == [half]
    assert keys(client) == layout

    assert reg.delete(ref, settings=settings)["row"] is True
    assert keys(client) == {scaler} and count_rows(settings) == 0
    assert reg.gc(older_than=timedelta(0), settings=settings)["scalers"] == [scaler]
    assert keys(client) == set()
    markers = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert markers <= {"registry/"}  # at most the root's folder marker


def test_eight_processes_register_one_model_on_s3(s3) -> None:
    settings, client = s3
    ingest(settings)
    run = train(settings)
    refs = register_concurrently(run, settings)
    assert len(set(refs)) == 1 and not refs[0].startswith("error"), refs
    assert count_rows(settings) == 1
    ref = refs[0]
    assert keys(client) == {
        *(f"{ref}/{n}" for n in (*MODEL_FILES, "manifest.json")),
        f"{run.integration.id}/scalers/{run.result.scaler.scaler_id}.json",
    }
    assert reg.load(ref, settings=settings).ref == ref
