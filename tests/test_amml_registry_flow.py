"""`train_lstm` files its model in the hash-addressed registry with its spec; `lstm`
predicts with it exactly as loading it from the registry does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from amml_ett import PREDICT, SPEC, TRAIN, ingest_ett, quiet_console

from tsloom.amml.lstm_components import AmmlModel, find_registered
from tsloom.amml.runtime import run_program
from tsloom.amml.spec_store import get_model_spec
from tsloom.integrate import integration_id
from tsloom.lake import read_dataset
from tsloom.registry import load, promote, search, show


@pytest.fixture
def ett(tsloom_home, ett_dir: Path) -> pl.DataFrame:
    return ingest_ett(tsloom_home, ett_dir, "2016-08-01")


def test_trained_model_is_registered_with_its_spec(tsloom_home, ett) -> None:
    console = quiet_console()
    trained = run_program(TRAIN, settings=tsloom_home, console=console)
    (losses,) = trained.results
    printed = console.file.getvalue()
    assert all(f"{loss:.6g}" in printed for loss in losses["loss"])  # the loss per epoch
    (info,) = trained.models
    ref = info["ref"]
    iid = integration_id(["power.ett"])
    assert ref.startswith(f"{iid}/power.ett.OT/amml/")

    tree = search(["power.ett"], settings=tsloom_home)
    leaf = tree[iid]["power.ett.OT"]["amml"][ref.rsplit("/", 1)[1]]
    assert leaf["ref"] == ref and leaf["stage"] == "staged"
    assert leaf["params"]["spec_ref"] == "ett:0.1"
    assert leaf["params"]["spec"] == get_model_spec("ett:0.1", settings=tsloom_home).model_dump(
        mode="json"
    )
    assert search(target="OT", method="amml", settings=tsloom_home)  # short target names

    detail = show(ref, settings=tsloom_home)
    assert detail["verified"] is True
    assert {"spec.yaml", "weights.pt", "params.json", "history.json"} <= set(detail["files"])
    assert detail["params"]["spec_source"] == SPEC
    assert detail["metrics"]["loss"] == pytest.approx(losses["loss"][-1])
    assert detail["datasets"] == {"power.ett": 0}
    assert detail["lineage"]["amml"]["flow"] == TRAIN
    folder = Path(info["path"])
    assert (folder / "spec.yaml").read_text() == SPEC
    history = json.loads((folder / "history.json").read_text())
    assert [e["loss"] for e in history["epochs"]] == pytest.approx(losses["loss"].to_list())

    # the CLI shows the same, spec included
    from typer.testing import CliRunner

    from tsloom.cli import app

    shown = CliRunner().invoke(app, ["models", "show", ref])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["params"]["spec_source"] == SPEC

    # the same training again is the same model: one entry
    again = run_program(TRAIN, settings=tsloom_home)
    assert again.models[0]["ref"] == ref
    assert len(search(["power.ett"], settings=tsloom_home)[iid]["power.ett.OT"]["amml"]) == 1


def test_lstm_predicts_like_the_registry(tsloom_home, ett) -> None:
    ref = run_program(TRAIN, settings=tsloom_home).models[0]["ref"]
    model = load(ref, settings=tsloom_home)
    assert isinstance(model, AmmlModel)
    assert model.features == ["OT"] and model.steps == 24 and model.outputs == 6

    scaled = run_program(
        'source id="ett" | minmax_scaler | lstm model="ett:0.1" | print', settings=tsloom_home
    ).results[0]
    raw = read_dataset("power.ett", settings=tsloom_home)
    lo, hi = raw["OT"].min(), raw["OT"].max()
    by_hand = raw.with_columns((pl.col("OT") - lo) / (hi - lo))
    direct = model.predict(by_hand)
    assert scaled["ts"].to_list() == direct["ts"].to_list()
    np.testing.assert_allclose(scaled["OT"].to_numpy(), direct["OT"].to_numpy(), rtol=1e-6)

    # in original units: the flow's inverse scaling and the registered scaler agree
    predicted = run_program(PREDICT, settings=tsloom_home).results[0]
    in_units = model.predict(raw, raw=True)
    assert predicted.columns == ["ts", "OT"] and predicted.height == 6
    assert predicted["ts"].min() > raw["ts"].max()
    np.testing.assert_allclose(predicted["OT"].to_numpy(), in_units["OT"].to_numpy(), rtol=1e-6)


def test_lstm_prefers_production_then_newest(tsloom_home, ett) -> None:
    spec = get_model_spec("ett:0.1", settings=tsloom_home)
    assert find_registered(spec, ["power.ett"], settings=tsloom_home) is None
    first = run_program(TRAIN, settings=tsloom_home).models[0]["ref"]
    second = run_program(TRAIN.replace("epoch=2", "epoch=1"), settings=tsloom_home).models[0]["ref"]
    assert first != second  # other training arguments, another param id
    assert find_registered(spec, ["power.ett"], settings=tsloom_home) == second
    promote(first, "production", settings=tsloom_home)
    assert find_registered(spec, ["power.ett"], settings=tsloom_home) == first
    one_step = run_program(
        'source id="ett" | minmax_scaler | lstm model="ett:0.1" horizon=2 | print',
        settings=tsloom_home,
    ).results[0]
    raw = read_dataset("power.ett", settings=tsloom_home)
    lo, hi = raw["OT"].min(), raw["OT"].max()
    want = load(first, settings=tsloom_home).predict(
        raw.with_columns((pl.col("OT") - lo) / (hi - lo)), horizon=2
    )
    np.testing.assert_allclose(one_step["OT"].to_numpy(), want["OT"].to_numpy(), rtol=1e-6)


def test_registered_scaler_is_the_flows(tsloom_home, ett) -> None:
    flow = 'source id="ett" | zscore_scaler | train_lstm model="ett:0.1" epoch=1 | print'
    ref = run_program(flow, settings=tsloom_home).models[0]["ref"]
    model = load(ref, settings=tsloom_home)
    raw = read_dataset("power.ett", settings=tsloom_home)
    assert model.scaler.kind == "zscore" and model.params["scaled"] is True
    assert model.scaler.center[0] == pytest.approx(raw["OT"].mean())
    assert model.scaler.scale[0] == pytest.approx(raw["OT"].std(ddof=0))

    unscaled = 'source id="ett" | train_lstm model="ett:0.1" epoch=1 | print'
    plain = load(run_program(unscaled, settings=tsloom_home).models[0]["ref"], settings=tsloom_home)
    assert plain.params["scaled"] is False and plain.ref != ref
    assert plain.scaler.center == (0.0,) and plain.scaler.scale == (1.0,)


def test_the_rest_server_refuses_an_amml_model_with_how_to_use_it(tsloom_home, ett) -> None:
    from fastapi.testclient import TestClient

    from tsloom.serve import ServeConfig, create_app

    ref = run_program(TRAIN, settings=tsloom_home).models[0]["ref"]
    with TestClient(create_app(tsloom_home, ServeConfig())) as client:
        shown = client.get(f"/v1/models/{ref}")
        assert shown.status_code == 200 and shown.json()["method"] == "amml"
        refused = client.post(f"/v1/models/{ref}/predict", json={"latest": True})
    assert refused.status_code == 422
    body = refused.json()
    assert "AMML workflow" in body["message"] and "lstm model=" in body["hint"]
