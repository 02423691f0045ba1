"""「この場所の災害リスクと避難先」: for one point, every published hazard layer covering it, with
its decoded meaning, and the nearest shelters designated for those hazards.

Both lookups are R-tree queries on the published GeoPackages (gpkg_read's pooled read-only
connections): the point's envelope for the hazard polygons, a growing box around it for the
shelters. Versions stored in PostGIS (PostgreSQL mode) are asked through the GiST index instead
(ogcapi.hazards_pg), all in one transaction of the catalogue's database. The collections come
from the OGC API of the current catalogue version for the caller's access labels
(OGCAPI.collections), the one list every read path uses.

Hazard layers are the datasets translated into the themes flood_area, landslide_area and
tsunami_area. The merged prefecture-wide theme layers (theme-flood_area, …) repeat their
members' polygons, so they are not asked again; shelters come from the merged `theme-shelter`.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass

import shapely

from geo import themes
from ogcapi import hazards_pg
from ogcapi.gpkg_read import quote_ident, wkb
from store.features_pg import is_postgis, table_of

HAZARD_THEMES = {"flood_area": "flood", "landslide_area": "landslide", "tsunami_area": "tsunami"}
HAZARD_NAMES = {"flood": ("洪水", "Flood"), "landslide": ("土砂災害", "Sediment disaster"),
                "tsunami": ("津波", "Tsunami")}
SHELTER_LAYER = themes.collection_id("shelter")
SHELTER_FLAGS = tuple(name for name, _ in themes.HAZARDS)
MAX_SHELTERS = 5
_START_DEG = 0.01        # about 1 km: the first box searched for shelters
_MAX_DEG = 0.64          # about 60 km: beyond that, nowhere to walk to
_EARTH_M = 6371008.8


class BadPoint(ValueError):
    """lat/lon missing, not numbers, or off the globe: the client's mistake."""


def parse_point(lat, lon) -> tuple[float, float]:
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        raise BadPoint("lat and lon must be decimal degrees, e.g. lat=34.756&lon=134.842")
    if not (math.isfinite(la) and math.isfinite(lo) and -90 <= la <= 90 and -180 <= lo <= 180):
        raise BadPoint("lat must lie in -90..90 and lon in -180..180")
    return la, lo


@dataclass
class Layer:
    """What the lookup needs of one published collection."""
    id: str
    title: str
    theme: str | None
    path: str
    layer: str
    dataset: str | None = None
    bbox: list | None = None


def _open(files, lyr: Layer):
    f = files.file(lyr.path)
    return f, f.layer(lyr.layer)


def lookup(files, collections: list[Layer], lat: float, lon: float,
           max_shelters: int = MAX_SHELTERS, engine=None) -> dict:
    """{"hazards": [...], "shelters": [...]} for one point (WGS 84 degrees). ``engine``: the
    catalogue's database, where versions stored in PostGIS live (PostgreSQL mode)."""
    with ExitStack() as stack:
        conn = stack.enter_context(engine.connect()) if engine is not None else None
        hazards = []
        for lyr in collections:
            if lyr.theme in HAZARD_THEMES and lyr.id != themes.collection_id(lyr.theme):
                hazards += _covering(files, conn, lyr, lat, lon)
        kinds = sorted({h["hazard"] for h in hazards})
        shelter = next((c for c in collections if c.id == SHELTER_LAYER), None)
        shelters = _nearest_shelters(files, conn, shelter, lat, lon, kinds, max_shelters) \
            if shelter else []
    return {"hazards": hazards, "shelters": shelters}


def _covering(files, conn, lyr: Layer, lat: float, lon: float) -> list[dict]:
    theme = themes.THEMES[lyr.theme]
    wanted = {fl.name for fl in theme.fields}
    if is_postgis(lyr.path):
        found = hazards_pg.covering(conn, table_of(lyr.path), lat, lon, wanted)
    else:
        found = _covering_gpkg(files, lyr, lat, lon, wanted)
    hazard = HAZARD_THEMES[lyr.theme]
    out = []
    for fid, attrs in found:
        ja, en = describe(lyr.theme, attrs)
        out.append({"collection": lyr.id, "title": lyr.title, "dataset": lyr.dataset,
                    "theme": lyr.theme,
                    "hazard": hazard, "hazard_title": HAZARD_NAMES[hazard][0],
                    "description": ja, "description_en": en, "feature_id": fid,
                    "attributes": attrs,
                    "attribute_titles": {n: theme.field(n).title_ja for n in attrs}})
    return out


def _covering_gpkg(files, lyr: Layer, lat: float, lon: float, wanted: set) -> list[tuple]:
    f, layer = _open(files, lyr)
    names = [n for n in layer.fields]
    cols = "".join(f", t.{quote_ident(n)}" for n in names)
    t, fid, geom = quote_ident(layer.table), quote_ident(layer.fid), quote_ident(layer.geom)
    if layer.rtree:
        sql = (f"SELECT t.{fid}, t.{geom}{cols} FROM {t} t JOIN {quote_ident(layer.rtree)} r"
               f" ON r.id = t.{fid} WHERE r.minx <= ? AND r.maxx >= ? AND r.miny <= ?"
               " AND r.maxy >= ?")
        params = (lon, lon, lat, lat)
    else:
        sql, params = f"SELECT t.{fid}, t.{geom}{cols} FROM {t} t", ()
    with f.connection() as con:
        rows = con.execute(sql, params).fetchall()
    out = []
    for row in rows:
        w = wkb(row[1])
        if w is None or not shapely.intersects_xy(shapely.from_wkb(w), lon, lat):
            continue
        attrs = {n: v for n, v in zip(names, row[2:]) if n in wanted and v is not None}
        for n in layer.booleans & attrs.keys():
            attrs[n] = bool(attrs[n])
        out.append((row[0], attrs))
    return out


def describe(theme: str, a: dict) -> tuple[str, str]:
    """A plain sentence of one hazard feature's meaning, Japanese and English."""
    if theme == "flood_area":
        scale = themes.SCALES.get(a.get("scale"), "")
        depth = a.get("depth_range") or "浸水深不明"
        ja = f"洪水 浸水深 {depth}" + (f"（{scale}）" if scale else "")
        if a.get("collapse_zone"):
            ja += f"・家屋倒壊等氾濫想定区域（{a['collapse_zone']}）"
        lo, hi = a.get("depth_min_m"), a.get("depth_max_m")
        en_depth = (f"{lo:g}–{hi:g} m" if lo is not None and hi is not None
                    else f"{lo:g} m or more" if lo is not None else "depth unknown")
        en_scale = {"L1": "planned scale", "L2": "maximum assumed scale"}.get(a.get("scale"))
        return ja, f"Flood {en_depth}" + (f" ({en_scale})" if en_scale else "")
    if theme == "landslide_area":
        zone = a.get("zone_type") or "土砂災害警戒区域"
        what = a.get("phenomenon")
        ja = zone + (f"（{what}）" if what else "")
        special = "特別警戒" in zone
        en = ("Sediment-disaster special warning zone" if special
              else "Sediment-disaster warning zone")
        en_what = {"急傾斜地の崩壊": "steep slope", "土石流": "debris flow",
                   "地滑り": "landslide"}.get(what)
        return ja, en + (f" ({en_what})" if en_what else "")
    depth = a.get("depth_class") or "浸水深不明"
    lo, hi = a.get("depth_min_m"), a.get("depth_max_m")
    en_depth = (f"{lo:g}–{hi:g} m" if lo is not None and hi is not None
                else f"{lo:g} m or more" if lo is not None else "depth unknown")
    return f"津波 浸水深 {depth}", f"Tsunami {en_depth}"


def _nearest_shelters(files, conn, lyr: Layer, lat, lon, kinds, n) -> list[dict]:
    """The n nearest shelters designated for every hazard in ``kinds`` (any shelter when the
    point has none), nearest first. The box grows until n shelters lie within the circle it
    contains, so none nearer can be outside it."""
    if is_postgis(lyr.path):
        return hazards_pg.nearest(conn, table_of(lyr.path), lat, lon, SHELTER_FLAGS, kinds, n,
                                 _MAX_DEG)
    f, layer = _open(files, lyr)
    flags = [k for k in SHELTER_FLAGS if k in layer.fields]
    want = [k for k in kinds if k in layer.fields]
    cols = ["name", "address", "kind"]
    sel = "".join(f", t.{quote_ident(c)}" if c in layer.fields else ", NULL" for c in cols)
    sel += "".join(f", t.{quote_ident(c)}" for c in flags)
    t, fid, geom = quote_ident(layer.table), quote_ident(layer.fid), quote_ident(layer.geom)
    where = "".join(f" AND t.{quote_ident(k)} = 1" for k in want)
    if layer.rtree:
        base = (f"SELECT t.{fid}, t.{geom}{sel} FROM {t} t JOIN {quote_ident(layer.rtree)} r"
                f" ON r.id = t.{fid} WHERE r.maxx >= ? AND r.minx <= ? AND r.maxy >= ?"
                f" AND r.miny <= ?{where}")
    else:
        base = f"SELECT t.{fid}, t.{geom}{sel} FROM {t} t WHERE 1 = 1{where}"
    deg = _START_DEG
    found: list[dict] = []
    with f.connection() as con:
        while True:
            params = (lon - deg, lon + deg, lat - deg, lat + deg) if layer.rtree else ()
            rows = con.execute(base, params).fetchall()
            # The radius of the circle inside the box, in metres (longitude degrees shrink).
            reach = _EARTH_M * math.radians(deg) * min(1.0, math.cos(math.radians(abs(lat))
                                                                      + math.radians(deg)))
            found = []
            for row in rows:
                w = wkb(row[1])
                if w is None:
                    continue
                g = shapely.from_wkb(w)
                p = g if g.geom_type == "Point" else shapely.point_on_surface(g)
                d = haversine(lat, lon, p.y, p.x)
                item = {"name": row[2], "address": row[3], "kind": row[4],
                        "distance_m": round(d, 1), "lat": p.y, "lon": p.x,
                        "hazards": {k: (None if v is None else bool(v))
                                    for k, v in zip(flags, row[5:])}}
                found.append(item)
            found.sort(key=lambda s: s["distance_m"])
            within = [s for s in found if s["distance_m"] <= reach]
            if len(within) >= n or deg >= _MAX_DEG or not layer.rtree:
                return (within if len(within) >= n else found)[:n]
            deg *= 2


def haversine(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_M * math.asin(math.sqrt(a))
