"""Where each dataset's Delta table lives, on local disk or S3, and how to lock it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tsloom.config import Settings
from tsloom.names import split_dataset_name


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def dataset_uri(settings: Settings, dataset: str) -> str:
    """`<lake>/<database>/<table>`; the validated name guarantees it stays under the lake."""
    database, table = split_dataset_name(dataset)
    base = settings.lake_url
    if base.startswith("file://"):
        base = base[len("file://") :]
    if is_remote(base):
        return f"{base}/{database}/{table}"
    return str(Path(base).absolute() / database / table)


@contextmanager
def dataset_lock(settings: Settings, dataset: str) -> Iterator[None]:
    """Serialise writers of one dataset on this machine (Delta appends of the same rows
    from two processes would otherwise both pass the duplicate check)."""
    lock_dir = settings.home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{dataset}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
