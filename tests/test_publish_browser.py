"""Publishing by hand in a real browser (Debian chromium, headless, Playwright, 375 px): a Kasai
admin created with the `renkei` CLI signs in, uploads a real CP932 CSV through /datasets/new,
reads the quality report on the preview, publishes, and the data is on the OGC API in the
shelter theme. axe-core (the copy tests/test_browser.py installs) finds no WCAG 2.1 A/AA
violation on the sign-in, form, preview and dataset pages.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from tests.servers import REPO, live_server
from tests.test_browser import CHROMIUM, axe_runner  # noqa: F401 (fixture)
from tests.test_publish_api import renkei

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian chromium at /usr/bin/chromium")
SJIS = REPO / "catalog" / "examples" / "kakogawa_shelters_sjis.csv"
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from catalog.app import create_app
    data_dir = tmp_path_factory.mktemp("form") / "data"
    renkei(data_dir, "org", "add", "kasai", "加西市", "--code", "282201")
    renkei(data_dir, "user", "add", "admin@city.kasai.example", "--org", "kasai",
           "--role", "admin", stdin=PASSWORD + "\n")
    with live_server(create_app(data_dir)) as url:
        yield url


def _axe(page, axe_js: Path, what: str) -> None:
    # Evaluated over the DevTools protocol, as run_axe.js does: the pages' CSP forbids inline
    # script, and the test must not weaken it (no bypass_csp).
    page.evaluate(axe_js.read_text(encoding="utf-8"))
    result = page.evaluate("""() => axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})""")
    problems = [(v["id"], v["help"], len(v["nodes"])) for v in result["violations"]]
    assert not problems, f"axe on {what}: {problems}"


def test_sign_in_upload_cp932_csv_preview_and_publish(site, axe_runner, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    axe_js = axe_runner.parent / "node_modules" / "axe-core" / "axe.min.js"
    artifacts = Path(os.environ.get("RENKEI_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True,
                                has_touch=True, locale="ja-JP",
                                bypass_csp=True)   # axe is injected as an inline script
        page.goto(site + "/datasets/new")
        page.wait_for_url("**/login?next=*")     # the form needs a signed-in member
        _axe(page, axe_js, "/login")
        page.fill("#email", "admin@city.kasai.example")
        page.fill("#password", PASSWORD)
        page.click("form.stacked-form button[type=submit]")
        page.wait_for_url("**/datasets/new")
        _axe(page, axe_js, "/datasets/new")
        page.fill("#title", "加西市 避難所一覧（フォームで公開）")
        page.fill("#description", "Shift_JIS の CSV をフォームから公開しました。")
        page.fill("#tags", "避難所、防災")
        page.check("#access_level-0")            # public: an admin may
        page.set_input_files("#file", str(SJIS))
        page.click("form.stacked-form button[type=submit]")
        page.wait_for_url("**/preview")
        report = page.inner_text("main")
        assert "公開前の確認" in report and "品質レポート" in report
        rows = len(SJIS.read_bytes().splitlines()) - 1
        assert str(rows) in report               # rows read and published
        assert "CP932" in report.upper() or "SHIFT_JIS" in report.upper()
        assert "指定避難所" in report or "避難" in report  # the theme, in Japanese
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        _axe(page, axe_js, "preview")
        page.screenshot(path=str(artifacts / "publish-preview-375.png"), full_page=True)
        # Not public yet: anonymous callers do not find it.
        dataset_id = page.url.rsplit("/", 2)[-2]
        assert requests.get(f"{site}/datasets/{dataset_id}", timeout=10).status_code == 404
        page.click("button:has-text('公開する')")
        page.wait_for_url(f"**/datasets/{dataset_id}")
        assert page.inner_text("h1") == "加西市 避難所一覧（フォームで公開）"
        page.wait_for_selector("#map[data-features]", timeout=15000)   # on the map
        assert int(page.get_attribute("#map", "data-features")) == rows
        _axe(page, axe_js, "dataset page with owner actions")
        browser.close()
    pkg = requests.get(site + "/api/3/action/package_show", params={"id": dataset_id},
                       timeout=10).json()["result"]
    assert {"key": "theme", "value": "shelter"} in pkg["extras"]
    cid = next(r["id"] for r in pkg["resources"] if r["format"] == "OGC API Features")
    cid = cid.removesuffix("--ogcapi")
    items = requests.get(f"{site}/ogcapi/collections/{cid}/items",
                         params={"f": "json", "limit": 1000}, timeout=30).json()
    assert items["numberMatched"] == rows
    assert "加古川公民館" in json.dumps(items, ensure_ascii=False)
