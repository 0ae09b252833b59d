"""`clean_dataset`: run the clean pipeline on a lake dataset and write the cleaned series
as a new dataset whose lineage names the raw dataset's version and every step.

Order matters for safety: compute, render the report, then write the lake and record
lineage, so a failure anywhere leaves no half-made dataset behind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tsloom.catalog import Catalog
from tsloom.config import Settings, load_settings
from tsloom.ingest import IngestResult, ingest_frame
from tsloom.lake import read_dataset
from tsloom.names import split_dataset_name, validate_dataset_name
from tsloom.prep.pipeline import CleanConfig, CleanResult, clean_frame
from tsloom.reports import ReportPaths
from tsloom.reports.clean_report import render_clean_report


@dataclass(frozen=True)
class CleanRun:
    dataset: str
    output: str
    parent_version: int | None
    result: CleanResult
    written: IngestResult
    report: ReportPaths


def default_output_name(dataset: str) -> str:
    database, table = split_dataset_name(dataset)
    return f"{database}.{table[:57]}_clean"


def _config_dict(config: CleanConfig) -> dict[str, Any]:
    out = asdict(config)
    out["period"] = str(config.period) if config.period is not None else "auto"
    return out


def clean_dataset(
    dataset: str,
    *,
    output: str | None = None,
    config: CleanConfig | None = None,
    columns: list[str] | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    report_dir: Path | None = None,
    settings: Settings | None = None,
) -> CleanRun:
    """Clean `dataset` (at its current lake version) into `output` (default
    `<database>.<table>_clean`), with a JSON + HTML report."""
    settings = settings or load_settings()
    config = config or CleanConfig()
    catalog = Catalog(settings)
    info = catalog.get(dataset)
    output = validate_dataset_name(output or default_output_name(dataset))
    version = info.lake_version
    raw = read_dataset(
        dataset, start=start, end=end, columns=columns, version=version, settings=settings
    )
    result = clean_frame(raw, keys=info.keys, columns=columns, config=config)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = {
        "dataset": dataset,
        "output_dataset": output,
        "parent_version": version,
        "config": _config_dict(config),
        "created_at": stamp,
        **result.to_dict(),
    }
    report = render_clean_report(
        report_dir or settings.home / "reports" / dataset,
        f"clean-{stamp}",
        payload,
        raw,
        result.frame,
        keys=info.keys,
        columns=result.columns,
    )
    units = {c.name: c.unit for c in info.columns if c.role == "value" and c.unit}
    written = ingest_frame(
        result.output,
        output,
        ts="ts",
        keys=info.keys,
        units={c: u for c, u in units.items() if c in result.columns},
        origin=f"clean {dataset} at lake version {version}",
        mode="overwrite",
        settings=settings,
    )
    steps = [
        {
            "step": "read",
            "dataset": dataset,
            "lake_version": version,
            "start": str(start) if start else None,
            "end": str(end) if end else None,
        },
        *result.steps,
    ]
    catalog.set_lineage(
        output,
        parent=dataset,
        parent_version=version,
        steps=steps,
        report_path=str(report.json),
        lake_version=written.lake_version,
    )
    return CleanRun(dataset, output, version, result, written, report)
