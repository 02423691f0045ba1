"""store.versions: the one writer of feature versions (aside, fsync, rename), on real GeoPackages."""
from __future__ import annotations

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import MultiPolygon, Point, box

from store import versions

# The GeoPackage writer's files; the PostGIS writer has its own tests (test_features_pg.py).
pytestmark = pytest.mark.embedded_only(reason="GeoPackage versions on disk")


def _points(names, x0=135.0):
    return gpd.GeoDataFrame({"名称": names, "収容人数": list(range(len(names)))},
                            geometry=[Point(x0 + i * 0.01, 34.8) for i in range(len(names))],
                            crs="EPSG:4326")


def test_a_version_is_complete_on_disk_with_what_the_catalogue_records(tmp_path):
    written = versions.write_version(_points(["加古川市役所", "平岡公民館"]), tmp_path,
                                     "kakogawa--shelters", 1)
    assert written.path == "features/kakogawa--shelters/v1.gpkg"
    assert written.feature_count == 2 and written.layer == versions.LAYER
    assert written.bbox == pytest.approx([135.0, 34.8, 135.01, 34.8])
    assert written.fields == {"名称": "string", "収容人数": "integer"}
    frame = pyogrio.read_dataframe(tmp_path / written.path, layer=written.layer)
    assert list(frame["名称"]) == ["加古川市役所", "平岡公民館"]
    assert not list((tmp_path / "features/kakogawa--shelters").glob(".writing-*"))


def test_a_stream_that_fails_midway_leaves_the_published_version_alone(tmp_path):
    first = versions.write_version(_points(["a"]), tmp_path, "c", 1)
    before = (tmp_path / first.path).read_bytes()

    def chunks():
        yield _points(["b", "c"])
        raise RuntimeError("the source broke off after one chunk")

    with pytest.raises(RuntimeError):
        versions.write_chunks(chunks(), tmp_path, "c", 2)
    folder = tmp_path / "features/c"
    assert sorted(p.name for p in folder.iterdir()) == ["v1.gpkg"]  # no v2, no partial file
    assert (tmp_path / first.path).read_bytes() == before


def test_chunks_mixing_polygons_and_multipolygons_land_in_one_layer(tmp_path):
    poly = gpd.GeoDataFrame({"depth_rank": [1]}, geometry=[box(135, 34, 135.1, 34.1)],
                            crs="EPSG:4326")
    multi = gpd.GeoDataFrame({"depth_rank": [3]}, geometry=[MultiPolygon(
        [box(135.2, 34, 135.3, 34.1), box(135.4, 34, 135.5, 34.2)])], crs="EPSG:4326")
    written = versions.write_chunks(iter([poly, multi, poly.iloc[:0]]), tmp_path, "flood", 1)
    assert written.feature_count == 2
    assert written.bbox == pytest.approx([135.0, 34.0, 135.5, 34.2])
    frame = pyogrio.read_dataframe(tmp_path / written.path)
    assert list(frame["depth_rank"]) == [1, 3]
    assert set(frame.geom_type) == {"MultiPolygon"}


def test_an_empty_stream_still_writes_its_schema(tmp_path):
    empty = _points([]).iloc[:0]
    written = versions.write_chunks(iter([empty]), tmp_path, "nothing", 1)
    assert written.feature_count == 0 and written.bbox is None
    info = pyogrio.read_info(tmp_path / written.path)
    assert info["features"] == 0 and list(info["fields"]) == ["名称", "収容人数"]


def test_stale_versions_go_once_the_switch_has_committed(tmp_path):
    for v in (1, 2, 3):
        last = versions.write_version(_points(["x"]), tmp_path, "c", v)
    assert versions.remove_stale_versions(tmp_path, "c", last.path) == 2
    assert [p.name for p in (tmp_path / "features/c").iterdir()] == ["v3.gpkg"]
