"""Sampling-period estimation: the source design's *Clustering and Approximated GCD*.

Sensors rarely report on a clean grid: a 10-minute sensor logs gaps of 530 000, 610 000,
660 000 ms, loses readings (gaps of 2, 3, 4 periods) and repeats some. The period is found
in the design's four steps:

1. the lagged differences of the sorted, distinct timestamps;
2. the differences are clustered: a smoothed histogram is split at its valleys, and a
   peak only counts if the density falls to half its height on both sides before rising
   again (so jitter does not split one cluster into many);
3. the mode of each cluster (its most frequent exact value when gaps repeat exactly, else
   its median, with a standard error from the jitter pooled over all clusters); clusters
   are taken largest first until they cover `coverage` (95%) of the differences;
4. the approximate GCD of those modes: the largest p, refitted to all modes at once, that
   leaves every mode within `gcd_tolerance`·p (or 4 standard errors) of a multiple of p.

Jitter blurs the modes, so the GCD is refined on the whole series: every gap is assigned
a whole number of periods and the period is the least-squares slope of timestamp against
lattice index, pooled over stretches cut at ambiguous gaps (one miscount cannot shift the
rest). Its error shrinks like N^-1.5. Short series (≤ 1000 points) whose lattice fits
poorly get a second opinion: the best-aligned grids near p/2, p, 2p and 3p are refined
too and the best fit wins (see `_reconsider`). Exact from about 100 points under the
worst case tested (±25% jitter, 30% missing); fewer points may land a few % off.

Rounding rule: the refined period is rounded to whole seconds when it is at least 10 s,
to whole milliseconds when at least 10 ms, else to microseconds. It is then snapped to the
nearest "nice" period (1, 2, 5, 10, 15, 20, 30 s or min; 1, 2, 3, 4, 6, 8, 12 h; 1 d;
7 d; and 1-500 ms) when it lies within 5 standard errors of it, and never farther than 1%.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from tsloom.errors import PrepError
from tsloom.prep._checks import TS, as_list, require_datetime

_MS = 1_000
_S = 1_000_000
_MIN = 60 * _S
_H = 60 * _MIN
NICE_PERIODS_US: tuple[int, ...] = tuple(
    sorted(
        [m * _MS for m in (1, 2, 5, 10, 20, 50, 100, 200, 500)]
        + [s * _S for s in (1, 2, 5, 10, 15, 20, 30)]
        + [m * _MIN for m in (1, 2, 5, 10, 15, 20, 30)]
        + [h * _H for h in (1, 2, 3, 4, 6, 8, 12, 24, 168)]
    )
)


SMALL_SERIES = 1000  # at most this many points: clusters may mislead, get a second opinion
DOUBTFUL_FIT = 0.75  # ... when the lattice fits worse than this (see _fit_score)
SEARCH_POINTS = 150


@dataclass(frozen=True)
class PeriodEstimate:
    """The estimated sampling period and how much to trust it.

    confidence = coverage x regularity: the share of gaps in the kept clusters times how
    tightly the timestamps sit on the estimated grid (1 = exactly on it, 0 = no better
    than random placement within a period).
    """

    period: dt.timedelta
    confidence: float
    n_points: int
    coverage: float
    regularity: float
    modes: tuple[dt.timedelta, ...]
    shares: tuple[float, ...]
    stderr_us: float

    @property
    def period_us(self) -> int:
        return _td_us(self.period)

    def to_dict(self) -> dict[str, object]:
        return {
            "period_s": self.period.total_seconds(),
            "confidence": self.confidence,
            "n_points": self.n_points,
            "coverage": self.coverage,
            "regularity": self.regularity,
            "modes_s": [m.total_seconds() for m in self.modes],
            "shares": list(self.shares),
            "stderr_s": self.stderr_us / _S,
        }


def _td_us(td: dt.timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * _S + td.microseconds


def to_epoch_us(ts: pl.Series | np.ndarray | Sequence[dt.datetime]) -> np.ndarray:
    """Timestamps (polars Datetime, numpy datetime64/int, datetimes) as int64 microseconds."""
    if isinstance(ts, pl.Series):
        if not isinstance(ts.dtype, pl.Datetime):
            raise PrepError(
                f"timestamp column {ts.name!r} has type {ts.dtype}, not Datetime",
                hint="parse it first, e.g. with tsloom.prep.parse_timestamps",
            )
        return ts.drop_nulls().dt.epoch("us").to_numpy()
    if not isinstance(ts, np.ndarray):
        return pl.Series("ts", list(ts)).drop_nulls().dt.epoch("us").to_numpy()
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts[~np.isnat(ts)]
        return ts.astype("datetime64[us]").astype(np.int64)
    return ts.astype(np.int64)


def _clusters(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster positive diffs; return (modes, counts, standard errors of the modes),
    largest cluster first."""
    n = d.size
    scale = float(np.median(d))
    hi = float(np.quantile(d, 0.99))
    bandwidth = scale * max(0.01, 0.25 * n ** (-0.2))
    edge = hi + 4 * bandwidth
    width = max(scale / 200, edge / 100_000)
    nbins = int(np.ceil(edge / width)) + 1
    inside = d[d < nbins * width]
    counts = np.bincount((inside / width).astype(np.int64), minlength=nbins)[:nbins]
    smooth = gaussian_filter1d(counts.astype(np.float64), bandwidth / width, mode="constant")
    peaks, props = find_peaks(np.concatenate([[0.0], smooth, [0.0]]), prominence=0)
    peaks = peaks - 1
    keep = props["prominences"] >= 0.5 * smooth[peaks]
    peaks = peaks[keep]
    if peaks.size == 0:
        peaks = np.array([int(np.argmax(smooth))])
    # boundaries: lowest smoothed point between neighbouring peaks
    bounds = [
        (left + int(np.argmin(smooth[left : right + 1]))) * width + width / 2
        for left, right in itertools.pairwise(peaks)
    ]
    label = np.searchsorted(np.asarray(bounds), inside)
    modes = np.empty(peaks.size)
    mad = np.zeros(peaks.size)
    jittered = np.zeros(peaks.size, dtype=bool)
    sizes = np.bincount(label, minlength=peaks.size)
    values, reps = np.unique(inside, return_counts=True)  # sorted distinct gaps
    value_label = np.searchsorted(np.asarray(bounds), values)
    # a cluster is a run of the sorted distinct gaps
    starts = np.searchsorted(value_label, np.arange(peaks.size))
    stops = np.searchsorted(value_label, np.arange(peaks.size), side="right")
    for j in range(peaks.size):
        in_j = np.arange(starts[j], stops[j])
        top = in_j[int(np.argmax(reps[in_j]))]
        if reps[top] >= max(2, 0.2 * sizes[j]):
            modes[j] = values[top]  # discrete data: the exact most frequent gap
        else:  # jittered data: the centre of the cluster
            members = np.repeat(values[in_j], reps[in_j])  # its gaps, sorted
            jittered[j] = True
            modes[j] = float(np.median(members))
            mad[j] = float(np.median(np.abs(members - modes[j])))
    # every cluster sees the same jitter, so pool its spread (small clusters alone lie)
    spread = np.zeros(peaks.size)
    if jittered.any():
        pooled = float(np.average(mad[jittered], weights=sizes[jittered]))
        spread[jittered] = 1.86 * pooled / np.sqrt(sizes[jittered])
    order = np.argsort(-sizes, kind="stable")
    return modes[order], sizes[order], spread[order]


def approximate_gcd(
    modes: np.ndarray,
    tolerance: float = 0.2,
    max_multiple: int = 12,
    stderr: np.ndarray | None = None,
) -> float | None:
    """Largest p such that every mode is within `tolerance`·p of a whole multiple of p.

    Each candidate (a mode divided by 1..max_multiple) fixes the multiples k_j; p is then
    re-fitted to all modes at once (weighted least squares, weights 1/stderr²) so one
    rough mode cannot decide alone. A mode known only roughly (`stderr`, e.g. a small
    jittered cluster) may miss its multiple by up to 4 standard errors instead (never by
    more than 0.45·p: a cluster of two or three gaps can hardly veto anything).
    """
    modes = np.asarray(modes, dtype=np.float64)
    se = np.zeros_like(modes) if stderr is None else np.asarray(stderr, dtype=np.float64)
    floor = max(float(np.max(se)), 1e-9 * float(np.max(modes))) * 1e-3 + 1e-12
    weight = 1.0 / np.maximum(se, floor) ** 2
    candidates = np.unique((modes[:, None] / np.arange(1, max_multiple + 1)[None, :]).ravel())
    for c in candidates[::-1]:
        k = np.rint(modes / c)
        if np.any(k < 1):
            continue
        p = float(np.sum(weight * k * modes) / np.sum(weight * k * k))
        allowed = np.maximum(tolerance * p, np.minimum(0.45 * p, 4 * se))
        if np.all(np.abs(modes - k * p) <= allowed):
            return p
    return None


def _refine(t: np.ndarray, p0: float, iterations: int = 6) -> tuple[float, float, float, float]:
    """Least-squares period on the lattice; returns (period, stderr, residual std, share
    of gaps used).

    A gap counts only when its multiple is unambiguous: its fraction is clearly away from
    a half and the multiple is small enough that the current error in p cannot tip it.
    """
    rel = (t - t[0]).astype(np.float64)
    d = np.diff(rel)
    p, stderr, resid_sd, used = p0, np.inf, p0 / np.sqrt(12), 0.0
    rel_err = 0.05  # assumed error of the GCD estimate before the first pass
    last_steps = None
    for it in range(iterations):
        ratio = d / p
        k = np.rint(ratio)
        kmax = max(1.0, min(100.0, np.floor(0.1 / rel_err)))
        cut = 0.3 if it == 0 else 0.45
        good = (k >= 1) & (k <= kmax) & (np.abs(ratio - k) <= cut)
        steps = np.where(good, k, 0.0)
        if last_steps is not None and np.array_equal(steps, last_steps):
            break  # the same lattice as last pass: the same fit again, so converged
        last_steps = steps
        seg = np.concatenate([[0], np.cumsum(~good)])
        c = np.concatenate([[0.0], np.cumsum(steps)])
        cnt = np.bincount(seg).astype(np.float64)
        cm = np.bincount(seg, weights=c) / cnt
        tm = np.bincount(seg, weights=rel) / cnt
        cc = c - cm[seg]
        tt = rel - tm[seg]
        sxx = float(np.sum(cc * cc))
        if sxx <= 0:
            break
        new_p = float(np.sum(cc * tt)) / sxx
        if not np.isfinite(new_p) or new_p <= 0:
            break
        resid = tt - new_p * cc
        used = float(good.mean())
        dof = max(1, t.size - int(np.count_nonzero(cnt)) - 1)
        resid_sd = float(np.sqrt(np.sum(resid * resid) / dof))
        stderr = resid_sd / np.sqrt(sxx)
        converged = abs(new_p - p) <= 1e-9 * p and it > 0
        p = new_p
        rel_err = max(4 * stderr / p, 1e-9)
        if converged:
            break
    return p, stderr, resid_sd, used


def _resultant(rel: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """How tightly the timestamps line up on each candidate grid: the length of the mean
    phase vector |mean exp(2πi·t/p)| (1 = exactly on the grid, ~0 = unrelated)."""
    out = np.empty(periods.size)
    for start in range(0, periods.size, 256):
        chunk = periods[start : start + 256]
        phase = np.outer(1.0 / chunk, rel) % 1.0 * (2 * np.pi)
        out[start : start + 256] = np.hypot(np.cos(phase).mean(axis=1), np.sin(phase).mean(axis=1))
    return out


def _search(rel: np.ndarray, p: float, span: float = 0.25) -> float:
    """The best-aligned period within ±span of p (coarse grid: few points, broad peak)."""
    cycles = max(1.0, rel[-1] / p)
    grid = p * np.exp(np.arange(np.log(1 - span), np.log(1 + span), 0.5 / cycles))
    return float(grid[int(np.argmax(_resultant(rel, grid)))])


def _fit_score(fit: tuple[float, float, float, float]) -> float:
    """Lattice fit quality: regularity times the share of gaps the lattice explains."""
    p, _, resid_sd, used = fit
    return max(0.0, 1 - resid_sd * np.sqrt(12) / p) * used


def _reconsider(t: np.ndarray, fit: tuple[float, float, float, float]) -> tuple:
    """Second opinion for short series, whose few gaps make clusters (so the GCD) unreliable.

    Candidates: the best-aligned grid near p/2, p, 2p and 3p (found on the first
    SEARCH_POINTS timestamps), each refined on all of them. The best lattice fit wins,
    unless a multiple of it (≥ 1.5x) fits within 0.05 as well: sub-multiples fit exact
    data equally well and must lose to the real period (jitter makes them fit badly).
    """
    p = fit[0]
    rel = (t[:SEARCH_POINTS] - t[0]).astype(np.float64)
    fits = [fit] + [_refine(t, _search(rel, m * p)) for m in (0.5, 1.0, 2.0, 3.0)]
    scores = [_fit_score(f) for f in fits]
    best = fits[int(np.argmax(scores))]
    multiples = [
        f
        for f, sc in zip(fits, scores, strict=True)
        if f[0] > 1.5 * best[0] and sc >= max(scores) - 0.05
    ]
    return max(multiples, key=lambda f: f[0]) if multiples else best


def _round_and_snap(p: float, stderr: float) -> int:
    if p >= 10 * _S:
        res = _S
    elif p >= 10 * _MS:
        res = _MS
    else:
        res = 1
    rounded = max(res, round(p / res) * res)
    nice = min(NICE_PERIODS_US, key=lambda n: abs(n - p))
    tol = min(0.01 * nice, 5 * stderr) if np.isfinite(stderr) else 0.01 * nice
    return nice if abs(p - nice) <= max(tol, 0.5) else int(rounded)


def estimate_period(
    ts: pl.Series | np.ndarray | Sequence[dt.datetime],
    *,
    coverage: float = 0.95,
    gcd_tolerance: float = 0.2,
    min_points: int = 3,
    snap: bool = True,
) -> PeriodEstimate:
    """Estimate the sampling period of one series from its timestamps (any order)."""
    t = to_epoch_us(ts)
    if t.size > 1 and not np.all(t[1:] >= t[:-1]):
        t = np.sort(t)
    if t.size > 1:  # distinct stamps: duplicates are no gaps
        t = t[np.concatenate([[True], t[1:] != t[:-1]])]
    if t.size < max(3, min_points):
        raise PrepError(
            f"too few distinct timestamps ({t.size}) to estimate a period",
            hint=f"need at least {max(3, min_points)}; pass the period explicitly instead",
        )
    d = np.diff(t).astype(np.float64)
    modes, sizes, spread = _clusters(d)
    share = sizes / d.size
    nkeep = int(np.searchsorted(np.cumsum(share), coverage - 1e-12) + 1)
    nkeep = min(nkeep, modes.size)
    kept, kept_share = modes[:nkeep], share[:nkeep]
    p0 = approximate_gcd(kept, gcd_tolerance, stderr=spread[:nkeep])
    if p0 is None:  # the modes share no common period: fall back to the biggest cluster
        p0 = float(kept[0])
    fit = _refine(t, p0)
    if t.size <= SMALL_SERIES and _fit_score(fit) < DOUBTFUL_FIT:
        fit = _reconsider(t, fit)
    p, stderr, resid_sd, _used = fit
    p_us = _round_and_snap(p, stderr) if snap else max(1, round(p))
    regularity = float(np.clip(1 - resid_sd * np.sqrt(12) / p, 0.0, 1.0))
    cov = float(min(1.0, kept_share.sum()))
    return PeriodEstimate(
        period=dt.timedelta(microseconds=p_us),
        confidence=round(cov * regularity, 6),
        n_points=int(t.size),
        coverage=cov,
        regularity=regularity,
        modes=tuple(dt.timedelta(microseconds=round(m)) for m in kept),
        shares=tuple(float(s) for s in kept_share),
        stderr_us=float(stderr),
    )


def estimate_periods(
    df: pl.DataFrame,
    by: str | Sequence[str] | None = None,
    ts: str = TS,
    *,
    errors: Literal["raise", "null"] = "raise",
    **kwargs: Any,
) -> pl.DataFrame:
    """One period per key: key columns + `period` (Duration), `confidence`, `n_points`.

    With errors="null" a series whose period cannot be estimated (too few points) gets a
    null period instead of stopping the whole batch.
    """
    keys = as_list(by)
    require_datetime(df, ts)
    # One pass gathers every series' timestamps (as epoch microseconds, keys in order of
    # first appearance); each series is then a slice of one numpy array.
    stamps = pl.col(ts).drop_nulls().dt.epoch("us").alias("_t")
    nulls = pl.col(ts).null_count().alias("_nulls")
    if keys:
        groups = df.group_by(keys, maintain_order=True).agg(stamps, nulls)
    else:
        groups = df.select(stamps.implode(), nulls)
    flat = groups.get_column("_t").explode().drop_nulls().to_numpy()  # [] explodes to null
    ends = np.cumsum(groups.get_column("_t").list.len().to_numpy())
    rows: list[dict[str, object]] = []
    for i, row in enumerate(groups.select(*keys, "_nulls").iter_rows(named=True)):
        t = flat[ends[i - 1] if i else 0 : ends[i]]
        has_null = row.pop("_nulls") > 0
        try:
            est = estimate_period(t, **kwargs)
        except PrepError:
            if errors == "raise":
                raise
            row.update(period=None, confidence=0.0, n_points=np.unique(t).size + has_null)
        else:
            row.update(period=est.period, confidence=est.confidence, n_points=est.n_points)
        rows.append(row)
    schema = {k: df.schema[k] for k in keys}
    schema.update(period=pl.Duration("us"), confidence=pl.Float64, n_points=pl.Int64)
    return pl.DataFrame(rows, schema=schema, orient="row")
