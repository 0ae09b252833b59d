"""Background jobs (training from the web UI, workflow runs) kept in the ``jobs`` table.

A job is queued, then running, then finished or failed; its per-epoch progress is written
to its row while it runs, so any page (or process) reading the database sees it. A job
runs in a worker thread of the server process; when the server stops, the thread stops
with it, so at start-up :func:`recover_interrupted` marks every job still queued or
running as failed ("server restarted") — a job is never left stuck running.

    runner = JobRunner(settings)
    job = runner.submit("train", {"spec": spec, "params": params}, training_job(spec, params))
    get_job(job.id, settings=settings).progress   # [{"epoch": 1, "train_rmse": …}, …]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tsloom.config import Settings, load_settings
from tsloom.db.engine import session_scope
from tsloom.db.models import Job
from tsloom.errors import TsloomError

log = logging.getLogger("tsloom.jobs")

STATES = ("queued", "running", "finished", "failed")
RESTARTED = "server restarted while the job was queued or running"


class UnknownJobError(TsloomError):
    """No job with that id."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class JobInfo:
    """A job row, detached from the database session."""

    id: int
    kind: str
    state: str
    params: dict[str, Any]
    progress: list[dict[str, Any]]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed")

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for name in ("created_at", "started_at", "finished_at", "updated_at"):
            value = out[name]
            out[name] = value.isoformat() if value else None
        return out


def _info(row: Job) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        state=row.state,
        params=dict(row.params or {}),
        progress=list(row.progress or []),
        result=dict(row.result) if row.result is not None else None,
        error=row.error,
        created_at=_utc(row.created_at),
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        updated_at=_utc(row.updated_at),
    )


def create_job(kind: str, params: dict[str, Any], *, settings: Settings | None = None) -> JobInfo:
    """Record a new queued job."""
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        row = Job(kind=kind, state="queued", params=params, progress=[])
        s.add(row)
        s.flush()
        return _info(row)


def get_job(job_id: int, *, settings: Settings | None = None) -> JobInfo:
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        row = s.get(Job, job_id)
        if row is None:
            raise UnknownJobError(f"no job {job_id}", hint="the jobs page lists the known jobs")
        return _info(row)


def list_jobs(
    *, kind: str | None = None, limit: int = 50, settings: Settings | None = None
) -> list[JobInfo]:
    """The newest jobs first."""
    settings = settings or load_settings()
    query = sa.select(Job).order_by(Job.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Job.kind == kind)
    with session_scope(settings.db_url) as s:
        return [_info(r) for r in s.scalars(query)]


def _update(settings: Settings, job_id: int, change: Callable[[Job], None]) -> None:
    with session_scope(settings.db_url) as s:
        row = s.get(Job, job_id)
        if row is None:
            raise UnknownJobError(f"no job {job_id}")
        change(row)


def mark_running(job_id: int, *, settings: Settings) -> None:
    def change(row: Job) -> None:
        row.state, row.started_at = "running", datetime.now(UTC)

    _update(settings, job_id, change)


def add_progress(job_id: int, entry: dict[str, Any], *, settings: Settings) -> None:
    """Append one progress entry (e.g. an epoch's train and validation RMSE)."""

    def change(row: Job) -> None:
        row.progress = [*(row.progress or []), _plain(entry)]  # a new list: JSON is rewritten

    _update(settings, job_id, change)


def finish_job(job_id: int, result: dict[str, Any], *, settings: Settings) -> None:
    def change(row: Job) -> None:
        row.state, row.result, row.finished_at = "finished", _plain(result), datetime.now(UTC)

    _update(settings, job_id, change)


def fail_job(job_id: int, error: str, *, settings: Settings) -> None:
    def change(row: Job) -> None:
        row.state, row.error, row.finished_at = "failed", error, datetime.now(UTC)

    _update(settings, job_id, change)


def recover_interrupted(*, settings: Settings | None = None, reason: str = RESTARTED) -> list[int]:
    """Mark every queued or running job failed (call once at server start: no thread of
    this process runs them); returns their ids."""
    settings = settings or load_settings()
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as s:
        rows = list(s.scalars(sa.select(Job).where(Job.state.in_(("queued", "running")))))
        for row in rows:
            row.state, row.error, row.finished_at = "failed", reason, now
        return [r.id for r in rows]


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars plain numbers."""
    import math

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class JobContext:
    """What a job function gets: its id, the settings, a stop flag and a progress hook."""

    job_id: int
    settings: Settings
    stop: threading.Event = field(default_factory=threading.Event)
    state: dict[str, Any] = field(default_factory=dict)  # live, in-memory extras (output)

    def progress(self, entry: dict[str, Any]) -> None:
        add_progress(self.job_id, entry, settings=self.settings)


JobFunction = Callable[[JobContext], dict[str, Any]]


class JobRunner:
    """Runs job functions in worker threads (one at a time per runner by default, so
    training jobs queue rather than fight for the CPU) and records their state."""

    def __init__(self, settings: Settings, *, workers: int = 1, name: str = "tsloom-job") -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self.contexts: dict[int, JobContext] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, params: dict[str, Any], fn: JobFunction) -> JobInfo:
        job = create_job(kind, params, settings=self.settings)
        ctx = JobContext(job.id, self.settings)
        with self._lock:
            self.contexts[job.id] = ctx
        self.executor.submit(self._run, ctx, fn)
        return job

    def context(self, job_id: int) -> JobContext | None:
        with self._lock:
            return self.contexts.get(job_id)

    def _run(self, ctx: JobContext, fn: JobFunction) -> None:
        try:
            mark_running(ctx.job_id, settings=self.settings)
            result = fn(ctx)
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            hint = getattr(exc, "hint", None)
            if not isinstance(exc, TsloomError):
                log.exception("job %s failed", ctx.job_id)
            try:
                fail_job(
                    ctx.job_id, f"{message} ({hint})" if hint else message, settings=ctx.settings
                )
            except Exception:
                log.exception("could not record the failure of job %s", ctx.job_id)
            return
        try:
            finish_job(ctx.job_id, result, settings=ctx.settings)
        except Exception as exc:
            log.exception("could not record the result of job %s", ctx.job_id)
            fail_job(ctx.job_id, f"could not record the result: {exc}", settings=ctx.settings)

    def shutdown(self, wait: bool = False) -> None:
        for ctx in list(self.contexts.values()):
            ctx.stop.set()
        self.executor.shutdown(wait=wait, cancel_futures=True)


def training_job(spec: dict[str, Any], params: dict[str, Any]) -> JobFunction:
    """Integrate `spec`, train with `params` (each epoch's RMSE recorded as progress) and
    register the model; the result says where it is stored and its metrics."""

    def run(ctx: JobContext) -> dict[str, Any]:
        from tsloom.forecast.job import train_on_integration
        from tsloom.registry import register
        from tsloom.registry.store import backend

        def on_epoch(row: dict[str, Any]) -> None:
            if ctx.stop.is_set():
                raise TsloomError("training stopped: the server is shutting down")
            ctx.progress({k: row[k] for k in ("epoch", "train_rmse", "val_rmse", "seconds")})

        run = train_on_integration(spec, params, on_epoch=on_epoch, settings=ctx.settings)
        ref = register(run, tags=("ui",), settings=ctx.settings)
        summary = run.summary(ctx.settings)
        return {
            "ref": ref,
            "location": backend(ctx.settings).location(ref),
            "integration_id": summary["integration_id"],
            "param_id": summary["param_id"],
            "target": summary["target"],
            "method": summary["method"],
            "metrics": summary["metrics"],
            "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"],
            "seconds": summary["seconds"],
        }

    return run


__all__ = [
    "RESTARTED",
    "STATES",
    "JobContext",
    "JobInfo",
    "JobRunner",
    "UnknownJobError",
    "add_progress",
    "create_job",
    "fail_job",
    "finish_job",
    "get_job",
    "list_jobs",
    "mark_running",
    "recover_interrupted",
    "training_job",
]
