"""Ingest N synthetic rows from CSV into the lake, against polars read_csv + write_parquet.

    .venv/bin/python benchmarks/ingest_csv.py [--rows 10000000] [--series 100]

Both sides read the same CSV. The peer is the bare minimum a lake write could cost:
`polars.read_csv` then `DataFrame.write_parquet` to one file. tsloom additionally parses
and checks timestamps and values, converts to UTC, drops duplicate (key, ts) rows, checks
what is already in the table, partitions by year/month/day and commits to Delta.
Results are appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from _common import machine, write_section


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs per side")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()

    from tsloom.config import load_settings
    from tsloom.sources.files import ingest_file
    from tsloom.sources.synthetic import write_csv_rows

    work = Path(tempfile.mkdtemp(prefix="tsloom-bench-"))
    try:
        csv = work / "readings.csv"
        gen_s, _ = _timed(lambda: write_csv_rows(csv, args.rows, series=args.series, seed=1))
        size_mb = csv.stat().st_size / 2**20
        print(f"generated {args.rows:,} rows ({size_mb:.0f} MiB) in {gen_s:.1f} s")

        def peer() -> None:
            frame = pl.read_csv(csv)
            frame.write_parquet(work / "peer.parquet")

        def ours(i: int):
            os.environ["TSLOOM_HOME"] = str(work / f"home{i}")
            return ingest_file(
                csv, "bench.readings", ts="ts", keys=["sensor_id"], settings=load_settings()
            )

        peer_times, our_times = [], []
        for i in range(args.repeat):
            peer_times.append(_timed(peer)[0])
            seconds, result = _timed(lambda i=i: ours(i))
            assert result.rows_written == args.rows, result
            our_times.append(seconds)
            print(f"run {i + 1}: peer {peer_times[-1]:.2f} s, tsloom {our_times[-1]:.2f} s")
        peer_s, our_s = min(peer_times), min(our_times)
        ratio = our_s / peer_s
        print(
            f"polars read_csv + write_parquet: {args.rows / peer_s:,.0f} rows/s ({peer_s:.2f} s)\n"
            f"tsloom ingest file → Delta lake:  {args.rows / our_s:,.0f} rows/s ({our_s:.2f} s)\n"
            f"tsloom takes {ratio:.2f}× the peer's time (aim: ≤ 2×)"
        )
        if not args.no_write:
            _record(args, peer_s, our_s, ratio, size_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _record(args, peer_s: float, our_s: float, ratio: float, size_mb: float) -> None:
    marker = "## Ingestion: CSV → lake"
    section = (
        f"{marker}\n\n"
        f"`.venv/bin/python benchmarks/ingest_csv.py --rows {args.rows} --series {args.series}`"
        f" — {datetime.now(UTC):%Y-%m-%d}, {machine()}.\n\n"
        f"{args.rows:,} rows ({args.series} series, {size_mb:.0f} MiB CSV), "
        f"best of {args.repeat}:\n\n"
        "| path | seconds | rows/s | vs peer |\n| --- | --- | --- | --- |\n"
        f"| peer: `polars.read_csv` + `write_parquet` | {peer_s:.2f} | "
        f"{args.rows / peer_s:,.0f} | 1.00× |\n"
        f"| tsloom `ingest file` → Delta (checked, partitioned, idempotent) | {our_s:.2f} | "
        f"{args.rows / our_s:,.0f} | {ratio:.2f}× the time |\n\n"
        f"Aim: within 2× of the raw Parquet write — {'met' if ratio <= 2 else 'NOT met'}.\n"
    )
    doc = write_section(marker, section)
    print(f"recorded in {doc}")


if __name__ == "__main__":
    main()
