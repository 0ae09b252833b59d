"""Clean N synthetic rows over S series with tsloom's pipeline, against pandas.

    .venv/bin/python benchmarks/clean_pipeline.py [--rows 10000000 --series 1000]
    .venv/bin/python benchmarks/clean_pipeline.py --rows 1000000 --series 100 --no-write

The input is generated once (not timed) with `tsloom.sources.synthetic`: four sources of
S/4 sensors each, every 1 min (± 5 s jitter), 5 min (± 30 s), 10 min (± 2 min) and 15 min
(no jitter), with the generator's gaps (2%), duplicates (1%, half of them conflicting, some
arriving late) and outliers (0.5%); keys `sensor_id` (Int64) and `position` (String).
It is saved as Parquet and each side runs in its own subprocess, so that its peak
memory (the child's maximum resident set size, from `wait4`) is its own:

* tsloom: `polars.read_parquet` + `tsloom.prep.pipeline.clean_frame` with its default
  config (validate, dedup "first", period per series by clustering + approximate GCD,
  divide-and-round gaps, IQR anomalies, clip, time-weighted imputation);
* pandas: `pandas.read_parquet` + benchmarks/pandas_clean.py, the same steps written
  the way a competent pandas user would (see its docstring).

Both timings include reading the Parquet file and nothing else (interpreter start and
imports excluded). Both sides must agree on the output row count (the same gaps filled);
flags, periods and a checksum of the cleaned values are compared and reported too.
Results are written to the "Cleaning pipeline" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["sensor_id", "position"]
# (position, period in seconds, jitter in seconds): one source per row
SOURCES = (
    ("site 1min", 60, 5),
    ("site 5min", 300, 30),
    ("site 10min", 600, 120),
    ("site 15min", 900, 0),
)
AIM_SPEEDUP = 5.0
AIM_PEAK_GIB = 4.0


def generate(path: Path, rows: int, series: int, seed: int) -> dict[str, float]:
    """Write the input to `path`; return the true period (seconds) per position."""
    import polars as pl

    from tsloom.sources.synthetic import SensorSpec, generate

    if series % len(SOURCES):
        raise SystemExit(f"--series must be a multiple of {len(SOURCES)}")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    frames = []
    for i, (position, period, jitter) in enumerate(SOURCES):
        spec = SensorSpec(
            dataset=f"bench.source{i}",
            period=timedelta(seconds=period),
            jitter=timedelta(seconds=jitter),
            sensors=series // len(SOURCES),
            position=position,
            columns=("value",),
        )
        share = rows // len(SOURCES) + (i < rows % len(SOURCES))
        frames.append(generate(spec, start, rows=share, seed=seed + i).frame)
    pl.concat(frames).write_parquet(path)  # one source after the other, each in arrival order
    return {position: float(period) for position, period, _ in SOURCES}


# --------------------------------------------------------------------------- children


def _tsloom_side(path: str, k: float) -> dict:
    import polars as pl

    from tsloom.prep.gaps import INSERTED
    from tsloom.prep.pipeline import CleanConfig, clean_frame

    start = time.perf_counter()
    frame = pl.read_parquet(path)
    result = clean_frame(frame, keys=KEYS, config=CleanConfig(iqr_k=k))
    seconds = time.perf_counter() - start
    out = result.frame
    cols = list(result.columns)
    steps = {s["step"]: s for s in result.steps}
    periods = result.periods.select(
        *KEYS, (pl.col("period").dt.total_microseconds() / 1e6).alias("period_s")
    )
    return {
        "seconds": seconds,
        "rows_in": result.rows_in,
        "validate": {p["kind"]: p["count"] for p in result.validation.to_dict()["problems"]},
        "dedup_removed": steps["dedup"]["removed"],
        "exact_duplicates": steps["dedup"]["exact"],
        "inserted": int(out.get_column(INSERTED).sum()),
        "flagged": sum(result.flagged.values()),
        "rows_out": out.height,
        "nulls_left": int(sum(out.get_column(c).null_count() for c in cols)),
        "checksum": float(sum(out.get_column(c).sum() for c in cols)),
        "periods": periods.rows(),
    }


def _child(side: str, path: str, k: float) -> None:
    if side == "tsloom":
        summary = _tsloom_side(path, k)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        import pandas as pd
        from pandas_clean import clean
        from pandas_clean import summary as pandas_summary

        start = time.perf_counter()
        frame = pd.read_parquet(path)
        cleaned, report = clean(frame, KEYS, k=k)
        seconds = time.perf_counter() - start
        summary = pandas_summary(seconds, cleaned, report, KEYS)
    print(json.dumps(summary))


def _run_side(side: str, path: Path, k: float) -> dict:
    """Run one side in a fresh interpreter; add its peak RSS (ru_maxrss, KiB on Linux)."""
    cmd = [sys.executable, __file__, "--child", side, str(path), "--k", str(k)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{side} side failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_gib"] = usage.ru_maxrss * 1024 / 2**30
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


# --------------------------------------------------------------------------- parent


def _true_periods(result: dict, truth: dict[str, float]) -> int:
    return sum(1 for *_, position, period in result["periods"] if truth[position] == period)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "PARQUET"), help=argparse.SUPPRESS)
    parser.add_argument("--k", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.k)
        return

    from tsloom.prep.pipeline import CleanConfig

    k = CleanConfig().iqr_k  # both sides flag with tsloom's default IQR multiplier
    work = Path(tempfile.mkdtemp(prefix="tsloom-bench-"))
    try:
        path = work / "readings.parquet"
        start = time.perf_counter()
        truth = generate(path, args.rows, args.series, args.seed)
        size_mb = path.stat().st_size / 2**20
        print(
            f"generated {args.rows:,} rows, {args.series} series ({size_mb:.0f} MiB Parquet) "
            f"in {time.perf_counter() - start:.1f} s"
        )
        load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
        runs: dict[str, list[dict]] = {"pandas": [], "tsloom": []}
        for i in range(args.repeat):
            for side in ("pandas", "tsloom"):
                runs[side].append(_run_side(side, path, k))
            print(
                f"run {i + 1}: pandas {runs['pandas'][-1]['seconds']:.2f} s, "
                f"tsloom {runs['tsloom'][-1]['seconds']:.2f} s"
            )
        best = {side: min(r, key=lambda x: x["seconds"]) for side, r in runs.items()}
        peak = {side: max(x["peak_gib"] for x in r) for side, r in runs.items()}
        ours, peer = best["tsloom"], best["pandas"]
        agree = _check(ours, peer, args.rows)
        ratio = peer["seconds"] / ours["seconds"]
        true_ours, true_peer = _true_periods(ours, truth), _true_periods(peer, truth)
        for name, r in (("pandas", peer), ("tsloom", ours)):
            print(
                f"{name:7s} {args.rows / r['seconds']:>12,.0f} rows/s  {r['seconds']:7.2f} s  "
                f"peak {peak[name]:.2f} GiB"
            )
        print(
            f"tsloom is {ratio:.1f}x the pandas speed (aim >= {AIM_SPEEDUP:g}x), "
            f"peak {peak['tsloom']:.2f} GiB (aim < {AIM_PEAK_GIB:g} GiB)\n"
            f"output rows {ours['rows_out']:,} on both sides ({ours['inserted']:,} inserted); "
            f"flagged tsloom {ours['flagged']:,}, pandas {peer['flagged']:,}\n"
            f"true period found: tsloom {true_ours}/{args.series} series, "
            f"pandas {true_peer}/{args.series}"
        )
        if not args.no_write:
            _record(args, k, ours, peer, peak, ratio, size_mb, (true_ours, true_peer), agree, load)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(ours: dict, peer: dict, rows: int) -> bool:
    """Both sides cleaned the same data the same way: same rows, gaps, duplicates (asserted);
    whether the flags and the cleaned values (their sum, to 1e-9) agree too."""
    assert ours["rows_in"] == peer["rows_in"] == rows, (ours["rows_in"], peer["rows_in"])
    assert ours["rows_out"] == peer["rows_out"], (ours["rows_out"], peer["rows_out"])
    assert ours["inserted"] == peer["inserted"], (ours["inserted"], peer["inserted"])
    assert ours["dedup_removed"] == peer["dedup_removed"]
    assert ours["nulls_left"] == peer["nulls_left"] == 0
    agree = ours["flagged"] == peer["flagged"] and _close(ours["checksum"], peer["checksum"])
    if not agree:
        print(
            f"note: the sides differ in detail: flagged {ours['flagged']} vs {peer['flagged']}, "
            f"checksum {ours['checksum']:.6g} vs {peer['checksum']:.6g}"
        )
    return agree


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)


def _record(args, k, ours, peer, peak, ratio, size_mb, true_periods, agree, load) -> None:
    marker = "## Cleaning pipeline"
    met_speed = ratio >= AIM_SPEEDUP
    met_peak = peak["tsloom"] < AIM_PEAK_GIB
    row = "| {} | {:.2f} | {:,.0f} | {:.2f} | {} |\n"
    section = (
        f"{marker}\n\n"
        f"`.venv/bin/python benchmarks/clean_pipeline.py --rows {args.rows} "
        f"--series {args.series}` — {datetime.now(UTC):%Y-%m-%d}, {machine()}; "
        f"load average {load:.1f} when it started (the seconds move with it).\n\n"
        f"{args.rows:,} synthetic rows over {args.series:,} series (periods 1, 5, 10 and 15 min "
        f"with jitter, 2% gaps, 1% duplicates, 0.5% outliers; {size_mb:.0f} MiB Parquet). "
        "Validate, dedup, period per series, divide-and-round gaps, IQR flags "
        f"(k = {k:g}), clip, time-weighted imputation; each side in its own "
        "process (peak RSS is the child's own), timed from reading the Parquet file "
        "(included on both sides) to the cleaned frame, "
        + ("one run each" if args.repeat == 1 else f"best of {args.repeat} runs")
        + ":\n\n"
        "| path | seconds | rows/s | peak RSS (GiB) | vs pandas |\n"
        "| --- | --- | --- | --- | --- |\n"
        + row.format(
            "pandas: `read_parquet` + benchmarks/pandas_clean.py",
            peer["seconds"],
            args.rows / peer["seconds"],
            peak["pandas"],
            "1.00×",
        )
        + row.format(
            "tsloom: `read_parquet` + `clean_frame`",
            ours["seconds"],
            args.rows / ours["seconds"],
            peak["tsloom"],
            f"{ratio:.1f}× faster",
        )
        + f"\nBoth sides write {ours['rows_out']:,} rows ({ours['inserted']:,} inserted by "
        f"divide-and-round) and flag {ours['flagged']:,} (tsloom) / {peer['flagged']:,} (pandas) "
        "outliers; the cleaned values "
        + ("agree (sums within 1e-9)" if agree else "differ (see the command's output)")
        + f". True period found for {true_periods[0]:,} of {args.series:,} series by tsloom, "
        f"{true_periods[1]:,} by pandas.\n\n"
        f"Aim: at least {AIM_SPEEDUP:g}× pandas — {'met' if met_speed else 'NOT met'}; "
        f"under {AIM_PEAK_GIB:g} GiB peak — {'met' if met_peak else 'NOT met'}.\n"
    )
    doc = write_section(marker, section)
    print(f"recorded in {doc}")


if __name__ == "__main__":
    main()
