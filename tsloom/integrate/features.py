"""Feature names of an integrated frame, and resolving what a user typed to one of them.

Naming rule
    Every feature is ``database.table.column``. When one dataset contributes more than
    one series (several key values, e.g. several sensors, whether through one source
    entry or several), each of its features also carries the key values that tell its
    series apart, in brackets, in the dataset's key order, joined by ``,``::

        airq.seoul.co2[sensor_id=1]
        airq.seoul.co2[sensor_id=2,position=Jongno]

    Key columns that hold the same value in every series the dataset contributes (such as
    ``position`` at a single site) are left out. A dataset that contributes one series
    (no keys, or a key filter that selects one) gets the plain ``database.table.column``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from tsloom.errors import TsloomError


class FeatureError(TsloomError):
    """A feature name that matches none, or several, of an integration's features."""


def label_keys(series: Sequence[Mapping[str, object]], key_order: Sequence[str]) -> list[str]:
    """The key columns that differ between the given series (dataset key order)."""
    if len(series) < 2:
        return []
    return [k for k in key_order if len({repr(s.get(k)) for s in series}) > 1]


def feature_name(dataset: str, column: str, key: Mapping[str, object], label: Sequence[str]) -> str:
    """``database.table.column`` plus ``[k=v,...]`` for the key columns in `label`."""
    if not label:
        return f"{dataset}.{column}"
    inner = ",".join(f"{k}={key[k]}" for k in label)
    return f"{dataset}.{column}[{inner}]"


def split_feature(name: str) -> tuple[str, str, str]:
    """(``database.table``, column, key label without brackets or "") of a feature name."""
    label = ""
    if name.endswith("]") and "[" in name:
        name, label = name[:-1].split("[", 1)
    parts = name.split(".", 2)
    if len(parts) < 3:
        return "", name, label
    return f"{parts[0]}.{parts[1]}", parts[2], label


def resolve_feature(name: str, features: Sequence[str]) -> str:
    """The feature that `name` designates: the full name, or a shorter form where it is
    unambiguous — the bare column (``OT`` → ``power.etth1.OT``), the column with its key
    label (``co2[sensor_id=1]``) or ``database.table.column`` without the key label.
    Raises :class:`FeatureError` listing the candidates otherwise."""
    features = list(features)
    if name in features:
        return name
    wanted = name.strip()
    if wanted in features:
        return wanted
    matches = []
    for feature in features:
        dataset, column, label = split_feature(feature)
        forms = {column, f"{dataset}.{column}", f"{dataset.split('.')[-1]}.{column}"}
        if label:
            forms |= {f"{column}[{label}]", f"{dataset.split('.')[-1]}.{column}[{label}]"}
        if wanted in forms:
            matches.append(feature)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise FeatureError(
            f"feature {name!r} is ambiguous: it matches {', '.join(matches)}",
            hint="give the full name, e.g. " + matches[0],
        )
    close = difflib.get_close_matches(wanted, features, n=3, cutoff=0.5)
    listing = ", ".join(features[:20]) + (" …" if len(features) > 20 else "")
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise FeatureError(
        f"no feature {name!r} in this integration",
        hint=f"{hint}features are {listing}" if features else "the integration has no features",
    )
