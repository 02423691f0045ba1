"""Feature versions: one GeoPackage per collection version, written aside and never modified.

A new version is a new file (`features/<collection>/v<N>.gpkg`); the catalogue switches to it in
one transaction, so readers see either the old file or the complete new one, never a half-write.
`VersionWriter` is the only code that creates these files: every path (a whole frame, a stream
of chunks, a merged theme layer) writes aside, fsyncs, then renames.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from store import features_pg, memory, spatial_index, tiles, tiles_pg
from store.written import WrittenVersion, field_types  # noqa: F401 (callers import them here)

if TYPE_CHECKING:
    import geopandas as gpd

LOGGER = logging.getLogger(__name__)
LAYER = "features"
SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def collection_folder(data_dir: Path, collection_id: str) -> Path:
    return Path(data_dir) / "features" / SAFE.sub("_", collection_id)


class VersionWriter:
    """Append frames (EPSG:4326) to `.writing-v<N>.gpkg`; `commit()` fsyncs and renames it to
    `v<N>.gpkg`. Leaving the `with` block without a commit removes the partial file."""

    def __init__(self, data_dir: Path, collection_id: str, version: int, *,
                 promote_to_multi: bool | None = None, deferred_index: bool = False):
        # Chunks of one layer may mix Polygon and MultiPolygon (True); for one frame pyogrio
        # decides from the whole frame (None).
        self.promote_to_multi = promote_to_multi
        self.deferred_index = deferred_index
        self.data_dir = Path(data_dir)
        folder = collection_folder(self.data_dir, collection_id)
        folder.mkdir(parents=True, exist_ok=True)
        self.collection_id = collection_id
        self.final = folder / f"v{version}.gpkg"
        self.tmp = folder / f".writing-v{version}.gpkg"
        self.tmp.unlink(missing_ok=True)
        self.tiles_tmp = tiles.tiles_path(self.tmp)
        self.unindexed = folder / f".writing-v{version}.unindexed.gpkg"
        self.unindexed.unlink(missing_ok=True)
        self.count = 0
        self.fields: dict | None = None
        self._bounds: list = []
        self._empty = None

    def __enter__(self) -> "VersionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.tmp.unlink(missing_ok=True)
        self.tiles_tmp.unlink(missing_ok=True)
        self.unindexed.unlink(missing_ok=True)

    def append(self, frame: "gpd.GeoDataFrame") -> None:
        import pyogrio  # here, not at import: an unchanged harvest never writes a feature
        frame = frame.reset_index(drop=True)
        if self.fields is None:
            self.fields = field_types(frame)
        if not len(frame):
            self._empty = frame   # keeps the schema if no chunk has a row
            return
        # GDAL writes the spatial index (R-tree) for GPKG; say so, it is what bbox uses. When
        # chunks are appended, GDAL would update it row by row through triggers: they go to a
        # file without one, copied once with the index at commit (store.spatial_index).
        target = self.unindexed if self.deferred_index else self.tmp
        pyogrio.write_dataframe(frame, target, layer=LAYER, driver="GPKG",
                                append=target.exists(), promote_to_multi=self.promote_to_multi,
                                SPATIAL_INDEX="NO" if self.deferred_index else "YES")
        self.count += len(frame)
        self._bounds.append(frame.total_bounds)

    def commit(self) -> WrittenVersion:
        import pyogrio
        if self.deferred_index and self.unindexed.exists():
            memory.give_back()    # the translation's freed chunks, before the index copy
            spatial_index.copy_with_index(self.unindexed, self.tmp, LAYER)
            self.unindexed.unlink()
        if not self.tmp.exists():
            if self._empty is None:
                raise ValueError("a version needs at least one frame, even an empty one")
            pyogrio.write_dataframe(self._empty, self.tmp, layer=LAYER, driver="GPKG",
                                    SPATIAL_INDEX="YES")
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        self._pregenerate_tiles()
        os.replace(self.tmp, self.final)
        _fsync_dir(self.final.parent)
        b = np.array(self._bounds)
        bbox = ([float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
                 float(b[:, 3].max())] if len(self._bounds) and np.isfinite(b).all() else None)
        return WrittenVersion(str(self.final.relative_to(self.data_dir)), LAYER, self.count,
                              bbox, self.fields or {})


    def _pregenerate_tiles(self) -> None:
        """A large version gets its tile pyramid beside it, in place before the GeoPackage
        (readers find the tiles of any version they can see). Without it the version is still
        served, tiled per request: slower, never wrong, so a failure is logged, not raised."""
        if self.count < tiles.pregen_min_features():
            return
        memory.give_back()        # tippecanoe runs beside this process: both count
        try:
            tiles.pregenerate(self.tmp, LAYER, self.tiles_tmp, name=self.collection_id)
            with open(self.tiles_tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tiles_tmp, tiles.tiles_path(self.final))
        except (RuntimeError, OSError) as err:
            self.tiles_tmp.unlink(missing_ok=True)
            LOGGER.warning("collection %s: tiles not pre-generated (%s); served per request",
                           self.collection_id, err)


def _publish_pyramid(w: "features_pg.PostGISWriter") -> None:
    """A large version's pyramid is in the database before the catalogue switches to it (a web
    server has no data dir to keep it in); dropping the version drops it too."""
    tiles_pg.publish_pyramid(w.engine, w.table, name=w.collection_id, count=w.count)


def writer(data_dir: Path, collection_id: str, version: int, *,
           promote_to_multi: bool | None = None, deferred_index: bool = False):
    """The writer of a new version for this store: a GeoPackage under the data dir, or a
    PostGIS table when the store is PostgreSQL (store.features_pg)."""
    if features_pg.enabled(data_dir):
        return features_pg.PostGISWriter(data_dir, collection_id, version,
                                         promote_to_multi=promote_to_multi,
                                         on_commit=_publish_pyramid)
    return VersionWriter(data_dir, collection_id, version, promote_to_multi=promote_to_multi,
                         deferred_index=deferred_index)


def write_version(gdf: "gpd.GeoDataFrame", data_dir: Path, collection_id: str,
                  version: int) -> WrittenVersion:
    """Write one whole frame as a new version."""
    with writer(data_dir, collection_id, version) as writer_:
        writer_.append(gdf)
        return writer_.commit()


def write_chunks(chunks: Iterable["gpd.GeoDataFrame"], data_dir: Path, collection_id: str,
                 version: int, *, promote_to_multi: bool | None = True) -> WrittenVersion:
    """Write a stream of frames (one schema) as a new version; peak memory is one chunk.
    Chunks of polygons may mix single and multi parts: promoted to multi (True). Point
    layers stay points (None: pyogrio decides per chunk)."""
    with writer(data_dir, collection_id, version, promote_to_multi=promote_to_multi,
                deferred_index=True) as writer_:
        for chunk in chunks:
            writer_.append(chunk)
        return writer_.commit()


def remove_stale_versions(data_dir: Path, collection_id: str, keep: str | None) -> int:
    """Delete a collection's older GeoPackages (and their tiles) once the switch to `keep` has
    committed.

    Only this collection's folder is touched (its source is locked by this job), and a web
    worker still reading an unlinked file keeps its open handle, so this is safe on POSIX.
    In PostgreSQL mode the collection's other version tables are dropped once no reader holds
    them (store.features_pg.drop_versions).
    """
    if features_pg.enabled(data_dir):
        return features_pg.drop_versions(data_dir, collection_id, keep)
    folder = collection_folder(data_dir, collection_id)
    removed = 0
    for path in folder.glob("v*.gpkg"):
        if str(path.relative_to(data_dir)) != keep:
            path.unlink(missing_ok=True)
            tiles.remove_tiles(path)
            removed += 1
    return removed


def discard(data_dir: Path, written: WrittenVersion) -> None:
    """Remove a version that was written but never switched to."""
    if features_pg.is_postgis(written.path):
        features_pg.drop_table(data_dir, written.path)
    else:
        (Path(data_dir) / written.path).unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """The rename is durable only once the directory entry is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
