"""SQL database source: incremental ingestion by a timestamp column.

Works like a JDBC source connector in `timestamp` mode, for PostgreSQL and
MySQL/MariaDB tables or views (any SQLAlchemy dialect whose driver is installed may
work, but only those two are tested)::

    SELECT ts, keys…, values… FROM table
    WHERE ts >= :watermark AND ts < :db_now_minus_lag
    ORDER BY ts

streamed in chunks of `batch_size` rows (a server-side cursor, so a large table never
sits in memory). Each chunk is appended to the lake with `ingest_frame`, and only
*after* that append has committed is the high-water mark in the catalog moved to the
chunk's largest timestamp. A crash between the two therefore only re-reads rows.

Why nothing is lost and nothing is doubled:

* The lower bound is inclusive (`ts >= watermark`). Rows that arrive later with a
  timestamp *equal* to the watermark (another sensor reporting the same instant) are
  still picked up. The rows already ingested at that instant are read again, and the
  lake's idempotent append (rows are identified by key columns + ts) drops them.
* The watermark only ever moves forward, and only to a timestamp that was really read.

What timestamp mode cannot see (this is inherent, not a tsloom limitation):

* Updates of a row that keep its key and timestamp (the lake keeps the first version).
* Rows committed *late* with a timestamp older than the watermark, e.g. by a
  transaction that stamped `ts = now()` at its start but committed after a poll had
  already read younger rows. The upper bound `ts < db_now - lag` is the remedy: rows
  younger than `lag` are left for a later poll, so any transaction shorter than `lag`
  is safe. The price is latency: data reaches the lake at least `lag` late. The default
  `lag=0` still bounds the read by the database's clock, so a future-dated row cannot
  push the watermark ahead of real time; `lag=None` removes the upper bound entirely.

Time zones: `timestamptz` (PostgreSQL) and `TIMESTAMP` (MySQL/MariaDB, read in a UTC
session) are absolute instants. Naive columns (PostgreSQL `timestamp`, MySQL
`DATETIME`) are wall-clock values in `tz` (default UTC); `tz` also places "now" on that
wall clock for the upper bound. A `DATE` column works at day resolution.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from hashlib import sha1
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import sqlalchemy as sa

from tsloom.catalog import Catalog
from tsloom.config import Settings
from tsloom.errors import InputDataError, SourceError, TsloomError
from tsloom.ingest import ingest_frame
from tsloom.names import validate_dataset_name
from tsloom.timeutil import parse_duration

log = logging.getLogger(__name__)

_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_MAX_SOURCE_KEY = 512  # IngestionWatermark.source column length
_CONNECT_TIMEOUT_S = 10


@dataclass
class SqlIngestSummary:
    """What one run (or a whole polling session) of the SQL source did."""

    dataset: str
    source: str
    rows_read: int = 0
    rows_written: int = 0
    duplicates_dropped: int = 0
    batches: int = 0
    polls: int = 0
    errors: int = 0
    watermark_before: str | None = None
    watermark: str | None = None
    lake_version: int | None = None
    value_columns: tuple[str, ...] = ()
    interrupted: bool = False
    last_error: str | None = field(default=None, repr=False)

    @property
    def rows_already_present(self) -> int:
        """Rows read that the lake already held (re-read at the boundary, or re-runs)."""
        return self.rows_read - self.duplicates_dropped - self.rows_written


# --------------------------------------------------------------------------- URLs and keys


def _parse_url(url: str | sa.URL) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise SourceError(
            f"database URL {url!r} cannot be parsed",
            hint="use e.g. postgresql://user@host:5432/db or mysql://user@host:3306/db",
        ) from exc
    driver = _DEFAULT_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def redact_url(url: str | sa.URL) -> str:
    """`url` without its password and query, as it may be shown and stored."""
    return _public_url(_parse_url(url)).render_as_string(hide_password=False)


def _public_url(parsed: sa.URL, drivername: str | None = None) -> sa.URL:
    return sa.URL.create(
        drivername or parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )


def source_key(url: str | sa.URL, table: str, ts_column: str) -> str:
    """The catalog key of a watermark: server + database (no password) + table + ts column.

    The driver is left out (`postgresql+psycopg` and `postgresql+psycopg2` read the same
    rows), so switching drivers keeps the watermark.
    """
    parsed = _parse_url(url)
    base = _public_url(parsed, parsed.get_backend_name()).render_as_string(hide_password=False)
    key = f"sql:{base}?table={table}&ts={ts_column}"
    if len(key) > _MAX_SOURCE_KEY:
        digest = sha1(key.encode()).hexdigest()
        key = f"{key[: _MAX_SOURCE_KEY - 42]}#{digest}"
    return key


def _duration(value: timedelta | float | str, what: str) -> timedelta:
    try:
        return parse_duration(value)
    except TsloomError as exc:
        raise InputDataError(f"{what}: {exc.message}", hint=exc.hint) from exc


# --------------------------------------------------------------------------- the reader


@dataclass(frozen=True)
class _Plan:
    """A reflected table and what to read from it."""

    table: sa.Table
    ts_kind: str  # "aware", "utc" (naive UTC), "naive" (wall clock in tz), "date"
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    values: tuple[str, ...]
    dtypes: Mapping[str, Any]


def _numeric(type_: sa.types.TypeEngine) -> bool:
    return isinstance(type_, sa.Integer | sa.Numeric | sa.Float) and not isinstance(
        type_, sa.Boolean
    )


def _polars_dtype(type_: sa.types.TypeEngine) -> Any:
    if isinstance(type_, sa.Boolean):
        return pl.Boolean
    if isinstance(type_, sa.Integer):
        return pl.Int64
    if isinstance(type_, sa.Numeric | sa.Float):
        return pl.Float64
    if isinstance(type_, sa.String | sa.Enum):
        return pl.String
    return None


class SqlSource:
    """A table or view on a SQL server, read incrementally by `ts_column`.

    Holds one engine, so a polling loop reuses its connections. Use as a context
    manager or call `close()`.
    """

    def __init__(
        self,
        url: str | sa.URL,
        table: str,
        *,
        ts_column: str,
        keys: Sequence[str] = (),
        values: Sequence[str] | None = None,
        tz: str | None = None,
        batch_size: int = 50_000,
        lag: timedelta | float | str | None = timedelta(0),
        connect_timeout: float = _CONNECT_TIMEOUT_S,
    ) -> None:
        if batch_size < 1:
            raise InputDataError(f"batch_size must be at least 1, got {batch_size}")
        lag = None if lag is None else _duration(lag, "lag")
        if lag is not None and lag < timedelta(0):
            raise InputDataError(f"lag must not be negative, got {lag}")
        if tz is not None:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise InputDataError(
                    f"unknown time zone {tz!r}", hint="use an IANA name such as 'Europe/Berlin'"
                ) from exc
        self.url = _parse_url(url)
        self.display_url = redact_url(self.url)
        self.table_name = table
        self.ts_column = ts_column
        self.keys = tuple(keys)
        self.values = None if values is None else tuple(values)
        self.tz = tz
        self.batch_size = batch_size
        self.lag = lag
        self.source = source_key(self.url, table, ts_column)
        self.engine = self._create_engine(connect_timeout)

    # -- connection ------------------------------------------------------------------------

    def _create_engine(self, connect_timeout: float) -> sa.Engine:
        backend = self.url.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend in ("postgresql", "mysql", "mariadb"):
            connect_args["connect_timeout"] = int(connect_timeout)
        try:
            engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
            extra = _DRIVER_EXTRAS.get(backend)
            raise SourceError(
                f"no database driver for {self.display_url}: {exc}",
                hint=(
                    f"install it with `pip install 'tsloom[{extra}]'`"
                    if extra
                    else "install the SQLAlchemy driver named in the URL"
                ),
            ) from exc
        if backend in ("mysql", "mariadb"):
            # TIMESTAMP columns are converted to the session time zone; make it UTC so
            # they come out as UTC instants, and comparisons with them agree.
            sa.event.listen(engine, "connect", _mysql_utc_session)
        return engine

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> SqlSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _source_error(self, exc: sa.exc.DBAPIError, doing: str) -> SourceError:
        orig = getattr(exc, "orig", None) or exc
        message = str(orig).strip().splitlines()[0] if str(orig).strip() else repr(orig)
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            hint = "check host, port, database name and credentials, and that the server is up"
        else:
            hint = "check the table and column names and your privileges on them"
        return SourceError(f"{doing} {self.display_url} failed: {message}", hint=hint)

    # -- reflection ------------------------------------------------------------------------

    def plan(self) -> _Plan:
        """Reflect the table or view and check the ts, key and value columns."""
        schema, _, name = self.table_name.rpartition(".")
        schema = schema or None
        try:
            with self.engine.connect() as conn:
                try:
                    table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
                except sa.exc.NoSuchTableError:
                    raise self._unknown_table(conn, schema, name) from None
        except sa.exc.DBAPIError as exc:
            raise self._source_error(exc, "reading the schema of") from exc
        where = f"{self.display_url} table {self.table_name}"
        names = [c.name for c in table.columns]
        ts_col = self._column(table, self.ts_column, "timestamp column", where)
        ts_kind = self._ts_kind(ts_col, table, where)
        keys = tuple(self._column(table, k, "key column", where).name for k in self.keys)
        if self.values is not None:
            values = tuple(self._column(table, v, "value column", where).name for v in self.values)
        else:
            pk = {c.name for c in table.primary_key.columns}
            skip = {ts_col.name, *keys, *pk}
            values = tuple(c.name for c in table.columns if c.name not in skip and _numeric(c.type))
            if not values:
                raise InputDataError(
                    f"{where} has no numeric value columns besides the timestamp and keys",
                    hint=f"name them with values=[…]; its columns are {', '.join(names)}",
                )
        columns = tuple(dict.fromkeys((ts_col.name, *keys, *values)))
        dtypes = {c: _polars_dtype(table.c[c].type) for c in columns if c != ts_col.name}
        return _Plan(table, ts_kind, columns, keys, values, dtypes)

    def _unknown_table(self, conn: sa.Connection, schema: str | None, name: str) -> TsloomError:
        where = f"schema {schema}" if schema else "the default schema"
        try:
            insp = sa.inspect(conn)
            known = sorted(
                set(insp.get_table_names(schema=schema)) | set(insp.get_view_names(schema=schema))
            )
        except sa.exc.SQLAlchemyError:
            known = []
        prefix = f"{schema}." if schema else ""
        lowered = {k.lower(): k for k in known}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3)]
        if close:
            hint = "did you mean " + " or ".join(repr(prefix + c) for c in close) + "?"
        elif known:
            shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
            hint = f"tables and views in {where}: {shown}"
        else:
            hint = f"{where} has no tables or views; check the database name in the URL"
        return InputDataError(
            f"table or view {self.table_name!r} not found in {self.display_url}", hint=hint
        )

    @staticmethod
    def _column(table: sa.Table, name: str, role: str, where: str) -> sa.Column:
        if name in table.c:
            return table.c[name]
        names = [c.name for c in table.columns]
        lowered = {n.lower(): n for n in names}
        if name.lower() in lowered:
            return table.c[lowered[name.lower()]]
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=1)]
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputDataError(
            f"{role} {name!r} not found in {where}",
            hint=f"{hint}its columns are {', '.join(names)}",
        )

    def _ts_kind(self, col: sa.Column, table: sa.Table, where: str) -> str:
        type_ = col.type
        if isinstance(type_, sa.DateTime):
            if getattr(type_, "timezone", False):
                return "aware"
            backend = self.url.get_backend_name()
            if backend in ("mysql", "mariadb") and type(type_).__name__ == "TIMESTAMP":
                return "utc"
            return "naive"
        if isinstance(type_, sa.Date):
            return "date"
        candidates = [c.name for c in table.columns if isinstance(c.type, sa.DateTime | sa.Date)]
        hint = "incremental reads need a DATE, TIMESTAMP or DATETIME column; "
        hint += (
            f"timestamp columns here: {', '.join(candidates)}"
            if candidates
            else "create a view that casts it, e.g. CAST(col AS TIMESTAMP) AS ts"
        )
        raise InputDataError(
            f"column {col.name!r} of {where} is {type_}, not a timestamp", hint=hint
        )

    # -- bounds ----------------------------------------------------------------------------

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz or "UTC")

    def parse_watermark(self, value: str | None, kind: str) -> datetime | date | None:
        """A stored watermark as a bound parameter matching the column's kind."""
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise SourceError(
                f"stored watermark {value!r} for {self.source} is not an ISO timestamp",
                hint="reset it in the catalog (it is rewritten on the next successful run)",
            ) from exc
        return self._as_kind(parsed, kind)

    def _as_kind(self, moment: datetime, kind: str) -> datetime | date:
        if kind == "aware":
            return moment if moment.tzinfo else moment.replace(tzinfo=self._zone())
        if kind == "utc":
            return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
        local = moment.astimezone(self._zone()).replace(tzinfo=None) if moment.tzinfo else moment
        return local.date() if kind == "date" else local

    def db_now(self, conn: sa.Connection) -> datetime:
        """The database server's current time (UTC, aware); the local clock if unknown."""
        backend = self.url.get_backend_name()
        if backend == "postgresql":
            now = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
        elif backend in ("mysql", "mariadb"):
            now = conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
            now = now.replace(tzinfo=UTC)
        else:
            now = datetime.now(UTC)
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def upper_bound(self, conn: sa.Connection, kind: str) -> datetime | date | None:
        if self.lag is None:
            return None
        return self._as_kind(self.db_now(conn) - self.lag, kind)

    # -- reading ---------------------------------------------------------------------------

    def read(
        self, plan: _Plan, since: datetime | date | None
    ) -> Iterator[tuple[pl.DataFrame, datetime | date]]:
        """Chunks of rows with `since <= ts < upper bound`, in ts order, with each max ts."""
        table = plan.table
        ts = table.c[plan.columns[0]]
        try:
            with self.engine.connect() as conn:
                upper = self.upper_bound(conn, plan.ts_kind)
                stmt = sa.select(*(table.c[c] for c in plan.columns)).where(ts.is_not(None))
                if since is not None:
                    stmt = stmt.where(ts >= sa.bindparam("since", since, type_=ts.type))
                if upper is not None:
                    stmt = stmt.where(ts < sa.bindparam("upper", upper, type_=ts.type))
                stmt = stmt.order_by(ts)
                result = conn.execution_options(yield_per=self.batch_size).execute(stmt)
                with result:  # closed (server-side cursor released) even when abandoned
                    for rows in result.partitions():
                        yield self._frame(plan, rows)
        except sa.exc.DBAPIError as exc:
            raise self._source_error(exc, "reading from") from exc

    def _frame(self, plan: _Plan, rows: Sequence[sa.Row]) -> tuple[pl.DataFrame, Any]:
        columns = list(zip(*rows, strict=True))
        series = []
        ts_name = plan.columns[0]
        for name, data in zip(plan.columns, columns, strict=True):
            if name == ts_name:
                s = pl.Series(name, data, dtype=pl.Date if plan.ts_kind == "date" else None)
                if plan.ts_kind == "date":
                    s = s.cast(pl.Datetime("us"))
                elif plan.ts_kind == "utc":
                    s = s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            else:
                dtype = plan.dtypes.get(name)
                if dtype is None and any(isinstance(v, Decimal) for v in data):
                    dtype = pl.Float64
                s = pl.Series(name, data, dtype=dtype, strict=False)
            series.append(s)
        return pl.DataFrame(series), max(columns[0])


def _mysql_utc_session(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET time_zone = '+00:00'")
    cursor.close()


# --------------------------------------------------------------------------- public API


def _run_once(src: SqlSource, dataset: str, catalog: Catalog) -> SqlIngestSummary:
    """One incremental read: chunks → lake (committed) → watermark, chunk by chunk."""
    plan = src.plan()
    before = catalog.get_watermark(dataset, src.source)
    summary = SqlIngestSummary(
        dataset=dataset,
        source=src.source,
        polls=1,
        watermark_before=before,
        watermark=before,
        value_columns=plan.values,
    )
    since = src.parse_watermark(before, plan.ts_kind)
    origin = f"{src.display_url} table {src.table_name}"
    with closing(src.read(plan, since)) as chunks:
        for frame, chunk_max in chunks:
            result = ingest_frame(
                frame,
                dataset,
                ts=plan.columns[0],
                keys=plan.keys,
                values=plan.values,
                tz=src.tz if plan.ts_kind in ("naive", "date") else None,
                origin=origin,
                first_row=summary.rows_read + 1,
                settings=catalog.settings,
            )
            summary.rows_read += frame.height
            summary.rows_written += result.rows_written
            summary.duplicates_dropped += result.duplicates_dropped
            summary.batches += 1
            summary.lake_version = result.lake_version
            # The lake append has committed; only now move the watermark. It never moves
            # backwards: every row read has ts >= since, so chunk_max >= since.
            if since is None or chunk_max > since:
                value = chunk_max.isoformat()
                catalog.set_watermark(dataset, src.source, value)
                summary.watermark = value
                since = chunk_max
    return summary


def _open(
    url: str | sa.URL,
    table: str,
    dataset: str,
    settings: Settings | None,
    **options: Any,
) -> tuple[SqlSource, Catalog]:
    validate_dataset_name(dataset)
    catalog = Catalog(settings)
    if not options["keys"]:
        # Like ingest_frame: a later run without keys uses the dataset's own keys.
        info = catalog.find(dataset)
        options["keys"] = info.keys if info is not None else ()
    return SqlSource(url, table, **options), catalog


def ingest_sql(
    url: str | sa.URL,
    table: str,
    *,
    dataset: str,
    ts_column: str,
    keys: Sequence[str] = (),
    values: Sequence[str] | None = None,
    tz: str | None = None,
    batch_size: int = 50_000,
    lag: timedelta | float | str | None = timedelta(0),
    settings: Settings | None = None,
) -> SqlIngestSummary:
    """Read the rows of `table` at or after the stored watermark into `dataset`, once.

    `url` is a SQLAlchemy URL (`postgresql://…`, `mysql://…`, `mariadb://…`; the
    installed psycopg/PyMySQL drivers are picked when none is named). `table` may be
    `schema.table` and may be a view. `keys` are the columns that tell series apart
    (sensor id …); `values` default to the numeric columns other than the timestamp,
    the keys and the primary key. `tz` is the zone of a naive timestamp column (default
    UTC). Rows younger than `lag` by the server's clock (a timedelta, seconds or '30s')
    wait for a later run; `lag=None` reads up to the newest row, even future-dated
    ones. See the module docstring for why this loses and doubles nothing.
    """
    src, catalog = _open(
        url,
        table,
        dataset,
        settings,
        ts_column=ts_column,
        keys=keys,
        values=values,
        tz=tz,
        batch_size=batch_size,
        lag=lag,
    )
    with src:
        return _run_once(src, dataset, catalog)


def poll_sql(
    url: str | sa.URL,
    table: str,
    *,
    dataset: str,
    ts_column: str,
    every: timedelta | float | str,
    keys: Sequence[str] = (),
    values: Sequence[str] | None = None,
    tz: str | None = None,
    batch_size: int = 50_000,
    lag: timedelta | float | str | None = timedelta(0),
    settings: Settings | None = None,
    stop: threading.Event | None = None,
    max_polls: int | None = None,
    on_poll: Callable[[SqlIngestSummary], None] | None = None,
) -> SqlIngestSummary:
    """Run `ingest_sql` every `every` (a timedelta, seconds or '10s') until stopped.

    Stops when `stop` is set (checked between polls and while waiting), after
    `max_polls` polls, or on Ctrl-C: KeyboardInterrupt is caught and reported as
    `interrupted=True`; the lake and the watermark stay consistent either way. `on_poll`
    receives each poll's own summary. The first poll raises on any error; a later poll
    that fails with a SourceError (server restart, network) is logged, counted in
    `errors`, and retried at the next tick. The returned summary adds up all polls.
    """
    interval = _duration(every, "poll interval").total_seconds()
    if interval <= 0:
        raise InputDataError(f"poll interval must be positive, got {every!r}", hint="e.g. 10s")
    if max_polls is not None and max_polls < 1:
        raise InputDataError(f"max_polls must be at least 1, got {max_polls}")
    stop = stop or threading.Event()
    src, catalog = _open(
        url,
        table,
        dataset,
        settings,
        ts_column=ts_column,
        keys=keys,
        values=values,
        tz=tz,
        batch_size=batch_size,
        lag=lag,
    )
    total = SqlIngestSummary(dataset=dataset, source=src.source)
    try:
        with src:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    poll = _run_once(src, dataset, catalog)
                except SourceError as exc:
                    if total.polls == 0:
                        raise
                    total.polls += 1
                    total.errors += 1
                    total.last_error = str(exc)
                    log.warning("poll %d of %s failed, retrying: %s", total.polls, src.source, exc)
                else:
                    _accumulate(total, poll)
                    if on_poll is not None:
                        on_poll(poll)
                if max_polls is not None and total.polls >= max_polls:
                    break
                stop.wait(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        total.interrupted = True
    return total


def _accumulate(total: SqlIngestSummary, poll: SqlIngestSummary) -> None:
    if total.polls == 0:
        total.watermark_before = poll.watermark_before
    total.polls += 1
    total.rows_read += poll.rows_read
    total.rows_written += poll.rows_written
    total.duplicates_dropped += poll.duplicates_dropped
    total.batches += poll.batches
    total.watermark = poll.watermark
    total.value_columns = poll.value_columns
    if poll.lake_version is not None:
        total.lake_version = poll.lake_version


__all__ = [
    "SqlIngestSummary",
    "SqlSource",
    "ingest_sql",
    "poll_sql",
    "redact_url",
    "source_key",
]
