"""Retention removes whole old day partitions, only with --yes, and keeps the catalog true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from typer.testing import CliRunner

from tsloom.catalog import Catalog
from tsloom.cli import app
from tsloom.config import Settings
from tsloom.ingest import ingest_frame
from tsloom.lake import read_dataset
from tsloom.lake.retention import apply_retention

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _ten_days(name: str = "plant.line1") -> None:
    times = [NOW - timedelta(days=d, hours=h) for d in range(10) for h in (1, 13)]
    ingest_frame(pl.DataFrame({"t": times, "v": [1.0] * len(times)}), name, ts="t")


def test_dry_run_changes_nothing(tsloom_home: Settings) -> None:
    _ten_days()
    version = Catalog().get("plant.line1").lake_version
    plan = apply_retention("plant.line1", timedelta(days=5))
    assert not plan.applied and plan.partitions.height >= 4
    assert read_dataset("plant.line1").height == 20
    assert Catalog().get("plant.line1").lake_version == version


def test_apply_drops_whole_old_days_and_updates_catalog(tsloom_home: Settings) -> None:
    _ten_days()
    plan = apply_retention("plant.line1", timedelta(days=5), dry_run=False)
    cutoff = plan.cutoff
    assert plan.applied and plan.files_vacuumed == plan.partitions.height
    left = read_dataset("plant.line1")
    assert left["ts"].min() >= cutoff
    assert left.height == 20 - plan.rows
    info = Catalog().get("plant.line1")
    assert info.row_count == left.height
    assert info.ts_min == left["ts"].min()


def test_cli_needs_yes(tsloom_home: Settings) -> None:
    _ten_days()
    runner = CliRunner()
    dry = runner.invoke(app, ["retention", "apply", "plant.line1", "--older-than", "7d"])
    assert dry.exit_code == 0, dry.output
    assert "would remove" in dry.output and "dry run" in dry.output
    assert read_dataset("plant.line1").height == 20
    done = runner.invoke(app, ["retention", "apply", "plant.line1", "--older-than", "7d", "--yes"])
    assert "removed" in done.output and "vacuumed" in done.output
    assert read_dataset("plant.line1").height < 20
