"""Model specs in the metadata database under `name:version`: added once, never changed,
so a workflow that names `ett:0.1` always builds the same network."""

from __future__ import annotations

import difflib

import sqlalchemy as sa

from tsloom.amml.model_spec import ModelSpec, parse_model_spec
from tsloom.config import Settings, load_settings
from tsloom.db.engine import session_scope
from tsloom.db.models import ModelSpecRecord
from tsloom.errors import TsloomError


def add_model_spec(
    text: str, *, where: str = "model spec", settings: Settings | None = None
) -> tuple[ModelSpec, bool]:
    """Store a spec; (spec, whether it was new). The same spec again is a no-op; a
    different spec under a stored `name:version` is refused."""
    settings = settings or load_settings()
    spec = parse_model_spec(text, where=where)
    with session_scope(settings.db_url) as s:
        row = s.scalar(
            sa.select(ModelSpecRecord).where(
                ModelSpecRecord.name == spec.name, ModelSpecRecord.version == spec.version
            )
        )
        if row is not None:
            if row.spec_hash == spec.spec_hash:
                return spec, False
            raise TsloomError(
                f"model spec {spec.ref} already exists with different contents",
                hint="give the changed spec a new version; stored versions never change",
            )
        s.add(
            ModelSpecRecord(
                name=spec.name,
                version=spec.version,
                source=text,
                spec=spec.model_dump(mode="json"),
                spec_hash=spec.spec_hash,
            )
        )
    return spec, True


def get_model_spec(ref: str, *, settings: Settings | None = None) -> ModelSpec:
    """`name:version`, or `name` for its newest version."""
    settings = settings or load_settings()
    name, _, version = ref.partition(":")
    with session_scope(settings.db_url) as s:
        query = sa.select(ModelSpecRecord).where(ModelSpecRecord.name == name)
        if version:
            query = query.where(ModelSpecRecord.version == version)
        row = s.scalar(query.order_by(ModelSpecRecord.id.desc()).limit(1))
        if row is None:
            known = [
                f"{n}:{v}"
                for n, v in s.execute(sa.select(ModelSpecRecord.name, ModelSpecRecord.version))
            ]
            close = difflib.get_close_matches(ref, known, n=3, cutoff=0.5)
            raise TsloomError(
                f"no model spec {ref!r}",
                hint=f"did you mean {', '.join(close)}?"
                if close
                else "add one with `tsloom model-spec add FILE.yaml`",
            )
        return ModelSpec.model_validate(row.spec)


def list_model_specs(*, settings: Settings | None = None) -> list[dict]:
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        rows = s.scalars(
            sa.select(ModelSpecRecord).order_by(ModelSpecRecord.name, ModelSpecRecord.id)
        )
        return [
            {
                "ref": f"{r.name}:{r.version}",
                "layers": len(r.spec["layers"]),
                "outputs": r.spec["layers"][-1]["units"],
                "spec_hash": r.spec_hash,
            }
            for r in rows
        ]
