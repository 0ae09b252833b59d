"""The in-process AMML runtime runs the source design's two ETTh1 workflows."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from amml_ett import PREDICT, TRAIN, ingest_ett, quiet_console

from tsloom.amml.errors import AmmlError
from tsloom.amml.runtime import run_program
from tsloom.ingest.writer import ingest_frame
from tsloom.lake import read_dataset


@pytest.fixture
def ett(tsloom_home, ett_dir: Path) -> pl.DataFrame:
    return ingest_ett(tsloom_home, ett_dir, "2016-09-01")


def test_train_then_predict(tsloom_home, ett: pl.DataFrame) -> None:
    console = quiet_console()
    trained = run_program(TRAIN, settings=tsloom_home, console=console)
    (losses,) = trained.results
    assert losses["epoch"].to_list() == [1, 2]
    printed = console.file.getvalue()
    for loss in losses["loss"]:
        assert f"{loss:.6g}" in printed
    (model,) = trained.models
    meta = json.loads((Path(model["path"]) / "meta.json").read_text())
    assert meta["target"] == "OT" and meta["features"] == ["OT"] and meta["epochs"] == 2

    predicted = run_program(PREDICT, settings=tsloom_home, console=console)
    (pred,) = predicted.results
    assert pred.columns == ["ts", "OT"] and pred.height == 6
    source = read_dataset("power.ett", settings=tsloom_home)
    assert pred["ts"].min() > source["ts"].max()
    assert (pred["ts"].diff().drop_nulls() == source["ts"].diff().median()).all()
    lo, hi = ett["OT"].min(), ett["OT"].max()
    margin = (hi - lo) * 0.5
    assert pred["OT"].is_between(lo - margin, hi + margin).all()


def test_plain_print(tsloom_home, ett, capsys) -> None:
    run_program(TRAIN, settings=tsloom_home)
    out = capsys.readouterr().out
    assert "epoch" in out and "loss" in out


def test_source_resolution(tsloom_home, ett) -> None:
    frame = pl.DataFrame({"date": ["2016-07-01 00:00:00"], "OT": [1.0]})
    ingest_frame(frame, "power.etth2", ts="date", settings=tsloom_home)
    # exact table part wins over a prefix match
    assert run_program('source id="ett" | print', settings=tsloom_home).results[0].height > 1
    with pytest.raises(AmmlError, match=r"ambiguous.*power\.ett, power\.etth2") as err:
        run_program('source id="et" | print', settings=tsloom_home)
    assert err.value.line == 1 and err.value.column == 1
    with pytest.raises(AmmlError, match="no lake dataset"):
        run_program('source id="nope" | print', settings=tsloom_home)
    with pytest.raises(AmmlError, match="no trained model") as err:
        run_program('source id="ett" | lstm model="ett:0.1" | print', settings=tsloom_home)
    assert (err.value.line, err.value.column) == (1, 19)
    with pytest.raises(AmmlError, match="no model spec"):
        run_program('source id="ett" | lstm model="x:1" | print', settings=tsloom_home)


def test_errors_name_line_and_column(tsloom_home, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsloom.amml import catalog
    from tsloom.amml.components import Print

    class NarrowPrint(Print):
        supported = frozenset({"limit"})

    monkeypatch.setitem(
        catalog.COMPONENTS, "frobnicate", catalog.ComponentSpec("frobnicate", "progress")
    )
    with pytest.raises(AmmlError) as err:
        run_program('source id="ett"\n  | bogus', settings=tsloom_home)
    assert (err.value.line, err.value.column) == (2, 5)
    with pytest.raises(AmmlError, match=r"unknown argument|no argument") as err:
        run_program('source id="ett" | minmax_scaler wat=1 | print', settings=tsloom_home)
    assert err.value.line == 1
    with pytest.raises(AmmlError, match="not supported by the runtime") as err:
        run_program('source id="ett" | frobnicate | print', settings=tsloom_home)
    assert (err.value.line, err.value.column) == (1, 19)
    with pytest.raises(AmmlError, match="every not supported by the runtime") as err:
        run_program(
            'source id="ett" | print every=2',
            settings=tsloom_home,
            components={"print": NarrowPrint},
        )
    assert (err.value.line, err.value.column) == (1, 19)


def test_cli_flow_run_trains_then_predicts(tsloom_home, ett, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tsloom.cli import app

    runner = CliRunner()
    for name, text in (("train.amml", TRAIN), ("predict.amml", PREDICT)):
        (tmp_path / name).write_text(text + "\n")
    trained = runner.invoke(app, ["flow", "run", str(tmp_path / "train.amml")])
    assert trained.exit_code == 0, trained.output
    assert "epoch" in trained.output and "loss" in trained.output
    predicted = runner.invoke(app, ["flow", "run", str(tmp_path / "predict.amml")])
    assert predicted.exit_code == 0, predicted.output
    assert "OT" in predicted.output and "finished in" in predicted.output
