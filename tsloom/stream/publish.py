"""Forecasts as MQTT messages: one JSON message per model and completed step.

Topic: the config's template (``tsloom/predictions/{model}``) filled with ``model`` (the
ref), ``name``, ``integration_id``, ``target`` (its folder name), ``method``, ``param_id``.
Payload::

    {"model": "<iid>/<target>/<method>/<param_id>", "name": "…",
     "target": "plant.sensors.temp[sensor_id=1]",
     "issued_step": "2026-01-05T10:00:00Z", "freq": "3600s",
     "forecast": {"plant.sensors.temp[sensor_id=1]":
                  [{"ts": "2026-01-05T11:00:00Z", "value": 21.4}, …]}}

paho queues what it has not sent yet; its queue is capped (``publish.max_queue``) and
messages beyond it are dropped and counted rather than held without bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from tsloom.integrate.spec import format_duration
from tsloom.stream.config import PublishSettings
from tsloom.stream.engine import Forecast, utc

log = logging.getLogger(__name__)


def iso(us: int) -> str:
    return utc(us).isoformat().replace("+00:00", "Z")


def forecast_payload(forecast: Forecast) -> dict[str, Any]:
    """The JSON document published for one forecast."""
    m = forecast.model
    points = [
        {"ts": iso(int(t)), "value": float(v)}
        for t, v in zip(forecast.ts_us, forecast.values, strict=True)
    ]
    return {
        "model": m.ref,
        "name": m.name,
        "target": m.target,
        "issued_step": iso(forecast.issued_us),
        "freq": format_duration(m.params.freq),
        "forecast": {m.target: points},
    }


class Publisher:
    """Publishes forecasts through a connected paho client."""

    def __init__(self, client: Any, config: PublishSettings) -> None:
        self.client = client
        self.config = config
        self.published = 0
        self.dropped = 0
        self._topics: dict[int, str] = {}

    def topic(self, forecast: Forecast) -> str:
        m = forecast.model
        found = self._topics.get(m.index)
        if found is None:
            found = self._topics[m.index] = self.config.topic.format(**m.topic_fields())
        return found

    def publish(self, forecasts: Sequence[Forecast]) -> None:
        import paho.mqtt.client as mqtt

        for forecast in forecasts:
            payload = json.dumps(forecast_payload(forecast), separators=(",", ":"))
            info = self.client.publish(
                self.topic(forecast), payload, qos=self.config.qos, retain=self.config.retain
            )
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.published += 1
            else:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning(
                        "stream: %d prediction message(s) not published (%s)",
                        self.dropped,
                        mqtt.error_string(info.rc),
                    )
