"""The model registry on local disk, with SQLite and PostgreSQL metadata: layout and ids,
content-addressed scalers, checksums, concurrent registration, delete/gc, lineage,
reload-and-predict, and path traversal."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
import torch

import tsloom
import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.db.engine import dispose_engines, get_engine
from tsloom.errors import InvalidNameError, TsloomError
from tsloom.forecast.job import TrainingRun, train_on_integration
from tsloom.forecast.params import LearningParams
from tsloom.forecast.training import train_model
from tsloom.ingest import ingest_frame
from tsloom.integrate import Integrated, integration_id
from tsloom.registry.store import MODEL_FILES, LocalBackend, Ref

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TABLES = ["plant.a", "plant.b"]
SPEC = {"sources": TABLES, "freq": "1h"}
BASE = {
    "target": "v",
    "features": ["v", "w", "x"],
    "input_width": "12h",
    "output_width": "3h",
    "method": "dlinear",
    "epochs": 2,
    "hidden_size": 8,
    "batch_size": 64,
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ingest(settings: Settings, hours: int = 300, start: datetime = T0) -> None:
    """plant.a hourly (v, w) and plant.b every 30 min (x): two periods, one integration."""
    rng = np.random.default_rng(hours)
    t = np.arange(hours)
    a = pl.DataFrame(
        {
            "ts": [start + timedelta(hours=int(i)) for i in t],
            "v": 20 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, hours),
            "w": np.cos(2 * np.pi * t / 24),
        }
    )
    t2 = np.arange(2 * hours)
    b = pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=30 * int(i)) for i in t2],
            "x": 10 + np.sin(2 * np.pi * t2 / 48),
        }
    )
    ingest_frame(a, "plant.a", ts="ts", settings=settings)
    ingest_frame(b, "plant.b", ts="ts", settings=settings)


def train(settings: Settings, spec: dict | None = None, **change) -> TrainingRun:
    return train_on_integration(spec or SPEC, {**BASE, **change}, settings=settings)


def make_settings(home: Path, db_url: str | None = None, registry: str | None = None):
    layout = Settings.at_home(home)
    return replace(
        layout, db_url=db_url or layout.db_url, registry_url=registry or layout.registry_url
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tsloom_home: Settings) -> Settings:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    out = make_settings(tsloom_home.home, url)
    yield out
    dispose_engines()


@pytest.fixture
def lite(tsloom_home: Settings) -> Settings:
    return make_settings(tsloom_home.home)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def count_rows(settings: Settings) -> int:
    with get_engine(settings.db_url).connect() as conn:
        return conn.execute(sa.text("select count(*) from registered_models")).scalar()


def window_of(run: TrainingRun, end: int | None = None) -> pl.DataFrame:
    frame = run.integration.frame
    steps = run.params.input_steps
    stop = frame.height if end is None else end
    return frame.slice(stop - steps, steps).select(["ts", *run.params.features])


# ------------------------------------------------------------------ the whole life cycle


def test_register_search_load_predict_delete(settings: Settings) -> None:
    ingest(settings)
    run = train(settings)
    ref = reg.register(run, tags=["nightly"], settings=settings)
    iid, pid = integration_id(TABLES), run.params.param_id
    assert ref == f"{iid}/plant.a.v/dlinear/{pid}"
    assert len(iid) == len(pid) == 40
    assert run.model_path(settings) == f"{settings.registry_url}/{ref}"

    # layout: the model folder, its manifest, the content-addressed scaler
    root = Path(settings.registry_url)
    folder = root / ref
    scaler_id = run.result.scaler.scaler_id
    assert files_under(root) == {
        *(f"{ref}/{name}" for name in (*MODEL_FILES, "manifest.json")),
        f"{iid}/scalers/{scaler_id}.json",
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["ref"] == ref and manifest["scaler"]["id"] == scaler_id
    for name in MODEL_FILES:
        data = (folder / name).read_bytes()
        assert manifest["files"][name] == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    params = json.loads((folder / "params.json").read_text())
    assert params["param_id"] == pid and params["params"]["device"] == "cpu"
    assert params["params"]["input_width"] == "43200s"
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["scaler_id"] == scaler_id and lineage["seed"] == 0
    assert torch.load(folder / "weights.pt", weights_only=True).keys() == (
        run.result.model.state_dict().keys()
    )

    # idempotent: the same model again is a no-op returning the same reference
    before = {p: (folder / p).stat().st_mtime_ns for p in MODEL_FILES}
    assert reg.register(run, settings=settings) == ref
    assert {p: (folder / p).stat().st_mtime_ns for p in MODEL_FILES} == before
    assert count_rows(settings) == 1

    # metadata and lineage
    shown = reg.show(ref, settings=settings)
    assert shown["verified"] and shown["stage"] == "staged" and shown["tags"] == ["nightly"]
    assert shown["target"] == "plant.a.v" and shown["method"] == "dlinear"
    assert shown["datasets"] == {"plant.a": 0, "plant.b": 0}
    assert shown["data_start"] == T0.isoformat()
    assert shown["data_end"] == run.integration.end.isoformat()
    boundary_ts = run.integration.frame["ts"][run.result.boundary]
    assert shown["boundary_ts"] == boundary_ts.isoformat()
    assert shown["lineage"]["integration"]["spec_hash"] == run.integration.spec.spec_hash()
    assert shown["lineage"]["integration"]["spec"] == run.integration.spec.canonical()
    assert shown["code_version"] == tsloom.__version__
    assert shown["seed"] == 0
    assert shown["metrics"]["rmse"] == pytest.approx(run.result.metrics["rmse"])

    # search: integration id → target → method → param id
    tree = reg.search(["plant.b", "plant.a"], settings=settings)
    leaf = tree[iid]["plant.a.v"]["dlinear"][pid]
    assert leaf["ref"] == ref and leaf["params"]["target"] == "plant.a.v"
    assert leaf["metrics"]["rmse"] == pytest.approx(run.result.metrics["rmse"])
    json.dumps(tree)
    assert reg.search(target="v", method="dlinear", settings=settings)
    assert reg.search(target="w", settings=settings) == {}
    assert reg.search(["plant.a"], settings=settings) == {}
    rmse = run.result.metrics["rmse"]
    assert reg.search(metric="rmse", max_value=rmse + 1, settings=settings)
    assert reg.search(metric="rmse", max_value=rmse / 2, settings=settings) == {}
    assert reg.search(stage="production", settings=settings) == {}
    assert reg.search(tags=["nightly"], settings=settings)
    assert reg.search(start="2030-01-01", settings=settings) == {}

    # promote
    assert reg.promote(ref, "production", settings=settings)["stage"] == "production"
    assert reg.search(stage="production", settings=settings)[iid]
    with pytest.raises(TsloomError, match="unknown stage"):
        reg.promote(ref, "live", settings=settings)

    # load + predict equal the in-memory model; rebuild the training frame by time travel
    model = reg.load(ref, settings=settings)
    assert not model.model.training and model.params == run.params
    assert model.scaler == run.result.scaler
    window = window_of(run)
    out = model.predict(window)
    expected = run.result.predict(window.drop("ts").to_numpy())
    np.testing.assert_allclose(out["plant.a.v"].to_numpy(), expected, rtol=0, atol=1e-6)
    last = window["ts"][-1]
    assert out["ts"].to_list() == [last + k * timedelta(hours=1) for k in (1, 2, 3)]
    assert reg.load(pid[:10], settings=settings).ref == ref  # a param id prefix works too

    ingest(settings, hours=48, start=T0 + timedelta(hours=300))  # the lake moves on
    assert reg.rebuild_training_frame(ref, settings=settings).equals(run.integration.frame)
    latest = reg.predict_latest(ref, settings=settings)
    assert latest["ts"][0] == T0 + timedelta(hours=347 + 1)

    # delete removes the files and the row; gc then finds only the unused scaler
    assert reg.delete(ref, settings=settings) == {"ref": ref, "row": True, "files": True}
    assert count_rows(settings) == 0
    assert files_under(root) == {f"{iid}/scalers/{scaler_id}.json"}
    with pytest.raises(TsloomError, match="no registered model"):
        reg.load(ref, settings=settings)
    removed = reg.gc(older_than=timedelta(0), settings=settings)
    assert removed["scalers"] == [f"{iid}/scalers/{scaler_id}.json"]
    assert files_under(root) == set() and not any(root.iterdir())


# ---------------------------------------------------------------------------- scalers


def test_scalers_are_content_addressed(lite: Settings) -> None:
    ingest(lite)
    a = train(lite)
    b = train(lite, method="vanilla", epochs=1)  # same data, same scaler
    c = train(lite, split=0.7)  # fitted on other rows: another scaler
    refs = [reg.register(run, settings=lite) for run in (a, b, c)]
    assert len(set(refs)) == 3
    assert a.result.scaler.scaler_id == b.result.scaler.scaler_id != c.result.scaler.scaler_id
    iid = integration_id(TABLES)
    scalers = Path(lite.registry_url, iid, "scalers")
    names = sorted(p.name for p in scalers.iterdir())
    assert names == sorted(
        {f"{r.result.scaler.scaler_id}.json" for r in (a, c)}
    )  # one file per distinct scaler
    state = json.loads((scalers / names[0]).read_text())
    assert hashlib.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest() + ".json" in names
    # each model references its scaler; a scaler file is never overwritten
    for ref, run in zip(refs, (a, b, c), strict=True):
        assert reg.load(ref, settings=lite).scaler == run.result.scaler
    store = LocalBackend(lite.registry_url)
    path = f"{iid}/scalers/{names[0]}"
    assert store.put_if_absent(path, b"{}") is False
    assert json.loads(store.read(path)) == state
    # another frequency of the same tables keeps its own scaler beside the others
    d = train(lite, spec={"sources": TABLES, "freq": "2h"}, input_width="12h", output_width="4h")
    reg.register(d, settings=lite)
    assert len(list(scalers.iterdir())) == 3
    assert reg.gc(older_than=timedelta(0), settings=lite)["scalers"] == []


# -------------------------------------------------------------------------- checksums


def test_modified_or_truncated_files_are_refused(lite: Settings) -> None:
    ingest(lite)
    run = train(lite)
    ref = reg.register(run, settings=lite)
    folder = Path(lite.registry_url, ref)

    params = folder / "params.json"
    original = params.read_bytes()
    params.write_bytes(original.replace(b'"epochs": 2', b'"epochs": 3'))  # same size
    with pytest.raises(reg.IntegrityError, match=r"params\.json .*SHA-256.*modified"):
        reg.load(ref, settings=lite)
    assert reg.show(ref, settings=lite)["verified"] is False
    params.write_bytes(original)

    weights = folder / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(reg.IntegrityError, match=r"weights\.pt .*truncated"):
        reg.load(ref, settings=lite)
    assert reg.gc(older_than=timedelta(0), settings=lite)["damaged"] == [ref]
    weights.write_bytes(data)
    assert reg.load(ref, settings=lite).ref == ref

    scaler = Path(lite.registry_url, f"{run.integration.id}/scalers")
    scaler = next(scaler.iterdir())
    text = scaler.read_text()
    scaler.write_text(text.replace('"kind": "zscore"', '"kind": "minmax"'))
    with pytest.raises(reg.IntegrityError, match=r"scaler file .* modified"):
        reg.load(ref, settings=lite)
    scaler.write_text(text)

    (folder / "manifest.json").unlink()
    with pytest.raises(reg.IntegrityError, match=r"no manifest\.json"):
        reg.load(ref, settings=lite)


# ------------------------------------------------------------------- concurrency (8 procs)


# The child runs this with `exec` (a builtin, so spawn does not import this test module
# and its heavy imports): it waits for the others, then publishes the same registration.
_CHILD = """
from tsloom.registry.registration import publish
barrier.wait(timeout=120)
try:
    results.put(publish(registration, settings))
except Exception as exc:
    results.put(f"error: {exc!r}")
"""


def register_concurrently(run: TrainingRun, settings: Settings, processes: int = 8) -> list:
    """Publish the same registration from `processes` spawned processes at once."""
    get_engine(settings.db_url)  # migrate once, up front
    prepared = reg.prepare(run, settings=settings)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    env = {"registration": prepared, "settings": settings, "barrier": barrier, "results": results}
    procs = [ctx.Process(target=exec, args=(_CHILD, env)) for _ in range(processes)]
    for p in procs:
        p.start()
    refs = [results.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    dispose_engines()
    return refs


def test_eight_processes_register_one_model(lite: Settings) -> None:
    settings = lite
    ingest(settings)
    run = train(settings)
    refs = register_concurrently(run, settings)
    expected = str(Ref.of(run.integration.id, "plant.a.v", "dlinear", run.params.param_id))
    assert refs == [expected] * 8, refs
    assert count_rows(settings) == 1
    root = Path(settings.registry_url)
    assert files_under(root) == {
        *(f"{expected}/{n}" for n in (*MODEL_FILES, "manifest.json")),
        f"{run.integration.id}/scalers/{run.result.scaler.scaler_id}.json",
    }
    assert [p.name for p in root.rglob(".*")] == []  # no temporary folders left
    assert reg.load(expected, settings=settings).ref == expected
    dispose_engines()


# ------------------------------------------------------------------------ delete and gc


def test_gc_removes_orphans_and_only_orphans(lite: Settings) -> None:
    ingest(lite)
    keep = reg.register(train(lite), settings=lite)
    orphan_run = train(lite, method="vanilla", epochs=1, split=0.75)
    orphan = reg.register(orphan_run, settings=lite)
    gone = reg.register(train(lite, seed=3), settings=lite)
    root = Path(lite.registry_url)
    iid = integration_id(TABLES)
    with get_engine(lite.db_url).begin() as conn:  # a row lost: its folder is an orphan
        conn.execute(sa.text("delete from registered_models where ref = :r"), {"r": orphan})
    import shutil

    shutil.rmtree(root / gone)  # files lost: the row is dangling
    half = root / iid / "plant.a.v" / "stacked" / ("ab" * 20)  # an interrupted write
    half.mkdir(parents=True)
    (half / "weights.pt").write_bytes(b"partial")
    temp = root / iid / "plant.a.v" / "dlinear" / f".tmp-{'cd' * 20}-0123"
    temp.mkdir(parents=True)
    (temp / "params.json").write_text("{}")

    young = reg.gc(settings=lite)  # everything is younger than an hour: nothing goes
    assert young["orphaned"] == young["incomplete"] == young["temporary"] == []
    assert young["rows"] == [] and (root / orphan).is_dir()

    dry = reg.gc(older_than=timedelta(0), dry_run=True, settings=lite)
    assert dry["orphaned"] == [orphan] and (root / orphan).is_dir()
    removed = reg.gc(older_than=timedelta(0), settings=lite)
    assert removed["orphaned"] == [orphan]
    assert removed["incomplete"] == [half.relative_to(root).as_posix()]
    assert removed["temporary"] == [temp.relative_to(root).as_posix()]
    assert removed["rows"] == [gone]
    scaler_of_orphan = orphan_run.result.scaler.scaler_id
    assert removed["scalers"] == [f"{iid}/scalers/{scaler_of_orphan}.json"]
    assert count_rows(lite) == 1
    keep_scaler = reg.show(keep, settings=lite)["scaler_id"]
    assert files_under(root) == {
        *(f"{keep}/{n}" for n in (*MODEL_FILES, "manifest.json")),
        f"{iid}/scalers/{keep_scaler}.json",
    }
    assert reg.gc(older_than=timedelta(0), settings=lite) == {
        "orphaned": [],
        "incomplete": [],
        "temporary": [],
        "scalers": [],
        "rows": [],
        "damaged": [],
        "unknown": [],
        "dry_run": False,
    }
    reg.delete(keep, settings=lite)
    reg.gc(older_than=timedelta(0), settings=lite)
    assert not root.exists() or not any(root.iterdir())
    with pytest.raises(TsloomError, match="no registered model"):
        reg.delete(keep, settings=lite)


# -------------------------------------------------------------------------- predictions


def test_predict_checks_the_window_and_summaries(lite: Settings) -> None:
    ingest(lite)
    run = train(lite, output="mean", method="vanilla", epochs=1)
    model = reg.load(reg.register(run, settings=lite), settings=lite)
    window = window_of(run, end=200)
    out = model.predict(window)
    assert out.columns == ["ts", "step", "plant.a.v"] and out.height == 1
    assert out["ts"][0] == window["ts"][-1] + timedelta(hours=3)
    expected = run.result.predict(window.drop("ts").to_numpy())
    np.testing.assert_allclose(out["plant.a.v"].to_numpy(), expected, atol=1e-6, rtol=0)
    arr = model.predict(window.drop("ts").to_numpy())
    assert arr.columns == ["step", "plant.a.v"]
    np.testing.assert_allclose(arr["plant.a.v"].to_numpy(), expected, atol=1e-6, rtol=0)

    with pytest.raises(reg.WindowError, match=r"11 rows; expected 12 rows at 3600s"):
        model.predict(window.tail(11))
    with pytest.raises(reg.WindowError, match=r"lacks column\(s\) plant.b.x"):
        model.predict(window.drop("plant.b.x"))
    skewed = window.with_columns(pl.col("ts") + pl.duration(minutes=pl.int_range(12) * 5))
    with pytest.raises(reg.WindowError, match=r"step 1:05:00 .* expected 12 rows at 3600s"):
        model.predict(skewed)
    with pytest.raises(reg.WindowError, match=r"shape \(12, 2\); expected \(12, 3\)"):
        model.predict(np.zeros((12, 2)))
    holes = window.with_columns(
        pl.when(pl.int_range(12) == 4).then(None).otherwise(pl.col("plant.a.w")).alias("plant.a.w")
    )
    with pytest.raises(reg.WindowError, match="missing value"):
        model.predict(holes)


# --------------------------------------------------------------------------- traversal


@pytest.mark.parametrize(
    "target",
    ["../../../escaped", "/etc/passwd", "a/../../b", "..", "scalers", "ünï\u202ecødé\x00名"],
)
def test_odd_target_names_stay_inside_the_registry(lite: Settings, target: str) -> None:
    ingest(lite)
    run = train(lite)
    # the same data under a hostile feature name (the lake itself refuses such names)
    names = (target, "plant.a.w", "plant.b.x")
    frame = run.integration.frame.rename(dict(zip(run.params.features, names, strict=True)))
    integ = Integrated(
        frame=frame, spec=run.integration.spec, features=names, report=run.integration.report
    )
    params = LearningParams(**{**run.params.model_dump(), "target": target, "features": names})
    result = train_model(frame.select(names).to_numpy(), params)
    ref = reg.register(TrainingRun(integ, params, result), settings=lite)

    parts = ref.split("/")
    assert len(parts) == 4 and parts[1] not in ("", ".", "..", "scalers")
    assert parts[1].isascii() and "/" not in parts[1] and not parts[1].startswith(".")
    home = Path(lite.home).parent
    outside = {p for p in home.rglob("*") if Path(lite.registry_url) not in p.parents}
    assert not any("escaped" in p.name or p.name == "passwd" for p in outside)
    assert (Path(lite.registry_url) / ref / "manifest.json").is_file()
    model = reg.load(ref, settings=lite)
    assert model.params.target == target
    assert reg.show(ref, settings=lite)["target"] == target
    assert reg.search(target=target, settings=lite)


def test_hostile_refs_are_refused(lite: Settings, tmp_path: Path) -> None:
    iid, pid = "a" * 40, "b" * 40
    for bad in (
        f"../{iid}/x/dlinear/{pid}",
        f"{iid}/../dlinear/{pid}",
        f"{iid}/x/dlinear/../../{pid}",
        f"{iid}/.hidden/dlinear/{pid}",
        f"{iid}/x/rm -rf/{pid}",
        f"{iid.upper()}/x/dlinear/{pid}",
        f"/{iid}/x/dlinear/{pid[:-1]}",
        f"{iid}/x%2f/dlinear/{pid}",
    ):
        with pytest.raises(InvalidNameError):
            Ref.parse(bad)
        with pytest.raises(TsloomError):
            reg.load(bad, settings=lite)
    store = LocalBackend(lite.registry_url)
    for rel in ("../x", "/etc/passwd", "a/../../b", "a//b", "a/\x00"):
        with pytest.raises(InvalidNameError):
            store.write(rel, b"x")
    # a symlink inside the root that points outside is not followed for writing
    root = Path(lite.registry_url)
    root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(InvalidNameError, match="outside the registry root"):
        store.write("link/file", b"x")
    assert not any(outside.iterdir())
