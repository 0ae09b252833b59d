"""Integration specs stored with their integration id.

Revision ID: 0003_integrations
Revises: 0002_lineage
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_integrations"
down_revision = "0002_lineage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("integration_id", sa.String(40), nullable=False),
        sa.Column("spec_hash", sa.String(40), nullable=False),
        sa.Column("tables", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("integration_id", "spec_hash"),
    )
    op.create_index("ix_integrations_integration_id", "integrations", ["integration_id"])


def downgrade() -> None:
    op.drop_index("ix_integrations_integration_id", "integrations")
    op.drop_table("integrations")
