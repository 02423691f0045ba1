"""A read layer and what every reader does to one: the types readers hand to translation
(Layer, RowIssue, ReadError) and the shared clean-up (column names, JSON cells, geometries
reprojected to EPSG:4326 and repaired)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .crs import WGS84, out_of_range


@dataclass
class RowIssue:
    row: int        # 1-based data row (CSV: header excluded; spatial formats: feature number)
    reason: str


@dataclass
class Layer:
    name: str
    frame: "gpd.GeoDataFrame | pd.DataFrame"
    spatial: bool
    encoding: str | None
    crs_source: str | None
    rows_in: int
    rejected: list[RowIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """What one file may make a reader hold (issue 11: a 1.5 MB zip held a 1.5 GiB CSV).
    harvesters.context.HarvestSettings sets them from the environment; these are the
    defaults for other callers."""
    unpacked: int = 1024 ** 3          # bytes unpacked from one zip, all members
    zip_ratio: int = 200               # unpacked/packed of a member above 1 MB: a bomb past this
    table_bytes: int = 8 * 1024 ** 2   # CSV above this is read in chunks (geo.stream)
    max_table: int = 64 * 1024 ** 2    # a JSON table or zip member read whole: refused above
    rows: int = 10_000_000             # rows (features) per file
    columns: int = 1_000               # columns per file


class ReadError(Exception):
    """The whole resource cannot be read; .row is set when a specific row is to blame."""

    def __init__(self, message: str, row: int | None = None):
        super().__init__(message)       # callers report .row beside the message
        self.message, self.row = message, row



# The GeoPackage's own feature id column: a source column of that name (ArcGIS exports carry
# FID) cannot be written beside it, so it is published as fid_source.
FID_NAMES = {"fid": "fid_source"}


def clean_columns(names, reserved=("geometry",)) -> list[str]:
    """Keep source names (Japanese stays Japanese) but strip BOM/whitespace, name empty ones
    column_N, rename FID (FID_NAMES) and make duplicates unique case-insensitively
    (GPKG/SQLite columns are)."""
    seen, out = {r.casefold() for r in reserved} | set(FID_NAMES), []
    for i, n in enumerate(names, 1):
        base = "" if is_missing(n) else str(n)
        base = base.replace("\ufeff", "").strip() or f"column_{i}"
        base = FID_NAMES.get(base.casefold(), base)
        cand, k = base, 2
        while cand.casefold() in seen:
            cand, k = f"{base}_{k}", k + 1
        seen.add(cand.casefold())
        out.append(cand)
    return out


def _json_cell(v):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return v


def jsonify_objects(df) -> None:
    """Lists/dicts (GeoJSON arrays, JSON subtypes) → JSON text; mixed-type columns → text,
    so the feature store can write them. Missing values stay missing."""
    for c in df.columns:
        if df[c].dtype != object or (isinstance(df, gpd.GeoDataFrame) and c == df.geometry.name):
            continue
        s = df[c].map(_json_cell)
        if len({type(v) for v in s if not is_missing(v)}) > 1:
            s = s.map(lambda v: v if is_missing(v) or isinstance(v, str) else str(v))
        df[c] = s


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def finish_spatial(gdf, name, *, encoding, crs_source, warnings_) -> Layer:
    """Clean columns, drop empty geometries, reproject to EPSG:4326, reject features that do
    not land on the globe, repair invalid geometries."""
    rows_in = len(gdf)
    if gdf.geometry.name != "geometry":
        gdf = gdf.rename_geometry("geometry")
    cleaned = iter(clean_columns([c for c in gdf.columns if c != "geometry"]))
    gdf.columns = ["geometry" if c == "geometry" else next(cleaned) for c in gdf.columns]
    gdf = gdf.reset_index(drop=True)
    jsonify_objects(gdf)
    rows = np.arange(1, rows_in + 1)
    issues: list[RowIssue] = []

    def reject(mask, reason):
        nonlocal gdf, rows
        issues.extend(RowIssue(int(r), reason) for r in rows[mask])
        gdf, rows = gdf[~mask], rows[~mask]

    reject((gdf.geometry.isna() | gdf.geometry.is_empty).to_numpy(), "ジオメトリが空です")
    if gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs(WGS84)      # geopandas transforms with always_xy: x = lon
    else:
        gdf = gdf.set_crs(WGS84, allow_override=True)
    reject(out_of_range(gdf.geometry.to_numpy()),
           f"座標が緯度経度の範囲外です ({crs_source} から変換); CRS の指定が誤っている可能性があります")
    geoms = gdf.geometry.to_numpy()
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure",
                                            keep_collapsed=False)
        gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=WGS84))
        warnings_.append(f"不正なジオメトリ {int(invalid.sum())} 件を shapely.make_valid で修復しました")
        reject((gdf.geometry.isna() | gdf.geometry.is_empty).to_numpy(),
               "不正なジオメトリを修復すると空になりました")
    return Layer(name, gdf.reset_index(drop=True), True, encoding, crs_source, rows_in,
                 sorted(issues, key=lambda r: r.row), warnings_)
