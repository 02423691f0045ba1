"""/api/hazards and the /hazards page (without JavaScript): one point, the hazard layers that
cover it decoded, and the nearest shelters designated for those hazards."""
from __future__ import annotations

import math

import pytest
import requests

from catalog.app import create_app
from ogcapi.hazards import haversine
from store.db import Store
from tests import hazard_data, published
from tests.servers import live_server

LON, LAT = hazard_data.POINT


@pytest.fixture(scope="module")
def site(hazard_dir):
    with live_server(create_app(hazard_dir)) as base:
        yield base


def ask(site, lat, lon, **kw):
    return requests.get(f"{site}/api/hazards", params={"lat": lat, "lon": lon}, timeout=30, **kw)


def brute_force_nearest(hazard_dir, flags, n=5):
    store = Store(hazard_dir)
    (col,) = [c for c in store.active_collections() if c.id == "theme-shelter"]
    frame = published.frame(hazard_dir, col.path)
    for f in flags:
        frame = frame[frame[f] == 1]
    d = [haversine(LAT, LON, g.y, g.x) for g in frame.geometry]
    frame = frame.assign(d=d).sort_values("d")
    return list(frame["name"][:n]), list(frame["d"][:n])


def test_point_in_flood_and_landslide_zones(site, hazard_dir):
    r = ask(site, LAT, LON)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert set(doc) == {"hazards", "shelters"}
    by_theme = {h["theme"]: h for h in doc["hazards"]}
    assert set(by_theme) == {"flood_area", "landslide_area"}   # merged layers not repeated
    flood = by_theme["flood_area"]
    assert flood["collection"].startswith("hazards--a31-kakogawa")
    assert flood["title"] == "洪水浸水想定区域（加古川・想定最大規模）"
    assert flood["attributes"]["depth_rank"] == 2 and flood["attributes"]["scale"] == "L2"
    assert flood["description"] == "洪水 浸水深 0.5m以上3m未満（想定最大規模）"
    assert flood["description_en"] == "Flood 0.5–3 m (maximum assumed scale)"
    slide = by_theme["landslide_area"]
    assert slide["description"] == "土砂災害特別警戒区域（指定済）（急傾斜地の崩壊）"
    assert slide["attributes"]["special_zone_pending"] is False

    shelters = doc["shelters"]
    names, dists = brute_force_nearest(hazard_dir, ["flood", "landslide"])
    assert [s["name"] for s in shelters] == names
    assert [s["distance_m"] for s in shelters] == [round(d, 1) for d in dists]
    assert [s["distance_m"] for s in shelters] == sorted(s["distance_m"] for s in shelters)
    for s in shelters:
        assert s["hazards"]["flood"] is True and s["hazards"]["landslide"] is True
        assert s["kind"] in ("指定緊急避難場所", "指定避難所", "指定緊急避難場所兼指定避難所")
        assert s["address"].startswith("兵庫県加古川市")


def test_point_outside_every_zone_still_gets_the_nearest_shelters(site, hazard_dir):
    lat, lon = 34.80, 134.80
    doc = ask(site, lat, lon).json()
    assert doc["hazards"] == []
    assert len(doc["shelters"]) == 5
    d = [s["distance_m"] for s in doc["shelters"]]
    assert d == sorted(d) and d[0] < 3000


@pytest.mark.parametrize("lat, lon", [("abc", "134.8"), ("", ""), ("91", "134"), ("34", "nan"),
                                      (None, "134.8")])
def test_bad_points_are_a_400_json(site, lat, lon):
    params = {k: v for k, v in (("lat", lat), ("lon", lon)) if v is not None}
    r = requests.get(f"{site}/api/hazards", params=params, timeout=10)
    assert r.status_code == 400 and "lat" in r.json()["error"]


def test_page_answers_without_javascript(site):
    page = requests.get(f"{site}/hazards", params={"lat": LAT, "lon": LON}, timeout=30)
    assert page.status_code == 200
    html = page.text
    assert "洪水 浸水深 0.5m以上3m未満（想定最大規模）" in html
    assert "土砂災害特別警戒区域（指定済）（急傾斜地の崩壊）" in html
    assert '<form class="point-form" method="get"' in html
    assert "指定緊急避難場所" in html and "約" in html
    assert "<script>" not in html and "onclick" not in html          # scripts in static files
    en = requests.get(f"{site}/hazards", params={"lat": LAT, "lon": LON, "lang": "en"},
                      timeout=30).text
    assert "Flood 0.5–3 m (maximum assumed scale)" in en
    bad = requests.get(f"{site}/hazards", params={"lat": "x", "lon": "y"}, timeout=10)
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    empty = requests.get(f"{site}/hazards", timeout=10)
    assert empty.status_code == 200 and 'id="answer"' not in empty.text
