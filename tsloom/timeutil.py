"""Small helpers for time values given by users: instants, durations like `90d` or `10s`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tsloom.errors import TsloomError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "sec": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(text: str | float | int | timedelta) -> timedelta:
    """`'10s'`, `'15min'`, `'1h'`, `'90d'`, `'2w'` (or seconds as a number) → timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    match = _DURATION.match(text)
    if not match:
        raise TsloomError(
            f"cannot read {text!r} as a duration",
            hint="write a number and a unit: 500ms, 10s, 15min, 1h, 90d, 2w",
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def to_utc(value: datetime | str) -> datetime:
    """A zone-aware UTC datetime; naive inputs and ISO strings without offset are UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise TsloomError(
                f"cannot read {value!r} as a time",
                hint="use ISO 8601, e.g. 2016-07-01 or 2016-07-01T12:00",
            ) from exc
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
