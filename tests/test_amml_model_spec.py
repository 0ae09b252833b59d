"""AMML model specs: validation, name:version storage, and the network they build."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from tsloom.amml.model_spec import build_module, parse_model_spec
from tsloom.amml.spec_store import add_model_spec, get_model_spec, list_model_specs
from tsloom.cli import app
from tsloom.config import Settings
from tsloom.errors import TsloomError

ETT = """
name: ett
version: 0.1
layers:
  - {type: input, features: 2, steps: 24}
  - {type: lstm, units: 16, return_sequences: true}
  - {type: dropout, rate: 0.1}
  - {type: lstm, units: 8}
  - {type: dense, units: 8, activation: relu}
  - {type: dense, units: 6}
training: {loss: mae, optimizer: adam, learning_rate: 0.001, epochs: 20}
"""


def test_spec_builds_the_declared_network() -> None:
    spec = parse_model_spec(ETT)
    assert spec.ref == "ett:0.1" and spec.outputs == 6 and spec.training.loss == "mae"
    torch.manual_seed(0)
    net = build_module(spec)
    assert net(torch.randn(5, 24, 2)).shape == (5, 6)
    lstms = [m for m in net.modules() if isinstance(m, torch.nn.LSTM)]
    assert [m.hidden_size for m in lstms] == [16, 8]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("layers:\n  - {type: dense, units: 1}\n", "first layer must be `input`"),
        (
            "layers:\n  - {type: input, features: 1, steps: 4}\n  - {type: lstm, units: 2}\n",
            "last layer must be `dense`",
        ),
        (
            "layers:\n  - {type: input, features: 1, steps: 4}\n  - {type: dense, units: 2}\n",
            "gets a sequence",
        ),
        (
            "layers:\n  - {type: input, features: 1, steps: 4}\n  - {type: conv, units: 2}\n",
            "layers.1",
        ),
    ],
)
def test_invalid_specs_are_explained(change: str, message: str) -> None:
    with pytest.raises(TsloomError, match=message):
        parse_model_spec("name: bad\nversion: '1'\n" + change)


def test_stored_as_name_version_and_never_changed(tsloom_home: Settings) -> None:
    spec, new = add_model_spec(ETT)
    assert new and get_model_spec("ett:0.1") == spec and get_model_spec("ett") == spec
    assert add_model_spec(ETT)[1] is False  # identical again: a no-op
    with pytest.raises(TsloomError, match="already exists with different contents"):
        add_model_spec(ETT.replace("units: 6", "units: 3"))
    add_model_spec(ETT.replace("version: 0.1", "version: 0.2"))
    assert [r["ref"] for r in list_model_specs()] == ["ett:0.1", "ett:0.2"]
    assert get_model_spec("ett").version == "0.2"
    with pytest.raises(TsloomError, match=r"did you mean ett:0\.1"):
        get_model_spec("ett:0.11")


def test_cli_add_list_show(tsloom_home: Settings, tmp_path) -> None:
    path = tmp_path / "ett.yaml"
    path.write_text(ETT)
    runner = CliRunner()
    added = runner.invoke(app, ["model-spec", "add", str(path)])
    assert added.exit_code == 0, added.output
    assert "ett:0.1" in added.output and "stored" in added.output
    assert "ett:0.1" in runner.invoke(app, ["model-spec", "list"]).output
    assert '"units": 6' in runner.invoke(app, ["model-spec", "show", "ett:0.1"]).output
