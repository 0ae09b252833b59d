"""The forecasting networks: five LSTM variants and two reference models.

Every network maps an already-scaled input window ``x`` of shape
``(batch, input_steps, n_features)`` to ``(batch, output_dim)``: ``output_dim`` future
values of the target (``output_dim`` steps for the ``step`` output preparation, 1 for
``mean``/``min``/``max`` of the future window). ``target_index`` is the target's column in
``x``; the reference models forecast from that channel alone, so they assume the target
``y`` is scaled exactly like the target's input column.

| method           | class               | what it is                                           |
| ---------------- | ------------------- | ---------------------------------------------------- |
| `vanilla`        | `VanillaLSTM`       | one LSTM layer → dense head on the last hidden state |
| `stacked`        | `StackedLSTM`       | ``max(layers, 2)`` LSTM layers → dense head          |
| `bidirectional`  | `BidirectionalLSTM` | bidirectional LSTM → head over both directions       |
| `cnn_lstm`       | `CNNLSTM`           | Conv1d per sub-sequence → LSTM across sub-sequences  |
| `conv_lstm`      | `ConvLSTM`          | ConvLSTM cells (Shi et al. 2015) over sub-sequences  |
| `seasonal_naive` | `SeasonalNaive`     | the target one season ago; nothing to train          |
| `dlinear`        | `DLinear`           | moving-average trend + remainder, one linear map     |
|                  |                     | each over time, summed (Zeng et al. 2023)            |

`build_network` is the one way to make them; every network keeps the arguments it was
built with in ``.config`` so ``build_network(**net.config)`` rebuilds it (then load the
state dict). ``.trainable`` says whether a trainer needs an optimiser at all.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tsloom.errors import TsloomError

__all__ = [
    "CNNLSTM",
    "METHODS",
    "TRAINABLE",
    "BidirectionalLSTM",
    "ConvLSTM",
    "ConvLSTMCell",
    "DLinear",
    "NetworkConfigError",
    "SeasonalNaive",
    "StackedLSTM",
    "VanillaLSTM",
    "build_network",
    "count_parameters",
    "default_subsequences",
    "describe_network",
]

METHODS = (
    "vanilla",
    "stacked",
    "bidirectional",
    "cnn_lstm",
    "conv_lstm",
    "seasonal_naive",
    "dlinear",
)
TRAINABLE = frozenset(m for m in METHODS if m != "seasonal_naive")

DLINEAR_MOVING_AVERAGE = 25  # the kernel of the DLinear paper's code


class NetworkConfigError(TsloomError, ValueError):
    """Network arguments that cannot work together (a ValueError, and a TsloomError for the CLI)."""


# ---------------------------------------------------------------------------- helpers


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_subsequences(input_steps: int) -> int:
    """The largest divisor of `input_steps` in ``[2, sqrt(input_steps)]``, else 1.

    168 → 12 sub-sequences of 14 steps, 48 → 6 of 8, 24 → 4 of 6, a prime → 1.
    """
    best = 1
    for d in range(2, math.isqrt(input_steps) + 1):
        if input_steps % d == 0:
            best = d
    return best


def _resolve_subsequences(input_steps: int, subsequences: int | None) -> int:
    if subsequences is None:
        return default_subsequences(input_steps)
    valid = ", ".join(str(d) for d in _divisors(input_steps))
    if subsequences < 1 or input_steps % subsequences:
        raise NetworkConfigError(
            f"subsequences={subsequences} does not split input_steps={input_steps} "
            "into sub-sequences of equal length",
            hint=f"use one of {valid} (divisors of {input_steps}), or leave it unset for "
            f"{default_subsequences(input_steps)}",
        )
    return subsequences


def _odd_kernel(length: int, preferred: int = 3) -> int:
    """The largest odd kernel ≤ `preferred` that fits in `length` (1 at least)."""
    k = min(preferred, length)
    return k if k % 2 else max(k - 1, 1)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise NetworkConfigError(f"{name} must be a positive integer, got {value!r}")


# ------------------------------------------------------------------------- base class


class _Network(nn.Module):
    """Shared bookkeeping: the method name, the build arguments, the input check."""

    method: str = ""
    trainable: bool = True

    def __init__(self, *, n_features: int, input_steps: int, output_dim: int, **config: Any):
        super().__init__()
        self.n_features = n_features
        self.input_steps = input_steps
        self.output_dim = output_dim
        self.config: dict[str, Any] = {
            "method": self.method,
            "n_features": n_features,
            "input_steps": input_steps,
            "output_dim": output_dim,
            **config,
        }

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.input_steps or x.shape[2] != self.n_features:
            raise NetworkConfigError(
                f"{type(self).__name__} expects x of shape (batch, {self.input_steps}, "
                f"{self.n_features}), got {tuple(x.shape)}"
            )


class _LSTMHead(_Network):
    """An LSTM over the time axis, then dropout and a linear head on the last state.

    Subclasses say how deep (`_depth`) and whether it reads both ways (`bidirectional`).
    """

    bidirectional = False

    @staticmethod
    def _depth(layers: int) -> int:
        return layers

    def __init__(
        self,
        *,
        n_features: int,
        input_steps: int,
        output_dim: int,
        hidden_size: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        target_index: int = 0,
    ) -> None:
        layers = self._depth(layers)
        super().__init__(
            n_features=n_features,
            input_steps=input_steps,
            output_dim=output_dim,
            hidden_size=hidden_size,
            dropout=dropout,
            target_index=target_index,
            layers=layers,
        )
        self.lstm = nn.LSTM(
            input_size=n_features,
            hidden_size=hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=self.bidirectional,
        )
        self.dropout = nn.Dropout(dropout)
        directions = 2 if self.bidirectional else 1
        self.head = nn.Linear(directions * hidden_size, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        _, (h_n, _) = self.lstm(x)
        # h_n: (layers * directions, batch, hidden); the last layer's states come last.
        # Bidirectional: the forward state at t=T-1 beside the backward state at t=0.
        last = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.bidirectional else h_n[-1]
        return self.head(self.dropout(last))


# ---------------------------------------------------------------------- LSTM variants


class VanillaLSTM(_LSTMHead):
    """The baseline recurrent forecaster: one LSTM layer, a dense head on its last state.

    x (batch, T, F) → LSTM(F→H) → h_T (batch, H) → dropout → Linear(H→output_dim).
    `layers` is ignored: vanilla means one layer.
    """

    method = "vanilla"

    @staticmethod
    def _depth(layers: int) -> int:
        return 1


class StackedLSTM(_LSTMHead):
    """Deeper recurrence for longer or more irregular patterns: at least two LSTM layers.

    x (batch, T, F) → LSTM(F→H, max(layers, 2) layers, dropout between layers)
    → h_T of the top layer (batch, H) → dropout → Linear(H→output_dim).
    """

    method = "stacked"

    @staticmethod
    def _depth(layers: int) -> int:
        return max(layers, 2)


class BidirectionalLSTM(_LSTMHead):
    """Reads the window both ways, so early steps see late context (the window is complete).

    x (batch, T, F) → BiLSTM(F→H per direction, `layers` layers) → [forward h at T-1,
    backward h at 0] (batch, 2H) → dropout → Linear(2H→output_dim).
    """

    method = "bidirectional"
    bidirectional = True


class _SubsequenceNetwork(_Network):
    """Shared set-up of the networks that read the window as S sub-sequences of L steps."""

    def __init__(
        self,
        *,
        n_features: int,
        input_steps: int,
        output_dim: int,
        hidden_size: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        subsequences: int | None = None,
        target_index: int = 0,
    ) -> None:
        subsequences = _resolve_subsequences(input_steps, subsequences)
        super().__init__(
            n_features=n_features,
            input_steps=input_steps,
            output_dim=output_dim,
            hidden_size=hidden_size,
            layers=layers,
            dropout=dropout,
            subsequences=subsequences,
            target_index=target_index,
        )
        self.subsequences = subsequences
        self.sub_length = input_steps // subsequences
        self.kernel = _odd_kernel(self.sub_length)


class CNNLSTM(_SubsequenceNetwork):
    """Local shapes first, then their sequence: a CNN reads each sub-sequence, an LSTM
    reads the sequence of sub-sequence features.

    x (batch, T, F) is cut into S sub-sequences of L = T/S steps: (batch·S, F, L)
    → Conv1d(F→H, kernel k = 3 (1 when L < 3), same padding) → ReLU
    → MaxPool1d(2) (when L ≥ 2) → flatten (batch, S, H·⌊L/2⌋)
    → LSTM(H·⌊L/2⌋→H, `layers` layers, dropout between) → h_S (batch, H)
    → dropout → Linear(H→output_dim).
    """

    method = "cnn_lstm"

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        **shape: Any,
    ) -> None:
        super().__init__(hidden_size=hidden_size, layers=layers, dropout=dropout, **shape)
        kernel = self.kernel
        self.conv = nn.Conv1d(self.n_features, hidden_size, kernel_size=kernel, padding=kernel // 2)
        pool = 2 if self.sub_length >= 2 else 1
        self.pool = nn.MaxPool1d(pool)
        pooled = self.sub_length // pool
        self.lstm = nn.LSTM(
            input_size=hidden_size * pooled,
            hidden_size=hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        batch = x.shape[0]
        # Consecutive chunks of the window: sub-sequence s is x[:, s*L:(s+1)*L].
        z = x.reshape(batch * self.subsequences, self.sub_length, self.n_features)
        z = self.pool(F.relu(self.conv(z.transpose(1, 2))))  # (batch·S, H, L')
        z = z.reshape(batch, self.subsequences, -1)
        _, (h_n, _) = self.lstm(z)
        return self.head(self.dropout(h_n[-1]))


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell (Shi et al. 2015) over a 1-D "image" of length L.

    The input-to-state and state-to-state maps are convolutions along L, and the cell
    state enters the gates through Hadamard peepholes W_c∘C:

        i = σ(W_xi∗X + W_hi∗H + W_ci∘C_prev + b_i)
        f = σ(W_xf∗X + W_hf∗H + W_cf∘C_prev + b_f)
        C = f∘C_prev + i∘tanh(W_xc∗X + W_hc∗H + b_c)
        o = σ(W_xo∗X + W_ho∗H + W_co∘C + b_o)
        H = o∘tanh(C)

    x (batch, in_channels, L), state (h, c) each (batch, hidden, L) → new (h, c).
    All four gate convolutions are one Conv1d(in+hidden → 4·hidden) over [X, H].
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, length: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise NetworkConfigError(f"ConvLSTMCell needs an odd kernel, got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.length = length
        self.gates = nn.Conv1d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
        )
        self.w_ci = nn.Parameter(torch.zeros(hidden_channels, length))
        self.w_cf = nn.Parameter(torch.zeros(hidden_channels, length))
        self.w_co = nn.Parameter(torch.zeros(hidden_channels, length))
        with torch.no_grad():  # forget gate open at the start, as is usual for LSTMs
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = x.new_zeros(x.shape[0], self.hidden_channels, self.length)
        return zeros, zeros.clone()

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gi, gf, gc, go = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        i = torch.sigmoid(gi + self.w_ci * c)
        f = torch.sigmoid(gf + self.w_cf * c)
        c = f * c + i * torch.tanh(gc)
        o = torch.sigmoid(go + self.w_co * c)
        return o * torch.tanh(c), c


class ConvLSTM(_SubsequenceNetwork):
    """Keeps the within-sub-sequence position in the recurrent state itself: ConvLSTM cells
    step over the sub-sequences, convolving along each one (Keras' ConvLSTM2D with 1 row).

    x (batch, T, F) → S steps of (batch, F, L), L = T/S → `layers` ConvLSTMCell layers
    (hidden H channels × L positions, kernel 3 (1 when L < 3); dropout between layers)
    → last layer's H at step S (batch, H, L) → flatten (batch, H·L) → dropout
    → Linear(H·L→output_dim).
    """

    method = "conv_lstm"

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        **shape: Any,
    ) -> None:
        super().__init__(hidden_size=hidden_size, layers=layers, dropout=dropout, **shape)
        kernel = self.kernel
        self.cells = nn.ModuleList(
            ConvLSTMCell(
                self.n_features if layer == 0 else hidden_size,
                hidden_size,
                self.sub_length,
                kernel_size=kernel,
            )
            for layer in range(layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.sub_length, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        batch = x.shape[0]
        # (batch, S, L, F) → (S, batch, F, L): one convolutional "frame" per sub-sequence.
        frames = x.reshape(batch, self.subsequences, self.sub_length, self.n_features)
        sequence = list(frames.permute(1, 0, 3, 2).unbind(0))
        for depth, cell in enumerate(self.cells):
            if depth > 0:
                sequence = [self.dropout(h) for h in sequence]
            state = cell.init_state(sequence[0])
            outputs = []
            for frame in sequence:
                state = cell(frame, state)
                outputs.append(state[0])
            sequence = outputs
        return self.head(self.dropout(sequence[-1].flatten(1)))


# ------------------------------------------------------------------- reference models


class SeasonalNaive(_Network):
    """The forecast every model must beat: the target's value one season earlier.

    Step h (1-based) of the forecast is the target at ``T - season + ((h - 1) mod season)``
    of the input window, i.e. the last season repeated. x (batch, T, F) → (batch,
    output_dim). It always predicts *step values*: for a mean/min/max output preparation,
    get the steps with `predict_steps(x, horizon)` and reduce them. No parameters.
    """

    method = "seasonal_naive"
    trainable = False

    def __init__(
        self,
        *,
        n_features: int,
        input_steps: int,
        output_dim: int,
        target_index: int = 0,
        season_steps: int | None = None,
    ) -> None:
        season = output_dim if season_steps is None else season_steps
        _check_positive(season_steps=season)
        if season > input_steps:
            raise NetworkConfigError(
                f"seasonal naive needs one season in the input window: season_steps={season} "
                f"> input_steps={input_steps}",
                hint=f"widen the input to at least {season} steps or shorten the season",
            )
        super().__init__(
            n_features=n_features,
            input_steps=input_steps,
            output_dim=output_dim,
            target_index=target_index,
            season_steps=season,
        )
        self.target_index = target_index
        self.season_steps = season
        self.register_buffer("index", self._index(output_dim), persistent=False)

    def _index(self, steps: int, device: torch.device | None = None) -> torch.Tensor:
        offsets = torch.arange(steps, device=device) % self.season_steps
        return self.input_steps - self.season_steps + offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return x[:, self.index, self.target_index]

    def predict_steps(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """The seasonal-naive values of the next `steps` steps, (batch, steps)."""
        self._check_input(x)
        return x[:, self._index(steps, x.device), self.target_index]


class DLinear(_Network):
    """The linear baseline that beats many deep forecasters (Zeng et al. 2023, AAAI).

    Uses the target channel only (the paper's univariate / shared "individual=False" form):
    y = x[:, :, target_index] (batch, T); trend = moving average of y (kernel
    `moving_average`, odd and ≤ T, the ends padded by repeating the first/last value);
    remainder = y - trend; forecast = Linear(T→output_dim)(remainder)
    + Linear(T→output_dim)(trend) → (batch, output_dim).
    """

    method = "dlinear"

    def __init__(
        self,
        *,
        n_features: int,
        input_steps: int,
        output_dim: int,
        target_index: int = 0,
        moving_average: int = DLINEAR_MOVING_AVERAGE,
    ) -> None:
        _check_positive(moving_average=moving_average)
        kernel = _odd_kernel(input_steps, moving_average)
        super().__init__(
            n_features=n_features,
            input_steps=input_steps,
            output_dim=output_dim,
            target_index=target_index,
        )
        self.target_index = target_index
        self.kernel_size = kernel
        self.linear_seasonal = nn.Linear(input_steps, output_dim)
        self.linear_trend = nn.Linear(input_steps, output_dim)

    def decompose(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(trend, remainder) of y (batch, T), each (batch, T)."""
        pad = (self.kernel_size - 1) // 2
        padded = torch.cat(
            [y[:, :1].expand(-1, pad), y, y[:, -1:].expand(-1, pad)],
            dim=1,
        )
        trend = F.avg_pool1d(padded.unsqueeze(1), self.kernel_size, stride=1).squeeze(1)
        return trend, y - trend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        trend, remainder = self.decompose(x[:, :, self.target_index])
        return self.linear_seasonal(remainder) + self.linear_trend(trend)


# ------------------------------------------------------------------------- public API

_CLASSES: dict[str, type[_Network]] = {
    cls.method: cls
    for cls in (
        VanillaLSTM,
        StackedLSTM,
        BidirectionalLSTM,
        CNNLSTM,
        ConvLSTM,
        SeasonalNaive,
        DLinear,
    )
}


def build_network(
    method: str,
    *,
    n_features: int,
    input_steps: int,
    output_dim: int,
    target_index: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    dropout: float = 0.0,
    season_steps: int | None = None,
    subsequences: int | None = None,
    subtract_last: bool = False,
) -> nn.Module:
    """Build the network for one learning method (see `METHODS`).

    Arguments a method has no use for are ignored (``layers`` for vanilla,
    ``season_steps`` for all but seasonal naive, ``subsequences`` for all but the two
    convolutional LSTMs). The result's ``.config`` holds what it actually used.
    """
    if method not in _CLASSES:
        raise NetworkConfigError(
            f"unknown learning method {method!r}", hint=f"use one of {', '.join(METHODS)}"
        )
    _check_positive(
        n_features=n_features,
        input_steps=input_steps,
        output_dim=output_dim,
        hidden_size=hidden_size,
        layers=layers,
    )
    if not isinstance(target_index, int) or not 0 <= target_index < n_features:
        raise NetworkConfigError(
            f"target_index={target_index!r} is not a column of {n_features} features",
            hint=f"use 0 … {n_features - 1}",
        )
    if not 0.0 <= dropout < 1.0:
        raise NetworkConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    shape = {"n_features": n_features, "input_steps": input_steps, "output_dim": output_dim}
    if method == "seasonal_naive":
        net: nn.Module = SeasonalNaive(
            **shape, target_index=target_index, season_steps=season_steps
        )
    elif method == "dlinear":
        net = DLinear(**shape, target_index=target_index)
    else:
        knobs = {"hidden_size": hidden_size, "layers": layers, "dropout": dropout}
        if method in ("cnn_lstm", "conv_lstm"):
            knobs["subsequences"] = subsequences
        net = _CLASSES[method](**shape, **knobs, target_index=target_index)
    return SubtractLast(net, target_index) if subtract_last else net


class SubtractLast(nn.Module):
    """Wraps a network so it sees each window relative to its last value, and adds the
    target's last value back to the forecast (NLinear's normalisation): a level the
    training data never showed becomes an offset the network need not learn."""

    def __init__(self, inner: nn.Module, target_index: int) -> None:
        super().__init__()
        self.inner = inner
        self.target_index = target_index
        self.method = getattr(inner, "method", "")
        self.trainable = getattr(inner, "trainable", True)
        self.config = {**getattr(inner, "config", {}), "subtract_last": True}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:, :]
        out = self.inner(x - last)
        return out + last[:, 0, self.target_index : self.target_index + 1]


def count_parameters(module: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe_network(module: nn.Module) -> dict[str, Any]:
    """The architecture as a JSON-able dict, for the registry.

    ``method``, ``class``, ``trainable``, ``parameters`` (count), ``config`` (the build
    arguments: ``build_network(**config)`` rebuilds it), ``input_shape`` /
    ``output_shape`` and ``layers``: one entry per module that owns parameters or has no
    children, in registration order, with its type, settings and own parameter count
    (the counts sum to ``parameters``).
    """
    layers: list[dict[str, Any]] = []
    for name, sub in module.named_modules():
        if not name:
            continue
        own = sum(p.numel() for p in sub.parameters(recurse=False))
        if own == 0 and any(True for _ in sub.children()):
            continue
        layers.append(
            {
                "name": name,
                "type": type(sub).__name__,
                "settings": sub.extra_repr(),
                "parameters": own,
            }
        )
    config = dict(getattr(module, "config", {}))
    return {
        "method": getattr(module, "method", type(module).__name__),
        "class": type(module).__name__,
        "trainable": bool(getattr(module, "trainable", True)),
        "parameters": count_parameters(module, trainable_only=False),
        "config": config,
        "input_shape": ["batch", config.get("input_steps"), config.get("n_features")],
        "output_shape": ["batch", config.get("output_dim")],
        "layers": layers,
    }
