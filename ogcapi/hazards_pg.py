"""The hazard lookup's two queries on versions stored in PostGIS (PostgreSQL mode): what the
R-tree does for GeoPackages (ogcapi.hazards), the GiST index does here.

- covering polygons: ST_Intersects with the point, candidates from the index;
- nearest shelters: KNN (``ORDER BY geom <-> point``, an index scan) for candidates by planar
  degrees, then the exact great-circle distance in metres on the geography. Degrees of longitude
  shrink with latitude, so the planar order is not the metric one: candidates are taken until
  the farthest one's planar distance, turned into a lower bound in metres, is beyond the n-th
  nearest found, so no shelter outside the candidates can be nearer.

Distances are on the sphere (``use_spheroid => false``), the haversine of the embedded mode, so
both modes give the same metres.
"""
from __future__ import annotations

import math

from sqlalchemy import text

from store.tiles_pg import columns, quote_ident

_EARTH_M = 6371008.8
_POINT = "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)"


def covering(conn, table: str, lat: float, lon: float, wanted: set[str]) -> list[tuple]:
    """(fid, {column: value}) of every feature covering the point; only ``wanted`` columns,
    nulls left out."""
    names = [n for n, _ in columns(conn, table) if n in wanted]
    cols = "".join(f", t.{quote_ident(n)}" for n in names)
    rows = conn.execute(text(
        f"SELECT t.fid{cols} FROM {quote_ident(table)} t"
        f" WHERE ST_Intersects(t.geom, {_POINT}) ORDER BY t.fid"), {"lat": lat, "lon": lon})
    return [(r[0], {n: v for n, v in zip(names, r[1:]) if v is not None}) for r in rows]


def nearest(conn, table: str, lat: float, lon: float, flags: tuple, want: list[str],
            n: int, within_deg: float) -> list[dict]:
    """The n shelters nearest the point designated for every hazard in ``want``, nearest
    first: name, address, kind, distance_m, lat, lon and each of ``flags`` the table has.
    Only shelters in the box of ``within_deg`` degrees around the point (as the embedded
    mode's search: beyond it, nowhere to walk to)."""
    types = dict(columns(conn, table))
    flags = [k for k in flags if k in types]
    values = [f"t.{quote_ident(c)}" if c in types else "NULL"
              for c in ("name", "address", "kind", *flags)]
    inner = "".join(f", {v} AS v{i}" for i, v in enumerate(values))
    outer = "".join(f", c.v{i}" for i in range(len(values)))
    where = "".join(
        f" AND t.{quote_ident(k)} IS TRUE" if types[k] == "boolean"
        else f" AND t.{quote_ident(k)} = 1" for k in want if k in types)
    sql = text(
        f"SELECT ST_X(c.p), ST_Y(c.p), ST_Distance(c.p::geography, {_POINT}::geography, false),"
        f" c.planar{outer} FROM (SELECT t.geom <-> {_POINT} AS planar,"
        " CASE WHEN GeometryType(t.geom) = 'POINT' THEN t.geom"
        f" ELSE ST_PointOnSurface(t.geom) END AS p{inner}"
        f" FROM {quote_ident(table)} t WHERE t.geom && ST_MakeEnvelope(:lon - :r, :lat - :r,"
        f" :lon + :r, :lat + :r, 4326){where}"
        f" ORDER BY t.geom <-> {_POINT} LIMIT :k) c")
    k = max(4 * n, 16)
    while True:
        rows = conn.execute(sql, {"lat": lat, "lon": lon, "k": k, "r": within_deg}).all()
        found = sorted(rows, key=lambda r: r[2])[:n]
        if len(rows) < k or not found or _beyond(lat, rows[-1][3]) >= found[-1][2]:
            break
        k *= 4
    out = []
    for r in found:
        name, address, kind, *flag_values = r[4:]
        out.append({"name": name, "address": address, "kind": kind,
                    "distance_m": round(r[2], 1), "lat": r[1], "lon": r[0],
                    "hazards": {f: (None if v is None else bool(v))
                                for f, v in zip(flags, flag_values)}})
    return out


def _beyond(lat: float, planar_deg: float) -> float:
    """Metres at least as near as any point ``planar_deg`` degrees (planar) or more from the
    point can be: the degree of longitude is shortest at the farthest latitude reached."""
    reach = min(90.0, abs(lat) + planar_deg)
    return 0.999 * _EARTH_M * math.radians(planar_deg) * math.cos(math.radians(reach))
