"""One error family so every layer can say what went wrong, where, and how to fix it.

The CLI prints these as a short message plus a hint instead of a traceback.
"""

from __future__ import annotations


class TsloomError(Exception):
    """Base class: `message` says what and where, `hint` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def __reduce__(self) -> tuple:
        """Pickle what the error holds, whatever a subclass's ``__init__`` takes: an error
        raised in the server's forward-pass process reaches the caller as itself."""
        return _rebuild, (type(self), self.args, self.__dict__)


class ConfigError(TsloomError):
    """Settings that cannot be used (bad URL, unreadable tsloom.toml)."""


class InvalidNameError(TsloomError):
    """A user-supplied name that would be unsafe or ambiguous as a path or id."""


class UnknownDatasetError(TsloomError):
    """A dataset name that is not in the catalog."""


class InputDataError(TsloomError):
    """Input rows that cannot be ingested: bad timestamps, non-numeric values, empty files."""


class SchemaChangeError(TsloomError):
    """A batch whose columns clash with the dataset's existing schema."""


class SourceError(TsloomError):
    """A source (database, broker, file) that cannot be reached or read."""


class PrepError(TsloomError):
    """A series that a preprocessing step cannot work on (too short, constant, all missing)."""


def validation_problems(exc: Exception, root: str) -> str:
    """A pydantic ValidationError as one line, field by field (``layers.1.units: …``);
    `root` names an error about the whole object."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()  # type: ignore[attr-defined]
    )


def _rebuild(kind: type[TsloomError], args: tuple, state: dict) -> TsloomError:
    error = kind.__new__(kind)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error
