"""A stream bound to a stage alias picks up a model promoted while it runs: after the
alias refresh, forecasts come from the new model (equal to its offline prediction), with no
gap when its features and frequency are the old one's, and the swap is counted. A model
that cannot be swapped in leaves the old one running; the refresh interval is validated."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from stream_plant import F1, F2, T0, H, ingest_plant, level, train_plant

import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.stream import StreamConfig, StreamConfigError, StreamRunner
from tsloom.stream.engine import Forecast

TRAIN_HOURS = 120
STREAM_HOURS = 16
IN_STEPS = 4
SWAP_AT = 8  # hours streamed before the promotion


def _train(settings: Settings, features: list[str], hidden: int) -> str:
    return train_plant(settings, features, hidden=hidden, in_steps=IN_STEPS, out_steps=2)


@pytest.fixture
def models(tsloom_home: Settings) -> dict[str, str]:
    """A (production), B (same features), C (other features), all of one target."""
    ingest_plant(tsloom_home, TRAIN_HOURS)
    out = {
        "A": _train(tsloom_home, [F1, F2], 8),
        "B": _train(tsloom_home, [F1, F2], 12),
        "C": _train(tsloom_home, [F1], 6),
    }
    assert len(set(out.values())) == 3
    reg.promote(out["A"], "production", settings=tsloom_home)
    return out


def _runner(settings: Settings, ref: str, got: list[Forecast], **extra) -> StreamRunner:
    iid, segment, _method, _pid = ref.split("/")
    config = {
        "mqtt": {"topics": ["x/#"]},
        "dataset": "plant.sensors",
        "mapping": {"time": "t", "time_unit": "ms", "keys": ["sensor_id"], "values": ["temp"]},
        "models": [{"ref": f"{iid}/{segment}/production", "name": "live"}],
        "allowed_lateness": "1 step",
        "publish": {"enabled": False},
        "lake": {"enabled": False},
        **extra,
    }
    return StreamRunner(config, settings, on_forecasts=got.extend)


def _feed(runner: StreamRunner, hours: range) -> None:
    for hour in hours:
        at = T0 + (TRAIN_HOURS + hour) * H + timedelta(minutes=10)
        ts = int(at.timestamp() * 1_000_000)
        runner.engine.process_columns(
            [ts, ts], [[1, 2]], [[level(1, TRAIN_HOURS + hour), level(2, TRAIN_HOURS + hour)]]
        )


def _offline(settings: Settings, ref: str, step: int) -> np.ndarray:
    hours = range(step - IN_STEPS + 1, step + 1)
    grid = pl.DataFrame(
        {
            "ts": [T0 + (TRAIN_HOURS + k) * H for k in hours],
            F1: [level(1, TRAIN_HOURS + k) for k in hours],
            F2: [level(2, TRAIN_HOURS + k) for k in hours],
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    return reg.load(ref, settings=settings).predict(grid)[F1].to_numpy()


def _step(f: Forecast) -> int:
    return int((f.issued - T0) / H) - TRAIN_HOURS


@pytest.mark.parametrize("new", ["B", "C"])
def test_promoted_model_is_swapped_in_between_steps(
    models: dict[str, str], tsloom_home: Settings, new: str, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Forecast] = []
    runner = _runner(tsloom_home, models["A"], got, alias_refresh=0)
    assert runner.models[0].ref == models["A"]
    _feed(runner, range(SWAP_AT))
    assert got and {f.model.ref for f in got} == {models["A"]}
    before = len(got)

    assert runner.refresh_aliases() == 0  # nothing promoted yet: nothing swapped
    reg.promote(models[new], "production", archive_others=True, settings=tsloom_home)
    with caplog.at_level("WARNING", logger="tsloom.stream.runner"):
        assert runner.refresh_aliases() == 1
    # B reads A's features: it takes A's slots; C reads others: its features bind afresh
    kept = "buffers kept" if new == "B" else "features or frequency differ"
    assert f"now points to {models[new]}" in caplog.text and kept in caplog.text
    assert runner.stats.swaps == 1 and runner.stats.swap_errors == 0
    assert runner.models[0].ref == models[new] and runner.models[0].name == "live"
    _feed(runner, range(SWAP_AT, STREAM_HOURS))

    after = got[before:]
    assert after and {f.model.ref for f in after} == {models[new]}
    # no gap: the buffered history serves the new model at once (same frequency)
    last = STREAM_HOURS - 3  # the watermark trails the last reading by the lateness
    assert [_step(f) for f in got] == list(range(IN_STEPS - 1, last + 1))
    for f in after:
        np.testing.assert_allclose(
            f.values, _offline(tsloom_home, models[new], _step(f)), rtol=0, atol=1e-5
        )
    for f in got[:before]:
        np.testing.assert_allclose(
            f.values, _offline(tsloom_home, models["A"], _step(f)), rtol=0, atol=1e-5
        )
    assert runner.refresh_aliases() == 0 and runner.stats.swaps == 1


def test_a_model_that_cannot_load_keeps_the_old_one(
    models: dict[str, str], tsloom_home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[Forecast] = []
    # a tiny interval: the loop's hook refreshes on its next round
    runner = _runner(tsloom_home, models["A"], got, alias_refresh=0.001)
    _feed(runner, range(SWAP_AT))
    before = len(got)
    reg.promote(models["B"], "production", archive_others=True, settings=tsloom_home)

    def broken(*args, **kwargs):
        raise reg.RegistryError("the artifact store is unreachable")

    monkeypatch.setattr(reg, "load_servable", broken)
    runner._next_refresh = 0.0
    runner._maybe_refresh()
    assert runner.stats.swaps == 0 and runner.stats.swap_errors == 1
    assert runner.models[0].ref == models["A"]
    _feed(runner, range(SWAP_AT, STREAM_HOURS))
    assert len(got) > before and {f.model.ref for f in got} == {models["A"]}

    monkeypatch.undo()
    runner._next_refresh = 0.0
    runner._maybe_refresh()  # the registry is back: swapped on the next refresh
    assert runner.stats.swaps == 1 and runner.models[0].ref == models["B"]


def test_alias_refresh_is_validated() -> None:
    base = {"mqtt": {"topics": ["x/#"]}, "mapping": {"time": "t", "values": ["v"]}}
    base["models"] = ["abc"]
    assert StreamConfig.load(base).alias_refresh == 30.0
    assert StreamConfig.load({**base, "alias_refresh": "2min"}).alias_refresh == 120.0
    assert StreamConfig.load({**base, "alias_refresh": 0}).alias_refresh == 0.0
    with pytest.raises(StreamConfigError, match="alias_refresh -5 must be a number of seconds"):
        StreamConfig.load({**base, "alias_refresh": -5})
    with pytest.raises(StreamConfigError, match="alias_refresh 'often' is not a duration"):
        StreamConfig.load({**base, "alias_refresh": "often"})
