"""Lineage: what made a model — datasets at their lake versions, the integration spec, the
exact training range, code version and seed — and rebuilding its training frame from the
lake by time travel."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import tsloom
from tsloom.catalog import Catalog
from tsloom.config import Settings
from tsloom.errors import TsloomError


def frame_digest(frame: pl.DataFrame) -> str:
    """SHA-256 of an integrated frame: column names, timestamps (µs) and values (float64)."""
    h = hashlib.sha256()
    h.update("\x1f".join(frame.columns).encode())
    ts = frame["ts"].dt.cast_time_unit("us").dt.convert_time_zone("UTC")
    h.update(ts.dt.epoch("us").to_numpy().astype("<i8").tobytes())
    for name in frame.columns:
        if name != "ts":
            col = frame[name].cast(pl.Float64).to_numpy()
            h.update(np.ascontiguousarray(col, dtype="<f8").tobytes())
    return h.hexdigest()


@functools.cache
def git_state() -> dict[str, Any]:
    """The commit of the tsloom checkout and whether it had uncommitted changes (None
    when tsloom is not run from a git checkout or git is missing)."""
    where = Path(tsloom.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    if len(commit) != 40:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build_lineage(run: Any, settings: Settings) -> dict[str, Any]:
    """The lineage of a `TrainingRun` (deterministic: the same run gives the same dict)."""
    integ, params, result = run.integration, run.params, run.result
    catalog = Catalog(settings)
    frame = integ.frame
    ts = frame["ts"]
    boundary = int(result.boundary)
    return {
        "datasets": [
            {"name": name, "lake_version": catalog.get(name).lake_version}
            for name in integ.spec.tables
        ],
        "integration": {
            "id": integ.id,
            "spec": integ.spec.canonical(),
            "spec_hash": integ.spec.spec_hash(),
            "features": list(integ.features),
        },
        "training": {
            "start": _iso(ts[0]) if len(ts) else None,
            "end": _iso(ts[-1]) if len(ts) else None,
            "rows": frame.height,
            "boundary_index": boundary,
            "boundary_ts": _iso(ts[boundary]) if 0 <= boundary < len(ts) else None,
            "features": list(params.features),
            "frame_sha256": frame_digest(frame),
        },
        "code": {"tsloom": tsloom.__version__, **git_state()},
        "seed": params.seed,
        "param_id": params.param_id,
        "scaler_id": result.scaler.scaler_id,
    }


def integrate_at(spec: Any, versions: Mapping[str, int | None], settings: Settings):
    """Integrate `spec` reading every dataset at the given lake version."""
    from tsloom.integrate import integrate

    return integrate(spec, versions=dict(versions), settings=settings)


def rebuild_frame(lineage: dict[str, Any], settings: Settings, *, verify: bool = True):
    """Re-integrate the stored spec at the stored lake versions; the `Integrated` result.

    With `verify`, the frame must equal the training frame bit for bit (its SHA-256 and
    time range), else a :class:`TsloomError` says what differs.
    """
    from tsloom.integrate import IntegrationSpec

    spec = IntegrationSpec.from_dict(lineage["integration"]["spec"])
    versions = {d["name"]: d["lake_version"] for d in lineage["datasets"]}
    integrated = integrate_at(spec, versions, settings)
    if verify:
        training = lineage["training"]
        digest = frame_digest(integrated.frame)
        if digest != training["frame_sha256"]:
            got = (_iso(integrated.start), _iso(integrated.end), integrated.frame.height)
            want = (training["start"], training["end"], training["rows"])
            raise TsloomError(
                "the rebuilt training frame differs from the one the model was trained on "
                f"(rebuilt {got[0]} → {got[1]}, {got[2]} rows; trained on {want[0]} → "
                f"{want[1]}, {want[2]} rows)",
                hint="retention or an overwrite may have removed the files of those lake "
                "versions: " + ", ".join(f"{name} v{v}" for name, v in versions.items()),
            )
    return integrated
