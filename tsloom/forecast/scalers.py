"""Scalers fitted on the training part only, with a JSON-able state so a registered model
can re-apply exactly the same preprocessing and invert it on predictions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from tsloom.errors import TsloomError

KINDS = ("robust", "robust_log", "log", "minmax", "zscore")


@dataclass(frozen=True)
class FittedScaler:
    """Per-feature affine map after an optional log: y = (f(x) - center) / scale."""

    kind: str
    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]

    @property
    def uses_log(self) -> bool:
        return self.kind in ("log", "robust_log")

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "log":
            return np.log(x)
        if self.kind == "robust_log":
            return np.log1p(x)
        return x

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """center and scale as arrays, made once (a server scales every request)."""
        return np.asarray(self.center, dtype=np.float64), np.asarray(self.scale, dtype=np.float64)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(rows, features) in the original units → scaled."""
        x = np.asarray(x, dtype=np.float64)
        _check_domain(self.kind, x, self.features)
        center, scale = self._arrays
        return (self._forward(x) - center) / scale

    def inverse(self, y: np.ndarray, feature: str | int | None = None) -> np.ndarray:
        """Scaled values back to original units, for all features or one (by name/index)."""
        y = np.asarray(y, dtype=np.float64)
        if feature is None:
            center, scale = self._arrays
        else:
            i = self.features.index(feature) if isinstance(feature, str) else feature
            center, scale = self.center[i], self.scale[i]
        z = y * scale + center
        if self.kind == "log":
            return np.exp(z)
        if self.kind == "robust_log":
            return np.expm1(z)
        return z

    def around(
        self, forward: Callable[[np.ndarray], np.ndarray], windows: np.ndarray, feature: int
    ) -> np.ndarray:
        """`forward` run on `windows` (n, steps, features) in the original units, scaled
        first; its outputs back in the original units of `feature` — how every served
        forecast is made, in the server and in its forward-pass process alike."""
        n, steps, feats = windows.shape
        scaled = self.transform(windows.reshape(-1, feats)).reshape(n, steps, feats)
        return self.inverse(forward(scaled), feature)

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "features": list(self.features),
            "center": list(self.center),
            "scale": list(self.scale),
        }

    @property
    def scaler_id(self) -> str:
        """SHA-1 of kind, features and fitted state: scalers are content-addressed."""
        return hashlib.sha1(json.dumps(self.state(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FittedScaler:
        return cls(
            state["kind"],
            tuple(state["features"]),
            tuple(float(v) for v in state["center"]),
            tuple(float(v) for v in state["scale"]),
        )


def _check_domain(kind: str, x: np.ndarray, features: tuple[str, ...]) -> None:
    if kind not in ("log", "robust_log"):
        return
    floor = 0.0 if kind == "log" else -1.0
    bad = np.nonzero(np.any(x <= floor, axis=0))[0]
    if bad.size:
        name = features[bad[0]] if bad[0] < len(features) else str(bad[0])
        low = float(np.nanmin(x[:, bad[0]]))
        raise TsloomError(
            f"the {kind} scaler needs values above {floor:g}, but feature {name!r} goes down "
            f"to {low:g}",
            hint="choose --scaler zscore, robust or minmax for data that can be zero or negative",
        )


def fit_scaler(kind: str, x: np.ndarray, features: tuple[str, ...]) -> FittedScaler:
    """Fit `kind` on training rows `x` (rows, features)."""
    if kind not in KINDS:
        raise TsloomError(f"unknown scaler {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    x = np.asarray(x, dtype=np.float64)
    _check_domain(kind, x, features)
    if kind == "log":
        z = np.log(x)
    elif kind == "robust_log":
        z = np.log1p(x)
    else:
        z = x
    if kind in ("robust", "robust_log"):
        q1, median, q3 = np.nanpercentile(z, [25, 50, 75], axis=0)
        center, scale = median, q3 - q1
    elif kind == "minmax":
        lo, hi = np.nanmin(z, axis=0), np.nanmax(z, axis=0)
        center, scale = lo, hi - lo
    elif kind == "zscore":
        center, scale = np.nanmean(z, axis=0), np.nanstd(z, axis=0)
    else:  # plain log: log-transform only
        center, scale = np.zeros(z.shape[1]), np.ones(z.shape[1])
    scale = np.where(np.abs(scale) < 1e-12, 1.0, scale)  # constant features stay finite
    return FittedScaler(
        kind, tuple(features), tuple(float(v) for v in center), tuple(float(v) for v in scale)
    )
