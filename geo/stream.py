"""Translate-and-publish for files too large to hold in memory (Hyogo's A31 flood layer is
~900,000 polygons, 1 GB of GeoJSON): read a chunk of features (pyogrio skip/max features),
clean it like geo.readers does, translate it, append it to the new GeoPackage version.

Peak memory is one chunk, not the file. The theme is decided on the first chunk and kept, so
every chunk lands in the same schema. Plugs in where harvesters.pipeline calls read_resource:
for a GDAL vector file (GeoJSON, GPKG, a shapefile) larger than STREAM_BYTES, call
translate_to_version instead of read_resource + translate + featurestore.write_version.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyogrio

from . import featurestore, themes
from .crs import assume_crs, crs_source_text
from .readers import Layer, RowIssue, finish_spatial
from .translate import Translated, translate

STREAM_BYTES = 200 * 1024 * 1024
CHUNK = 100_000


def translate_to_version(src, data_dir, collection_id: str, version: int, *, layer=None,
                         fmt: str = "gpkg", chunk: int = CHUNK, **translate_kw
                         ) -> tuple[dict, Translated]:
    """Write `src` translated as `features/<collection>/v<version>.gpkg`; return what
    featurestore.write_version returns and a Translated whose frame is the first chunk (for
    the report: theme, fields mapped) and whose counts cover the whole file."""
    info = pyogrio.read_info(src, layer=layer)
    total = int(info["features"])
    folder = Path(data_dir) / "features" / featurestore.SAFE.sub("_", collection_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp, final = folder / f".writing-v{version}.gpkg", folder / f"v{version}.gpkg"
    tmp.unlink(missing_ok=True)
    name = Path(str(src)).stem
    first: Translated | None = None
    rejected: list[RowIssue] = []
    warns: list[str] = []
    published, bounds, crs_source = 0, [], None
    for start in range(0, max(total, 1), chunk):
        gdf = pyogrio.read_dataframe(src, layer=layer, skip_features=start, max_features=chunk)
        if not len(gdf):
            break
        if gdf.crs is None:
            gdf, crs_source, warning = assume_crs(gdf, None, fmt)
            if start == 0:
                warns.append(warning)
        else:
            crs_source = crs_source_text(fmt if fmt in ("geojson", "gpkg", "shapefile")
                                         else "gpkg", gdf.crs)
        lay: Layer = finish_spatial(gdf, name, encoding=None, crs_source=crs_source,
                                    warnings_=[])
        t = translate(lay, theme=first.theme if first else None, **translate_kw)
        frame = t.frame
        if "source_row" in frame.columns:
            frame["source_row"] = frame["source_row"] + start
        rejected += [RowIssue(i.row + start, i.reason) for i in t.rejected]
        warns += [w for w in [*lay.warnings, *t.warnings] if w not in warns]
        if len(frame):
            pyogrio.write_dataframe(frame, tmp, layer=featurestore.LAYER, driver="GPKG",
                                    append=tmp.exists(), promote_to_multi=True,
                                    SPATIAL_INDEX="YES")
            published += len(frame)
            bounds.append(frame.total_bounds)
        first = first or t
        del gdf, lay, t, frame
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    b = np.array(bounds)
    bbox = ([float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
             float(b[:, 3].max())] if len(bounds) and np.isfinite(b).all() else None)
    fields = (themes.field_info(first.theme) if first and first.theme
              else featurestore.field_types(first.frame) if first else {})
    written = {"path": str(final.relative_to(data_dir)), "layer": featurestore.LAYER,
               "feature_count": published, "bbox": bbox, "fields": fields}
    report = Translated(first.frame.head(0) if first else None, first.theme if first else None,
                        first.theme_reason if first else "", total, rejected,
                        first.fields_mapped if first else {}, first.fields_unmapped if first
                        else [], warns, published)
    return written, report
