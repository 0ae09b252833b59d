"""The integration spec: which series to combine, at which reference frequency, and how.

An :class:`IntegrationSpec` is a frozen pydantic model, loadable from a dict or YAML::

    freq: 10min
    start: 2026-01-05            # optional; default: the overlap of all sources
    end: 2026-01-07              # optional, exclusive
    downsample: mean             # source finer than the grid: mean | min | max | last | sum
    upsample: interpolate        # source coarser than the grid: interpolate | ffill | none
    gaps: interpolate            # remaining gaps: interpolate | ffill | drop | keep
    trim_edges: true             # then drop rows still incomplete at the start and end
    sources:
      - airq.gwangju             # a bare name: every value column, every series
      - dataset: airq.seoul
        columns: [co2]
        keys: {sensor_id: [1]}
        period: 10min            # optional override of the estimated source period

Its :meth:`~IntegrationSpec.canonical_json` is stored beside the integration id; the id
itself depends only on the set of tables (:func:`integration_id`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tsloom.errors import TsloomError, validation_problems
from tsloom.names import validate_dataset_name
from tsloom.timeutil import parse_duration, to_utc

DownAgg = Literal["mean", "min", "max", "last", "sum"]
UpMethod = Literal["interpolate", "ffill", "none"]
GapPolicy = Literal["interpolate", "ffill", "drop", "keep"]
KeyValue = int | str | float

ID_SEPARATOR = ","
"""integration_id joins the sorted, unique ``database.table`` names with this."""

_DURATION_HINT = "write a number and a unit, e.g. 30s, 10min, 30min, 1h, 1d"


class IntegrationSpecError(TsloomError):
    """An integration spec that cannot be used (bad frequency, range, names, options)."""


def integration_id(tables: Iterable[str]) -> str:
    """SHA-1 (40 hex) of the integrated tables, as the source design defines it.

    Joining rule: the ``database.table`` names are validated, de-duplicated and sorted
    (plain code-point order), then joined with ``","`` and the UTF-8 bytes hashed::

        sha1(",".join(sorted(set(tables)))).hexdigest()

    So the same set of tables in any order, or with repeats, gives the same id. Columns,
    key filters, frequency and range do not enter the id; they are kept in the spec
    stored with it (see :meth:`IntegrationSpec.spec_hash`).
    """
    if isinstance(tables, str):
        tables = [tables]
    names = sorted({validate_dataset_name(t) for t in tables})
    if not names:
        raise IntegrationSpecError(
            "an integration needs at least one table", hint="name tables as database.table"
        )
    return hashlib.sha1(ID_SEPARATOR.join(names).encode("utf-8")).hexdigest()


def format_duration(value: timedelta) -> str:
    """Canonical text of a duration that :func:`parse_duration` reads back: whole seconds
    as ``"600s"``, whole milliseconds as ``"1500ms"``, otherwise seconds as a number."""
    us = value // timedelta(microseconds=1)
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us % 1_000 == 0:
        return f"{us // 1_000}ms"
    return repr(us / 1_000_000)


def _duration(value: Any, what: str) -> timedelta:
    if isinstance(value, timedelta):
        out = value
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            out = parse_duration(value)
        except TsloomError as exc:
            raise IntegrationSpecError(
                f"{what} {value!r} is not a duration", hint=_DURATION_HINT
            ) from exc
    else:
        raise IntegrationSpecError(f"{what} {value!r} is not a duration", hint=_DURATION_HINT)
    if out <= timedelta(0):
        raise IntegrationSpecError(f"{what} must be positive, got {value!r}", hint=_DURATION_HINT)
    return out


def _instant(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, datetime | str):
        raise IntegrationSpecError(
            f"{what} {value!r} is not a time", hint="use ISO 8601, e.g. 2016-07-01T00:00"
        )
    try:
        return to_utc(value)
    except TsloomError as exc:
        raise IntegrationSpecError(f"{what}: {exc.message}", hint=exc.hint) from exc


def _sorted_values(values: list[KeyValue]) -> list[KeyValue]:
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique)  # type: ignore[type-var]
    except TypeError:
        return sorted(unique, key=str)


class SourceSpec(BaseModel):
    """One dataset to integrate: which value columns, which series, and optional overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = Field(description="the dataset, database.table")
    columns: tuple[str, ...] | None = Field(
        None, description="value columns to take (default: all of them)"
    )
    keys: dict[str, tuple[KeyValue, ...]] | None = Field(
        None, description="key filter, e.g. {sensor_id: [1, 2]} (default: every series)"
    )
    period: timedelta | None = Field(
        None, description="the source's sampling period (default: estimated per series)"
    )
    downsample: DownAgg | None = Field(None, description="override of the spec's downsample")
    upsample: UpMethod | None = Field(None, description="override of the spec's upsample")

    @field_validator("dataset", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return validate_dataset_name(value)

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if value is not None:
            value = list(dict.fromkeys(value))
            if not value:
                raise IntegrationSpecError(
                    "an empty column list selects nothing",
                    hint="leave columns out to take every value column",
                )
        return value

    @field_validator("keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise IntegrationSpecError(
                f"key filter {value!r} is not a mapping", hint="e.g. keys: {sensor_id: [1, 2]}"
            )
        out = {}
        for column, values in sorted(value.items()):
            if isinstance(values, str | int | float):
                values = [values]
            values = _sorted_values(list(values))
            if not values:
                raise IntegrationSpecError(
                    f"key filter {column!r} lists no values", hint="give at least one value"
                )
            out[str(column)] = tuple(values)
        return out or None

    @field_validator("period", mode="before")
    @classmethod
    def _period(cls, value: Any) -> timedelta | None:
        return None if value is None else _duration(value, "source period")

    def canonical(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "columns": list(self.columns) if self.columns is not None else None,
            "keys": {k: list(v) for k, v in self.keys.items()} if self.keys else None,
            "period": format_duration(self.period) if self.period else None,
            "downsample": self.downsample,
            "upsample": self.upsample,
        }


class IntegrationSpec(BaseModel):
    """Series to combine, the reference frequency, the range and the alignment rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: tuple[SourceSpec, ...] = Field(min_length=1)
    freq: timedelta = Field(description="the reference frequency, e.g. 10min, 30min, 1h")
    start: datetime | None = Field(None, description="first grid point (default: the overlap)")
    end: datetime | None = Field(None, description="exclusive end (default: the overlap)")
    downsample: DownAgg = Field("mean", description="aggregation when a source is finer")
    upsample: UpMethod = Field("interpolate", description="filling when a source is coarser")
    gaps: GapPolicy = Field("interpolate", description="what to do with remaining gaps")
    trim_edges: bool = Field(True, description="drop incomplete rows at the start and end")

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        if isinstance(value, str | Mapping | SourceSpec):
            value = [value]
        if value is None or not isinstance(value, Iterable):
            raise IntegrationSpecError(
                "an integration needs at least one source", hint="name tables as database.table"
            )
        items = [{"dataset": v} if isinstance(v, str) else v for v in value]
        if not items:
            raise IntegrationSpecError(
                "an integration needs at least one source", hint="name tables as database.table"
            )
        return items

    @field_validator("freq", mode="before")
    @classmethod
    def _freq(cls, value: Any) -> timedelta:
        return _duration(value, "reference frequency")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _instants(cls, value: Any, info: Any) -> datetime | None:
        return _instant(value, info.field_name)

    @model_validator(mode="after")
    def _range(self) -> IntegrationSpec:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise IntegrationSpecError(
                f"start {self.start.isoformat()} is not before end {self.end.isoformat()}",
                hint="the range is [start, end): end is exclusive",
            )
        return self

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_tables(
        cls,
        tables: Iterable[str],
        freq: str | timedelta,
        *,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        **options: Any,
    ) -> IntegrationSpec:
        """Every value column and series of each table (what `--tables a.x b.y` means)."""
        return cls.from_dict(
            {"sources": list(tables), "freq": freq, "start": start, "end": end, **options}
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntegrationSpec:
        """From a plain dict (YAML, JSON, a stored spec), with pydantic's complaints turned
        into one :class:`IntegrationSpecError`."""
        if not isinstance(data, Mapping):
            raise IntegrationSpecError(
                f"an integration spec must be a mapping, got {type(data).__name__}",
                hint="give at least `sources:` and `freq:`",
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = validation_problems(exc, "spec")
            raise IntegrationSpecError(
                f"invalid integration spec: {problems}",
                hint="fields: sources, freq, start, end, downsample, upsample, gaps, trim_edges",
            ) from exc

    @classmethod
    def from_yaml(cls, source: str | Path) -> IntegrationSpec:
        """From YAML text or a path to a YAML file."""
        if isinstance(source, Path) or (
            "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
        ):
            path = Path(source)
            try:
                source = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise IntegrationSpecError(
                    f"cannot read integration spec {path}: {exc.strerror}"
                ) from exc
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise IntegrationSpecError(f"integration spec is not valid YAML: {exc}") from exc
        return cls.from_dict(data)

    # -- identity --------------------------------------------------------------------

    @property
    def tables(self) -> tuple[str, ...]:
        """The distinct datasets, sorted (the input of the integration id)."""
        return tuple(sorted({s.dataset for s in self.sources}))

    @property
    def integration_id(self) -> str:
        return integration_id(self.tables)

    def canonical(self) -> dict[str, Any]:
        """Every field, explicit defaults included, durations as ``"600s"``, times as
        ISO 8601 UTC: the form stored with the integration id."""
        return {
            "sources": [s.canonical() for s in self.sources],
            "freq": format_duration(self.freq),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "downsample": self.downsample,
            "upsample": self.upsample,
            "gaps": self.gaps,
            "trim_edges": self.trim_edges,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.canonical()

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        """SHA-1 of the canonical JSON: changes with any option, unlike the integration id."""
        return hashlib.sha1(self.canonical_json().encode("utf-8")).hexdigest()
