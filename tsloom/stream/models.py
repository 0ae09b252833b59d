"""The models a stream runs: refs and stage aliases resolved in the registry, models
loaded once, and the rule that binds a stream series to a model feature.

Series names. A reading's value column ``c`` of dataset ``d`` with key values
``k1=v1, k2=v2`` (the mapping's key columns, in order) is the series
``d.c[k1=v1,k2=v2]`` (``d.c`` without keys; ``c[...]`` when the config names no
dataset). A model feature ``d.c[k=v]`` (the integration's naming: only the keys that tell
its series apart) binds the series of the same dataset and column whose keys include every
``k=v`` of its label and pass the key filter of the model's integration spec. A config's
``features: {feature: series}`` overrides the rule for the features it names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsloom.config import Settings
from tsloom.errors import TsloomError
from tsloom.integrate.features import split_feature
from tsloom.stream.config import ModelBinding

log = logging.getLogger(__name__)

STAGES = ("staged", "production", "archived")


class StreamModelError(TsloomError):
    """A model of the stream config that cannot be found or used."""


def resolve_ref(text: str, settings: Settings) -> str:
    """A full ref from a ref, a param id prefix, or a stage alias
    ``<iid>/<target>[/<method>]/<stage>`` (the newest model at that stage)."""
    from tsloom.integrate import resolve_feature
    from tsloom.registry import records

    text = text.strip().strip("/")
    parts = text.split("/")
    if len(parts) in (3, 4) and parts[-1] in STAGES:
        stage, parts = parts[-1], parts[:-1]
        iid, target = parts[0], parts[1]
        method = parts[2] if len(parts) == 3 else None
        rows = []
        for row in records.all_rows(settings, integration_id=iid, method=method, stage=stage):
            if target in (row["target_segment"], row["target"]):
                rows.append(row)
                continue
            try:
                resolve_feature(target, [row["target"]])
            except TsloomError:
                continue
            rows.append(row)
        if not rows:
            raise StreamModelError(
                f"no {stage} model for {'/'.join(parts)}",
                hint="promote one with `tsloom models promote REF`, or give a full ref "
                "(see `tsloom models search`)",
            )
        rows.sort(key=lambda r: (r["updated_at"] or "", r["created_at"] or ""))
        return rows[-1]["ref"]
    try:
        return str(records.resolve(settings, text))
    except TsloomError as exc:
        raise StreamModelError(exc.message, hint=exc.hint) from exc


def series_name(dataset: str | None, column: str, keys: Sequence[tuple[str, Any]]) -> str:
    """``dataset.column[k=v,...]`` (every key, in order), the stream's name of a series."""
    base = f"{dataset}.{column}" if dataset else column
    if not keys:
        return base
    return base + "[" + ",".join(f"{k}={v}" for k, v in keys) + "]"


def _label(label: str) -> dict[str, str]:
    out = {}
    for part in label.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclass
class FeatureRule:
    """What a model feature accepts from the stream."""

    feature: str
    dataset: str
    column: str
    label: dict[str, str]
    key_filter: dict[str, set[str]]
    explicit: str | None = None  # a series name given in the config

    @classmethod
    def of(cls, feature: str, spec: Mapping[str, Any] | None, explicit: str | None) -> FeatureRule:
        dataset, column, label = split_feature(feature)
        filters: dict[str, set[str]] = {}
        for src in (spec or {}).get("sources", []) or []:
            if isinstance(src, Mapping) and src.get("dataset") == dataset and src.get("keys"):
                for key, values in src["keys"].items():
                    filters.setdefault(key, set()).update(str(v) for v in values)
        return cls(feature, dataset, column, _label(label), filters, explicit)

    def matches(self, name: str, dataset: str | None, column: str, keys: Mapping[str, str]) -> bool:
        if self.explicit is not None:
            short = name.split(".", 2)[-1] if dataset else name
            return self.explicit in (name, short)
        if column != self.column or (dataset is not None and dataset != self.dataset):
            return False
        for key, value in self.label.items():
            if keys.get(key) != value:
                return False
        for key, allowed in self.key_filter.items():
            if key in keys and keys[key] not in allowed:
                return False
        return True


@dataclass
class BoundModel:
    """A loaded model and the buffer slots of its features (None until seen)."""

    index: int
    ref: str
    name: str
    binding: ModelBinding
    model: Any  # tsloom.registry.RegisteredModel
    rules: list[FeatureRule]
    slots: list[int | None]
    group: Any = None  # the StepBuffer of its frequency
    steps: int = 0
    ambiguous: set[str] = field(default_factory=set)
    _slot_array: np.ndarray | None = None

    @property
    def params(self) -> Any:
        return self.model.params

    @property
    def target(self) -> str:
        return self.model.params.target

    @property
    def ready(self) -> bool:
        return all(s is not None for s in self.slots)

    @property
    def slot_array(self) -> np.ndarray:
        if self._slot_array is None:
            self._slot_array = np.asarray(self.slots, dtype=np.int64)
        return self._slot_array

    def topic_fields(self) -> dict[str, str]:
        iid, segment, method, param_id = self.ref.split("/")
        return {
            "model": self.ref,
            "name": self.name,
            "integration_id": iid,
            "target": segment,
            "method": method,
            "param_id": param_id,
        }


def is_alias(text: str) -> bool:
    """Whether a config ref is a stage alias ``<iid>/<target>[/<method>]/<stage>``, whose
    model can change while the stream runs (a promotion)."""
    parts = text.strip().strip("/").split("/")
    return len(parts) in (3, 4) and parts[-1] in STAGES


def bind_model(index: int, binding: ModelBinding, ref: str, model: Any) -> BoundModel:
    """A loaded model as the `index`-th model of the config: its feature rules (the
    config's `features:` pins checked against the model's features), no series bound yet."""
    features = list(model.params.features)
    unknown = sorted(set(binding.features) - set(features))
    if unknown:
        raise StreamModelError(
            f"models.{index}.features ({binding.ref}): {', '.join(unknown)} not among the "
            f"features of {ref}",
            hint=f"its features are {', '.join(features)}",
        )
    spec = (model.lineage.get("integration") or {}).get("spec")
    rules = [FeatureRule.of(f, spec, binding.features.get(f)) for f in features]
    return BoundModel(
        index=index,
        ref=ref,
        name=binding.name or ref.rsplit("/", 1)[1][:12],
        binding=binding,
        model=model,
        rules=rules,
        slots=[None] * len(features),
        steps=model.params.input_steps,
    )


def load_models(
    bindings: Sequence[ModelBinding], settings: Settings, *, device: str = "cpu"
) -> list[BoundModel]:
    """Resolve and load every model of the config (each ref once)."""
    from tsloom.registry import load_servable

    loaded: dict[str, Any] = {}
    out = []
    for i, binding in enumerate(bindings):
        ref = resolve_ref(binding.ref, settings)
        if ref in loaded:
            model = loaded[ref]
        else:
            model = loaded[ref] = load_servable(ref, settings=settings, device=device)
        out.append(bind_model(i, binding, ref, model))
    return out


def predict_windows(model: Any, windows: np.ndarray) -> np.ndarray:
    """Original-unit forecasts (n, output_dim) of windows (n, input_steps, features) in one
    forward pass: the arithmetic of ``RegisteredModel.predict`` (scale, network, inverse
    scaling of the target), batched."""
    import torch

    from tsloom.forecast.training import predict_scaled

    p = model.params
    with torch.inference_mode():
        out = model.scaler.around(
            lambda scaled: predict_scaled(model.model, scaled, p), windows, p.target_index
        )
    return np.asarray(out, dtype=np.float64).reshape(len(windows), -1)
