"""One Delta table per dataset: idempotent atomic appends and statistics from the log.

Rows are identified by (key columns, ts). An append first drops rows already in the
table (reading only the partitions and time span the batch touches), then writes the
rest in a single Delta commit, so a failed write leaves the previous version intact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from tsloom.errors import SchemaChangeError

PARTITIONS = ("year", "month", "day")


@dataclass(frozen=True)
class TableStats:
    """What the Delta log says about a table, without reading its data files."""

    version: int
    row_count: int
    ts_min: datetime | None
    ts_max: datetime | None
    partitions: pl.DataFrame  # year, month, day, files, rows, bytes


@dataclass(frozen=True)
class AppendOutcome:
    rows_written: int
    rows_already_present: int
    new_columns: tuple[str, ...]


def open_table(uri: str, storage_options: dict[str, str], version: int | None = None):
    """The DeltaTable at `uri`, or None when no table exists there yet."""
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options or None)
    except TableNotFoundError:
        return None


def with_partitions(frame: pl.DataFrame) -> pl.DataFrame:
    ts = pl.col("ts")
    return frame.with_columns(
        ts.dt.year().cast(pl.Int32).alias("year"),
        ts.dt.month().cast(pl.Int32).alias("month"),
        ts.dt.day().cast(pl.Int32).alias("day"),
    )


def _polars_schema(table: DeltaTable) -> dict[str, pl.DataType]:
    arrow_schema = pa.schema(table.schema().to_arrow())
    empty = pl.from_arrow(arrow_schema.empty_table())
    return dict(empty.schema)


def check_schema(
    table: DeltaTable | None, frame: pl.DataFrame, dataset: str
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Align `frame` to the table: new columns are allowed (nullable), type changes are not."""
    if table is None:
        return frame, ()
    existing = _polars_schema(table)
    for name, dtype in frame.schema.items():
        if name in existing and existing[name] != dtype:
            raise SchemaChangeError(
                f"dataset {dataset}: column {name!r} is {existing[name]} in the lake but "
                f"{dtype} in the new data; a column's type cannot change",
                hint=f"convert {name!r} to {existing[name]} before ingesting, "
                "or ingest into a new dataset",
            )
    new_columns = tuple(name for name in frame.columns if name not in existing)
    missing = [name for name in existing if name not in frame.columns]
    if missing:
        frame = frame.with_columns(pl.lit(None, dtype=existing[n]).alias(n) for n in missing)
    return frame.select([*existing, *new_columns]), new_columns


def _overlaps(table: DeltaTable, frame: pl.DataFrame) -> bool:
    """Whether the batch's time span meets the table's (from file statistics only)."""
    existing = stats(table)
    if existing.ts_min is None or existing.ts_max is None:
        return existing.row_count > 0
    # Delta keeps timestamp statistics at millisecond precision: widen by one.
    slack = timedelta(milliseconds=1)
    lo, hi = existing.ts_min - slack, existing.ts_max + slack
    return not (frame["ts"].min() > hi or frame["ts"].max() < lo)


def _present_rows(table: DeltaTable, frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """(ts, keys) of rows in the table within the batch's days and time span."""
    days = frame.select(PARTITIONS).unique()
    lo, hi = frame["ts"].min(), frame["ts"].max()
    # Partition filters let the Delta dataset skip files of other days entirely.
    filters = [("year", "in", days["year"].unique().to_list())]
    if days["month"].n_unique() < 12:
        filters.append(("month", "in", days["month"].unique().to_list()))
    if days["day"].n_unique() < 31:
        filters.append(("day", "in", days["day"].unique().to_list()))
    dataset = table.to_pyarrow_dataset(partitions=None)
    import pyarrow.compute as pc

    expr = None
    for column, _op, values in filters:
        part = pc.field(column).isin(values)
        expr = part if expr is None else expr & part
    ts_type = dataset.schema.field("ts").type
    expr = (
        expr
        & (pc.field("ts") >= pa.scalar(lo, ts_type))
        & (pc.field("ts") <= pa.scalar(hi, ts_type))
    )
    present = dataset.to_table(columns=["ts", *keys], filter=expr)
    return pl.from_arrow(present)  # type: ignore[return-value]


def append(
    uri: str,
    frame: pl.DataFrame,
    keys: Sequence[str],
    dataset: str,
    storage_options: dict[str, str],
) -> AppendOutcome:
    """Append rows not yet in the table, in one atomic commit."""
    table = open_table(uri, storage_options)
    frame = with_partitions(frame)
    frame, new_columns = check_schema(table, frame, dataset)
    before = frame.height
    if table is not None and frame.height and _overlaps(table, frame):
        present = _present_rows(table, frame, keys)
        if present.height:
            frame = frame.join(present, on=["ts", *keys], how="anti", nulls_equal=True)
    if frame.height == 0:
        return AppendOutcome(0, before, ())
    write_batches(
        uri,
        frame.to_arrow().to_batches(max_chunksize=1_000_000),
        storage_options,
        create=table is None,
    )
    return AppendOutcome(frame.height, before - frame.height, new_columns)


def overwrite(uri: str, frame: pl.DataFrame, storage_options: dict[str, str]) -> AppendOutcome:
    """Replace the table's rows and schema in one commit (derived datasets are rebuilt
    whole); earlier versions stay readable by time travel."""
    frame = with_partitions(frame)
    write_deltalake(
        uri,
        frame.to_arrow(),
        partition_by=list(PARTITIONS),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=storage_options or None,
    )
    return AppendOutcome(frame.height, 0, ())


def write_batches(
    uri: str,
    batches: Iterable[pa.RecordBatch],
    storage_options: dict[str, str],
    *,
    create: bool,
) -> None:
    """Stream record batches into one Delta commit; nothing is committed if any batch fails."""
    batches = iter(batches)
    first = next(batches)
    reader = pa.RecordBatchReader.from_batches(first.schema, _chain(first, batches))
    write_deltalake(
        uri,
        reader,
        partition_by=list(PARTITIONS),
        mode="append",
        schema_mode=None if create else "merge",
        storage_options=storage_options or None,
    )


def _chain(first: pa.RecordBatch, rest: Iterable[pa.RecordBatch]):
    yield first
    yield from rest


def stats(table: DeltaTable) -> TableStats:
    """Row count, time range and partitions from the Delta log's per-file statistics."""
    actions = pl.from_arrow(table.get_add_actions(flatten=True))
    if isinstance(actions, pl.Series):
        actions = actions.struct.unnest()
    if actions.height == 0:
        empty = pl.DataFrame(
            schema={
                "year": pl.Int32,
                "month": pl.Int32,
                "day": pl.Int32,
                "files": pl.UInt32,
                "rows": pl.Int64,
                "bytes": pl.Int64,
            }
        )
        return TableStats(table.version(), 0, None, None, empty)
    partitions = (
        actions.group_by(
            pl.col("partition.year").cast(pl.Int32).alias("year"),
            pl.col("partition.month").cast(pl.Int32).alias("month"),
            pl.col("partition.day").cast(pl.Int32).alias("day"),
        )
        .agg(
            pl.len().alias("files"),
            pl.col("num_records").sum().cast(pl.Int64).alias("rows"),
            pl.col("size_bytes").sum().cast(pl.Int64).alias("bytes"),
        )
        .sort(PARTITIONS)
    )
    return TableStats(
        version=table.version(),
        row_count=int(actions["num_records"].sum()),
        ts_min=_utc(actions["min.ts"].min()),
        ts_max=_utc(actions["max.ts"].max()),
        partitions=partitions,
    )


def _utc(value) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
