"""The web UI's pages through FastAPI's TestClient: empty states, the dataset page
(period, gaps, anomalies, reports), integration id and preview with field-level errors,
login and refusals without a key, training from the form, the search tree with
promote/archive, prediction from the lake and from a CSV, workflows and the live page."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

import tsloom.registry as reg
from tsloom.config import Settings
from tsloom.forecast.job import train_on_integration
from tsloom.ingest.writer import ingest_frame
from tsloom.integrate import IntegrationSpec, integrate, integration_id
from tsloom.serve import ServeConfig, create_app, hash_key

KEY = "ui-test-key"
HX = {"HX-Request": "true"}
START = datetime(2026, 3, 2, tzinfo=UTC)
TABLES = ["plant.load", "plant.temp"]


def make_settings(home: Path) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    return Settings.at_home(home)


def ingest_plant(settings: Settings, days: int = 4) -> None:
    """plant.temp every 10 min (a gap and a spike), plant.load hourly."""
    n = days * 144
    t = np.arange(n)
    temp = 20 + 3 * np.sin(2 * np.pi * t / 144) + 0.1 * np.cos(t)
    temp[200] = 60.0  # an outlier
    keep = np.ones(n, dtype=bool)
    keep[300:304] = False  # four missing readings
    ts = [START + timedelta(minutes=10 * int(i)) for i in t[keep]]
    ingest_frame(
        pl.DataFrame({"ts": ts, "temp": temp[keep]}), "plant.temp", ts="ts", settings=settings
    )
    hours = np.arange(days * 24)
    load = 100 + 10 * np.sin(2 * np.pi * hours / 24)
    ingest_frame(
        pl.DataFrame({"ts": [START + timedelta(hours=int(h)) for h in hours], "load": load}),
        "plant.load",
        ts="ts",
        settings=settings,
    )


def client_for(settings: Settings) -> TestClient:
    app = create_app(settings, ServeConfig(api_key_hashes=(hash_key(KEY),)))
    return TestClient(app, base_url="https://testserver")


def login(client: TestClient) -> None:
    r = client.post("/ui/login", data={"key": KEY, "next": "/ui/models"}, follow_redirects=False)
    assert r.status_code == 303


class World:
    settings: Settings
    client: TestClient
    ref: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    w = World()
    w.settings = make_settings(tmp_path_factory.mktemp("ui") / "home")
    ingest_plant(w.settings)
    spec = {"sources": TABLES, "freq": "1h"}
    run = train_on_integration(
        spec,
        {
            "target": "temp",
            "method": "dlinear",
            "epochs": 2,
            "input_width": "12h",
            "output_width": "3h",
        },
        settings=w.settings,
    )
    w.ref = reg.register(run, settings=w.settings)
    w.client = client_for(w.settings)
    yield w
    torch.set_num_threads(threads)


def wait_job(client: TestClient, job_id: str, path: str = "/ui/jobs/{}/progress") -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = client.get(path.format(job_id), headers=HX)
        state = re.search(r'data-state="(\w+)"', r.text).group(1)
        if state in ("finished", "failed"):
            return r.text
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


# ------------------------------------------------------------------ empty states


def test_every_page_has_an_empty_state(tsloom_home: Settings) -> None:
    client = client_for(tsloom_home)
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui"
    expectations = {
        "/ui/datasets": "No datasets yet",
        "/ui/integration": "No datasets yet",
        "/ui/models/new": "No saved integration yet",
        "/ui/models": "No models registered yet",
        "/ui/predict": "No models registered yet",
        "/ui/workflows": "No saved workflows yet",
        "/ui/live/panel": "No stream is writing yet",
        "/ui/jobs": "No jobs yet",
    }
    for url, text in expectations.items():
        r = client.get(url)
        assert r.status_code == 200, url
        assert text in r.text, url
    assert "tsloom ingest" in client.get("/ui/datasets").text


def test_static_files_are_vendored_not_fetched(tsloom_home: Settings) -> None:
    client = client_for(tsloom_home)
    page = client.get("/ui/datasets").text
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts and all(s.startswith("/ui/static/") for s in scripts)
    assert "http://" not in page and "https://" not in page
    for path in scripts:
        assert client.get(path).status_code == 200
    assert "uPlot" in client.get("/ui/static/vendor/uPlot.iife.min.js").text


# ------------------------------------------------------------------ datasets


def test_catalog_and_dataset_page(world: World) -> None:
    c = world.client
    page = c.get("/ui/datasets").text
    assert "plant.temp" in page and "plant.load" in page
    assert c.get("/ui/datasets/plant.temp/period").text.startswith("10 min")
    r = c.get("/ui/datasets/plant.temp")
    assert r.status_code == 200
    text = r.text
    assert "<strong>10 min</strong>" in text
    assert re.search(r"<strong>1</strong> gaps, <strong>4</strong> missing readings", text)
    n_anomalies = int(re.search(r"<strong>(\d+)</strong> readings beyond", text).group(1))
    assert n_anomalies >= 1
    assert "60" in text.split('id="anomalies"')[1]  # the spike is listed
    chart = re.search(r"id=\"series-chart\"[^>]*data-chart='([^']*)'", text).group(1)
    assert '"label": "temp"' in html.unescape(chart) or '"label":"temp"' in html.unescape(chart)
    assert c.get("/ui/datasets/plant.nothing").status_code == 404


def test_reports_are_linked_and_served_safely(world: World) -> None:
    folder = Path(world.settings.home) / "reports" / "plant.load"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "analysis-20260101T000000Z.html").write_text("<html>the analysis</html>")
    page = world.client.get("/ui/datasets/plant.load").text
    href = "/ui/reports/plant.load/analysis-20260101T000000Z.html"
    assert href in page
    assert "the analysis" in world.client.get(href).text
    assert world.client.get("/ui/reports/plant.load/..%2Ftsloom.db").status_code == 404
    assert world.client.get("/ui/reports/plant.load/missing.html").status_code == 404


# ------------------------------------------------------------------ integration


def test_integration_id_and_preview(world: World) -> None:
    c = world.client
    form = {"tables": TABLES, "freq": "1h", "gaps": "interpolate"}
    r = c.post("/ui/integration/id", data=form, headers=HX)
    assert integration_id(TABLES) in r.text
    r = c.post("/ui/integration/preview", data=form, headers=HX)
    assert r.status_code == 200
    assert f'<code id="preview-integration-id">{integration_id(TABLES)}</code>' in r.text
    assert 'id="integration-chart"' in r.text
    assert "plant.temp.temp" in r.text and "plant.load.load" in r.text


def test_integration_form_errors_are_per_field(world: World) -> None:
    c = world.client
    r = c.post("/ui/integration/preview", data={"freq": "soon"}, headers=HX)
    assert r.status_code == 422
    fields = re.findall(r'data-error-for="(\w+)"', r.text)
    assert set(fields) == {"tables", "freq"}
    r = c.post(
        "/ui/integration/preview",
        data={"tables": TABLES, "freq": "1h", "start": "2026-03-04", "end": "2026-03-03"},
        headers=HX,
    )
    assert r.status_code == 422 and re.findall(r'data-error-for="(\w+)"', r.text) == ["end"]


# ------------------------------------------------------------------ keys


def test_write_actions_need_a_key(world: World) -> None:
    anonymous = client_for(world.settings)
    for url, data in (
        ("/ui/integration/save", {"spec": "{}"}),
        ("/ui/models/train", {"integration": "1"}),
        ("/ui/models/stage", {"ref": world.ref, "stage": "archived"}),
        ("/ui/workflows/save", {"name": "x", "source": 'source id="plant.temp" | print'}),
    ):
        r = anonymous.post(url, data=data, headers=HX)
        assert r.status_code == 401, url
        assert "needs a valid API key" in r.text, url
    page = anonymous.post("/ui/models/stage", data={"ref": world.ref, "stage": "archived"})
    assert page.status_code == 401 and "<h1>An API key is required</h1>" in page.text
    assert reg.show(world.ref, settings=world.settings)["stage"] == "staged"


def test_login_cookie_is_signed_http_only_and_strict(world: World) -> None:
    c = client_for(world.settings)
    bad = c.post("/ui/login", data={"key": "wrong"})
    assert bad.status_code == 401 and 'data-error-for="key"' in bad.text
    r = c.post("/ui/login", data={"key": KEY, "next": "/ui/models"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/models"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert KEY not in cookie and hash_key(KEY) not in cookie
    assert "key accepted" in c.get("/ui/datasets").text
    forged = client_for(world.settings)
    forged.cookies.set("tsloom_ui", "9999999999.forged")
    assert forged.post("/ui/models/stage", data={"ref": world.ref}, headers=HX).status_code == 401
    c.post("/ui/logout")
    assert "read-only" in c.get("/ui/datasets").text
    # a bearer key works as well (scripts)
    bearer = client_for(world.settings)
    r = bearer.post(
        "/ui/models/stage",
        data={"ref": world.ref, "stage": "staged"},
        headers={**HX, "Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200


def test_next_is_kept_on_the_ui(world: World) -> None:
    c = client_for(world.settings)
    r = c.post(
        "/ui/login", data={"key": KEY, "next": "https://evil.example/"}, follow_redirects=False
    )
    assert r.headers["location"] == "/ui"


# ------------------------------------------------------------------ training and search


def test_train_from_the_form(world: World) -> None:
    c = client_for(world.settings)
    login(c)
    r = c.post(
        "/ui/integration/save",
        data={"spec": '{"sources": ["plant.load", "plant.temp"], "freq": "1h"}'},
        headers=HX,
    )
    assert r.status_code == 200
    record = re.search(r"integration=(\d+)", r.text).group(1)
    page = c.get(f"/ui/models/new?integration={record}").text
    assert 'name="input_width" type="text" value="1d"' in page  # 24 steps of 1 h
    form = {
        "integration": record,
        "target": "plant.temp.temp",
        "features": ["plant.temp.temp", "plant.load.load"],
        "input_width": "90min",
        "output_width": "3h",
        "method": "dlinear",
        "output": "step",
        "scaler": "zscore",
        "epochs": "many",
    }
    bad = c.post("/ui/models/train", data=form, headers=HX)
    assert bad.status_code == 422
    assert set(re.findall(r'data-error-for="(\w+)"', bad.text)) == {"input_width", "epochs"}
    assert 'value="90min"' in bad.text  # what was typed stays
    ok = c.post("/ui/models/train", data={**form, "input_width": "12h", "epochs": "3"}, headers=HX)
    assert ok.status_code == 200
    job_id = re.search(r'/ui/jobs/(\d+)"', ok.text).group(1)
    done = wait_job(c, job_id)
    assert 'data-state="finished"' in done
    location = re.search(r'id="model-location">([^<]+)<', done).group(1)
    assert Path(location).is_dir()
    ref = re.search(r"<code>([0-9a-f]{40}/[^<]+)</code>", done).group(1)
    assert reg.show(ref, settings=world.settings)["params"]["epochs"] == 3
    chart = html.unescape(re.search(r"data-chart='([^']*)'", done).group(1))
    assert '"train RMSE"' in chart and '"validation RMSE"' in chart
    assert "rmse" in done


def test_search_tree_and_stage_buttons(world: World) -> None:
    c = client_for(world.settings)
    iid = integration_id(TABLES)
    query = "&".join(f"tables={t}" for t in TABLES)
    page = c.get(f"/ui/models?{query}").text
    assert f'<code id="search-integration-id">{iid}</code>' in page
    target = reg.show(world.ref, settings=world.settings)["target"]
    assert f">{target}</a>" in page
    page = c.get(f"/ui/models?{query}&target={target}").text
    assert ">dlinear</a>" in page
    param = world.ref.rsplit("/", 1)[1]
    leaf = c.get(f"/ui/models?{query}&target={target}&method=dlinear&param={param}").text
    assert f'<code id="leaf-ref">{world.ref}</code>' in leaf
    assert 'id="leaf-metrics"' in leaf and 'id="leaf-lineage"' in leaf
    assert "Promote to production" not in leaf  # no key: no buttons
    login(c)
    leaf = c.get(f"/ui/models?ref={world.ref}").text
    assert "Promote to production" in leaf and "Archive" in leaf
    badge = f'<span id="param-stage-{param}">'
    assert leaf.count(badge) == 1 and "hx-swap-oob" not in leaf  # the list's badge, by id
    r = c.post("/ui/models/stage", data={"ref": world.ref, "stage": "production"}, headers=HX)
    assert 'data-stage="production"' in r.text
    assert reg.show(world.ref, settings=world.settings)["stage"] == "production"
    # the param-id list's badge follows without a reload (an out-of-band swap by its id)
    oob = f'<span id="param-stage-{param}" hx-swap-oob="true"><span class="badge production">'
    assert oob in r.text
    r = c.post("/ui/models/stage", data={"ref": world.ref, "stage": "archived"}, headers=HX)
    assert 'data-stage="archived"' in r.text
    assert f'<span id="param-stage-{param}" hx-swap-oob="true"><span class="badge archived">' in (
        r.text
    )
    r = c.post("/ui/models/stage", data={"ref": world.ref, "stage": "staged"}, headers=HX)
    assert f'<span id="param-stage-{param}" hx-swap-oob="true"><span class="badge staged">' in (
        r.text
    )
    bad = c.post("/ui/models/stage", data={"ref": world.ref, "stage": "gone"}, headers=HX)
    assert bad.status_code == 422 and "hx-swap-oob" not in bad.text


# ------------------------------------------------------------------ prediction


def test_predict_from_the_lake_and_from_a_csv(world: World) -> None:
    c = world.client
    assert world.ref in c.get("/ui/predict").text
    r = c.post("/ui/predict", data={"ref": world.ref, "source": "latest"}, headers=HX)
    assert r.status_code == 200, r.text
    assert 'id="forecast-chart"' in r.text and r.text.count("<tr>") == 1 + 3
    assert 'download="forecast.csv"' in r.text
    window = integrate(
        IntegrationSpec.from_tables(TABLES, "1h", start="2026-03-03", end="2026-03-04"),
        settings=world.settings,
    ).frame.head(12)
    csv = window.rename({"plant.temp.temp": "temp", "plant.load.load": "load"}).write_csv()
    r = c.post(
        "/ui/predict",
        data={"ref": world.ref, "source": "csv"},
        files={"file": ("window.csv", csv, "text/csv")},
        headers=HX,
    )
    assert r.status_code == 200, r.text
    assert "2026-03-03 12:00:00" in r.text  # the first forecast step after the window
    r = c.post(
        "/ui/predict",
        data={"ref": world.ref, "source": "csv"},
        files={"file": ("w.csv", "ts,other\n2026-01-01T00:00:00,1\n", "text/csv")},
        headers=HX,
    )
    assert r.status_code == 422 and 'data-error-for="file"' in r.text
    r = c.post("/ui/predict", data={"ref": "nope", "source": "latest"}, headers=HX)
    assert r.status_code == 422 and 'data-error-for="ref"' in r.text


# ------------------------------------------------------------------ workflows


def test_save_and_run_a_workflow(world: World) -> None:
    c = client_for(world.settings)
    login(c)
    bad = c.post("/ui/workflows/save", data={"name": "temps", "source": "source id= |"}, headers=HX)
    assert bad.status_code == 422 and 'data-error-for="source"' in bad.text
    r = c.post(
        "/ui/workflows/save",
        data={
            "name": "temps",
            "source": 'source id="plant.temp" | print',
            "description": "print it",
        },
        headers=HX,
    )
    assert r.status_code == 200 and r.headers["HX-Redirect"] == "/ui/workflows/temps"
    page = c.get("/ui/workflows/temps").text
    assert 'id="flow-listing"' in page and "WF_MAKE_COMPONENT" in page
    assert '<div id="flow-runs">' in page and "Not run yet." in page
    r = c.post("/ui/workflows/temps/run", data={"version": "1"}, headers=HX)
    job_id = re.search(r'/ui/workflows/jobs/(\d+)"', r.text).group(1)
    done = wait_job(c, job_id, "/ui/workflows/jobs/{}")
    assert 'data-state="finished"' in done
    assert "temp" in done.split('class="flow-output"')[1]
    # the last poll also refreshes the page's Runs table, out of band, with the new run
    oob = done.split('<div id="flow-runs" hx-swap-oob="true">', 1)[1].split("</table>", 1)[0]
    run_id = re.search(r"run (\d+): finished", done).group(1)
    assert f"<tr><td>{run_id}</td>" in oob and '<span class="badge finished">' in oob
    assert "Not run yet." not in oob
    after = c.get("/ui/workflows/temps").text
    assert after.count('id="flow-runs"') == 1 and "hx-swap-oob" not in after
    runs = c.get("/ui/workflows/temps").text
    assert "finished" in runs.split("<h3", 3)[-1]


# ------------------------------------------------------------------ live


def test_live_page_pairs_predictions_with_actuals(tsloom_home: Settings) -> None:
    base = datetime(2026, 5, 1, tzinfo=UTC)
    steps = [base + timedelta(minutes=10 * i) for i in range(12)]
    ingest_frame(
        pl.DataFrame(
            {"ts": steps, "series": ["temp"] * 12, "value": [float(i) for i in range(12)]}
        ),
        "stream.actuals",
        ts="ts",
        keys=["series"],
        settings=tsloom_home,
    )
    ingest_frame(
        pl.DataFrame(
            {
                "ts": steps[1:],
                "model": ["m/temp/dlinear/abc"] * 11,
                "target": ["temp"] * 11,
                "horizon": [1] * 11,
                "value": [float(i) + 0.5 for i in range(1, 12)],
            }
        ),
        "stream.predictions",
        ts="ts",
        keys=["model", "target", "horizon"],
        settings=tsloom_home,
    )
    client = client_for(tsloom_home)
    assert 'hx-trigger="load, every 3s"' in client.get("/ui/live").text
    panel = client.get("/ui/live/panel").text
    assert "m/temp/dlinear/abc" in panel
    assert "11 matched points" in panel and "MAE 0.5" in panel


def test_when_reads_need_a_key_pages_send_the_browser_to_login(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    config = ServeConfig(api_key_hashes=(hash_key(KEY),), read_requires_key=True)
    with TestClient(create_app(settings, config)) as client:
        page = client.get("/ui/datasets", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=/ui/datasets"
        assert client.get("/ui/login").status_code == 200
        assert client.get("/v1/models").status_code == 401  # the REST API still needs it
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert client.get("/ui/datasets", headers=bearer).status_code == 200
        logged = client.post("/ui/login", data={"key": KEY, "next": "/ui/datasets"})
        assert logged.status_code == 200 and "no datasets yet" in logged.text.lower()
        assert client.get("/ui/datasets").status_code == 200
