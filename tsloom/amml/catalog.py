"""The components AMML knows, with their arguments: what the compiler checks a program against.

Roles: `ingress` components start a pipeline (no input), `progress` components take one input
and emit one output (`join` takes several), `egress` components end a pipeline. Argument kinds:

* ``str``, ``int``, ``number`` (int or float), ``bool``, ``list``: a literal; a bare name is
  accepted where a ``str`` is expected (``on=ts`` is ``on="ts"``);
* ``columns``: a column name or a list of them (always compiled to a list of strings);
* ``callback``: an expression compiled to a callback script.

`register(spec)` adds or replaces a component, for the runtime that implements them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["ingress", "progress", "egress"]
ArgKind = Literal["str", "int", "number", "bool", "list", "columns", "callback", "any"]


@dataclass(frozen=True)
class ArgSpec:
    name: str
    kind: ArgKind = "str"
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    role: Role
    args: tuple[ArgSpec, ...] = ()
    help: str = ""
    # kind of any other key=value argument (e.g. `assign y=a*2`), None: only the listed ones
    extra_args: ArgKind | None = None
    # bare names after the component: "in" (flows it reads, join), "out" (flows it makes, split)
    positionals: Literal["none", "in", "out"] = "none"
    min_positionals: int = 0
    # at least one argument of each group must be given
    one_of: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    def arg(self, name: str) -> ArgSpec | None:
        for a in self.args:
            if a.name == name:
                return a
        return None


def _a(name: str, kind: ArgKind = "str", required: bool = False, help: str = "") -> ArgSpec:
    return ArgSpec(name, kind, required, help)


_BATCH = _a("batch_size", "int", help="rows per batch")
_COLS = _a("cols", "columns", help="columns to work on (default: all numeric)")
_FIT = _a("fit_rows", "int", help="fit on the first N rows, then scale batch by batch")

COMPONENTS: dict[str, ComponentSpec] = {}


def register(spec: ComponentSpec) -> None:
    COMPONENTS[spec.name] = spec


for _spec in (
    # ingress
    ComponentSpec(
        "source",
        "ingress",
        (
            _a("id", help="lake dataset"),
            _a("integration", help="saved integration"),
            _a("start"),
            _a("end"),
            _COLS,
            _BATCH,
        ),
        help="read a lake dataset or a saved integration",
        one_of=(("id", "integration"),),
    ),
    ComponentSpec(
        "normalsource",
        "ingress",
        (
            _a("col", required=True),
            _a("mean", "number"),
            _a("std", "number"),
            _a("rows", "int"),
            _a("freq"),
            _a("seed", "int"),
            _a("start", help="first timestamp (default: now)"),
            _a("realtime", "bool", help="pace the rows to the wall clock"),
            _BATCH,
        ),
        help="synthetic normal noise",
    ),
    ComponentSpec("csv", "ingress", (_a("path", required=True), _a("ts"), _BATCH)),
    ComponentSpec(
        "sql", "ingress", (_a("url", required=True), _a("query", required=True), _a("ts"), _BATCH)
    ),
    ComponentSpec(
        "mqtt",
        "ingress",
        (
            _a("url"),
            _a("topic", required=True),
            _a("qos", "int"),
            _a("time", help="payload time field (default ts)"),
            _a("wait", "number", help="seconds a batch may wait to fill (default 0.5)"),
            _BATCH,
        ),
    ),
    # progress
    ComponentSpec("filter", "progress", (_a("cond", "callback", required=True),)),
    ComponentSpec("select", "progress", (_a("cols", "columns", required=True),)),
    ComponentSpec("assign", "progress", (), help="new_col=expression …", extra_args="callback"),
    ComponentSpec("minmax_scaler", "progress", (_COLS, _a("id", help="scaler id"), _FIT)),
    ComponentSpec("zscore_scaler", "progress", (_COLS, _a("id", help="scaler id"), _FIT)),
    ComponentSpec("minmax_inverse", "progress", (_COLS, _a("id", help="scaler id"))),
    ComponentSpec(
        "resample",
        "progress",
        (_a("every", required=True, help='bucket width, e.g. "1h"'), _a("agg"), _COLS),
    ),
    ComponentSpec("impute", "progress", (_a("method"), _COLS, _a("limit", "int"))),
    ComponentSpec(
        "window",
        "progress",
        (_a("size", "int", required=True), _a("step", "int"), _a("horizon", "int"), _COLS),
    ),
    ComponentSpec(
        "train_lstm",
        "progress",
        (
            _a("model", required=True, help="name:version of a model spec"),
            _a("epoch", "int"),
            _a("lr", "number"),
            _BATCH,
            _a("lookback", "int"),
            _a("horizon", "int"),
            _a("target", "columns"),
            _a("seed", "int", help="random seed (default 0)"),
        ),
    ),
    ComponentSpec(
        "lstm",
        "progress",
        (_a("model", required=True), _a("horizon", "int"), _a("target", "columns")),
    ),
    ComponentSpec(
        "surveillance",
        "progress",
        (_COLS, _a("method"), _a("threshold", "number"), _a("window", "int")),
        help="anomaly detection; emits alert events",
    ),
    ComponentSpec(
        "join",
        "progress",
        (
            _a("on"),
            _a("by", "columns", help="key columns: match rows per key (as-of join per key)"),
            _a("tolerance"),
            _a("how"),
        ),
        help='merge flows on time: join a b on=ts by=sensor_id tolerance="5min"',
        positionals="in",
        min_positionals=1,
    ),
    ComponentSpec(
        "split",
        "progress",
        (_a("cond", "callback", help="route rows: true → first flow, else → second"),),
        help="fan a flow out: raw | split a b",
        positionals="out",
        min_positionals=2,
    ),
    # egress
    ComponentSpec("print", "egress", (_a("limit", "int"), _a("every", "int"))),
    # alert and snapshot pass their input on (alert | snapshot): progress, not egress
    ComponentSpec(
        "alert",
        "progress",
        (_a("level"), _a("message"), _a("topic"), _a("db", "bool"), _a("url")),
        help="record alert events (log, database, MQTT); adds alert_id",
    ),
    ComponentSpec(
        "snapshot",
        "progress",
        (_a("size", "int"), _a("name")),
        help="persist the rows before each alert event",
    ),
    ComponentSpec(
        "sink",
        "egress",
        (
            _a("to", required=True, help="lake, db, csv or mqtt"),
            _a("name"),
            _a("path"),
            _a("table"),
            _a("topic"),
            _a("url"),
            _a("flush_rows", "int", help="rows buffered per write"),
            _a("qos", "int", help="MQTT QoS (default 1)"),
        ),
    ),
):
    register(_spec)
