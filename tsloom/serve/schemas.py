"""Request and response bodies (pydantic), which also make the OpenAPI schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PredictRequest(BaseModel):
    """Raw readings (``ts`` plus the model's features; bare column names such as ``OT``
    work when unambiguous), exactly `input_steps` rows on the model's grid — or
    ``{"latest": true}`` for the newest window the lake gives."""

    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] | None = Field(
        default=None,
        description="readings, oldest first: {'ts': ISO 8601, '<feature>': number, ...}",
        examples=[[{"ts": "2016-09-01T00:00:00Z", "OT": 12.3}]],
    )
    latest: bool = Field(default=False, description="predict from the lake's newest window")

    @model_validator(mode="after")
    def _one_source(self) -> PredictRequest:
        if self.latest and self.rows is not None:
            raise ValueError("give either rows or latest=true, not both")
        if not self.latest and not self.rows:
            raise ValueError("give rows (a non-empty list of readings) or latest=true")
        return self


class Prediction(BaseModel):
    ts: str | None = Field(description="the forecast's timestamp (UTC, ISO 8601)")
    step: int = Field(description="steps ahead of the window's last timestamp")
    value: float = Field(description="the target in its original units")


class PredictResponse(BaseModel):
    ref: str = Field(description="the model that answered (aliases resolved)")
    target: str
    freq: str
    predictions: list[Prediction]


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal["staged", "production", "archived"] = "production"
    archive_others: bool = Field(
        default=False,
        description="archive the other production models of this integration and target",
    )


class IntegrationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tables: list[str] = Field(min_length=1, examples=[["power.etth1"]])


class IntegrationResponse(BaseModel):
    integration_id: str
    tables: list[str]


class ErrorBody(BaseModel):
    error: str = Field(description="a short machine-readable kind")
    message: str
    hint: str | None = None
    matches: list[str] | None = Field(default=None, description="nearest known refs (404)")
    detail: list[dict[str, Any]] | None = Field(default=None, description="what was wrong (422)")
