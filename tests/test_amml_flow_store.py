"""Saved AMML workflows: versions, lookups with suggestions, recorded runs, and the CLI."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tsloom.amml.errors import AmmlError
from tsloom.amml.flow_store import (
    flow_runs,
    flow_versions,
    get_flow,
    last_runs,
    list_flows,
    run_saved_flow,
    save_flow,
)
from tsloom.cli import app
from tsloom.errors import TsloomError
from tsloom.ingest.writer import ingest_frame

SCALE = 'source id="plant.temp" | minmax_scaler | print'
ZSCORE = 'source id="plant.temp" | zscore_scaler | print'
MISSING = 'source id="plant.nothing" | print'
runner = CliRunner()


@pytest.fixture
def plant(tsloom_home):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=i) for i in range(50)],
            "value": [float(i % 7) for i in range(50)],
        }
    )
    ingest_frame(frame, "plant.temp", ts="ts", settings=tsloom_home)
    return tsloom_home


def test_versions_grow_only_when_the_source_changes(tsloom_home) -> None:
    first = save_flow("scale", SCALE, description="scale it", settings=tsloom_home)
    again = save_flow("scale", SCALE, settings=tsloom_home)
    second = save_flow("scale", ZSCORE, settings=tsloom_home)
    assert (first.version, first.new) == (1, True)
    assert (again.version, again.new) == (1, False)
    assert (second.version, second.new) == (2, True)
    assert [v.version for v in flow_versions("scale", settings=tsloom_home)] == [1, 2]
    assert get_flow("scale", settings=tsloom_home).source == ZSCORE
    assert get_flow("scale:1", settings=tsloom_home).source == SCALE
    assert [f.ref for f in list_flows(settings=tsloom_home)] == ["scale:2"]
    assert "WF_MAKE_COMPONENT" in first.listing
    assert first.bytecode == get_flow("scale:1", settings=tsloom_home).bytecode


def test_a_program_that_does_not_compile_is_not_stored(tsloom_home) -> None:
    with pytest.raises(AmmlError):
        save_flow("bad", "source id= | print", settings=tsloom_home)
    assert list_flows(settings=tsloom_home) == []


def test_lookups_name_what_is_wrong(tsloom_home) -> None:
    save_flow("scale", SCALE, settings=tsloom_home)
    with pytest.raises(TsloomError, match="did you mean scale"):
        get_flow("scal", settings=tsloom_home)
    with pytest.raises(TsloomError, match="has no version 7"):
        get_flow("scale:7", settings=tsloom_home)
    with pytest.raises(TsloomError, match="not a number"):
        get_flow("scale:x", settings=tsloom_home)
    with pytest.raises(TsloomError, match="not valid"):
        save_flow("1 bad name", SCALE, settings=tsloom_home)


def test_runs_are_recorded_with_status_output_and_errors(plant) -> None:
    save_flow("scale", SCALE, settings=plant)
    save_flow("missing", MISSING, settings=plant)
    out = io.StringIO()
    run_id, result = run_saved_flow(
        "scale", settings=plant, console=Console(file=out, width=100, color_system=None)
    )
    (scaled,) = result.results
    assert scaled["value"].max() == 1.0 and scaled["value"].min() == 0.0
    with pytest.raises(AmmlError, match=r"plant\.nothing"):
        run_saved_flow("missing:1", settings=plant)

    ok, failed = flow_runs("scale", settings=plant)[0], flow_runs("missing", settings=plant)[0]
    assert ok.id == run_id and ok.status == "finished" and ok.flow_version == 1
    assert ok.rows_out == 50 and ok.finished_at is not None
    assert "50 rows" in ok.output and "50 rows" in out.getvalue()
    assert failed.status == "failed" and "plant.nothing" in failed.error
    assert [r.id for r in flow_runs(settings=plant)] == [failed.id, ok.id]
    latest = last_runs(settings=plant)
    assert {n: r.id for n, r in latest.items()} == {"scale": ok.id, "missing": failed.id}


def test_cli_save_list_show_run(plant, tmp_path) -> None:
    path = tmp_path / "scale.amml"
    path.write_text(SCALE)
    saved = runner.invoke(app, ["flow", "save", "scale", str(path), "--description", "demo"])
    assert saved.exit_code == 0, saved.output
    assert "saved scale:1" in saved.output
    listed = runner.invoke(app, ["flow", "list"])
    assert "scale" in listed.output and "never" in listed.output
    ran = runner.invoke(app, ["flow", "run", "scale:1"])
    assert ran.exit_code == 0, ran.output
    assert "finished" in ran.output
    adhoc = runner.invoke(app, ["flow", "run", str(path)])
    assert adhoc.exit_code == 0, adhoc.output
    shown = runner.invoke(app, ["flow", "show", "scale", "--bytecode"])
    assert shown.exit_code == 0, shown.output
    assert "WF_END" in shown.output and "versions: 1" in shown.output
    assert "finished" in shown.output
    runs = runner.invoke(app, ["flow", "runs"])
    assert "(ad hoc)" in runs.output and "scale:1" in runs.output
    unknown = runner.invoke(app, ["flow", "run", "nope"])
    assert unknown.exit_code != 0 and "no saved workflow" in str(unknown.exception)


def test_ctrl_c_stops_a_streaming_flow_and_flushes_its_sink(tsloom_home, tmp_path) -> None:
    """SIGINT to `tsloom flow run` on a never-ending source: the sink's CSV is complete,
    the run is recorded as stopped, the process exits 0."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "noise.csv"
    flow = tmp_path / "noise.amml"
    flow.write_text(
        f'normalsource col=v mean=5 std=1 freq="1s" realtime=true batch_size=50 '
        f'| zscore_scaler | sink to=csv path="{out}"'
    )
    env = {**os.environ, "TSLOOM_HOME": str(tsloom_home.home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsloom.cli", "flow", "run", str(flow)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = flow_runs(settings=tsloom_home) if (tsloom_home.home / "tsloom.db").exists() else []
        if runs and runs[0].status == "running":
            break
        time.sleep(0.2)
    time.sleep(2.0)  # let some rows flow
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "stopped" in output
    (run,) = flow_runs(settings=tsloom_home)
    assert run.status == "stopped" and run.finished_at is not None
    written = pl.read_csv(out)
    assert written.columns == ["ts", "v"] and written.height > 0
    assert run.rows_out == written.height
    assert not (tmp_path / "noise.csv.part").exists()


def test_a_run_whose_process_died_is_shown_failed(tsloom_home) -> None:
    import socket
    import subprocess

    from tsloom.db.engine import session_scope
    from tsloom.db.models import FlowRun

    dead = subprocess.Popen(["true"])
    dead.wait()
    with session_scope(tsloom_home.db_url) as s:
        s.add(
            FlowRun(
                source="normalsource col=v | print",
                status="running",
                stats={"pid": dead.pid, "host": socket.gethostname()},
            )
        )
    (run,) = flow_runs(settings=tsloom_home)
    assert run.status == "failed" and f"pid {dead.pid}" in run.error


def test_cli_runs_each_component_in_its_own_process_on_request(plant) -> None:
    save_flow("scale", SCALE, settings=plant)
    ran = runner.invoke(app, ["flow", "run", "--processes", "scale"])
    assert ran.exit_code == 0, ran.output
    (run,) = flow_runs("scale", settings=plant)
    assert run.status == "finished" and run.rows_out == 50
    assert "50 rows" in run.output
