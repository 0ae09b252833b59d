"""SQLAlchemy 2 models of the metadata database.

Schema changes go through Alembic migrations in `tsloom/db/migrations/versions/`;
never rely on `create_all` outside tests of the migrations themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The metadata every tsloom table registers with (Alembic compares against it)."""


class Dataset(Base):
    """One lake table: its name, schema summary, extent and lake version."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    database: Mapped[str] = mapped_column(String(64), nullable=False)
    table: Mapped[str] = mapped_column("table_name", String(64), nullable=False)
    ts_column: Mapped[str] = mapped_column(String(128), nullable=False)
    key_columns: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    row_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    ts_min: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ts_max: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lake_version: Mapped[int | None] = mapped_column(BigInteger)
    lake_uri: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    columns: Mapped[list[DatasetColumn]] = relationship(
        back_populates="dataset",
        cascade="all, delete-orphan",
        order_by="DatasetColumn.position",
        lazy="selectin",
    )


class DatasetColumn(Base):
    """A key or value column of a dataset, with its type and unit."""

    __tablename__ = "dataset_columns"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # "key" or "value"
    dtype: Mapped[str] = mapped_column(String(64), nullable=False)
    unit: Mapped[str | None] = mapped_column(String(64))
    nullable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)

    dataset: Mapped[Dataset] = relationship(back_populates="columns")


class IngestionWatermark(Base):
    """The high-water mark of an incremental source (e.g. a SQL table's timestamp)."""

    __tablename__ = "ingestion_watermarks"
    __table_args__ = (UniqueConstraint("dataset_name", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_name: Mapped[str] = mapped_column(String(128), nullable=False)
    source: Mapped[str] = mapped_column(String(512), nullable=False)
    value: Mapped[str] = mapped_column(String(64), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class IngestionRun(Base):
    """One ingestion into a dataset: where from, how many rows, which lake version it made."""

    __tablename__ = "ingestion_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_name: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    origin: Mapped[str] = mapped_column(Text, nullable=False)
    rows_in: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rows_written: Mapped[int] = mapped_column(BigInteger, nullable=False)
    lake_version: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetLineage(Base):
    """How a derived dataset was made: from which dataset and lake version, by which steps."""

    __tablename__ = "dataset_lineage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    parent_name: Mapped[str] = mapped_column(String(128), nullable=False)
    parent_version: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    report_path: Mapped[str | None] = mapped_column(Text)
    lake_version: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IntegrationRecord(Base):
    """An integration spec under its integration id; one id can carry several specs
    (other frequencies, ranges or aggregations), told apart by the spec's hash."""

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("integration_id", "spec_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    spec_hash: Mapped[str] = mapped_column(String(40), nullable=False)
    tables: Mapped[list] = mapped_column(JSON, nullable=False)
    spec: Mapped[dict] = mapped_column(JSON, nullable=False)
    features: Mapped[list] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegisteredModel(Base):
    """A model in the registry: where its files are (`ref`), what it is (ids, parameters,
    metrics), its stage and tags, and its lineage (datasets and lake versions, the
    integration spec, the training time range, code version, seed)."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    integration_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    target: Mapped[str] = mapped_column(Text, nullable=False)
    target_segment: Mapped[str] = mapped_column(String(128), nullable=False)
    method: Mapped[str] = mapped_column(String(32), nullable=False)
    param_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    scaler_id: Mapped[str] = mapped_column(String(40), nullable=False)
    spec_hash: Mapped[str] = mapped_column(String(40), nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False)
    metrics: Mapped[dict] = mapped_column(JSON, nullable=False)
    stage: Mapped[str] = mapped_column(String(16), nullable=False, default="staged")
    tags: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    lineage: Mapped[dict] = mapped_column(JSON, nullable=False)
    data_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    boundary_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    code_version: Mapped[str] = mapped_column(String(64), nullable=False)
    git_commit: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    datasets: Mapped[list[RegisteredModelDataset]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        order_by="RegisteredModelDataset.dataset",
        lazy="selectin",
    )


class RegisteredModelDataset(Base):
    """One dataset a registered model was trained from, at the lake version it read."""

    __tablename__ = "registered_model_datasets"
    __table_args__ = (UniqueConstraint("model_id", "dataset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )
    dataset: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    lake_version: Mapped[int | None] = mapped_column(BigInteger)

    model: Mapped[RegisteredModel] = relationship(back_populates="datasets")


class ModelSpecRecord(Base):
    """A model spec (AMML's model language) stored as `name:version`, never overwritten."""

    __tablename__ = "model_specs"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    spec: Mapped[dict] = mapped_column(JSON, nullable=False)
    spec_hash: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FlowRecord(Base):
    """A saved AMML workflow: `name` at an integer `version`, with its source and bytecode;
    saving changed source makes the next version, stored versions never change."""

    __tablename__ = "amml_flows"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    source_hash: Mapped[str] = mapped_column(String(40), nullable=False)
    bytecode: Mapped[dict] = mapped_column(JSON, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FlowRun(Base):
    """One run of a workflow (saved or ad hoc): status running/finished/failed/stopped,
    what it printed (tail), the error, and per-component statistics."""

    __tablename__ = "amml_flow_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flow_name: Mapped[str | None] = mapped_column(String(64), index=True)
    flow_version: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rows_out: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    stats: Mapped[dict | None] = mapped_column(JSON)


class FlowAlert(Base):
    """An alert event an AMML `alert` component stored (e.g. from `surveillance`)."""

    __tablename__ = "amml_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    flow: Mapped[str | None] = mapped_column(String(128))
    component: Mapped[str] = mapped_column(String(64), nullable=False)
    line: Mapped[int | None] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    event_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FlowSnapshot(Base):
    """The rows a `snapshot` component held when an alert reached it (column → values)."""

    __tablename__ = "amml_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(Integer, index=True)
    run_id: Mapped[int | None] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    row_count: Mapped[int] = mapped_column(Integer, nullable=False)
    columns: Mapped[list] = mapped_column(JSON, nullable=False)
    data: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """A background job (e.g. training from the web UI): queued/running/finished/failed,
    its parameters, per-epoch progress and result. Running jobs found at start-up are
    marked failed — a restart never leaves one stuck running."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False)
    progress: Mapped[list | None] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
