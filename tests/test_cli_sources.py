"""The thin CLI over the SQL, MQTT and synthetic sources, run against the real services."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from typer.testing import CliRunner

from tsloom.cli import app
from tsloom.config import Settings
from tsloom.lake import read_dataset
from tsloom.sources.mqtt import MqttIngestor

runner = CliRunner()


def test_ingest_sql_once_then_again(tsloom_home: Settings, pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE plant (at timestamptz, line int, temp float8)"))
        conn.execute(
            sa.text("INSERT INTO plant VALUES (:at, :line, :temp)"),
            [
                {"at": start + timedelta(minutes=i), "line": i % 2, "temp": 20.0 + i}
                for i in range(6)
            ],
        )
    engine.dispose()
    args = [
        "ingest",
        "sql",
        pg_url,
        "--table",
        "plant",
        "--ts-column",
        "at",
        "--dataset",
        "plant.temps",
        "--keys",
        "line",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "6 new rows of 6 read" in first.output
    second = runner.invoke(app, args)
    assert "0 new rows" in second.output
    assert read_dataset("plant.temps")["temp"].sort().to_list() == [20.0 + i for i in range(6)]


def test_ingest_mqtt_with_a_mapping_file(
    tsloom_home: Settings, mqtt_broker, tmp_path: Path
) -> None:
    host, port = mqtt_broker
    topic = f"tsloom-cli/{uuid.uuid4().hex[:8]}/co2"
    client_id = f"tsloom-cli-{uuid.uuid4().hex[:8]}"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "time: event_time\ntime_unit: ms\nkeys: [ss_id]\nvalues: [input_data]\n"
        "units: {input_data: ppm}\n"
    )
    base = [
        "ingest",
        "mqtt",
        "--topic",
        topic,
        "--dataset",
        "airq.live",
        "--mapping",
        str(mapping),
        "--host",
        host,
        "--port",
        str(port),
        "--client-id",
        client_id,
    ]
    try:
        # The first run only opens the persistent session, so the broker keeps what follows.
        opened = runner.invoke(app, [*base, "--idle-timeout", "0.5"])
        assert opened.exit_code == 0, opened.output
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        publisher.connect(host, port)
        publisher.loop_start()
        infos = [
            publisher.publish(
                topic,
                json.dumps(
                    {"ss_id": 2, "event_time": 1669102545000 + 1000 * i, "input_data": 400.0 + i}
                ),
                qos=1,
            )
            for i in range(5)
        ]
        for info in infos:
            info.wait_for_publish(timeout=10)
        publisher.disconnect()
        publisher.loop_stop()
        run = runner.invoke(app, [*base, "--max-messages", "5", "--idle-timeout", "10"])
        assert run.exit_code == 0, run.output
        assert "5 messages, 5 new rows, 0 malformed" in run.output
        assert read_dataset("airq.live")["input_data"].to_list() == [400.0 + i for i in range(5)]
    finally:
        MqttIngestor(
            "airq.live", topic, mapping, host=host, port=port, client_id=client_id
        ).reset_session()


def test_generate_writes_ingestible_files(tsloom_home: Settings, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = runner.invoke(app, ["generate", "--out", str(out), "--days", "1", "--seed", "1"])
    assert result.exit_code == 0, result.output
    csv = out / "airq.seoul.csv"
    assert csv.is_file() and (out / "airq.seoul.truth.json").is_file()
    ingested = runner.invoke(
        app,
        [
            "ingest",
            "file",
            str(csv),
            "--dataset",
            "airq.seoul",
            "--ts",
            "ts",
            "--keys",
            "sensor_id,position",
            "--unit",
            "co2=ppm",
        ],
    )
    assert ingested.exit_code == 0, ingested.output
    assert "new rows" in ingested.output
