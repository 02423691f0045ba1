"""Sign-in through the OpenID provider in a real browser (Debian chromium, headless, 375 px):
the sign-in page with the provider's button has no axe violations (Japanese and English), and
pressing the button goes to the provider (tests/oidc_provider.py on 127.0.0.1) and back,
signed in; the session cookie (SameSite=Lax) survives the cross-site return."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.oidc_provider import TestProvider
from tests.test_browser import CHROMIUM, axe_runner, pytestmark  # noqa: F401 (fixture, skip)
from tests.test_oidc import STAFF, preregister, renkei, user_row

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture()
def idp():
    provider = TestProvider()
    with provider.running():
        yield provider


@pytest.mark.parametrize("lang", ["", "?lang=en"])
def test_the_sign_in_page_with_the_provider_button_passes_axe(tmp_path, idp, monkeypatch,
                                                              axe_runner, lang):  # noqa: F811
    with renkei(tmp_path / "data", idp, monkeypatch) as base:
        proc = subprocess.run(["node", str(axe_runner), base + "/login" + lang],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CHROME": CHROMIUM})
    assert proc.returncode == 0, f"axe on /login{lang}:\n{proc.stdout}\n{proc.stderr}"
    assert " 0 violations" in proc.stdout


def test_a_member_signs_in_through_the_provider_in_chromium(tmp_path, idp, monkeypatch):
    data_dir = tmp_path / "data"
    preregister(data_dir, idp)
    with renkei(data_dir, idp, monkeypatch) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True,
                                    locale="ja-JP")
            page.goto(base + "/login")
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            page.get_by_role("link", name="兵庫県職員IDでログイン").click()
            page.wait_for_url(base + "/")
            assert page.get_by_role("button", name="ログアウト").is_visible()
            assert user_row(data_dir, STAFF).oidc_subject == "hyogo-0001"
            page.get_by_role("button", name="ログアウト").click()
            page.wait_for_load_state()
            assert page.get_by_role("button", name="ログアウト").count() == 0
        finally:
            browser.close()
