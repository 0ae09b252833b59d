"""Settings from the environment or a `tsloom.toml`, so every stage agrees on where things live.

Precedence: environment variables > `tsloom.toml` (path in `TSLOOM_CONFIG`, else
`./tsloom.toml`) > defaults under `TSLOOM_HOME` (default `./.tsloom`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tsloom.errors import ConfigError, TsloomError

_KEYS = {
    "home": "TSLOOM_HOME",
    "db_url": "TSLOOM_DB_URL",
    "lake_url": "TSLOOM_LAKE_URL",
    "registry_url": "TSLOOM_REGISTRY_URL",
    "s3_endpoint_url": "TSLOOM_S3_ENDPOINT_URL",
}


@dataclass(frozen=True)
class Settings:
    """Where tsloom keeps its metadata, lake and registry."""

    home: Path
    db_url: str
    lake_url: str
    registry_url: str
    s3_endpoint_url: str | None = None
    source: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def at_home(cls, home: Path) -> Settings:
        """Everything under one folder: the SQLite catalog, the lake and the registry — the
        layout :func:`load_settings` starts from before the configured URLs replace parts."""
        return cls(
            home=home,
            db_url=f"sqlite:///{home / 'tsloom.db'}",
            lake_url=str(home / "lake"),
            registry_url=str(home / "registry"),
        )

    def storage_options(self, url: str) -> dict[str, str]:
        """Options for deltalake/object_store when `url` is remote (S3); empty for local paths."""
        if not url.startswith("s3://"):
            return {}
        opts: dict[str, str] = {}
        for name in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_SESSION_TOKEN",
        ):
            if os.environ.get(name):
                opts[name] = os.environ[name]
        opts.setdefault("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        endpoint = self.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["AWS_ENDPOINT_URL"] = endpoint
            if endpoint.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        opts["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
        return opts

    def describe(self) -> dict[str, str]:
        """Each setting with its value and where the value came from (env, toml, default)."""
        return {key: f"{getattr(self, key)}  ({self.source.get(key, 'default')})" for key in _KEYS}


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix the file or unset TSLOOM_CONFIG"
        ) from exc
    section = data.get("tsloom", data)
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}",
            hint=f"known settings are {', '.join(_KEYS)}",
        )
    return {k: str(v) for k, v in section.items()}


def read_yaml_file(
    path: Path, what: str, *, error: type[TsloomError] = ConfigError, hint: str | None = None
) -> Any:
    """A settings file's parsed YAML; `error` says which file could not be read or parsed."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}", hint=hint) from exc


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Resolve settings now (call again after changing the environment)."""
    env = dict(os.environ if env is None else env)
    config_path = Path(env.get("TSLOOM_CONFIG", "tsloom.toml"))
    if "TSLOOM_CONFIG" in env and not config_path.is_file():
        raise ConfigError(f"TSLOOM_CONFIG points at {config_path}, which does not exist")
    values: dict[str, str] = {}
    source: dict[str, str] = {}
    if config_path.is_file():
        for key, value in _read_toml(config_path).items():
            values[key], source[key] = value, f"toml {config_path}"
    for key, var in _KEYS.items():
        if env.get(var):
            values[key], source[key] = env[var], f"env {var}"
    layout = Settings.at_home(Path(values.get("home", ".tsloom")).expanduser().absolute())
    return replace(
        layout,
        db_url=values.get("db_url") or layout.db_url,
        lake_url=(values.get("lake_url") or layout.lake_url).rstrip("/"),
        registry_url=(values.get("registry_url") or layout.registry_url).rstrip("/"),
        s3_endpoint_url=values.get("s3_endpoint_url"),
        source=source,
    )
