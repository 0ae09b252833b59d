"""The dataset catalog: what each lake table holds, and where incremental sources stopped.

The catalog mirrors the lake: row count, time range and version are taken from the
Delta log after each write (`sync`), so they never drift from what is really stored.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from tsloom.config import Settings, load_settings
from tsloom.db.engine import session_scope
from tsloom.db.models import (
    Dataset,
    DatasetColumn,
    DatasetLineage,
    IngestionRun,
    IngestionWatermark,
)
from tsloom.errors import UnknownDatasetError
from tsloom.names import split_dataset_name, validate_dataset_name


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    role: str  # "key" or "value"
    dtype: str
    unit: str | None
    nullable: bool


@dataclass(frozen=True)
class DatasetInfo:
    """A catalog entry, detached from the database session."""

    name: str
    ts_column: str
    keys: tuple[str, ...]
    columns: tuple[ColumnInfo, ...]
    row_count: int
    ts_min: datetime | None
    ts_max: datetime | None
    lake_version: int | None
    lake_uri: str
    updated_at: datetime | None

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "value")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "ts_column": self.ts_column,
            "keys": list(self.keys),
            "columns": [c.__dict__ for c in self.columns],
            "row_count": self.row_count,
            "ts_min": self.ts_min.isoformat() if self.ts_min else None,
            "ts_max": self.ts_max.isoformat() if self.ts_max else None,
            "lake_version": self.lake_version,
            "lake_uri": self.lake_uri,
        }


@dataclass(frozen=True)
class LineageInfo:
    """A derived dataset's origin: parent dataset and lake version, and the steps applied."""

    dataset: str
    parent: str
    parent_version: int | None
    steps: list
    report_path: str | None
    lake_version: int | None
    created_at: datetime | None

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


@dataclass(frozen=True)
class RunInfo:
    origin: str
    rows_in: int
    rows_written: int
    lake_version: int | None
    finished_at: datetime


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _info(row: Dataset) -> DatasetInfo:
    return DatasetInfo(
        name=row.name,
        ts_column=row.ts_column,
        keys=tuple(row.key_columns or ()),
        columns=tuple(ColumnInfo(c.name, c.role, c.dtype, c.unit, c.nullable) for c in row.columns),
        row_count=row.row_count,
        ts_min=_utc(row.ts_min),
        ts_max=_utc(row.ts_max),
        lake_version=row.lake_version,
        lake_uri=row.lake_uri,
        updated_at=_utc(row.updated_at),
    )


class Catalog:
    """Read and update catalog entries in the metadata database."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.url = self.settings.db_url

    def names(self) -> list[str]:
        with session_scope(self.url) as s:
            return list(s.scalars(sa.select(Dataset.name).order_by(Dataset.name)))

    def list(self) -> list[DatasetInfo]:
        with session_scope(self.url) as s:
            return [_info(r) for r in s.scalars(sa.select(Dataset).order_by(Dataset.name))]

    def find(self, name: str) -> DatasetInfo | None:
        with session_scope(self.url) as s:
            row = s.scalar(sa.select(Dataset).where(Dataset.name == name))
            return _info(row) if row else None

    def get(self, name: str) -> DatasetInfo:
        """The entry for `name`, or an error that suggests the nearest known names."""
        validate_dataset_name(name)
        info = self.find(name)
        if info is not None:
            return info
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else ("known datasets: " + ", ".join(known[:10]) if known else "ingest data first")
        )
        raise UnknownDatasetError(f"unknown dataset {name!r}", hint=hint)

    def record_write(
        self,
        name: str,
        *,
        ts_column: str,
        keys: Sequence[str],
        columns: Sequence[ColumnInfo],
        lake_uri: str,
        row_count: int,
        ts_min: datetime | None,
        ts_max: datetime | None,
        lake_version: int | None,
        origin: str,
        rows_in: int,
        rows_written: int,
        replace: bool = False,
    ) -> DatasetInfo:
        """Create or update the entry after a lake write, and log the ingestion run.

        `replace` rebuilds keys and columns (after an overwrite of the whole table)."""
        database, table = split_dataset_name(name)
        with session_scope(self.url) as s:
            row = s.scalar(sa.select(Dataset).where(Dataset.name == name))
            if row is None:
                row = Dataset(
                    name=name,
                    database=database,
                    table=table,
                    ts_column=ts_column,
                    key_columns=list(keys),
                    lake_uri=lake_uri,
                    row_count=0,
                )
                s.add(row)
            if replace:
                row.columns.clear()
                row.key_columns, row.ts_column, row.lake_uri = list(keys), ts_column, lake_uri
                s.flush()
            existing = {c.name: c for c in row.columns}
            for column in columns:
                current = existing.get(column.name)
                if current is None:
                    row.columns.append(
                        DatasetColumn(
                            name=column.name,
                            role=column.role,
                            dtype=column.dtype,
                            unit=column.unit,
                            nullable=column.nullable,
                            position=len(row.columns),
                        )
                    )
                elif column.unit and not current.unit:
                    current.unit = column.unit
            row.row_count = row_count
            row.ts_min, row.ts_max = ts_min, ts_max
            row.lake_version = lake_version
            row.updated_at = datetime.now(UTC)
            s.add(
                IngestionRun(
                    dataset_name=name,
                    origin=origin,
                    rows_in=rows_in,
                    rows_written=rows_written,
                    lake_version=lake_version,
                )
            )
            s.flush()
            return _info(row)

    def update_extent(
        self,
        name: str,
        *,
        row_count: int,
        ts_min: datetime | None,
        ts_max: datetime | None,
        lake_version: int | None,
    ) -> None:
        """Refresh counts after a change that is not an ingestion (retention, sync)."""
        with session_scope(self.url) as s:
            row = s.scalar(sa.select(Dataset).where(Dataset.name == name))
            if row is None:
                raise UnknownDatasetError(f"unknown dataset {name!r}")
            row.row_count, row.ts_min, row.ts_max = row_count, ts_min, ts_max
            row.lake_version = lake_version
            row.updated_at = datetime.now(UTC)

    def runs(self, name: str, limit: int = 20) -> list[RunInfo]:
        with session_scope(self.url) as s:
            rows = s.scalars(
                sa.select(IngestionRun)
                .where(IngestionRun.dataset_name == name)
                .order_by(IngestionRun.id.desc())
                .limit(limit)
            )
            return [
                RunInfo(r.origin, r.rows_in, r.rows_written, r.lake_version, _utc(r.finished_at))
                for r in rows
            ]

    def get_watermark(self, dataset: str, source: str) -> str | None:
        """The high-water mark an incremental source reached, or None before its first run."""
        with session_scope(self.url) as s:
            return s.scalar(
                sa.select(IngestionWatermark.value).where(
                    IngestionWatermark.dataset_name == dataset,
                    IngestionWatermark.source == source,
                )
            )

    def set_watermark(self, dataset: str, source: str, value: str) -> None:
        with session_scope(self.url) as s:
            row = s.scalar(
                sa.select(IngestionWatermark).where(
                    IngestionWatermark.dataset_name == dataset,
                    IngestionWatermark.source == source,
                )
            )
            if row is None:
                s.add(IngestionWatermark(dataset_name=dataset, source=source, value=value))
            else:
                row.value = value

    def watermarks(self, dataset: str) -> Mapping[str, str]:
        with session_scope(self.url) as s:
            rows = s.execute(
                sa.select(IngestionWatermark.source, IngestionWatermark.value).where(
                    IngestionWatermark.dataset_name == dataset
                )
            )
            return {source: value for source, value in rows}

    def set_lineage(
        self,
        dataset: str,
        *,
        parent: str,
        parent_version: int | None,
        steps: list,
        report_path: str | None,
        lake_version: int | None,
    ) -> None:
        """Record (or replace) how `dataset` was derived from `parent`."""
        with session_scope(self.url) as s:
            row = s.scalar(sa.select(DatasetLineage).where(DatasetLineage.dataset_name == dataset))
            if row is None:
                row = DatasetLineage(dataset_name=dataset)
                s.add(row)
            row.parent_name, row.parent_version = parent, parent_version
            row.steps, row.report_path, row.lake_version = steps, report_path, lake_version
            row.created_at = datetime.now(UTC)

    def lineage(self, dataset: str) -> LineageInfo | None:
        with session_scope(self.url) as s:
            row = s.scalar(sa.select(DatasetLineage).where(DatasetLineage.dataset_name == dataset))
            if row is None:
                return None
            return LineageInfo(
                dataset=row.dataset_name,
                parent=row.parent_name,
                parent_version=row.parent_version,
                steps=list(row.steps or []),
                report_path=row.report_path,
                lake_version=row.lake_version,
                created_at=_utc(row.created_at),
            )
