"""Train a forecaster from one `LearningParams`: chronological split, scaler fitted on the
training rows only, mini-batches, early stopping on validation loss, per-epoch RMSE
history, metrics on the original and the scaled scale, reproducible with a seed."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tsloom.errors import TsloomError
from tsloom.forecast.metrics import regression_metrics
from tsloom.forecast.params import LearningParams
from tsloom.forecast.scalers import FittedScaler, fit_scaler
from tsloom.forecast.windows import Windows, make_windows, split_boundary

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """A trained model with everything needed to predict, register and explain it."""

    params: LearningParams
    model: nn.Module
    scaler: FittedScaler
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    n_train: int = 0
    n_valid: int = 0
    boundary: int = 0
    seconds: float = 0.0

    def predict_scaled(self, x: np.ndarray) -> np.ndarray:
        return predict_scaled(self.model, x, self.params)

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Original-unit forecasts of the target from raw (unscaled) input windows.

        `window` is (input_steps, features) or (n, input_steps, features).
        """
        window = np.asarray(window, dtype=np.float64)
        single = window.ndim == 2
        batch = window[None] if single else window
        out = self.scaler.around(self.predict_scaled, batch, self.params.target_index)
        return out[0] if single else out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TsloomError(
            f"device {name!r} asked for, but no CUDA GPU is available",
            hint="use --device cpu (or auto)",
        )
    return torch.device(name)


def season_steps(params: LearningParams) -> int:
    """Seasonal naive repeats yesterday when a day fits in the input window, else the
    most recent `output_steps` (or the whole input when that is shorter)."""
    from datetime import timedelta

    day = timedelta(days=1)
    if day % params.freq == timedelta(0) and day // params.freq <= params.input_steps:
        return int(day // params.freq)
    return min(params.output_steps, params.input_steps)


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def predict_scaled(
    model: nn.Module, x: np.ndarray, params: LearningParams, batch_size: int = 4096
) -> np.ndarray:
    """Scaled predictions (n, output_dim) from scaled windows (n, input_steps, features)."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outs = []
    for i in range(0, len(x), batch_size):
        chunk = torch.as_tensor(np.asarray(x[i : i + batch_size], dtype=np.float32), device=device)
        out = model(chunk)
        if params.output != "step" and getattr(model, "trainable", True) is False:
            out = _summarise(out, params.output)
        outs.append(out.cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, params.output_dim), np.float32)


def _summarise(out: torch.Tensor, how: str) -> torch.Tensor:
    """Seasonal naive predicts steps; reduce them when the target is a window summary."""
    if how == "mean":
        return out.mean(dim=1, keepdim=True)
    if how == "min":
        return out.min(dim=1, keepdim=True).values
    return out.max(dim=1, keepdim=True).values


def prepare(
    values: np.ndarray, params: LearningParams
) -> tuple[FittedScaler, Windows, Windows, int]:
    """Split rows chronologically, fit the scaler on the training rows, make windows."""
    if np.isnan(values).any():
        bad = int(np.argwhere(np.isnan(values))[0][0])
        raise TsloomError(
            f"the training frame has missing values (first at row {bad})",
            hint="integrate with gap handling 'interpolate', or clean the datasets first",
        )
    boundary = split_boundary(len(values), params.input_steps, params.output_steps, params.split)
    scaler = fit_scaler(params.scaler, values[:boundary], params.features)
    scaled = scaler.transform(values)
    common = dict(
        input_steps=params.input_steps,
        output_steps=params.output_steps,
        target_index=params.target_index,
        output=params.output,
    )
    train = make_windows(scaled[:boundary], **common)
    valid = make_windows(scaled[boundary - params.input_steps :], **common)
    return scaler, train, valid, boundary


def train_model(
    values: np.ndarray,
    params: LearningParams,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    max_windows_per_epoch: int | None = None,
) -> TrainResult:
    """Train on `values` (rows on the reference grid, columns = `params.features`).

    `max_windows_per_epoch` lets each epoch see a fresh random sample of the training
    windows instead of all of them (for long series on small machines)."""
    from tsloom.forecast.networks import build_network

    started = time.perf_counter()
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(params.features):
        raise TsloomError(
            f"expected a (rows, {len(params.features)}) array for features "
            f"{list(params.features)}, got shape {values.shape}"
        )
    generator = _seed_everything(params.seed)
    scaler, train, valid, boundary = prepare(values, params)
    device = resolve_device(params.device)
    model = build_network(
        params.method,
        n_features=len(params.features),
        input_steps=params.input_steps,
        output_dim=params.output_dim if params.method != "seasonal_naive" else params.output_steps,
        target_index=params.target_index,
        hidden_size=params.hidden_size,
        layers=params.layers,
        dropout=params.dropout,
        season_steps=season_steps(params),
        subtract_last=params.subtract_last,
    ).to(device)
    result = TrainResult(
        params, model, scaler, n_train=len(train), n_valid=len(valid), boundary=boundary
    )
    if getattr(model, "trainable", True):
        _fit(
            model,
            train,
            valid,
            params,
            generator,
            device,
            result,
            on_epoch,
            progress,
            max_windows_per_epoch,
        )
    result.metrics = evaluate(result, valid)
    result.seconds = time.perf_counter() - started
    return result


def _rmse(model: nn.Module, windows: Windows, params: LearningParams) -> float:
    pred = predict_scaled(model, windows.x, params)
    return float(np.sqrt(np.mean((pred - windows.y) ** 2)))


def _fit(
    model, train, valid, params, generator, device, result, on_epoch, progress, max_windows=None
) -> None:
    x = torch.as_tensor(train.x)
    y = torch.as_tensor(train.y)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    loss_fn = nn.MSELoss()
    best, best_state, waited = float("inf"), None, 0
    bar = _progress(progress, params)
    task = bar.add_task(f"training {params.method}", total=params.epochs) if bar else None
    try:
        for epoch in range(1, params.epochs + 1):
            tick = time.perf_counter()
            model.train()
            order = torch.randperm(len(x), generator=generator)[:max_windows]
            squared, seen = 0.0, 0
            for i in range(0, len(order), params.batch_size):
                idx = order[i : i + params.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
                loss.backward()
                optimiser.step()
                squared += float(loss.detach()) * len(idx)
                seen += len(idx)
            row = {
                "epoch": epoch,
                # running RMSE over the epoch's batches: free, unlike a second pass
                "train_rmse": float(np.sqrt(squared / max(seen, 1))),
                "val_rmse": _rmse(model, valid, params),
                "seconds": time.perf_counter() - tick,
            }
            result.history.append(row)
            if on_epoch:
                on_epoch(row)
            if bar is not None:
                bar.update(
                    task,
                    advance=1,
                    description=(f"{params.method} epoch {epoch}: val RMSE {row['val_rmse']:.4f}"),
                )
            if row["val_rmse"] < best - 1e-7:
                best, waited, result.best_epoch = row["val_rmse"], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= params.patience:
                    break
    finally:
        if bar is not None:
            bar.stop()
    if best_state is not None:
        model.load_state_dict(best_state)


def _progress(enabled: bool, params: LearningParams):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )
    bar.start()
    return bar


def evaluate(result: TrainResult, windows: Windows) -> dict[str, float]:
    """Metrics of `windows` on the scaled scale and in the target's original units."""
    pred = result.predict_scaled(windows.x)
    scaled = regression_metrics(windows.y, pred)
    i = result.params.target_index
    original = regression_metrics(
        result.scaler.inverse(windows.y, i), result.scaler.inverse(pred, i)
    )
    return {
        "rmse": original["rmse"],
        "mae": original["mae"],
        "mape": original["mape"],
        "rmse_scaled": scaled["rmse"],
        "mae_scaled": scaled["mae"],
        "mse_scaled": scaled["mse"],
    }
