"""Registering a trained model: prepare every byte first (`prepare`), then publish the
files and the metadata row (`publish`); `register` does both.

The split keeps the concurrent part small and cheap to import: `publish` needs only the
store and the database (no PyTorch), and is idempotent and safe when several processes
publish the same model at once.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tsloom.config import Settings, load_settings
from tsloom.registry import records
from tsloom.registry.store import MANIFEST, Ref, backend, dumps, make_manifest, save_scaler

if TYPE_CHECKING:
    from tsloom.forecast.job import TrainingRun


@dataclass(frozen=True)
class Registration:
    """Everything one registration writes: the model folder's files (manifest included),
    the scaler's state, and the metadata row with its datasets (plain data, picklable)."""

    ref: Ref
    files: dict[str, bytes]
    scaler_state: dict[str, Any]
    scaler_id: str
    row: dict[str, Any]
    datasets: dict[str, int | None]


def _weights(model: Any) -> bytes:
    import torch

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def model_files(run: TrainingRun, lineage: dict[str, Any]) -> dict[str, bytes]:
    """The files of a model folder (manifest excluded), deterministic for a given run."""
    from tsloom.forecast.networks import describe_network
    from tsloom.registry.model import params_document

    result = run.result
    history = {
        "epochs": records.json_safe(result.history),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "boundary": result.boundary,
        "seconds": round(float(result.seconds), 3),
    }
    return {
        "weights.pt": _weights(result.model),
        "params.json": dumps(params_document(run.params)),
        "architecture.json": dumps(records.json_safe(describe_network(result.model))),
        "metrics.json": dumps(records.json_safe(dict(result.metrics))),
        "history.json": dumps(history),
        "lineage.json": dumps(lineage),
    }


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def prepare(
    run: TrainingRun, *, tags: Iterable[str] = (), settings: Settings | None = None
) -> Registration:
    """Serialise `run` for the registry (reads the catalog for the lake versions)."""
    from tsloom.registry.lineage import build_lineage

    settings = settings or load_settings()
    params, result, integ = run.params, run.result, run.integration
    ref = Ref.of(integ.id, params.target, params.method, params.param_id)
    lineage = build_lineage(run, settings)
    scaler_id = result.scaler.scaler_id
    files = model_files(run, lineage)
    scaler_entry = {
        "id": scaler_id,
        "path": f"{integ.id}/scalers/{scaler_id}.json",
        "sha256": __import__("hashlib").sha256(dumps(result.scaler.state())).hexdigest(),
    }
    files[MANIFEST] = make_manifest(ref, files, scaler_entry)
    training = lineage["training"]
    row = {
        "ref": str(ref),
        "integration_id": integ.id,
        "target": params.target,
        "target_segment": ref.segment,
        "method": params.method,
        "param_id": params.param_id,
        "scaler_id": scaler_id,
        "spec_hash": lineage["integration"]["spec_hash"],
        "params": {**params.canonical(), "device": params.device},
        "metrics": records.json_safe(dict(result.metrics)),
        "stage": "staged",
        "tags": list(dict.fromkeys(str(t) for t in tags)),
        "lineage": lineage,
        "data_start": _dt(training["start"]),
        "data_end": _dt(training["end"]),
        "boundary_ts": _dt(training["boundary_ts"]),
        "seed": params.seed,
        "code_version": lineage["code"]["tsloom"],
        "git_commit": lineage["code"]["git_commit"],
    }
    datasets = {d["name"]: d["lake_version"] for d in lineage["datasets"]}
    return Registration(ref, files, result.scaler.state(), scaler_id, row, datasets)


def publish(registration: Registration, settings: Settings | None = None) -> str:
    """Write the scaler (if new), publish the folder atomically (kept if a complete one is
    already there), then add the metadata row (kept if present); returns the reference."""
    settings = settings or load_settings()
    store = backend(settings)
    ref = registration.ref
    save_scaler(store, ref.integration_id, registration.scaler_state, registration.scaler_id)
    store.publish(str(ref), registration.files)
    records.insert(settings, registration.row, registration.datasets)
    return str(ref)


def register(
    run: TrainingRun, *, tags: Iterable[str] = (), settings: Settings | None = None
) -> str:
    """File a trained model in the registry and record it; returns its reference
    ``<integration_id>/<target segment>/<method>/<param_id>``.

    Idempotent: registering the same model again (same integration, target, method and
    param id) keeps the first entry and returns the same reference (new `tags` are added
    to its row). Safe when several processes register the same model at once.
    """
    settings = settings or load_settings()
    return publish(prepare(run, tags=tags, settings=settings), settings)
