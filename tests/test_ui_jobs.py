"""Background jobs: states queued → running → finished/failed kept in the database,
per-epoch progress written while training, and no job left running after a restart."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

from tsloom.config import Settings
from tsloom.errors import TsloomError
from tsloom.ingest.writer import ingest_frame
from tsloom.jobs import (
    RESTARTED,
    JobContext,
    JobRunner,
    UnknownJobError,
    create_job,
    finish_job,
    get_job,
    list_jobs,
    mark_running,
    training_job,
)
from tsloom.serve import ServeConfig, create_app


def ingest_meter(settings: Settings) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    hours = np.arange(24 * 6)
    frame = pl.DataFrame(
        {
            "ts": [start + timedelta(hours=int(h)) for h in hours],
            "y": 10 + np.sin(2 * np.pi * hours / 24),
        }
    )
    ingest_frame(frame, "site.meter", ts="ts", settings=settings)


def wait(settings: Settings, job_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get_job(job_id, settings=settings).done:
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_job_goes_from_queued_to_finished_with_progress(tsloom_home: Settings) -> None:
    runner = JobRunner(tsloom_home)
    release = threading.Event()
    seen: list[str] = []

    def work(ctx: JobContext) -> dict:
        seen.append(get_job(ctx.job_id, settings=ctx.settings).state)
        for epoch in (1, 2):
            ctx.progress({"epoch": epoch, "train_rmse": 1.0 / epoch, "val_rmse": float("nan")})
        release.wait(10)
        return {"answer": np.float64(42.0)}

    first = runner.submit("test", {"n": 1}, work)
    second = runner.submit("test", {"n": 2}, lambda ctx: {})
    assert first.state == "queued"
    deadline = time.monotonic() + 10
    while len(get_job(first.id, settings=tsloom_home).progress) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    running = get_job(first.id, settings=tsloom_home)
    assert running.state == "running" and running.started_at is not None
    assert get_job(second.id, settings=tsloom_home).state == "queued"  # one at a time
    release.set()
    wait(tsloom_home, first.id)
    wait(tsloom_home, second.id)
    done = get_job(first.id, settings=tsloom_home)
    assert seen == ["running"]
    assert done.state == "finished" and done.result == {"answer": 42.0}
    assert [p["epoch"] for p in done.progress] == [1, 2]
    assert done.progress[0]["val_rmse"] is None  # NaN is stored as null
    assert done.finished_at >= done.started_at
    assert [j.id for j in list_jobs(settings=tsloom_home)] == [second.id, first.id]
    runner.shutdown()


def test_a_failing_job_is_recorded_failed_with_its_hint(tsloom_home: Settings) -> None:
    runner = JobRunner(tsloom_home)

    def broken(ctx: JobContext) -> dict:
        raise TsloomError("no such column 'x'", hint="pick one of a, b")

    job = runner.submit("test", {}, broken)
    wait(tsloom_home, job.id)
    failed = get_job(job.id, settings=tsloom_home)
    assert failed.state == "failed"
    assert failed.error == "no such column 'x' (pick one of a, b)"
    with pytest.raises(UnknownJobError):
        get_job(9999, settings=tsloom_home)
    runner.shutdown()


def test_a_running_job_at_start_up_is_marked_failed(tsloom_home: Settings) -> None:
    running = create_job("train", {"a": 1}, settings=tsloom_home)
    mark_running(running.id, settings=tsloom_home)
    queued = create_job("train", {"a": 2}, settings=tsloom_home)
    finished = create_job("train", {"a": 3}, settings=tsloom_home)
    finish_job(finished.id, {"ok": True}, settings=tsloom_home)

    app = create_app(tsloom_home, ServeConfig())  # a server (re)starts
    for job_id in (running.id, queued.id):
        job = get_job(job_id, settings=tsloom_home)
        assert job.state == "failed" and job.error == RESTARTED
        assert job.finished_at is not None
    assert get_job(finished.id, settings=tsloom_home).state == "finished"
    page = TestClient(app).get(f"/ui/jobs/{running.id}").text
    assert "server restarted" in page and 'data-state="failed"' in page
    assert "every 1s" not in page  # a finished or failed job is not polled


def test_training_job_records_each_epoch_and_where_the_model_is(
    tsloom_home: Settings,
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ingest_meter(tsloom_home)
    spec = {"sources": ["site.meter"], "freq": "1h"}
    params = {
        "target": "y",
        "method": "dlinear",
        "epochs": 3,
        "patience": 10,
        "input_width": "12h",
        "output_width": "2h",
    }
    runner = JobRunner(tsloom_home)
    try:
        job = runner.submit("train", {"spec": spec, "params": params}, training_job(spec, params))
        wait(tsloom_home, job.id)
    finally:
        torch.set_num_threads(threads)
        runner.shutdown()
    done = get_job(job.id, settings=tsloom_home)
    assert done.state == "finished", done.error
    assert [p["epoch"] for p in done.progress] == [1, 2, 3]
    assert all(p["train_rmse"] > 0 and p["val_rmse"] > 0 for p in done.progress)
    assert Path(done.result["location"]).is_dir()
    assert done.result["ref"].endswith("/dlinear/" + done.result["param_id"])
    assert "rmse" in done.result["metrics"]


def test_shutdown_stops_training_after_the_current_epoch(tsloom_home: Settings) -> None:
    ingest_meter(tsloom_home)
    job = create_job("train", {}, settings=tsloom_home)
    ctx = JobContext(job.id, tsloom_home)
    ctx.stop.set()  # what JobRunner.shutdown does
    params = {
        "target": "y",
        "method": "dlinear",
        "epochs": 50,
        "input_width": "12h",
        "output_width": "2h",
    }
    with pytest.raises(TsloomError, match="server is shutting down"):
        training_job({"sources": ["site.meter"], "freq": "1h"}, params)(ctx)
    assert get_job(job.id, settings=tsloom_home).progress == []
