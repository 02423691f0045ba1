"""A cron job's view: `renkei harvest` against a CKAN site on 127.0.0.1, good and bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from shapely import get_coordinates

from store.db import Collection, Dataset, HarvestError, HarvestJob, Store
from tests import published as stored
from tests.servers import REPO, TEST_DATA, FakeCKAN, package

GOOD = [
    package("evac-282103", "加古川市 指定避難所", [("gsi_evacuation_282103.json", "GeoJSON")],
            tags=["避難所", "防災"], notes="国土地理院の指定避難所データです。<script>alert('x')</script>"),
    package("ksj-p23", "海岸保全施設（国土数値情報 P23）", [("P23-12_38_GML.zip", "ZIP")],
            org=("hyogo-pref", "兵庫県")),
    package("yaizu-aed", "AED設置箇所一覧", [("yaizu_222127_aed.csv", "CSV")], tags=["AED"]),
    package("localgov", "全国地方公共団体一覧", [("localgovjp-sjis.csv", "CSV")]),
    package("kakogawa-bom", "加古川市 避難所（BOM付きCSV）", [("kakogawa_bom.csv", "CSV")]),
    package("kasai-plane5", "加西市 指定緊急避難場所（平面直角座標系V系）",
            [("kasai_plane5.geojson", "GeoJSON")], org=("kasai-city", "加西市")),
    package("yabu-kml", "養父市 指定緊急避難場所（KML）", [("yabu.kml", "KML")],
            org=("yabu-city", "養父市")),
    package("yabu-gpkg", "養父市 指定緊急避難場所（GeoPackage）", [("yabu.gpkg", "GPKG")],
            org=("yabu-city", "養父市")),
    package("population", "市町別人口と世帯数", [("population.csv", "CSV")], tags=["統計"]),
]
BAD = [
    package("bad-404", "リンク切れのデータ", [("missing.csv", "CSV")]),
    package("bad-zip", "壊れたZIP", [("corrupt.zip", "ZIP")]),
    package("bad-encoding", "文字コード不明のCSV", [("undecodable.csv", "CSV")]),
    package("bad-coords", "座標が数値でないCSV", [("badcoords.csv", "CSV")]),
]


def harvest(data_dir: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def write_config(path: Path, url: str, name: str = "hyogo-ckan") -> Path:
    path.write_text(f"sources:\n  - name: {name}\n    type: ckan\n    url: {url}\n"
                    f"    rows: 100\n    allow_private_networks: true\n", encoding="utf-8")
    return path


def test_harvest_good_and_bad_input(fixture_files, data_dir, tmp_path):
    site = FakeCKAN(GOOD + BAD, fixture_files, max_rows=4)  # asks 100, gets 4 per page
    with site.running() as url:
        result = harvest(data_dir, write_config(tmp_path / "sources.yaml", url))
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert "hyogo-ckan / リンク切れのデータ / missing.csv: HTTP 404" in err
    assert "壊れたZIP / corrupt.zip" in err
    assert "文字コード不明のCSV / undecodable.csv" in err
    assert "座標が数値でないCSV / badcoords.csv" in err and "row" in err

    store = Store(data_dir)
    with store.session() as s:
        datasets = {d.name: d for d in s.query(Dataset) if d.source_name != "renkei-themes"}
        assert set(datasets) == {p["name"] for p in GOOD + BAD}  # failures still get a page
        counts = {c.dataset.name: c.feature_count for c in s.query(Collection)}
        assert counts["evac-282103"] == 72
        assert counts["localgov"] == 1916
        assert counts["yaizu-aed"] == 82
        assert counts["kakogawa-bom"] == 68
        assert counts["kasai-plane5"] == 20
        assert counts["yabu-kml"] == counts["yabu-gpkg"] == 162
        p23 = sorted(c.feature_count for c in s.query(Collection)
                     if c.dataset.name == "ksj-p23")
        assert p23 == [805, 1018]
        assert "population" not in counts  # a table: catalogue entry, no collection
        pop = datasets["population"].resources[0]
        assert pop.state == "table"
        assert pop.preview["columns"] == ["市区町村", "人口", "世帯数"]
        assert pop.preview["rows"][0] == ["加古川市", "258000", "110000"]
        assert datasets["localgov"].resources[0].encoding == "cp932"
        assert datasets["bad-404"].resources[0].state == "error"
        job = s.query(HarvestJob).one()
        assert (job.added, job.failed, job.status) == (len(GOOD), len(BAD), "done")
        errors = s.query(HarvestError).all()
        assert {e.stage for e in errors} >= {"fetch", "translate"}
        bad_rows = [e for e in errors if e.dataset == "座標が数値でないCSV"]
        assert bad_rows and all(e.resource == "badcoords.csv" for e in bad_rows)
        assert any(e.row == 1 for e in bad_rows)


def test_plane_rectangular_geojson_lands_on_the_gsi_points(fixture_files, data_dir, tmp_path):
    site = FakeCKAN([p for p in GOOD if p["name"] == "kasai-plane5"], fixture_files)
    with site.running() as url:
        assert harvest(data_dir, write_config(tmp_path / "s.yaml", url)).returncode == 0
    store = Store(data_dir)
    (col,) = [c for c in store.active_collections() if not c.id.startswith("theme-")]
    published = stored.frame(data_dir, col.path)
    original = gpd.read_file(TEST_DATA / "geojson/gsi_emergency_282201.json")
    assert published.crs.to_epsg() == 4326
    assert get_coordinates(published.geometry) == pytest.approx(
        get_coordinates(original.geometry), abs=1e-7)
    assert list(published["name"]) == list(original["施設・場所名"])  # shelter theme schema
    assert len(published) == 20


def test_second_harvest_changes_nothing_and_downloads_nothing(fixture_files, data_dir, tmp_path):
    site = FakeCKAN(GOOD, fixture_files, max_rows=3)
    config = write_config(tmp_path / "sources.yaml", "http://placeholder")
    with site.running() as url:
        write_config(config, url)
        first = harvest(data_dir, config)
        assert first.returncode == 0, first.stderr
        downloads = sum(site.downloads.values())
        store = Store(data_dir)
        version = store.publish_version()
        paths = {c.id: c.path for c in store.active_collections()}
        second = harvest(data_dir, config)
    assert second.returncode == 0, second.stderr
    assert sum(site.downloads.values()) == downloads == len(GOOD)  # only 304s the second time
    assert sum(site.not_modified.values()) == len(GOOD)
    assert store.publish_version() == version
    assert {c.id: c.path for c in store.active_collections()} == paths
    with store.session() as s:
        last = s.query(HarvestJob).order_by(HarvestJob.id.desc()).first()
        assert (last.added, last.updated, last.unchanged, last.failed) == (0, 0, len(GOOD), 0)


def test_changed_file_is_republished_as_a_new_version(fixture_files, data_dir, tmp_path):
    csv = tmp_path / "pop.csv"
    csv.write_text("名称,緯度,経度\n加古川駅,34.7569,134.8414\n", encoding="utf-8")
    site = FakeCKAN([package("station", "駅", [("pop.csv", "CSV")])], {"pop.csv": csv})
    config = tmp_path / "s.yaml"
    with site.running() as url:
        write_config(config, url)
        assert harvest(data_dir, config).returncode == 0
        (old,) = Store(data_dir).active_collections()
        csv.write_text("名称,緯度,経度\n加古川駅,34.7569,134.8414\n東加古川駅,34.7586,134.8796\n",
                       encoding="utf-8")
        assert harvest(data_dir, config).returncode == 0
    (new,) = Store(data_dir).active_collections()
    assert (new.id, new.version, new.feature_count) == (old.id, old.version + 1, 2)
    assert not stored.exists(data_dir, old.path) and stored.exists(data_dir, new.path)


def test_unreachable_source_keeps_what_was_published(fixture_files, data_dir, tmp_path):
    site = FakeCKAN(GOOD[:2], fixture_files)
    config = tmp_path / "s.yaml"
    with site.running() as url:
        write_config(config, url)
        assert harvest(data_dir, config).returncode == 0
    before = [(c.id, c.path) for c in Store(data_dir).active_collections()]
    result = harvest(data_dir, config)  # the site is gone now
    assert result.returncode == 1
    assert "CKAN site unreachable" in result.stderr
    assert [(c.id, c.path) for c in Store(data_dir).active_collections()] == before


def test_ckan_error_answered_with_http_200_is_an_error(fixture_files, data_dir, tmp_path):
    site = FakeCKAN(GOOD[:1], fixture_files)
    site.fail_search = True
    with site.running() as url:
        result = harvest(data_dir, write_config(tmp_path / "s.yaml", url))
    assert result.returncode == 1
    assert "package_search failed" in result.stderr and "solr is down" in result.stderr


def test_bad_config_exits_2_and_changes_nothing(data_dir, tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("sources:\n  - name: X Y\n    type: ckan\n", encoding="utf-8")
    result = harvest(data_dir, config)
    assert result.returncode == 2
    assert "lower-case slug" in result.stderr
    assert not (data_dir / "catalogue.db").exists()
