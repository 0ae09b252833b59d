"""Registry metadata rows: one per model (`registered_models`), plus the datasets and lake
versions it was trained from (`registered_model_datasets`)."""

from __future__ import annotations

import difflib
import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tsloom.config import Settings
from tsloom.db.engine import session_scope
from tsloom.db.models import RegisteredModel, RegisteredModelDataset
from tsloom.registry.store import Ref, RegistryError

STAGES = ("staged", "production", "archived")


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}", hint=f"use one of {', '.join(STAGES)}")
    return stage


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON columns on PostgreSQL refuse them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    value = _utc(value)
    return value.isoformat() if value else None


def to_dict(row: RegisteredModel) -> dict[str, Any]:
    """A JSON-able view of a row."""
    return {
        "ref": row.ref,
        "integration_id": row.integration_id,
        "target": row.target,
        "target_segment": row.target_segment,
        "method": row.method,
        "param_id": row.param_id,
        "scaler_id": row.scaler_id,
        "spec_hash": row.spec_hash,
        "params": row.params,
        "metrics": row.metrics,
        "stage": row.stage,
        "tags": list(row.tags or []),
        "datasets": {d.dataset: d.lake_version for d in row.datasets},
        "data_start": _iso(row.data_start),
        "data_end": _iso(row.data_end),
        "boundary_ts": _iso(row.boundary_ts),
        "seed": row.seed,
        "code_version": row.code_version,
        "git_commit": row.git_commit,
        "lineage": row.lineage,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


def insert(settings: Settings, values: dict[str, Any], datasets: dict[str, int | None]) -> bool:
    """Add the row for `values["ref"]` unless it exists (then merge new tags); True if added.

    Safe when several processes register the same model at once: the unique `ref` lets
    one insert win and the others find it.
    """
    tags = list(values.get("tags") or [])
    for _attempt in range(3):
        try:
            with session_scope(settings.db_url) as s:
                query = sa.select(RegisteredModel).where(RegisteredModel.ref == values["ref"])
                row = s.scalar(query)
                if row is not None:
                    merged = list(dict.fromkeys([*(row.tags or []), *tags]))
                    if merged != list(row.tags or []):
                        row.tags = merged
                    return False
                row = RegisteredModel(**values)
                row.datasets = [
                    RegisteredModelDataset(dataset=name, lake_version=version)
                    for name, version in sorted(datasets.items())
                ]
                s.add(row)
                s.flush()
            return True
        except sa.exc.IntegrityError:
            continue  # another process inserted it between our select and insert
    return False


def get(settings: Settings, ref: str | Ref) -> dict[str, Any] | None:
    with session_scope(settings.db_url) as s:
        row = s.scalar(sa.select(RegisteredModel).where(RegisteredModel.ref == str(ref)))
        return to_dict(row) if row else None


def require(settings: Settings, ref: str | Ref) -> dict[str, Any]:
    """The row of `ref`, or an error suggesting the nearest registered refs."""
    found = get(settings, ref)
    if found is not None:
        return found
    known = refs(settings)
    close = difflib.get_close_matches(str(ref), known, n=3, cutoff=0.6)
    raise RegistryError(
        f"no registered model {ref}",
        hint=("did you mean " + ", ".join(close) + "?")
        if close
        else "see `tsloom models search` for the registered models",
    )


def resolve(settings: Settings, text: str) -> Ref:
    """A full ref, or a param id (or a prefix of one, at least 6 hex) of one model."""
    text = str(text).strip().strip("/")
    if "/" in text:
        return Ref.parse(text)
    if len(text) < 6 or any(c not in "0123456789abcdef" for c in text):
        raise RegistryError(
            f"{text!r} is neither a model reference nor a param id",
            hint="give <integration_id>/<target>/<method>/<param_id> or a param id prefix",
        )
    with session_scope(settings.db_url) as s:
        found = list(
            s.scalars(
                sa.select(RegisteredModel.ref).where(RegisteredModel.param_id.startswith(text))
            )
        )
    if len(found) == 1:
        return Ref.parse(found[0])
    if not found:
        raise RegistryError(f"no registered model has a param id starting {text!r}")
    raise RegistryError(
        f"param id prefix {text!r} matches {len(found)} models",
        hint="give the full reference: " + ", ".join(sorted(found)[:5]),
    )


def refs(settings: Settings) -> list[str]:
    with session_scope(settings.db_url) as s:
        return list(s.scalars(sa.select(RegisteredModel.ref).order_by(RegisteredModel.ref)))


def all_rows(settings: Settings, **where: Any) -> list[dict[str, Any]]:
    """Rows filtered by equality on the given columns (None values are ignored)."""
    query = sa.select(RegisteredModel).order_by(RegisteredModel.created_at, RegisteredModel.id)
    for column, value in where.items():
        if value is not None:
            query = query.where(getattr(RegisteredModel, column) == value)
    with session_scope(settings.db_url) as s:
        return [to_dict(r) for r in s.scalars(query)]


def set_stage(
    settings: Settings, ref: str | Ref, stage: str, *, archive_others: bool = False
) -> dict[str, Any]:
    check_stage(stage)
    require(settings, ref)
    with session_scope(settings.db_url) as s:
        row = s.scalar(sa.select(RegisteredModel).where(RegisteredModel.ref == str(ref)))
        if row is None:
            raise RegistryError(f"no registered model {ref}")
        row.stage = stage
        if archive_others and stage == "production":
            others = s.scalars(
                sa.select(RegisteredModel).where(
                    RegisteredModel.integration_id == row.integration_id,
                    RegisteredModel.target == row.target,
                    RegisteredModel.stage == "production",
                    RegisteredModel.id != row.id,
                )
            )
            for other in others:
                other.stage = "archived"
        s.flush()
        return to_dict(row)
