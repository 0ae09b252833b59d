"""The REST server over the model registry.

    from tsloom.serve import create_app, ServeConfig
    app = create_app(config=ServeConfig(cache_size=32, preload=("<ref>",)))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: :mod:`~tsloom.serve.app` (routes, errors, lifespan), :mod:`~tsloom.serve.cache`
(bounded LRU model cache, coalesced loads, alias resolution), :mod:`~tsloom.serve.batching`
(per-model dynamic batching off the event loop), :mod:`~tsloom.serve.auth` (hashed API
keys), :mod:`~tsloom.serve.metrics` (Prometheus), :mod:`~tsloom.serve.schemas`,
:mod:`~tsloom.serve.config`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tsloom.serve.app import create_app
    from tsloom.serve.auth import hash_key
    from tsloom.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "hash_key"]

_EXPORTS = {"create_app": "app", "hash_key": "auth", "ServeConfig": "config"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tsloom.serve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"tsloom.serve.{module}"), name)
    globals()[name] = value
    return value
