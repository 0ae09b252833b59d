"""AMML's forecasting components: `train_lstm` trains the network a model spec describes,
`lstm` predicts with the newest one trained for a spec.

* `train_lstm model=NAME:VERSION` windows the frame with the spec's input `steps`: the
  features are the target (the last value column, or `target=`) preceded by the first
  `features - 1` other value columns (the input layer's count), and each window is
  followed by the `outputs` (units of the last dense layer) next target values. It
  trains with the spec's training block (`epoch=`, `lr=`, `batch_size=`, `seed=`
  override), emits one row per epoch (`epoch`, `loss`), and stores the model under
  ``settings.home / "amml-models" / name / version / sha1(spec + dataset + data range)``
  as ``model.pt`` (the state dict) and ``meta.json`` (columns, range, losses, …).
* `lstm model=NAME:VERSION` loads the newest stored model of that spec (preferring one
  trained on the same dataset), predicts the next `outputs` target values from the frame's
  last window and emits them with future timestamps, spaced by the data's median step.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from tsloom.amml.base import Component, FrameComponent
from tsloom.amml.components import value_columns
from tsloom.config import Settings


def _model_root(settings: Settings, name: str, version: str) -> Path:
    return Path(settings.home) / "amml-models" / name / version


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

        dataset = self.ctx.datasets[-1] if self.ctx.datasets else None
        first, last = frame["ts"].min(), frame["ts"].max()
        key = json.dumps(
            [spec.canonical_json(), dataset, str(first), str(last), frame.height, features, target]
        )
        digest = hashlib.sha1(key.encode()).hexdigest()
        folder = _model_root(self.ctx.settings, spec.name, spec.version) / digest
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), folder / "model.pt")
        meta = {
            "spec": spec.ref,
            "spec_hash": spec.spec_hash,
            "dataset": dataset,
            "start": str(first),
            "end": str(last),
            "rows": frame.height,
            "windows": int(n),
            "features": features,
            "target": target,
            "steps": steps,
            "outputs": horizon,
            "epochs": epochs,
            "learning_rate": lr,
            "batch_size": batch,
            "seed": seed,
            "losses": losses,
            "train_seconds": round(seconds, 3),
            "scaler": self.ctx.scalers.get("default"),
            "trained_at": datetime.now(UTC).isoformat(),
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
        self.ctx.models.append({**meta, "path": str(folder)})
        return pl.DataFrame(
            {"epoch": list(range(1, epochs + 1)), "loss": losses},
            schema={"epoch": pl.Int64, "loss": pl.Float64},
        )


class Lstm(_LstmBase):
    name = "lstm"
    supported = frozenset({"model", "horizon", "target"})

    def stored(self, spec) -> tuple[Path, dict]:
        root = _model_root(self.ctx.settings, spec.name, spec.version)
        found = []
        for meta_path in root.glob("*/meta.json") if root.is_dir() else []:
            meta = json.loads(meta_path.read_text())
            if meta.get("spec_hash") == spec.spec_hash:
                same = meta.get("dataset") in self.ctx.datasets
                found.append((same, meta["trained_at"], meta_path.parent, meta))
        if not found:
            raise self.fail(
                f"no trained model for spec {spec.ref}",
                f'train one first: `... | train_lstm model="{spec.ref}" | print`',
            )
        _, _, folder, meta = max(found, key=lambda f: (f[0], f[1]))
        return folder, meta

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        import torch

        from tsloom.amml.model_spec import build_module

        spec = self.spec()
        folder, meta = self.stored(spec)
        target = meta["target"]
        if self.args.get("target") and self.args["target"] != [target]:
            raise self.fail(f"the stored model of {spec.ref} predicts {target!r}")
        missing = [c for c in meta["features"] if c not in frame.columns]
        if missing:
            raise self.fail(f"the model needs column(s) {', '.join(missing)}")
        steps, outputs = meta["steps"], meta["outputs"]
        horizon = int(self.args.get("horizon") or outputs)
        if not 1 <= horizon <= outputs:
            raise self.fail(f"horizon={horizon}: the model predicts 1 to {outputs} steps")
        if frame.height < steps:
            raise self.fail(f"{frame.height} rows are fewer than the {steps} steps of a window")
        x = frame.select(meta["features"]).tail(steps).to_numpy().astype("float32")
        module = build_module(spec)
        module.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        module.eval()
        with torch.no_grad():
            pred = module(torch.from_numpy(x).unsqueeze(0))[0, :horizon].tolist()
        ts = frame["ts"]
        step = ts.diff().drop_nulls().median() if frame.height > 1 else None
        if step is None:
            raise self.fail("cannot tell the data's frequency from one row")
        last = ts.max()
        future = [last + step * (k + 1) for k in range(horizon)]  # type: ignore[operator]
        return pl.DataFrame({"ts": future, target: pred}).with_columns(
            pl.col("ts").cast(ts.dtype), pl.col(target).cast(pl.Float64)
        )


COMPONENTS: list[type[Component]] = [TrainLstm, Lstm]
