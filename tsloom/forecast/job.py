"""Train from tables: integrate them at the reference frequency, resolve the target and
features by name, train, and say where the model belongs in the hash-addressed registry
(`<integration_id>/<target>/<method>/<param_id>/`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tsloom.config import Settings, load_settings
from tsloom.errors import TsloomError
from tsloom.forecast.params import LearningParams
from tsloom.forecast.training import EpochCallback, TrainResult, train_model
from tsloom.integrate import Integrated, IntegrationSpec, integrate, resolve_feature
from tsloom.integrate.store import save_integration


@dataclass
class TrainingRun:
    integration: Integrated
    params: LearningParams
    result: TrainResult

    @property
    def integration_id(self) -> str:
        return self.integration.id

    @property
    def param_id(self) -> str:
        return self.params.param_id

    def model_path(self, settings: Settings | None = None) -> str:
        """Where the registry files this model (the registry issue writes it there)."""
        from tsloom.registry.store import target_segment

        settings = settings or load_settings()
        return "/".join(
            [
                settings.registry_url,
                self.integration.id,
                target_segment(self.params.target),
                self.params.method,
                self.params.param_id,
            ]
        )

    def summary(self, settings: Settings | None = None) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "param_id": self.param_id,
            "target": self.params.target,
            "method": self.params.method,
            "metrics": self.result.metrics,
            "best_epoch": self.result.best_epoch,
            "epochs_run": len(self.result.history),
            "model_path": self.model_path(settings),
            "seconds": round(self.result.seconds, 3),
        }


def resolve_params(raw: dict[str, Any], integration: Integrated) -> LearningParams:
    """Turn user parameters (bare column names allowed, freq optional) into the one
    `LearningParams` object, named after the integrated features."""
    data = dict(raw)
    if "target" not in data:
        raise TsloomError("no target feature given", hint="pass --target COLUMN")
    data["target"] = resolve_feature(data["target"], integration.features)
    features = data.get("features") or [data["target"]]
    resolved = [resolve_feature(f, integration.features) for f in features]
    if data["target"] not in resolved:
        resolved.insert(0, data["target"])
    data["features"] = resolved
    spec_freq = integration.spec.freq
    if data.get("freq") is None:
        data["freq"] = spec_freq
    params = LearningParams.load(data)
    if params.freq != spec_freq:
        raise TsloomError(
            f"the learning frequency {params.freq} differs from the integration's {spec_freq}",
            hint="leave --freq to the integration, or integrate at the frequency you train at",
        )
    return params


def train_on_integration(
    spec: IntegrationSpec | dict[str, Any],
    params: dict[str, Any] | LearningParams,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
    settings: Settings | None = None,
) -> TrainingRun:
    """Integrate `spec`, then train with `params` on the integrated frame."""
    settings = settings or load_settings()
    integration = integrate(spec, settings=settings)
    save_integration(integration, settings)
    raw = params.model_dump() if isinstance(params, LearningParams) else params
    learning = resolve_params(raw, integration)
    values = integration.frame.select(list(learning.features)).to_numpy().astype(np.float64)
    result = train_model(values, learning, on_epoch=on_epoch, progress=progress)
    return TrainingRun(integration, learning, result)
