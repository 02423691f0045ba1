"""Translation for files too large to hold in memory (Hyogo's A31 flood layer is ~900,000
polygons, 1 GB of GeoJSON): read a chunk of features (pyogrio skip/max features), clean it like
geo.readers does, translate it, hand it on.

Peak memory is one chunk, not the file. The theme is decided on the first chunk and kept, so
every chunk lands in the same schema. The caller (harvesters.pipeline) writes the chunks with
store.versions.write_chunks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyogrio

from .crs import assume_crs, crs_source_text
from .layers import Layer, RowIssue, finish_spatial
from .translate import Translated, translate

CHUNK = 100_000  # features per chunk: peak memory


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
        total = int(pyogrio.read_info(self.src, layer=self.layer)["features"])
        name = Path(str(self.src)).stem
        first: Translated | None = None
        rejected: list[RowIssue] = []
        warns: list[str] = []
        published = 0
        for start in range(0, max(total, 1), self.chunk):
            gdf = pyogrio.read_dataframe(self.src, layer=self.layer, skip_features=start,
                                         max_features=self.chunk)
            if not len(gdf):
                break
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
            yield frame
            del gdf, lay, t, frame
        self.result = Translated(
            first.frame.head(0) if first else None, first.theme if first else None,
            first.theme_reason if first else "", total, rejected,
            first.fields_mapped if first else {}, first.fields_unmapped if first else [],
            warns, published)
