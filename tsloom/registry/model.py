"""Load a registered model (checksums verified, weights without unpickling) and predict
with the same preprocessing and inverse scaling as at training time."""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import itemgetter, sub
from typing import Any

import numpy as np
import polars as pl

from tsloom.config import Settings, load_settings
from tsloom.errors import TsloomError
from tsloom.forecast.params import LearningParams
from tsloom.forecast.scalers import FittedScaler
from tsloom.integrate.spec import format_duration
from tsloom.registry import records
from tsloom.registry.store import (
    IntegrityError,
    Ref,
    backend,
    load_scaler,
    verify_folder,
)


class WindowError(TsloomError):
    """An input window that does not fit the model (length, frequency, columns, values)."""


def params_document(params: LearningParams) -> dict[str, Any]:
    """What `params.json` holds: the canonical parameters and the device, the param id,
    and the durations as exact seconds (the canonical text rounds long ones)."""
    return {
        "param_id": params.param_id,
        "params": {**params.canonical(), "device": params.device},
        "seconds": {
            name: getattr(params, name).total_seconds()
            for name in ("input_width", "output_width", "freq")
        },
    }


def params_from_document(doc: dict[str, Any]) -> LearningParams:
    data = dict(doc["params"])
    for name, seconds in doc.get("seconds", {}).items():
        data[name] = timedelta(seconds=seconds)
    params = LearningParams.load(data)
    if params.param_id != doc["param_id"]:
        raise IntegrityError(
            f"params.json gives param id {params.param_id}, not the stored {doc['param_id']}"
        )
    return params


_NUMBER = frozenset((int, float))
_NULLABLE = frozenset((int, float, type(None)))
_TS = itemgetter("ts")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class RegisteredModel:
    """A model loaded from the registry, ready to predict."""

    ref: str
    params: LearningParams
    scaler: FittedScaler
    model: Any  # torch.nn.Module, in eval mode
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    architecture: dict[str, Any]
    history: dict[str, Any]
    manifest: dict[str, Any]
    record: dict[str, Any] | None = None
    settings: Settings | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ prediction

    def expected(self) -> str:
        p = self.params
        return (
            f"{p.input_steps} rows at {format_duration(p.freq)} (input width "
            f"{format_duration(p.input_width)}) with columns ts, {', '.join(p.features)}"
        )

    def _feature_renames(self, columns: Any) -> dict[str, str]:
        """The readings' own column names (`OT`, `co2[sensor_id=1]`) that name one of the
        model's features unambiguously, mapped to it; none at all when two would name the
        same feature."""
        from tsloom.integrate import resolve_feature

        features = list(self.params.features)
        renames = {}
        for column in columns:
            if column == "ts" or column in features:
                continue
            try:
                renames[column] = resolve_feature(column, features)
            except TsloomError:
                continue
        return renames if len(set(renames.values())) == len(renames) else {}

    def _by_feature_names(self, window: pl.DataFrame) -> pl.DataFrame:
        """Accept the readings' own column names wherever they name a feature."""
        renames = self._feature_renames(window.columns)
        return window.rename(renames) if renames else window

    def _window_values(self, window: Any) -> tuple[np.ndarray, datetime | None]:
        p = self.params
        if isinstance(window, pl.DataFrame):
            window = self._by_feature_names(window)
            missing = [c for c in ("ts", *p.features) if c not in window.columns]
            if missing:
                raise WindowError(
                    f"the window lacks column(s) {', '.join(missing)}; expected {self.expected()}",
                    hint="take the columns of the model's integration (see `tsloom models show`)",
                )
            if window.height != p.input_steps:
                raise WindowError(
                    f"the window has {window.height} rows; expected {self.expected()}",
                    hint=f"pass exactly the last {p.input_steps} readings on the model's grid",
                )
            ts = [_utc(t) for t in window["ts"].to_list()]
            for i in range(1, len(ts)):
                if ts[i] - ts[i - 1] != p.freq:
                    raise WindowError(
                        f"the window's timestamps step {ts[i] - ts[i - 1]} between rows {i - 1} "
                        f"and {i} ({ts[i - 1].isoformat()} → {ts[i].isoformat()}); expected "
                        f"{self.expected()}",
                        hint="resample the readings onto the model's reference frequency",
                    )
            values = window.select(list(p.features)).cast(pl.Float64).to_numpy()
            last = ts[-1]
        else:
            values = np.asarray(window, dtype=np.float64)
            shape = (p.input_steps, len(p.features))
            if values.shape != shape:
                raise WindowError(
                    f"the window array has shape {values.shape}; expected {shape} "
                    f"({self.expected()})"
                )
            last = None
        if np.isnan(values).any():
            row, col = np.argwhere(np.isnan(values))[0]
            raise WindowError(
                f"the window has a missing value (row {row}, {p.features[col]})",
                hint="fill or interpolate it first",
            )
        return values, last

    def rows_window(self, rows: Any) -> tuple[np.ndarray, datetime] | None:
        """The window array and its last timestamp (UTC) straight from JSON-like rows
        (``{"ts": ISO 8601, "<feature or short name>": number, ...}``), without building a
        frame — the server's fast path. Gives the same values as :meth:`_window_values`
        on the same rows as a frame, or None whenever anything is unusual (a missing or
        extra column, a null, a non-number, a timestamp that is not a plain ISO string,
        a wrong row count or step): the frame path then gives the precise error."""
        p = self.params
        n = p.input_steps
        if type(rows) is not list or len(rows) != n or type(rows[0]) is not dict:
            return None
        keys = rows[0].keys()
        plan = self._row_plan(keys)
        if plan is None:
            return None
        source, others, pick = plan
        try:
            if others:  # rows must agree on every key, the unused ones included
                if not all(map(keys.__eq__, map(dict.keys, rows))):  # not dicts: TypeError
                    return None
            elif set(map(len, rows)) != {len(keys)}:
                return None  # with each row's features and ts read below: the same keys
            # operator.itemgetter and map keep the per-row work in C (a key missing: KeyError)
            picked = map(pick, rows)  # one value per row, or a tuple of them
            flat = list(chain.from_iterable(picked) if len(source) > 1 else picked)
            if not set(map(type, flat)) <= _NUMBER:
                return None
            if others and not set(map(type, [r[c] for r in rows for c in others])) <= _NULLABLE:
                return None
            ts = list(map(datetime.fromisoformat, map(_TS, rows)))  # not str: TypeError
            # every step equals freq (naive minus aware: TypeError)
            if list(map(sub, ts[1:], ts[:-1])).count(p.freq) != n - 1:
                return None
            values = np.array(flat, dtype=np.float64).reshape(n, len(source))
        except (ValueError, TypeError, KeyError, OverflowError):
            return None  # unparsable stamps, rows that are not objects, huge integers
        if not math.isfinite(values.sum()):  # NaN (or ±inf, or a sum that overflows):
            return None  # the frame path decides
        return values, _utc(ts[-1])

    def _row_plan(self, keys: Any) -> tuple[tuple[str, ...], tuple[str, ...], Any] | None:
        """For a set of row keys: which key feeds each feature (in feature order), which
        other keys there are and an itemgetter of the feature keys — what
        :meth:`_by_feature_names` decides on a frame's columns, cached per model; None where
        the frame path must decide."""
        plans: dict[frozenset, Any] = self.__dict__.setdefault("_row_plans", {})
        key = frozenset(keys)
        if key in plans:
            return plans[key]
        features = list(self.params.features)
        columns = [k for k in keys if k != "ts"]
        renames = self._feature_renames(columns)
        named = {renames.get(c, c): c for c in columns}
        plan = None
        if "ts" in key and len(named) == len(columns) and all(f in named for f in features):
            source = tuple(named[f] for f in features)
            plan = source, tuple(c for c in columns if c not in source), itemgetter(*source)
        if len(plans) >= 64:  # clients may send many shapes: stay bounded
            plans.clear()
        plans[key] = plan
        return plan

    def predict_values(self, window: Any) -> np.ndarray:
        """Original-unit forecasts of the target as an array (output_dim,)."""
        values, _ = self._window_values(window)
        return self._predict(values)

    def _predict(self, values: np.ndarray) -> np.ndarray:
        from tsloom.forecast.training import predict_scaled

        p = self.params
        forward = functools.partial(predict_scaled, self.model, params=p)
        return self.scaler.around(forward, values[None], p.target_index)[0]

    def predict(self, window: Any, *, end: datetime | None = None) -> pl.DataFrame:
        """Forecast from a window of raw readings.

        `window`: a polars frame (``ts`` + the model's features, exactly `input_steps`
        rows every `freq`) or an array (input_steps, n_features) in feature order (then
        `end`, the window's last timestamp, stamps the result if given).

        Returns ``ts`` (when known), ``step`` and the target in its original units: one
        row per future step (``last ts + k·freq``), or, for a mean/min/max output, one row
        stamped at the end of the forecast horizon (``last ts + output_width``).
        """
        p = self.params
        values, last = self._window_values(window)
        if last is None and end is not None:
            last = _utc(end)
        pred = self._predict(values)
        steps = list(range(1, p.output_steps + 1)) if p.output == "step" else [p.output_steps]
        data: dict[str, Any] = {}
        if last is not None:
            data["ts"] = pl.Series(
                "ts", [last + k * p.freq for k in steps], dtype=pl.Datetime("us", "UTC")
            )
        data["step"] = pl.Series("step", steps, dtype=pl.Int32)
        data[p.target] = pl.Series(p.target, np.asarray(pred, dtype=np.float64))
        return pl.DataFrame(data)

    def latest_window(self) -> pl.DataFrame:
        """The last `input_steps` rows the model's integration spec gives from the lake now."""
        from tsloom.catalog import Catalog
        from tsloom.integrate import IntegrationSpec, integrate

        settings = self.settings or load_settings()
        p = self.params
        spec_data = dict(self.lineage["integration"]["spec"])
        spec = IntegrationSpec.from_dict(spec_data)
        catalog = Catalog(settings)
        ends = [catalog.get(name).ts_max for name in spec.tables]
        if any(e is None for e in ends):
            raise TsloomError(f"a dataset of {', '.join(spec.tables)} is empty")
        latest = min(_utc(e) for e in ends)  # type: ignore[arg-type]
        origin = spec.start or datetime(1970, 1, 1, tzinfo=UTC)
        k = (latest - origin) // spec.freq
        stop = origin + (k + 1) * spec.freq  # exclusive: the last grid point <= latest
        start = stop - (2 * p.input_steps + 8) * spec.freq
        spec_data.update(start=start.isoformat(), end=stop.isoformat())
        frame = integrate(IntegrationSpec.from_dict(spec_data), settings=settings).frame
        tail = frame.tail(p.input_steps)
        nulls = tail.select(pl.col(list(p.features)).null_count()).sum_horizontal().item()
        if tail.height < p.input_steps or nulls:
            raise WindowError(
                f"the lake gives only {tail.height} complete rows up to {latest.isoformat()}; "
                f"expected {self.expected()}",
                hint="ingest more recent data, or pass the window yourself",
            )
        return tail.select(["ts", *p.features])

    def predict_latest(self) -> pl.DataFrame:
        """Forecast from the newest window in the lake, through the model's own spec."""
        return self.predict(self.latest_window())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "params": self.params.canonical(),
            "metrics": self.metrics,
            "architecture": {k: v for k, v in self.architecture.items() if k != "layers"},
            "scaler_id": self.scaler.scaler_id,
            "lineage": self.lineage,
        }


def load(
    ref: str | Ref, *, settings: Settings | None = None, device: str = "cpu"
) -> RegisteredModel:
    """Load `ref` (a full reference or a param id prefix), verifying every file's SHA-256
    against the manifest first; a tampered or truncated file raises an error naming it.
    Models trained by AMML's `train_lstm` (method ``amml``) load as
    :class:`tsloom.amml.lstm_components.AmmlModel`."""
    import torch

    from tsloom.forecast.networks import build_network

    settings = settings or load_settings()
    ref = ref if isinstance(ref, Ref) else records.resolve(settings, str(ref))
    store = backend(settings)
    where = store.location(str(ref))
    verified = verify_folder(store, str(ref), raise_errors=False)
    if verified is None:
        if not store.files(str(ref)):
            records.require(settings, ref)  # unknown ref: say so, with suggestions
            raise IntegrityError(
                f"model {ref} is registered but its files are missing at {where}",
                hint="delete it (`tsloom models delete`) and register it again",
            )
        verify_folder(store, str(ref))  # raises with the file named
    manifest, files = verified  # type: ignore[misc]
    if manifest.get("ref") != str(ref):
        raise IntegrityError(f"the manifest at {where} is for {manifest.get('ref')}")
    doc = json.loads(files["params.json"])
    if doc.get("kind") == "amml":  # a network declared by an AMML model spec
        from tsloom.amml.lstm_components import load_verified

        return load_verified(str(ref), manifest, files, settings=settings, device=device)
    params = params_from_document(doc)
    scaler_info = manifest["scaler"]
    state = load_scaler(store, ref.integration_id, scaler_info["id"])
    scaler = FittedScaler.from_state(state)
    architecture = json.loads(files["architecture.json"])
    model = build_network(**architecture["config"])
    state_dict = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict)
    model.to(torch.device(device)).eval()
    return RegisteredModel(
        ref=str(ref),
        params=params,
        scaler=scaler,
        model=model,
        metrics=json.loads(files["metrics.json"]),
        lineage=json.loads(files["lineage.json"]),
        architecture=architecture,
        history=json.loads(files["history.json"]),
        manifest=manifest,
        record=records.get(settings, ref),
        settings=settings,
    )


def load_servable(
    ref: str | Ref, *, settings: Settings | None = None, device: str = "cpu"
) -> RegisteredModel:
    """`load`, for the REST server and streams, which answer raw readings through the
    model's integration: a model an AMML workflow trained (it predicts from frames its
    flow scaled, with no integration behind it) is refused with how to use it instead."""
    model = load(ref, settings=settings, device=device)
    if not isinstance(model, RegisteredModel):
        raise TsloomError(
            f"{ref} was trained by an AMML workflow (method amml): serving and streams take "
            "models trained from an integration (`tsloom train`, the web UI)",
            hint="predict with it in a workflow: "
            '`source id=… | minmax_scaler | lstm model="NAME:VERSION" | minmax_inverse | print`',
        )
    return model


def predict_latest(ref: str | Ref, *, settings: Settings | None = None) -> pl.DataFrame:
    """Load `ref` and forecast from the newest window its integration gives from the lake."""
    return load(ref, settings=settings).predict_latest()
