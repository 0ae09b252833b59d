"""The pandas peer of benchmarks/clean_pipeline.py: the same clean steps, written the way a
competent pandas user would write them (vectorised where pandas makes that natural,
`groupby` per series where it does not).

    .venv/bin/python benchmarks/pandas_clean.py INPUT.parquet [--keys sensor_id position] [--k 3]

Steps, in tsloom's order (validate → dedup → period → gaps → IQR → clip → impute):

* validate: missing timestamps, out of order per series, duplicated (series, ts), future;
* dedup: exact duplicate rows counted, then a stable sort by (series, ts) and
  `drop_duplicates(keep="first")` (tsloom's default policy "first");
* period per series: median of the lagged differences as a first guess, every difference
  divided by it and rounded to a whole number of periods, then the period refitted as the
  time spanned over the periods counted (jitter averages out), rounded to whole seconds
  from 10 s up (whole milliseconds below) — the design's "cluster the diffs, approximate
  GCD" in its simplest vectorised form;
* gaps, divide and round: round(gap / period) − 1 rows inserted at prev + k·period
  (`index.repeat` + `cumcount`), flagged `_inserted`;
* IQR per series (`transform("quantile")`, linear): flag values more than k·IQR
  outside the quartiles (benchmarks/clean_pipeline.py passes tsloom's default k);
* clip: flagged values clipped to the series' min/max of the unflagged values;
* impute: `interpolate(method="time")` per series, then ffill/bfill at the edges.

Run directly, it reads the Parquet file, cleans it, and prints one JSON line with the
seconds taken (read included), the counts and a checksum of the cleaned values.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

TS = "ts"
FLAG = "_inserted"


def _round_period_us(p_us: pd.Series) -> pd.Series:
    """Whole seconds from 10 s up, whole milliseconds from 10 ms, else microseconds."""
    res = np.where(p_us >= 10_000_000, 1_000_000, np.where(p_us >= 10_000, 1_000, 1))
    return pd.Series(np.maximum(res, np.rint(p_us / res) * res).astype(np.int64), p_us.index)


def clean(df: pd.DataFrame, keys: list[str], *, k: float = 3.0) -> tuple[pd.DataFrame, dict]:
    """Clean every series (one per key combination); return the frame and a report."""
    cols = [c for c in df.columns if c not in (TS, *keys)]
    report: dict = {"rows_in": len(df)}

    # validate
    prev = df.groupby(keys, sort=False)[TS].shift()
    report["validate"] = {
        "missing": int(df[TS].isna().sum()),
        "out_of_order": int((df[TS] < prev).sum()),
        "duplicate": int(df.duplicated([*keys, TS]).sum()),
        "future": int((df[TS] > pd.Timestamp.now(tz="UTC")).sum()),
    }

    # dedup: keep the first reading received for each (series, ts)
    exact = int(df.duplicated().sum())
    df = df.sort_values([*keys, TS], kind="stable")
    df = df.drop_duplicates([*keys, TS], keep="first", ignore_index=True)
    report["dedup_removed"] = report["rows_in"] - len(df)
    report["exact_duplicates"] = exact

    # period per series
    t_us = df[TS].dt.as_unit("us").astype("int64")
    groups = [df[key] for key in keys]
    d = t_us.groupby(groups, sort=False).diff()  # NaN at each series' first row
    first_guess = d.groupby(groups, sort=False).transform("median")
    steps = np.rint(d / first_guess).clip(lower=1)
    grouped = pd.DataFrame({"d": d, "k": steps}).groupby(groups, sort=False)
    spanned = grouped.transform("sum")
    period_us = _round_period_us(spanned["d"] / spanned["k"])
    periods = df[keys].assign(period_s=period_us / 1e6).drop_duplicates(keys).reset_index(drop=True)

    # gaps: divide and round
    gap_us = -t_us.groupby(groups, sort=False).diff(-1)
    missing = ((gap_us + period_us // 2) // period_us - 1).clip(lower=0).fillna(0).astype("int64")
    has_gap = missing > 0
    src = df.loc[has_gap, [*keys, TS]]
    new = src.loc[src.index.repeat(missing[has_gap])]
    nth = new.groupby(level=0).cumcount().to_numpy() + 1
    new[TS] = new[TS] + pd.to_timedelta(nth * period_us.loc[new.index].to_numpy(), unit="us")
    new[FLAG] = True
    report["inserted"] = len(new)
    df[FLAG] = False
    df = pd.concat([df, new], ignore_index=True)
    df = df.sort_values([*keys, TS], kind="stable", ignore_index=True)

    # IQR flags per series, then clip flagged values to the unflagged min/max
    flagged = 0
    groups = [df[key] for key in keys]
    by = df.groupby(groups, sort=False)
    for c in cols:
        x = df[c]
        q1 = by[c].transform("quantile", 0.25)
        q3 = by[c].transform("quantile", 0.75)
        beyond = np.maximum(np.maximum(q1 - x, x - q3), 0.0)
        flag = (beyond > k * (q3 - q1)).to_numpy()
        df[f"{c}_anomaly"] = flag
        flagged += int(flag.sum())
        clean_x = x.where(~flag)
        lo = clean_x.groupby(groups, sort=False).transform("min")
        hi = clean_x.groupby(groups, sort=False).transform("max")
        df[c] = x.where(~flag, x.clip(lo, hi))
    report["flagged"] = flagged

    # impute: time-weighted interpolation per series, edges from the nearest value
    indexed = df.set_index(TS)
    by = indexed.groupby(keys, sort=False)
    for c in cols:
        filled = by[c].transform(lambda s: s.interpolate(method="time").ffill().bfill())
        df[c] = filled.to_numpy()
    report["rows_out"] = len(df)
    return df, {**report, "periods": periods}


def summary(seconds: float, cleaned: pd.DataFrame, report: dict, keys: list[str]) -> dict:
    """What the benchmark compares: counts, periods per series and a value checksum."""
    cols = [c for c in cleaned.columns if c not in (TS, *keys, FLAG) and not c.endswith("_anomaly")]
    periods = report.pop("periods")
    return {
        "seconds": seconds,
        **report,
        "nulls_left": int(cleaned[cols].isna().sum().sum()),
        "checksum": float(cleaned[cols].sum().sum()),
        "periods": periods.astype({k: "object" for k in keys}).values.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--keys", nargs="+", default=["sensor_id", "position"])
    parser.add_argument("--k", type=float, default=3.0, help="IQR multiplier")
    args = parser.parse_args()
    start = time.perf_counter()
    frame = pd.read_parquet(args.input)
    cleaned, report = clean(frame, args.keys, k=args.k)
    seconds = time.perf_counter() - start
    print(json.dumps(summary(seconds, cleaned, report, args.keys)))


if __name__ == "__main__":
    main()
