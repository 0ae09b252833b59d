"""The `tsloom` command: a thin layer over the public Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tsloom.errors import TsloomError

app = typer.Typer(
    help="tsloom: fragmented time series to trained, searchable, served models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Bring data into the lake.", no_args_is_help=True)
datasets_app = typer.Typer(help="Look at the datasets in the catalog.", no_args_is_help=True)
retention_app = typer.Typer(help="Remove old partitions.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(datasets_app, name="datasets")
app.add_typer(retention_app, name="retention")

# Wide output when piped (logs, CI): a catalog row should not wrap or be cut.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _split(values: str | None) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()] if values else []


def _units(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        column, sep, unit = pair.partition("=")
        if not sep or not column or not unit:
            raise TsloomError(f"--unit {pair!r} is not COLUMN=UNIT", hint="e.g. --unit co2=ppm")
        out[column.strip()] = unit.strip()
    return out


def _fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def print_ingest(result) -> None:
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


@app.command("config")
def config_cmd() -> None:
    """Show the settings in force and where each comes from."""
    from tsloom.config import load_settings

    for key, value in load_settings().describe().items():
        console.print(f"[bold]{key}[/] = {value}")


@ingest_app.command("file")
def ingest_file_cmd(
    path: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON-lines file")],
    dataset: Annotated[str, typer.Option(help="target dataset, 'database.table'")],
    ts: Annotated[str, typer.Option(help="timestamp column")] = "ts",
    fmt: Annotated[str | None, typer.Option("--format", help="csv, parquet or jsonl")] = None,
    keys: Annotated[str | None, typer.Option(help="key columns, comma-separated")] = None,
    values: Annotated[str | None, typer.Option(help="value columns (default: all others)")] = None,
    ts_format: Annotated[str | None, typer.Option(help="strftime format of the timestamps")] = None,
    ts_unit: Annotated[str | None, typer.Option(help="epoch unit: s, ms, us, ns")] = None,
    tz: Annotated[str | None, typer.Option(help="zone of naive timestamps (default UTC)")] = None,
    unit: Annotated[list[str] | None, typer.Option(help="COLUMN=UNIT, repeatable")] = None,
) -> None:
    """Ingest a file; running it again adds nothing."""
    from tsloom.sources.files import ingest_file

    result = ingest_file(
        path,
        dataset,
        ts=ts,
        fmt=fmt,
        keys=_split(keys),
        values=_split(values) or None,
        ts_format=ts_format,
        ts_unit=ts_unit,
        tz=tz,
        units=_units(unit),
    )
    print_ingest(result)


@datasets_app.command("list")
def datasets_list(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every dataset with its rows, time range and lake version."""
    from tsloom.catalog import Catalog

    infos = Catalog().list()
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        console.print("no datasets yet: try `tsloom ingest file …` or `make demo`")
        return
    table = Table("dataset", "keys", "values", "rows", "from", "to", "version")
    for i in infos:
        table.add_row(
            i.name,
            ",".join(i.keys) or "-",
            ",".join(i.value_columns),
            f"{i.row_count:,}",
            _fmt_time(i.ts_min),
            _fmt_time(i.ts_max),
            str(i.lake_version),
        )
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    name: str,
    partitions: Annotated[bool, typer.Option(help="list every day partition")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Schema, row count, time range and partitions of one dataset."""
    from tsloom.lake.inspect import describe_dataset

    report = describe_dataset(name)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    info = report.info
    console.print(f"[bold]{info.name}[/]  ({info.lake_uri})")
    console.print(
        f"{info.row_count:,} rows from {_fmt_time(info.ts_min)} to {_fmt_time(info.ts_max)} UTC, "
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
            f"last ingestion {_fmt_time(last.finished_at)} from {last.origin}: "
            f"{last.rows_written:,} new of {last.rows_in:,}"
        )
    for source, mark in report.watermarks.items():
        console.print(f"high-water mark {mark} for {source}")


@datasets_app.command("read")
def datasets_read(
    name: str,
    start: Annotated[str | None, typer.Option("--from", help="first time (inclusive)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last time (exclusive)")] = None,
    columns: Annotated[str | None, typer.Option(help="value columns, comma-separated")] = None,
    key: Annotated[list[str] | None, typer.Option(help="KEY=VALUE filter, repeatable")] = None,
    version: Annotated[int | None, typer.Option(help="lake version (time travel)")] = None,
    limit: Annotated[int, typer.Option(help="rows to print")] = 20,
    out: Annotated[Path | None, typer.Option(help="write all rows to .csv or .parquet")] = None,
) -> None:
    """Read rows back from the lake."""
    from tsloom.lake import read_dataset

    keys: dict[str, list[str]] = {}
    for pair in key or []:
        k, sep, v = pair.partition("=")
        if not sep:
            raise TsloomError(f"--key {pair!r} is not KEY=VALUE")
        keys.setdefault(k, []).append(v)
    frame = read_dataset(
        name,
        start=start,
        end=end,
        columns=_split(columns) or None,
        keys=keys or None,
        version=version,
    )
    if out is not None:
        if out.suffix == ".parquet":
            frame.write_parquet(out)
        else:
            frame.write_csv(out)
        console.print(f"wrote {frame.height:,} rows to {out}")
        return
    console.print(f"{frame.height:,} rows")
    console.print(str(frame.head(limit)))


@datasets_app.command("history")
def datasets_history(name: str) -> None:
    """Lake versions of a dataset, newest first (for time travel with `read --version`)."""
    from tsloom.catalog import Catalog
    from tsloom.lake.history import dataset_history

    Catalog().get(name)
    table = Table("version", "time (UTC)", "operation", "rows added", "rows removed")
    for h in dataset_history(name):
        table.add_row(
            str(h["version"]),
            _fmt_time(h["time"]),
            str(h["operation"]),
            str(h["rows_added"] or ""),
            str(h["rows_removed"] or ""),
        )
    console.print(table)


@retention_app.command("apply")
def retention_apply(
    dataset: str,
    older_than: Annotated[str, typer.Option(help="age, e.g. 90d, 12w")],
    yes: Annotated[bool, typer.Option("--yes", help="really delete (default: dry run)")] = False,
) -> None:
    """Delete whole day partitions older than --older-than and vacuum their files."""
    from tsloom.lake.retention import apply_retention
    from tsloom.timeutil import parse_duration

    plan = apply_retention(dataset, parse_duration(older_than), dry_run=not yes)
    verb = "removed" if plan.applied else "would remove"
    console.print(
        f"{dataset}: {verb} {plan.partitions.height} day partitions before "
        f"{plan.cutoff:%Y-%m-%d} ({plan.rows:,} rows)"
    )
    for row in plan.partitions.head(10).iter_rows(named=True):
        console.print(
            f"  year={row['year']}/month={row['month']}/day={row['day']}: {row['rows']:,} rows"
        )
    if plan.partitions.height > 10:
        console.print(f"  … and {plan.partitions.height - 10} more")
    if plan.applied:
        console.print(f"vacuumed {plan.files_vacuumed} files")
    elif plan.partitions.height:
        console.print("dry run: nothing deleted; add --yes to do it")


def main() -> None:
    """Entry point: user errors become a message and a hint, never a traceback."""
    try:
        app()
    except TsloomError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
