"""A small hazard data directory, built once per test session by a real `renkei harvest`:
synthetic KSJ A31 (flood, v2 codes) and A33 (landslide) layers around 加古川駅, made here in
the test's temporary directory, and the real GSI shelter lists of 加古川市 (tests/data).

The flood layer has more features than RENKEI_TILES_PREGEN_MIN (set for the harvest), so its
tiles are pre-generated at publish time; the landslide layer is tiled per request.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from shapely.geometry import Polygon, box, mapping

from tests.servers import REPO, TEST_DATA

# A point inside the big flood polygon (rank 2, 0.5–3.0 m) and the landslide zone.
POINT = (134.8420, 34.7560)     # lon, lat: near 加古川駅
FLOOD_GRID = 8                  # 8 x 8 small squares + the big one
PREGEN_MIN = 20
SOURCES = """\
sources:
  - name: hazards
    type: files
    organization: hyogo-pref
    files:
      - id: a31-kakogawa
        title: 洪水浸水想定区域（加古川・想定最大規模）
        url: a31.geojson
        license: cc-by-4.0
      - id: a33-kakogawa
        title: 土砂災害警戒区域（加古川市）
        url: a33.geojson
        license: cc-by-4.0
  - name: gsi-shelters
    type: files
    organization: hyogo-pref
    files:
      - id: emergency-282103
        title: 加古川市 指定緊急避難場所（国土地理院）
        url: gsi_emergency_282103.json
        organization: kakogawa-city
        license: gsi
      - id: evacuation-282103
        title: 加古川市 指定避難所（国土地理院）
        url: gsi_evacuation_282103.json
        organization: kakogawa-city
        license: gsi
"""


def flood_features():
    """(properties, polygon): a grid of small squares east of the station, each rank 1–6 in
    turn, and one square of rank 2 around POINT."""
    out = []
    for i in range(FLOOD_GRID):
        for j in range(FLOOD_GRID):
            x, y = 134.850 + i * 0.004, 34.740 + j * 0.004
            rank = (i * FLOOD_GRID + j) % 6 + 1
            out.append(({"A31_201": rank, "A31_202": "2016/06/01",
                         "A31_203": f"兵庫県告示第{i * FLOOD_GRID + j}号"},
                        box(x, y, x + 0.003, y + 0.003)))
    px, py = POINT
    out.append(({"A31_201": 2, "A31_202": "2016/06/01", "A31_203": "兵庫県告示第999号"},
                box(px - 0.004, py - 0.003, px + 0.004, py + 0.003)))
    return out


def landslide_features():
    px, py = POINT
    return [({"A33_001": 1, "A33_002": 2, "A33_003": "28", "A33_004": "K-001",
              "A33_005": "加古川町テスト地区", "A33_006": "加古川市加古川町", "A33_008": 0},
             Polygon([(px - 0.001, py - 0.001), (px + 0.002, py - 0.001),
                      (px + 0.002, py + 0.001), (px - 0.001, py + 0.001)]))]


def write_geojson(path: Path, features) -> None:
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": p, "geometry": mapping(g)} for p, g in features]}
    path.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")


def build(root: Path) -> Path:
    """Harvest the hazard sources into ``root/data``; returns the data dir."""
    src = root / "sources"
    src.mkdir()
    write_geojson(src / "a31.geojson", flood_features())
    write_geojson(src / "a33.geojson", landslide_features())
    for name in ("gsi_emergency_282103.json", "gsi_evacuation_282103.json"):
        shutil.copy(TEST_DATA / "geojson" / name, src / name)
    (src / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    data = root / "data"
    data.mkdir()
    env = dict(os.environ, RENKEI_TILES_PREGEN_MIN=str(PREGEN_MIN))
    result = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data),
                             "harvest", "--config", str(src / "sources.yaml")], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return data
