"""Integration specs kept in the metadata database under their integration id, so a
model's integration can be looked up (and re-run) from its id alone."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

from tsloom.config import Settings, load_settings
from tsloom.db.engine import session_scope
from tsloom.db.models import IntegrationRecord
from tsloom.integrate.align import Integrated


def save_integration(integrated: Integrated, settings: Settings | None = None) -> str:
    """Record the spec (idempotent: the same spec under the same id is stored once);
    returns the spec hash."""
    settings = settings or load_settings()
    spec = integrated.spec
    spec_hash = spec.spec_hash()
    # Another process may store the same spec first; then there is nothing to do.
    with contextlib.suppress(sa.exc.IntegrityError):
        _insert(integrated, spec_hash, settings)
    return spec_hash


def _insert(integrated: Integrated, spec_hash: str, settings: Settings) -> None:
    spec = integrated.spec
    with session_scope(settings.db_url) as s:
        found = s.scalar(
            sa.select(IntegrationRecord.id).where(
                IntegrationRecord.integration_id == integrated.id,
                IntegrationRecord.spec_hash == spec_hash,
            )
        )
        if found is None:
            s.add(
                IntegrationRecord(
                    integration_id=integrated.id,
                    spec_hash=spec_hash,
                    tables=list(spec.tables),
                    spec=spec.canonical(),
                    features=list(integrated.features),
                )
            )


def integration_specs(integration_id: str, settings: Settings | None = None) -> list[dict]:
    """Every spec stored under `integration_id`, oldest first."""
    settings = settings or load_settings()
    with session_scope(settings.db_url) as s:
        rows = s.scalars(
            sa.select(IntegrationRecord)
            .where(IntegrationRecord.integration_id == integration_id)
            .order_by(IntegrationRecord.id)
        )
        return [
            {"spec_hash": r.spec_hash, "tables": r.tables, "spec": r.spec, "features": r.features}
            for r in rows
        ]
