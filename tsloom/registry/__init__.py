"""The hash-addressed model registry: files on local disk or S3, metadata in the database.

    ref = register(run)                 # "<integration_id>/<target>/<method>/<param_id>"
    search(["airq.gwangju", "airq.seoul"], metric="rmse", max_value=2.0)   # JSON tree
    model = load(ref)                   # checksums verified; .params .scaler .model
    model.predict(window)               # polars frame of future ts and original units
    predict_latest(ref)                 # the newest window from the lake, same integration
    rebuild_training_frame(ref)         # the training frame again, by lake time travel
    promote(ref, "production"); delete(ref); gc()

Files: :mod:`~tsloom.registry.store` (layout, manifests, atomic publication); metadata:
:mod:`~tsloom.registry.records`; lineage: :mod:`~tsloom.registry.lineage`; search and
maintenance: :mod:`~tsloom.registry.browse`; loading and prediction:
:mod:`~tsloom.registry.model`; registration: :mod:`~tsloom.registry.registration`.

The names below are imported on first use, so that ``import tsloom.registry`` stays
cheap (a process that only publishes a prepared registration never imports PyTorch or
the lake).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from tsloom.config import Settings
    from tsloom.registry.browse import delete, gc, promote, search, show
    from tsloom.registry.model import (
        RegisteredModel,
        WindowError,
        load,
        load_servable,
        predict_latest,
    )
    from tsloom.registry.records import STAGES
    from tsloom.registry.registration import Registration, prepare, publish, register
    from tsloom.registry.store import IntegrityError, Ref, RegistryError, target_segment

_EXPORTS = {
    "STAGES": "records",
    "IntegrityError": "store",
    "Ref": "store",
    "RegistryError": "store",
    "target_segment": "store",
    "RegisteredModel": "model",
    "WindowError": "model",
    "load": "model",
    "load_servable": "model",
    "predict_latest": "model",
    "Registration": "registration",
    "prepare": "registration",
    "publish": "registration",
    "register": "registration",
    "delete": "browse",
    "gc": "browse",
    "promote": "browse",
    "search": "browse",
    "show": "browse",
}

__all__ = [
    "STAGES",
    "IntegrityError",
    "Ref",
    "RegisteredModel",
    "Registration",
    "RegistryError",
    "WindowError",
    "delete",
    "gc",
    "load",
    "load_servable",
    "predict_latest",
    "prepare",
    "promote",
    "publish",
    "rebuild_training_frame",
    "register",
    "search",
    "show",
    "target_segment",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tsloom.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tsloom.registry.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def rebuild_training_frame(
    ref: str | Ref, *, verify: bool = True, settings: Settings | None = None
) -> pl.DataFrame:
    """The integrated frame the model was trained on (``ts`` + every feature), rebuilt
    from the lake with the stored spec at the stored lake versions; with `verify` it must
    match the training frame's SHA-256, else an error says what differs."""
    from tsloom.config import load_settings
    from tsloom.registry import records
    from tsloom.registry.lineage import rebuild_frame
    from tsloom.registry.store import Ref

    settings = settings or load_settings()
    ref = ref if isinstance(ref, Ref) else records.resolve(settings, str(ref))
    lineage = records.require(settings, ref)["lineage"]
    return rebuild_frame(lineage, settings, verify=verify).frame
