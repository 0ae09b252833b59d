"""Model specs: the source design's model language, in YAML.

    name: ett
    version: "0.1"
    layers:
      - {type: input, features: 1, steps: 24}
      - {type: lstm, units: 64, return_sequences: true}
      - {type: dropout, rate: 0.1}
      - {type: lstm, units: 32}
      - {type: dense, units: 16, activation: relu}
      - {type: dense, units: 6}
    training: {loss: mae, optimizer: adam, learning_rate: 0.001, epochs: 20, batch_size: 64}

Validated with pydantic, stored in the database as `name:version`, and built into a
PyTorch module mapping (batch, steps, features) to (batch, units of the last dense).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tsloom.errors import TsloomError, validation_problems

_NAME = r"^[a-z][a-z0-9_.-]{0,63}$"
_VERSION = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$"
Activation = Literal["linear", "relu", "tanh", "sigmoid", "gelu"]


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputLayer(_Layer):
    type: Literal["input"]
    features: int = Field(ge=1, le=4096)
    steps: int = Field(ge=1, le=100_000)


class LstmLayer(_Layer):
    type: Literal["lstm"]
    units: int = Field(ge=1, le=4096)
    return_sequences: bool = False
    bidirectional: bool = False


class DenseLayer(_Layer):
    type: Literal["dense"]
    units: int = Field(ge=1, le=65536)
    activation: Activation = "linear"


class DropoutLayer(_Layer):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0)


Layer = Annotated[InputLayer | LstmLayer | DenseLayer | DropoutLayer, Field(discriminator="type")]


class Training(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: Literal["mse", "mae", "huber"] = "mse"
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65536)


class ModelSpec(BaseModel):
    """A network declared layer by layer, with how to train it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    version: str = Field(pattern=_VERSION)
    layers: tuple[Layer, ...]
    training: Training = Training()

    @model_validator(mode="after")
    def _shape(self) -> ModelSpec:
        if not self.layers or self.layers[0].type != "input":
            raise ValueError("the first layer must be `input` (features and steps)")
        if any(layer.type == "input" for layer in self.layers[1:]):
            raise ValueError("only the first layer may be `input`")
        if self.layers[-1].type != "dense":
            raise ValueError("the last layer must be `dense`: its units are the outputs")
        sequence = True  # the input is a sequence until an LSTM returns its last state
        for i, layer in enumerate(self.layers[1:], start=1):
            if layer.type == "lstm":
                if not sequence:
                    raise ValueError(
                        f"layer {i} (lstm) needs a sequence, but the layer before it returns "
                        "one vector; set return_sequences: true on the previous lstm"
                    )
                sequence = layer.return_sequences
            elif layer.type == "dense" and sequence:
                raise ValueError(
                    f"layer {i} (dense) gets a sequence; end the lstm stack with "
                    "return_sequences: false first"
                )
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def outputs(self) -> int:
        return self.layers[-1].units  # type: ignore[union-attr]

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def spec_hash(self) -> str:
        return hashlib.sha1(self.canonical_json().encode()).hexdigest()


def parse_model_spec(text: str, *, where: str = "model spec") -> ModelSpec:
    """YAML text → a validated spec, or one clear error listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TsloomError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TsloomError(f"{where} must be a mapping with name, version, layers, training")
    if "version" in data and not isinstance(data["version"], str):
        data["version"] = str(data["version"])  # `version: 0.1` reads as a float
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, "spec")
        raise TsloomError(
            f"{where} is not a valid model spec: {problems}",
            hint="layers are input, lstm, dense and dropout; see tsloom/amml/model_spec.py",
        ) from exc


def build_module(spec: ModelSpec) -> Any:
    """The PyTorch module the spec declares: (batch, steps, features) → (batch, outputs)."""
    import torch
    from torch import nn

    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}

    class _LastStep(nn.Module):
        def __init__(self, lstm: nn.LSTM, keep_sequence: bool) -> None:
            super().__init__()
            self.lstm, self.keep_sequence = lstm, keep_sequence

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return out if self.keep_sequence else out[:, -1, :]

    blocks: list[nn.Module] = []
    width = spec.layers[0].features  # type: ignore[union-attr]
    for layer in spec.layers[1:]:
        if isinstance(layer, LstmLayer):
            lstm = nn.LSTM(width, layer.units, batch_first=True, bidirectional=layer.bidirectional)
            blocks.append(_LastStep(lstm, layer.return_sequences))
            width = layer.units * (2 if layer.bidirectional else 1)
        elif isinstance(layer, DenseLayer):
            blocks.append(nn.Linear(width, layer.units))
            if layer.activation != "linear":
                blocks.append(activations[layer.activation]())
            width = layer.units
        elif isinstance(layer, DropoutLayer):
            blocks.append(nn.Dropout(layer.rate))
    return nn.Sequential(*blocks)
