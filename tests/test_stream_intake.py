"""The stream's fast intake: `BatchParser` gives exactly the rows `MqttMapping.parse_payload`
gives (values and types) on varied payloads, counts bad messages with the mapping's
reasons instead of raising, and `StreamEngine.process_columns` with the indexed series
binding does exactly what `process` with a scan of every feature rule does."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tsloom.sources.mqtt import MalformedMessage, MqttMapping
from tsloom.stream import engine as engine_module
from tsloom.stream.config import StreamConfig
from tsloom.stream.engine import StreamEngine
from tsloom.stream.intake import BatchParser
from tsloom.stream.models import BoundModel, FeatureRule

T = 1_767_225_600_000  # 2026-01-01 in ms


def typed(rows: list[dict[str, Any]]) -> list[list[tuple[str, type, Any]]]:
    """Rows with each value's type, so 1 and 1.0 differ."""
    return [[(k, type(v), v) for k, v in row.items()] for row in rows]


def mapping_rows(mapping: MqttMapping, messages: list[tuple[str, bytes]]) -> list[dict]:
    rows: list[dict] = []
    for topic, payload in messages:
        rows.extend(mapping.parse_payload(payload, topic))
    return rows


def enc(doc: Any) -> bytes:
    return json.dumps(doc).encode()


CASES = [
    pytest.param(
        {"time": "t", "time_unit": "ms", "keys": ["sensor_id"], "values": ["v"]},
        [
            [{"t": T + i, "sensor_id": i, "v": i / 3} for i in range(50)],
            {"t": T, "sensor_id": "s-7", "v": 4},  # one object, a string key, an int value
            [{"t": T, "sensor_id": 1, "v": None}, {"t": T + 1, "sensor_id": 2, "v": 2.5}],
            [{"t": T, "sensor_id": 3, "v": 1, "extra": [1, 2]}],
        ],
        True,
        id="flat-ms",
    ),
    pytest.param(
        {"time": "t", "time_unit": "s", "keys": ["site", "n"], "values": ["a", "b"]},
        [
            [{"t": 1_700_000_000.123456, "site": "x", "n": 1, "a": 1.5, "b": -2}],
            [{"t": 1_700_000_001, "site": "y", "n": 2, "a": None, "b": None}],
            [{"t": 1_700_000_002.5, "site": "y", "n": 2, "a": 0, "b": 1e300}],
        ],
        True,
        id="seconds-float-times-two-values",
    ),
    pytest.param(
        {"time": "t", "time_unit": "ns", "values": ["v"]},
        [[{"t": 1_700_000_000_123_456_789 + i, "v": 1.0} for i in range(3)]],
        True,
        id="ns-no-keys",
    ),
    pytest.param(
        {"time": "t", "time_unit": "us", "keys": ["k"], "values": ["v"], "unit_field": "u"},
        [
            [
                {"t": 10**15, "k": 1, "v": 2.0, "u": "ppm"},
                {"t": 10**15 + 1, "k": 2, "v": 3, "u": "C"},
            ]
        ],
        True,
        id="unit-field",
    ),
    pytest.param(
        {"time": "t", "keys": ["k"], "values": ["v"], "topic_key": "topic"},
        [[{"t": T, "k": 1, "v": 2.0}], {"t": T, "k": 2, "v": 3.0}],
        True,
        id="topic-key",
    ),
    pytest.param(  # shapes the mapping must decide: nested, numeric strings, ISO times
        {"time": "meta.at", "time_unit": "s", "keys": ["meta.id"], "values": ["data.temp"]},
        [
            [{"meta": {"at": 10, "id": "a"}, "data": {"temp": "21.5"}}],
            {"meta": {"at": 11, "id": "a"}, "data": {"temp": None}},
        ],
        False,
        id="nested",
    ),
    pytest.param(
        {"time": "t", "time_unit": "ms", "keys": ["k"], "values": ["v"]},
        [[{"t": "1700000000000", "k": 1, "v": " 2.5 "}], [{"t": T, "k": 1, "v": "3"}]],
        False,
        id="numeric-strings",
    ),
    pytest.param(
        {"time": "t", "time_unit": "iso", "tz": "Asia/Seoul", "keys": ["k"], "values": ["v"]},
        [
            [
                {"t": "2022-11-22 16:35:45", "k": 1, "v": 1},
                {"t": "2022-11-22T07:35:45Z", "k": 2, "v": 2},
            ]
        ],
        False,
        id="iso",
    ),
]


@pytest.mark.parametrize(("spec", "docs", "fast"), CASES)
def test_batch_parser_gives_the_mappings_rows(spec: dict, docs: list, fast: bool) -> None:
    mapping = MqttMapping.load(spec)
    messages = [(f"site/{i}", enc(doc)) for i, doc in enumerate(docs)]
    expected = mapping_rows(mapping, messages)
    columns = BatchParser(mapping).parse(messages)
    assert typed(columns.rows()) == typed(expected)
    assert columns.messages == len(messages) and columns.malformed == 0
    # the flat shapes take the fast path; the others are left to the mapping
    assert columns.slow == (0 if fast else len(messages))
    assert len(columns) == len(expected)


def test_bad_messages_are_counted_with_the_mappings_reason_not_raised() -> None:
    mapping = MqttMapping.load({"time": "t", "keys": ["k"], "values": ["v"]})
    good = [
        enc([{"t": T, "k": 1, "v": 1.0}, {"t": T + 1, "k": 2, "v": 2.0}]),
        enc({"t": T + 2, "k": 1, "v": 3}),
    ]
    bad = [
        b"not json",
        b"\xff\xfe",
        b"42",
        b"[]",
        b'[{"t": 1, "k": 1, "v": 1.0}, 7]',  # a reading that is not an object
        b'[{"t": 1, "k": 1, "v": 1.0}, ["t", "k", "v"]]',
        enc([{"t": T, "k": 1, "v": 1.0}, {"t": T, "k": 1}]),  # reading #1 misses v
        enc({"t": T, "k": True, "v": 1.0}),
        enc({"t": T, "k": None, "v": 1.0}),
        enc({"t": T, "k": 1.5, "v": 1.0}),
        enc({"t": T, "k": 1, "v": True}),
        enc({"t": T, "k": 1, "v": "high"}),
        b'{"t": 1, "k": 1, "v": NaN}',
        b'{"t": Infinity, "k": 1, "v": 1.0}',
        enc({"t": 10**30, "k": 1, "v": 1.0}),  # out of range
        enc({"t": -(10**17), "k": 1, "v": 1.0}),
        enc({"t": T, "k": 1, "v": 10**400}),  # the mapping itself raises OverflowError
    ]
    messages = [("in/good", good[0]), *[(f"in/bad/{i}", p) for i, p in enumerate(bad)]]
    messages.append(("in/good", good[1]))
    parser = BatchParser(mapping, max_problems=100)
    columns = parser.parse(messages)
    assert columns.messages == len(messages)
    assert columns.malformed == len(bad)
    assert typed(columns.rows()) == typed(mapping_rows(mapping, [("in/good", p) for p in good]))
    assert [topic for topic, _ in columns.problems] == [f"in/bad/{i}" for i in range(len(bad))]
    for (_, reason), payload in zip(columns.problems, bad, strict=True):
        try:
            mapping.parse_payload(payload, "x")
        except MalformedMessage as exc:
            assert reason == exc.reason
        except Exception as exc:  # what the mapping raises is kept as the reason
            assert reason.startswith(f"cannot be read ({type(exc).__name__}")
        else:
            pytest.fail(f"the mapping accepted {payload!r}")
    # the problems kept are capped; the count is not
    few = BatchParser(mapping, max_problems=3).parse(messages)
    assert few.malformed == len(bad) and len(few.problems) == 3
    # parsing into existing columns appends
    more = parser.parse([("in/good", good[1])], into=columns)
    assert more is columns and len(columns) == 4


# ------------------------------------------------------------------------- engine


def fake_model(index: int, features: list[str], *, freq_s: int = 10, steps: int = 2, **kw) -> Any:
    spec = kw.get("spec")
    explicit = kw.get("explicit", {})
    params = SimpleNamespace(
        freq=timedelta(seconds=freq_s),
        input_steps=steps,
        output="step",
        output_steps=2,
        target=features[0],
        features=features,
    )
    return BoundModel(
        index=index,
        ref=f"iid/t/vanilla/p{index}",
        name=f"m{index}",
        binding=None,
        model=SimpleNamespace(params=params),
        rules=[FeatureRule.of(f, spec, explicit.get(f)) for f in features],
        slots=[None] * len(features),
        steps=steps,
    )


def models() -> list[BoundModel]:
    site_a = {"sources": [{"dataset": "plant.s", "keys": {"site": ["a"]}}]}
    return [
        fake_model(0, ["plant.s.temp[sensor=1]", "plant.s.temp[sensor=2]"], spec=site_a),
        fake_model(1, ["plant.s.temp[site=b,sensor=3]", "plant.s.hum[site=b,sensor=3]"]),
        fake_model(2, ["plant.s.hum"], freq_s=20),  # binds the first hum series it meets
        fake_model(
            3,
            ["plant.s.temp[sensor=9]", "plant.s.temp[sensor=1]"],
            explicit={"plant.s.temp[sensor=9]": "plant.s.temp[site=a,sensor=4]"},
            steps=3,
        ),
        fake_model(4, ["other.x.temp[sensor=1]"]),  # another dataset: never bound
        fake_model(5, ["plant.s.temp[site=b]"], freq_s=20, steps=1),
    ]


def readings(seed: int) -> list[list[dict[str, Any]]]:
    """Batches of rows: two sites, sensors 1-5, two values (some null), out of order."""
    rng = random.Random(seed)
    batches = []
    for b in range(40):
        rows = []
        for _ in range(rng.randint(1, 30)):
            ts = (b * 3 + rng.uniform(-8, 3)) * 1_000_000
            rows.append(
                {
                    "ts": int(ts),
                    "site": rng.choice("ab"),
                    "sensor": rng.choice([1, 2, 3, 4, 5, "3"]),
                    "temp": rng.choice([None, round(rng.gauss(20, 3), 3)]),
                    "hum": rng.choice([None, round(rng.uniform(30, 60), 3)]),
                }
            )
        batches.append(rows)
    return batches


def run(kind: str, batches: list[list[dict[str, Any]]]) -> tuple[StreamEngine, list, list]:
    conf = StreamConfig.load(
        {
            "mqtt": {"topics": ["x/#"]},
            "dataset": "plant.s",
            "mapping": {"time": "t", "keys": ["site", "sensor"], "values": ["temp", "hum"]},
            "models": [f"m{i}" for i in range(6)],
            "allowed_lateness": "2s",
            "fill_limit": 1,
        }
    )
    forecasts: list = []
    actuals: list = []
    engine = StreamEngine(
        conf,
        models(),
        on_forecasts=lambda fs: forecasts.extend(
            (f.model.index, f.issued_us, f.ts_us.tolist(), f.values.tolist()) for f in fs
        ),
        on_actuals=lambda t, names, vals: actuals.append((t, names.tolist(), vals.tolist())),
    )
    if kind == "scan":  # the binding as it was: every rule of every model tested
        engine._candidates = lambda name, column, keys: [  # type: ignore[method-assign]
            (mi, ri) for mi, m in enumerate(engine.models) for ri in range(len(m.rules))
        ]
    for rows in batches:
        if kind == "columns":
            engine.process_columns(
                [r["ts"] for r in rows],
                [[r["site"] for r in rows], [r["sensor"] for r in rows]],
                [[r["temp"] for r in rows], [r["hum"] for r in rows]],
            )
        else:
            engine.process(rows)
    return engine, forecasts, actuals


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_process_columns_and_indexed_binding_equal_the_row_scan(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in for the network: the window's sums, one value per horizon
    monkeypatch.setattr(
        engine_module,
        "predict_windows",
        lambda model, windows: np.repeat(windows.sum(axis=(1, 2))[:, None], 2, axis=1),
    )
    batches = readings(seed)
    results = {kind: run(kind, batches) for kind in ("scan", "rows", "columns")}
    scan_engine, scan_forecasts, scan_actuals = results["scan"]
    assert scan_forecasts and scan_actuals and scan_engine.stats.late and scan_engine.stats.unbound
    for kind in ("rows", "columns"):
        engine, forecasts, actuals = results[kind]
        assert engine.stats == scan_engine.stats, kind
        assert [m.slots for m in engine.models] == [m.slots for m in scan_engine.models]
        assert [g.buffer.names for g in engine.groups] == [
            g.buffer.names for g in scan_engine.groups
        ]
        assert [g.features for g in engine.groups] == [g.features for g in scan_engine.groups]
        assert forecasts == scan_forecasts, kind
        assert actuals == scan_actuals, kind

    def read(model: int) -> list[str | None]:
        m = scan_engine.models[model]
        return [None if s is None else m.group.names[s] for s in m.slots]

    # the key filter keeps site b out of model 0; the explicit mapping; another dataset
    assert read(0) == ["plant.s.temp[site=a,sensor=1]", "plant.s.temp[site=a,sensor=2]"]
    assert read(3)[0] == "plant.s.temp[site=a,sensor=4]"
    assert read(4) == [None]


def test_series_beyond_max_series_are_dropped_and_counted_in_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = StreamConfig.load(
        {
            "mqtt": {"topics": ["x/#"]},
            "dataset": "plant.s",
            "mapping": {"time": "t", "keys": ["sensor"], "values": ["temp"]},
            "models": ["m0"],
            "max_series": 2,
        }
    )
    engine = StreamEngine(conf, [fake_model(0, ["plant.s.temp[sensor=1]"])])
    engine.process_columns([1, 2, 3, 4], [[1, 2, 3, 3]], [[1.0, 2.0, 3.0, None]])
    assert engine.stats.readings == 1 and engine.stats.unbound == 1
    assert engine.stats.series_dropped == 2  # both rows of the third series, null or not
