"""Large files take the chunked path (geo.stream) and publish the same collection as the
in-memory path: same features, same theme schema, same report shape."""
from __future__ import annotations

import os
import subprocess
import sys

import geopandas as gpd
import pandas as pd

from store.db import Store
from tests.servers import REPO, SHARED_DATA


def harvest_files(data_dir, tmp_path, env_extra):
    config = tmp_path / f"{data_dir.name}.yaml"
    config.write_text(
        "sources:\n  - name: yabu-files\n    type: files\n    organization: yabu-city\n"
        "    files:\n      - id: emergency\n        title: 養父市 指定緊急避難場所\n"
        f"        url: {SHARED_DATA / 'geojson/gsi_emergency_282227.json'}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                             "harvest", "--config", str(config)], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, **env_extra}, timeout=300)
    assert result.returncode == 0, result.stderr
    store = Store(data_dir)
    (col,) = [c for c in store.active_collections() if not c.id.startswith("theme-")]
    with store.session() as s:
        quality = s.get(type(col), col.id).dataset.resources[0].quality
    return col, gpd.read_file(data_dir / col.path, layer=col.layer), quality


def test_streamed_and_in_memory_paths_publish_the_same(tmp_path):
    whole, whole_frame, whole_q = harvest_files(tmp_path / "whole", tmp_path, {})
    # 1,000 bytes: the 120 kB file is "large", and chunks of 100,000 features hold all of it.
    streamed, streamed_frame, streamed_q = harvest_files(
        tmp_path / "streamed", tmp_path, {"RENKEI_STREAM_BYTES": "1000"})
    assert streamed_q[0].get("streamed") is True and "streamed" not in whole_q[0]
    assert streamed.feature_count == whole.feature_count == 162
    assert streamed_q[0]["theme"] == whole_q[0]["theme"] == "shelter"
    assert streamed.fields == whole.fields
    assert streamed.bbox == whole.bbox
    pd.testing.assert_frame_equal(streamed_frame.drop(columns="geometry"),
                                  whole_frame.drop(columns="geometry"), check_dtype=False)
    assert streamed_frame.geometry.geom_equals(whole_frame.geometry).all()
