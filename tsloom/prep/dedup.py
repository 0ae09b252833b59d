"""Deduplication: drop repeated rows and settle readings that share a timestamp.

Brokers redeliver messages and files overlap, so the same reading arrives twice (an exact
duplicate, removed silently) and sometimes two different readings claim one timestamp (a
conflict, settled by policy: keep the first or last seen, or average the values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import polars as pl

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, as_list, require_columns, sort_frame

Policy = Literal["first", "last", "mean"]


@dataclass(frozen=True)
class DedupReport:
    """Row counts before and after, and what was removed for which reason."""

    rows_in: int
    exact_duplicates: int
    conflicts: int
    conflict_rows_removed: int
    rows_out: int
    policy: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def deduplicate(
    df: pl.DataFrame,
    *,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    policy: Policy = "first",
) -> tuple[pl.DataFrame, DedupReport]:
    """Remove exact duplicate rows, then resolve same-(key, ts) conflicts by `policy`.

    "first"/"last" keep the earliest/latest row received (input order); "mean" averages
    the distinct rows' numeric columns and keeps the first value of the others. The
    result is sorted by keys and ts.
    """
    if policy not in ("first", "last", "mean"):
        raise PrepError(f"unknown dedup policy {policy!r}", hint="use first, last or mean")
    keys = as_list(by)
    require_columns(df, [*keys, ts])
    subset = [*keys, ts]
    # A stable sort puts the rows sharing (key, ts) next to each other, in input order;
    # only those few runs need hashing, which keeps 10-million-row batches fast.
    ordered = sort_frame(df, subset, nulls_last=True)
    same_prev = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in subset])
    same_next = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(-1)) for c in subset])
    flags = ordered.select(same_prev.alias("prev"), same_next.alias("next"))
    prev, nxt = flags.get_column("prev"), flags.get_column("next")
    shared = ordered.filter(prev | nxt)
    distinct = shared.unique(maintain_order=True)
    runs = distinct.group_by(subset).len()
    n_conflicts = runs.filter(pl.col("len") > 1).height
    if policy == "mean":
        others = [c for c in df.columns if c not in subset]
        aggs = [
            pl.col(c).mean().cast(df.schema[c])
            if df.schema[c].is_float()
            else pl.col(c).mean()
            if df.schema[c].is_numeric()
            else pl.col(c).first()
            for c in others
        ]
        merged = distinct.group_by(subset, maintain_order=True).agg(aggs).select(df.columns)
        single = ordered.filter(~(prev | nxt))
        out = sort_frame(pl.concat([single, merged], how="vertical_relaxed"), subset)
    else:
        keep = ~prev if policy == "first" else ~nxt
        out = ordered.filter(keep)
    report = DedupReport(
        rows_in=df.height,
        exact_duplicates=shared.height - distinct.height,
        conflicts=n_conflicts,
        conflict_rows_removed=distinct.height - runs.height,
        rows_out=out.height,
        policy=policy,
    )
    return out, report
