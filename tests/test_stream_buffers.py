"""Step buffers of the stream path: aggregation inside a step, out-of-order readings within
the lateness accepted, later ones dropped and counted, gaps carried over at most
`fill_limit` steps, windows, and memory that does not grow however long the stream runs;
plus the stream config's field-naming errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsloom.stream.buffers import StepBuffer
from tsloom.stream.config import StreamConfig, StreamConfigError

S = 1_000_000  # µs
F = 10 * S  # 10 s steps


class Steps:
    """Collects completed steps: step → (observed, filled)."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.order: list[int] = []

    def __call__(self, buffer, step, observed, filled) -> None:
        self.done[step] = (observed.copy(), filled.copy())
        self.order.append(step)


def add(buf: StepBuffer, sink: Steps, *readings: tuple[int, float, float]) -> int:
    """readings: (slot, seconds, value), in one call (one message batch)."""
    slots = [r[0] for r in readings]
    ts = [int(r[1] * S) for r in readings]
    vals = [r[2] for r in readings]
    return buf.add(np.array(slots), np.array(ts), np.array(vals), on_step=sink)


def test_readings_in_one_step_are_averaged_and_steps_complete_in_event_time() -> None:
    buf = StepBuffer(F, window=3, lateness_us=0)
    a, b = buf.slot("a"), buf.slot("b")
    sink = Steps()
    add(buf, sink, (a, 100, 1.0), (a, 103, 3.0), (b, 105, 10.0))
    assert sink.order == []  # nothing has passed the watermark yet
    add(buf, sink, (a, 109.9, 5.0))
    assert sink.order == []
    add(buf, sink, (b, 110, 20.0))  # a reading at the step's end completes it
    assert sink.order == [10]
    observed, _ = sink.done[10]
    assert observed.tolist() == [3.0, 10.0]  # mean of 1, 3, 5 and of 10
    assert buf.grid_time(10) == 100 * S


@pytest.mark.parametrize(
    ("aggregate", "expected"), [("sum", 9.0), ("min", 1.0), ("max", 5.0), ("last", 3.0)]
)
def test_other_aggregates(aggregate: str, expected: float) -> None:
    buf = StepBuffer(F, window=2, aggregate=aggregate)
    a = buf.slot("a")
    sink = Steps()
    # 'last' is the reading with the latest time, whatever the arrival order
    add(buf, sink, (a, 100, 1.0), (a, 108, 3.0), (a, 104, 5.0))
    add(buf, sink, (a, 120, 0.0))
    assert sink.done[10][0].tolist() == [expected]


def test_out_of_order_within_lateness_is_kept_and_later_is_dropped_and_counted() -> None:
    buf = StepBuffer(F, window=4, lateness_us=2 * F)  # allowed_lateness: 2 steps
    a = buf.slot("a")
    sink = Steps()
    add(buf, sink, (a, 100, 1.0))
    add(buf, sink, (a, 125, 7.0))  # step 12; watermark 105: nothing completes
    assert sink.order == []
    assert add(buf, sink, (a, 101, 3.0)) == 0  # out of order, step 10 still open
    add(buf, sink, (a, 131, 0.0))  # watermark 111 passes the end of step 10
    assert sink.order == [10]
    assert sink.done[10][0].tolist() == [2.0]  # (1 + 3) / 2: the late reading counted
    assert add(buf, sink, (a, 108, 100.0)) == 1  # step 10 is closed: too late
    assert add(buf, sink, (a, 115, 4.0)) == 0  # step 11 is still open
    assert buf.late == 1
    add(buf, sink, (a, 150, 0.0))
    assert sink.order == [10, 11, 12]
    assert sink.done[11][0].tolist() == [4.0]
    assert sink.done[12][0].tolist() == [7.0]
    assert 100.0 not in [v for obs, _ in sink.done.values() for v in obs.tolist()]


def test_watermark_is_per_batch_and_a_far_jump_moves_it_in_order() -> None:
    buf = StepBuffer(F, window=2, lateness_us=0)
    a = buf.slot("a")
    sink = Steps()
    # one batch spanning far more steps than the open ring: every reading lands
    add(buf, sink, (a, 100, 1.0), (a, 111, 2.0), (a, 122, 3.0), (a, 133, 4.0), (a, 144, 5.0))
    assert sink.order == [10, 11, 12, 13]
    assert [sink.done[k][0][0] for k in sink.order] == [1.0, 2.0, 3.0, 4.0]


def test_lateness_follows_arrival_order_inside_one_batch() -> None:
    buf = StepBuffer(F, window=2, lateness_us=F)
    a = buf.slot("a")
    sink = Steps()
    # 104 arrives before 150 moved the watermark: kept; 102 arrives after it: too late
    assert add(buf, sink, (a, 100, 1.0), (a, 104, 3.0), (a, 150, 9.0), (a, 102, 50.0)) == 1
    assert sink.order == [10, 11, 12, 13]
    assert sink.done[10][0].tolist() == [2.0]


def test_missing_steps_carry_the_last_value_at_most_fill_limit_steps() -> None:
    buf = StepBuffer(F, window=5, fill_limit=1)
    a, b = buf.slot("a"), buf.slot("b")
    sink = Steps()
    add(buf, sink, (a, 100, 1.0), (b, 100, 10.0))
    add(buf, sink, (a, 110, 2.0))  # b silent in step 11
    add(buf, sink, (a, 120, 3.0))  # and in step 12
    add(buf, sink, (a, 130, 4.0), (b, 130, 40.0))
    add(buf, sink, (a, 140, 0.0))
    observed = {k: v[0].tolist() for k, v in sink.done.items()}
    filled = {k: v[1].tolist() for k, v in sink.done.items()}
    assert np.isnan(observed[11][1]) and filled[11][1] == 10.0  # carried one step
    assert np.isnan(filled[12][1])  # not two
    assert filled[13] == [4.0, 40.0]
    window = buf.window_of(13, [b, a], 4)
    assert window.shape == (4, 2)
    assert window[:, 1].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert window[0, 0] == 10.0 and window[1, 0] == 10.0 and np.isnan(window[2, 0])


def test_buffer_memory_stays_constant_over_many_steps() -> None:
    n_series, steps = 200, 5_000
    buf = StepBuffer(F, window=24, lateness_us=2 * F, capacity=8)
    slots = np.array([buf.slot(f"s{i}") for i in range(n_series)])
    rng = np.random.default_rng(0)
    completed = []
    sizes = None
    for k in range(steps):
        # two readings per series per step, shuffled, a few a step late
        ts = k * F + rng.integers(0, F, size=2 * n_series)
        ts[:10] -= F
        vals = rng.normal(size=2 * n_series)
        buf.add(np.tile(slots, 2), ts, vals, on_step=lambda b, s, o, f: completed.append(s))
        if k == 50:
            sizes = buf.sizes()
    assert sizes is not None and buf.sizes() == sizes  # no growth after warm-up
    assert sizes.history_steps == 24 and sizes.open_steps == 4
    assert sizes.series_capacity == 256  # grew by doubling to hold 200 series, then stopped
    assert len(completed) >= steps - 4 and completed == sorted(completed)
    assert buf.completed == len(completed)
    assert buf.readings + buf.late == 2 * n_series * steps


def test_a_jump_longer_than_the_rings_clears_them_instead_of_stepping_through() -> None:
    buf = StepBuffer(F, window=3, lateness_us=0)
    a = buf.slot("a")
    sink = Steps()
    add(buf, sink, (a, 100, 1.0))
    add(buf, sink, (a, 100 + 86_400, 2.0))  # a day later: 8640 steps
    assert len(sink.order) == buf.ring  # only the open steps were completed
    assert buf.skipped > 8000
    assert np.isnan(buf.window_of(buf.first_open - 1, [a], 3)).all()


def test_series_beyond_max_series_are_refused() -> None:
    buf = StepBuffer(F, window=2, max_series=2)
    buf.slot("a"), buf.slot("b")
    assert buf.slot("a") == 0
    with pytest.raises(OverflowError):
        buf.slot("c")


# ---------------------------------------------------------------------------- config

GOOD = {
    "mqtt": {"url": "mqtt://127.0.0.1:1883", "topics": "plant/#"},
    "dataset": "plant.sensors",
    "mapping": {"time": "t", "time_unit": "ms", "keys": ["sensor_id"], "values": ["temp"]},
    "models": ["0123456789abcdef0123456789abcdef01234567/temp/vanilla/production"],
    "allowed_lateness": "2 steps",
}


def test_config_loads_yaml_and_reads_lateness_forms(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    config = StreamConfig.load(path)
    assert config.mqtt.topics == ["plant/#"] and config.mqtt.port == 1883
    assert config.allowed_lateness.micros(F) == 2 * F
    assert config.lake.predictions_dataset == "stream.predictions"
    assert config.publish.topic == "tsloom/predictions/{model}"
    assert StreamConfig.load({**GOOD, "allowed_lateness": 3}).allowed_lateness.steps == 3
    late = StreamConfig.load({**GOOD, "allowed_lateness": "90s"}).allowed_lateness
    assert late.micros(F) == 90 * S


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mqtt": {"url": "http://x", "topics": ["a"]}}, "mqtt.url"),
        ({"mqtt": {"topics": ["a/#/b"]}}, "mqtt.topics"),
        ({"models": []}, "models"),
        ({"models": [{"reff": "x"}]}, "models.0"),
        ({"mapping": {"time": "t"}}, "mapping.values"),
        ({"allowed_lateness": "soon"}, "allowed_lateness"),
        ({"publish": {"topic": "p/{modle}"}}, "publish.topic"),
        ({"lake": {"predictions_dataset": "Bad Name"}}, "lake.predictions_dataset"),
        ({"lake": {"flush_rows": 0}}, "lake.flush_rows"),
        ({"dataset": "nodot"}, "dataset"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_config_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(StreamConfigError) as info:
        StreamConfig.load({**GOOD, **change})
    assert field in info.value.message


def test_unreadable_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StreamConfigError, match="cannot read"):
        StreamConfig.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt: [unclosed\n")
    with pytest.raises(StreamConfigError, match="not valid YAML"):
        StreamConfig.load(bad)
