"""File sources: CSV, Parquet and JSON lines, read with polars and ingested as one commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from tsloom.config import Settings
from tsloom.errors import InputDataError
from tsloom.ingest import IngestResult, ingest_frame

FORMATS = ("csv", "parquet", "jsonl")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def detect_format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = _SUFFIXES.get(suffixes[-1].lower()) if suffixes else None
    if fmt is None:
        raise InputDataError(
            f"{path}: cannot tell the file format from its name",
            hint=f"pass --format with one of {', '.join(FORMATS)}",
        )
    return fmt


def read_file(
    path: Path, *, fmt: str | None = None, ts: str | None = None, separator: str = ","
) -> pl.DataFrame:
    """Read a whole file; timestamps stay text so that bad ones can be reported by row."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file", hint="check the path")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path} is empty", hint="nothing was written")
    fmt = fmt or detect_format(path)
    try:
        if fmt == "csv":
            overrides = {ts: pl.String} if ts else None
            return _read_csv(path, separator if path.suffix != ".tsv" else "\t", overrides)
        if fmt == "parquet":
            return pl.read_parquet(path)
        if fmt == "jsonl":
            return pl.read_ndjson(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputDataError(
            f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}",
            hint="check the file format and separator",
        ) from exc
    raise InputDataError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")


def _read_csv(path: Path, separator: str, overrides: dict | None) -> pl.DataFrame:
    try:
        return pl.read_csv(
            path, separator=separator, schema_overrides=overrides, infer_schema_length=10_000
        )
    except pl.exceptions.ComputeError:
        # A column whose type changes after the inferred prefix: read all as text so the
        # normaliser can point at the offending row.
        return pl.read_csv(path, separator=separator, infer_schema=False)


def ingest_file(
    path: str | Path,
    dataset: str,
    *,
    ts: str,
    fmt: str | None = None,
    keys: Sequence[str] = (),
    values: Sequence[str] | None = None,
    ts_format: str | None = None,
    ts_unit: str | None = None,
    tz: str | None = None,
    units: Mapping[str, str] | None = None,
    separator: str = ",",
    settings: Settings | None = None,
) -> IngestResult:
    """Ingest one CSV, Parquet or JSON-lines file into `dataset` (idempotently)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    frame = read_file(path, fmt=fmt, ts=ts, separator=separator)
    first_row, label = {"csv": (2, "line"), "jsonl": (1, "line")}.get(fmt, (1, "row"))
    return ingest_frame(
        frame,
        dataset,
        ts=ts,
        keys=keys,
        values=values,
        ts_format=ts_format,
        ts_unit=ts_unit,
        tz=tz,
        units=units,
        origin=str(path),
        first_row=first_row,
        row_label=label,
        settings=settings,
    )
