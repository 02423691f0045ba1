"""Feature storage: one GeoPackage per collection version, written aside and never modified.

A new version is a new file (`features/<collection>/v<N>.gpkg`); the catalogue switches to it in
one transaction, so readers see either the old file or the complete new one, never a half-write.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd

LAYER = "features"
SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def write_version(gdf: "gpd.GeoDataFrame", data_dir: Path, collection_id: str,
                  version: int) -> dict:
    """Write `gdf` (EPSG:4326) as a new version; return what the catalogue records about it."""
    folder = Path(data_dir) / "features" / SAFE.sub("_", collection_id)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"v{version}.gpkg"
    tmp = folder / f".writing-v{version}.gpkg"
    tmp.unlink(missing_ok=True)
    import pyogrio  # here, not at import: an unchanged harvest never writes a feature
    frame = gdf.reset_index(drop=True)
    # GDAL writes the spatial index (R-tree) for GPKG by default; say so, it is what bbox uses.
    pyogrio.write_dataframe(frame, tmp, layer=LAYER, driver="GPKG", SPATIAL_INDEX="YES")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    bounds = frame.total_bounds
    bbox = [float(v) for v in bounds] if len(frame) and np.isfinite(bounds).all() else None
    return {"path": str(final.relative_to(data_dir)), "layer": LAYER,
            "feature_count": int(len(frame)), "bbox": bbox, "fields": field_types(frame)}


def field_types(frame: "gpd.GeoDataFrame") -> dict[str, str]:
    """JSON-schema-ish type per column, for queryables and the dataset page."""
    out = {}
    for name, dtype in frame.dtypes.items():
        if name == frame.geometry.name:
            continue
        kind = getattr(dtype, "kind", "O")
        out[str(name)] = {"i": "integer", "u": "integer", "f": "number",
                          "b": "boolean", "M": "string"}.get(kind, "string")
    return out


def remove_stale_versions(data_dir: Path, collection_id: str, keep: str | None) -> int:
    """Delete a collection's older GeoPackages once the switch to `keep` has committed.

    Only this collection's folder is touched (its source is locked by this job), and a web
    worker still reading an unlinked file keeps its open handle, so this is safe on POSIX.
    """
    folder = Path(data_dir) / "features" / SAFE.sub("_", collection_id)
    removed = 0
    for path in folder.glob("v*.gpkg"):
        if str(path.relative_to(data_dir)) != keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
