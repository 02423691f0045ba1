"""Large files take the chunked path (geo.stream) and publish the same collection as the
in-memory path: same features, same theme schema, same report shape — also when the file is
cut into several chunks and rows are rejected on both sides of a chunk boundary."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import geopandas as gpd
import pandas as pd
from shapely.geometry import shape

from geo.stream import read_batches
from tests.pg_features import read_version
from store.db import HarvestError, Store
from tests.servers import REPO, TEST_DATA

CHUNK = 40          # RENKEI_STREAM_CHUNK: the 162 features are read as 40 + 40 + 40 + 40 + 2
FEATURES = 162
# Data rows (1-based) made unpublishable: the last row of chunk 1, the first of chunk 2, the
# first of chunk 4 and the last row of the short last chunk.
NO_GEOMETRY = {40, 121}
OUTSIDE_JAPAN = {41, 162}
REJECTED = sorted(NO_GEOMETRY | OUTSIDE_JAPAN)
HAZARDS = {"flood": "洪水", "landslide": "崖崩れ、土石流及び地滑り", "storm_surge": "高潮",
           "earthquake": "地震", "tsunami": "津波", "large_fire": "大規模な火事",
           "inland_flood": "内水氾濫", "volcano": "火山現象"}


def source_file(tmp_path):
    """養父市's 162 指定緊急避難場所 (real), four of them made unpublishable (see REJECTED)."""
    doc = json.loads((TEST_DATA / "geojson/gsi_emergency_282227.json").read_text("utf-8"))
    assert len(doc["features"]) == FEATURES
    for row in NO_GEOMETRY:
        doc["features"][row - 1]["geometry"] = None
    for row in OUTSIDE_JAPAN:  # on the globe, far from Japan (the Gulf of Guinea)
        doc["features"][row - 1]["geometry"] = {"type": "Point", "coordinates": [1.5, 2.5]}
    path = tmp_path / "yabu_emergency.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path, doc["features"]


def harvest_files(data_dir, tmp_path, src, env_extra):
    config = tmp_path / f"{data_dir.name}.yaml"
    config.write_text(
        "sources:\n  - name: yabu-files\n    type: files\n    organization: yabu-city\n"
        "    files:\n      - id: emergency\n        title: 養父市 指定緊急避難場所\n"
        f"        url: {src}\n", encoding="utf-8")
    # CPL_DEBUG: GDAL logs every open of the source, so the log shows how often it was read.
    result = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                             "harvest", "--config", str(config)], cwd=REPO, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "CPL_DEBUG": "ON", **env_extra})
    assert result.returncode == 1, result.stderr  # published, with rows rejected
    store = Store(data_dir)
    (col,) = [c for c in store.active_collections() if not c.id.startswith("theme-")]
    with store.session() as s:
        quality = s.get(type(col), col.id).dataset.resources[0].quality
        errors = sorted((e.row, e.message) for e in s.query(HarvestError))
    opens = result.stderr.count(f"GDALOpen({src}, ")
    return col, read_version(data_dir, col.path, col.layer), quality, errors, opens


def test_streamed_in_several_chunks_and_in_memory_paths_publish_the_same(tmp_path):
    src, features = source_file(tmp_path)
    whole, whole_frame, whole_q, whole_errors, _ = harvest_files(tmp_path / "whole", tmp_path,
                                                                 src, {})
    # 1,000 bytes: the 120 kB file is "large"; 40 features a chunk: five chunks.
    streamed, frame, streamed_q, streamed_errors, opens = harvest_files(
        tmp_path / "streamed", tmp_path, src,
        {"RENKEI_STREAM_BYTES": "1000", "RENKEI_STREAM_CHUNK": str(CHUNK)})
    assert streamed_q[0].get("streamed") is True and "streamed" not in whole_q[0]
    # Read once (GDAL's Arrow batches), not re-opened and re-parsed for every chunk.
    assert 1 <= opens <= 2, f"the source was opened {opens} times"

    # Rows: every published feature once, the rejected rows reported with their file row number
    # (chunk offsets added), whichever chunk they fell in.
    published = FEATURES - len(REJECTED)
    assert streamed.feature_count == whole.feature_count == len(frame) == published
    assert streamed_q[0]["rows_in"] == whole_q[0]["rows_in"] == FEATURES
    assert streamed_q[0]["rows_published"] == whole_q[0]["rows_published"] == published
    assert [r["row"] for r in streamed_q[0]["rejected"]] == REJECTED
    assert streamed_q[0]["rejected"] == whole_q[0]["rejected"]
    assert [row for row, _ in streamed_errors] == REJECTED and streamed_errors == whole_errors
    assert sorted(frame["source_row"]) == [r for r in range(1, FEATURES + 1) if r not in REJECTED]

    # Theme: every chunk in the shelter schema, each row's values those of its source row.
    assert streamed_q[0]["theme"] == whole_q[0]["theme"] == "shelter"
    assert streamed.fields == whole.fields
    for row in frame.itertuples():
        original = features[row.source_row - 1]["properties"]
        assert (row.name, row.address, row.gsi_id, row.source_id) == (
            original["施設・場所名"], original["住所"], original["共通ID"], str(original["NO"]))
        assert row.municipality_code == "282227" and row.kind == "指定緊急避難場所"
        assert {k: getattr(row, k) for k in HAZARDS} == \
            {k: original[v] == "1" for k, v in HAZARDS.items()}, row.source_row
        assert row.geometry.equals(shape(features[row.source_row - 1]["geometry"]))

    # And the same collection as the in-memory path, field for field.
    assert streamed.bbox == whole.bbox
    pd.testing.assert_frame_equal(frame.drop(columns="geometry"),
                                  whole_frame.drop(columns="geometry"), check_dtype=False)
    assert frame.geometry.geom_equals(whole_frame.geometry).all()


def test_batches_of_one_reading(tmp_path):
    src, features = source_file(tmp_path)
    batches = list(read_batches(src, batch_size=CHUNK))
    assert [len(b) for b in batches] == [40, 40, 40, 40, 2]
    names = [n for b in batches for n in b["施設・場所名"]]
    assert names == [f["properties"]["施設・場所名"] for f in features]
    assert all(b.crs.to_epsg() == 4326 for b in batches)


def test_a_chunk_is_not_held_once_it_is_handed_on(tmp_path):
    """Peak memory of the chunked path is one chunk in transit: once the writer moved on, no
    earlier chunk (nor the source frame it was translated from) is still referenced — the
    first one was kept for the report until the end (a 1 GB file held 100,000 polygons
    more)."""
    import gc
    import weakref

    from geo.stream import ChunkedTranslation
    chunks = ChunkedTranslation(str(source_file(tmp_path)[0]), fmt="geojson", chunk=CHUNK,
                                title="養父市 指定緊急避難場所", source_dataset="yabu")
    alive = []
    for i, frame in enumerate(chunks):
        alive.append(weakref.ref(frame))
        del frame
        gc.collect()
        assert [k for k, ref in enumerate(alive[:-1]) if ref() is not None] == [], i
    assert i == 4 and chunks.result.theme == "shelter"
    assert chunks.result.rows_published == FEATURES - len(REJECTED)
    assert len(chunks.result.frame) == 0 and "name" in chunks.result.frame.columns
