"""The forecasting networks: shapes, learning, reference models, errors, determinism."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch

from tsloom.forecast.networks import (
    METHODS,
    TRAINABLE,
    ConvLSTMCell,
    DLinear,
    NetworkConfigError,
    SeasonalNaive,
    build_network,
    count_parameters,
    default_subsequences,
    describe_network,
)

TRAINABLE_METHODS = [m for m in METHODS if m in TRAINABLE]
SMALL = {"hidden_size": 8, "layers": 2}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def windows(
    series: torch.Tensor, input_steps: int, output_steps: int, target: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sliding windows of a (time, features) series: x (n, T, F) and y (n, output_steps)."""
    n = series.shape[0] - input_steps - output_steps + 1
    x = torch.stack([series[i : i + input_steps] for i in range(n)])
    y = torch.stack(
        [series[i + input_steps : i + input_steps + output_steps, target] for i in range(n)]
    )
    return x, y


def noisy_daily(length: int = 360, period: int = 24, seed: int = 0) -> torch.Tensor:
    """A scaled sensor: a noisy daily sine (target) and a noisy cosine companion."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    phase = 2 * math.pi * t / period
    target = torch.sin(phase) + 0.15 * torch.randn(length, generator=g)
    other = torch.cos(phase) + 0.15 * torch.randn(length, generator=g)
    return torch.stack([target, other], dim=1)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("input_steps", "n_features", "output_dim"),
    [(24, 1, 1), (24, 3, 6), (48, 2, 24), (7, 2, 3), (2, 1, 1)],
)
def test_output_shape(method: str, input_steps: int, n_features: int, output_dim: int) -> None:
    net = build_network(
        method,
        n_features=n_features,
        input_steps=input_steps,
        output_dim=output_dim,
        target_index=n_features - 1,
        **SMALL,
    )
    out = net(torch.randn(5, input_steps, n_features))
    assert out.shape == (5, output_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert net(torch.randn(1, input_steps, n_features)).shape == (1, output_dim)


@pytest.mark.parametrize("method", METHODS)
def test_wrong_input_shape_is_a_clear_error(method: str) -> None:
    net = build_network(method, n_features=2, input_steps=12, output_dim=3, **SMALL)
    with pytest.raises(ValueError, match=r"expects x of shape \(batch, 12, 2\), got \(4, 12, 3\)"):
        net(torch.randn(4, 12, 3))


def test_layer_counts_follow_the_method() -> None:
    kw = {"n_features": 2, "input_steps": 12, "output_dim": 3, "hidden_size": 8}
    vanilla = build_network("vanilla", layers=4, dropout=0.2, **kw)
    assert vanilla.lstm.num_layers == 1 and vanilla.lstm.dropout == 0.0
    assert build_network("stacked", layers=1, **kw).lstm.num_layers == 2
    stacked = build_network("stacked", layers=3, dropout=0.2, **kw)
    assert stacked.lstm.num_layers == 3 and stacked.lstm.dropout == 0.2
    bi = build_network("bidirectional", layers=1, **kw)
    assert bi.lstm.bidirectional and bi.lstm.num_layers == 1
    assert bi.head.in_features == 16
    cnn = build_network("cnn_lstm", layers=3, subsequences=3, **kw)
    assert cnn.lstm.num_layers == 3 and cnn.subsequences == 3 and cnn.sub_length == 4
    conv = build_network("conv_lstm", layers=3, subsequences=2, **kw)
    assert len(conv.cells) == 3 and conv.sub_length == 6
    assert conv.head.in_features == 8 * 6


# ------------------------------------------------------------------------- learning


def _fit(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=g).split(32):
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    net.eval()


@pytest.mark.parametrize(
    ("method", "epochs"),
    [
        ("vanilla", 10),
        ("stacked", 10),
        ("bidirectional", 8),
        ("cnn_lstm", 8),
        ("conv_lstm", 8),
        ("dlinear", 10),
    ],
)
def test_trains_and_beats_a_constant_forecast(method: str, epochs: int) -> None:
    x, y = windows(noisy_daily(), input_steps=24, output_steps=6)
    split = int(0.8 * len(x))
    x_train, y_train, x_val, y_val = x[:split], y[:split], x[split:], y[split:]
    torch.manual_seed(0)
    net = build_network(method, n_features=2, input_steps=24, output_dim=6, hidden_size=16)
    constant = torch.nn.functional.mse_loss(y_train.mean().expand_as(y_val), y_val).item()
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(net(x_val), y_val).item()
    _fit(net, x_train, y_train, epochs)
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(net(x_val), y_val).item()
    assert after < before
    # noise variance is 0.0225: a model that learned the cycle is far below the constant
    assert after < 0.2 * constant, (method, after, constant)


def test_mean_target_trains_with_one_output() -> None:
    x, y = windows(noisy_daily(), input_steps=24, output_steps=6)
    y = y.mean(dim=1, keepdim=True)
    torch.manual_seed(0)
    net = build_network("stacked", n_features=2, input_steps=24, output_dim=1, hidden_size=16)
    _fit(net, x[:250], y[:250], epochs=8)
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(net(x[250:]), y[250:]).item()
    constant = torch.nn.functional.mse_loss(y[:250].mean().expand_as(y[250:]), y[250:]).item()
    assert mse < 0.2 * constant


# -------------------------------------------------------------------- seasonal naive


def test_seasonal_naive_is_exact_on_a_periodic_series() -> None:
    period = 24
    t = torch.arange(period, dtype=torch.float32)
    one_day = torch.sin(2 * math.pi * t / period) + 0.5 * torch.cos(6 * math.pi * t / period)
    level = one_day.repeat(400 // period + 1)[:400]  # exactly periodic
    series = torch.stack([torch.randn(400), level], dim=1)  # target in column 1
    for output_dim in (1, 6, 24, 60):  # 60 > one season: the last season repeats
        x, y = windows(series, input_steps=48, output_steps=output_dim, target=1)
        net = build_network(
            "seasonal_naive",
            n_features=2,
            input_steps=48,
            output_dim=output_dim,
            target_index=1,
            season_steps=period,
        )
        assert torch.equal(net(x), y), output_dim


def test_seasonal_naive_index_and_defaults() -> None:
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1)
    net = SeasonalNaive(n_features=1, input_steps=10, output_dim=7, season_steps=3)
    assert net(x).tolist() == [[7, 8, 9, 7, 8, 9, 7]]
    assert net.predict_steps(x, 4).tolist() == [[7, 8, 9, 7]]
    default = build_network("seasonal_naive", n_features=1, input_steps=10, output_dim=4)
    assert default.season_steps == 4  # season defaults to the output width
    assert default(x).tolist() == [[6, 7, 8, 9]]


def test_seasonal_naive_has_nothing_to_train() -> None:
    net = build_network("seasonal_naive", n_features=3, input_steps=24, output_dim=6)
    assert net.trainable is False
    assert "seasonal_naive" not in TRAINABLE
    assert count_parameters(net) == 0 and list(net.parameters()) == []
    assert net.state_dict() == {}
    for method in TRAINABLE_METHODS:
        assert build_network(method, n_features=3, input_steps=24, output_dim=6).trainable


def test_seasonal_naive_longer_than_the_window_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"season_steps=48 > input_steps=24"):
        build_network("seasonal_naive", n_features=1, input_steps=24, output_dim=6, season_steps=48)
    with pytest.raises(ValueError, match=r"season_steps=36 > input_steps=24"):
        build_network("seasonal_naive", n_features=1, input_steps=24, output_dim=36)


# ---------------------------------------------------------------------------- DLinear


def test_dlinear_decomposition() -> None:
    net = DLinear(n_features=3, input_steps=48, output_dim=4, target_index=2)
    assert net.kernel_size == 25
    t = torch.arange(48, dtype=torch.float32)
    y = torch.stack([3 + 0 * t, 0.5 * t + torch.sin(2 * math.pi * t / 4)])
    trend, remainder = net.decompose(y)
    torch.testing.assert_close(trend + remainder, y)
    torch.testing.assert_close(trend[0], y[0])  # a constant is all trend
    # away from the padded ends the 25-step average removes the 4-step cycle exactly
    # (25 = 6 cycles + 1 step, so a sine sample of amplitude <= 1/25 is left)
    mid = slice(12, 36)
    assert (trend[1, mid] - 0.5 * t[mid]).abs().max() < 1 / 25 + 1e-5
    short = DLinear(n_features=1, input_steps=10, output_dim=2)
    assert short.kernel_size == 9  # odd and no longer than the window


def test_dlinear_reads_only_the_target() -> None:
    torch.manual_seed(0)
    net = build_network("dlinear", n_features=3, input_steps=24, output_dim=5, target_index=1)
    x = torch.randn(4, 24, 3)
    other = x.clone()
    other[:, :, [0, 2]] = torch.randn(4, 24, 2)
    torch.testing.assert_close(net(x), net(other))
    assert count_parameters(net) == 2 * (24 * 5 + 5)


# -------------------------------------------------------------------- sub-sequences


def test_default_subsequences() -> None:
    assert default_subsequences(168) == 12
    assert default_subsequences(48) == 6
    assert default_subsequences(24) == 4
    assert default_subsequences(16) == 4
    assert default_subsequences(4) == 2
    assert default_subsequences(13) == 1
    assert default_subsequences(1) == 1
    net = build_network("cnn_lstm", n_features=1, input_steps=168, output_dim=24)
    assert (net.subsequences, net.sub_length) == (12, 14)
    assert net.config["subsequences"] == 12


@pytest.mark.parametrize("method", ["cnn_lstm", "conv_lstm"])
def test_subsequences_that_do_not_divide_are_a_clear_error(method: str) -> None:
    with pytest.raises(NetworkConfigError) as err:
        build_network(method, n_features=1, input_steps=24, output_dim=1, subsequences=5)
    assert isinstance(err.value, ValueError)
    assert "subsequences=5" in str(err.value) and "input_steps=24" in str(err.value)
    assert "1, 2, 3, 4, 6, 8, 12, 24" in str(err.value)
    with pytest.raises(ValueError, match="subsequences=0"):
        build_network(method, n_features=1, input_steps=24, output_dim=1, subsequences=0)


def test_cnn_lstm_sub_sequences_are_consecutive_chunks() -> None:
    """Changing only the last sub-sequence must not change the conv features of the others."""
    torch.manual_seed(0)
    net = build_network("cnn_lstm", n_features=2, input_steps=12, output_dim=1, subsequences=3)
    x = torch.randn(1, 12, 2)
    changed = x.clone()
    changed[:, 8:] += 1.0

    def features(inp: torch.Tensor) -> torch.Tensor:
        z = inp.reshape(3, 4, 2).transpose(1, 2)
        return net.pool(torch.relu(net.conv(z)))

    a, b = features(x), features(changed)
    torch.testing.assert_close(a[:2], b[:2])
    assert not torch.allclose(a[2], b[2])


def test_conv_lstm_cell_is_convolutional() -> None:
    """One step of the cell: an input change at position 0 reaches only the kernel's reach."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(in_channels=2, hidden_channels=4, length=10, kernel_size=3)
    x = torch.randn(1, 2, 10)
    state = cell.init_state(x)
    h1, c1 = cell(x, state)
    assert h1.shape == c1.shape == (1, 4, 10)
    bumped = x.clone()
    bumped[:, :, 0] += 1.0
    h2, _ = cell(bumped, state)
    changed = (h2 - h1).abs().amax(dim=(0, 1)) > 1e-7
    assert changed[:2].all() and not changed[2:].any()
    # gates follow Shi et al.: with zero peepholes and zero state, h = σ(o)·tanh(σ(i)·tanh(g))
    gi, _gf, gc, go = cell.gates(torch.cat([x, state[0]], dim=1)).chunk(4, dim=1)
    expected = torch.sigmoid(go) * torch.tanh(torch.sigmoid(gi) * torch.tanh(gc))
    torch.testing.assert_close(h1, expected)
    assert cell.w_ci.shape == cell.w_cf.shape == cell.w_co.shape == (4, 10)


# -------------------------------------------------------- determinism, gradients, meta


@pytest.mark.parametrize("method", TRAINABLE_METHODS)
def test_same_seed_same_network(method: str) -> None:
    kw = {"n_features": 2, "input_steps": 12, "output_dim": 3, "dropout": 0.1, **SMALL}
    x = torch.randn(6, 12, 2)
    y = torch.randn(6, 3)
    runs = []
    for _ in range(2):
        torch.manual_seed(42)
        net = build_network(method, **kw)
        _fit(net, x, y, epochs=2)  # dropout draws come from the seeded global generator
        with torch.no_grad():
            runs.append((net(x), net.state_dict()))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key
    torch.manual_seed(43)
    other = build_network(method, **kw)
    assert any(not torch.equal(value, runs[0][1][key]) for key, value in other.state_dict().items())


@pytest.mark.parametrize("method", TRAINABLE_METHODS)
def test_gradients_reach_every_parameter(method: str) -> None:
    torch.manual_seed(0)
    net = build_network(method, n_features=3, input_steps=12, output_dim=4, layers=2, hidden_size=6)
    x = torch.randn(8, 12, 3)
    y = torch.randn(8, 4)
    x[:, :, 0] += 1.0  # non-zero cell states so the ConvLSTM peepholes get gradient
    torch.nn.functional.mse_loss(net(x), y).backward()
    params = dict(net.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("method", METHODS)
def test_describe_network_is_json_and_rebuilds(method: str) -> None:
    torch.manual_seed(0)
    net = build_network(
        method, n_features=2, input_steps=24, output_dim=6, season_steps=12, **SMALL
    )
    info = describe_network(net)
    assert json.loads(json.dumps(info)) == info
    assert info["method"] == method
    assert info["trainable"] is (method in TRAINABLE)
    assert info["parameters"] == count_parameters(net)
    assert sum(layer["parameters"] for layer in info["layers"]) == info["parameters"]
    assert info["input_shape"] == ["batch", 24, 2] and info["output_shape"] == ["batch", 6]
    rebuilt = build_network(**info["config"])
    assert type(rebuilt) is type(net)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(3, 24, 2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x))


def test_count_parameters_matches_torch_formulas() -> None:
    net = build_network("vanilla", n_features=3, input_steps=10, output_dim=2, hidden_size=5)
    lstm = 4 * 5 * (3 + 5) + 2 * 4 * 5
    assert count_parameters(net) == lstm + (5 * 2 + 2)
    net.head.weight.requires_grad_(False)
    assert count_parameters(net) == lstm + 2
    assert count_parameters(net, trainable_only=False) == lstm + 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "transformer"}, "unknown learning method 'transformer'"),
        ({"method": "stacked", "target_index": 3}, "target_index=3"),
        ({"method": "stacked", "dropout": 1.0}, "dropout"),
        ({"method": "stacked", "hidden_size": 0}, "hidden_size"),
        ({"method": "stacked", "output_dim": 0}, "output_dim"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict, message: str) -> None:
    args = {"n_features": 3, "input_steps": 12, "output_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_network(**args)
