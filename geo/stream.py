"""Translation for files too large to hold in memory (Hyogo's A31 flood layer is ~900,000
polygons, 1 GB of GeoJSON): the file is read once, in Arrow record batches (GDAL's columnar
reader through pyogrio.open_arrow); each batch is cleaned like geo.readers does, translated and
handed on. (Chunks by skip_features made GDAL parse the file again from the start for every
chunk: quadratic in the file size for GeoJSON.)

A CSV too large to hold is read the same way, in pandas chunks (geo.csvread.iter_csv_layers),
and a JSON table in chunks of records (geo.jsonread.iter_json_layers).
Peak memory is one chunk, not the file. The theme is decided on the first chunk and kept, so
every chunk lands in the same schema. The caller (harvesters.pipeline) writes the chunks with
store.versions.write_chunks.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import geopandas as gpd
import pyogrio
import shapely

from . import csvread, jsonread, xlsxread
from .crs import assume_crs, crs_source_text
from .gdal_safety import network_off
from .layers import Layer, Limits, ReadError, RowIssue, finish_spatial
from .translate import Translated, translate

# Tables read in chunks through an opener (a fresh binary stream of the bytes).
_TABLE_READERS = {"csv": csvread.iter_csv_layers, "json": jsonread.iter_json_layers,
                  "xlsx": xlsxread.iter_xlsx_layers}
CHUNK = 25_000  # features per chunk: peak memory (harvesters.context.DEFAULT_STREAM_CHUNK)


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
            # Nothing of the batch stays referenced here while the caller works on the frame:
            # a suspended generator's locals would double a chunk's memory.
            del batch
            yield gpd.GeoDataFrame(frame, geometry=geoms, crs=crs)
            del frame, geoms


class ChunkedTranslation:
    """Iterate to get the translated chunks of `src` (one schema, EPSG:4326); once iterated,
    `result` is a Translated whose frame is the first chunk's empty head (for the report:
    theme, fields mapped) and whose counts cover the whole file.

    A CSV (fmt "csv") or JSON table (fmt "json") is read through `opener`
    (geo.csvread.iter_csv_layers, geo.jsonread.iter_json_layers). One without
    coordinate columns is a table: nothing is yielded, `table` holds its first rows and
    `table_rows` its row count."""

    def __init__(self, src, *, layer=None, fmt: str = "gpkg", chunk: int = CHUNK,
                 opener=None, name: str | None = None, limits: Limits = Limits(),
                 **translate_kw):
        self.src, self.layer, self.fmt, self.chunk = src, layer, fmt, chunk
        self.opener, self.limits = opener, limits
        self.name = name or Path(str(src)).stem
        # A theme named by the publisher (an upload's form) holds for every chunk; else the
        # first chunk's detected theme does.
        self.theme = translate_kw.pop("theme", None)
        self.translate_kw = translate_kw
        self.result: Translated | None = None
        self.table = None
        self.table_rows = 0
        self.encoding: str | None = None

    def __iter__(self) -> Iterator:
        with network_off():
            yield from self._translated(self._table_layers() if self.fmt in _TABLE_READERS
                                        else self._gdal_layers())

    def _gdal_layers(self) -> Iterator[tuple[Layer, int, int]]:
        """(layer, offset of its rows in the file, rows so far) per batch, the file read once."""
        warned = False
        start = 0
        for gdf in read_batches(self.src, layer=self.layer, batch_size=self.chunk):
            if not len(gdf):
                continue
            if len(gdf.columns) - 1 > self.limits.columns:
                raise ReadError(f"列が多すぎます ({len(gdf.columns) - 1:,} 列; 上限 "
                                f"{self.limits.columns:,} 列)")
            if start + len(gdf) > self.limits.rows:
                raise ReadError(f"行が多すぎます ({self.limits.rows:,} 行を超えました)")
            warns = []
            if gdf.crs is None:
                gdf, crs_source, warning = assume_crs(gdf, None, self.fmt)
                if not warned:
                    warns.append(warning)
                    warned = True
            else:
                crs_source = crs_source_text(self.fmt if self.fmt in ("geojson", "gpkg", "shapefile")
                                             else "gpkg", gdf.crs)
            offset, start = start, start + len(gdf)
            lay = finish_spatial(gdf, self.name, encoding=None, crs_source=crs_source,
                                 warnings_=warns)
            del gdf
            yield lay, offset, start    # the caller drops lay.frame once translated

    def _table_layers(self) -> Iterator[tuple[Layer, int, int]]:
        rows = 0
        read = _TABLE_READERS[self.fmt]
        for lay, start in read(self.opener, self.name, self.chunk, self.limits):
            self.encoding = lay.encoding
            if not lay.spatial:       # no coordinate columns: a table, not a layer
                if self.table is None:
                    self.table = lay.frame.head(20)
                self.table_rows += len(lay.frame)
                continue
            rows += lay.rows_in
            yield lay, start, rows

    def _translated(self, layers) -> Iterator:
        # What the report needs of the first chunk: its theme and mappings and an empty head
        # of its schema — never the chunk itself (100,000 polygons held to the end).
        first: Translated | None = None
        rejected: list[RowIssue] = []
        warns: list[str] = []
        published = total = 0
        for lay, start, total in layers:
            if not len(lay.frame):
                rejected += [RowIssue(i.row + start, i.reason) for i in lay.rejected]
                warns += [w for w in lay.warnings if w not in warns]
                continue
            t = translate(lay, theme=first.theme if first else self.theme, **self.translate_kw)
            warns += [w for w in lay.warnings if w not in warns]
            # The source chunk is not needed past translation; the generator that made it
            # still holds the Layer while suspended, so its frame is dropped here.
            lay.frame = None
            del lay
            frame = t.frame
            if "source_row" in frame.columns and start:
                frame["source_row"] = frame["source_row"] + start
            rejected += [RowIssue(i.row + start, i.reason) for i in t.rejected]
            warns += [w for w in t.warnings if w not in warns]
            published += len(frame)
            if first is None:
                first = replace(t, frame=frame.head(0), rejected=[], warnings=[])
            del t
            yield frame
            del frame
        self.result = Translated(
            first.frame if first else None, first.theme if first else None,
            first.theme_reason if first else "", total, rejected,
            first.fields_mapped if first else {}, first.fields_unmapped if first else [],
            warns, published)
