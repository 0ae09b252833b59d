"""AMML model specs stored as name:version.

Revision ID: 0005_model_specs
Revises: 0004_registry
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_model_specs"
down_revision = "0004_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_specs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("spec_hash", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("name", "version"),
    )


def downgrade() -> None:
    op.drop_table("model_specs")
