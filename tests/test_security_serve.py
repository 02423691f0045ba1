"""Issue 11, the serving side: a broker that trusts no upstream byte. Each test plays one
attack through the real server (Flask app on 127.0.0.1 or a real `renkei serve`) and is named
after its item number in the issue (3, 7, 8, 11, 12, 13, 14, 16a).

The hostile catalogue is harvested by the real CLI from a `files` source whose CSV carries
script in a value and in a column name, and whose shelters go on into the merged theme layer.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from tests.servers import REPO, live_server

CHROMIUM = "/usr/bin/chromium"
SCRIPT_VALUE = "</script><script>window.__xss=1;alert(1)</script>"
SCRIPT_COLUMN = "<img src=x onerror=window.__xss=2;alert(2)>"
HOSTILE_ID = "hostile-files--shelters"


def hostile_sources(folder: Path) -> Path:
    """A `files` source: one shelter CSV whose name and an extra column are script."""
    folder.mkdir(parents=True, exist_ok=True)
    value = SCRIPT_VALUE.replace('"', '""')
    column = SCRIPT_COLUMN.replace('"', '""')
    (folder / "shelters.csv").write_text(
        f'名称,所在地,緯度,経度,"{column}"\n'
        f'"{value}",加古川町寺家町12-4,34.7668,134.8329,"<b onmouseover=alert(3)>x</b>"\n'
        f'別府公民館,別府町宮田町3-3,34.7298,134.8448,"line\u2028sep\u2029end &amp; <>"\n',
        encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text(textwrap.dedent("""\
        sources:
          - name: hostile-files
            type: files
            organization: kakogawa-city
            files:
              - id: shelters
                title: 避難所一覧（検証用）
                description: "悪意のある値を含む\\u2028避難所の表です。"
                url: shelters.csv
                license: cc-by-4.0
                tags: [避難所]
        """), encoding="utf-8")
    return config


def harvest(data_dir: Path, config: Path, env: dict | None = None) -> None:
    proc = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(base URL, app) of the catalogue on a data dir harvested from the hostile source."""
    from catalog.app import create_app
    root = tmp_path_factory.mktemp("hostile")
    harvest(root / "data", hostile_sources(root / "src"))
    holder = {}
    with live_server(lambda environ, start: holder["app"](environ, start)) as url:
        holder["app"] = create_app(root / "data", base_url=url)
        yield url, holder["app"]


def _collections(base: str) -> tuple[str, str]:
    cols = requests.get(base + "/ogcapi/collections?f=json", timeout=30).json()["collections"]
    own = next(c["id"] for c in cols if not c["id"].startswith("theme-"))
    theme = next(c["id"] for c in cols if c["id"].startswith("theme-"))
    return own, theme


# -- item 3: stored XSS ----------------------------------------------------------------------

def _browse(base: str, paths: list[str], *, click_marker: bool = False):
    """Open each page in headless Chromium; return what ran, what CSP refused, the popups."""
    sync_api = pytest.importorskip("playwright.sync_api")
    origin = urlsplit(base).netloc
    report = {"dialogs": [], "errors": [], "csp": [], "xss": [], "popups": [], "rendered": []}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 375, "height": 812})
            page.on("dialog", lambda d: (report["dialogs"].append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: report["errors"].append(str(e)))
            page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
                    and report["csp"].append(m.text))
            # Tests never reach the internet: base-map tiles are refused here.
            page.route("**/*", lambda r: r.continue_() if urlsplit(r.request.url).netloc == origin
                       else r.abort())
            for path in paths:
                page.goto(base + path, wait_until="load", timeout=30000)
                page.wait_for_timeout(300)  # let the page scripts and any injected one run
                if page.locator("[data-rendered], #map[data-features]").count():
                    report["rendered"].append(path)
                if click_marker and page.locator(".leaflet-marker-icon").count():
                    page.locator(".leaflet-marker-icon").first.click(force=True)
                    page.wait_for_selector(".leaflet-popup-content", timeout=5000)
                    report["popups"].append(page.evaluate(
                        "() => { const c = document.querySelector('.leaflet-popup-content');"
                        " return [c.textContent, c.querySelectorAll('script,img,b').length]; }"))
                if page.evaluate("() => window.__xss"):
                    report["xss"].append(path)
        finally:
            browser.close()
    return report


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_3_hostile_values_run_no_script_on_ogcapi_pages(hostile):
    base, _app = hostile
    own, theme = _collections(base)
    paths = []
    for cid in (own, theme):
        fids = [f["id"] for f in requests.get(
            f"{base}/ogcapi/collections/{cid}/items?f=json", timeout=30).json()["features"]]
        paths += [f"/ogcapi/collections/{cid}/items?f=html",
                  *[f"/ogcapi/collections/{cid}/items/{fid}?f=html" for fid in fids],
                  f"/ogcapi/collections/{cid}?f=html", f"/ogcapi/collections/{cid}/queryables?f=html",
                  f"/ogcapi/collections/{cid}/schema?f=html"]
    report = _browse(base, paths)
    assert report["dialogs"] == [] and report["xss"] == [], report
    assert report["errors"] == [] and report["csp"] == [], report
    # The maps still draw under the policy.
    assert f"/ogcapi/collections/{own}/items?f=html" in report["rendered"]
    assert f"/ogcapi/collections/{own}?f=html" in report["rendered"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_3_popups_show_hostile_values_as_text(hostile):
    base, _app = hostile
    own, theme = _collections(base)
    report = _browse(base, [f"/ogcapi/collections/{theme}/items?f=html&limit=1",
                            f"/ogcapi/collections/{own}/items?f=html&limit=1"], click_marker=True)
    assert report["dialogs"] == [] and report["xss"] == [], report
    assert len(report["popups"]) == 2, report
    for text, elements in report["popups"]:
        assert elements == 0
    # The theme layer's title field is the shelter's name: shown literally.
    assert any(SCRIPT_VALUE in text for text, _ in report["popups"]), report["popups"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_3_catalogue_dataset_page_runs_no_script_and_maps_under_csp(hostile):
    base, _app = hostile
    report = _browse(base, [f"/datasets/{HOSTILE_ID}", "/", f"/datasets?q={quote('避難所')}"],
                     click_marker=False)
    assert report["dialogs"] == [] and report["xss"] == [], report
    assert report["errors"] == [] and report["csp"] == [], report
    assert f"/datasets/{HOSTILE_ID}" in report["rendered"]


def test_3_json_in_pages_is_escaped_and_every_page_has_a_csp(hostile):
    base, app = hostile
    own, _theme = _collections(base)
    client = app.test_client()
    html = client.get(f"/ogcapi/collections/{own}/items?f=html").get_data(as_text=True)
    assert "</script><script>" not in html and SCRIPT_COLUMN not in html
    assert "\\u003c/script\\u003e" in html  # the value is there, as JSON escapes
    assert "<script>" not in html  # no inline script at all: everything is in files
    for path in ("/", f"/datasets/{HOSTILE_ID}", "/ogcapi?f=html",
                 f"/ogcapi/collections/{own}/items?f=html", "/api/3/action/package_list",
                 "/catalog.ttl", "/no-such-page"):
        r = client.get(path)
        csp = r.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], path
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
        assert r.headers.get("X-Content-Type-Options") == "nosniff", path
        assert r.headers.get("Referrer-Policy"), path


# -- item 16a: JSONP callback ----------------------------------------------------------------

@pytest.mark.parametrize("callback", [
    "alert(document.domain)//", "cb;alert(1)", "<script>", "a b", "1cb", "cb.", "a..b",
    "x" * 70, "cb\u2028", "", "cb()", "a.b.c.d.e.f.g"])
def test_16a_jsonp_callback_must_be_a_function_name(hostile, callback):
    base, _app = hostile
    r = requests.get(base + "/api/3/action/package_list", params={"callback": callback}, timeout=10)
    assert r.status_code == 400, (callback, r.text[:200])
    assert r.headers["Content-Type"].startswith("application/json")
    assert callback not in r.text or callback == ""


@pytest.mark.parametrize("callback", ["cb", "jQuery3410_1700000000000", "app.handlers.$cb"])
def test_16a_jsonp_with_a_function_name_is_javascript_with_nosniff(hostile, callback):
    base, _app = hostile
    r = requests.get(base + "/api/3/action/package_show",
                     params={"id": HOSTILE_ID, "callback": callback}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.text.startswith(callback + "({") and r.text.endswith("});")
    # A separator in harvested text (the description) cannot end a string literal.
    assert "\u2028" not in r.text and "\\u2028" in r.text
