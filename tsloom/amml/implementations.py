"""Which Python class implements each AMML component: every component module lists its
classes in a module-level ``COMPONENTS`` list, collected here by component name."""

from __future__ import annotations

from importlib import import_module

from tsloom.amml.base import Component

_MODULES = (
    "tsloom.amml.ingress",
    "tsloom.amml.components",
    "tsloom.amml.transforms",
    "tsloom.amml.sink",
    "tsloom.amml.lstm_components",
    "tsloom.amml.alerting",
)


def implementations() -> dict[str, type[Component]]:
    """Component name → class, over every module in `_MODULES`."""
    found: dict[str, type[Component]] = {}
    for module in _MODULES:
        for cls in import_module(module).COMPONENTS:
            found[cls.name] = cls
    return found
