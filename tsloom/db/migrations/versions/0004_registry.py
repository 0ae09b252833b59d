"""Model registry metadata: registered models and the datasets (lake versions) they used.

Revision ID: 0004_registry
Revises: 0003_integrations
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_registry"
down_revision = "0003_integrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ref", sa.String(255), nullable=False, unique=True),
        sa.Column("integration_id", sa.String(40), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("target_segment", sa.String(128), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("param_id", sa.String(40), nullable=False),
        sa.Column("scaler_id", sa.String(40), nullable=False),
        sa.Column("spec_hash", sa.String(40), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False, server_default="staged"),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("lineage", sa.JSON, nullable=False),
        sa.Column("data_start", sa.DateTime(timezone=True)),
        sa.Column("data_end", sa.DateTime(timezone=True)),
        sa.Column("boundary_ts", sa.DateTime(timezone=True)),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("git_commit", sa.String(40)),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_registered_models_integration_id", "registered_models", ["integration_id"])
    op.create_index("ix_registered_models_param_id", "registered_models", ["param_id"])
    op.create_table(
        "registered_model_datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "model_id",
            sa.Integer,
            sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("lake_version", sa.BigInteger),
        sa.UniqueConstraint("model_id", "dataset"),
    )
    op.create_index(
        "ix_registered_model_datasets_dataset", "registered_model_datasets", ["dataset"]
    )


def downgrade() -> None:
    op.drop_index("ix_registered_model_datasets_dataset", "registered_model_datasets")
    op.drop_table("registered_model_datasets")
    op.drop_index("ix_registered_models_param_id", "registered_models")
    op.drop_index("ix_registered_models_integration_id", "registered_models")
    op.drop_table("registered_models")
