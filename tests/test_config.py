from pathlib import Path

import pytest

from tsloom.config import load_settings
from tsloom.errors import ConfigError


def test_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.home == tmp_path / ".tsloom"
    assert settings.db_url == f"sqlite:///{tmp_path / '.tsloom' / 'tsloom.db'}"
    assert settings.lake_url == str(tmp_path / ".tsloom" / "lake")
    assert settings.registry_url == str(tmp_path / ".tsloom" / "registry")


def test_environment_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tsloom.toml").write_text(
        '[tsloom]\nhome = "from-toml"\nlake_url = "s3://bucket/lake/"\n'
    )
    settings = load_settings({"TSLOOM_HOME": str(tmp_path / "from-env")})
    assert settings.home == tmp_path / "from-env"
    assert settings.lake_url == "s3://bucket/lake"
    assert settings.source["home"] == "env TSLOOM_HOME"
    assert settings.source["lake_url"].startswith("toml")


def test_s3_storage_options_from_endpoint() -> None:
    settings = load_settings({"TSLOOM_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    opts = settings.storage_options("s3://bucket/lake")
    assert opts["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert opts["AWS_ALLOW_HTTP"] == "true"
    assert settings.storage_options("/local/path") == {}


def test_unknown_toml_key_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tsloom.toml").write_text('lake_ulr = "x"\n')
    with pytest.raises(ConfigError, match="lake_ulr"):
        load_settings({})


def test_broken_toml_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tsloom.toml").write_text("home = \n")
    with pytest.raises(ConfigError, match=r"tsloom\.toml is not valid TOML"):
        load_settings({})


def test_missing_config_file_named_in_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"TSLOOM_CONFIG": str(tmp_path / "nope.toml")})
