"""Find, inspect, promote, delete and garbage-collect registered models."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tsloom.config import Settings, load_settings
from tsloom.db.engine import session_scope
from tsloom.db.models import RegisteredModel as Row
from tsloom.errors import TsloomError
from tsloom.integrate.features import split_feature
from tsloom.integrate.spec import integration_id as _integration_id
from tsloom.registry import records
from tsloom.registry.store import (
    MANIFEST,
    SCALERS,
    LocalBackend,
    Ref,
    RegistryError,
    backend,
    check_id,
    verify_folder,
)
from tsloom.timeutil import to_utc


def _matches_target(wanted: str, target: str) -> bool:
    if wanted == target:
        return True
    dataset, column, label = split_feature(target)
    forms = {column, f"{dataset}.{column}"}
    if label:
        forms |= {f"{column}[{label}]", f"{dataset}.{column}[{label}]"}
    return wanted in forms


def _when(value: datetime | str | None) -> datetime | None:
    return None if value is None else to_utc(value)


def search(
    tables: Sequence[str] | None = None,
    *,
    integration_id: str | None = None,
    target: str | None = None,
    method: str | None = None,
    stage: str | None = None,
    metric: str | None = None,
    max_value: float | None = None,
    min_value: float | None = None,
    tags: Iterable[str] = (),
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The tree integration id → target → method → param id of the matching models.

    `tables` (``database.table`` names) give the integration id as the source design
    does; `target` matches the full feature name or a short form (``OT``,
    ``power.etth1.OT``); `metric` with `max_value`/`min_value` keeps models whose metric is
    within the bound (and sorts each method's models by it); `tags` must all be present;
    `start`/`end` keep models whose training data overlaps ``[start, end)``.
    Each leaf holds ``ref``, ``params``, ``metrics``, ``stage``, ``tags``, ``created_at``,
    ``data_start`` and ``data_end``; the result is JSON-able.
    """
    settings = settings or load_settings()
    if tables:
        from_tables = _integration_id(tables)
        if integration_id is not None and integration_id != from_tables:
            return {}
        integration_id = from_tables
    if integration_id is not None:
        check_id(integration_id, "integration id")
    if stage is not None:
        records.check_stage(stage)
    if (max_value is not None or min_value is not None) and metric is None:
        raise RegistryError("a metric bound needs --metric", hint="e.g. --metric rmse")
    rows = records.all_rows(settings, integration_id=integration_id, method=method, stage=stage)
    lo, hi = _when(start), _when(end)
    wanted_tags = set(tags)
    leaves = []
    for row in rows:
        if target is not None and not _matches_target(target, row["target"]):
            continue
        if wanted_tags - set(row["tags"]):
            continue
        if lo is not None and row["data_end"] and to_utc(row["data_end"]) < lo:
            continue
        if hi is not None and row["data_start"] and to_utc(row["data_start"]) >= hi:
            continue
        value = None
        if metric is not None:
            value = row["metrics"].get(metric)
            if (max_value is not None or min_value is not None) and value is None:
                continue
            if max_value is not None and value > max_value:
                continue
            if min_value is not None and value < min_value:
                continue
        leaves.append((value, row))
    if metric is not None:
        leaves.sort(key=lambda item: (item[0] is None, item[0] if item[0] is not None else 0))
    tree: dict[str, Any] = {}
    for _value, row in leaves:
        branch = tree.setdefault(row["integration_id"], {})
        branch = branch.setdefault(row["target"], {}).setdefault(row["method"], {})
        branch[row["param_id"]] = {
            "ref": row["ref"],
            "params": row["params"],
            "metrics": row["metrics"],
            "stage": row["stage"],
            "tags": row["tags"],
            "created_at": row["created_at"],
            "data_start": row["data_start"],
            "data_end": row["data_end"],
        }
    return tree


def show(ref: str | Ref, *, settings: Settings | None = None) -> dict[str, Any]:
    """Everything about one model: its row (lineage included), where its files are and
    whether they match their manifest."""
    settings = settings or load_settings()
    ref = ref if isinstance(ref, Ref) else records.resolve(settings, str(ref))
    out = records.require(settings, ref)
    store = backend(settings)
    out["location"] = store.location(str(ref))
    try:
        manifest, _files = verify_folder(store, str(ref))  # type: ignore[misc]
        out["files"] = manifest["files"]
        out["scaler"] = manifest["scaler"]
        out["verified"] = True
    except TsloomError as exc:
        out["verified"] = False
        out["problem"] = exc.message
    return out


def promote(
    ref: str | Ref,
    stage: str = "production",
    *,
    archive_others: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Set the stage (staged, production, archived); with `archive_others`, promoting to
    production archives the other production models of the same integration and target."""
    settings = settings or load_settings()
    ref = ref if isinstance(ref, Ref) else records.resolve(settings, str(ref))
    return records.set_stage(settings, ref, stage, archive_others=archive_others)


def delete(ref: str | Ref, *, settings: Settings | None = None) -> dict[str, Any]:
    """Remove a model's files and its row together.

    Local disk: the folder is renamed into a trash folder (atomic), then the row is
    deleted, then the trash is emptied; if deleting the row fails the folder is put back.
    S3: the row goes first, then the manifest (the entry is incomplete from then on),
    then the other files; anything left over is an orphan that `gc` removes.
    The shared scaler stays (other models may use it); `gc` removes it once unreferenced.
    """
    settings = settings or load_settings()
    ref = ref if isinstance(ref, Ref) else records.resolve(settings, str(ref))
    store = backend(settings)
    rel = str(ref)
    had_files = bool(store.files(rel))
    if records.get(settings, ref) is None and not had_files:
        records.require(settings, ref)  # raises with suggestions
    removed_row = False
    if isinstance(store, LocalBackend):
        trash = store.move_aside(rel)
        try:
            removed_row = _delete_row(settings, rel)
        except BaseException:
            if trash:
                store.move_back(trash, rel)
            raise
        if trash:
            store.remove_tree(trash)
    else:
        removed_row = _delete_row(settings, rel)
        store.remove_file(f"{rel}/{MANIFEST}")
        store.remove_tree(rel)
    return {"ref": rel, "row": removed_row, "files": had_files}


def _delete_row(settings: Settings, ref: str) -> bool:
    with session_scope(settings.db_url) as s:
        row = s.scalar(sa.select(Row).where(Row.ref == ref))
        if row is None:
            return False
        s.delete(row)
    return True


def gc(
    *,
    older_than: timedelta = timedelta(hours=1),
    dry_run: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Remove what no registered model needs; returns what was (or would be) removed.

    - ``orphaned``: complete model folders without a metadata row;
    - ``incomplete``: folders without a valid manifest and without a row (an interrupted
      registration on S3, leftovers of a delete);
    - ``temporary``: temporary and trash folders of interrupted registrations/deletes;
    - ``scalers``: scaler files that no registered model references;
    - ``rows``: metadata rows whose folder is gone entirely.

    Only things last modified more than `older_than` ago are touched, so a registration in
    progress (files published, row not yet written) is left alone. ``damaged`` lists
    models that have a row but fail verification; they are reported, not removed.
    """
    settings = settings or load_settings()
    store = backend(settings)
    cutoff = time.time() - older_than.total_seconds()
    entries = store.files("")
    rows = {r["ref"]: r for r in records.all_rows(settings)}

    folders: dict[str, float] = {}  # model folder → newest mtime
    temporary: dict[str, float] = {}
    scaler_files: dict[str, tuple[str, float]] = {}  # scaler id → (path, mtime)
    strays: list[str] = []
    for entry in entries:
        parts = entry.path.split("/")
        if len(parts) < 2 or parts[0].startswith("."):
            strays.append(entry.path)
            continue
        if parts[1] == ".trash" and len(parts) >= 3:
            key = "/".join(parts[:3])
            temporary[key] = max(temporary.get(key, 0.0), entry.mtime)
        elif parts[-1].startswith(".tmp-"):
            temporary[entry.path] = max(temporary.get(entry.path, 0.0), entry.mtime)
        elif parts[1] == SCALERS and len(parts) == 3 and parts[2].endswith(".json"):
            scaler_files[parts[2][: -len(".json")]] = (entry.path, entry.mtime)
        elif len(parts) >= 5 and parts[3].startswith(".tmp-"):
            key = "/".join(parts[:4])
            temporary[key] = max(temporary.get(key, 0.0), entry.mtime)
        elif len(parts) == 5:
            key = "/".join(parts[:4])
            folders[key] = max(folders.get(key, 0.0), entry.mtime)
        else:
            strays.append(entry.path)

    report: dict[str, Any] = {
        "orphaned": [],
        "incomplete": [],
        "temporary": [],
        "scalers": [],
        "rows": [],
        "damaged": [],
        "unknown": sorted(strays),
        "dry_run": dry_run,
    }
    for ref, row in sorted(rows.items()):
        created = datetime.fromisoformat(row["created_at"]) if row["created_at"] else None
        old = created is None or created.timestamp() <= cutoff
        if ref not in folders and old:
            report["rows"].append(ref)
            if not dry_run:
                _delete_row(settings, ref)
    referenced = {r["scaler_id"] for ref, r in rows.items() if ref not in report["rows"]}
    for folder, mtime in sorted(folders.items()):
        verified = verify_folder(store, folder, raise_errors=False)
        if folder in rows:
            if verified is None:
                report["damaged"].append(folder)
            continue
        if mtime > cutoff:
            if verified is not None:
                referenced.add(verified[0]["scaler"]["id"])
            continue
        report["orphaned" if verified is not None else "incomplete"].append(folder)
        if not dry_run:
            store.remove_tree(folder)
    for path, mtime in sorted(temporary.items()):
        if mtime <= cutoff:
            report["temporary"].append(path)
            if not dry_run:
                store.remove_tree(path)
    for scaler_id, (path, mtime) in sorted(scaler_files.items()):
        if scaler_id not in referenced and mtime <= cutoff:
            report["scalers"].append(path)
            if not dry_run:
                store.remove_file(path)
    if not dry_run:
        store.prune_empty()
    return report
