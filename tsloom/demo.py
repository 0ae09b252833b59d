"""`tsloom demo`: the main job end to end on embedded defaults, no servers needed.

Today: generate synthetic sensors (three sources at 5 min, 10 min ± 49 s and 1 h, with
duplicates, gaps and outliers), ingest them into the lake, ingest them again to show
idempotence, and list the datasets with schema, rows, time ranges and partitions.
Later stages (cleaning, training, registry, serving) extend this same run.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from tsloom.catalog import Catalog
from tsloom.clean import clean_dataset
from tsloom.config import Settings, load_settings
from tsloom.lake.inspect import describe_dataset
from tsloom.render import fmt_time, render_dataset, render_ingest
from tsloom.sources.files import ingest_file
from tsloom.sources.synthetic import DemoFile, write_demo


def run_demo(
    console: Console,
    *,
    days: int = 14,
    seed: int = 7,
    settings: Settings | None = None,
) -> list[str]:
    """Run the demo; returns the names of the datasets it made."""
    settings = settings or load_settings()
    data_dir = Path(settings.home) / "demo-data"
    console.print(Rule("1. synthetic sensors"))
    with console.status("generating synthetic sensor data"):
        files = write_demo(data_dir, days=days, seed=seed)
    for f in files:
        t = f.truth
        console.print(
            f"{f.dataset}: {f.rows:,} rows every {t.period} ± {t.jitter} in {f.path.name} "
            f"({t.missing_count:,} missing, {t.duplicate_count:,} duplicated, "
            f"{t.outlier_count:,} outliers)"
        )
    console.print(Rule("2. ingest into the lake"))
    for f in files:
        result = ingest_file(
            f.path,
            f.dataset,
            ts=f.ts_column,
            keys=f.key_columns,
            units=f.units,
            settings=settings,
        )
        render_ingest(console, result)
    console.print(Rule("3. ingest again: nothing is doubled"))
    for f in files:
        result = ingest_file(f.path, f.dataset, ts=f.ts_column, settings=settings)
        render_ingest(console, result)
    console.print(Rule("4. the catalog"))
    catalog = Catalog(settings)
    table = Table("dataset", "keys", "values (unit)", "rows", "from (UTC)", "to (UTC)", "days")
    names = [f.dataset for f in files]
    for name in names:
        info = catalog.get(name)
        report = describe_dataset(name, settings=settings)
        values = ", ".join(
            f"{c.name} ({c.unit})" if c.unit else c.name for c in info.columns if c.role == "value"
        )
        table.add_row(
            name,
            ",".join(info.keys),
            values,
            f"{info.row_count:,}",
            fmt_time(info.ts_min),
            fmt_time(info.ts_max),
            str(report.partitions.height),
        )
    console.print(table)
    for name in names:
        console.print()
        render_dataset(console, describe_dataset(name, settings=settings))
    _clean_step(console, files, settings)
    _train_step(console, settings)
    _workflow_step(console, files, settings)
    console.print(Rule())
    console.print(
        f"lake: {settings.lake_url}   metadata: {settings.db_url}\n"
        "next: `tsloom datasets read airq.seoul --limit 5`, "
        "`tsloom ingest file ../shared/data/ett/ETTh1.csv --dataset power.etth1 --ts date`, "
        "`tsloom flow show watch-gwangju --bytecode`, "
        "`tsloom serve` then http://127.0.0.1:8000/ui"
    )
    return names


def _clean_step(console: Console, files: list[DemoFile], settings: Settings) -> None:
    """Clean every source and hold the estimates against what the generator did."""
    console.print(Rule("5. clean: estimated period and gaps against the generator's truth"))
    table = Table(
        "dataset",
        "true period",
        "estimated",
        "confidence",
        "missing (truth)",
        "inserted",
        "outliers (truth)",
        "flagged",
        "report",
    )
    for f in files:
        with console.status(f"cleaning {f.dataset}"):
            run = clean_dataset(f.dataset, settings=settings)
        periods = run.result.periods_list()
        estimated = sorted({p["period"] for p in periods})
        table.add_row(
            run.output,
            str(f.truth.period),
            ", ".join(estimated),
            f"{min(p['confidence'] for p in periods):.2f}",
            f"{f.truth.missing_count:,}",
            f"{run.result.gaps.inserted:,}",
            f"{f.truth.outlier_count:,}",
            f"{sum(run.result.flagged.values()):,}",
            run.report.html.name,
        )
    console.print(table)
    console.print(f"reports: {settings.home / 'reports'}")


def _train_step(console: Console, settings: Settings) -> None:
    """Integrate two cleaned sources of different periods and train a stacked LSTM."""
    from tsloom.forecast.job import train_on_integration
    from tsloom.integrate import IntegrationSpec
    from tsloom.render import render_training

    console.print(Rule("6. integrate 5-min and 10-min sources at 10 min, train a stacked LSTM"))
    spec = IntegrationSpec.from_tables(["airq.gwangju_clean", "airq.seoul_clean"], "10min")
    params = {
        "target": "airq.seoul_clean.co2[sensor_id=1]",
        "features": ["airq.seoul_clean.co2[sensor_id=1]", "airq.gwangju_clean.co2[sensor_id=1]"],
        "input_width": "6h",
        "output_width": "1h",
        "method": "stacked",
        "hidden_size": 32,
        "epochs": 6,
        "seed": 7,
    }
    run = train_on_integration(spec, params, progress=True, settings=settings)
    rows, cols = run.integration.frame.shape
    console.print(
        f"integrated {', '.join(spec.tables)}: {rows:,} rows × {cols - 1} features every 10 min"
    )
    render_training(console, run)
    _registry_step(console, run, spec.tables, settings)


def _registry_step(console: Console, run, tables, settings: Settings) -> None:
    """File the model, find it again by its tables, and predict from the stored copy."""
    from rich.markup import escape

    from tsloom.registry import load, register, search
    from tsloom.render import render_model_tree

    console.print(Rule("7. registry: register, search by tables, predict from the stored model"))
    ref = register(run, settings=settings)
    console.print(f"registered {escape(ref)}", soft_wrap=True)
    render_model_tree(console, search(list(tables), settings=settings))
    forecast = load(ref, settings=settings).predict_latest()
    table = Table("time (UTC)", "step", escape(run.params.target))
    for row in forecast.iter_rows(named=True):
        table.add_row(fmt_time(row["ts"]), str(row["step"]), f"{row[run.params.target]:.1f}")
    console.print(table)


WATCH_FLOW = (
    'source id="airq.gwangju" | filter cond=sensor_id == 1 '
    "| surveillance cols=co2 method=zscore threshold=5 window=48 "
    '| alert level="warning" message="co2 {value} at {ts}" '
    '| snapshot size=12 name="gwangju-co2"'
)


def _second(value: object) -> str:
    """A timestamp (datetime or ISO text, naive meaning UTC) to the second, as text."""
    from datetime import datetime

    from tsloom.timeutil import to_utc

    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return to_utc(moment).strftime("%Y-%m-%dT%H:%M:%S")


def _workflow_step(console: Console, files: list[DemoFile], settings: Settings) -> None:
    """Save and run an AMML workflow that watches one sensor; hold its alerts against the
    outliers the generator injected, and show the snapshot stored with one alert."""
    import logging

    from rich.markup import escape

    from tsloom.amml.alerting import get_snapshot, list_alerts
    from tsloom.amml.flow_store import run_saved_flow, save_flow

    console.print(Rule("8. workflow (AMML): watch a sensor, store alerts and snapshots"))
    saved = save_flow("watch-gwangju", WATCH_FLOW, settings=settings)
    console.print(f"{escape(saved.ref)}: {escape(WATCH_FLOW)}", soft_wrap=True)
    quiet = logging.getLogger("tsloom.amml.alerting")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the demo tabulates the alerts instead of logging each
    try:
        run_id, result = run_saved_flow(saved.ref, settings=settings)
    finally:
        quiet.setLevel(level)
    alerts = list_alerts(settings, run_id=run_id)
    truth = next(f for f in files if f.dataset == "airq.gwangju").truth.outliers
    injected = {
        _second(t)
        for t in truth.filter((pl.col("sensor_id") == 1) & (pl.col("column") == "co2"))["ts"]
    }
    found = {_second(a["event_ts"]) for a in alerts}
    hits = len(found & injected)
    console.print(
        f"run {run_id}: {len(alerts)} alerts stored for {len(injected)} injected co2 outliers "
        f"of sensor 1 ({hits} of them found) in {result.seconds:.1f} s"
    )
    if alerts:
        first = alerts[0]
        snap = get_snapshot(first["id"], settings=settings)
        console.print(
            f"alert {first['id']}: {escape(first['message'])} — snapshot of the "
            f"{snap['row_count']} rows up to it stored in the database"
        )
