"""One way for AMML components (the `mqtt` ingress, `alert topic=`, `sink to=mqtt`) to
reach a broker: parse ``url=``, make a paho client, connect — errors pointing at the
component in the source."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from tsloom.amml.base import Component
from tsloom.errors import ConfigError

DEFAULT_URL = "mqtt://127.0.0.1:1883"


def mqtt_address(url: str | None) -> tuple[str, int, str | None, str | None, bool]:
    """(host, port, username, password, tls) of ``mqtt[s]://[user[:password]@]host[:port]``."""
    parts = urlsplit(url or DEFAULT_URL)
    if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
        raise ConfigError(f"MQTT URL {url!r} is not mqtt://host[:port]", hint=f"e.g. {DEFAULT_URL}")
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    return parts.hostname, port, parts.username, parts.password, tls


def new_client(component: Component, role: str) -> tuple[Any, str, int]:
    """An unconnected client for the component's ``url=`` (credentials and TLS set), with
    its host and port; set callbacks on it, then :func:`connect`."""
    import paho.mqtt.client as mqtt

    try:
        host, port, user, password, tls = mqtt_address(component.args.get("url"))
    except ConfigError as exc:
        raise component.fail(exc.message, exc.hint) from exc
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"tsloom-{role}-{uuid.uuid4().hex[:12]}"
    )
    if user:
        client.username_pw_set(user, password)
    if tls:
        client.tls_set()
    return client, host, port


def connect(component: Component, client: Any, host: str, port: int) -> None:
    """Connect and start the client's network thread."""
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise component.fail(
            f"cannot reach the MQTT broker at {host}:{port}: {exc}",
            "check that the broker runs there, or give url=mqtt://host:port",
        ) from exc
    client.loop_start()
