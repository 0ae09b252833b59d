"""Dataset catalog, columns, ingestion watermarks and runs.

Revision ID: 0001_catalog
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_catalog"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("database", sa.String(64), nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("ts_column", sa.String(128), nullable=False),
        sa.Column("key_columns", sa.JSON, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("ts_min", sa.DateTime(timezone=True)),
        sa.Column("ts_max", sa.DateTime(timezone=True)),
        sa.Column("lake_version", sa.BigInteger),
        sa.Column("lake_uri", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "dataset_columns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "dataset_id",
            sa.Integer,
            sa.ForeignKey("datasets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("dtype", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(64)),
        sa.Column("nullable", sa.Boolean, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.UniqueConstraint("dataset_id", "name"),
    )
    op.create_table(
        "ingestion_watermarks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_name", sa.String(128), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("dataset_name", "source"),
    )
    op.create_table(
        "ingestion_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_name", sa.String(128), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("rows_in", sa.BigInteger, nullable=False),
        sa.Column("rows_written", sa.BigInteger, nullable=False),
        sa.Column("lake_version", sa.BigInteger),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_ingestion_runs_dataset_name", "ingestion_runs", ["dataset_name"])


def downgrade() -> None:
    op.drop_index("ix_ingestion_runs_dataset_name", "ingestion_runs")
    op.drop_table("ingestion_runs")
    op.drop_table("ingestion_watermarks")
    op.drop_table("dataset_columns")
    op.drop_table("datasets")
