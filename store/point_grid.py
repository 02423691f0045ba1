"""The counting grid of a large point version table (PostgreSQL mode): a bbox's exact count
from prefix sums plus the points along its edges, and its first page's fids merged from the
cells it touches in fid order, instead of reading every point inside the bbox.

Why: a 1 % bbox of 5M points holds ~50,000 of them. Counting them and finding the 1,000 with
the smallest fids read every one (a bitmap scan of the GiST index, ~16 ms, then a top-N sort
and a materialised list, ~10 ms more); pygeoapi's provider does the same, and no index of
PostGIS answers either question without the heap. With the grid the count reads two rows of
prefix sums and the ~2,000 points near the edges, and the page ~1,000 index entries.

Two companion tables per Point version of at least MIN_ROWS rows, written in the version's
transaction and dropped with it (store.features_pg._drop):
- g_…: row `cy` (0 … F-1) holds the 2D prefix sums of the F × F fine cells over the version's
  extent, p[cx + 1] = the points in cells (≤ cx, ≤ cy); row -1 holds the grid itself in
  `grid`: [x0, y0, w, h, F, K, x1, y1] (x1, y1: the largest coordinates).
- c_…: (cell, fid, x, y) of every point, `cell` its coarse cell (16 × 16, each K × K fine
  cells), in (cell, fid) order with a B-tree on (cell, fid) INCLUDE (x, y): one coarse cell's
  points in fid order, coordinates included, from the index alone once VACUUM has set the
  visibility map (store.features_pg.vacuum, after the commit).

A point's fine column is least(F-1, greatest(0, floor((x - x0) / w))): IEEE double arithmetic,
the same in PostgreSQL and in Python, and monotone in x; rows likewise with y0, h.
"""
from __future__ import annotations

import math
import re

# Below this a bbox's candidates are few and the GiST scan is as fast; the grid is not built.
MIN_ROWS = 100_000
COARSE = 16            # coarse cells per axis (the page's merge reads one index range each)
MAX_FINE = 1024        # fine cells per axis at most (a prefix row is one array of F bigints)
POINTS_PER_CELL = 8    # fine cells are sized for about this many points each
# Far above the rounding of (x - x0) / w at these magnitudes (~1e-13 degrees) and far below
# any cell: a point within MARGIN of a cell's edge is counted by its stored cell, not by
# where the prefix sums assume it lies.
MARGIN = 1e-9

# format_type() of a Point geometry column (not MultiPoint): the tables that get a grid.
POINT_TYPE = re.compile(r"geometry\(PointZ?M?,")


def companions(table: str) -> tuple[str, str]:
    """(cells table, grid table) of version table f_…."""
    return "c_" + table[2:], "g_" + table[2:]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _f(value: float) -> str:
    """A float8 literal that is exactly `value` (repr round-trips)."""
    return f"'{float(value)!r}'::float8"


def _fine_sql(coord: str, origin: float, step: float, fine: int) -> str:
    return f"least({fine - 1}, greatest(0, floor(({coord} - {_f(origin)}) / {_f(step)})))::int"


def build(execute, table: str) -> bool:
    """Write the companions of version table `table` (just written, in the caller's
    transaction) when it holds at least MIN_ROWS points; False when it does not need them.
    `execute` runs one statement and returns a cursor (fetchone)."""
    t = _q(table)
    kind = execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        f"WHERE a.attrelid = '{t}'::regclass AND a.attname = 'geom'").fetchone()
    if kind is None or not POINT_TYPE.match(kind[0]):
        return False
    # NaN sorts above Infinity in PostgreSQL: these bounds leave out what no bbox can hold.
    finite = ("geom IS NOT NULL AND ST_X(geom) > '-Infinity' AND ST_X(geom) < 'Infinity' "
              "AND ST_Y(geom) > '-Infinity' AND ST_Y(geom) < 'Infinity'")
    n, x0, y0, x1, y1 = execute(
        "SELECT count(*), min(ST_X(geom)), min(ST_Y(geom)), max(ST_X(geom)), max(ST_Y(geom)) "
        f"FROM {t} WHERE {finite}").fetchone()
    if n < MIN_ROWS:
        return False
    k = max(1, min(MAX_FINE // COARSE, round(math.sqrt(n / POINTS_PER_CELL) / COARSE)))
    fine = COARSE * k
    w = (x1 - x0) / fine or 1.0
    h = (y1 - y0) / fine or 1.0
    names = companions(table)
    cells, grid = map(_q, names)
    cx, cy = _fine_sql("ST_X(geom)", x0, w, fine), _fine_sql("ST_Y(geom)", y0, h, fine)
    points = f"SELECT fid, geom, {cx} AS cx, {cy} AS cy FROM {t} WHERE {finite}"
    execute(f"DROP TABLE IF EXISTS {cells}, {grid}")
    execute(f"CREATE TABLE {cells} AS SELECT (cx / {k} + {COARSE} * (cy / {k}))::smallint "
            f"AS cell, fid, ST_X(geom) AS x, ST_Y(geom) AS y FROM ({points}) s ORDER BY 1, 2")
    execute(f"CREATE INDEX {_q(names[0] + '_cell')} ON {cells} (cell, fid) "
            "INCLUDE (x, y)")
    prefix_sums(execute, grid, points, fine, [x0, y0, w, h, fine, k, x1, y1])
    execute(f"ANALYZE {cells}")
    execute(f"ANALYZE {grid}")
    return True


def prefix_sums(execute, grid: str, located: str, fine: int, header: list) -> None:
    """Write grid table `grid` (quoted): row -1 holds `header` (the grid), row cy the prefix
    sums over the fine cells (cx, cy) of the rows of query `located` (columns cx, cy)."""
    execute(f"CREATE TABLE {grid} (cy integer PRIMARY KEY, p bigint[], grid float8[])")
    execute(f"INSERT INTO {grid} (cy, grid) VALUES (-1, ARRAY[{', '.join(map(_f, header))}])")
    execute(f"""INSERT INTO {grid} (cy, p)
        WITH c AS (SELECT cx, cy, count(*) AS n FROM ({located}) s GROUP BY cx, cy),
        dense AS (SELECT gy, gx, coalesce(c.n, 0) AS n
                  FROM generate_series(0, {fine - 1}) gy CROSS JOIN generate_series(0, {fine - 1}) gx
                  LEFT JOIN c ON c.cx = gx AND c.cy = gy),
        across AS (SELECT gy, gx, sum(n) OVER (PARTITION BY gy ORDER BY gx) AS r FROM dense),
        up AS (SELECT gy, gx, sum(r) OVER (PARTITION BY gx ORDER BY gy) AS p FROM across)
        SELECT gy, array_agg(p::bigint ORDER BY gx) FROM up GROUP BY gy""")


class Grid:
    """A version's grid, as read from row -1 of its grid table."""

    def __init__(self, table: str, x0, y0, w, h, fine, k, x1, y1):
        self.table = table
        self.cells, self.grid = companions(table)
        self.x0, self.y0, self.w, self.h, self.x1, self.y1 = x0, y0, w, h, x1, y1
        self.fine, self.k = int(fine), int(k)

    @staticmethod
    def header(cur, table: str) -> list | None:
        """Row -1 of `table`'s grid table (the grid's own values), or None (no grid: too
        small, or written before grids). store.box_grid.grid_of makes the grid of it."""
        grid = companions(table)[1]
        cur.execute("SELECT to_regclass(%s)", [_q(grid)])
        if cur.fetchone()[0] is None:
            return None
        cur.execute(f"SELECT grid FROM {_q(grid)} WHERE cy = -1", [])
        row = cur.fetchone()
        return row[0] if row else None

    def _fine(self, v: float, origin: float, step: float) -> int:
        """The fine column (or row) of coordinate `v`, as _fine_sql computes it."""
        return min(self.fine - 1, max(0, math.floor((v - origin) / step)))

    def _inner(self, lo: float, hi: float, origin: float, step: float) -> tuple[int, int]:
        """The fine cells [a, b] along one axis lying wholly inside [lo, hi] with MARGIN to
        spare on both sides (a > b: none)."""
        a = max(0, math.ceil((lo + MARGIN - origin) / step))
        while origin + a * step < lo + MARGIN:
            a += 1
        b = min(self.fine - 1, math.floor((hi - MARGIN - origin) / step) - 1)
        while b >= a and origin + (b + 1) * step > hi - MARGIN:
            b -= 1
        return a, b

    def _strips(self, box, cells, reach_x: float, reach_y: float) -> list[tuple]:
        """The four strips of `box` around the fine cells `cells` (a, b, c, d: columns a-b,
        rows c-d) shrunk by MARGIN, ending `reach_x`/`reach_y` past the extent of what the
        grid places in cells."""
        minx, miny, maxx, maxy = box
        a, b, c, d = cells
        sx0, sy0 = max(minx, self.x0 - reach_x), max(miny, self.y0 - reach_y)
        sx1, sy1 = min(maxx, self.x1 + reach_x), min(maxy, self.y1 + reach_y)
        xa, xb = self.x0 + a * self.w + MARGIN, self.x0 + (b + 1) * self.w - MARGIN
        yc, yd = self.y0 + c * self.h + MARGIN, self.y0 + (d + 1) * self.h - MARGIN
        return [(sx0, sy0, xa, sy1), (xb, sy0, sx1, sy1),
                (sx0, sy0, sx1, yc), (sx0, yd, sx1, sy1)]

    def count_sql(self, box) -> tuple[str, list] | None:
        """SQL (one row, one column) and parameters counting the points of the version table
        in `box` exactly, or None when the box holds no whole cell (then it is small and the
        GiST scan counts it)."""
        minx, miny, maxx, maxy = box
        a, b = self._inner(minx, maxx, self.x0, self.w)
        c, d = self._inner(miny, maxy, self.y0, self.h)
        if a > b or c > d:
            return None
        env = "ST_MakeEnvelope(%s, %s, %s, %s, 4326)"
        # Every point whose stored cell is outside [a, b] × [c, d] lies in one of these
        # strips of the bbox (its cell's edge is within rounding of the inner box's). They end
        # at the points' extent: a strip reaching far past it made the GiST scan of a
        # world-wide bbox read 120 ms of index for the few points at the extent's edges.
        strips = self._strips(box, (a, b, c, d), MARGIN, MARGIN)
        table = _q(self.table)
        geom = f"{table}.geom"
        fx = _fine_sql(f"ST_X({geom})", self.x0, self.w, self.fine)
        fy = _fine_sql(f"ST_Y({geom})", self.y0, self.h, self.fine)
        sql = (f"SELECT coalesce((SELECT sum(CASE WHEN cy = %s THEN 1 ELSE -1 END "
               f"* (coalesce(p[%s], 0) - coalesce(p[%s], 0))) FROM {_q(self.grid)} "
               f"WHERE cy IN (%s, %s))::bigint, 0) + (SELECT count(*) FROM {table} WHERE ("
               + " OR ".join(f"{geom} && {env}" for _ in strips)
               + f") AND ST_X({geom}) BETWEEN %s AND %s AND ST_Y({geom}) BETWEEN %s AND %s "
               f"AND NOT ({fx} BETWEEN %s AND %s AND {fy} BETWEEN %s AND %s))")
        # P(d, b) - P(d, a-1) - P(c-1, b) + P(c-1, a-1); p[i + 1] is column i, p[0] is NULL.
        params = [d, b + 1, a, d, c - 1]
        for s in strips:
            params += list(s)
        params += [minx, maxx, miny, maxy, a, b, c, d]
        return sql, params

    def fids_sql(self, box, keyset, rows: int, offset: int) -> tuple[str, list]:
        """SQL and parameters for the fids of one page of `box` in fid order (after fid
        `keyset`, if any; `rows` from `offset`): each coarse cell the box touches read from
        the index in fid order and merged (all 256 for a box over everything: ~35 ms, where
        a scan in fid order read 1.5M points for 730 ms)."""
        minx, miny, maxx, maxy = box
        cols = range(self._fine(minx, self.x0, self.w) // self.k,
                     self._fine(maxx, self.x0, self.w) // self.k + 1)
        lines = range(self._fine(miny, self.y0, self.h) // self.k,
                      self._fine(maxy, self.y0, self.h) // self.k + 1)
        after = " AND fid > %s" if keyset is not None else ""
        # Each branch's own LIMIT bounds its read whatever plan the merge gets.
        branch = (f"(SELECT fid FROM {_q(self.cells)} WHERE cell = %s AND x BETWEEN %s AND %s "
                  f"AND y BETWEEN %s AND %s{after} ORDER BY fid LIMIT %s)")
        branches, params = [], []
        for row in lines:
            for col in cols:
                branches.append(branch)
                params += [col + COARSE * row, minx, maxx, miny, maxy,
                           *([keyset] if keyset is not None else []), rows + offset]
        sql = ("SELECT fid FROM (" + " UNION ALL ".join(branches)
               + ") u ORDER BY fid LIMIT %s OFFSET %s")
        return sql, params + [rows, offset]
