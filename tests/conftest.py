"""Shared fixtures: an isolated TSLOOM_HOME per test and real service URLs.

Service fixtures skip when the service is down, unless TSLOOM_REQUIRE_SERVICES=1
(CI sets it), where they fail loudly instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tsloom.config import Settings, load_settings

ETT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ett"
REQUIRE_SERVICES = os.environ.get("TSLOOM_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get(
    "TSLOOM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_ADMIN_URL = os.environ.get(
    "TSLOOM_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
MQTT_HOST = os.environ.get("TSLOOM_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TSLOOM_TEST_MQTT_PORT", "1883"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or fail, when services are required) if a service is not listening."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and TSLOOM_REQUIRE_SERVICES=1")
    pytest.skip(message)


@pytest.fixture
def tsloom_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh, empty TSLOOM_HOME with SQLite metadata and a local lake."""
    home = tmp_path / "home"
    monkeypatch.setenv("TSLOOM_HOME", str(home))
    for var in ("TSLOOM_DB_URL", "TSLOOM_LAKE_URL", "TSLOOM_REGISTRY_URL", "TSLOOM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return load_settings()


@pytest.fixture
def ett_dir() -> Path:
    if not (ETT_DIR / "ETTh1.csv").is_file():
        pytest.fail(
            f"ETT data missing at {ETT_DIR}; the shared data folder must sit beside the repo"
        )
    return ETT_DIR


def _scratch_database(admin_url: str, kind: str) -> Iterator[str]:
    """Create a throwaway database on a real server and drop it afterwards."""
    import sqlalchemy as sa

    name = f"tsloom_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database on the machine's server."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    yield from _scratch_database(PG_ADMIN_URL, "postgresql")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """URL of a fresh, empty MariaDB/MySQL database on the machine's server."""
    need_service("MariaDB", "127.0.0.1", 3306)
    yield from _scratch_database(MYSQL_ADMIN_URL, "mysql")


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    """(host, port) of the machine's Mosquitto broker."""
    need_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (no network): its URL, with credentials and
    TSLOOM_S3_ENDPOINT_URL set in the environment."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TSLOOM_S3_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@contextmanager
def shared_etth1_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Settings]:
    """An isolated TSLOOM_HOME for a whole test module, with ETTh1 ingested as
    `power.etth1` (for module-scoped fixtures that train and register models once)."""
    from tsloom.sources.files import ingest_file

    home = tmp_path_factory.mktemp(name) / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("TSLOOM_HOME", str(home))
    for var in ("TSLOOM_DB_URL", "TSLOOM_LAKE_URL", "TSLOOM_REGISTRY_URL", "TSLOOM_CONFIG"):
        mp.delenv(var, raising=False)
    settings = Settings.at_home(home)
    home.mkdir(parents=True)
    ingest_file(ETT_DIR / "ETTh1.csv", "power.etth1", ts="date", settings=settings)
    try:
        yield settings
    finally:
        mp.undo()
