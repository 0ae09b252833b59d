"""The version history of a dataset's Delta table (what each commit did)."""

from __future__ import annotations

from datetime import UTC, datetime

from tsloom.config import Settings, load_settings
from tsloom.lake import table as lake_table
from tsloom.lake.storage import dataset_uri


def dataset_history(dataset: str, *, settings: Settings | None = None) -> list[dict]:
    """Newest first: version, time, operation and the rows it added or removed."""
    settings = settings or load_settings()
    uri = dataset_uri(settings, dataset)
    table = lake_table.open_table(uri, settings.storage_options(uri))
    if table is None:
        return []
    out = []
    for entry in table.history():
        metrics = entry.get("operationMetrics") or {}
        out.append(
            {
                "version": entry.get("version"),
                "time": datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
                "operation": entry.get("operation"),
                "rows_added": metrics.get("num_added_rows", metrics.get("numOutputRows")),
                "rows_removed": metrics.get("num_deleted_rows"),
            }
        )
    return out
