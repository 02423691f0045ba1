"""The catalogue in a real browser (Debian chromium, headless, 375 px phone viewport):
axe-core finds no WCAG 2.0/2.1 A/AA violations (JIS X 8341-3:2016 AA) on the home, search,
dataset and organization pages, and a citizen can search, filter by a facet, open a dataset
and see the map draw its features. The screenshot goes to $RENKEI_ARTIFACTS when that is set
(CI can keep it), else to pytest's temporary directory: nothing is written into the tree.

Needs /usr/bin/chromium (apt `chromium`, `fonts-ipafont-gothic`) and node (apt `nodejs npm`).
The axe runner (tests/a11y/: run_axe.js and its package.json) is copied on first use into
$RENKEI_A11Y_DIR (default ~/.cache/renkei-a11y), outside the repository, and its npm packages
(axe-core, puppeteer-core; no browser download) are installed there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import REPO, live_server
from tests.test_downloads import KAKOGAWA, harvest_demo

CHROMIUM = "/usr/bin/chromium"
AXE_TOOL = REPO / "tests" / "a11y"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("node") is None,
    reason="browser tests need Debian chromium at /usr/bin/chromium and node "
           "(apt-get install chromium fonts-ipafont-gothic nodejs npm)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from catalog.app import create_app
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    harvest_demo(data_dir)
    with live_server(create_app(data_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def axe_runner() -> Path:
    folder = Path(os.environ.get("RENKEI_A11Y_DIR") or Path.home() / ".cache" / "renkei-a11y")
    folder.mkdir(parents=True, exist_ok=True)
    installed = folder / "package.json"  # reinstall when the repository's package.json changed
    wanted = (AXE_TOOL / "package.json").read_bytes()
    stale = not installed.exists() or installed.read_bytes() != wanted
    for name in ("package.json", "run_axe.js"):
        (folder / name).unlink(missing_ok=True)  # an older copy may be read-only
        shutil.copyfile(AXE_TOOL / name, folder / name)
    if stale or not (folder / "node_modules" / "axe-core").exists() or \
            not (folder / "node_modules" / "puppeteer-core").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=folder, check=True,
                       env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}, timeout=600,
                       capture_output=True)
    return folder / "run_axe.js"


PAGES = [
    "/",
    "/datasets?q=%E9%81%BF%E9%9B%A3",                       # 避難: results, facets, chips
    "/datasets?q=%E5%AD%98%E5%9C%A8%E3%81%97%E3%81%AA%E3%81%84%E8%A8%80%E8%91%89&tags=%E9%98%B2%E7%81%BD",  # zero results
    f"/datasets/{KAKOGAWA}",                                # map, table, downloads
    "/organizations",
    "/organizations/kakogawa-city",
    "/?lang=en",
]


@pytest.mark.parametrize("path", PAGES)
def test_axe_finds_no_violations(site, axe_runner, path):
    proc = subprocess.run(["node", str(axe_runner), site + path], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CHROME": CHROMIUM})
    assert proc.returncode == 0, f"axe on {path}:\n{proc.stdout}\n{proc.stderr}"
    assert " 0 violations" in proc.stdout


def test_search_filter_open_dataset_and_see_the_map(site, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    artifacts = Path(os.environ.get("RENKEI_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        # Debian's chromium, never a downloaded browser.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True,
                                has_touch=True, locale="ja-JP")
        page.goto(site + "/")
        page.fill("#q", "避難所")
        page.click("form.search-form button[type=submit]")
        page.wait_for_url("**/datasets?q=*")
        assert "件のデータセット" in page.inner_text(".result-count")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll

        page.click("#facet-organization + ul a:has-text('加古川市')")
        page.wait_for_url("**organization=kakogawa-city*")
        assert page.locator(".chips a.chip", has_text="組織：加古川市").count() == 1
        titles = page.locator(".dataset-item h3 a").all_inner_texts()
        assert titles and all("加古川市" in t for t in titles)

        page.click(f".dataset-item h3 a[href='/datasets/{KAKOGAWA}']")
        page.wait_for_selector("#map[data-features]", timeout=15000)
        shown = int(page.get_attribute("#map", "data-features"))
        markers = page.locator("#map path.leaflet-interactive").count()
        assert shown > 0 and markers == shown
        assert "件の地物を表示しています" in page.inner_text("#map-status")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.locator("#map").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "dataset-map-375.png"), full_page=True)
        browser.close()
    assert (artifacts / "dataset-map-375.png").stat().st_size > 10_000
