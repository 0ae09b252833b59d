"""Learning parameters: one object holds them all, and its canonical JSON is the model
parameter id (SHA-1), as the source design asks. No other stage defines its own knobs.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tsloom.errors import TsloomError, validation_problems
from tsloom.timeutil import parse_duration

Method = Literal[
    "vanilla", "stacked", "bidirectional", "cnn_lstm", "conv_lstm", "seasonal_naive", "dlinear"
]
OutputPrep = Literal["step", "mean", "min", "max"]
ScalerKind = Literal["robust", "robust_log", "log", "minmax", "zscore"]

# Knobs that change where or how fast a model trains but not what it is.
_NOT_IN_ID = frozenset({"device"})
# Knobs added after the first release, with their defaults: they enter the id only when
# set away from the default, so every model made before keeps its param id. A default
# here must never change; add a new knob instead.
_ADDED_LATER: dict[str, Any] = {"subtract_last": False}


def _iso_seconds(value: timedelta) -> str:
    """Exact seconds: whole numbers without a fraction, never in exponent notation."""
    seconds = value.total_seconds()
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds!r}s"


class LearningParams(BaseModel):
    """Everything that defines a forecaster; `param_id` hashes it (device excluded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    features: tuple[str, ...] = Field(default=(), description="training features (target included)")
    input_width: timedelta
    output_width: timedelta
    freq: timedelta
    method: Method = "stacked"
    split: float = Field(0.8, gt=0.0, lt=1.0, description="share of rows used for training")
    output: OutputPrep = "step"
    scaler: ScalerKind = "zscore"
    hidden_size: int = Field(64, ge=1, le=4096)
    layers: int = Field(2, ge=1, le=16)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    subtract_last: bool = Field(
        False,
        description="feed the network each window minus its last value and add the "
        "target's last value back to the forecast (as NLinear does): robust to level shifts",
    )
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=65536)
    epochs: int = Field(20, ge=1, le=10_000)
    patience: int = Field(5, ge=1)
    seed: int = 0
    device: str = "cpu"

    @field_validator("input_width", "output_width", "freq", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value) if isinstance(value, str | int | float) else value

    @model_validator(mode="after")
    def _consistent(self) -> LearningParams:
        if not self.features:
            object.__setattr__(self, "features", (self.target,))
        if self.target not in self.features:
            raise ValueError(
                f"target {self.target!r} is not among the features {list(self.features)}; "
                "the target must be one of the training features"
            )
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features repeat a name: {list(self.features)}")
        if self.freq <= timedelta(0):
            raise ValueError(f"freq must be positive, got {self.freq}")
        for name in ("input_width", "output_width"):
            width: timedelta = getattr(self, name)
            steps = width / self.freq
            if width <= timedelta(0) or steps != int(steps):
                raise ValueError(
                    f"{name} {_iso_seconds(width)} is not a whole number of reference periods "
                    f"({_iso_seconds(self.freq)}); use a multiple such as "
                    f"{_iso_seconds(self.freq * max(1, round(steps)))}"
                )
        return self

    @property
    def input_steps(self) -> int:
        return int(self.input_width / self.freq)

    @property
    def output_steps(self) -> int:
        return int(self.output_width / self.freq)

    @property
    def output_dim(self) -> int:
        """Values predicted per window: every future step, or one summary of them."""
        return self.output_steps if self.output == "step" else 1

    @property
    def target_index(self) -> int:
        return self.features.index(self.target)

    def canonical(self) -> dict[str, Any]:
        """The id-bearing parameters with durations as seconds, in a stable form."""
        data = self.model_dump(exclude=set(_NOT_IN_ID))
        for name, default in _ADDED_LATER.items():
            if data.get(name) == default:
                del data[name]
        for key in ("input_width", "output_width", "freq"):
            data[key] = _iso_seconds(data[key])
        data["features"] = list(data["features"])
        return data

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    @property
    def param_id(self) -> str:
        """SHA-1 (40 hex) of the canonical JSON: same parameters, same id, everywhere."""
        return hashlib.sha1(self.canonical_json().encode()).hexdigest()

    @classmethod
    def load(cls, data: dict[str, Any]) -> LearningParams:
        """From a dict (e.g. YAML), with pydantic's complaints turned into one clear error."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, "params")
            raise TsloomError(
                f"invalid learning parameters: {problems}",
                hint="see `tsloom train --help` for every parameter and its range",
            ) from exc
