"""Real-time inference on live sensor streams (`tsloom stream CONFIG.yaml`).

    from tsloom.stream import StreamRunner
    runner = StreamRunner("stream.yaml")        # config, models resolved and loaded
    stats = runner.run(stop=threading.Event())  # subscribe, buffer, predict, publish, append

Modules: :mod:`~tsloom.stream.config` (the YAML config), :mod:`~tsloom.stream.buffers`
(event-time step buffers with a watermark, bounded), :mod:`~tsloom.stream.models`
(aliases, loading, series → feature binding, batched prediction),
:mod:`~tsloom.stream.intake` (message batches → columns of readings, fast),
:mod:`~tsloom.stream.engine` (readings → steps → forecasts, no broker),
:mod:`~tsloom.stream.publish` (MQTT messages), :mod:`~tsloom.stream.sink` (batched lake
appends), :mod:`~tsloom.stream.runner` (the MQTT loop). See docs/streaming.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tsloom.stream.buffers import StepBuffer
    from tsloom.stream.config import StreamConfig, StreamConfigError, load_config
    from tsloom.stream.engine import Forecast, StreamEngine
    from tsloom.stream.runner import StreamRunner, StreamStats

_EXPORTS = {
    "StepBuffer": "buffers",
    "StreamConfig": "config",
    "StreamConfigError": "config",
    "load_config": "config",
    "Forecast": "engine",
    "StreamEngine": "engine",
    "StreamRunner": "runner",
    "StreamStats": "runner",
}

__all__ = [
    "Forecast",
    "StepBuffer",
    "StreamConfig",
    "StreamConfigError",
    "StreamEngine",
    "StreamRunner",
    "StreamStats",
    "load_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tsloom.stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tsloom.stream.{module}"), name)
    globals()[name] = value
    return value
