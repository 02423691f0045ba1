"""The hazard maps in a real browser (Debian chromium, 375 px): axe finds no violations on the
/hazards page and a hazard dataset page (MapLibre over vector tiles); a citizen opens the flood
dataset and sees its tiles drawn, then clicks inside a flood polygon on /hazards and reads the
answer; with RENKEI_BASEMAP=gsi the 地理院タイル credit is on screen while GSI's tile requests
are answered locally by Playwright's router (the tests never reach the internet)."""
from __future__ import annotations

import math
import os
import struct
import subprocess
import zlib
from urllib.parse import quote

import pytest

from catalog.app import create_app
from store.db import Store
from tests import hazard_data
from tests.servers import live_server
from tests.test_browser import CHROMIUM, axe_runner, pytestmark  # noqa: F401 - fixture, skip

LON, LAT = hazard_data.POINT
# East of the flood square around POINT, in no zone.
START = (34.7560, 134.8480)
MAP_ZOOM = 14     # hazards.js centres the map on the asked point at this zoom


@pytest.fixture(scope="module")
def site(hazard_dir):
    with live_server(create_app(hazard_dir)) as base:
        yield base


def flood_dataset(hazard_dir):
    (c,) = [c for c in Store(hazard_dir).active_collections() if c.id.startswith("hazards--a31")]
    return c.dataset_id


def launch(p):
    # Debian's chromium, never a downloaded browser; WebGL through SwiftShader (no GPU here).
    return p.chromium.launch(executable_path=CHROMIUM,
                             args=["--no-sandbox", "--use-angle=swiftshader",
                                   "--enable-unsafe-swiftshader"])


def offline(page, gsi_hits=None):
    """Answer GSI tiles with a blank PNG, refuse every other outside request."""
    def handle(route):
        url = route.request.url
        if url.startswith("https://cyberjapandata.gsi.go.jp/"):
            if gsi_hits is not None:
                gsi_hits.append(url)
            return route.fulfill(status=200, content_type="image/png", body=blank_png())
        if url.startswith("http://127.0.0.1"):
            return route.continue_()
        return route.abort()
    page.route("**/*", handle)


def blank_png(size=256):
    """A valid pale-grey PNG, made with the standard library."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\xee\xee\xee" * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("path", ["/hazards", f"/hazards?lat={LAT}&lon={LON}",
                                  f"/hazards?lat={LAT}&lon={LON}&lang=en", "/hazards?lat=x&lon=y",
                                  "DATASET"])
def test_axe_finds_no_violations(site, hazard_dir, axe_runner, path):
    if path == "DATASET":
        path = "/datasets/" + quote(flood_dataset(hazard_dir))
    proc = subprocess.run(["node", str(axe_runner), site + path], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CHROME": CHROMIUM})
    assert proc.returncode == 0, f"axe on {path}:\n{proc.stdout}\n{proc.stderr}"
    assert " 0 violations" in proc.stdout


def test_open_flood_dataset_then_click_inside_a_flood_polygon(site, hazard_dir):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 375, "height": 812}, is_mobile=True,
                                has_touch=False, locale="ja-JP")
        offline(page)
        page.goto(site + "/datasets/" + quote(flood_dataset(hazard_dir)))
        page.wait_for_selector("#map[data-ready=yes]", timeout=30000)
        page.wait_for_function("Number(document.getElementById('map').dataset.rendered) > 0",
                               timeout=30000)
        assert "0.5m以上3m未満" in page.inner_text(".legend")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375

        page.goto(f"{site}/hazards?lat={START[0]}&lon={START[1]}")
        assert "含まれていません" in page.inner_text("#answer")
        page.wait_for_selector("#hazard-map[data-ready=yes]", timeout=30000)
        page.wait_for_function(
            "Number(document.getElementById('hazard-map').dataset.rendered) > 0", timeout=30000)
        box = page.locator("#hazard-map canvas").bounding_box()
        # Web Mercator at MapLibre's 512-pixel tiles: pixels per degree of longitude.
        px_per_deg = 512 * 2 ** MAP_ZOOM / 360
        target_lon = 134.8430                                   # inside the square around POINT
        dx = (target_lon - START[1]) * px_per_deg
        page.locator("#hazard-map canvas").click(
            position={"x": box["width"] / 2 + dx, "y": box["height"] / 2})
        page.wait_for_url("**/hazards?lat=*", timeout=15000)
        page.wait_for_selector("#answer")
        answer = page.inner_text("#answer")
        assert "洪水 浸水深 0.5m以上3m未満（想定最大規模）" in answer
        assert "近くの避難先" in answer and "m" in answer
        lon_sent = float(page.input_value("#lon"))
        assert math.isclose(lon_sent, target_lon, abs_tol=0.0005)
        focused = page.evaluate("document.activeElement.id")
        assert focused == "answer-h"                             # the answer is announced
        browser.close()


def test_gsi_base_map_credit_on_screen(hazard_dir):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    app = create_app(hazard_dir, config={"RENKEI_BASEMAP": "gsi"})
    hits = []
    with live_server(app) as base, sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 375, "height": 812}, locale="ja-JP")
        offline(page, hits)
        page.goto(f"{base}/hazards?lat={LAT}&lon={LON}")
        page.wait_for_selector("#hazard-map[data-ready=yes]", timeout=30000)
        credit = page.locator(".maplibregl-ctrl-attrib a", has_text="地理院タイル")
        credit.wait_for(state="visible", timeout=15000)
        assert page.locator(".basemap-credit a", has_text="地理院タイル").is_visible()
        page.goto(base + "/datasets/" + quote(flood_dataset(hazard_dir)))
        page.wait_for_selector("#map[data-ready=yes]", timeout=30000)
        assert page.locator(".maplibregl-ctrl-attrib a", has_text="地理院タイル").is_visible()
        browser.close()
    assert hits and all("/xyz/pale/" in u for u in hits)
