"""Fixture files in real encodings and CRSs, built once per test session from tests/data."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import geopandas as gpd
import pytest

PG_SITE = Path(__file__).parent / "pg_site"
sys.path.insert(0, str(PG_SITE))
import renkei_pg_test_mode as pg_mode  # noqa: E402 (needs the path above)

from tests.servers import TEST_DATA  # noqa: E402


def pytest_configure(config):
    # Hypothesis (under schemathesis) keeps its cache in ./.hypothesis by default; the suite
    # writes nothing into the tree, so it goes to the temporary directory instead.
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                          str(Path(tempfile.gettempdir()) / "renkei-hypothesis"))
    # The tests never reach the internet: no GSI base map unless a test asks for it (and then
    # its requests are answered locally, see tests/test_hazard_browser.py).
    os.environ["RENKEI_BASEMAP"] = "none"
    config.addinivalue_line("markers", "embedded_only(reason): meaningful in the embedded mode only")
    config.addinivalue_line("markers", "pg_only(reason): meaningful in the PostgreSQL mode only")
    if pg_mode.active() and not os.environ.get(pg_mode.RUN_ENV):
        os.environ[pg_mode.RUN_ENV] = pg_mode.create_run_database()
        config._renkei_pg_run = os.environ[pg_mode.RUN_ENV]
        # Python subprocesses (the CLI, servers) resolve their data dirs the same way.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(PG_SITE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    pg_mode.install()


def pytest_unconfigure(config):
    run = getattr(config, "_renkei_pg_run", None)
    if run:
        pg_mode.drop_run_database(run)


def pytest_collection_modifyitems(config, items):
    skip = ("pg_only", "PostgreSQL mode only") if not pg_mode.active() else \
        ("embedded_only", "embedded mode only")
    for item in items:
        mark = item.get_closest_marker(skip[0])
        if mark:
            why = mark.kwargs.get("reason") or (mark.args[0] if mark.args else skip[1])
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def hazard_dir(tmp_path_factory) -> Path:
    """A data dir with flood and landslide layers and merged shelters (tests/hazard_data.py)."""
    from tests import hazard_data
    return hazard_data.build(tmp_path_factory.mktemp("hazards"))


@pytest.fixture(scope="session")
def fixture_files(tmp_path_factory) -> dict[str, Path]:
    """name → path of every file the fake CKAN serves (good and bad ones)."""
    d = tmp_path_factory.mktemp("ckanfiles")
    files = {
        "gsi_evacuation_282103.json": TEST_DATA / "geojson/gsi_evacuation_282103.json",
        "P23-12_38_GML.zip": TEST_DATA / "ksj/P23-12_38_GML.zip",
        "yaizu_222127_aed.csv": TEST_DATA / "csv/yaizu_222127_aed.csv",
        "localgovjp-sjis.csv": TEST_DATA / "csv/localgovjp-sjis.csv",
    }
    # UTF-8 with BOM and lat/lon columns, from the Kakogawa shelter list (real rows).
    rows = json.loads((TEST_DATA / "json/kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo.json")
                      .read_text(encoding="utf-8"))
    lines = ["名称,所在地,lat,lon"] + [f"{r['名称']},{r['所在地']},{r['lat']},{r['lng']}" for r in rows]
    (d / "kakogawa_bom.csv").write_bytes("\r\n".join(lines).encode("utf-8-sig"))
    files["kakogawa_bom.csv"] = d / "kakogawa_bom.csv"
    # GeoJSON in plane rectangular zone V (EPSG:6673) with the legacy `crs` member.
    gsi = gpd.read_file(TEST_DATA / "geojson/gsi_emergency_282201.json")
    plane = json.loads(gsi.to_crs(6673).to_json())
    plane["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::6673"}}
    (d / "kasai_plane5.geojson").write_text(json.dumps(plane, ensure_ascii=False), encoding="utf-8")
    files["kasai_plane5.geojson"] = d / "kasai_plane5.geojson"
    yabu = gpd.read_file(TEST_DATA / "geojson/gsi_emergency_282227.json")
    yabu[["施設・場所名", "住所", "geometry"]].to_file(d / "yabu.kml", driver="KML")
    files["yabu.kml"] = d / "yabu.kml"
    yabu.to_file(d / "yabu.gpkg", driver="GPKG", layer="shelters")
    files["yabu.gpkg"] = d / "yabu.gpkg"
    # A statistics table without geometry (figures made up for the test).
    (d / "population.csv").write_text(
        "市区町村,人口,世帯数\n加古川市,258000,110000\n加西市,42000,17000\n", encoding="utf-8")
    files["population.csv"] = d / "population.csv"
    # Bad input: a corrupt zip, bytes that are neither UTF-8 nor CP932, coordinates as words.
    good_zip = (TEST_DATA / "ksj/A30a5-11_4939-jgd_GML.zip").read_bytes()
    (d / "corrupt.zip").write_bytes(good_zip[: len(good_zip) // 2])
    files["corrupt.zip"] = d / "corrupt.zip"
    (d / "undecodable.csv").write_bytes(b"name,lat,lon\n\x82\xff\xfe\x80,34.7,134.8\n")
    files["undecodable.csv"] = d / "undecodable.csv"
    (d / "badcoords.csv").write_text("名称,緯度,経度\n加古川駅,北緯34度,東経134度\n市役所,不明,不明\n",
                                     encoding="utf-8")
    files["badcoords.csv"] = d / "badcoords.csv"
    return files


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path

