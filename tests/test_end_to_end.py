"""One harvest of a CKAN site ends, without a restart, as OGC API collections that GDAL and
OWSLib read and as dataset pages a citizen finds — against `renkei serve` with 2 workers."""
from __future__ import annotations

import os
import subprocess
import sys

import pyogrio
import pytest
import requests
from owslib.ogcapi.features import Features

from tests.servers import REPO, FakeCKAN, renkei_serve
from tests.test_harvest_ckan import GOOD, harvest, write_config


@pytest.fixture
def served(data_dir):
    with renkei_serve(data_dir, workers=2) as (base, _pid):
        yield base


def collection_ids(base: str) -> dict[str, str]:
    doc = requests.get(base + "/ogcapi/collections?f=json", timeout=10).json()
    return {c["title"]: c["id"] for c in doc["collections"]}


def test_harvest_appears_live_for_gis_clients_and_citizens(fixture_files, data_dir, tmp_path,
                                                          served):
    assert collection_ids(served) == {}
    site = FakeCKAN(GOOD, fixture_files, max_rows=4)
    with site.running() as url:
        result = harvest(data_dir, write_config(tmp_path / "sources.yaml", url))
    assert result.returncode == 0, result.stderr

    # Every worker sees the new collections on its next request (several requests hit both).
    for _ in range(6):
        ids = collection_ids(served)
        assert "加古川市 指定避難所" in ids and "全国地方公共団体一覧" in ids
    assert "市町別人口と世帯数" not in ids  # a table has no collection

    # GDAL's OAPIF driver pages through all 1,916 features (default page is 10 items).
    localgov = ids["全国地方公共団体一覧"]
    frame = pyogrio.read_dataframe(f"OAPIF:{served}/ogcapi/collections/{localgov}")
    assert len(frame) == 1916
    kakogawa = frame[frame["city"] == "加古川市"]
    assert len(kakogawa) == 1
    assert kakogawa.geometry.iloc[0].x == pytest.approx(134.84, abs=0.05)  # lon first
    assert kakogawa.geometry.iloc[0].y == pytest.approx(34.76, abs=0.05)

    # OWSLib's Features client, with paging by offset.
    api = Features(served + "/ogcapi")
    assert localgov in [c["id"] for c in api.collections()["collections"]]
    evac = ids["加古川市 指定避難所"]
    first = api.collection_items(evac, limit=50)
    second = api.collection_items(evac, limit=50, offset=50)
    assert first["numberMatched"] == 72
    assert len(first["features"]) == 50 and len(second["features"]) == 22
    names = {f["properties"]["name"] for f in first["features"] + second["features"]}
    assert len(names) > 60 and "県立加古川東高等学校" in names

    # A citizen searches in Japanese and opens the dataset page.
    page = requests.get(served + "/datasets", params={"q": "人口"}, timeout=10)
    assert page.ok and "市町別人口と世帯数" in page.text
    page = requests.get(served + "/datasets", params={"q": "AED"}, timeout=10)
    assert "AED設置箇所一覧" in page.text
    page = requests.get(served + "/datasets", params={"q": "避難所"}, timeout=10)
    assert "加古川市 指定避難所" in page.text
    detail = requests.get(served + "/datasets/hyogo-ckan--evac-282103", timeout=10)
    assert detail.ok
    html = detail.text
    for expected in ("加古川市 指定避難所", "加古川市", "クリエイティブ・コモンズ 表示 4.0",
                     "避難所", f"/ogcapi/collections/{evac}", "gsi_evacuation_282103.json"):
        assert expected in html, expected
    assert "<script>alert('x')</script>" not in html
    assert "&lt;script&gt;" in html


def test_demo_sources_harvest_offline(data_dir):
    """The quick start's harvest half: the bundled examples, no network at all."""
    env = dict(os.environ, no_proxy="*")
    result = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                             "harvest", "--config", str(REPO / "catalog/examples/sources.yaml")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    from store.db import Store
    cols = [c for c in Store(data_dir).active_collections() if not c.id.startswith("theme-")]
    assert len(cols) == 7
    assert sum(c.feature_count for c in cols) == 82 + 72 + 20 + 33 + 162 + 53 + 68
