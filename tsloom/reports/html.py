"""A small page model rendered to one self-contained HTML file, and atomic report writing.

A page is a title, a summary table (label → value) and sections of text, tables and
figures. Everything it needs is inline: CSS in a `<style>` element, figures as inline SVG
or `data:` PNG, no scripts, no fonts or images fetched from anywhere, so the file opens
offline in any browser and can be mailed or archived as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import html as _html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from tsloom import __version__
from tsloom.errors import TsloomError

# --------------------------------------------------------------------------- values


def to_jsonable(value: object) -> object:
    """A JSON-safe copy of `value`: datetimes as ISO text, numpy scalars and arrays as Python
    numbers and lists, NaN/inf as null, frames as lists of row dicts, keys as strings."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return to_jsonable(float(value))
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pl.DataFrame):
        return to_jsonable(value.to_dicts())
    if isinstance(value, pl.Series):
        return to_jsonable(value.to_list())
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    raise TsloomError(
        f"cannot write a {type(value).__name__} into a JSON report",
        hint="convert it to numbers, text, lists or dicts first",
    )


def fmt_duration(value: dt.timedelta) -> str:
    """A duration in the largest whole unit that fits: 1 h, 10 min, 15 s, 250 ms, 1 d."""
    us = round(value / dt.timedelta(microseconds=1))
    if us == 0:
        return "0 s"
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000)):
        if us % size == 0:
            return f"{us // size} {unit}"
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000} s"
    if us % 1_000 == 0:
        return f"{us // 1_000} ms"
    return str(value)


def fmt_value(value: object) -> str:
    """How a value reads in a table cell (plain text; escaped by the renderer)."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            return "—"
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo else "")
    if isinstance(value, dt.timedelta):
        return fmt_duration(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple | set):
        return ", ".join(fmt_value(v) for v in value) or "—"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


# --------------------------------------------------------------------------- page model


@dataclass
class Text:
    """A paragraph; `note` is muted, `warning` stands out."""

    text: str
    kind: Literal["p", "note", "warning"] = "p"

    def render(self) -> str:
        cls = "" if self.kind == "p" else f' class="{self.kind}"'
        return f"<p{cls}>{_html.escape(self.text)}</p>"


@dataclass
class Table:
    """Rows of cells under column headings; numbers are right-aligned and formatted."""

    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str | None = None

    def render(self) -> str:
        out = ['<div class="tbl"><table>']
        if self.caption:
            out.append(f"<caption>{_html.escape(self.caption)}</caption>")
        out.append("<thead><tr>")
        out.extend(f"<th>{_html.escape(str(c))}</th>" for c in self.columns)
        out.append("</tr></thead><tbody>")
        for row in self.rows:
            out.append("<tr>")
            for cell in row:
                cls = ' class="num"' if _is_number(cell) else ""
                out.append(f"<td{cls}>{_html.escape(fmt_value(cell))}</td>")
            out.append("</tr>")
        out.append("</tbody></table></div>")
        return "".join(out)


@dataclass
class Figure:
    """Figure markup made by `tsloom.reports.plots.figure_html` (inline SVG or data PNG)."""

    markup: str
    caption: str | None = None

    def render(self) -> str:
        cap = f"<figcaption>{_html.escape(self.caption)}</figcaption>" if self.caption else ""
        return f"<figure>{self.markup}{cap}</figure>"


Block = Text | Table | Figure


@dataclass
class Section:
    """A heading and its blocks; level 2 sections are listed in the page's contents."""

    title: str
    blocks: list[Block | Section] = field(default_factory=list)
    level: int = 2

    def add(self, *blocks: Block | Section) -> Section:
        self.blocks.extend(blocks)
        return self

    def render(self, anchor: str) -> str:
        level = min(max(self.level, 2), 4)
        out = [f'<section id="{anchor}"><h{level}>{_html.escape(self.title)}</h{level}>']
        for i, block in enumerate(self.blocks):
            if isinstance(block, Section):
                out.append(block.render(f"{anchor}-{i}"))
            else:
                out.append(block.render())
        out.append("</section>")
        return "\n".join(out)


@dataclass
class Page:
    """A whole report page: title, summary (label, value) pairs, sections."""

    title: str
    summary: list[tuple[str, object]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    subtitle: str | None = None

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def render(self) -> str:
        title = _html.escape(self.title)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title><style>{CSS}</style></head><body><main>",
            f"<header><h1>{title}</h1>",
        ]
        if self.subtitle:
            parts.append(f'<p class="note">{_html.escape(self.subtitle)}</p>')
        parts.append("</header>")
        if self.summary:
            rows = "".join(
                f"<tr><th>{_html.escape(str(k))}</th>"
                + ('<td class="num">' if _is_number(v) else "<td>")
                + f"{_html.escape(fmt_value(v))}</td></tr>"
                for k, v in self.summary
            )
            parts.append(f'<table class="summary"><tbody>{rows}</tbody></table>')
        if len(self.sections) > 1:
            links = "".join(
                f'<li><a href="#s{i}">{_html.escape(s.title)}</a></li>'
                for i, s in enumerate(self.sections)
            )
            parts.append(f'<nav><h2>Contents</h2><ol class="toc">{links}</ol></nav>')
        parts.extend(s.render(f"s{i}") for i, s in enumerate(self.sections))
        parts.append(
            f'<footer class="note">Written by tsloom {_html.escape(__version__)} on {now}.'
            "</footer></main></body></html>"
        )
        return "\n".join(parts)


CSS = """
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#d9dee5;--bg:#fff;--band:#f5f7fa;--warn:#a33b00}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:.2em 0}
h2{font-size:1.3em;margin:1.8em 0 .6em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:1.1em;margin:1.4em 0 .4em}
h4{font-size:1em;margin:1.2em 0 .3em}
p{margin:.4em 0}
.note{color:var(--muted);font-size:.92em}
.warning{color:var(--warn);background:#fff4ec;border-left:3px solid var(--warn);padding:.3em .7em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0 1em}
th,td{padding:.28em .7em;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--band);font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
caption{caption-side:top;text-align:left;color:var(--muted);padding:.2em 0}
.tbl{overflow-x:auto}
table.summary th{font-weight:600;background:var(--band);width:14em}
nav ol{columns:2;margin:.3em 0;padding-left:1.4em}
nav h2{font-size:1em;border:0;margin:1.2em 0 .2em}
a{color:#1f5fbf}
figure{margin:.6em 0 1.4em}
figure svg,figure img{display:block;width:100%;height:auto;max-width:1120px}
figcaption{color:var(--muted);font-size:.9em;margin-top:.2em}
footer{margin-top:3em;border-top:1px solid var(--line);padding-top:.6em}
@media print{main{max-width:none}nav{display:none}}
"""


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ReportPaths:
    """Where a report was written."""

    json: Path
    html: Path

    def to_dict(self) -> dict[str, str]:
        return {"json": str(self.json), "html": str(self.html)}


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or name.startswith(".") or any(ch in name for ch in "/\\\0"):
        raise TsloomError(
            f"invalid report name {name!r}",
            hint="use a plain file name without directories, e.g. 'clean-20240101T000000Z'",
        )
    return name


def _write_atomic(target: Path, text: str) -> Path:
    """Write `text` to a hidden temp file beside `target`, fsync it; return the temp path."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for reading
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_report(directory: Path, name: str, payload: Mapping, html: str) -> ReportPaths:
    """Write `<name>.json` (the payload, made JSON-safe) and `<name>.html` into `directory`.

    Both texts are made first; each file is written to a temporary file and renamed into
    place, so a failure never leaves a half-written or missing-half report behind (an
    earlier report of the same name stays as it was).
    """
    _check_name(name)
    directory = Path(directory)
    json_text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False, ensure_ascii=False)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TsloomError(
            f"cannot create the report directory {directory}: {exc.strerror or exc}",
            hint="pass a writable directory",
        ) from exc
    paths = ReportPaths(json=directory / f"{name}.json", html=directory / f"{name}.html")
    temps: list[Path] = []
    try:
        temps.append(_write_atomic(paths.json, json_text + "\n"))
        temps.append(_write_atomic(paths.html, html))
        os.replace(temps[0], paths.json)
        os.replace(temps[1], paths.html)
    except OSError as exc:
        raise TsloomError(
            f"cannot write the report {name} into {directory}: {exc.strerror or exc}",
            hint="check free space and permissions",
        ) from exc
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return paths
