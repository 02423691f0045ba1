"""CRS decisions for geo.readers: naming a source CRS, deciding when a missing one may be
assumed, and the move to EPSG:4326 with a per-feature sanity check."""
from __future__ import annotations

import re

import numpy as np
import shapely
from pyproj import CRS

WGS84 = CRS.from_epsg(4326)

# Japan including remote islands: the box KSJ writes in its GML boundedBy (20..46 N, 122..154 E).
JAPAN_LON = (122.0, 154.0)
JAPAN_LAT = (20.0, 46.0)

# JPGIS/KSJ GML srsName prefixes → geographic EPSG. TD = 旧日本測地系 (Tokyo datum).
_KSJ_DATUMS = {"JGD2011": 6668, "JGD2000": 4612, "TD": 4301}
_SRSNAME = re.compile(rb'srsName="([^"]{1,80})"')


def describe(crs: CRS) -> str:
    """'EPSG:6673' when the CRS has a confident EPSG code, else its name."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else (crs.name or crs.to_string())


def in_japan_degrees(bounds) -> bool:
    """True when (minx, miny, maxx, maxy) are lon/lat degrees that fall inside Japan."""
    minx, miny, maxx, maxy = bounds
    if not np.all(np.isfinite(bounds)):
        return False
    return (JAPAN_LON[0] <= minx and maxx <= JAPAN_LON[1]
            and JAPAN_LAT[0] <= miny and maxy <= JAPAN_LAT[1])


def ksj_srs_from_xml(head: bytes) -> tuple[int, str] | None:
    """EPSG code and the literal srsName from the start of a KSJ JPGIS GML file.

    Only geographic '(B, L)' names are mapped: a KSJ shapefile shipped without .prj carries the
    same coordinates as the GML beside it, so the GML's datum is the best evidence we have.
    """
    m = _SRSNAME.search(head)
    if not m:
        return None
    name = m.group(1).decode("utf-8", "replace")
    datum, _, axes = name.partition("/")
    code = _KSJ_DATUMS.get(datum.strip().upper())
    if code and axes.replace(" ", "").upper() == "(B,L)":
        return code, name
    return None


def out_of_range(geoms: np.ndarray) -> np.ndarray:
    """Mask of geometries whose bounds are not finite lon/lat degrees (after reprojection)."""
    b = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        return (~np.isfinite(b).all(axis=1)
                | (b[:, 0] < -180) | (b[:, 2] > 180) | (b[:, 1] < -90) | (b[:, 3] > 90))


def crs_source_text(fmt: str, crs: CRS) -> str:
    where = {"geojson": "GeoJSON crs member", "kml": "KML", "gpkg": "GeoPackage SRS",
             "shapefile": ".prj"}[fmt]
    if fmt == "geojson" and crs.to_epsg() == 4326:
        where = "GeoJSON default (RFC 7946)"   # GDAL reports 4326 with or without a member
    return f"{describe(crs)} ({where})"


def assume_crs(gdf, ksj_hint: tuple[int, str] | None, fmt: str):
    """(gdf with CRS, crs_source, warning) for data that declares none. Only a KSJ GML srsName
    or degree coordinates inside Japan may stand in for it: anything else would publish the
    features in the wrong place, so ValueError."""
    missing = "no .prj" if fmt == "shapefile" else "no CRS"
    geoms = gdf.geometry[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    bounds = geoms.total_bounds if len(geoms) else np.full(4, np.nan)
    if not in_japan_degrees(bounds):
        raise ValueError(f"CRS の指定がなく ({missing})、座標 {np.round(bounds, 3).tolist()} は"
                         "日本の緯度経度ではないため CRS を推定できません")
    if ksj_hint:
        code, srs_name = ksj_hint
        source = f"EPSG:{code} assumed: {missing}; KSJ GML srsName '{srs_name}'"
    else:
        code, source = 6668, f"EPSG:6668 assumed: {missing} (KSJ); coordinates are degrees in Japan"
    return (gdf.set_crs(code), source,
            f"CRS の指定がありません ({missing})。EPSG:{code} とみなしました")
