"""The training loop: split, early stopping, history, metrics, determinism, summaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsloom.errors import TsloomError
from tsloom.forecast.params import LearningParams
from tsloom.forecast.training import train_model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _series(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    level = 20 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, n)
    other = np.cos(2 * np.pi * t / 24) + rng.normal(0, 0.1, n)
    return np.column_stack([level, other])


def _params(**change) -> LearningParams:
    base = dict(
        target="y",
        features=["y", "x"],
        input_width="24h",
        output_width="6h",
        freq="1h",
        method="stacked",
        hidden_size=16,
        epochs=8,
        batch_size=32,
        learning_rate=0.01,
        patience=3,
        seed=1,
    )
    return LearningParams(**{**base, **change})


def test_stacked_lstm_beats_a_constant_forecast() -> None:
    values = _series()
    result = train_model(values, _params())
    boundary = result.boundary
    constant = values[:boundary, 0].mean()
    valid_targets = values[boundary:, 0]
    constant_rmse = float(np.sqrt(np.mean((valid_targets - constant) ** 2)))
    assert result.metrics["rmse"] < 0.5 * constant_rmse
    assert [h["epoch"] for h in result.history] == list(range(1, len(result.history) + 1))
    assert all(h["val_rmse"] > 0 and h["train_rmse"] > 0 for h in result.history)
    assert result.best_epoch == 1 + int(np.argmin([h["val_rmse"] for h in result.history]))
    assert boundary == 480  # 80% of 600 rows
    assert result.n_train == 480 - 30 + 1
    assert result.n_valid == (600 - 480 + 24) - 30 + 1  # validation starts one lookback early


def test_same_seed_same_model() -> None:
    a = train_model(_series(), _params(epochs=2))
    b = train_model(_series(), _params(epochs=2))
    assert a.metrics == b.metrics
    for (name, wa), wb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(wa, wb), name


def test_predict_takes_raw_windows_and_returns_original_units() -> None:
    values = _series()
    result = train_model(values, _params(epochs=3))
    one = result.predict(values[-24:])
    many = result.predict(np.stack([values[-24:], values[-30:-6]]))
    assert one.shape == (6,) and many.shape == (2, 6)
    np.testing.assert_allclose(many[0], one, rtol=1e-5)
    assert 10 < one.mean() < 30  # original units, not z-scores


@pytest.mark.parametrize("how", ["mean", "min", "max"])
def test_window_summaries_predict_one_value(how: str) -> None:
    result = train_model(_series(), _params(output=how, epochs=2))
    assert result.predict(_series()[-24:]).shape == (1,)


def test_seasonal_naive_needs_no_training() -> None:
    result = train_model(_series(), _params(method="seasonal_naive"))
    assert result.history == [] and result.metrics["rmse"] < 1.5


def test_missing_values_and_shape_errors_are_clear() -> None:
    values = _series()
    values[100, 1] = np.nan
    with pytest.raises(TsloomError, match="missing values \\(first at row 100\\)"):
        train_model(values, _params())
    with pytest.raises(TsloomError, match="expected a \\(rows, 2\\) array"):
        train_model(values[:, :1], _params())


def test_subtract_last_follows_a_level_the_training_data_never_showed() -> None:
    from tsloom.forecast.networks import build_network, describe_network

    values = _series(800)
    shifted = values.copy()
    shifted[640:, 0] += 15.0  # the validation part sits 15 units higher
    plain = train_model(shifted, _params(split=0.8, epochs=6))
    relative = train_model(shifted, _params(split=0.8, epochs=6, subtract_last=True))
    assert relative.metrics["rmse"] < 0.5 * plain.metrics["rmse"]
    assert relative.params.param_id != plain.params.param_id
    described = describe_network(relative.model)
    rebuilt = build_network(**described["config"])
    rebuilt.load_state_dict(relative.model.state_dict())
    window = torch.as_tensor(relative.scaler.transform(shifted[-24:])[None], dtype=torch.float32)
    relative.model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(window), relative.model(window))


def test_max_windows_per_epoch_trains_on_a_sample() -> None:
    result = train_model(_series(), _params(epochs=2), max_windows_per_epoch=50)
    assert len(result.history) == 2 and result.metrics["rmse"] > 0
