"""Report figures drawn with matplotlib and turned into inline SVG (or a data-URI PNG).

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot, so no
display or GUI backend is ever touched and nothing global changes. Long series are
down-sampled per line with min/max buckets (so a one-point spike stays visible) to at
most `MAX_POINTS` points before they are drawn.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import re
from collections.abc import Iterator, Sequence

import matplotlib as mpl
import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tsloom.prep.stats import Autocorrelation, Density

MAX_POINTS = 4000
MAX_MARKERS = 2000
MAX_SVG_BYTES = 1_500_000

RAW = "#9aa3ad"
CLEANED = "#1f66c2"
INSERTED = "#f28e00"
ANOMALY = "#d62728"
ACCENT = "#2a9d8f"
BAND = "#1f66c2"

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e7ec",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "svg.fonttype": "none",  # text stays text: small, searchable, selectable
    "path.simplify": True,
}
_gids = itertools.count(1)


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report style, applied while figures are built and saved."""
    with mpl.rc_context(_STYLE):
        yield


def new_figure(width: float = 10.0, height: float = 3.2, **subplots) -> tuple[Figure, object]:
    """A constrained-layout figure (no pyplot) and its axes (`subplots` as for Figure.subplots)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(**subplots) if subplots else fig.add_subplot()
    return fig, axes


# --------------------------------------------------------------------------- down-sampling


def minmax_indices(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `max_points` points that keep each bucket's minimum and maximum
    (and the first and last point), in order. Buckets holding missing values also keep one
    missing point, so gaps still break the drawn line."""
    y = np.asarray(values, dtype=np.float64)
    n = y.size
    if n <= max(max_points, 3):
        return np.arange(n)
    finite = np.isfinite(y)
    has_gaps = not bool(finite.all())
    per_bucket = 3 if has_gaps else 2
    buckets = max(1, (max_points - 2) // per_bucket)
    size = -(-n // buckets)
    buckets = -(-n // size)
    pad = buckets * size - n
    lo = np.concatenate([np.where(finite, y, np.inf), np.full(pad, np.inf)]).reshape(buckets, -1)
    hi = np.concatenate([np.where(finite, y, -np.inf), np.full(pad, -np.inf)])
    hi = hi.reshape(buckets, -1)
    base = np.arange(buckets) * size
    parts = [np.array([0, n - 1]), base + lo.argmin(axis=1), base + hi.argmax(axis=1)]
    if has_gaps:
        missing = np.concatenate([~finite, np.zeros(pad, dtype=bool)]).reshape(buckets, -1)
        rows = missing.any(axis=1)
        parts.append((base + missing.argmax(axis=1))[rows])
    idx = np.unique(np.concatenate(parts))
    return idx[idx < n]


def downsample_xy(
    x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reduced with `minmax_indices` (spikes and dips survive)."""
    idx = minmax_indices(y, max_points)
    return np.asarray(x)[idx], np.asarray(y, dtype=np.float64)[idx]


def thin(n: int, max_points: int = MAX_MARKERS) -> np.ndarray:
    """Evenly spread indices of at most `max_points` out of n (for markers)."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


# --------------------------------------------------------------------------- output


_PROLOG = re.compile(r"<\?xml.*?\?>\s*|<!DOCTYPE.*?>\s*", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_SIZE = re.compile(r'\s(width|height)="[^"]*"')


def svg_markup(fig: Figure) -> str:
    """The figure as an inline `<svg>` element: no XML prolog, metadata or namespace URLs
    (an HTML parser needs none), sized by its viewBox so it scales with the page."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue().decode("utf-8")
    text = _METADATA.sub("", _PROLOG.sub("", text))
    head, sep, rest = text.partition(">")
    head = _SIZE.sub("", _XMLNS.sub("", head))
    return f'{head} role="img"{sep}{rest}'.strip()


def png_markup(fig: Figure, *, dpi: int = 110, alt: str = "") -> str:
    """The figure as an `<img>` with a base64 PNG data URI."""
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    alt = alt.replace('"', "'").replace("<", "").replace(">", "")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def figure_html(fig: Figure, *, alt: str = "", max_svg_bytes: int = MAX_SVG_BYTES) -> str:
    """Inline SVG, or a PNG when the SVG would be larger than `max_svg_bytes`."""
    svg = svg_markup(fig)
    if len(svg) <= max_svg_bytes:
        return svg
    return png_markup(fig, alt=alt)


# --------------------------------------------------------------------------- drawing helpers


def _date_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _as_datetime64(ts: Sequence | np.ndarray) -> np.ndarray:
    arr = np.asarray(ts)
    if arr.dtype.kind != "M":
        arr = arr.astype("datetime64[us]")
    return arr


def draw_stems(
    ax: Axes,
    values: np.ndarray,
    band: float | None,
    *,
    title: str,
    color: str = CLEANED,
    start_lag: int = 0,
) -> None:
    """Lollipop stems per lag with the ±band (white-noise 95%) shaded."""
    vals = np.asarray(values, dtype=np.float64)
    lags = np.arange(start_lag, start_lag + vals.size)
    if band is not None and np.isfinite(band):
        ax.axhspan(-band, band, color=BAND, alpha=0.12, lw=0, label="95% band")
    ax.axhline(0, color="#555", lw=0.7)
    ax.vlines(lags, 0, vals, color=color, lw=1.1)
    ax.plot(lags, vals, "o", ms=2.8, color=color)
    ax.set_xlabel("lag (steps)")
    ax.set_title(title, loc="left")
    top = max(1.0, float(np.nanmax(np.abs(vals))) if vals.size else 1.0)
    ax.set_ylim(-top * 1.05, top * 1.05)


def draw_density(ax: Axes, values: np.ndarray, dens: Density | None, *, title: str) -> None:
    """Histogram (as densities) with the KDE curve on top."""
    y = np.asarray(values, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size:
        bins = int(np.clip(np.sqrt(y.size), 10, 60))
        ax.hist(y, bins=bins, density=True, color=RAW, alpha=0.55, label="histogram")
    if dens is not None:
        ax.plot(dens.x, dens.y, color=CLEANED, lw=1.6, label="density (KDE)")
    ax.set_title(title, loc="left")
    ax.set_ylabel("density")
    ax.legend(loc="best")


# --------------------------------------------------------------------------- figures


def raw_vs_cleaned_figure(
    raw_ts: np.ndarray,
    raw_values: np.ndarray,
    clean_ts: np.ndarray,
    clean_values: np.ndarray,
    *,
    inserted: np.ndarray | None = None,
    anomaly_ts: np.ndarray | None = None,
    anomaly_values: np.ndarray | None = None,
    title: str = "",
    ylabel: str = "",
    max_points: int = MAX_POINTS,
    max_markers: int = MAX_MARKERS,
) -> Figure:
    """Raw (grey) and cleaned (blue) lines; inserted and imputed points as orange circles on
    the cleaned line, flagged anomalies as red crosses at their raw values."""
    with style():
        fig, ax = new_figure(10.0, 3.3)
        rx, ry = downsample_xy(_as_datetime64(raw_ts), raw_values, max_points)
        cx, cy = downsample_xy(_as_datetime64(clean_ts), clean_values, max_points)
        ax.plot(rx, ry, color=RAW, lw=0.9, label="raw", gid=f"raw-line-{next(_gids)}")
        ax.plot(cx, cy, color=CLEANED, lw=0.9, label="cleaned", gid=f"cleaned-line-{next(_gids)}")
        notes = []
        if inserted is not None:
            mask = np.asarray(inserted, dtype=bool)
            ix = _as_datetime64(clean_ts)[mask]
            iy = np.asarray(clean_values, dtype=np.float64)[mask]
            keep = np.isfinite(iy)
            ix, iy = ix[keep], iy[keep]
            n_ins = int(mask.sum())
            if n_ins:
                pick = thin(ix.size, max_markers)
                ax.plot(
                    ix[pick],
                    iy[pick],
                    "o",
                    ms=3.6,
                    mfc="none",
                    mec=INSERTED,
                    mew=1.0,
                    label=f"inserted / imputed ({n_ins:,})",
                    gid=f"inserted-points-{next(_gids)}",
                )
                if pick.size < ix.size:
                    notes.append(f"{pick.size:,} of {ix.size:,} inserted points drawn")
        if anomaly_ts is not None and anomaly_values is not None:
            ax_ = _as_datetime64(anomaly_ts)
            ay = np.asarray(anomaly_values, dtype=np.float64)
            n_an = int(ay.size)
            if n_an:
                pick = np.arange(n_an)
                if n_an > max_markers:  # the most extreme half, the rest spread evenly
                    dev = np.nan_to_num(np.abs(ay - np.nanmedian(ay)), nan=-1.0)
                    extreme = np.argsort(-dev, kind="stable")[: max_markers // 2]
                    pick = np.unique(np.concatenate([thin(n_an, max_markers // 2), extreme]))
                    notes.append(f"{pick.size:,} of {n_an:,} anomalies drawn")
                ax.plot(
                    ax_[pick],
                    ay[pick],
                    "x",
                    ms=6,
                    mew=1.5,
                    color=ANOMALY,
                    label=f"flagged anomaly ({n_an:,})",
                    gid=f"anomaly-points-{next(_gids)}",
                )
        _date_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(title + (f"  ({'; '.join(notes)})" if notes else ""), loc="left")
        ax.legend(loc="upper left", ncols=4, bbox_to_anchor=(0, -0.12))
    return fig


def decomposition_figure(
    ts: np.ndarray,
    observed: np.ndarray,
    trend: np.ndarray,
    seasonal: np.ndarray,
    resid: np.ndarray,
    *,
    title: str = "",
    max_points: int = MAX_POINTS // 2,
) -> Figure:
    """Four stacked panels sharing the time axis: observed, trend, seasonal, residual."""
    with style():
        fig, axes = new_figure(10.0, 6.4, nrows=4, ncols=1, sharex=True)
        t = _as_datetime64(ts)
        panels = (
            ("observed", observed, RAW),
            ("trend", trend, CLEANED),
            ("seasonal", seasonal, ACCENT),
            ("residual", resid, "#6c4fb3"),
        )
        for ax, (label, values, color) in zip(axes, panels, strict=True):
            x, y = downsample_xy(t, values, max_points)
            ax.plot(x, y, color=color, lw=0.8, label=label)
            ax.set_ylabel(label)
            if label == "residual":
                ax.axhline(0, color="#555", lw=0.6)
        _date_axis(axes[-1])
        axes[0].set_title(title, loc="left")
    return fig


def density_figure(values: np.ndarray, dens: Density | None, *, title: str = "") -> Figure:
    """Histogram with the density curve."""
    with style():
        fig, ax = new_figure(5.0, 3.0)
        draw_density(ax, values, dens, title=title)
    return fig


def autocorrelation_figure(ac: Autocorrelation, *, title: str = "") -> Figure:
    """ACF and PACF stem plots side by side with their confidence bands."""
    with style():
        fig, (a, b) = new_figure(10.0, 3.0, nrows=1, ncols=2)
        draw_stems(a, ac.acf, ac.band, title=f"{title} ACF".strip())
        draw_stems(b, ac.pacf, ac.band, title=f"{title} PACF".strip())
    return fig


def distribution_figure(
    values: np.ndarray,
    dens: Density | None,
    ac: Autocorrelation | None,
    *,
    title: str = "",
) -> Figure:
    """One row: histogram + density, ACF, PACF (the panels that are available)."""
    with style():
        ncols = 1 + (2 if ac is not None else 0)
        fig, axes = new_figure(10.0, 3.0, nrows=1, ncols=ncols, squeeze=False)
        axes = axes[0]
        draw_density(axes[0], values, dens, title=f"{title} distribution".strip())
        if ac is not None:
            draw_stems(axes[1], ac.acf, ac.band, title="ACF")
            draw_stems(axes[2], ac.pacf, ac.band, title="PACF")
    return fig


def heatmap_figure(labels: Sequence[str], matrix: np.ndarray, *, title: str = "") -> Figure:
    """Correlation heat map (blue −1 … red +1) with each coefficient written in its cell."""
    m = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    side = float(np.clip(1.0 + 0.62 * n, 3.6, 11.0))
    with style():
        fig, ax = new_figure(side + 1.2, side)
        mesh = ax.pcolormesh(
            np.ma.masked_invalid(m), cmap="RdBu_r", vmin=-1, vmax=1, edgecolors="white", lw=0.5
        )
        ax.set_xlim(0, n)
        ax.set_ylim(n, 0)
        ax.set_aspect("equal")
        ax.grid(False)
        ax.set_xticks(np.arange(n) + 0.5, labels, rotation=45, ha="right")
        ax.set_yticks(np.arange(n) + 0.5, labels)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if n <= 20:
            size = 9 if n <= 8 else 7 if n <= 14 else 5.5
            for i in range(n):
                for j in range(n):
                    v = m[i, j]
                    text = "—" if not np.isfinite(v) else f"{v:.2f}"
                    color = "white" if np.isfinite(v) and abs(v) > 0.6 else "#1d2330"
                    ax.text(
                        j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=size, color=color
                    )
        fig.colorbar(mesh, ax=ax, shrink=0.8, label="Pearson r")
        ax.set_title(title, loc="left")
    return fig


def cross_correlation_figure(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]], *, title: str = ""
) -> Figure:
    """corr(x[t], y[t+lag]) against lag, one line per pair; the best lag of each is dotted."""
    with style():
        fig, ax = new_figure(10.0, 3.2)
        colors = mpl.colormaps["tab10"].colors
        for (label, lags, values), color in zip(curves, itertools.cycle(colors), strict=False):
            v = np.asarray(values, dtype=np.float64)
            ax.plot(lags, v, color=color, lw=1.1, label=label)
            if np.isfinite(v).any():
                best = int(np.nanargmax(np.abs(v)))
                ax.plot([lags[best]], [v[best]], "o", color=color, ms=4)
        ax.axhline(0, color="#555", lw=0.6)
        ax.axvline(0, color="#555", lw=0.6, ls=":")
        ax.set_xlabel("lag (steps): x leads y for positive lags")
        ax.set_ylabel("correlation")
        ax.set_title(title, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def line_figure(
    ts: np.ndarray,
    values: np.ndarray,
    *,
    title: str = "",
    ylabel: str = "",
    max_points: int = MAX_POINTS,
) -> Figure:
    """One down-sampled series over time."""
    with style():
        fig, ax = new_figure(10.0, 2.8)
        x, y = downsample_xy(_as_datetime64(ts), values, max_points)
        ax.plot(x, y, color=CLEANED, lw=0.9)
        _date_axis(ax)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
    return fig
