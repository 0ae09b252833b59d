"""End to end in a real browser: Debian's headless Chromium driven by Playwright (no
browser download) against a real Uvicorn server on 127.0.0.1 with a temporary home.

Ingest the demo sensors, integrate two sources, see a missing key refused, log in, save
the integration, train a small model from the form and watch its RMSE curve appear, find
it in the search tree, promote it, predict and see the chart, save and run a workflow,
and watch the live page. Each page's screenshot (1280 px wide) is taken; with
TSLOOM_UI_SCREENSHOTS=1 they are written to docs/ui/ (as the README shows them), otherwise
to a temporary folder, so a test run leaves the tree clean."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from tsloom.config import Settings
from tsloom.ingest.writer import ingest_frame
from tsloom.integrate import integration_id
from tsloom.serve import ServeConfig, create_app, hash_key
from tsloom.sources.files import ingest_file
from tsloom.sources.synthetic import write_demo

CHROMIUM = Path(os.environ.get("TSLOOM_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
KEY = "e2e-secret-key"
DOCS_SHOTS = Path(__file__).resolve().parents[1] / "docs" / "ui"
TABLES = ["airq.seoul", "weather.station"]
TIMEOUT_MS = 30_000


def _need_browser() -> None:
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        problems.append(f"Chromium is missing at {CHROMIUM} (apt-get install -y chromium)")
    if not problems:
        return
    if os.environ.get("TSLOOM_REQUIRE_SERVICES") == "1":
        pytest.fail("; ".join(problems) + " and TSLOOM_REQUIRE_SERVICES=1")
    pytest.skip("; ".join(problems))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """The demo sensors ingested into a fresh home, served by Uvicorn in a thread."""
    import torch
    import uvicorn

    _need_browser()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("e2e") / "home"
    home.mkdir(parents=True)
    settings = Settings.at_home(home)
    for f in write_demo(home / "demo", days=3):
        ingest_file(
            f.path,
            f.dataset,
            ts=f.ts_column,
            keys=f.key_columns,
            units=f.units,
            settings=settings,
        )
    app = create_app(settings, ServeConfig(api_key_hashes=(hash_key(KEY),)))
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", settings
    finally:
        uv.should_exit = True
        thread.join(15)
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(server, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.new_page()
        tab.shots_folder = shots
        yield tab
        context.close()
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("TSLOOM_UI_SCREENSHOTS") == "1":
        return DOCS_SHOTS
    return tmp_path_factory.mktemp("ui-shots")


def shot(page, name: str) -> None:
    folder = page.shots_folder
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert (folder / f"{name}.png").stat().st_size > 10_000  # a rendered page, not a blank


def test_the_whole_journey_in_a_browser(server, page) -> None:
    from playwright.sync_api import expect

    base, settings = server

    # -- datasets: the catalog, then one dataset with its chart, period, gaps
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/ui/datasets")
    expect(page.locator("#datasets")).to_contain_text("airq.seoul")
    expect(page.locator("td.period").first).not_to_contain_text("estimating")
    shot(page, "datasets")
    page.click("text=airq.seoul")
    page.wait_for_selector("#series-chart canvas")
    expect(page.locator("#period")).to_contain_text("10 min")
    shot(page, "dataset")

    # -- integration: id computed as tables are ticked, preview before saving
    page.goto(f"{base}/ui/integration")
    for table, column in (("airq.seoul", "co2"), ("weather.station", "temperature")):
        page.check(f"input[name=tables][value='{table}']")
        page.check(f"input[name=col][value='{table}::{column}']")
    expect(page.locator("#integration-id")).to_have_text(integration_id(TABLES))
    page.fill("#f-freq", "1h")
    page.click("#preview-button")
    page.wait_for_selector("#integration-chart canvas")
    expect(page.locator("#preview-integration-id")).to_have_text(integration_id(TABLES))

    # -- a missing key is refused
    page.click("#save-integration")
    expect(page.locator("#refused")).to_contain_text("needs a valid API key")

    # -- log in once; the browser keeps the token in an HTTP-only cookie
    page.goto(f"{base}/ui/login?next=/ui/integration")
    page.fill("#f-key", "not-the-key")
    page.click("button[type=submit]:has-text('Log in')")
    expect(page.locator("[data-error-for=key]")).to_contain_text("not accepted")
    page.fill("#f-key", KEY)
    page.click("button[type=submit]:has-text('Log in')")
    expect(page).to_have_url(f"{base}/ui/integration")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["tsloom_ui"]["httpOnly"] and cookies["tsloom_ui"]["sameSite"] == "Strict"
    for table, column in (("airq.seoul", "co2"), ("weather.station", "temperature")):
        page.check(f"input[name=tables][value='{table}']")
        page.check(f"input[name=col][value='{table}::{column}']")
    page.fill("#f-freq", "1h")
    page.click("#preview-button")
    page.wait_for_selector("#integration-chart canvas")
    page.click("#save-integration")
    expect(page.locator("#integration-saved")).to_contain_text(integration_id(TABLES))
    shot(page, "integration")

    # -- train from the form; the RMSE curve is drawn while it trains
    page.click("#train-on-it")
    page.select_option("#f-method", "dlinear")
    page.fill("#f-input_width", "12h")
    page.fill("#f-output_width", "3h")
    page.fill("#f-epochs", "5")
    page.click("#train-button")
    expect(page.locator("#job-started")).to_be_visible()
    page.wait_for_selector("#job-result", timeout=60_000)
    page.wait_for_selector("#rmse-chart canvas")
    assert int(page.get_attribute("#rmse-chart", "data-rendered")) >= 1
    expect(page.locator("#rmse-chart .u-legend")).to_contain_text("validation RMSE")
    location = page.inner_text("#model-location")
    assert Path(location).is_dir()
    shot(page, "train")

    # -- find it in the search tree: tables → integration id → target → method → param id
    ref = page.inner_text("#model-link")
    _iid, _target, method, param = ref.split("/")
    page.goto(f"{base}/ui/models")
    page.check("input[name=tables][value='airq.seoul']")
    page.wait_for_load_state()
    page.check("input[name=tables][value='weather.station']")
    expect(page.locator("#search-integration-id")).to_have_text(integration_id(TABLES))
    page.locator("#targets a").first.click()
    page.click(f"#methods a:has-text('{method}')")
    page.click(f"#params a:has-text('{param[:12]}')")
    expect(page.locator("#leaf-ref")).to_have_text(ref)
    page.click("button:has-text('Promote to production')")
    expect(page.locator("#leaf-stage")).to_have_attribute("data-stage", "production")
    page.wait_for_selector("#leaf-rmse canvas")
    shot(page, "models")

    # -- predict from the lake's newest window: forecast drawn after the actuals
    page.goto(f"{base}/ui/predict?ref={ref}")
    page.click("#predict-button")
    page.wait_for_selector("#forecast-chart canvas")
    expect(page.locator("#forecast-table tr")).to_have_count(1 + 3)
    assert page.get_attribute("#download-csv", "href").startswith("data:text/csv;base64,")
    shot(page, "predict")

    # -- workflows: save one, run it, follow its output
    page.goto(f"{base}/ui/workflows")
    page.fill("#f-name", "seoul-co2")
    page.fill("#f-description", "print the Seoul readings")
    page.fill("#f-source", 'source id="airq.seoul" | print')
    page.click("button:has-text('Save (compiles first)')")
    expect(page).to_have_url(f"{base}/ui/workflows/seoul-co2")
    page.click("#run-flow")
    expect(page.locator("#flow-run [data-state]")).to_have_attribute("data-state", "finished")
    expect(page.locator("#flow-run .flow-output")).to_contain_text("co2")
    shot(page, "workflows")

    # -- live: what a running stream writes, drawn as it arrives
    _write_stream(settings, ref)
    page.goto(f"{base}/ui/live")
    page.wait_for_selector(".live-model .chart canvas")
    expect(page.locator(".live-model")).to_contain_text("matched points")
    shot(page, "live")


def _write_stream(settings: Settings, ref: str) -> None:
    """What `tsloom stream` writes: predictions at their predicted time, actual steps."""
    from tsloom.lake import read_dataset

    target = ref.split("/")[1]
    recent = read_dataset("airq.seoul", settings=settings).filter(pl.col("sensor_id") == 1)
    hourly = recent.sort("ts").group_by_dynamic("ts", every="1h").agg(pl.col("co2").mean()).tail(24)
    feature = "airq.seoul.co2[sensor_id=1]"
    ingest_frame(
        hourly.select("ts", pl.lit(feature).alias("series"), pl.col("co2").alias("value")),
        "stream.actuals",
        ts="ts",
        keys=["series"],
        settings=settings,
    )
    predicted = hourly.select(
        (pl.col("ts") + timedelta(hours=1)).alias("ts"),
        pl.lit(ref).alias("model"),
        pl.lit(feature if target.startswith("airq.seoul.co2") else target).alias("target"),
        pl.lit(1).alias("horizon"),
        (pl.col("co2").shift(1).fill_null(strategy="backward") * 1.01).alias("value"),
    )
    ingest_frame(
        predicted,
        "stream.predictions",
        ts="ts",
        keys=["model", "target", "horizon"],
        settings=settings,
    )
