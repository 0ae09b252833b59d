"""Retention: drop whole day partitions older than a cutoff, then vacuum their files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from tsloom.catalog import Catalog
from tsloom.config import Settings, load_settings
from tsloom.lake import table as lake_table
from tsloom.lake.storage import dataset_lock, dataset_uri


@dataclass(frozen=True)
class RetentionPlan:
    dataset: str
    cutoff: datetime  # partitions of days that end on or before this are removed
    partitions: pl.DataFrame  # year, month, day, files, rows, bytes
    applied: bool = False
    files_vacuumed: int = 0

    @property
    def rows(self) -> int:
        return int(self.partitions["rows"].sum()) if self.partitions.height else 0


def _older_than(partitions: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    day = pl.date(pl.col("year"), pl.col("month"), pl.col("day"))
    return partitions.filter(day < cutoff.date())


def apply_retention(
    dataset: str,
    older_than: timedelta,
    *,
    dry_run: bool = True,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> RetentionPlan:
    """Plan (and with `dry_run=False` carry out) the removal of partitions older than
    `older_than`. Only whole days before the cutoff's day go, so no partition is split."""
    settings = settings or load_settings()
    catalog = Catalog(settings)
    catalog.get(dataset)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cutoff = (now - older_than).replace(hour=0, minute=0, second=0, microsecond=0)
    uri = dataset_uri(settings, dataset)
    options = settings.storage_options(uri)
    with dataset_lock(settings, dataset):
        table = lake_table.open_table(uri, options)
        if table is None:
            return RetentionPlan(dataset, cutoff, pl.DataFrame())
        doomed = _older_than(lake_table.stats(table).partitions, cutoff)
        if dry_run or doomed.height == 0:
            return RetentionPlan(dataset, cutoff, doomed)
        y, m, d = cutoff.year, cutoff.month, cutoff.day
        predicate = (
            f"year < {y} OR (year = {y} AND month < {m}) "
            f"OR (year = {y} AND month = {m} AND day < {d})"
        )
        table.delete(predicate)
        vacuumed = table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        stats = lake_table.stats(table)
        catalog.update_extent(
            dataset,
            row_count=stats.row_count,
            ts_min=stats.ts_min,
            ts_max=stats.ts_max,
            lake_version=stats.version,
        )
    return RetentionPlan(dataset, cutoff, doomed, applied=True, files_vacuumed=len(vacuumed))
