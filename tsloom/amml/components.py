"""The components the in-process AMML runtime implements, one small class each.

Every component takes a polars frame (ingress components take None) and returns one; state
shared along a run (fitted scalers, the dataset read, the models trained) lives on the
`FlowContext`. Rules worth knowing:

* `source id=NAME` resolves a lake dataset: the exact name when it exists; otherwise the
  datasets whose table part (after the dot) equals NAME, or, if none does, starts with NAME.
  One candidate is used; none or several is an error that lists the candidates.
* value columns are the numeric columns other than `ts` (keyed datasets are not supported yet).
* `minmax_scaler` fits min and max per value column (or `cols=`) and stashes them on the
  context under `id=` (default ``"default"``); `minmax_inverse` inverts the columns of the
  frame that the scaler with that id fitted.
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
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from tsloom.amml.bytecode import ComponentInstance
from tsloom.amml.errors import AmmlRuntimeError
from tsloom.config import Settings


@dataclass
class FlowContext:
    """What the components of one run share."""

    settings: Settings
    source: str
    console: Any = None
    scalers: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)


class Component(ABC):
    """Base class: `args` are the compiled arguments; `supported` those the runtime honours."""

    name: ClassVar[str] = ""
    supported: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, inst: ComponentInstance, ctx: FlowContext) -> None:
        self.inst, self.ctx, self.args = inst, ctx, inst.args

    def fail(self, message: str, hint: str | None = None) -> AmmlRuntimeError:
        return AmmlRuntimeError(
            f"{self.inst.name}: {message}",
            hint,
            source=self.ctx.source,
            line=self.inst.line,
            column=self.inst.column,
            width=len(self.inst.name),
        )

    @abstractmethod
    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        """This component's output for its input frame (None for an ingress)."""


def value_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c != "ts" and t.is_numeric()]


def resolve_dataset(name: str, settings: Settings) -> str:
    """The lake dataset `source id=name` means (see the module docstring for the rule)."""
    from tsloom.catalog import Catalog
    from tsloom.errors import TsloomError

    names = Catalog(settings).names()
    if name in names:
        return name
    tables = {n: n.partition(".")[2] for n in names}
    found = [n for n, t in tables.items() if t == name] or [
        n for n, t in tables.items() if t.startswith(name)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise TsloomError(
            f"no lake dataset matches {name!r}",
            hint=f"datasets: {', '.join(names)}" if names else "ingest one first",
        )
    raise TsloomError(
        f"{name!r} is ambiguous: it matches {', '.join(found)}",
        hint="give the full database.table name",
    )


class Source(Component):
    name = "source"
    supported = frozenset({"id", "start", "end", "cols"})

    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        from tsloom.catalog import Catalog
        from tsloom.errors import TsloomError
        from tsloom.lake import read_dataset

        settings = self.ctx.settings
        try:
            dataset = resolve_dataset(self.args["id"], settings)
            if Catalog(settings).get(dataset).keys:
                raise self.fail(
                    f"dataset {dataset} has key columns; the runtime reads unkeyed datasets only"
                )
            out = read_dataset(
                dataset,
                start=self.args.get("start"),
                end=self.args.get("end"),
                columns=self.args.get("cols"),
                settings=settings,
            )
        except AmmlRuntimeError:
            raise
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        if out.is_empty():
            raise self.fail(f"dataset {dataset} has no rows in the range asked for")
        self.ctx.datasets.append(dataset)
        return out


class MinMaxScaler(Component):
    name = "minmax_scaler"
    supported = frozenset({"cols", "id"})

    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        assert frame is not None
        cols = self.args.get("cols") or value_columns(frame)
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise self.fail(f"no column(s) {', '.join(missing)}", f"columns: {frame.columns}")
        state: dict[str, tuple[float, float]] = {}
        exprs = []
        for c in cols:
            lo, hi = frame[c].min(), frame[c].max()
            if lo is None or hi is None:
                raise self.fail(f"column {c} has no values to fit")
            state[c] = (float(lo), float(hi))  # type: ignore[arg-type]
            span = float(hi) - float(lo) or 1.0  # type: ignore[operator]
            exprs.append(((pl.col(c).cast(pl.Float64) - float(lo)) / span).alias(c))  # type: ignore[arg-type]
        self.ctx.scalers[self.args.get("id") or "default"] = state
        return frame.with_columns(exprs)


class MinMaxInverse(Component):
    name = "minmax_inverse"
    supported = frozenset({"cols", "id"})

    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        assert frame is not None
        sid = self.args.get("id") or "default"
        state = self.ctx.scalers.get(sid)
        if state is None:
            raise self.fail(
                f"no minmax_scaler with id {sid!r} ran before it in this workflow",
                "put `minmax_scaler` upstream (same id=)",
            )
        cols = self.args.get("cols") or [c for c in frame.columns if c in state]
        unfitted = [c for c in cols if c not in state]
        if unfitted:
            raise self.fail(f"the scaler {sid!r} did not fit column(s) {', '.join(unfitted)}")
        exprs = [
            (pl.col(c) * ((state[c][1] - state[c][0]) or 1.0) + state[c][0]).alias(c) for c in cols
        ]
        return frame.with_columns(exprs)


def _model_root(settings: Settings, name: str, version: str) -> Path:
    return Path(settings.home) / "amml-models" / name / version


class _LstmBase(Component):
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

    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        import numpy as np
        import torch

        from tsloom.amml.model_spec import build_module

        assert frame is not None
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

    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        import torch

        from tsloom.amml.model_spec import build_module

        assert frame is not None
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


class Print(Component):
    name = "print"
    supported = frozenset({"limit"})

    def __call__(self, frame: pl.DataFrame | None) -> pl.DataFrame:
        assert frame is not None
        limit = self.args.get("limit")
        shown = frame.head(limit) if limit else frame
        console = self.ctx.console
        if console is None:
            with pl.Config(tbl_rows=max(shown.height, 10), tbl_cols=-1):
                print(shown)
            return frame
        from rich.table import Table

        table = Table(title=f"{self.inst.name} (line {self.inst.line}) — {frame.height} rows")
        for c in shown.columns:
            table.add_column(c, justify="right" if shown[c].dtype.is_numeric() else "left")
        for row in shown.iter_rows():
            table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
        console.print(table)
        return frame


COMPONENTS: dict[str, type[Component]] = {
    c.name: c for c in (Source, MinMaxScaler, MinMaxInverse, TrainLstm, Lstm, Print)
}
