"""Rich renderings shared by the CLI and the demo: ingestion results, dataset reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # type names only: the CLI imports this module at start-up
    from tsloom.ingest import IngestResult
    from tsloom.lake.inspect import DatasetReport


def fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_ingest(console: Console, result: IngestResult) -> None:
    """One line per ingestion, in words a person can check."""
    parts = [
        f"[bold]{result.dataset}[/]: {result.rows_written:,} new rows",
        f"of {result.rows_in:,} read",
    ]
    if result.rows_already_present:
        parts.append(f"{result.rows_already_present:,} already in the lake")
    if result.duplicates_dropped:
        parts.append(f"{result.duplicates_dropped:,} duplicate (keys, ts) rows in the input")
    console.print(", ".join(parts) + f"; lake version {result.lake_version}")
    if result.new_columns:
        console.print(
            f"[yellow]note:[/] new column(s) {', '.join(result.new_columns)} added as nullable; "
            "earlier rows read as null"
        )
    if result.ts_unit_guessed:
        console.print(
            f"[yellow]note:[/] epoch timestamps read as {result.ts_unit_guessed}; "
            "pass --ts-unit to be explicit"
        )


def render_dataset(console: Console, report: DatasetReport, *, partitions: bool = False) -> None:
    """Schema, extent and partitions of one dataset."""
    info = report.info
    console.print(f"[bold]{info.name}[/]  ({info.lake_uri})")
    console.print(
        f"{info.row_count:,} rows from {fmt_time(info.ts_min)} to {fmt_time(info.ts_max)} UTC, "
        f"lake version {info.lake_version}"
    )
    schema = Table("column", "role", "type", "unit")
    schema.add_row("ts", "time", "timestamp (UTC)", f"from {info.ts_column!r}")
    for c in info.columns:
        schema.add_row(c.name, c.role, c.dtype, c.unit or "")
    console.print(schema)
    parts = report.partitions
    console.print(
        f"partitions year=/month=/day=: {parts.height} days, {int(parts['files'].sum() or 0)} files"
    )
    if partitions:
        listing = Table("partition", "files", "rows", "bytes")
        for row in parts.iter_rows(named=True):
            listing.add_row(
                f"year={row['year']}/month={row['month']}/day={row['day']}",
                str(row["files"]),
                f"{row['rows']:,}",
                f"{row['bytes']:,}",
            )
    else:
        listing = Table("year", "month", "days", "rows")
        for row in report.months().iter_rows(named=True):
            listing.add_row(
                str(row["year"]),
                f"{row['month']:02d}",
                f"{row['days']} ({row['first_day']}–{row['last_day']})",
                f"{row['rows']:,}",
            )
    console.print(listing)
    if report.runs:
        last = report.runs[0]
        console.print(
            f"last ingestion {fmt_time(last.finished_at)} from {last.origin}: "
            f"{last.rows_written:,} new of {last.rows_in:,}"
        )
    for source, mark in report.watermarks.items():
        console.print(f"high-water mark {mark} for {source}")


def render_clean(console: Console, run) -> None:
    """What `tsloom clean` did, step by step, and where the results are."""
    result = run.result
    console.print(
        f"[bold]{run.dataset}[/] (lake version {run.parent_version}) → [bold]{run.output}[/]: "
        f"{result.rows_in:,} rows in, {result.frame.height:,} out"
    )
    table = Table("step", "what happened")
    for step in result.steps:
        details = ", ".join(f"{k}={v}" for k, v in step.items() if k != "step")
        table.add_row(step["step"], details)
    console.print(table)
    periods = result.periods_list()
    shown = periods[:8]
    for p in shown:
        label = ", ".join(f"{k}={v}" for k, v in p["keys"].items()) or "series"
        console.print(f"period {p['period']} (confidence {p['confidence']:.2f}) for {label}")
    if len(periods) > len(shown):
        console.print(f"… and {len(periods) - len(shown)} more series")
    console.print(f"report: {run.report.html}")


def render_training(console: Console, run) -> None:
    """Ids, metrics and where the model belongs, after `tsloom train`."""
    m = run.result.metrics
    console.print(f"integration id  [bold]{run.integration_id}[/]")
    console.print(f"param id        [bold]{run.param_id}[/]")
    console.print(
        f"{run.params.method} on {escape(run.params.target)}: {run.result.n_train:,} training and "
        f"{run.result.n_valid:,} validation windows, best epoch {run.result.best_epoch} "
        f"of {len(run.result.history)}"
    )
    console.print(
        f"validation RMSE {m['rmse']:.4f}  MAE {m['mae']:.4f}  MAPE {m['mape']:.2f}% "
        f"(scaled RMSE {m['rmse_scaled']:.4f})"
    )
    console.print(f"model path      {escape(run.model_path())}", soft_wrap=True)


def render_model_tree(console: Console, tree: dict) -> None:
    """The registry's search tree, one line per model."""
    from rich.tree import Tree

    models = tree.get("models", tree)
    if not models:
        console.print("no models match")
        return
    root = Tree("models")
    for iid, targets in models.items():
        branch = root.add(f"integration {iid}")
        for target, methods in targets.items():
            t = branch.add(escape(target))
            for method, leaves in methods.items():
                m = t.add(method)
                for pid, leaf in leaves.items():
                    metrics = leaf.get("metrics", {})
                    rmse = metrics.get("rmse")
                    m.add(
                        escape(f"{pid}  [{leaf.get('stage', '')}]  ")
                        + (f"RMSE {rmse:.4f}" if isinstance(rmse, float) else "")
                    )
    console.print(root)
