"""Engines and sessions for the metadata database, migrated to head on first use."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tsloom.errors import ConfigError, SourceError

_MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration; tests check it equals alembic's head.
SCHEMA_HEAD = "0006_workflows_jobs"
_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def _alembic_config(connection: sa.Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def migrate(engine: sa.Engine) -> None:
    """Upgrade the schema to the newest migration if it is behind (cheap when current).

    Several processes may open a fresh database at once, so the upgrade runs under a
    lock (a file lock for SQLite, an advisory lock on servers) and re-checks inside it.
    """
    if _current_revision(engine) == SCHEMA_HEAD:
        return  # the common case, without importing alembic
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    head = _head_revision()
    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
        if MigrationContext.configure(conn).get_current_revision() != head:
            command.upgrade(_alembic_config(conn), "head")


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite" and engine.url.database:
        fd = os.open(f"{engine.url.database}.migrate.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    elif engine.dialect.name in ("mysql", "mariadb"):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT GET_LOCK('tsloom_migrate', 120)"))
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK('tsloom_migrate')"))
    else:
        yield


def _current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def get_engine(url: str) -> sa.Engine:
    """A shared engine for `url`, with the schema migrated to head."""
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(
                f"database URL {url!r} cannot be parsed",
                hint="use e.g. sqlite:///path/tsloom.db or postgresql+psycopg://user@host/db",
            ) from exc
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, pool_pre_ping=True)
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        try:
            migrate(engine)
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise SourceError(
                f"cannot open the metadata database {parsed.render_as_string(hide_password=True)}: "
                f"{exc.orig}",
                hint="check TSLOOM_DB_URL and that the database server is running",
            ) from exc
        _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests dropping databases need this)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
