"""Reports: a JSON file for machines and a self-contained HTML page for people.

The HTML page carries its CSS and figures inline (SVG, or PNG as a data URI when an SVG
would be huge) and references nothing outside itself, so it opens offline.
"""

from tsloom.reports.clean_report import clean_page, render_clean_report
from tsloom.reports.html import (
    Figure,
    Page,
    ReportPaths,
    Section,
    Table,
    Text,
    fmt_duration,
    fmt_value,
    to_jsonable,
    write_report,
)
from tsloom.reports.plots import downsample_xy, figure_html, minmax_indices

__all__ = [
    "Figure",
    "Page",
    "ReportPaths",
    "Section",
    "Table",
    "Text",
    "clean_page",
    "downsample_xy",
    "figure_html",
    "fmt_duration",
    "fmt_value",
    "minmax_indices",
    "render_clean_report",
    "to_jsonable",
    "write_report",
]
