"""AMML's forecasting components: `train_lstm` trains the network a model spec describes and
files it in the hash-addressed registry; `lstm` predicts with a registered one.

* `train_lstm model=NAME:VERSION` windows the frame with the spec's input `steps`: the
  features are the target (the last value column, or `target=`) preceded by the first
  `features - 1` other value columns (the input layer's count), and each window is
  followed by the `outputs` (units of the last dense layer) next target values. It
  trains with the spec's training block (`epoch=`, `lr=`, `batch_size=`, `seed=`
  override), emits one row per epoch (`epoch`, `loss`), and registers the model.
* `lstm model=NAME:VERSION` loads a registered model of that spec — trained on the same
  datasets first, then in stage production, then the newest — predicts the next `outputs`
  target values from the frame's last window and emits them with future timestamps,
  spaced by the data's median step.

Registry layout (``<integration_id>/<target segment>/<method>/<param_id>``):

* integration id: :func:`tsloom.integrate.integration_id` of the lake datasets the flow
  read (``source``); a flow that read none (csv, sql, mqtt, normalsource) files its models
  under the pseudo-table :data:`ADHOC_TABLE`;
* target: the target's feature name (``power.ett.OT`` when one dataset was read);
* method: :data:`METHOD` (``amml``);
* param id: SHA-1 of the canonical spec, the training arguments, the features and the
  training data (datasets at their lake versions, time range, rows, frame SHA-256), so the
  same training again finds the same entry.

Files: the registry's own (``weights.pt`` = state dict, ``params.json`` = spec and training
arguments, ``architecture.json``, ``metrics.json``, ``history.json`` = loss per epoch,
``lineage.json``) plus ``spec.yaml`` (the spec's source) and ``meta.json``. The scaler is
the run's `minmax_scaler` (or `zscore_scaler`) state on the features, the identity when
none ran. The metadata
row's ``params`` hold the spec, its source and ref, so ``tsloom models show`` prints them;
``tsloom.registry.load(ref)`` returns an :class:`AmmlModel`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from tsloom.amml.base import Component, FlowContext, FrameComponent
from tsloom.amml.components import value_columns
from tsloom.amml.model_spec import ModelSpec
from tsloom.config import Settings, load_settings
from tsloom.errors import TsloomError

METHOD = "amml"
ADHOC_TABLE = "amml.stream"
KIND = "amml"


class _LstmBase(FrameComponent):
    def spec(self):
        from tsloom.amml.spec_store import get_model_spec
        from tsloom.errors import TsloomError

        try:
            return get_model_spec(self.args["model"], settings=self.ctx.settings)
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc

    def target(self, frame: pl.DataFrame) -> str:
        target = self.args.get("target")
        if target:
            if len(target) != 1:
                raise self.fail("target= takes one column")
            if target[0] not in frame.columns:
                raise self.fail(f"no target column {target[0]!r}", f"columns: {frame.columns}")
            return target[0]
        values = value_columns(frame)
        if not values:
            raise self.fail("the frame has no numeric value column")
        return values[-1]


class TrainLstm(_LstmBase):
    name = "train_lstm"
    supported = frozenset(
        {"model", "epoch", "lr", "batch_size", "lookback", "horizon", "target", "seed"}
    )

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        import numpy as np
        import torch

        from tsloom.amml.model_spec import build_module

        spec = self.spec()
        steps, n_feat = spec.layers[0].steps, spec.layers[0].features  # type: ignore[union-attr]
        horizon = spec.outputs
        for arg, want in (("lookback", steps), ("horizon", horizon)):
            if self.args.get(arg) not in (None, want):
                raise self.fail(f"{arg}={self.args[arg]} differs from the spec {spec.ref} ({want})")
        target = self.target(frame)
        values = value_columns(frame)
        if len(values) < n_feat:
            raise self.fail(
                f"spec {spec.ref} wants {n_feat} feature(s), the frame has {len(values)}"
            )
        # The target's own history always comes in: the other value columns first, then
        # the target last (so a one-feature spec forecasts a series from its own past).
        others = [c for c in values if c != target]
        features = [*others[: n_feat - 1], target]
        used = features
        if frame.select(used).null_count().sum_horizontal().item():
            raise self.fail("the frame has nulls in the columns used", "impute them first")
        n = frame.height - steps - horizon + 1
        if n < 1:
            raise self.fail(
                f"{frame.height} rows are too few for windows of {steps} steps + {horizon} outputs"
            )
        feat = frame.select(features).to_numpy().astype("float32")
        tgt = frame[target].to_numpy().astype("float32")
        x = np.lib.stride_tricks.sliding_window_view(feat, steps, axis=0)[:n].transpose(0, 2, 1)
        y = np.lib.stride_tricks.sliding_window_view(tgt[steps:], horizon)[:n]
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.copy())

        tr = spec.training
        epochs = int(self.args.get("epoch") or tr.epochs)
        lr = float(self.args.get("lr") or tr.learning_rate)
        batch = int(self.args.get("batch_size") or tr.batch_size)
        seed = int(self.args.get("seed") or 0)
        torch.manual_seed(seed)
        module = build_module(spec)
        loss_fn = {
            "mse": torch.nn.MSELoss,
            "mae": torch.nn.L1Loss,
            "huber": torch.nn.HuberLoss,
        }[tr.loss]()
        opt_cls = {
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "sgd": torch.optim.SGD,
            "rmsprop": torch.optim.RMSprop,
        }[tr.optimizer]
        opt = opt_cls(module.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        started = time.perf_counter()
        module.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for i in range(0, len(xt), batch):
                idx = order[i : i + batch]
                opt.zero_grad()
                loss = loss_fn(module(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / len(xt))
        seconds = time.perf_counter() - started

        run = TrainedRun(
            spec=spec,
            module=module,
            frame=frame,
            features=features,
            target=target,
            windows=int(n),
            epochs=epochs,
            learning_rate=lr,
            batch_size=batch,
            seed=seed,
            losses=losses,
            seconds=seconds,
        )
        try:
            _ref, meta = register_trained(run, self.ctx)
        except TsloomError as exc:
            raise self.fail(f"registering the model failed: {exc.message}", exc.hint) from exc
        self.ctx.models.append(meta)
        return pl.DataFrame(
            {"epoch": list(range(1, epochs + 1)), "loss": losses},
            schema={"epoch": pl.Int64, "loss": pl.Float64},
        )


class Lstm(_LstmBase):
    name = "lstm"
    supported = frozenset({"model", "horizon", "target"})

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        spec = self.spec()
        try:
            ref = find_registered(spec, self.ctx.datasets, settings=self.ctx.settings)
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        if ref is None:
            raise self.fail(
                f"no trained model for spec {spec.ref}",
                f'train one first: `... | train_lstm model="{spec.ref}" | print`',
            )
        from tsloom.registry import load

        try:
            model = load(ref, settings=self.ctx.settings)
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        target = model.target
        if self.args.get("target") and self.args["target"] != [target]:
            raise self.fail(f"the registered model {ref} of {spec.ref} predicts {target!r}")
        missing = [c for c in model.features if c not in frame.columns]
        if missing:
            raise self.fail(f"the model needs column(s) {', '.join(missing)}")
        horizon = int(self.args.get("horizon") or model.outputs)
        if not 1 <= horizon <= model.outputs:
            raise self.fail(f"horizon={horizon}: the model predicts 1 to {model.outputs} steps")
        if frame.height < model.steps:
            raise self.fail(
                f"{frame.height} rows are fewer than the {model.steps} steps of a window"
            )
        if frame.height < 2:
            raise self.fail("cannot tell the data's frequency from one row")
        return model.predict(frame, horizon=horizon)


# ------------------------------------------------------------------------ the registry


@dataclass
class TrainedRun:
    """What `train_lstm` trained: the spec, the module and the data it saw."""

    spec: ModelSpec
    module: Any
    frame: pl.DataFrame
    features: list[str]
    target: str
    windows: int
    epochs: int
    learning_rate: float
    batch_size: int
    seed: int
    losses: list[float]
    seconds: float


def training_tables(datasets: list[str]) -> list[str]:
    """The tables whose integration id files a model trained on `datasets`."""
    return sorted(set(datasets)) or [ADHOC_TABLE]


def target_feature(target: str, datasets: list[str]) -> str:
    """The target as a feature name: ``database.table.column`` when one dataset was read."""
    from tsloom.integrate import feature_name

    tables = sorted(set(datasets))
    if len(tables) == 1 and not target.startswith(f"{tables[0]}."):
        return feature_name(tables[0], target, {}, ())
    return target


def spec_source(spec: ModelSpec, settings: Settings) -> str | None:
    """The YAML text the spec was added from (None for a spec not in the database)."""
    import sqlalchemy as sa

    from tsloom.db.engine import session_scope
    from tsloom.db.models import ModelSpecRecord

    with session_scope(settings.db_url) as s:
        return s.scalar(
            sa.select(ModelSpecRecord.source).where(
                ModelSpecRecord.name == spec.name,
                ModelSpecRecord.version == spec.version,
                ModelSpecRecord.spec_hash == spec.spec_hash,
            )
        )


def _scaler(features: list[str], ctx: FlowContext) -> tuple[Any, bool]:
    """The run's scaling of `features` (`minmax_scaler`, else `zscore_scaler`, default ids)
    as a registry scaler; the identity when neither scaled them all."""
    from tsloom.forecast.scalers import FittedScaler

    minmax = ctx.scalers.get("default") or {}
    zscore = ctx.scalers.get("zscore:default") or {}
    if all(f in minmax for f in features):
        lo = [float(minmax[f][0]) for f in features]
        span = [float(minmax[f][1]) - float(minmax[f][0]) or 1.0 for f in features]
        return FittedScaler("minmax", tuple(features), tuple(lo), tuple(span)), True
    if all(f in zscore for f in features):
        mean = [float(zscore[f][0]) for f in features]
        std = [float(zscore[f][1]) or 1.0 for f in features]
        return FittedScaler("zscore", tuple(features), tuple(mean), tuple(std)), True
    ones = tuple(1.0 for _ in features)
    return FittedScaler("minmax", tuple(features), tuple(0.0 for _ in features), ones), False


def _dumps(data: Any) -> bytes:
    from tsloom.registry.store import dumps

    return dumps(data)


def _weights(module: Any) -> bytes:
    import torch

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def register_trained(run: TrainedRun, ctx: FlowContext) -> tuple[str, dict[str, Any]]:
    """File `run` in the registry; (reference, the summary `RunResult.models` lists)."""
    import tsloom
    from tsloom.catalog import Catalog
    from tsloom.integrate import integration_id
    from tsloom.registry import records
    from tsloom.registry.lineage import frame_digest, git_state
    from tsloom.registry.registration import Registration, publish
    from tsloom.registry.store import MANIFEST, Ref, backend, make_manifest, scaler_path, sha256

    settings, spec, frame = ctx.settings, run.spec, run.frame
    catalog = Catalog(settings)
    versions = {d: catalog.get(d).lake_version for d in sorted(set(ctx.datasets))}
    tables = training_tables(ctx.datasets)
    iid = integration_id(tables)
    target = target_feature(run.target, ctx.datasets)
    ts = frame["ts"]
    first, last = ts.min(), ts.max()
    data = {
        "datasets": versions,
        "start": _iso(first),
        "end": _iso(last),
        "rows": frame.height,
        "frame_sha256": frame_digest(frame.select(["ts", *run.features])),
    }
    scaler, scaled = _scaler(run.features, ctx)
    tr = spec.training
    params: dict[str, Any] = {
        "kind": KIND,
        "spec_ref": spec.ref,
        "spec_hash": spec.spec_hash,
        "spec": spec.model_dump(mode="json"),
        "features": run.features,
        "target": run.target,
        "target_feature": target,
        "steps": spec.layers[0].steps,  # type: ignore[union-attr]
        "outputs": spec.outputs,
        "epochs": run.epochs,
        "learning_rate": run.learning_rate,
        "batch_size": run.batch_size,
        "seed": run.seed,
        "loss": tr.loss,
        "optimizer": tr.optimizer,
        "scaled": scaled,
        "data": data,
    }
    param_id = hashlib.sha1(
        json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    ref = Ref.of(iid, target, METHOD, param_id)
    source = spec_source(spec, settings)
    code = {"tsloom": tsloom.__version__, **git_state()}
    lineage = {
        "datasets": [{"name": n, "lake_version": v} for n, v in versions.items()],
        "integration": {"id": iid, "tables": tables, "spec": None, "spec_hash": None},
        "training": {
            "start": data["start"],
            "end": data["end"],
            "rows": frame.height,
            "boundary_index": None,
            "boundary_ts": None,
            "features": run.features,
            "frame_sha256": data["frame_sha256"],
        },
        "code": code,
        "seed": run.seed,
        "param_id": param_id,
        "scaler_id": scaler.scaler_id,
        "amml": {"flow": ctx.source, "flow_name": ctx.flow_name, "run_id": ctx.run_id},
    }
    history = {
        "epochs": [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(run.losses)],
        "epochs_run": run.epochs,
        "windows": run.windows,
        "seconds": round(run.seconds, 3),
    }
    metrics = {"loss": run.losses[-1], "best_loss": min(run.losses)} if run.losses else {}
    meta = {
        "ref": str(ref),
        "spec": spec.ref,
        "spec_hash": spec.spec_hash,
        "dataset": ctx.datasets[-1] if ctx.datasets else None,
        "datasets": list(versions),
        "start": data["start"],
        "end": data["end"],
        "rows": frame.height,
        "windows": run.windows,
        "features": run.features,
        "target": run.target,
        "steps": params["steps"],
        "outputs": params["outputs"],
        "epochs": run.epochs,
        "learning_rate": run.learning_rate,
        "batch_size": run.batch_size,
        "seed": run.seed,
        "losses": run.losses,
        "train_seconds": round(run.seconds, 3),
        "scaler": ctx.scalers.get("default"),
    }
    files = {
        "weights.pt": _weights(run.module),
        "params.json": _dumps({"param_id": param_id, **params}),
        "architecture.json": _dumps({"kind": KIND, "spec": params["spec"]}),
        "metrics.json": _dumps(records.json_safe(metrics)),
        "history.json": _dumps(records.json_safe(history)),
        "lineage.json": _dumps(lineage),
        "meta.json": _dumps(records.json_safe(meta)),
    }
    if source is not None:
        files["spec.yaml"] = source.encode()
    state = scaler.state()
    scaler_entry = {
        "id": scaler.scaler_id,
        "path": scaler_path(iid, scaler.scaler_id),
        "sha256": sha256(_dumps(state)),
    }
    files[MANIFEST] = make_manifest(ref, files, scaler_entry)
    row = {
        "ref": str(ref),
        "integration_id": iid,
        "target": target,
        "target_segment": ref.segment,
        "method": METHOD,
        "param_id": param_id,
        "scaler_id": scaler.scaler_id,
        "spec_hash": spec.spec_hash,
        "params": {**params, "spec_source": source},
        "metrics": records.json_safe(metrics),
        "stage": "staged",
        "tags": ["amml", f"spec:{spec.ref}"],
        "lineage": lineage,
        "data_start": first,
        "data_end": last,
        "boundary_ts": None,
        "seed": run.seed,
        "code_version": code["tsloom"],
        "git_commit": code["git_commit"],
    }
    publish(Registration(ref, files, state, scaler.scaler_id, row, versions), settings)
    location = backend(settings).location(str(ref))
    return str(ref), {**meta, "path": location, "trained_at": datetime.now(UTC).isoformat()}


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def find_registered(
    spec: ModelSpec, datasets: list[str], *, settings: Settings | None = None
) -> str | None:
    """The reference of the registered model of `spec` to predict with: one trained on the
    same datasets first, then one in stage production, then the newest; None if none."""
    from tsloom.integrate import integration_id
    from tsloom.registry import records

    settings = settings or load_settings()
    iid = integration_id(training_tables(datasets))
    rows = [
        r
        for r in records.all_rows(settings, method=METHOD)
        if r["params"].get("spec_ref") == spec.ref
        and r["params"].get("spec_hash") == spec.spec_hash
        and r["stage"] != "archived"
    ]
    if not rows:
        return None
    best = max(
        rows,
        key=lambda r: (
            r["integration_id"] == iid,
            r["stage"] == "production",
            r["created_at"] or "",
        ),
    )
    return best["ref"]


@dataclass
class AmmlModel:
    """A registered AMML model, loaded: the spec's module in eval mode, its features and
    target, and the scaler of its training run (for raw-unit predictions)."""

    ref: str
    spec: ModelSpec
    params: dict[str, Any]
    scaler: Any  # tsloom.forecast.scalers.FittedScaler
    model: Any  # torch.nn.Module
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    history: dict[str, Any]
    manifest: dict[str, Any]
    record: dict[str, Any] | None = None
    settings: Settings | None = field(default=None, repr=False)

    @property
    def features(self) -> list[str]:
        return list(self.params["features"])

    @property
    def target(self) -> str:
        return str(self.params["target"])

    @property
    def steps(self) -> int:
        return int(self.params["steps"])

    @property
    def outputs(self) -> int:
        return int(self.params["outputs"])

    def predict_values(self, window: Any) -> np.ndarray:
        """Forecasts (outputs,) from a (steps, features) array in the units the model was
        trained on (after the flow's scaling)."""
        import torch

        x = np.asarray(window, dtype=np.float32)
        if x.shape != (self.steps, len(self.features)):
            raise TsloomError(
                f"the window has shape {x.shape}; the model wants "
                f"({self.steps}, {len(self.features)}) ({', '.join(self.features)})"
            )
        with torch.no_grad():
            return self.model(torch.from_numpy(x).unsqueeze(0))[0].numpy().astype(np.float64)

    def predict(
        self, frame: pl.DataFrame, *, horizon: int | None = None, raw: bool = False
    ) -> pl.DataFrame:
        """The next `horizon` target values after the frame's last `steps` rows, stamped
        every median step of ``ts``. With `raw`, the frame is in original units: the
        training run's scaler is applied, and inverted on the forecasts."""
        horizon = horizon or self.outputs
        x = frame.select(self.features).tail(self.steps).to_numpy().astype(np.float64)
        if raw:
            x = self.scaler.transform(x)
        pred = self.predict_values(x)[:horizon]
        if raw:
            pred = self.scaler.inverse(pred, self.target)
        ts = frame["ts"]
        step = ts.diff().drop_nulls().median()
        last = ts.max()
        future = [last + step * (k + 1) for k in range(horizon)]  # type: ignore[operator]
        return pl.DataFrame({"ts": future, self.target: pred.tolist()}).with_columns(
            pl.col("ts").cast(ts.dtype), pl.col(self.target).cast(pl.Float64)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "params": {k: v for k, v in self.params.items() if k != "spec"},
            "spec": self.params.get("spec"),
            "metrics": self.metrics,
            "scaler_id": self.scaler.scaler_id,
            "lineage": self.lineage,
        }


def is_amml(params_doc: dict[str, Any]) -> bool:
    """Whether a model's ``params.json`` is an AMML one (for the registry's loader)."""
    return params_doc.get("kind") == KIND


def load_verified(
    ref: str,
    manifest: dict[str, Any],
    files: dict[str, bytes],
    *,
    settings: Settings,
    device: str = "cpu",
) -> AmmlModel:
    """An :class:`AmmlModel` from a registry folder already checked against its manifest
    (called by :func:`tsloom.registry.load`)."""
    import torch

    from tsloom.amml.model_spec import build_module
    from tsloom.forecast.scalers import FittedScaler
    from tsloom.registry import records
    from tsloom.registry.store import IntegrityError, Ref, backend, load_scaler

    doc = json.loads(files["params.json"])
    body = {k: v for k, v in doc.items() if k != "param_id"}
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    if digest.hexdigest() != doc["param_id"]:
        raise IntegrityError(f"params.json of {ref} does not hash to its param id")
    spec = ModelSpec.model_validate(doc["spec"])
    module = build_module(spec)
    state = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.to(torch.device(device)).eval()
    parsed = Ref.parse(ref)
    scaler = FittedScaler.from_state(
        load_scaler(backend(settings), parsed.integration_id, manifest["scaler"]["id"])
    )
    return AmmlModel(
        ref=ref,
        spec=spec,
        params=body,
        scaler=scaler,
        model=module,
        metrics=json.loads(files["metrics.json"]),
        lineage=json.loads(files["lineage.json"]),
        history=json.loads(files["history.json"]),
        manifest=manifest,
        record=records.get(settings, ref),
        settings=settings,
    )


COMPONENTS: list[type[Component]] = [TrainLstm, Lstm]
