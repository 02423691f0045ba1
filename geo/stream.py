"""Translation for files too large to hold in memory (Hyogo's A31 flood layer is ~900,000
polygons, 1 GB of GeoJSON): the file is read once, in Arrow record batches (GDAL's columnar
reader through pyogrio.open_arrow); each batch is cleaned like geo.readers does, translated and
handed on. (Chunks by skip_features made GDAL parse the file again from the start for every
chunk: quadratic in the file size for GeoJSON.)

Peak memory is one chunk, not the file. The theme is decided on the first chunk and kept, so
every chunk lands in the same schema. The caller (harvesters.pipeline) writes the chunks with
store.versions.write_chunks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import geopandas as gpd
import pyogrio
import shapely

from .crs import assume_crs, crs_source_text
from .gdal_safety import network_off
from .layers import Layer, RowIssue, finish_spatial
from .translate import Translated, translate

CHUNK = 100_000  # features per chunk: peak memory


def read_batches(src, *, layer=None, batch_size: int = CHUNK,
                 columns=None) -> Iterator[gpd.GeoDataFrame]:
    """The features of one layer (``columns`` only, when given) as GeoDataFrames of
    ``batch_size`` rows, reading the file once. Geometries arrive as WKB and are decoded by
    shapely in one call per batch."""
    with pyogrio.open_arrow(src, layer=layer, batch_size=batch_size, columns=columns,
                            use_pyarrow=True) as (meta, reader):
        geom_name = meta.get("geometry_name") or "wkb_geometry"
        crs = meta.get("crs")
        for batch in reader:
            names = batch.schema.names
            cols = [n for n in names if n != geom_name]
            frame = batch.select(cols).to_pandas()
            geoms = (shapely.from_wkb(batch.column(geom_name).to_numpy(zero_copy_only=False))
                     if geom_name in names else None)
            yield gpd.GeoDataFrame(frame, geometry=geoms, crs=crs)


class ChunkedTranslation:
    """Iterate to get the translated chunks of `src` (one schema, EPSG:4326); once iterated,
    `result` is a Translated whose frame is the first chunk's empty head (for the report:
    theme, fields mapped) and whose counts cover the whole file."""

    def __init__(self, src, *, layer=None, fmt: str = "gpkg", chunk: int = CHUNK,
                 **translate_kw):
        self.src, self.layer, self.fmt, self.chunk = src, layer, fmt, chunk
        self.translate_kw = translate_kw
        self.result: Translated | None = None

    def __iter__(self) -> Iterator:
        with network_off():
            yield from self._chunks()

    def _chunks(self) -> Iterator:
        name = Path(str(self.src)).stem
        first: Translated | None = None
        rejected: list[RowIssue] = []
        warns: list[str] = []
        published = 0
        start = 0
        for gdf in read_batches(self.src, layer=self.layer, batch_size=self.chunk):
            if not len(gdf):
                continue
            if gdf.crs is None:
                gdf, crs_source, warning = assume_crs(gdf, None, self.fmt)
                if start == 0:
                    warns.append(warning)
            else:
                crs_source = crs_source_text(self.fmt if self.fmt in ("geojson", "gpkg", "shapefile")
                                             else "gpkg", gdf.crs)
            lay: Layer = finish_spatial(gdf, name, encoding=None, crs_source=crs_source,
                                        warnings_=[])
            t = translate(lay, theme=first.theme if first else None, **self.translate_kw)
            frame = t.frame
            if "source_row" in frame.columns:
                frame["source_row"] = frame["source_row"] + start
            rejected += [RowIssue(i.row + start, i.reason) for i in t.rejected]
            warns += [w for w in [*lay.warnings, *t.warnings] if w not in warns]
            published += len(frame)
            first = first or t
            start += len(gdf)
            yield frame
            del gdf, lay, t, frame
        self.result = Translated(
            first.frame.head(0) if first else None, first.theme if first else None,
            first.theme_reason if first else "", start, rejected,
            first.fields_mapped if first else {}, first.fields_unmapped if first else [],
            warns, published)
