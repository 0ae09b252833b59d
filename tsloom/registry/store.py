"""The registry's files: layout, ids, manifests with SHA-256 checksums, atomic publication.

Layout under the registry root (a local folder or ``s3://bucket/prefix``)::

    <integration_id>/<target segment>/<method>/<param_id>/
        weights.pt  params.json  architecture.json  metrics.json  history.json
        lineage.json  manifest.json
    <integration_id>/scalers/<scaler_id>.json

Every id is checked to be 40 lower-case hex; the target feature becomes one safe path
segment (:func:`target_segment`); every relative path is checked segment by segment and,
on local disk, resolved and checked to stay under the root, so nothing is ever written
outside it.

Publication: on local disk the files go into a temporary folder beside the target, then
one ``rename`` publishes the whole entry (a second publisher finds the folder already
there and keeps the first). On S3, where a rename is not atomic, the files are written
first and ``manifest.json`` last; a folder without a valid manifest is incomplete and is
neither loaded nor searched, and ``gc`` removes it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tsloom.config import Settings
from tsloom.errors import InvalidNameError, TsloomError
from tsloom.names import path_segment

MANIFEST = "manifest.json"
MODEL_FILES = (
    "weights.pt",
    "params.json",
    "architecture.json",
    "metrics.json",
    "history.json",
    "lineage.json",
)
SCALERS = "scalers"
MANIFEST_FORMAT = 1
METHODS = (
    "vanilla",
    "stacked",
    "bidirectional",
    "cnn_lstm",
    "conv_lstm",
    "seasonal_naive",
    "dlinear",
    "amml",  # networks declared by an AMML model spec (tsloom.amml.lstm_components)
)

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
# One path segment: what path_segment produces, plus internal names starting with ".".
_SEGMENT = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9._-]{0,199}$")
_TEMP_PREFIX = ".tmp-"
_TRASH = ".trash"


class RegistryError(TsloomError):
    """A registry operation that cannot be done (unknown ref, bad id, bad stage)."""


class IntegrityError(RegistryError):
    """A stored model whose files do not match its manifest (tampered or truncated)."""


def check_id(value: str, what: str) -> str:
    """`value` if it is 40 lower-case hex (a SHA-1), else an error naming `what`."""
    if not isinstance(value, str) or not _HEX40.match(value):
        raise InvalidNameError(
            f"{what} {value!r} is not a 40-character lower-case hex id",
            hint="ids are SHA-1 hashes, e.g. from `tsloom models search`",
        )
    return value


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InvalidNameError(
            f"unknown learning method {method!r}", hint=f"use one of {', '.join(METHODS)}"
        )
    return method


def target_segment(target: str) -> str:
    """The folder name of a target feature: :func:`tsloom.names.path_segment`, except that
    the name ``scalers`` (the scaler folder beside the targets) gets a hash suffix too."""
    segment = path_segment(target)
    if segment == SCALERS:
        segment = f"{SCALERS}-{hashlib.sha1(target.encode()).hexdigest()[:8]}"
    return segment


@dataclass(frozen=True)
class Ref:
    """``<integration_id>/<target segment>/<method>/<param_id>``, each part checked."""

    integration_id: str
    segment: str
    method: str
    param_id: str

    def __post_init__(self) -> None:
        check_id(self.integration_id, "integration id")
        check_id(self.param_id, "param id")
        check_method(self.method)
        if (
            not _SEGMENT.match(self.segment)
            or self.segment.startswith(".")
            or self.segment == SCALERS
        ):
            raise InvalidNameError(f"{self.segment!r} is not a valid target folder name")

    def __str__(self) -> str:
        return "/".join((self.integration_id, self.segment, self.method, self.param_id))

    @property
    def path(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, text: str) -> Ref:
        parts = str(text).strip().strip("/").split("/")
        if len(parts) != 4:
            raise InvalidNameError(
                f"model reference {text!r} is not <integration_id>/<target>/<method>/<param_id>",
                hint="copy it from `tsloom models search` or `tsloom train`",
            )
        return cls(*parts)

    @classmethod
    def of(cls, integration_id: str, target: str, method: str, param_id: str) -> Ref:
        return cls(integration_id, target_segment(target), method, param_id)


def scaler_path(integration_id: str, scaler_id: str) -> str:
    check_id(integration_id, "integration id")
    check_id(scaler_id, "scaler id")
    return f"{integration_id}/{SCALERS}/{scaler_id}.json"


def _check_rel(rel: str) -> list[str]:
    parts = rel.split("/")
    for part in parts:
        if not _SEGMENT.match(part) or part in (".", ".."):
            raise InvalidNameError(f"unsafe registry path {rel!r} (segment {part!r})")
    return parts


# ----------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class Entry:
    """A file under a folder: path relative to the registry root, size, modification time."""

    path: str
    size: int
    mtime: float


class Backend(ABC):
    """The few file operations the registry needs, on paths relative to the root."""

    atomic_publish = False
    url: str

    @abstractmethod
    def read(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    @abstractmethod
    def write(self, rel: str, data: bytes) -> None:
        """Write (or replace) one file."""

    @abstractmethod
    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Write one file unless it exists; whether this call wrote it."""

    @abstractmethod
    def files(self, rel: str = "") -> list[Entry]:
        """Every file under `rel`, recursively."""

    @abstractmethod
    def remove_tree(self, rel: str) -> None:
        """Remove a folder and everything under it."""

    def prune_empty(self) -> list[str]:
        return []

    @abstractmethod
    def remove_file(self, rel: str) -> None:
        """Remove one file."""

    @abstractmethod
    def publish(self, rel: str, files: dict[str, bytes]) -> bool:
        """Write `files` (manifest included) as folder `rel`; False if a complete entry was
        already there (then nothing is changed)."""

    def location(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url


class LocalBackend(Backend):
    atomic_publish = True

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)

    def _path(self, rel: str) -> Path:
        path = self.root.joinpath(*_check_rel(rel)) if rel else self.root
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise InvalidNameError(f"registry path {rel!r} leads outside the registry root")
        return path

    def read(self, rel: str) -> bytes | None:
        try:
            return self._path(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def write(self, rel: str, data: bytes) -> None:
        path = self._path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TEMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
        self._write_file(tmp, data)
        os.replace(tmp, path)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        path = self._path(rel)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{_TEMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
        self._write_file(tmp, data)
        try:
            os.link(tmp, path)  # fails if it exists: never overwrites
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def files(self, rel: str = "") -> list[Entry]:
        base = self._path(rel)
        out: list[Entry] = []
        if not base.is_dir():
            return out
        for dirpath, _dirnames, filenames in os.walk(base, followlinks=False):
            for name in filenames:
                full = Path(dirpath, name)
                st = full.lstat()
                out.append(Entry(self._rel(full), st.st_size, st.st_mtime))
        return out

    def prune_empty(self) -> list[str]:
        """Remove empty folders under the root; their relative paths."""
        removed = []
        for dirpath, _dirs, _files in os.walk(self.root, topdown=False):
            folder = Path(dirpath)
            if folder == self.root:
                continue
            with contextlib.suppress(OSError):
                folder.rmdir()
                removed.append(self._rel(folder) + "/")
        return removed

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def remove_tree(self, rel: str) -> None:
        path = self._path(rel)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._prune(path.parent)

    def remove_file(self, rel: str) -> None:
        path = self._path(rel)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._prune(path.parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty, up to (not including) the root."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def move_aside(self, rel: str) -> str | None:
        """Rename folder `rel` into the trash (atomic); the trash path, or None if absent."""
        parts = _check_rel(rel)
        trash = f"{parts[0]}/{_TRASH}/{uuid.uuid4().hex}"
        dest = self._path(trash)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self._path(rel), dest)
        except FileNotFoundError:
            return None
        self._prune(self._path(rel).parent)
        return trash

    def move_back(self, trash: str, rel: str) -> None:
        dest = self._path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self._path(trash), dest)

    def publish(self, rel: str, files: dict[str, bytes]) -> bool:
        final = self._path(rel)
        if verify_folder(self, rel, raise_errors=False) is not None:
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{_TEMP_PREFIX}{final.name}-{uuid.uuid4().hex}")
        tmp.mkdir()
        try:
            for name, data in files.items():
                self._write_file(tmp / name, data)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            for _attempt in range(3):
                try:
                    os.rename(tmp, final)
                    return True
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                if verify_folder(self, rel, raise_errors=False) is not None:
                    return False  # another process published the same entry first
                # a damaged or partial folder is in the way: move it aside, retry
                trash = self.move_aside(rel)
                if trash:
                    self.remove_tree(trash)
            raise RegistryError(f"could not publish {self.location(rel)}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


class S3Backend(Backend):
    """S3 through pyarrow's filesystem (no s3fs needed)."""

    def __init__(self, url: str, settings: Settings) -> None:
        from pyarrow import fs as pafs

        self.url = url.rstrip("/")
        rest = self.url[len("s3://") :]
        self.base = rest.strip("/")
        if not self.base:
            raise RegistryError(f"registry URL {url!r} names no bucket")
        opts = settings.storage_options(url)
        kwargs: dict[str, Any] = {
            "region": opts.get("AWS_REGION", "us-east-1"),
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        }
        if opts.get("AWS_ACCESS_KEY_ID"):
            kwargs["access_key"] = opts["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = opts.get("AWS_SECRET_ACCESS_KEY")
            if opts.get("AWS_SESSION_TOKEN"):
                kwargs["session_token"] = opts["AWS_SESSION_TOKEN"]
        endpoint = opts.get("AWS_ENDPOINT_URL")
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            if not host:
                scheme, host = "https", endpoint
            kwargs["endpoint_override"] = host.rstrip("/")
            kwargs["scheme"] = scheme
        self.fs = pafs.S3FileSystem(**kwargs)
        self._pafs = pafs

    def _key(self, rel: str) -> str:
        return f"{self.base}/{'/'.join(_check_rel(rel))}" if rel else self.base

    def read(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self._key(rel)) as fh:
                return fh.read()
        except (FileNotFoundError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or "NoSuchKey" in str(exc) or "404" in str(exc):
                return None
            raise

    def write(self, rel: str, data: bytes) -> None:
        with self.fs.open_output_stream(self._key(rel)) as fh:
            fh.write(data)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        if self.read(rel) is not None:
            return False
        self.write(rel, data)  # content-addressed: a racing writer writes the same bytes
        return True

    def files(self, rel: str = "") -> list[Entry]:
        selector = self._pafs.FileSelector(self._key(rel), recursive=True, allow_not_found=True)
        out = []
        cut = len(self.base) + 1
        for info in self.fs.get_file_info(selector):
            if info.type == self._pafs.FileType.File:
                mtime = info.mtime.timestamp() if info.mtime else time.time()
                out.append(Entry(info.path[cut:], info.size or 0, mtime))
        return out

    def remove_tree(self, rel: str) -> None:
        for entry in self.files(rel):
            self.remove_file(entry.path)

    def remove_file(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._key(rel))

    def prune_empty(self) -> list[str]:
        """Remove the directory markers pyarrow leaves behind deleted files (zero-byte
        ``prefix/`` objects): each top-most folder holding no file goes in one call.
        (pyarrow re-creates a marker for the parent, so non-empty folders and the root may
        keep one; markers are never read as registry content.)"""
        selector = self._pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        files = [i.path for i in infos if i.type == self._pafs.FileType.File]
        empty = sorted(
            i.path
            for i in infos
            if i.type == self._pafs.FileType.Directory
            and not any(f.startswith(i.path + "/") for f in files)
        )
        removed: list[str] = []
        for path in empty:
            if any(path.startswith(done + "/") for done in removed):
                continue
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.delete_dir(path)
                removed.append(path)
        cut = len(self.base) + 1
        return [p[cut:] + "/" for p in removed]

    def publish(self, rel: str, files: dict[str, bytes]) -> bool:
        for _attempt in range(5):
            if verify_folder(self, rel, raise_errors=False) is not None:
                return _attempt > 0
            # manifest last: until it is written, the folder is incomplete
            for name, data in files.items():
                if name != MANIFEST:
                    self.write(f"{rel}/{name}", data)
            self.write(f"{rel}/{MANIFEST}", files[MANIFEST])
            if verify_folder(self, rel, raise_errors=False) is not None:
                return True
            time.sleep(0.05)  # a concurrent writer with other bytes; settle and retry
        raise RegistryError(f"could not publish {self.location(rel)} consistently")


def backend(settings: Settings) -> Backend:
    url = settings.registry_url
    if url.startswith("s3://"):
        return S3Backend(url, settings)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" in url:
        raise RegistryError(
            f"registry URL {url!r} is not supported",
            hint="use a local folder or s3://bucket/prefix",
        )
    return LocalBackend(url)


# ---------------------------------------------------------------------------- manifests


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(data: Any) -> bytes:
    """Deterministic JSON bytes (same content, same checksum, in every process)."""
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def make_manifest(ref: Ref, files: dict[str, bytes], scaler: dict[str, Any]) -> bytes:
    return dumps(
        {
            "format": MANIFEST_FORMAT,
            "ref": str(ref),
            "files": {
                name: {"sha256": sha256(data), "size": len(data)}
                for name, data in sorted(files.items())
            },
            "scaler": scaler,
        }
    )


def verify_folder(
    store: Backend, rel: str, *, raise_errors: bool = True
) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """Read a model folder and check every file against its manifest.

    Returns (manifest, {name: bytes}); on any mismatch raises :class:`IntegrityError`
    naming the file (or returns None when `raise_errors` is false).
    """
    where = store.location(rel)
    try:
        raw = store.read(f"{rel}/{MANIFEST}")
        if raw is None:
            raise IntegrityError(
                f"model at {where} has no {MANIFEST}: it is incomplete or not a model",
                hint="register it again, or run `tsloom models gc` to remove the leftovers",
            )
        try:
            manifest = json.loads(raw)
            listed = manifest["files"]
            assert isinstance(listed, dict) and manifest.get("format") == MANIFEST_FORMAT
        except Exception as exc:
            raise IntegrityError(
                f"{MANIFEST} of the model at {where} is damaged ({type(exc).__name__})",
                hint="the entry cannot be trusted; delete it and register the model again",
            ) from exc
        missing = [name for name in MODEL_FILES if name not in listed]
        if missing:
            raise IntegrityError(f"{MANIFEST} at {where} does not list {', '.join(missing)}")
        contents: dict[str, bytes] = {}
        for name, meta in sorted(listed.items()):
            data = store.read(f"{rel}/{name}")
            if data is None:
                raise IntegrityError(
                    f"{name} of the model at {where} is missing",
                    hint="the entry is incomplete; delete it and register the model again",
                )
            if len(data) != meta["size"]:
                raise IntegrityError(
                    f"{name} of the model at {where} is {len(data)} bytes but its manifest "
                    f"says {meta['size']}: the file was truncated or modified",
                    hint="refusing to load it; delete the entry and register the model again",
                )
            if sha256(data) != meta["sha256"]:
                raise IntegrityError(
                    f"{name} of the model at {where} does not match its SHA-256 in "
                    f"{MANIFEST}: the file was modified after registration",
                    hint="refusing to load it; delete the entry and register the model again",
                )
            contents[name] = data
        return manifest, contents
    except IntegrityError:
        if raise_errors:
            raise
        return None


# ------------------------------------------------------------------------------ scalers


def save_scaler(store: Backend, integration_id: str, state: dict[str, Any], scaler_id: str) -> dict:
    """Store a scaler under its content id (never overwritten); its manifest entry."""
    data = dumps(state)
    store.put_if_absent(scaler_path(integration_id, scaler_id), data)
    return {"id": scaler_id, "path": scaler_path(integration_id, scaler_id), "sha256": sha256(data)}


def load_scaler(store: Backend, integration_id: str, scaler_id: str) -> dict[str, Any]:
    """The scaler state, checked against its content id."""
    import hashlib as _h

    rel = scaler_path(integration_id, scaler_id)
    data = store.read(rel)
    if data is None:
        raise IntegrityError(
            f"scaler {scaler_id} is missing at {store.location(rel)}",
            hint="the model cannot re-apply its preprocessing; register it again",
        )
    try:
        state = json.loads(data)
        actual = _h.sha1(json.dumps(state, sort_keys=True).encode()).hexdigest()
    except Exception as exc:
        raise IntegrityError(f"scaler file {store.location(rel)} is damaged") from exc
    if actual != scaler_id:
        raise IntegrityError(
            f"scaler file {store.location(rel)} does not match its id (content hash {actual}): "
            "it was modified after registration",
            hint="refusing to use it; delete the models that need it and register them again",
        )
    return state


def now_ts() -> float:
    return datetime.now(UTC).timestamp()
