"""The stream config: which broker and topics, how payloads become readings, which models,
how late a reading may be, where predictions go. Loaded from YAML, validated by pydantic,
with every complaint naming its field::

    mqtt:
      url: mqtt://127.0.0.1:1883
      topics: [plant/sensors/#]
    dataset: plant.sensors          # the database.table the readings belong to
    mapping:                        # as `tsloom ingest mqtt` reads them
      time: ts
      time_unit: ms
      keys: [sensor_id]
      values: [temp]
    models:
      - ref: 3f5c…/plant.sensors.temp_sensor_id_1/vanilla/production
      - ref: 3f5c…/plant.sensors.temp_sensor_id_1/vanilla/9a1b…
        features: {"plant.sensors.temp[sensor_id=1]": "plant.sensors.temp[sensor_id=7]"}
    allowed_lateness: 2 steps
    alias_refresh: 30s              # look the stage aliases up again (0: never)
    publish:
      topic: tsloom/predictions/{model}
    lake:
      predictions_dataset: stream.predictions
      actuals_dataset: stream.actuals
      flush_seconds: 5
      flush_rows: 50000
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tsloom.config import read_yaml_file
from tsloom.errors import ConfigError, TsloomError, validation_problems
from tsloom.sources.mqtt import MqttMapping
from tsloom.timeutil import parse_duration

Aggregate = Literal["mean", "sum", "min", "max", "last"]

_STEPS = re.compile(r"^\s*(\d+)\s*(steps?)?\s*$")
_TOPIC_FIELDS = ("model", "name", "integration_id", "target", "method", "param_id")
_HINT = (
    "a stream config needs mqtt.url, mqtt.topics, mapping (time, values, keys…) and models "
    "(a list of {ref: ...}); see docs/streaming.md"
)


class StreamConfigError(ConfigError):
    """A stream config that cannot be used; the message names the field."""


def _duration(value: Any, what: str) -> timedelta:
    try:
        out = parse_duration(value)
    except TsloomError as exc:
        raise ValueError(f"{what} {value!r} is not a duration (e.g. 30s, 10min, 1h)") from exc
    return out


class Lateness(BaseModel):
    """How long after its end a step stays open: whole steps of each model's reference
    frequency (``2 steps``, ``2``) or a duration (``90s``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int | None = None
    duration: timedelta | None = None

    def micros(self, freq_us: int) -> int:
        if self.steps is not None:
            return self.steps * freq_us
        assert self.duration is not None
        return self.duration // timedelta(microseconds=1)

    def __str__(self) -> str:
        if self.steps is not None:
            return f"{self.steps} step{'s' if self.steps != 1 else ''}"
        return f"{self.duration}"


class MqttSettings(BaseModel):
    """The broker: where, which topics, how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port (mqtts:// for TLS)")
    topics: list[str] = Field(min_length=1, description="topic filters to subscribe to")
    qos: Literal[0, 1] = Field(0, description="QoS of the subscription")
    client_id: str | None = Field(None, description="MQTT client id (default: random)")
    username: str | None = None
    password: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(60, ge=5)
    connect_timeout: float = Field(10.0, gt=0)
    max_inbox: int = Field(
        10_000, ge=1, description="messages waiting to be processed; beyond it the broker waits"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp") or not parsed.hostname:
            raise ValueError(f"{value!r} is not mqtt://host[:port] (or mqtts:// for TLS)")
        try:
            parsed.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"{value!r} has a bad port") from exc
        return value

    @field_validator("topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("topics")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        from tsloom.sources.mqtt import _check_topic_filter

        for topic in value:
            try:
                _check_topic_filter(topic)
            except TsloomError as exc:
                raise ValueError(exc.message) from exc
        return value

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parsed = urlparse(self.url)
        return parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"


class ModelBinding(BaseModel):
    """One model to run on the stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str = Field(
        description="<iid>/<target>/<method>/<param_id>, a param id prefix, or a stage alias "
        "<iid>/<target>[/<method>]/production"
    )
    name: str | None = Field(None, description="short name for the publish topic ({name})")
    features: dict[str, str] = Field(
        default_factory=dict,
        description="model feature → stream series name, where the names differ",
    )


class PublishSettings(BaseModel):
    """Where predictions are published on the broker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    topic: str = Field(
        "tsloom/predictions/{model}",
        description="template; fields: " + ", ".join("{" + f + "}" for f in _TOPIC_FIELDS),
    )
    qos: Literal[0, 1] = 0
    retain: bool = False
    max_queue: int = Field(
        10_000, ge=1, description="messages waiting to go out; beyond it new ones are dropped"
    )

    @field_validator("topic")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = re.findall(r"{([^{}]*)}", value)
        unknown = [f for f in fields if f not in _TOPIC_FIELDS]
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown} in topic template {value!r}; "
                f"use {', '.join('{' + f + '}' for f in _TOPIC_FIELDS)}"
            )
        if "#" in value or "+" in value or not value.strip("/"):
            raise ValueError(f"{value!r} is not a topic to publish to (no wildcards)")
        return value


class LakeSettings(BaseModel):
    """Batched appends of predictions and completed steps to the lake."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    predictions_dataset: str = "stream.predictions"
    actuals_dataset: str = "stream.actuals"
    flush_seconds: float = Field(5.0, gt=0, description="append at least this often")
    flush_rows: int = Field(50_000, ge=1, description="append once this many rows wait")
    max_pending_rows: int = Field(
        2_000_000, ge=1, description="rows held while the lake is slow; beyond it, dropped"
    )

    @field_validator("predictions_dataset", "actuals_dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        from tsloom.names import validate_dataset_name

        try:
            return validate_dataset_name(value)
        except TsloomError as exc:
            raise ValueError(exc.message) from exc


class StreamConfig(BaseModel):
    """Everything `tsloom stream` needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mqtt: MqttSettings
    mapping: MqttMapping
    dataset: str | None = Field(
        None,
        description="database.table of the readings: series are named dataset.column[k=v]",
    )
    models: list[ModelBinding] = Field(min_length=1)
    allowed_lateness: Lateness = Field(default_factory=lambda: Lateness(steps=1))
    aggregate: Aggregate = Field("mean", description="how readings inside one step combine")
    bucket_offset: timedelta = Field(
        timedelta(0),
        description="step T holds readings in [T - offset, T - offset + freq); set half the "
        "sensor period for sensors sampled at the reference frequency with jitter",
    )
    fill_limit: int = Field(
        1, ge=0, description="steps a series' last value is carried over a missing step"
    )
    max_series: int = Field(1_000_000, ge=1, description="distinct series tracked at most")
    max_batch_messages: int = Field(2_000, ge=1, description="messages processed per round")
    alias_refresh: float = Field(
        30.0,
        description="seconds between lookups of the stage aliases among `models` (a model "
        "promoted since is swapped in); 0 disables",
    )
    publish: PublishSettings = Field(default_factory=PublishSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)

    @field_validator("mapping", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return MqttMapping.load(value)
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from tsloom.names import validate_dataset_name

        try:
            return validate_dataset_name(value)
        except TsloomError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"ref": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("allowed_lateness", mode="before")
    @classmethod
    def _lateness(cls, value: Any) -> Any:
        if isinstance(value, Lateness | Mapping):
            return value
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a lateness")
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str):
            match = _STEPS.match(value)
            if match:
                return Lateness(steps=int(match.group(1)))
            if value.strip() in ("0", "0s"):
                return Lateness(steps=0)
        out = _duration(value, "allowed_lateness")
        if out < timedelta(0):
            raise ValueError("allowed_lateness must not be negative")
        return Lateness(duration=out)

    @field_validator("bucket_offset", mode="before")
    @classmethod
    def _offset(cls, value: Any) -> Any:
        return value if isinstance(value, timedelta) else _duration(value, "bucket_offset")

    @field_validator("alias_refresh", mode="before")
    @classmethod
    def _refresh(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"alias_refresh {value!r} is not a number of seconds")
        if isinstance(value, timedelta):
            out = value.total_seconds()
        elif isinstance(value, int | float):
            out = float(value)
        else:
            try:
                out = float(value)
            except (TypeError, ValueError):
                out = _duration(value, "alias_refresh").total_seconds()
        if not out >= 0 or out == float("inf"):
            raise ValueError(
                f"alias_refresh {value!r} must be a number of seconds >= 0 (0 disables)"
            )
        return out

    @model_validator(mode="after")
    def _names(self) -> StreamConfig:
        names = [m.name for m in self.models if m.name]
        if len(set(names)) != len(names):
            raise ValueError(f"model names repeat: {names}")
        if self.lake.predictions_dataset == self.lake.actuals_dataset:
            raise ValueError("lake.predictions_dataset and lake.actuals_dataset are the same")
        return self

    # -- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, source: StreamConfig | Mapping[str, Any] | str | Path) -> StreamConfig:
        """From itself, a dict, or a YAML file; errors name the field that is wrong."""
        if isinstance(source, StreamConfig):
            return source
        where = "stream config"
        if isinstance(source, str | Path):
            path = Path(source)
            where = str(path)
            data = read_yaml_file(path, "stream config", error=StreamConfigError, hint=_HINT)
        else:
            data = source
        if not isinstance(data, Mapping):
            raise StreamConfigError(
                f"{where}: expected a mapping of settings, got {type(data).__name__}", hint=_HINT
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = validation_problems(exc, "config")
            raise StreamConfigError(f"{where}: {problems}", hint=_HINT) from exc
        except TsloomError as exc:  # e.g. a mapping file that cannot be read
            raise StreamConfigError(f"{where}: {exc.message}", hint=exc.hint or _HINT) from exc


def load_config(source: StreamConfig | Mapping[str, Any] | str | Path) -> StreamConfig:
    """:meth:`StreamConfig.load`."""
    return StreamConfig.load(source)
