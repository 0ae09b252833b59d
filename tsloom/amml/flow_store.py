"""Saved AMML workflows: versioned by name in the metadata database, with their runs.

    >>> saved = save_flow("ett-train", 'source id="ett" | minmax_scaler | print')
    >>> run_id, result = run_saved_flow("ett-train")      # or "ett-train:1"

Saving compiles first (a workflow that does not compile is never stored). Saving the same
source again is a no-op; changed source becomes the next version — stored versions never
change, so `name:version` always means the same workflow. Every run (saved or ad hoc through
:func:`run_recorded`) is recorded with its status, error, the tail of what it printed and
per-component statistics.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import re
import socket
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tsloom.amml.bytecode import Bytecode, listing
from tsloom.amml.compiler import compile_program
from tsloom.config import Settings, load_settings
from tsloom.db.engine import session_scope
from tsloom.db.models import FlowRecord, FlowRun
from tsloom.errors import TsloomError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_OUTPUT_CHARS = 64_000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class SavedFlow:
    """One stored version of a workflow; `new` tells whether `save_flow` just created it."""

    name: str
    version: int
    source: str
    bytecode: dict
    description: str | None
    created_at: datetime
    new: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def listing(self) -> str:
        return listing(Bytecode.from_json(self.bytecode))


@dataclass(frozen=True)
class FlowRunInfo:
    """One recorded run: status is running, finished, failed or stopped."""

    id: int
    flow_name: str | None
    flow_version: int | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    rows_out: int | None
    error: str | None
    output: str | None
    stats: Any


def _saved(row: FlowRecord, new: bool = False) -> SavedFlow:
    return SavedFlow(
        row.name, row.version, row.source, row.bytecode, row.description, row.created_at, new
    )


def _run_info(row: FlowRun) -> FlowRunInfo:
    return FlowRunInfo(
        row.id,
        row.flow_name,
        row.flow_version,
        row.status,
        row.started_at,
        row.finished_at,
        row.rows_out,
        row.error,
        row.output,
        row.stats,
    )


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise TsloomError(
            f"workflow name {name!r} is not valid",
            hint="start with a letter; then letters, digits, '_', '.', '-' (at most 64)",
        )


def save_flow(
    name: str, text: str, *, description: str | None = None, settings: Settings | None = None
) -> SavedFlow:
    """Compile `text` and store it as the next version of `name` (unless unchanged)."""
    _check_name(name)
    settings = settings or load_settings()
    bytecode = compile_program(text)  # raises the language's own errors, nothing stored
    digest = hashlib.sha1(text.encode()).hexdigest()
    with session_scope(settings.db_url) as s:
        latest = s.scalar(
            sa.select(FlowRecord)
            .where(FlowRecord.name == name)
            .order_by(FlowRecord.version.desc())
            .limit(1)
        )
        if latest is not None and latest.source_hash == digest:
            return _saved(latest)
        row = FlowRecord(
            name=name,
            version=(latest.version + 1) if latest else 1,
            source=text,
            source_hash=digest,
            bytecode=bytecode.to_dict(),
            description=description,
        )
        s.add(row)
        s.flush()
        return _saved(row, new=True)


def _parse_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition(":")
    if not version:
        return name, None
    if not version.isdigit():
        raise TsloomError(
            f"workflow version {version!r} in {ref!r} is not a number",
            hint="write NAME or NAME:VERSION, e.g. ett-train:2",
        )
    return name, int(version)


def get_flow(ref: str, *, settings: Settings | None = None) -> SavedFlow:
    """`name:version`, or `name` for its newest version."""
    settings = settings or load_settings()
    name, version = _parse_ref(ref)
    with session_scope(settings.db_url) as s:
        query = sa.select(FlowRecord).where(FlowRecord.name == name)
        if version is not None:
            query = query.where(FlowRecord.version == version)
        row = s.scalar(query.order_by(FlowRecord.version.desc()).limit(1))
        if row is not None:
            return _saved(row)
        names = list(s.scalars(sa.select(FlowRecord.name).distinct()))
    if name in names:
        raise TsloomError(
            f"workflow {name} has no version {version}",
            hint=f"see its versions with `tsloom flow show {name} --versions`",
        )
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    raise TsloomError(
        f"no saved workflow {name!r}",
        hint=f"did you mean {', '.join(close)}?"
        if close
        else "save one with `tsloom flow save NAME FILE.amml`",
    )


def list_flows(*, settings: Settings | None = None) -> list[SavedFlow]:
    """The newest version of every saved workflow, by name."""
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        newest = (
            sa.select(FlowRecord.name, sa.func.max(FlowRecord.version).label("v"))
            .group_by(FlowRecord.name)
            .subquery()
        )
        rows = s.scalars(
            sa.select(FlowRecord)
            .join(
                newest, sa.and_(FlowRecord.name == newest.c.name, FlowRecord.version == newest.c.v)
            )
            .order_by(FlowRecord.name)
        )
        return [_saved(r) for r in rows]


def flow_versions(name: str, *, settings: Settings | None = None) -> list[SavedFlow]:
    """Every stored version of `name`, oldest first (empty when there is none)."""
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        rows = s.scalars(
            sa.select(FlowRecord).where(FlowRecord.name == name).order_by(FlowRecord.version)
        )
        return [_saved(r) for r in rows]


def flow_runs(
    name: str | None = None, *, limit: int = 50, settings: Settings | None = None
) -> list[FlowRunInfo]:
    """Recorded runs, newest first; of one workflow when `name` is given."""
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        _fail_orphans(s)
        query = sa.select(FlowRun).order_by(FlowRun.id.desc()).limit(limit)
        if name is not None:
            query = query.where(FlowRun.flow_name == name)
        return [_run_info(r) for r in s.scalars(query)]


def last_runs(*, settings: Settings | None = None) -> dict[str, FlowRunInfo]:
    """The newest run of every saved workflow that ran, by name (one query)."""
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        _fail_orphans(s)
        newest = (
            sa.select(sa.func.max(FlowRun.id))
            .where(FlowRun.flow_name.is_not(None))
            .group_by(FlowRun.flow_name)
        )
        rows = s.scalars(sa.select(FlowRun).where(FlowRun.id.in_(newest)))
        return {r.flow_name: _run_info(r) for r in rows}  # type: ignore[misc]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_orphans(session: Any) -> None:
    """Runs still marked running whose process (on this host) is gone were killed: mark
    them failed, so history never shows a run stuck running."""
    host = socket.gethostname()
    for row in session.scalars(sa.select(FlowRun).where(FlowRun.status == "running")):
        info = row.stats or {}
        pid = info.get("pid")
        if info.get("host") == host and isinstance(pid, int) and not _alive(pid):
            row.status = "failed"
            row.error = f"the process running it (pid {pid}) ended before the run finished"
            row.finished_at = datetime.now(UTC)


def get_run(run_id: int, *, settings: Settings | None = None) -> FlowRunInfo:
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        row = s.get(FlowRun, run_id)
        if row is None:
            raise TsloomError(f"no workflow run {run_id}", hint="see `tsloom flow runs`")
        return _run_info(row)


class _TeeText(io.TextIOBase):
    """Writes through to `target` (when given) and keeps the last characters, without
    terminal colour codes, for the run's recorded output."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.chunks: deque[str] = deque()
        self.size = 0
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        if self.target is not None:
            self.target.write(text)
        plain = _ANSI.sub("", text)
        with self.lock:
            self.chunks.append(plain)
            self.size += len(plain)
            while self.size > _OUTPUT_CHARS and len(self.chunks) > 1:
                self.size -= len(self.chunks.popleft())
        return len(text)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def text(self) -> str:
        with self.lock:
            return "".join(self.chunks)[-_OUTPUT_CHARS:]


def _teeing_console(console: Any) -> tuple[Any, _TeeText]:
    from rich.console import Console

    if console is None:
        tee = _TeeText(None)
        return Console(file=tee, width=120, color_system=None), tee
    tee = _TeeText(console.file)
    return (
        Console(
            file=tee,
            width=console.width,
            color_system=console.color_system,
            force_terminal=console.is_terminal,
        ),
        tee,
    )


def run_recorded(
    text: str,
    *,
    flow: SavedFlow | None = None,
    settings: Settings | None = None,
    console: Any = None,
    stop: threading.Event | None = None,
    mode: str = "thread",
) -> tuple[int, Any]:
    """Run `text` (components as threads, or each in its own process with
    ``mode="process"``) and record the run (status, error, output tail, statistics); the
    program's own errors propagate after the run is recorded as failed."""
    from tsloom.amml.runtime import run_program

    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        row = FlowRun(
            flow_name=flow.name if flow else None,
            flow_version=flow.version if flow else None,
            source=text,
            status="running",
            stats={"pid": os.getpid(), "host": socket.gethostname()},
        )
        s.add(row)
        s.flush()
        run_id = row.id
    tee_console, tee = _teeing_console(console)
    status, error, result = "failed", None, None
    try:
        result = run_program(
            text,
            settings=settings,
            console=tee_console,
            stop=stop,
            mode=mode,
            run_id=run_id,
            flow_name=flow.ref if flow else None,
        )
        status = getattr(result, "status", "finished")
        return run_id, result
    except KeyboardInterrupt:
        status, error = "stopped", "interrupted"
        raise
    except Exception as exc:
        error = str(exc)
        raise
    finally:
        with session_scope(settings.db_url) as s:
            row = s.get(FlowRun, run_id)
            row.status = status
            row.error = error
            row.finished_at = datetime.now(UTC)
            row.output = tee.text()
            if result is not None:
                row.rows_out = _rows_out(result)
                row.stats = _jsonable(getattr(result, "stats", None))


def _rows_out(result: Any) -> int:
    """Rows that reached the ends of the flow: what egress components (sinks) took in,
    plus the rows of the pipelines' open ends."""
    from tsloom.amml.catalog import COMPONENTS

    stats = getattr(result, "stats", None) or []
    taken = sum(
        st.rows_in for st in stats if COMPONENTS[st.name].role == "egress" and not st.rows_out
    )
    return taken + sum(f.height for f in result.results)


def _jsonable(value: Any) -> Any:
    """Statistics as JSON-friendly values (dataclasses and numbers)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def run_saved_flow(
    ref: str,
    *,
    settings: Settings | None = None,
    console: Any = None,
    stop: threading.Event | None = None,
    mode: str = "thread",
) -> tuple[int, Any]:
    """Run a saved workflow (`name` or `name:version`) and record the run."""
    settings = settings or load_settings()
    flow = get_flow(ref, settings=settings)
    return run_recorded(
        flow.source, flow=flow, settings=settings, console=console, stop=stop, mode=mode
    )
