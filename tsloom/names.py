"""Validation of user-supplied names that become paths or ids.

A dataset is named `database.table`, as the source designs name data. Both parts are
lower-case identifiers, so a name can never escape the lake root or clash by case.
"""

from __future__ import annotations

import re

from tsloom.errors import InvalidNameError

_PART = r"[a-z][a-z0-9_]{0,62}"
DATASET_RE = re.compile(rf"^{_PART}\.{_PART}$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .\-]{0,127}$")
RESERVED_COLUMNS = frozenset({"ts", "year", "month", "day"})


def suggest_dataset_name(name: str) -> str:
    """The nearest valid dataset name to `name` (lower-cased, other characters to `_`)."""
    parts = name.strip().lower().split(".", 1)
    if len(parts) == 1:
        parts = ["default", parts[0]]
    cleaned = []
    for part in parts:
        part = re.sub(r"[^a-z0-9_]+", "_", part).strip("_") or "x"
        cleaned.append(part if part[0].isalpha() else f"t_{part}")
    return ".".join(p[:63] for p in cleaned)


def validate_dataset_name(name: str) -> str:
    """Return `name` if it is a safe `database.table` name, else raise with a suggestion."""
    if not isinstance(name, str) or not DATASET_RE.match(name):
        raise InvalidNameError(
            f"invalid dataset name {name!r}: expected 'database.table' with lower-case letters, "
            "digits and '_' (each part starting with a letter, at most 63 characters)",
            hint=f"try {suggest_dataset_name(str(name))!r}",
        )
    return name


def split_dataset_name(name: str) -> tuple[str, str]:
    """(database, table) of a validated dataset name."""
    database, table = validate_dataset_name(name).split(".")
    return database, table


def validate_column_name(name: str, *, where: str) -> str:
    """Column names are stored in the catalog and the lake; refuse empty or odd ones."""
    if not COLUMN_RE.match(name):
        raise InvalidNameError(
            f"{where}: column name {name!r} is not usable",
            hint="rename it to start with a letter or '_' and use letters, digits, '_', '-', '.'",
        )
    return name


_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def path_segment(name: str) -> str:
    """A safe single path segment for a user-supplied name (e.g. a target feature).

    Names that are already safe stay as they are; others are slugged and get 8 hex of
    the name's SHA-1 appended, so two different names never share a folder.
    """
    import hashlib

    slug = _SEGMENT_BAD.sub("-", name).strip("-.")[:100] or "x"
    if slug == name and name not in (".", ".."):
        return name
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
