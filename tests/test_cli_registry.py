"""`tsloom train` registers; `tsloom models …` and `tsloom predict` work over the registry."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from tsloom.cli import app
from tsloom.config import Settings
from tsloom.integrate import IntegrationSpec, integrate
from tsloom.sources.files import ingest_file

runner = CliRunner()
TRAIN = [
    "train",
    "--tables",
    "power.etth1",
    "--target",
    "OT",
    "--freq",
    "1h",
    "--input-width",
    "24h",
    "--output-width",
    "6h",
    "--method",
    "dlinear",
    "--epochs",
    "1",
    "--from",
    "2016-07-01",
    "--to",
    "2016-08-15",
    "--json",
]


def test_train_registers_then_search_predict_promote_delete(
    tsloom_home: Settings, ett_dir: Path, tmp_path: Path
) -> None:
    ingest_file(ett_dir / "ETTh1.csv", "power.etth1", ts="date")
    trained = runner.invoke(app, TRAIN)
    assert trained.exit_code == 0, trained.output
    ref = json.loads(trained.output)["ref"]
    assert ref.endswith(json.loads(trained.output)["param_id"])
    assert Path(json.loads(trained.output)["model_path"]).is_dir()

    tree = json.loads(
        runner.invoke(app, ["models", "search", "--tables", "power.etth1", "--json"]).output
    )
    (iid,) = tree
    assert ref.startswith(iid)
    assert "dlinear" in tree[iid]["power.etth1.OT"]
    refs = runner.invoke(app, ["models", "search", "--tables", "power.etth1", "--refs"])
    assert refs.output.split() == [ref]
    later = runner.invoke(app, ["models", "search", "--refs", "--from", "2030-01-01"])
    assert later.exit_code == 0 and later.output.strip() == ""

    spec = IntegrationSpec.from_tables(["power.etth1"], "1h", start="2016-09-01", end="2016-09-02")
    window = integrate(spec).frame.select("ts", "power.etth1.OT")
    window.write_csv(tmp_path / "window.csv")
    predicted = runner.invoke(
        app, ["predict", ref, "--csv", str(tmp_path / "window.csv"), "--json"]
    )
    assert predicted.exit_code == 0, predicted.output
    rows = pl.read_json(predicted.stdout_bytes)
    assert rows.height == 6 and rows["step"].to_list() == [1, 2, 3, 4, 5, 6]

    # the readings' own column name works as well as the integrated feature name
    window.rename({"power.etth1.OT": "OT"}).write_csv(tmp_path / "bare.csv")
    bare = runner.invoke(app, ["predict", ref, "--csv", str(tmp_path / "bare.csv"), "--json"])
    assert bare.exit_code == 0, bare.output
    assert pl.read_json(bare.stdout_bytes).equals(rows)

    short = window.head(10)
    short.write_csv(tmp_path / "short.csv")
    bad = runner.invoke(app, ["predict", ref, "--csv", str(tmp_path / "short.csv")])
    assert bad.exception is not None and "24" in str(bad.exception)

    assert runner.invoke(app, ["models", "promote", ref]).exit_code == 0
    shown = json.loads(runner.invoke(app, ["models", "show", ref]).output)
    assert "production" in json.dumps(shown)
    refused = runner.invoke(app, ["models", "delete", ref])
    assert refused.exception is not None
    assert runner.invoke(app, ["models", "delete", ref, "--yes"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["models", "search", "--json"]).output) == {}
