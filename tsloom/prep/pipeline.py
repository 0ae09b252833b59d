"""The clean pipeline as one pure function: validate → dedup → period → gaps → anomalies
→ treat → impute, per series (key combination), with every step's parameters and counts
recorded so the result can carry its lineage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, sort_frame, value_columns
from tsloom.prep.anomalies import iqr_anomalies, residual_anomalies
from tsloom.prep.dedup import DedupReport, deduplicate
from tsloom.prep.gaps import INSERTED, GapReport, fill_gaps
from tsloom.prep.impute import METHODS, impute
from tsloom.prep.period import estimate_periods
from tsloom.prep.treat import TREATMENTS, treat_anomalies
from tsloom.prep.validate import ValidationReport, validate

DETECTORS = ("iqr", "residual", "none")


@dataclass(frozen=True)
class CleanConfig:
    """What the clean pipeline does; `None` period means "estimate per series"."""

    period: dt.timedelta | None = None
    dedup: str = "first"
    max_fill: int | None = None
    anomalies: str = "iqr"
    iqr_k: float = 3.0
    residual_threshold: float = 3.5
    treat: str = "clip"
    ema_alpha: float = 0.3
    impute: str = "time"

    def check(self) -> None:
        if self.anomalies not in DETECTORS:
            raise PrepError(
                f"unknown anomaly detector {self.anomalies!r}", hint=", ".join(DETECTORS)
            )
        if self.treat not in (*TREATMENTS, "none"):
            raise PrepError(
                f"unknown treatment {self.treat!r}", hint=", ".join((*TREATMENTS, "none"))
            )
        if self.impute not in (*METHODS, "none"):
            raise PrepError(
                f"unknown imputation method {self.impute!r}", hint=", ".join((*METHODS, "none"))
            )
        if self.period is not None and self.period <= dt.timedelta(0):
            raise PrepError(f"period must be positive, got {self.period}")


@dataclass(frozen=True)
class CleanResult:
    """The cleaned frame with its flags, and what each step found and did."""

    frame: pl.DataFrame  # ts, keys, values, `_inserted`, `<col>_anomaly`
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    periods: pl.DataFrame  # keys, period, confidence, n_points
    validation: ValidationReport
    dedup: DedupReport
    gaps: GapReport
    flagged: dict[str, int]
    imputed: int
    steps: list[dict] = field(default_factory=list)
    rows_in: int = 0

    @property
    def output(self) -> pl.DataFrame:
        """The cleaned series without flag columns: what goes back into the lake."""
        return self.frame.select([TS, *self.keys, *self.columns])

    def periods_list(self) -> list[dict]:
        out = []
        for row in self.periods.iter_rows(named=True):
            period = row["period"]
            out.append(
                {
                    "keys": {k: row[k] for k in self.keys},
                    "period": str(period) if period is not None else None,
                    "period_s": period.total_seconds() if period is not None else None,
                    "confidence": row["confidence"],
                    "n_points": row["n_points"],
                }
            )
        return out

    def to_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.frame.height,
            "keys": list(self.keys),
            "columns": list(self.columns),
            "steps": self.steps,
            "periods": self.periods_list(),
            "validation": self.validation.to_dict(),
        }


SERIES_ID = "_series_id"


def _series_ids(
    work: pl.DataFrame, keys: list[str]
) -> tuple[pl.DataFrame, list[str], pl.DataFrame | None]:
    """Replace key columns that are not all integers by one integer id per series.

    Every step groups or sorts by the keys; one UInt32 id (numbered in key order, nulls
    last) makes that several times faster than, say, a string and an integer column.
    Returns the frame, the columns to group by and the keys per id (None: keys kept).
    """
    if not keys or all(work.schema[k].is_integer() for k in keys):
        return work, keys, None
    table = work.group_by(keys).len(name="__rows").drop("__rows").sort(keys, nulls_last=True)
    row_hash = pl.struct(keys).hash()
    hashes = table.select(row_hash).to_series()
    if hashes.n_unique() == table.height:  # the hashes tell every key apart: map them
        number = pl.int_range(table.height, dtype=pl.UInt32, eager=True)
        ids = work.select(row_hash.replace_strict(hashes, number, return_dtype=pl.UInt32))
        series = ids.to_series().alias(SERIES_ID)
    else:  # a hash collision: number the rows of each key instead
        rows = (
            work.select(keys)
            .with_row_index("_row")
            .group_by(keys)
            .agg("_row")
            .sort(keys, nulls_last=True)
            .get_column("_row")
        )
        ids = np.empty(work.height, dtype=np.uint32)
        ids[rows.explode().to_numpy()] = np.repeat(
            np.arange(table.height, dtype=np.uint32), rows.list.len().to_numpy()
        )
        series = pl.Series(SERIES_ID, ids)
    return work.select(TS, series, pl.exclude(TS, *keys)), [SERIES_ID], table


def _with_keys(frame: pl.DataFrame, table: pl.DataFrame | None) -> pl.DataFrame:
    """Put the key columns back in place of the series id (see `_series_ids`)."""
    if table is None:
        return frame
    values = table[frame.get_column(SERIES_ID).to_numpy()]
    return frame.with_columns(values.get_columns()).drop(SERIES_ID)


def _periods(frame: pl.DataFrame, keys: list[str], config: CleanConfig) -> pl.DataFrame:
    if config.period is not None:
        base = frame.select(keys).unique(maintain_order=True) if keys else pl.DataFrame({"_": [0]})
        return base.with_columns(
            pl.lit(config.period).cast(pl.Duration("us")).alias("period"),
            pl.lit(1.0).alias("confidence"),
            pl.lit(None, dtype=pl.Int64).alias("n_points"),
        ).drop("_", strict=False)
    return estimate_periods(frame, by=keys or None, errors="null")


def _require_periods(periods: pl.DataFrame, keys: list[str]) -> None:
    missing = periods.filter(pl.col("period").is_null())
    if missing.height:
        where = missing.select(keys).row(0, named=True) if keys else "the series"
        raise PrepError(
            f"cannot estimate a period for {where}: too few distinct timestamps "
            f"({missing['n_points'][0]})",
            hint="give the period explicitly (--period 10min) or clean more data",
        )


def clean_frame(
    frame: pl.DataFrame,
    *,
    keys: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    config: CleanConfig | None = None,
) -> CleanResult:
    """Clean every series of `frame` (one per key combination) with `config`."""
    config = config or CleanConfig()
    config.check()
    keys = list(keys)
    cols = value_columns(frame, columns, TS, keys)
    if frame.height == 0:
        raise PrepError("there are no rows to clean", hint="check the dataset and time range")
    work, by, key_table = _series_ids(frame.select([TS, *keys, *cols]), keys)
    steps: list[dict] = []

    validation = validate(work, ts=TS, by=by or None)
    steps.append({"step": "validate", "ok": validation.ok, "problems": len(validation.problems)})

    work, dedup = deduplicate(work, by=by or None, policy=config.dedup)  # type: ignore[arg-type]
    steps.append(
        {
            "step": "dedup",
            "policy": config.dedup,
            "exact": dedup.exact_duplicates,
            "conflicts": dedup.conflicts,
            "removed": dedup.rows_in - dedup.rows_out,
        }
    )

    work_periods = _periods(work, by, config)
    periods = _with_keys(work_periods, key_table).select(*keys, pl.exclude(keys))
    _require_periods(periods, keys)
    steps.append(
        {
            "step": "period",
            "method": "given" if config.period is not None else "clustering + approximate GCD",
            "periods_s": sorted({p.total_seconds() for p in periods["period"].to_list()}),
        }
    )

    work, gaps = fill_gaps(
        work, work_periods if by else periods["period"][0], by=by or None, max_fill=config.max_fill
    )
    steps.append({"step": "gaps", "rule": "round(gap / period) - 1", **gaps.to_dict()})

    flagged = {c: 0 for c in cols}
    if config.anomalies != "none":
        detect = (
            iqr_anomalies(work, cols, k=config.iqr_k, by=by or None)
            if config.anomalies == "iqr"
            else residual_anomalies(work, cols, threshold=config.residual_threshold, by=by or None)
        )
        work = detect.drop([c for c in detect.columns if c.endswith(("_score", "_resid"))])
        flagged = {c: int(work[f"{c}_anomaly"].sum()) for c in cols}
        params = (
            {"k": config.iqr_k}
            if config.anomalies == "iqr"
            else {"threshold": config.residual_threshold}
        )
        steps.append(
            {"step": "anomalies", "method": config.anomalies, **params, "flagged": flagged}
        )
        if config.treat != "none":
            rows_before = work.height
            for c in cols:
                work = treat_anomalies(
                    work,
                    c,
                    config.treat,
                    alpha=config.ema_alpha,
                    by=by or None,  # type: ignore[arg-type]
                )
            steps.append(
                {"step": "treat", "method": config.treat, "rows_dropped": rows_before - work.height}
            )
    else:
        work = work.with_columns(pl.lit(False).alias(f"{c}_anomaly") for c in cols)

    missing_before = {c: int(work[c].is_null().sum() + work[c].is_nan().sum()) for c in cols}
    imputed = 0
    if config.impute != "none" and any(missing_before.values()):
        work = impute(work, config.impute, columns=cols, by=by or None)  # type: ignore[arg-type]
        imputed = sum(missing_before.values()) - sum(int(work[c].is_null().sum()) for c in cols)
    steps.append(
        {
            "step": "impute",
            "method": config.impute,
            "filled": imputed,
            "missing_before": missing_before,
        }
    )
    work = _with_keys(sort_frame(work, [*by, TS]), key_table)
    if key_table is not None and key_table.null_count().sum_horizontal().item():
        work = work.sort([*keys, TS])  # ids put null keys last, this puts them first
    work = work.select([TS, *keys, *cols, INSERTED, *(f"{c}_anomaly" for c in cols)])
    return CleanResult(
        frame=work,
        keys=tuple(keys),
        columns=tuple(cols),
        periods=periods,
        validation=validation,
        dedup=dedup,
        gaps=gaps,
        flagged=flagged,
        imputed=imputed,
        steps=steps,
        rows_in=frame.height,
    )
