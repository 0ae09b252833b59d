"""Lineage of derived datasets (cleaned series): parent dataset, version and steps.

Revision ID: 0002_lineage
Revises: 0001_catalog
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_lineage"
down_revision = "0001_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_lineage",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_name", sa.String(128), nullable=False, unique=True),
        sa.Column("parent_name", sa.String(128), nullable=False),
        sa.Column("parent_version", sa.BigInteger),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("report_path", sa.Text),
        sa.Column("lake_version", sa.BigInteger),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("dataset_lineage")
