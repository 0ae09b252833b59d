"""The `tsloom` command: a thin layer over the public Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tsloom.errors import TsloomError
from tsloom.render import (
    fmt_time,
    render_clean,
    render_dataset,
    render_ingest,
    render_model_tree,
    render_training,
)

app = typer.Typer(
    help="tsloom: fragmented time series to trained, searchable, served models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Bring data into the lake.", no_args_is_help=True)
datasets_app = typer.Typer(help="Look at the datasets in the catalog.", no_args_is_help=True)
retention_app = typer.Typer(help="Remove old partitions.", no_args_is_help=True)
models_app = typer.Typer(
    help="The model registry: search, show, promote, delete, gc.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(datasets_app, name="datasets")
app.add_typer(retention_app, name="retention")
app.add_typer(models_app, name="models")
flow_app = typer.Typer(
    help="AMML workflows: compile, save (versioned), run and their run history.",
    no_args_is_help=True,
)
app.add_typer(flow_app, name="flow")
spec_app = typer.Typer(
    help="AMML model specs (YAML), stored as name:version.", no_args_is_help=True
)
app.add_typer(spec_app, name="model-spec")

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


@app.command("config")
def config_cmd() -> None:
    """Show the settings in force and where each comes from."""
    from tsloom.config import load_settings

    for key, value in load_settings().describe().items():
        console.print(f"[bold]{key}[/] = {value}")


@app.command("demo")
def demo_cmd(
    days: Annotated[int, typer.Option(help="days of synthetic data")] = 14,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
) -> None:
    """Generate synthetic sensors, ingest them and show the catalog (no servers needed)."""
    from tsloom.demo import run_demo

    run_demo(console, days=days, seed=seed)


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option(help="folder for <dataset>.csv and .truth.json")],
    days: Annotated[int, typer.Option(help="days of data per source")] = 14,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
) -> None:
    """Write the synthetic demo sources (5 min, 10 min ± 49 s, 1 h) with their ground truth."""
    from tsloom.sources.synthetic import write_demo

    for f in write_demo(out, days=days, seed=seed):
        console.print(
            f"{f.path}: {f.rows:,} rows of {f.dataset} (ts column {f.ts_column!r}, "
            f"keys {', '.join(f.key_columns)}; ingest with "
            f"`tsloom ingest file {f.path} --dataset {f.dataset} --ts {f.ts_column} "
            f"--keys {','.join(f.key_columns)}`)"
        )


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

    with console.status(f"ingesting {path.name} into {dataset}"):
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
    render_ingest(console, result)


@ingest_app.command("sql")
def ingest_sql_cmd(
    url: Annotated[str, typer.Argument(help="database URL, e.g. postgresql://user@host/db")],
    table: Annotated[str, typer.Option(help="table or view to read")],
    ts_column: Annotated[str, typer.Option(help="timestamp column that only grows")],
    dataset: Annotated[str, typer.Option(help="target dataset, 'database.table'")],
    keys: Annotated[str | None, typer.Option(help="key columns, comma-separated")] = None,
    values: Annotated[str | None, typer.Option(help="value columns (default: numeric)")] = None,
    tz: Annotated[str | None, typer.Option(help="zone of naive timestamps (default UTC)")] = None,
    every: Annotated[
        str | None, typer.Option(help="poll interval, e.g. 10s (default: once)")
    ] = None,
    lag: Annotated[str, typer.Option(help="leave rows younger than this for later")] = "0s",
    batch_size: Annotated[int, typer.Option(help="rows per lake commit")] = 50_000,
) -> None:
    """Incremental ingestion by a timestamp column (JDBC `timestamp` mode), once or polling."""
    from tsloom.sources.sql import ingest_sql, poll_sql

    common = dict(
        dataset=dataset,
        ts_column=ts_column,
        keys=_split(keys),
        values=_split(values) or None,
        tz=tz,
        lag=lag,
        batch_size=batch_size,
    )

    def show(summary) -> None:
        console.print(
            f"[bold]{summary.dataset}[/]: {summary.rows_written:,} new rows of "
            f"{summary.rows_read:,} read; high-water mark {summary.watermark or '-'}; "
            f"lake version {summary.lake_version}"
        )

    if every is None:
        show(ingest_sql(url, table, **common))
        return
    console.print(f"polling {table} every {every}; Ctrl-C to stop")
    total = poll_sql(url, table, every=every, on_poll=show, **common)
    console.print(f"stopped after {total.polls} polls: {total.rows_written:,} new rows in all")


@ingest_app.command("mqtt")
def ingest_mqtt_cmd(
    topic: Annotated[list[str], typer.Option(help="topic filter, repeatable ('sensors/#')")],
    dataset: Annotated[str, typer.Option(help="target dataset, 'database.table'")],
    mapping: Annotated[Path, typer.Option(help="YAML: time, time_unit, keys, values, units")],
    host: Annotated[str, typer.Option(help="broker host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="broker port")] = 1883,
    batch_size: Annotated[int, typer.Option(help="readings per lake commit")] = 1000,
    batch_age: Annotated[str, typer.Option(help="commit an open batch this old")] = "5s",
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (session)")] = None,
    max_messages: Annotated[int | None, typer.Option(help="stop after N messages")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="stop after N idle seconds")] = None,
) -> None:
    """Subscribe to MQTT topics and append readings in batches until interrupted."""
    from tsloom.sources.mqtt import MqttIngestor, stop_on_signals

    ingestor = MqttIngestor(
        dataset,
        topic,
        mapping,
        host=host,
        port=port,
        batch_size=batch_size,
        batch_age=batch_age,
        client_id=client_id,
        on_batch=lambda result, stats: console.print(
            f"committed {stats.batches} batch(es): {stats.rows_written:,} new rows, "
            f"{stats.malformed} malformed"
        ),
    )
    console.print(f"subscribed to {', '.join(topic)} on {host}:{port}; Ctrl-C to stop")
    with stop_on_signals(ingestor):
        stats = ingestor.run(max_messages=max_messages, idle_timeout=idle_timeout)
    console.print(
        f"{dataset}: {stats.messages:,} messages, {stats.rows_written:,} new rows, "
        f"{stats.malformed} malformed ({stats.stop_reason}); lake version {stats.lake_version}"
    )
    if stats.malformed and stats.dead_letter:
        console.print(f"malformed payloads kept in {stats.dead_letter}")


def _key_filter(pairs: list[str] | None) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for pair in pairs or []:
        k, sep, v = pair.partition("=")
        if not sep:
            raise TsloomError(f"--key {pair!r} is not KEY=VALUE", hint="e.g. --key sensor_id=1")
        keys.setdefault(k, []).append(v)
    return keys


@app.command("clean")
def clean_cmd(
    dataset: str,
    period: Annotated[
        str, typer.Option(help="'auto' (estimate per series) or e.g. 10min")
    ] = "auto",
    impute: Annotated[
        str, typer.Option(help="time, linear, ffill, seasonal, kalman, none")
    ] = "time",
    anomalies: Annotated[str, typer.Option(help="iqr, residual or none")] = "iqr",
    treat: Annotated[str, typer.Option(help="clip, drop, ema, null or none")] = "clip",
    dedup: Annotated[
        str, typer.Option(help="same-timestamp conflicts: first, last, mean")
    ] = "first",
    iqr_k: Annotated[float, typer.Option(help="IQR multiplier (Tukey: 1.5 mild, 3 far out)")] = 3.0,
    max_fill: Annotated[int | None, typer.Option(help="leave gaps longer than N points")] = None,
    output: Annotated[
        str | None, typer.Option(help="output dataset (default <name>_clean)")
    ] = None,
    start: Annotated[str | None, typer.Option("--from", help="first time (inclusive)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last time (exclusive)")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="where to write the report")] = None,
) -> None:
    """Clean a dataset into a new one (with lineage) and write a JSON + HTML report."""
    from tsloom.clean import clean_dataset
    from tsloom.prep.pipeline import CleanConfig
    from tsloom.timeutil import parse_duration

    config = CleanConfig(
        period=None if period == "auto" else parse_duration(period),
        dedup=dedup,
        max_fill=max_fill,
        anomalies=anomalies,
        iqr_k=iqr_k,
        treat=treat,
        impute=impute,
    )
    with console.status(f"cleaning {dataset}"):
        run = clean_dataset(
            dataset, output=output, config=config, start=start, end=end, report_dir=report_dir
        )
    render_clean(console, run)


@app.command("analyze")
def analyze_cmd(
    dataset: str,
    column: Annotated[list[str] | None, typer.Option(help="value column, repeatable")] = None,
    key: Annotated[list[str] | None, typer.Option(help="KEY=VALUE filter, repeatable")] = None,
    start: Annotated[str | None, typer.Option("--from", help="first time (inclusive)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last time (exclusive)")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder")] = None,
) -> None:
    """Statistics, autocorrelation, stationarity, decomposition and correlations: a report."""
    from tsloom.analyze import analyze_dataset, write_analysis_report

    with console.status(f"analysing {dataset}"):
        result = analyze_dataset(
            dataset, columns=column or None, keys=_key_filter(key) or None, start=start, end=end
        )
        paths = write_analysis_report(result, out)
    console.print(f"analysis of [bold]{dataset}[/]: {paths.html}  (data: {paths.json})")


@app.command("compare-treatments")
def compare_treatments_cmd(
    dataset: str,
    column: Annotated[str, typer.Option(help="value column to forecast")],
    key: Annotated[list[str] | None, typer.Option(help="KEY=VALUE: which series")] = None,
    anomalies: Annotated[str, typer.Option(help="iqr or residual")] = "iqr",
    lags: Annotated[int, typer.Option(help="past values the baseline sees")] = 24,
) -> None:
    """Forecast error (RMSE, MAE, MAPE) of one baseline model per anomaly treatment."""
    from tsloom.treatments import compare_dataset_treatments

    comparison = compare_dataset_treatments(
        dataset, column, keys=_key_filter(key) or None, detector=anomalies, lags=lags
    )
    table = Table("treatment", "RMSE", "MAE", "MAPE %", title=f"{dataset} {column}")
    for s in comparison.scores:
        table.add_row(s.treatment, f"{s.rmse:.4f}", f"{s.mae:.4f}", f"{s.mape:.2f}")
    console.print(table)
    console.print(
        f"{comparison.scores[0].flagged} points flagged by {anomalies}; best: "
        f"[bold]{comparison.best}[/] (baseline: ridge regression on {lags} lags, "
        "last 20% held out)"
    )


def _tables(tables: list[str] | None, more: list[str] | None) -> list[str]:
    """`--tables a.x b.y` (click leaves `b.y` as a positional), `--tables a.x,b.y` or both."""
    names = [t for item in [*(tables or []), *(more or [])] for t in _split(item)]
    if not names:
        raise TsloomError("no tables given", hint="e.g. --tables airq.gwangju airq.seoul")
    return names


def _integration_spec(tables, freq, start, end, downsample, upsample, gaps):
    from tsloom.integrate import IntegrationSpec

    return IntegrationSpec.from_tables(
        tables, freq, start=start, end=end, downsample=downsample, upsample=upsample, gaps=gaps
    )


@app.command("integrate")
def integrate_cmd(
    more_tables: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
    tables: Annotated[list[str] | None, typer.Option(help="datasets: --tables a.x b.y")] = None,
    freq: Annotated[str, typer.Option(help="reference frequency, e.g. 10min, 1h")] = "1h",
    start: Annotated[str | None, typer.Option("--from", help="first time (inclusive)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last time (exclusive)")] = None,
    downsample: Annotated[str, typer.Option(help="mean, min, max, last, sum")] = "mean",
    upsample: Annotated[str, typer.Option(help="interpolate, ffill, none")] = "interpolate",
    gaps: Annotated[str, typer.Option(help="interpolate, ffill, drop, keep")] = "interpolate",
    save: Annotated[Path | None, typer.Option(help="write the frame (.parquet or .csv)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Align tables of different periods on one grid; print the integration id."""
    from tsloom.integrate import integrate
    from tsloom.integrate.store import save_integration

    spec = _integration_spec(
        _tables(tables, more_tables), freq, start, end, downsample, upsample, gaps
    )
    with console.status("integrating"):
        result = integrate(spec)
    save_integration(result)
    if save is not None:
        if save.suffix == ".csv":
            result.frame.write_csv(save)
        else:
            result.frame.write_parquet(save)
    if as_json:
        typer.echo(json.dumps(result.to_dict(preview=5), indent=2, default=str))
        return
    rows, cols = result.frame.shape
    console.print(f"integration id [bold]{result.id}[/]  ({', '.join(spec.tables)})")
    console.print(
        f"{rows:,} rows × {cols - 1} features every {freq} from {fmt_time(result.start)} "
        f"to {fmt_time(result.end)} UTC"
    )
    console.print(str(result.frame.head(5)), markup=False)
    if save is not None:
        console.print(f"saved to {save}")


@app.command("train")
def train_cmd(
    more_tables: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
    tables: Annotated[list[str] | None, typer.Option(help="datasets: --tables a.x b.y")] = None,
    params_file: Annotated[
        Path | None, typer.Option("--params", help="YAML with learning parameters")
    ] = None,
    target: Annotated[str | None, typer.Option(help="target feature (bare column ok)")] = None,
    features: Annotated[str | None, typer.Option(help="training features, comma-separated")] = None,
    freq: Annotated[str | None, typer.Option(help="reference frequency, e.g. 1h")] = None,
    input_width: Annotated[str | None, typer.Option(help="input span, e.g. 48h")] = None,
    output_width: Annotated[str | None, typer.Option(help="output span, e.g. 24h")] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="vanilla, stacked, bidirectional, cnn_lstm, conv_lstm, seasonal_naive, dlinear"
        ),
    ] = None,
    split: Annotated[float | None, typer.Option(help="training share, e.g. 0.8")] = None,
    output: Annotated[str | None, typer.Option(help="step, mean, min, max")] = None,
    scaler: Annotated[
        str | None, typer.Option(help="zscore, minmax, robust, robust_log, log")
    ] = None,
    hidden_size: Annotated[int | None, typer.Option()] = None,
    layers: Annotated[int | None, typer.Option()] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    patience: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto")] = None,
    start: Annotated[str | None, typer.Option("--from", help="first time (inclusive)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last time (exclusive)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """Integrate tables and train one forecaster from one set of learning parameters."""
    import yaml

    from tsloom.forecast.job import train_on_integration

    raw: dict = {}
    if params_file is not None:
        try:
            raw = yaml.safe_load(params_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TsloomError(f"cannot read {params_file}: {exc}") from exc
        if not isinstance(raw, dict):
            raise TsloomError(f"{params_file} must hold a mapping of learning parameters")
    flags = dict(
        target=target,
        features=_split(features) or None,
        freq=freq,
        input_width=input_width,
        output_width=output_width,
        method=method,
        split=split,
        output=output,
        scaler=scaler,
        hidden_size=hidden_size,
        layers=layers,
        dropout=dropout,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        patience=patience,
        seed=seed,
        device=device,
    )
    raw.update({k: v for k, v in flags.items() if v is not None})
    raw_tables = raw.pop("tables", None)
    table_list = _tables(tables or raw_tables, more_tables)
    spec_freq = raw.get("freq") or "1h"
    spec = _integration_spec(
        table_list, spec_freq, start, end, "mean", "interpolate", "interpolate"
    )
    run = train_on_integration(spec, raw, progress=not as_json)
    from tsloom.registry import register

    ref = register(run)
    summary = {**run.summary(), "ref": ref}
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    render_training(console, run)
    console.print(f"registered as   {escape(ref)}", soft_wrap=True)


@models_app.command("search")
def models_search(
    more_tables: Annotated[list[str] | None, typer.Argument(hidden=True)] = None,
    tables: Annotated[list[str] | None, typer.Option(help="datasets: --tables a.x b.y")] = None,
    target: Annotated[str | None, typer.Option(help="target feature (short name ok)")] = None,
    method: Annotated[str | None, typer.Option(help="learning method")] = None,
    stage: Annotated[str | None, typer.Option(help="staged, production, archived")] = None,
    metric: Annotated[str | None, typer.Option(help="metric to filter and sort by")] = None,
    max_value: Annotated[float | None, typer.Option(help="keep models with metric ≤ this")] = None,
    start: Annotated[str | None, typer.Option("--from", help="trained on data after")] = None,
    end: Annotated[str | None, typer.Option("--to", help="trained on data before")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the tree as JSON")] = False,
    refs: Annotated[bool, typer.Option("--refs", help="only the refs, one per line")] = False,
) -> None:
    """Models by integration id → target → method → param id, as the source design walks."""
    from tsloom.registry import search

    names = [t for item in [*(tables or []), *(more_tables or [])] for t in _split(item)]
    tree = search(
        names or None,
        target=target,
        method=method,
        stage=stage,
        metric=metric,
        max_value=max_value,
        start=start,
        end=end,
    )
    if refs:
        for targets in tree.values():
            for methods in targets.values():
                for models in methods.values():
                    for leaf in models.values():
                        typer.echo(leaf["ref"])
        return
    if as_json:
        typer.echo(json.dumps(tree, indent=2, default=str))
        return
    render_model_tree(console, tree)


@models_app.command("show")
def models_show(ref: str) -> None:
    """One model: parameters, metrics, stage, lineage and whether its files verify."""
    from tsloom.registry import show

    typer.echo(json.dumps(show(ref), indent=2, default=str))


@models_app.command("promote")
def models_promote(
    ref: str,
    stage: Annotated[str, typer.Option(help="staged, production, archived")] = "production",
    archive_others: Annotated[bool, typer.Option(help="archive other production models")] = False,
) -> None:
    """Move a model to another stage."""
    from tsloom.registry import promote

    result = promote(ref, stage, archive_others=archive_others)
    console.print(f"{escape(str(result.get('ref', ref)))} is now {stage}")


@models_app.command("delete")
def models_delete(
    ref: str,
    yes: Annotated[bool, typer.Option("--yes", help="really delete")] = False,
) -> None:
    """Remove a model's files and its metadata row together."""
    from tsloom.registry import delete

    if not yes:
        raise TsloomError(f"not deleting {ref} without --yes", hint="add --yes to delete it")
    delete(ref)
    console.print(f"deleted {escape(ref)}")


@models_app.command("gc")
def models_gc(
    dry_run: Annotated[bool, typer.Option(help="only say what would be removed")] = False,
) -> None:
    """Remove orphaned model folders, unreferenced scalers and dangling rows."""
    from tsloom.registry import gc

    report = gc(dry_run=dry_run)
    for kind, items in report.items():
        if isinstance(items, list) and items:
            console.print(f"{kind}: {len(items)}")
            for item in items[:10]:
                console.print(f"  {escape(str(item))}")
    console.print("dry run: nothing removed" if dry_run else "done")


@app.command("predict")
def predict_cmd(
    ref: str,
    csv: Annotated[Path | None, typer.Option(help="input window as CSV (ts + features)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Forecast with a registered model, from a CSV window or the latest data in the lake."""
    import polars as pl

    from tsloom.registry import load

    model = load(ref)
    if csv is None:
        forecast = model.predict_latest()
    else:
        window = pl.read_csv(csv, try_parse_dates=True)
        if "ts" in window.columns and window.schema["ts"] == pl.String:
            window = window.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
        forecast = model.predict(window)
    if as_json:
        typer.echo(forecast.write_json())
        return
    console.print(str(forecast), markup=False)


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    preload: Annotated[list[str] | None, typer.Option(help="model ref to load at start")] = None,
    cache_size: Annotated[int | None, typer.Option(help="models resident at once")] = None,
    api_key_hash: Annotated[
        list[str] | None, typer.Option(help="SHA-256 of an API key allowed to write")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="torch, or onnx: ONNX Runtime on CPU (faster; needs the onnx extra)"),
    ] = None,
) -> None:
    """REST predictions from the registry (settings also from TSLOOM_SERVE_* variables)."""
    from tsloom.serve.app import serve
    from tsloom.serve.config import ServeConfig

    overrides: dict = {}
    if preload:
        overrides["preload"] = tuple(preload)
    if cache_size is not None:
        overrides["cache_size"] = cache_size
    if api_key_hash:
        overrides["api_key_hashes"] = tuple(api_key_hash)
    if runtime is not None:
        overrides["runtime"] = runtime
    serve(host, port, config=ServeConfig.from_env(**overrides))


@app.command("stream")
def stream_cmd(
    config: Annotated[Path, typer.Argument(help="stream config YAML (see docs/streaming.md)")],
    max_messages: Annotated[int | None, typer.Option(help="stop after N messages")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="stop after N idle seconds")] = None,
) -> None:
    """Real-time inference on MQTT sensor streams: predict on every completed step,
    publish the forecasts and append them to the lake, until Ctrl-C."""
    from tsloom.stream.runner import StreamRunner, stop_on_signals

    runner = StreamRunner(config)
    for m in runner.models:
        console.print(f"model {escape(m.name)}: {escape(m.ref)} ({m.params.input_steps} steps)")
    topics = ", ".join(runner.config.mqtt.topics)
    console.print(
        f"subscribing to {escape(topics)} on {escape(runner.config.mqtt.url)}; Ctrl-C to stop"
    )
    with stop_on_signals(runner):
        stats = runner.run(max_messages=max_messages, idle_timeout=idle_timeout)
    console.print(
        f"{stats.messages:,} messages, {stats.readings:,} readings ({stats.late:,} late, "
        f"{stats.unbound:,} for no model, {stats.malformed:,} malformed), {stats.steps:,} steps, "
        f"{stats.forecasts:,} forecasts ({stats.published:,} published); lake: "
        f"{stats.prediction_rows:,} prediction rows, {stats.actual_rows:,} step values "
        f"({stats.stop_reason})"
    )
    if stats.swaps or stats.swap_errors:
        console.print(
            f"{stats.swaps:,} model swap(s) after promotions, {stats.swap_errors:,} failed"
        )
    if stats.inbox_full:
        console.print(
            f"processing fell behind {stats.inbox_full:,} times (the broker may have dropped "
            "QoS 0 readings meanwhile: subscribe with qos: 1, or split the topics over streams)"
        )
    if stats.lake_error:
        err_console.print(f"[red]lake append failed:[/red] {escape(stats.lake_error)}")


@flow_app.command("compile")
def flow_compile(
    path: Annotated[Path, typer.Argument(help="AMML source file ('-' for standard input)")],
    as_json: Annotated[bool, typer.Option("--json", help="the bytecode as JSON")] = False,
) -> None:
    """Parse and compile an AMML workflow; print its bytecode listing."""
    from tsloom.amml import compile_program, listing

    text = sys.stdin.read() if str(path) == "-" else _read_text(path)
    bytecode = compile_program(text)
    typer.echo(bytecode.to_json() if as_json else listing(bytecode))


@flow_app.command("run")
def flow_run(
    what: Annotated[
        str, typer.Argument(help="a saved workflow NAME[:VERSION], an AMML file, or '-'")
    ],
    processes: Annotated[
        bool, typer.Option("--processes", help="run each component in its own process")
    ] = False,
) -> None:
    """Run a workflow in this process and record the run (Ctrl-C stops it cleanly)."""
    from tsloom.amml.flow_store import get_flow, run_recorded
    from tsloom.config import load_settings

    settings = load_settings()
    path = Path(what)
    if what == "-" or path.is_file():
        flow, text = None, sys.stdin.read() if what == "-" else _read_text(path)
    else:
        flow = get_flow(what, settings=settings)
        text = flow.source
    mode = "process" if processes else "thread"
    run_id, result = run_recorded(text, flow=flow, settings=settings, console=console, mode=mode)
    status = getattr(result, "status", "finished")
    for model in result.models:
        if model.get("ref"):
            console.print(f"registered {escape(model['ref'])}", soft_wrap=True)
    console.print(f"run {run_id} {status} in {result.seconds:.1f} s")


@flow_app.command("save")
def flow_save(
    name: Annotated[str, typer.Argument(help="workflow name")],
    path: Annotated[Path, typer.Argument(help="AMML source file ('-' for standard input)")],
    description: Annotated[str | None, typer.Option(help="what the workflow is for")] = None,
) -> None:
    """Compile and store a workflow as the next version of NAME (unchanged source: no-op)."""
    from tsloom.amml.flow_store import save_flow

    text = sys.stdin.read() if str(path) == "-" else _read_text(path)
    saved = save_flow(name, text, description=description)
    verb = "saved" if saved.new else "unchanged:"
    console.print(f"{verb} {escape(saved.ref)}")


@flow_app.command("list")
def flow_list() -> None:
    """Saved workflows (newest version of each)."""
    from rich.table import Table

    from tsloom.amml.flow_store import last_runs, list_flows

    flows = list_flows()
    if not flows:
        console.print("no saved workflows yet — `tsloom flow save NAME FILE.amml`")
        return
    table = Table("name", "version", "saved", "last run", "description")
    latest = last_runs()
    for f in flows:
        run = latest.get(f.name)
        last = f"{run.status} {run.started_at:%Y-%m-%d %H:%M}" if run else "never"
        table.add_row(
            escape(f.name),
            str(f.version),
            f"{f.created_at:%Y-%m-%d %H:%M}",
            last,
            escape(f.description or ""),
        )
    console.print(table)


@flow_app.command("show")
def flow_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    bytecode: Annotated[bool, typer.Option("--bytecode", help="print the listing")] = False,
) -> None:
    """A saved workflow: its source, versions and recent runs (with --bytecode its listing)."""
    from tsloom.amml.flow_store import flow_runs, flow_versions, get_flow

    flow = get_flow(ref)
    console.print(f"[bold]{escape(flow.ref)}[/bold]  saved {flow.created_at:%Y-%m-%d %H:%M}")
    if flow.description:
        console.print(escape(flow.description))
    console.print(escape(flow.source.strip()))
    if bytecode:
        console.print(escape(flow.listing))
    versions = ", ".join(str(v.version) for v in flow_versions(flow.name))
    console.print(f"versions: {versions}")
    for run in flow_runs(flow.name, limit=10):
        took = (
            f"{(run.finished_at - run.started_at).total_seconds():.1f} s" if run.finished_at else ""
        )
        console.print(
            f"run {run.id} v{run.flow_version} {run.status} {run.started_at:%Y-%m-%d %H:%M} "
            f"{took} {escape(run.error or '')}"
        )


@flow_app.command("runs")
def flow_runs_cmd(
    name: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 20,
) -> None:
    """Recorded workflow runs, newest first."""
    from rich.table import Table

    from tsloom.amml.flow_store import flow_runs

    runs = flow_runs(name, limit=limit)
    if not runs:
        console.print("no workflow runs recorded yet — `tsloom flow run NAME`")
        return
    table = Table("run", "workflow", "status", "started", "seconds", "rows out", "error")
    for r in runs:
        took = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
        table.add_row(
            str(r.id),
            escape(f"{r.flow_name}:{r.flow_version}" if r.flow_name else "(ad hoc)"),
            r.status,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            f"{took:.1f}" if took is not None else "",
            str(r.rows_out or ""),
            escape((r.error or "")[:80]),
        )
    console.print(table)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TsloomError(f"cannot read {path}: {exc.strerror}", hint="check the path") from exc


@spec_app.command("add")
def model_spec_add(path: Annotated[Path, typer.Argument(help="model spec YAML")]) -> None:
    """Validate a model spec and store it under its name:version."""
    from tsloom.amml.spec_store import add_model_spec

    spec, new = add_model_spec(_read_text(path), where=str(path))
    state = "stored" if new else "already stored (identical)"
    console.print(
        f"model spec [bold]{escape(spec.ref)}[/] {state}: {len(spec.layers)} layers, "
        f"{spec.outputs} outputs, trained with {spec.training.optimizer}/"
        f"{spec.training.loss}"
    )


@spec_app.command("list")
def model_spec_list() -> None:
    """Every stored model spec."""
    from tsloom.amml.spec_store import list_model_specs

    table = Table("ref", "layers", "outputs", "spec hash")
    for row in list_model_specs():
        table.add_row(row["ref"], str(row["layers"]), str(row["outputs"]), row["spec_hash"][:12])
    console.print(table)


@spec_app.command("show")
def model_spec_show(ref: str) -> None:
    """One model spec (name:version, or name for the newest version) as JSON."""
    from tsloom.amml.spec_store import get_model_spec

    typer.echo(json.dumps(get_model_spec(ref).model_dump(mode="json"), indent=2))


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
            fmt_time(i.ts_min),
            fmt_time(i.ts_max),
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
    render_dataset(console, report, partitions=partitions)


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

    keys = _key_filter(key)
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
    console.print(str(frame.head(limit)), markup=False)


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
            fmt_time(h["time"]),
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
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
