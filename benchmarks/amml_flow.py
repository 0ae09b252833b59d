"""AMML runtime throughput: `source | filter | minmax_scaler | sink` over 10 million rows,
against a record-at-a-time execution of the same workflow measured in the same run.

    .venv/bin/python benchmarks/amml_flow.py            # 10,000,000 rows, 200,000 record-at-a-time
    .venv/bin/python benchmarks/amml_flow.py --quick    # 500,000 and 20,000

The dataset (`bench.flow`: `ts` every second, `v1` ~ N(0, 1), `v2` ~ U(0, 100)) is written
once into a private home's lake under the git-ignored benchmarks/.work/amml_flow/ and
reused. The workflow is

    source id="bench.flow" | filter cond=v1 > -1 and v2 < 90 | minmax_scaler | sink to=csv path=…

run by `tsloom.amml.runtime.run_program` (threads, bounded queues, polars batches;
results not kept). The record-at-a-time side is the source design's model: one dict per
row through one process per component joined by `multiprocessing` queues — a source
process reading the first rows of the same lake dataset, a filter process running the
same compiled callback on each record (`Callback.evaluate`, the reference interpreter), a
scaler process that, like `minmax_scaler` in a bounded flow, gathers its whole input to
fit min and max and then emits the scaled records, and a sink process writing CSV rows
with the `csv` module. Both timings start once every process (or the runtime) is ready
and stop when the sink has written its last row; the record-at-a-time side runs on a
slice (it would take hours on 10M rows), and both are compared in rows per second.
Results go to the "AMML runtime" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "amml_flow"
DATASET = "bench.flow"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
COND = "v1 > -1 and v2 < 90"
AIM = 50.0


def _settings(rows: int):
    os.environ["TSLOOM_HOME"] = str(WORK / f"home-{rows}")
    for var in ("TSLOOM_DB_URL", "TSLOOM_LAKE_URL", "TSLOOM_REGISTRY_URL", "TSLOOM_CONFIG"):
        os.environ.pop(var, None)
    from tsloom.config import load_settings

    return load_settings()


def ensure_dataset(rows: int, settings) -> None:
    """Write `rows` rows into the lake once (kept across runs)."""
    import numpy as np
    import polars as pl

    from tsloom.catalog import Catalog
    from tsloom.ingest.writer import ingest_frame

    marker = Path(settings.home) / "complete"
    if marker.exists() and DATASET in Catalog(settings).names():
        return
    if DATASET in Catalog(settings).names():
        raise SystemExit(f"{settings.home} holds a partial dataset; remove it and run again")
    rng = np.random.default_rng(7)
    step = 1_000_000
    for offset in range(0, rows, step):
        n = min(step, rows - offset)
        ts = (T0.timestamp() * 1e6 + (offset + np.arange(n)) * 1e6).astype(np.int64)
        frame = pl.DataFrame(
            {
                "ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
                "v1": rng.normal(0, 1, n),
                "v2": rng.uniform(0, 100, n),
            }
        )
        ingest_frame(frame, DATASET, ts="ts", settings=settings)
        print(f"  wrote {offset + n:,} rows", flush=True)
    marker.write_text("")


def run_amml(rows: int, settings) -> dict:
    from tsloom.amml.runtime import run_program

    out = WORK / "amml_out.csv"
    text = f'source id="{DATASET}" | filter cond={COND} | minmax_scaler | sink to=csv path="{out}"'
    start = time.perf_counter()
    result = run_program(text, settings=settings, keep_results=False)
    seconds = time.perf_counter() - start
    stats = {s.name: s for s in result.stats}
    written = stats["sink"].rows_in
    out.unlink()
    return {"rows": stats["source"].rows_out, "written": written, "seconds": seconds}


# --------------------------------------------------------------------------- record at a time


def _rec_source(q, ready, go, rows: int, home: str) -> None:
    os.environ["TSLOOM_HOME"] = home
    from tsloom.lake import read_dataset

    frame = read_dataset(DATASET, end=T0 + timedelta(seconds=rows))
    ready.wait()
    go.wait()
    for record in frame.iter_rows(named=True):
        q.put(record)
    q.put(None)


def _rec_filter(qin, qout, ready, go) -> None:
    from tsloom.amml.callbacks import compile_callback

    cond = compile_callback(COND)
    ready.wait()
    go.wait()
    while (record := qin.get()) is not None:
        if cond.evaluate(record):
            qout.put(record)
    qout.put(None)


def _rec_scaler(qin, qout, ready, go) -> None:
    ready.wait()
    go.wait()
    held = []
    while (record := qin.get()) is not None:
        held.append(record)
    cols = [k for k, v in held[0].items() if isinstance(v, float)] if held else []
    lo = {c: min(r[c] for r in held) for c in cols}
    hi = {c: max(r[c] for r in held) for c in cols}
    for r in held:
        qout.put({**r, **{c: (r[c] - lo[c]) / ((hi[c] - lo[c]) or 1.0) for c in cols}})
    qout.put(None)


def _rec_sink(qin, ready, go, path: str, done) -> None:
    ready.wait()
    go.wait()
    n = 0
    with open(path, "w", newline="") as f:
        writer = None
        while (record := qin.get()) is not None:
            if writer is None:
                writer = csv.DictWriter(f, fieldnames=list(record))
                writer.writeheader()
            writer.writerow(record)
            n += 1
    done.put(n)


def run_records(rows: int) -> dict:
    ctx = mp.get_context("spawn")
    q1, q2, q3 = ctx.Queue(1000), ctx.Queue(1000), ctx.Queue(1000)
    ready, go, done = ctx.Barrier(5), ctx.Event(), ctx.Queue()
    out = WORK / "records_out.csv"
    procs = [
        ctx.Process(target=_rec_source, args=(q1, ready, go, rows, os.environ["TSLOOM_HOME"])),
        ctx.Process(target=_rec_filter, args=(q1, q2, ready, go)),
        ctx.Process(target=_rec_scaler, args=(q2, q3, ready, go)),
        ctx.Process(target=_rec_sink, args=(q3, ready, go, str(out), done)),
    ]
    for p in procs:
        p.start()
    ready.wait()  # every process has imported and loaded what it needs
    start = time.perf_counter()
    go.set()
    written = done.get()
    seconds = time.perf_counter() - start
    for p in procs:
        p.join()
    out.unlink()
    return {"rows": rows, "written": written, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--record-rows", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="500,000 and 20,000 rows")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.record_rows = 500_000, 20_000
    WORK.mkdir(parents=True, exist_ok=True)
    settings = _settings(args.rows)
    print(f"dataset: {args.rows:,} rows in {settings.home}", flush=True)
    ensure_dataset(args.rows, settings)
    print("AMML runtime …", flush=True)
    amml = run_amml(args.rows, settings)
    print(f"  {amml}", flush=True)
    print("record at a time …", flush=True)
    records = run_records(args.record_rows)
    print(f"  {records}", flush=True)
    amml_rate = amml["rows"] / amml["seconds"]
    rec_rate = records["rows"] / records["seconds"]
    ratio = amml_rate / rec_rate
    print(f"AMML {amml_rate:,.0f} rows/s, record-at-a-time {rec_rate:,.0f} rows/s: {ratio:.0f}×")
    if args.no_write:
        return
    command = "`.venv/bin/python benchmarks/amml_flow.py" + (" --quick`" if args.quick else "`")
    if not args.quick and (args.rows, args.record_rows) != (10_000_000, 200_000):
        command = (
            f"`.venv/bin/python benchmarks/amml_flow.py --rows {args.rows} "
            f"--record-rows {args.record_rows}`"
        )
    met = "met" if ratio >= AIM else "not met"
    ours = (
        "| AMML runtime (threads, polars batches, bounded queues) | "
        f"{amml['rows']:,} | {amml['written']:,} | {amml['seconds']:.2f} | {amml_rate:,.0f} |"
    )
    theirs = (
        "| record at a time (dicts, process per component) | "
        f"{records['rows']:,} | {records['written']:,} | {records['seconds']:.2f} | "
        f"{rec_rate:,.0f} |"
    )
    section = f"""## AMML runtime

{command} — {datetime.now(UTC):%Y-%m-%d}, {machine()}.

Workflow `source id="{DATASET}" | filter cond={COND} | minmax_scaler | sink to=csv path=…`
over a lake dataset of `ts` (1 s apart), `v1` ~ N(0, 1), `v2` ~ U(0, 100); the scaler
fits on its whole (bounded) input. Record-at-a-time is the source design's model: one
dict per row through a source, filter, scaler and sink process joined by multiprocessing
queues (the filter runs the same compiled callback per record; the scaler gathers its
input, fits min/max, then emits), on the first {records["rows"]:,} rows. Both timings
exclude start-up and stop when the sink has written its last row.

| execution | rows in | rows written | seconds | rows/s |
| --- | --- | --- | --- | --- |
{ours}
{theirs}

Ratio: **{ratio:,.0f}×** the record-at-a-time rate (aim ≥ {AIM:.0f}×: {met}).
"""
    print(f"wrote {write_section('## AMML runtime', section)}")


if __name__ == "__main__":
    main()
