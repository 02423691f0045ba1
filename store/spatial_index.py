"""The GeoPackage R-tree of a version written in chunks, built in one pass.

GDAL keeps a layer's R-tree up to date row by row (SQL triggers) when features are appended to
an existing file; for a million polygons written in chunks that costs more than the write
itself. When GDAL creates a layer in one go it bulk-loads the R-tree instead. So a version
written in chunks goes to a file without an index first, and is then copied once, in C, into
the final file through GDAL's Arrow stream (pyogrio.open_arrow → pyogrio.write_arrow), which
builds the index the fast way (bench/translate_bench.py measures it). Feature ids stay 1..n.
"""
from __future__ import annotations

from pathlib import Path

# Features per Arrow batch of the copy: GDAL's default (65,536 polygons) held ~120 MB.
BATCH = 10_000


def copy_with_index(src: Path, dst: Path, layer: str) -> None:
    """Copy ``layer`` of GeoPackage ``src`` (no spatial index) to a new ``dst`` with one."""
    import pyogrio
    info = pyogrio.read_info(src, layer=layer)
    with pyogrio.open_arrow(src, layer=layer, use_pyarrow=False, batch_size=BATCH
                            ) as (meta, reader):
        pyogrio.write_arrow(reader, dst, layer=layer, driver="GPKG",
                            geometry_name=meta.get("geometry_name") or "geom",
                            geometry_type=info["geometry_type"], crs=meta.get("crs"),
                            SPATIAL_INDEX="YES")
