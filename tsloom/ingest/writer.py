"""`ingest_frame`: the one path every source takes into the lake and the catalog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from tsloom.catalog import Catalog, ColumnInfo, DatasetInfo
from tsloom.config import Settings, load_settings
from tsloom.errors import SchemaChangeError
from tsloom.ingest.normalize import Where, normalize, units_for
from tsloom.lake import table as lake_table
from tsloom.lake.storage import dataset_lock, dataset_uri
from tsloom.names import validate_dataset_name


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion did; `rows_written` is 0 when every row was already there."""

    dataset: str
    rows_in: int
    rows_written: int
    duplicates_dropped: int
    lake_version: int | None
    ts_min: datetime | None
    ts_max: datetime | None
    new_columns: tuple[str, ...] = ()
    ts_unit_guessed: str | None = None

    @property
    def rows_already_present(self) -> int:
        return self.rows_in - self.duplicates_dropped - self.rows_written


def _check_keys(existing: DatasetInfo | None, keys: Sequence[str], dataset: str) -> None:
    if existing is not None and tuple(keys) != existing.keys:
        raise SchemaChangeError(
            f"dataset {dataset} is keyed by ({', '.join(existing.keys) or 'ts only'}) "
            f"but this input by ({', '.join(keys) or 'ts only'})",
            hint=f"pass --keys {','.join(existing.keys)}"
            if existing.keys
            else "ingest without --keys, or into a new dataset",
        )


def _dtype_name(dtype: pl.DataType) -> str:
    return {pl.Float64: "float64", pl.Int64: "int64", pl.String: "string"}.get(dtype, str(dtype))


def ingest_frame(
    frame: pl.DataFrame,
    dataset: str,
    *,
    ts: str,
    keys: Sequence[str] = (),
    values: Sequence[str] | None = None,
    ts_format: str | None = None,
    ts_unit: str | None = None,
    tz: str | None = None,
    units: Mapping[str, str] | None = None,
    origin: str = "input",
    first_row: int = 1,
    row_label: str = "row",
    mode: str = "append",
    settings: Settings | None = None,
) -> IngestResult:
    """Validate `frame`, append its new rows to `dataset`'s lake table, update the catalog.

    Idempotent: rows already in the lake (same keys and ts) are skipped. Atomic: the lake
    gets one commit or none, and nothing is written when any row is invalid.
    `mode="overwrite"` replaces the dataset's rows instead (for derived datasets that are
    rebuilt whole, such as cleaned series); the catalog entry is rebuilt too.
    """
    if mode not in ("append", "overwrite"):
        raise ValueError(f"mode must be 'append' or 'overwrite', not {mode!r}")
    validate_dataset_name(dataset)
    settings = settings or load_settings()
    where = Where(origin, first_row, row_label)
    catalog = Catalog(settings)
    existing = catalog.find(dataset)
    if mode == "overwrite":
        existing = None  # keys and columns are rebuilt; the entry is replaced after the commit
    if existing is not None and keys == () and existing.keys:
        keys = existing.keys  # re-ingest with the dataset's own keys by default
    _check_keys(existing, keys, dataset)
    norm = normalize(
        frame,
        ts=ts,
        keys=keys,
        values=values,
        ts_format=ts_format,
        ts_unit=ts_unit,
        tz=tz,
        where=where,
    )
    unit_map = units_for(norm.values, units, where)
    uri = dataset_uri(settings, dataset)
    options = settings.storage_options(uri)
    with dataset_lock(settings, dataset):
        if mode == "overwrite":
            outcome = lake_table.overwrite(uri, norm.frame, options)
        else:
            outcome = lake_table.append(uri, norm.frame, norm.keys, dataset, options)
        table = lake_table.open_table(uri, options)
        assert table is not None
        stats = lake_table.stats(table)
        columns = [
            ColumnInfo(k, "key", _dtype_name(norm.frame.schema[k]), None, False) for k in norm.keys
        ] + [ColumnInfo(v, "value", "float64", unit_map.get(v), True) for v in norm.values]
        catalog.record_write(
            dataset,
            ts_column=existing.ts_column if existing else ts,
            keys=norm.keys,
            columns=columns,
            lake_uri=uri,
            row_count=stats.row_count,
            ts_min=stats.ts_min,
            ts_max=stats.ts_max,
            lake_version=stats.version,
            origin=origin,
            rows_in=frame.height,
            rows_written=outcome.rows_written,
            replace=mode == "overwrite",
        )
    return IngestResult(
        dataset=dataset,
        rows_in=frame.height,
        rows_written=outcome.rows_written,
        duplicates_dropped=norm.duplicates_dropped,
        lake_version=stats.version,
        ts_min=norm.frame["ts"].min(),  # type: ignore[arg-type]
        ts_max=norm.frame["ts"].max(),  # type: ignore[arg-type]
        new_columns=outcome.new_columns,
        ts_unit_guessed=norm.ts_unit_guessed,
    )
