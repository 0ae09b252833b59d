"""The catalog on every supported metadata database: SQLite, PostgreSQL and MariaDB."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tsloom.catalog import Catalog, ColumnInfo
from tsloom.config import Settings
from tsloom.db.engine import dispose_engines, get_engine
from tsloom.errors import UnknownDatasetError


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def catalog(request, tsloom_home: Settings) -> Catalog:
    if request.param == "sqlite":
        url = tsloom_home.db_url
    else:
        url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")
    settings = replace(tsloom_home, db_url=url)
    yield Catalog(settings)
    dispose_engines()


def _write(catalog: Catalog, name: str = "airq.gwangju", rows: int = 10) -> None:
    catalog.record_write(
        name,
        ts_column="event_time",
        keys=["ss_id"],
        columns=[
            ColumnInfo("ss_id", "key", "int64", None, False),
            ColumnInfo("co2", "value", "float64", "ppm", True),
        ],
        lake_uri=f"/lake/{name.replace('.', '/')}",
        row_count=rows,
        ts_min=datetime(2022, 11, 22, tzinfo=UTC),
        ts_max=datetime(2022, 11, 23, 12, 30, tzinfo=UTC),
        lake_version=0,
        origin="test",
        rows_in=rows,
        rows_written=rows,
    )


def test_migrations_reach_head(catalog: Catalog) -> None:
    engine = get_engine(catalog.url)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"datasets", "dataset_columns", "ingestion_watermarks", "ingestion_runs"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar()


def test_record_and_read_back(catalog: Catalog) -> None:
    _write(catalog)
    info = catalog.get("airq.gwangju")
    assert info.keys == ("ss_id",)
    assert info.value_columns == ("co2",)
    assert info.columns[1].unit == "ppm"
    assert info.row_count == 10
    assert info.ts_min == datetime(2022, 11, 22, tzinfo=UTC)
    assert info.ts_max == datetime(2022, 11, 23, 12, 30, tzinfo=UTC)
    _write(catalog, rows=25)
    info = catalog.get("airq.gwangju")
    assert info.row_count == 25
    assert len(info.columns) == 2
    assert [r.rows_written for r in catalog.runs("airq.gwangju")] == [25, 10]
    assert [i.name for i in catalog.list()] == ["airq.gwangju"]


def test_unknown_dataset_suggests_nearest(catalog: Catalog) -> None:
    _write(catalog)
    with pytest.raises(UnknownDatasetError) as err:
        catalog.get("airq.gwanju")
    assert "airq.gwangju" in (err.value.hint or "")


def test_watermarks_are_per_dataset_and_source(catalog: Catalog) -> None:
    assert catalog.get_watermark("airq.gwangju", "sql:a") is None
    catalog.set_watermark("airq.gwangju", "sql:a", "2022-11-22T00:00:00+00:00")
    catalog.set_watermark("airq.gwangju", "sql:a", "2022-11-23T00:00:00+00:00")
    catalog.set_watermark("airq.gwangju", "sql:b", "x")
    assert catalog.get_watermark("airq.gwangju", "sql:a") == "2022-11-23T00:00:00+00:00"
    assert dict(catalog.watermarks("airq.gwangju")) == {
        "sql:a": "2022-11-23T00:00:00+00:00",
        "sql:b": "x",
    }


def test_schema_head_constant_matches_alembic() -> None:
    from tsloom.db.engine import SCHEMA_HEAD, _head_revision

    assert _head_revision() == SCHEMA_HEAD


def test_migrations_build_exactly_the_models(tsloom_home) -> None:
    """The ORM models and the migrations describe the same tables and columns."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from tsloom.db.engine import get_engine
    from tsloom.db.models import Base

    with get_engine(tsloom_home.db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    structural = [
        d for d in diff if d[0] in ("add_table", "remove_table", "add_column", "remove_column")
    ]
    assert structural == []


def test_lineage_is_recorded_and_replaced(catalog: Catalog) -> None:
    assert catalog.lineage("airq.gwangju_clean") is None
    steps = [{"step": "dedup", "policy": "first"}, {"step": "impute", "method": "time"}]
    catalog.set_lineage(
        "airq.gwangju_clean",
        parent="airq.gwangju",
        parent_version=3,
        steps=steps,
        report_path="/r.json",
        lake_version=0,
    )
    catalog.set_lineage(
        "airq.gwangju_clean",
        parent="airq.gwangju",
        parent_version=4,
        steps=steps[:1],
        report_path="/r2.json",
        lake_version=1,
    )
    info = catalog.lineage("airq.gwangju_clean")
    assert (info.parent, info.parent_version, info.lake_version) == ("airq.gwangju", 4, 1)
    assert info.steps == steps[:1]
