"""SQL source: incremental ingestion by a timestamp column, against real PostgreSQL and MariaDB.

The core guarantees checked here: every row of the source table reaches the lake exactly
once, across runs, polls, chunk boundaries, crashes between the lake write and the
watermark update, and rows that arrive later with a timestamp equal to the watermark.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from tsloom.catalog import Catalog
from tsloom.config import Settings
from tsloom.errors import InputDataError, InvalidNameError, SourceError
from tsloom.lake import read_dataset
from tsloom.sources import sql as sqlsrc
from tsloom.sources.sql import SqlSource, ingest_sql, poll_sql, redact_url, source_key

DATASET = "plant.readings"
T0 = datetime(2024, 1, 1, 0, 0)

# Microsecond timestamps on both servers (MySQL's DATETIME defaults to whole seconds).
TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TS_ABS = sa.DateTime(timezone=True).with_variant(mysql.TIMESTAMP(fsp=6), "mysql", "mariadb")


@pytest.fixture(params=["postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")


@pytest.fixture
def engine(db_url: str):
    eng = sa.create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def readings(engine: sa.Engine) -> sa.Table:
    """An empty `readings` table: surrogate id, sensor key, ts, two numbers and a text."""
    md = sa.MetaData()
    table = sa.Table(
        "readings",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sensor", sa.String(16), nullable=False),
        sa.Column("ts", TS),
        sa.Column("temp", sa.Float),
        sa.Column("hum", sa.Numeric(6, 2)),
        sa.Column("note", sa.String(20)),
    )
    md.create_all(engine)
    return table


def insert(engine: sa.Engine, table: sa.Table, rows: list[tuple[str, datetime, float]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"sensor": s, "ts": ts, "temp": v, "hum": v / 2, "note": f"n{i}"}
                for i, (s, ts, v) in enumerate(rows)
            ],
        )


def grid(start: datetime, n: int, sensors: str = "ab", step: float = 600) -> list:
    """`n` instants × each sensor, values unique per row."""
    return [
        (s, start + timedelta(seconds=step * i), float(100 * i + j))
        for i in range(n)
        for j, s in enumerate(sensors)
    ]


def source_rows(engine: sa.Engine, table: str = "readings") -> pl.DataFrame:
    """Distinct (sensor, ts) of the source table with the first temp, as the lake should hold."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT sensor, ts, temp FROM {table} ORDER BY id")).all()
    frame = pl.DataFrame(
        {
            "sensor": [r[0] for r in rows],
            "ts": pl.Series([r[1] for r in rows], dtype=pl.Datetime("us")),
            "temp": [float(r[2]) for r in rows],
        }
    )
    frame = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    return frame.unique(["sensor", "ts"], keep="first").sort(["sensor", "ts"])


def lake_rows(settings: Settings) -> pl.DataFrame:
    return read_dataset(DATASET, settings=settings).select("sensor", "ts", "temp")


def run(url: str, settings: Settings, **kwargs):
    kwargs.setdefault("keys", ["sensor"])
    return ingest_sql(url, "readings", dataset=DATASET, ts_column="ts", settings=settings, **kwargs)


# --------------------------------------------------------------------------- runs


def test_first_run_ingests_all_rows(db_url, engine, readings, tsloom_home):
    insert(engine, readings, grid(T0, 5))
    summary = run(db_url, tsloom_home)
    assert (summary.rows_read, summary.rows_written, summary.polls) == (10, 10, 1)
    # id is the primary key and note is text: neither is a value column by default.
    assert summary.value_columns == ("temp", "hum")
    assert summary.watermark_before is None
    assert summary.watermark == (T0 + timedelta(minutes=40)).isoformat()
    assert Catalog(tsloom_home).get_watermark(DATASET, summary.source) == summary.watermark
    lake = read_dataset(DATASET, settings=tsloom_home)
    assert lake.columns == ["ts", "sensor", "temp", "hum"]
    assert lake["ts"].dtype == pl.Datetime("us", "UTC")
    assert lake.select("sensor", "ts", "temp").equals(source_rows(engine))
    assert lake.filter(sensor="b", ts=datetime(2024, 1, 1, 0, 10, tzinfo=UTC))["hum"][0] == 50.5


def test_rerun_without_new_rows_writes_nothing_and_keeps_watermark(
    db_url, engine, readings, tsloom_home
):
    insert(engine, readings, grid(T0, 5))
    first = run(db_url, tsloom_home)
    second = run(db_url, tsloom_home)
    assert second.rows_written == 0
    assert second.watermark == second.watermark_before == first.watermark
    # Only the rows at the watermark itself are read again (inclusive bound), then dropped.
    assert second.rows_read == 2 and second.rows_already_present == 2
    assert second.lake_version == first.lake_version  # no empty commit
    assert lake_rows(tsloom_home).height == 10


def test_rows_between_runs_including_equal_timestamps_land_exactly_once(
    db_url, engine, readings, tsloom_home
):
    insert(engine, readings, grid(T0, 3))
    wm = T0 + timedelta(minutes=20)
    assert run(db_url, tsloom_home).watermark == wm.isoformat()
    insert(
        engine,
        readings,
        [
            ("c", wm, 7.0),  # same instant as the watermark, another sensor: must not be lost
            ("a", wm, 999.0),  # same key and instant as a row already ingested: not doubled
            ("a", wm + timedelta(microseconds=1), 8.0),
            ("b", wm - timedelta(minutes=5), 9.0),  # older than the watermark: out of reach
            ("c", wm + timedelta(minutes=10), 10.0),
        ],
    )
    second = run(db_url, tsloom_home)
    assert second.rows_written == 3
    assert second.watermark == (wm + timedelta(minutes=10)).isoformat()
    expected = source_rows(engine).filter(pl.col("temp") != 9.0)
    assert lake_rows(tsloom_home).equals(expected)
    assert lake_rows(tsloom_home).filter(sensor="a", ts=wm.replace(tzinfo=UTC))["temp"][0] == 200.0
    assert run(db_url, tsloom_home).rows_written == 0


def test_chunks_and_a_crash_before_the_watermark_lose_and_double_nothing(
    db_url, engine, readings, tsloom_home, monkeypatch
):
    insert(engine, readings, grid(T0, 4, sensors="abcde"))  # ties span every chunk edge
    calls = []

    def crash(self, dataset, source, value):
        calls.append(value)
        raise RuntimeError("power cut between the lake commit and the watermark")

    monkeypatch.setattr(Catalog, "set_watermark", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        run(db_url, tsloom_home, batch_size=3)
    assert lake_rows(tsloom_home).height == 3  # first chunk committed, watermark not moved
    monkeypatch.undo()
    assert len(calls) == 1
    assert Catalog(tsloom_home).get_watermark(DATASET, source_key(db_url, "readings", "ts")) is None

    summary = run(db_url, tsloom_home, batch_size=3)
    assert summary.batches == 7 and summary.rows_read == 20
    assert summary.rows_written == 17 and summary.rows_already_present == 3
    assert lake_rows(tsloom_home).equals(source_rows(engine))


def test_view_is_a_source(db_url, engine, readings, tsloom_home):
    insert(engine, readings, grid(T0, 4, sensors="abc"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE VIEW hot AS SELECT sensor, ts AS event_time, temp * 2 AS temp2 "
                "FROM readings WHERE sensor <> 'b'"
            )
        )
    summary = ingest_sql(
        db_url,
        "hot",
        dataset="plant.hot",
        ts_column="event_time",
        keys=["sensor"],
        settings=tsloom_home,
    )
    assert summary.rows_written == 8 and summary.value_columns == ("temp2",)
    lake = read_dataset("plant.hot", settings=tsloom_home)
    assert sorted(set(lake["sensor"])) == ["a", "c"]
    assert lake.filter(sensor="c", ts=datetime(2024, 1, 1, 0, 10, tzinfo=UTC))["temp2"][0] == 204.0


def test_upper_bound_holds_back_future_and_recent_rows(db_url, engine, readings, tsloom_home):
    now = datetime.now(UTC).replace(tzinfo=None)
    insert(
        engine,
        readings,
        [
            ("a", now - timedelta(hours=2), 1.0),
            ("a", now - timedelta(minutes=10), 2.0),
            ("a", now + timedelta(hours=1), 3.0),  # future-dated: must not move the watermark
        ],
    )
    held = run(db_url, tsloom_home, lag="30min")
    assert held.rows_written == 1
    assert held.watermark == (now - timedelta(hours=2)).isoformat()
    default = run(db_url, tsloom_home)  # lag 0: up to the server's clock
    assert default.rows_written == 1
    assert default.watermark == (now - timedelta(minutes=10)).isoformat()
    unbounded = run(db_url, tsloom_home, lag=None)
    assert unbounded.rows_written == 1 and lake_rows(tsloom_home).height == 3


def test_zoned_and_local_timestamp_columns(db_url, engine, tsloom_home):
    md = sa.MetaData()
    table = sa.Table(
        "events",
        md,
        sa.Column("sensor", sa.String(8)),
        sa.Column("at_abs", TS_ABS, nullable=True),
        sa.Column("at_local", TS),
        sa.Column("v", sa.Float),
    )
    md.create_all(engine)
    mysql_like = engine.dialect.name in ("mysql", "mariadb")
    with engine.begin() as conn:
        if mysql_like:
            # TIMESTAMP is read and written in the session zone: write in UTC+2.
            conn.execute(sa.text("SET time_zone = '+02:00'"))
            at_abs = datetime(2024, 6, 1, 12, 0)
        else:
            at_abs = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        conn.execute(
            table.insert(),
            [{"sensor": "a", "at_abs": at_abs, "at_local": datetime(2024, 6, 1, 12, 0), "v": 1.0}],
        )
    common = {"keys": ["sensor"], "values": ["v"], "settings": tsloom_home}
    ingest_sql(db_url, "events", dataset="plant.abs", ts_column="at_abs", **common)
    ingest_sql(
        db_url, "events", dataset="plant.local", ts_column="at_local", tz="Europe/Berlin", **common
    )
    ten_utc = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert read_dataset("plant.abs", settings=tsloom_home)["ts"].to_list() == [ten_utc]
    assert read_dataset("plant.local", settings=tsloom_home)["ts"].to_list() == [ten_utc]
    # A second sensor at the very same instant arrives later: picked up, nothing doubled.
    with engine.begin() as conn:
        if mysql_like:
            conn.execute(sa.text("SET time_zone = '+02:00'"))
        conn.execute(table.insert(), [{"sensor": "b", "at_abs": at_abs, "v": 2.0}])
    again = ingest_sql(db_url, "events", dataset="plant.abs", ts_column="at_abs", **common)
    assert again.rows_read == 2 and again.rows_written == 1
    assert read_dataset("plant.abs", settings=tsloom_home)["sensor"].to_list() == ["a", "b"]


# --------------------------------------------------------------------------- polling


def test_poll_picks_up_rows_that_arrive_between_polls(db_url, engine, readings, tsloom_home):
    insert(engine, readings, grid(T0, 2))
    wm = T0 + timedelta(minutes=10)
    arrivals = [
        [("c", wm, 1.0), ("a", wm + timedelta(minutes=10), 2.0)],  # equal ts, new sensor
        [("b", wm + timedelta(minutes=10), 3.0), ("a", wm + timedelta(minutes=10), 4.0)],
    ]
    seen = []

    def on_poll(poll):
        seen.append((poll.rows_written, poll.watermark))
        if len(seen) <= len(arrivals):
            insert(engine, readings, arrivals[len(seen) - 1])

    total = poll_sql(
        db_url,
        "readings",
        dataset=DATASET,
        ts_column="ts",
        keys=["sensor"],
        every=0.01,
        max_polls=4,
        on_poll=on_poll,
        settings=tsloom_home,
    )
    last = (wm + timedelta(minutes=10)).isoformat()
    assert seen == [(4, wm.isoformat()), (2, last), (1, last), (0, last)]
    assert (total.polls, total.rows_written, total.errors) == (4, 7, 0)
    assert total.watermark_before is None and total.watermark == last
    assert lake_rows(tsloom_home).equals(source_rows(engine))


def test_poll_stops_when_the_stop_event_is_set(pg_url, tsloom_home):
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE r (sensor text, ts timestamp, v float8)"))
        conn.execute(sa.text("INSERT INTO r VALUES ('a', '2024-01-01', 1.0)"))
    eng.dispose()
    stop, polled, result = threading.Event(), threading.Event(), {}

    def target():
        result["summary"] = poll_sql(
            pg_url,
            "r",
            dataset=DATASET,
            ts_column="ts",
            every="1h",
            stop=stop,
            on_poll=lambda _: polled.set(),
            settings=tsloom_home,
        )

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    assert polled.wait(20)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert result["summary"].polls == 1 and result["summary"].rows_written == 1


def test_poll_retries_after_a_lost_connection(pg_url, tsloom_home, monkeypatch):
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE r (sensor text, ts timestamp, v float8)"))
        conn.execute(sa.text("INSERT INTO r VALUES ('a', '2024-01-01', 1.0)"))
    eng.dispose()
    real_plan, calls = SqlSource.plan, []

    def flaky_plan(self):
        calls.append(1)
        if len(calls) == 2:
            raise SourceError("reading from server failed: connection reset")
        return real_plan(self)

    monkeypatch.setattr(SqlSource, "plan", flaky_plan)
    total = poll_sql(
        pg_url,
        "r",
        dataset=DATASET,
        ts_column="ts",
        every=0.01,
        max_polls=3,
        settings=tsloom_home,
    )
    assert (total.polls, total.errors, total.rows_written) == (3, 1, 1)
    assert "connection reset" in total.last_error


# --------------------------------------------------------------------------- errors


def test_unknown_table_suggests_the_nearest(db_url, readings, tsloom_home):
    with pytest.raises(InputDataError, match="'reading' not found") as err:
        ingest_sql(db_url, "reading", dataset=DATASET, ts_column="ts", settings=tsloom_home)
    assert "readings" in err.value.hint
    assert Catalog(tsloom_home).names() == []


def test_unknown_and_non_timestamp_columns_are_explained(db_url, readings, tsloom_home):
    with pytest.raises(InputDataError, match="timestamp column 'tstamp' not found") as err:
        ingest_sql(db_url, "readings", dataset=DATASET, ts_column="tstamp", settings=tsloom_home)
    assert "id, sensor, ts, temp, hum, note" in err.value.hint
    with pytest.raises(InputDataError, match=r"'temp' .* not a timestamp") as err:
        ingest_sql(db_url, "readings", dataset=DATASET, ts_column="temp", settings=tsloom_home)
    assert "timestamp columns here: ts" in err.value.hint
    with pytest.raises(InputDataError, match="key column 'sensr' not found") as err:
        run(db_url, tsloom_home, keys=["sensr"])
    assert "did you mean 'sensor'" in err.value.hint
    with pytest.raises(InputDataError, match="value column 'temperature' not found"):
        run(db_url, tsloom_home, values=["temperature"])
    assert Catalog(tsloom_home).names() == []


@pytest.mark.parametrize(
    "url", ["postgresql://postgres:secret@127.0.0.1:1/test", "mysql://root:secret@127.0.0.1:1/test"]
)
def test_unreachable_server_is_a_source_error_without_the_password(url, tsloom_home):
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:1/") as err:
        ingest_sql(url, "readings", dataset=DATASET, ts_column="ts", settings=tsloom_home)
    assert "secret" not in str(err.value)
    assert "server is up" in err.value.hint


def test_bad_arguments_fail_before_connecting(tsloom_home):
    url = "postgresql://postgres@127.0.0.1:1/test"
    with pytest.raises(InvalidNameError):
        ingest_sql(url, "t", dataset="Not A Name", ts_column="ts", settings=tsloom_home)
    with pytest.raises(SourceError, match="cannot be parsed"):
        ingest_sql("not a url", "t", dataset=DATASET, ts_column="ts", settings=tsloom_home)
    with pytest.raises(InputDataError, match="unknown time zone"):
        ingest_sql(url, "t", dataset=DATASET, ts_column="ts", tz="Mars/Base", settings=tsloom_home)
    with pytest.raises(InputDataError, match="poll interval"):
        poll_sql(url, "t", dataset=DATASET, ts_column="ts", every="soon", settings=tsloom_home)


def test_source_key_names_server_table_and_column_but_no_password():
    key = source_key("postgresql+psycopg://u:pw@db.example:5432/plant?sslmode=require", "s.t", "at")
    assert key == "sql:postgresql://u@db.example:5432/plant?table=s.t&ts=at"
    # The driver does not matter: switching drivers keeps the watermark.
    assert key == source_key("postgresql://u:other@db.example:5432/plant", "s.t", "at")
    assert source_key("mysql://root@h/db", "t", "ts") == "sql:mysql://root@h/db?table=t&ts=ts"
    assert redact_url("mysql://root:pw@127.0.0.1/x") == "mysql+pymysql://root@127.0.0.1/x"
    assert len(source_key("postgresql://u@h/db", "t" * 600, "ts")) <= 512
    assert sqlsrc.SqlIngestSummary("d.s", "k").rows_already_present == 0
