"""The 申請窓口 in a real browser (Debian chromium, headless, 375 px): a town applies at /join,
the operator signs in and accepts it at /admin/applications, the invitation in outbox/ leads
the town's admin to set a password, sign in and publish a dataset, and the admin sees the
town's usage page;
a company's API key request, approved with `renkei applications approve`, is collected at the
private link and its key reads `members` data. axe finds no violations on the window's pages.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest
import requests

from tests.platform_world import OPERATOR, SHARED, build, cli, link_in, mail_to
from tests.accounts import PASSWORD
from tests.servers import REPO, live_server
from tests.test_browser import CHROMIUM, axe_runner, pytestmark  # noqa: F401 (fixture, skip)

SJIS = REPO / "catalog" / "examples" / "kakogawa_shelters_sjis.csv"
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from catalog.app import create_app
    data_dir = build(tmp_path_factory.mktemp("joinweb"))
    with live_server(create_app(data_dir)) as url:
        yield url, data_dir


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _axe(page, axe_runner, what: str) -> None:
    """axe-core in the signed-in page itself (run_axe.js opens a fresh, signed-out browser)."""
    page.add_script_tag(path=str(axe_runner.parent / "node_modules" / "axe-core" / "axe.min.js"))
    result = page.evaluate("""() => axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})""")
    problems = [(v["id"], v["help"], len(v["nodes"])) for v in result["violations"]]
    assert not problems, f"axe on {what}: {problems}"


def _phone(browser):
    return browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True,
                            has_touch=True, locale="ja-JP",
                            bypass_csp=True)   # axe is injected as an inline script; the CSP
                                               # (script-src 'self') stays on for the pages


def test_a_town_joins_its_admin_signs_in_and_publishes(site, browser, axe_runner):  # noqa: F811
    base, data_dir = site
    page = _phone(browser)
    page.goto(base + "/join")
    page.click("a[href='/join/organization']")
    page.fill("#name_ja", "多可町")
    page.fill("#slug", "taka-town")
    page.select_option("#kind", "municipality")
    page.fill("#code", "283657")
    page.fill("#population", "19000")
    page.fill("#name", "多可 太郎")
    page.fill("#email", "joho@town.taka.example")
    page.check("#accept_terms")
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_selector("#status-link")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    status_url = base + page.get_attribute("#status-link", "href")
    app_id = re.search(r"受付番号は (\d+) です", page.inner_text("main")).group(1)

    operator = _phone(browser)
    operator.goto(base + "/login?next=/admin/applications")
    operator.fill("#email", OPERATOR)
    operator.fill("#password", PASSWORD)
    operator.click("form.stacked-form button[type=submit]")
    operator.wait_for_url("**/admin/applications")
    _axe(operator, axe_runner, "/admin/applications")
    operator.click(f"#application-{app_id} button.accept")
    operator.wait_for_selector(f"#application-{app_id} .app-status[data-status=accepted]")
    operator.close()

    page.goto(status_url)
    assert page.get_attribute("#application-status", "data-status") == "accepted"
    _axe(page, axe_runner, "status page")
    invitation = [m for m in mail_to(data_dir, "joho@town.taka.example")
                  if "招待" in m["Subject"]][0]
    page.goto(base + link_in(invitation, "invitation"))
    page.fill("#password", "taka-town-secret-1")
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/login\?next=.*"))
    page.fill("#email", "joho@town.taka.example")
    page.fill("#password", "taka-town-secret-1")
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_url("**/organizations/taka-town")
    assert "ログアウト" in page.inner_text("header")
    # The new admin publishes the town's first dataset through /datasets/new.
    page.goto(base + "/datasets/new")
    page.fill("#title", "多可町 避難所一覧")
    page.fill("#description", "参加後に最初に公開したデータです。")
    page.check("#access_level-0")
    page.set_input_files("#file", str(SJIS))
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_url("**/preview")
    dataset_id = page.url.rsplit("/", 2)[-2]
    page.click("button:has-text('公開する')")
    page.wait_for_url(f"**/datasets/{dataset_id}")
    shown = requests.get(f"{base}/api/3/action/package_show?id={dataset_id}", timeout=30)
    assert shown.json()["result"]["organization"]["name"] == "taka-town"
    page.goto(base + "/organizations/taka-town/usage")
    assert page.locator("table.fee-table[data-organization=taka-town]").count() == 1
    assert page.inner_text("td[data-field=population]") == "19000"
    assert page.inner_text("td[data-field=datasets]") == "1"
    _axe(page, axe_runner, "/organizations/taka-town/usage")
    page.goto(base + "/organizations/taka-town/usage?lang=en")
    _axe(page, axe_runner, "/organizations/taka-town/usage?lang=en")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.close()


def test_a_company_collects_its_api_key(site, browser):
    base, data_dir = site
    page = _phone(browser)
    page.goto(base + "/join/api-key")
    page.fill("#company", "株式会社ハザードマップ")
    page.fill("#name", "地図 次郎")
    page.fill("#email", "jiro@hazard.example")
    page.fill("#purpose", "避難所アプリの開発")
    page.check("#accept_terms")
    page.click("form.stacked-form button[type=submit]")
    page.wait_for_selector("#status-link")
    status_url = base + page.get_attribute("#status-link", "href")
    app_id = re.search(r"受付番号は (\d+) です", page.inner_text("main")).group(1)
    done = cli(data_dir, "applications", "approve", app_id)
    assert done.returncode == 0, done.stderr
    page.goto(status_url)
    page.click("button:has-text('APIキーを受け取る')")
    key = page.input_value("#api-key")
    page.close()
    url = f"{base}/api/3/action/package_show?id={SHARED}"
    assert requests.get(url, timeout=30).status_code == 404
    assert requests.get(url, headers={"Authorization": f"Bearer {key}"},
                        timeout=30).json()["result"]["id"] == SHARED


@pytest.mark.parametrize("path", ["/join", "/join/organization", "/join/membership",
                                  "/join/api-key", "/terms", "/terms?lang=en"])
def test_axe_finds_no_violations_on_the_window(site, axe_runner, path):  # noqa: F811
    base, _ = site
    proc = subprocess.run(["node", str(axe_runner), base + path], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CHROME": CHROMIUM})
    assert proc.returncode == 0, f"axe on {path}:\n{proc.stdout}\n{proc.stderr}"
    assert " 0 violations" in proc.stdout
