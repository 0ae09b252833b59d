"""A dataset's description: catalog entry plus partitions, runs and watermarks."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from tsloom.catalog import Catalog, DatasetInfo, RunInfo
from tsloom.config import Settings, load_settings
from tsloom.lake import table as lake_table
from tsloom.lake.storage import dataset_uri


@dataclass(frozen=True)
class DatasetReport:
    info: DatasetInfo
    partitions: pl.DataFrame  # year, month, day, files, rows, bytes
    runs: list[RunInfo] = field(default_factory=list)
    watermarks: dict[str, str] = field(default_factory=dict)

    def months(self) -> pl.DataFrame:
        """Partitions rolled up by month, for a summary that fits on a screen."""
        return (
            self.partitions.group_by("year", "month")
            .agg(
                pl.len().alias("days"),
                pl.col("day").min().alias("first_day"),
                pl.col("day").max().alias("last_day"),
                pl.col("rows").sum().alias("rows"),
            )
            .sort("year", "month")
        )

    def to_dict(self) -> dict:
        return {
            **self.info.to_dict(),
            "partitions": self.partitions.to_dicts(),
            "runs": [r.__dict__ for r in self.runs],
            "watermarks": self.watermarks,
        }


def describe_dataset(name: str, *, settings: Settings | None = None) -> DatasetReport:
    settings = settings or load_settings()
    catalog = Catalog(settings)
    info = catalog.get(name)
    uri = dataset_uri(settings, name)
    table = lake_table.open_table(uri, settings.storage_options(uri))
    partitions = lake_table.stats(table).partitions if table is not None else pl.DataFrame()
    return DatasetReport(info, partitions, catalog.runs(name), dict(catalog.watermarks(name)))
