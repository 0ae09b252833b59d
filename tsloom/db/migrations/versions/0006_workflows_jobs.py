"""Saved AMML workflows and their runs, alerts and snapshots; background jobs of the UI.

Revision ID: 0006_workflows_jobs
Revises: 0005_model_specs
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_workflows_jobs"
down_revision = "0005_model_specs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "amml_flows",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_hash", sa.String(40), nullable=False),
        sa.Column("bytecode", sa.JSON, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_table(
        "amml_flow_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("flow_name", sa.String(64), index=True),
        sa.Column("flow_version", sa.Integer),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("rows_out", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("output", sa.Text),
        sa.Column("stats", sa.JSON),
    )
    op.create_table(
        "amml_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, index=True),
        sa.Column("flow", sa.String(128)),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("line", sa.Integer),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("event_ts", sa.DateTime(timezone=True)),
        sa.Column("payload", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "amml_snapshots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alert_id", sa.Integer, index=True),
        sa.Column("run_id", sa.Integer, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("columns", sa.JSON, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("progress", sa.JSON),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    for table in ("jobs", "amml_snapshots", "amml_alerts", "amml_flow_runs", "amml_flows"):
        op.drop_table(table)
