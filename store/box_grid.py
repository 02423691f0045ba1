"""The counting grid of a large version table of polygons or lines (PostgreSQL mode): what
store.point_grid does for points, keyed on each feature's bounding box.

Why: a 1 % bbox of 900k small polygons holds ~9,000 of them. Counting them and finding the
1,000 with the smallest fids read every one from the heap (a bitmap scan of the GiST index,
each candidate's geometry tested), ~9 ms of a page that pygeoapi's provider answers in ~130.

The same two companions as a point grid (written in the version's transaction, dropped with
it, row -1 of the grid table carrying a ninth value, 1, that says "boxes"):
- c_…: (cell, fid, x0, y0, x1, y1, geom, feature) of every row: its exact bounding box,
  `cell` the coarse cell of the box's centre, or -1 for a "big" feature, one whose box is
  wider or taller than two fine cells, or -2 for a row no bbox holds (no geometry, or not
  finite); a copy of its geometry, and its default Feature text (store.feature_json). In
  (cell, fid) order, with a B-tree on (cell, fid, the box) and a unique one on fid. A bbox
  page's exact tests and texts are then read from the few cells it lies in, by the scan of
  that index that finds its rows: looked up by fid in the version table they were one random
  index page each, ~800 reads a page once the cache is cold.
- g_…: prefix sums over the fine cells of the small features' box centres.

A small feature whose centre lies in fine cell (cx, cy) has its box within cells cx ± 1,
cy ± 1 (it reaches at most one cell's width either side of its centre). So for a bbox whose
whole fine cells are [a, b] × [c, d], the small features centred in [a+1, b-1] × [c+1, d-1]
(D) lie inside the bbox, and the prefix sums count them. Every other small feature meeting
the bbox meets its ring outside D (its box holds its centre, out of D, and a point of the
bbox: the segment between them crosses the ring), found by the GiST index in four strips and
tested exactly.
The big ones are few and tested exactly from their cell, -1. A page merges, in fid order, the
coarse cells the bbox reaches (a small feature's centre is within a cell of its box),
and cell -1: a candidate whose box lies in the bbox is in it; only the others are tested on
their geometry.
"""
from __future__ import annotations

import math

from store import feature_json, point_grid
from store.point_grid import COARSE, MAX_FINE, POINT_TYPE, Grid, _f, _fine_sql, _q, \
    companions

# Fine cells are sized for about this many features each, and never narrower than half of
# all but the widest 1 % of boxes (those are the big ones). Small cells make the ring of a
# bbox that is tested feature by feature thin: 2 per cell read ~35 % fewer than 8.
FEATURES_PER_CELL = 2
BIG_SHARE = 0.01
BIG = -1   # the cell of the big features
NOWHERE = -2   # the cell of rows without a finite geometry
# The predicate of the index on fid alone: true of every row, and what a query by fid must say
# to use it. Partial, so that the planner never takes it for a page's lookup by (cell, fid),
# which it did (a smaller index), reading one random index page per row.
BY_FID = "cell > -3"


def _box(box: str) -> tuple[str, str, str, str]:
    """The four bounds of `box`, a box3d (exact: from the coordinates, not the float32 box
    the GiST index keeps). Cast once per row: each cast reads the whole geometry."""
    return (f"ST_XMin({box})", f"ST_YMin({box})", f"ST_XMax({box})", f"ST_YMax({box})")


def _boxed(table: str) -> str:
    """FROM items beside `table` giving each row's box3d as `_b.b` (OFFSET 0 keeps it
    computed once, not once per use)."""
    return f"CROSS JOIN LATERAL (SELECT {table}.geom::box3d AS b OFFSET 0) _b"


def _centre(box: str) -> tuple[str, str]:
    x0, y0, x1, y1 = _box(box)
    return f"(({x0} + {x1}) / 2)", f"(({y0} + {y1}) / 2)"


def _small(box: str, w: float, h: float) -> str:
    x0, y0, x1, y1 = _box(box)
    return f"({x1} - {x0} <= {_f(2 * w)} AND {y1} - {y0} <= {_f(2 * h)})"


def _finite(geom: str, box: str) -> str:
    # NaN sorts above Infinity in PostgreSQL: these bounds leave out what no bbox can hold.
    return " AND ".join([f"{geom} IS NOT NULL", f"NOT ST_IsEmpty({geom})"] + [
        f"{v} > '-Infinity' AND {v} < 'Infinity'" for v in _box(box)])


def build(execute, table: str) -> bool:
    """Write the companions of version table `table` (just written, in the caller's
    transaction) when it holds at least point_grid.MIN_ROWS features that are not points;
    False when it does not need them. `execute` runs one statement (cursor: fetchone)."""
    t = _q(table)
    cols = feature_json.columns(execute, table)
    kind = dict(cols).get("geom")
    if kind is None or POINT_TYPE.match(kind):
        return False
    finite = _finite(f"{t}.geom", "_b.b")
    rows = f"{t} {_boxed(t)} WHERE {finite}"
    bx0, by0, bx1, by1 = _box("_b.b")
    mx, my = _centre("_b.b")
    n, x0, y0, x1, y1, bw, bh = execute(
        f"SELECT count(*), min({mx}), min({my}), max({mx}), max({my}), "
        f"percentile_disc({1 - BIG_SHARE}) WITHIN GROUP (ORDER BY {bx1} - {bx0}), "
        f"percentile_disc({1 - BIG_SHARE}) WITHIN GROUP (ORDER BY {by1} - {by0}) "
        f"FROM {rows}").fetchone()
    if n < point_grid.MIN_ROWS:
        return False
    k = max(1, min(MAX_FINE // COARSE, round(math.sqrt(n / FEATURES_PER_CELL) / COARSE)))
    # Cells at least half as wide as all but the widest BIG_SHARE of boxes.
    for span, size in ((x1 - x0, bw), (y1 - y0, bh)):
        if size > 0 and span > 0:
            k = min(k, math.floor(2 * span / size / COARSE))
    if k < 1:   # features about as large as their extent's sixteenth: the GiST index is as good
        return False
    fine = COARSE * k
    w = (x1 - x0) / fine or 1.0
    h = (y1 - y0) / fine or 1.0
    names = companions(table)
    cells, grid = map(_q, names)
    cx, cy = _fine_sql(mx, x0, w, fine), _fine_sql(my, y0, h, fine)
    small = _small("_b.b", w, h)
    props = list(feature_json.properties(cols))
    execute(f"DROP TABLE IF EXISTS {cells}, {grid}")
    execute(f"CREATE TABLE {cells} AS SELECT (CASE WHEN NOT coalesce({finite}, false) THEN "
            f"{NOWHERE} WHEN {small} THEN {cx} / {k} + {COARSE} * ({cy} / {k}) ELSE {BIG} END)"
            f"::smallint AS cell, {t}.fid, {bx0} AS x0, {by0} AS y0, {bx1} AS x1, {by1} AS y1, "
            f"{t}.geom, {feature_json.feature_sql(table, f'{t}.geom')} AS feature "
            f"FROM {feature_json.from_sql(table, props)} {_boxed(t)} ORDER BY 1, 2")
    # The box as key columns, not INCLUDE: a scan's conditions on key columns are tested on
    # the index tuple before the heap is read (on INCLUDE columns, only after), so a page's
    # scan (BoxGrid.page_sql) reads from the heap only rows whose box meets the bbox.
    execute(f"CREATE INDEX {_q(names[0] + '_cell')} ON {cells} (cell, fid, x0, y0, x1, y1)")
    execute(f"CREATE UNIQUE INDEX {_q(names[0] + '_fid')} ON {cells} (fid) WHERE {BY_FID}")
    point_grid.prefix_sums(
        execute, grid, f"SELECT {cx} AS cx, {cy} AS cy FROM {rows} AND {small}",
        fine, [x0, y0, w, h, fine, k, x1, y1, 1])
    execute(f"ANALYZE {cells}")
    execute(f"ANALYZE {grid}")
    return True


def grid_of(cur, table: str) -> Grid | None:
    """The grid of version table `table`: a BoxGrid (its header's ninth value says boxes), a
    point Grid, or None (too small, or written before grids)."""
    header = Grid.header(cur, table)
    if header is None:
        return None
    return BoxGrid(table, *header[:8]) if len(header) > 8 else Grid(table, *header)


class BoxGrid(Grid):
    """A version's grid of boxes (polygons, lines), as read from row -1 of its grid table."""

    def _exact(self, alias: str, geom: str) -> str:
        """SQL: the feature meets the bbox (parameters minx, maxx, miny, maxy, then the bbox
        as an envelope's four): its box (columns of `alias`) inside it, else its geometry."""
        return (f"(({alias}.x0 >= %s AND {alias}.x1 <= %s AND {alias}.y0 >= %s AND "
                f"{alias}.y1 <= %s) OR ST_Intersects({geom}, "
                "ST_MakeEnvelope(%s, %s, %s, %s, 4326)))")

    def count_sql(self, box) -> tuple[str, list] | None:
        """SQL (one row, one column) and parameters counting the features of the version
        table meeting `box` exactly, or None when the box holds too few whole cells (then it
        is small and the GiST scan counts it)."""
        minx, miny, maxx, maxy = box
        a, b = self._inner(minx, maxx, self.x0, self.w)
        c, d = self._inner(miny, maxy, self.y0, self.h)
        a, b, c, d = a + 1, b - 1, c + 1, d - 1   # D: what is centred here lies in [a-1, b+1]
        if a > b or c > d:
            return None
        env = "ST_MakeEnvelope(%s, %s, %s, %s, 4326)"
        # The ring of the bbox outside D (shrunk by MARGIN: a centre within rounding of D's
        # edge may be stored outside D), clipped to where small features can reach.
        strips = self._strips(box, (a, b, c, d), 2 * self.w, 2 * self.h)
        table = _q(self.table)
        geom = f"{table}.geom"
        mx, my = _centre("_b.b")
        fx = _fine_sql(mx, self.x0, self.w, self.fine)
        fy = _fine_sql(my, self.y0, self.h, self.fine)
        bx0, by0, bx1, by1 = _box("_b.b")
        sql = (f"SELECT coalesce((SELECT sum(CASE WHEN cy = %s THEN 1 ELSE -1 END "
               f"* (coalesce(p[%s], 0) - coalesce(p[%s], 0))) FROM {_q(self.grid)} "
               f"WHERE cy IN (%s, %s))::bigint, 0) + (SELECT count(*) FROM {table} "
               f"{_boxed(table)} WHERE ("
               + " OR ".join(f"{geom} && {env}" for _ in strips)
               + f") AND {_small('_b.b', self.w, self.h)} "
               f"AND NOT ({fx} BETWEEN %s AND %s AND {fy} BETWEEN %s AND %s) AND "
               f"(({bx0} >= %s AND {bx1} <= %s AND {by0} >= %s AND {by1} <= %s) OR "
               f"ST_Intersects({geom}, {env}))) + (SELECT count(*) FROM {_q(self.cells)} b "
               f"WHERE b.cell = {BIG} AND b.x0 <= %s AND b.x1 >= %s AND b.y0 <= %s "
               f"AND b.y1 >= %s AND {self._exact('b', 'b.geom')})")
        params = [d, b + 1, a, d, c - 1]
        for s in strips:
            params += list(s)
        params += [a, b, c, d, minx, maxx, miny, maxy, minx, miny, maxx, maxy]
        params += [maxx, minx, maxy, miny, minx, maxx, miny, maxy, minx, miny, maxx, maxy]
        return sql, params

    def _reach(self, box) -> list[int]:
        """The coarse cells a small feature meeting `box` can be centred in (a small
        feature's centre lies within a fine cell of its box)."""
        minx, miny, maxx, maxy = box
        cols = range(self._fine(minx - 2 * self.w, self.x0, self.w) // self.k,
                     self._fine(maxx + 2 * self.w, self.x0, self.w) // self.k + 1)
        lines = range(self._fine(miny - 2 * self.h, self.y0, self.h) // self.k,
                      self._fine(maxy + 2 * self.h, self.y0, self.h) // self.k + 1)
        return [col + COARSE * row for row in lines for col in cols]

    def page_sql(self, box, keyset, rows: int, offset: int) -> tuple[str, list]:
        """SQL and parameters for one page of `box` as (fid, stored Feature text) in fid
        order, from the same cells as fids_sql, each row's text read by the scan that finds
        it: the box's conditions are the index's, so the heap is read only for rows whose box
        meets the bbox, in (cell, fid) order, which is the heap's own. Looking the texts up by
        key after an index-only scan cost four buffer reads a row, ~2.5x the time."""
        minx, miny, maxx, maxy = box
        cells = _q(self.cells)
        after = f" AND {cells}.fid > %s" if keyset is not None else ""
        branch = (f"(SELECT {cells}.fid, {cells}.feature FROM {cells} WHERE {cells}.cell = %s "
                  f"AND {cells}.x0 <= %s AND {cells}.x1 >= %s AND {cells}.y0 <= %s "
                  f"AND {cells}.y1 >= %s{after} AND {self._exact(cells, f'{cells}.geom')} "
                  f"ORDER BY {cells}.fid)")
        branches, params = [], []
        for cell in [BIG] + self._reach(box):
            branches.append(branch)
            params += [cell, maxx, minx, maxy, miny, *([keyset] if keyset is not None else []),
                       minx, maxx, miny, maxy, minx, miny, maxx, maxy]
        sql = ("SELECT u.fid, u.feature FROM (" + " UNION ALL ".join(branches)
               + ") u ORDER BY u.fid LIMIT %s OFFSET %s")
        return sql, params + [rows, offset]

    def fids_sql(self, box, keyset, rows: int, offset: int) -> tuple[str, list]:
        """SQL and parameters for the fids (and cells) of one page of `box` in fid order
        (after fid `keyset`, if any; `rows` from `offset`): the coarse cells a small feature
        meeting the box can be centred in, and the big features, each read from the index in
        fid order and merged; a candidate's geometry is read only when its box is not
        inside."""
        minx, miny, maxx, maxy = box
        after = " AND fid > %s" if keyset is not None else ""
        branch = (f"(SELECT fid, cell, x0, y0, x1, y1 FROM {_q(self.cells)} WHERE cell = %s "
                  f"AND x0 <= %s AND x1 >= %s AND y0 <= %s AND y1 >= %s{after} ORDER BY fid)")
        branches, params = [], []
        for cell in [BIG] + self._reach(box):
            branches.append(branch)
            params += [cell, maxx, minx, maxy, miny, *([keyset] if keyset is not None else [])]
        cells = _q(self.cells)
        inside = "u.x0 >= %s AND u.x1 <= %s AND u.y0 >= %s AND u.y1 <= %s"
        # The geometry of a candidate whose box crosses an edge: its own row in the cells,
        # through the index page just read and beside the texts the page will read.
        sql = ("SELECT u.fid, u.cell FROM (" + " UNION ALL ".join(branches)
               + f") u WHERE ({inside}) "
               f"OR EXISTS (SELECT 1 FROM {cells} e WHERE e.cell = u.cell AND e.fid = u.fid "
               "AND ST_Intersects(e.geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))) "
               "ORDER BY u.fid LIMIT %s OFFSET %s")
        return sql, params + [minx, maxx, miny, maxy, minx, miny, maxx, maxy, rows, offset]
