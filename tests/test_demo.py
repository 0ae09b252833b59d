"""The README's demo, small: synthetic sources land in the lake once, with the truth's counts."""

import re

from rich.console import Console

from tsloom.amml.alerting import list_alerts
from tsloom.amml.flow_store import flow_runs
from tsloom.catalog import Catalog
from tsloom.config import Settings
from tsloom.demo import run_demo
from tsloom.sources.synthetic import load_truth


def test_demo_ingests_every_source_once(tsloom_home: Settings) -> None:
    console = Console(record=True, width=160)
    names = run_demo(console, days=2, seed=3)
    assert names == ["airq.gwangju", "airq.seoul", "weather.station"]
    out = console.export_text()
    assert "ingest again: nothing is doubled" in out
    for name in names:
        info = Catalog().get(name)
        truth = load_truth(tsloom_home.home / "demo-data" / f"{name}.truth.json")
        assert info.row_count == truth.unique_rows
        assert info.keys == ("sensor_id", "position")
        assert info.lake_version == 0  # the second ingestion committed nothing
        assert all(c.unit for c in info.columns if c.role == "value")
        assert f"{name}: 0 new rows" in out
        cleaned = Catalog().get(f"{name}_clean")
        assert cleaned.row_count == truth.unique_rows + truth.missing_count
        lineage = Catalog().lineage(f"{name}_clean")
        assert lineage.parent == name and lineage.parent_version == 0
    assert "estimated period and gaps against the generator's truth" in out
    assert "integration id  " in out and "param id        " in out
    assert "validation RMSE" in out and "/stacked/" in out
    assert "registry: register, search by tables" in out and "[staged]" in out
    assert "workflow (AMML): watch a sensor" in out
    found = re.search(r"(\d+) alerts stored for (\d+) injected co2 outliers", out)
    assert found is not None
    (run,) = flow_runs("watch-gwangju")
    assert run.status == "finished"
    assert len(list_alerts(run_id=run.id)) == int(found.group(1))
