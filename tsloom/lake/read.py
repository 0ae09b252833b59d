"""Read a dataset back as a polars frame: by time range, columns, key filter and version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tsloom.catalog import Catalog
from tsloom.config import Settings, load_settings
from tsloom.errors import TsloomError
from tsloom.lake.storage import dataset_uri
from tsloom.lake.table import PARTITIONS, open_table
from tsloom.timeutil import to_utc


def read_dataset(
    dataset: str,
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    columns: Sequence[str] | None = None,
    keys: Mapping[str, Sequence[object] | object] | None = None,
    version: int | None = None,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Rows of `dataset` with `start <= ts < end`, sorted by keys and ts.

    `columns` selects value columns (ts and key columns always come along); `keys` filters
    key columns to one or several values; `version` reads an earlier lake version.
    """
    settings = settings or load_settings()
    info = Catalog(settings).get(dataset)
    uri = dataset_uri(settings, dataset)
    table = open_table(uri, settings.storage_options(uri), version=None)
    if table is None:
        raise TsloomError(
            f"dataset {dataset} is in the catalog but its lake table at {uri} is gone",
            hint="re-ingest it, or check TSLOOM_LAKE_URL",
        )
    if version is not None:
        latest = table.version()
        if not 0 <= version <= latest:
            raise TsloomError(
                f"dataset {dataset} has lake versions 0 to {latest}; "
                f"version {version} does not exist",
                hint="see `tsloom datasets history` for the versions",
            )
        table.load_as_version(version)
    arrow_ds = table.to_pyarrow_dataset()
    available = [n for n in arrow_ds.schema.names if n not in PARTITIONS]
    wanted = ["ts", *info.keys]
    if columns is None:
        wanted += [c for c in available if c not in wanted]
    else:
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise TsloomError(
                f"dataset {dataset} has no column(s) {', '.join(map(repr, unknown))}",
                hint=f"its columns are {', '.join(available)}",
            )
        wanted += [c for c in columns if c not in wanted]
    expr = _filter(arrow_ds.schema, start, end, keys, info.keys, dataset)
    try:
        result = pl.from_arrow(arrow_ds.to_table(columns=wanted, filter=expr))
    except FileNotFoundError as exc:
        raise TsloomError(
            f"dataset {dataset}: files of lake version {version} were removed by retention",
            hint="read a later version; retention vacuums the files of deleted partitions",
        ) from exc
    return result.sort([*info.keys, "ts"])  # type: ignore[union-attr]


def _filter(schema: pa.Schema, start, end, keys, key_columns, dataset: str):
    expr = None

    def both(part):
        nonlocal expr
        expr = part if expr is None else expr & part

    ts_type = schema.field("ts").type
    if start is not None:
        lo = to_utc(start)
        both(pc.field("year") >= lo.year)
        both(pc.field("ts") >= pa.scalar(lo, ts_type))
    if end is not None:
        hi = to_utc(end)
        both(pc.field("year") <= hi.year)
        both(pc.field("ts") < pa.scalar(hi, ts_type))
    for column, values in (keys or {}).items():
        if column not in key_columns:
            raise TsloomError(
                f"dataset {dataset}: {column!r} is not a key column",
                hint=f"key columns are {', '.join(key_columns) or '(none)'}",
            )
        if isinstance(values, str | int | float) or values is None:
            values = [values]
        value_type = schema.field(column).type
        if pa.types.is_integer(value_type):
            values = [int(v) for v in values]
        elif pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
            values = [str(v) for v in values]
        both(pc.field(column).isin(values))
    return expr
