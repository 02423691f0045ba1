"""store.features_pg: feature versions as PostGIS tables (PostgreSQL mode), on real PostGIS.

The layout every reader relies on (fid 1..n, geom in EPSG:4326 under a GiST index, the
properties with their names, order and types), writes that fail leaving nothing, the
superseded tables dropped once no reader holds them, and CQL2 filters whose values never reach
the SQL text.
"""
from __future__ import annotations

import json
import threading

import geopandas as gpd
import pytest
from shapely.geometry import MultiPolygon, Point, box
from sqlalchemy import text

from store import features_pg, versions
from tests.pg_features import read_version

pytestmark = pytest.mark.pg_only(reason="PostGIS version tables")


def _points(names, x0=135.0):
    return gpd.GeoDataFrame({"名称": names, "収容人数": list(range(len(names))),
                             "面積": [1.5 * i for i in range(len(names))],
                             "開設": [i % 2 == 0 for i in range(len(names))]},
                            geometry=[Point(x0 + i * 0.01, 34.8) for i in range(len(names))],
                            crs="EPSG:4326")


def _tables(data_dir, collection_id):
    with features_pg.engine_for(data_dir).connect() as conn:
        return sorted(features_pg.version_tables(conn, collection_id))


def _columns(data_dir, table):
    with features_pg.engine_for(data_dir).connect() as conn:
        return conn.execute(text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 ORDER BY a.attnum"),
            {"t": f'"{table}"'}).all()


def test_a_version_is_one_table_in_the_shared_layout(tmp_path):
    written = versions.write_version(_points(["加古川市役所", "平岡公民館", "別府公民館"]),
                                     tmp_path, "kakogawa--shelters", 1)
    table = features_pg.table_name("kakogawa--shelters", 1)
    assert written.path == "postgis:" + table and written.layer == table
    assert features_pg.is_postgis(written.path) and features_pg.table_of(written.path) == table
    assert written.feature_count == 3
    assert written.bbox == pytest.approx([135.0, 34.8, 135.02, 34.8])
    assert written.fields == {"名称": "string", "収容人数": "integer", "面積": "number",
                              "開設": "boolean"}
    assert _columns(tmp_path, table) == [
        ("fid", "bigint"), ("geom", "geometry(Point,4326)"), ("名称", "text"),
        ("収容人数", "bigint"), ("面積", "double precision"), ("開設", "boolean")]
    with features_pg.engine_for(tmp_path).connect() as conn:
        assert conn.execute(text(f'SELECT array_agg(fid ORDER BY fid) FROM "{table}"')
                            ).scalar() == [1, 2, 3]
        index = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = :t "
                                  "AND indexdef LIKE '%gist%'"), {"t": table}).scalar()
    assert index and "(geom)" in index
    frame = read_version(tmp_path, written.path)
    assert list(frame["名称"]) == ["加古川市役所", "平岡公民館", "別府公民館"]
    assert list(frame["開設"]) == [True, False, True]


def test_a_stream_that_fails_midway_leaves_nothing(tmp_path):
    first = versions.write_version(_points(["a"]), tmp_path, "c", 1)

    def chunks():
        yield _points(["b", "c"])
        raise RuntimeError("the source broke off after one chunk")

    with pytest.raises(RuntimeError):
        versions.write_chunks(chunks(), tmp_path, "c", 2)
    assert _tables(tmp_path, "c") == [features_pg.table_of(first.path)]
    assert list(read_version(tmp_path, first.path)["名称"]) == ["a"]


def test_chunks_mixing_polygons_and_multipolygons_land_in_one_layer(tmp_path):
    poly = gpd.GeoDataFrame({"depth_rank": [1]}, geometry=[box(135, 34, 135.1, 34.1)],
                            crs="EPSG:4326")
    multi = gpd.GeoDataFrame({"depth_rank": [3]}, geometry=[MultiPolygon(
        [box(135.2, 34, 135.3, 34.1), box(135.4, 34, 135.5, 34.2)])], crs="EPSG:4326")
    written = versions.write_chunks(iter([poly, multi, poly.iloc[:0]]), tmp_path, "flood", 1)
    assert written.feature_count == 2
    assert written.bbox == pytest.approx([135.0, 34.0, 135.5, 34.2])
    frame = read_version(tmp_path, written.path)
    assert list(frame["depth_rank"]) == [1, 3]
    assert set(frame.geom_type) == {"MultiPolygon"}
    assert ("geom", "geometry(MultiPolygon,4326)") in _columns(tmp_path, written.layer)


def test_an_empty_stream_still_writes_its_schema(tmp_path):
    written = versions.write_chunks(iter([_points([]).iloc[:0]]), tmp_path, "nothing", 1)
    assert written.feature_count == 0 and written.bbox is None
    assert [c for c, _ in _columns(tmp_path, written.layer)] == \
        ["fid", "geom", "名称", "収容人数", "面積", "開設"]


def test_stale_versions_go_once_no_reader_holds_them(tmp_path):
    for v in (1, 2, 3):
        last = versions.write_version(_points(["x"]), tmp_path, "c", v)
    held = versions.write_version(_points(["y"]), tmp_path, "d", 1)
    newer = versions.write_version(_points(["z"]), tmp_path, "d", 2)
    engine = features_pg.engine_for(tmp_path)
    assert versions.remove_stale_versions(tmp_path, "c", last.path) == 2
    assert _tables(tmp_path, "c") == [features_pg.table_of(last.path)]

    # A reader inside its transaction holds version 1 of d: the drop neither waits for it
    # nor blocks it; the table is marked and the sweep after the reader drops it.
    reading, release = threading.Event(), threading.Event()

    def reader():
        rows = features_pg.VersionRows(engine, held.path, chunk=1)
        try:
            reading.set()
            release.wait(30)
            assert [p["名称"] for chunk in rows.chunks() for p, _ in chunk] == ["y"]
        finally:
            rows.close()

    t = threading.Thread(target=reader)
    t.start()
    assert reading.wait(30)
    assert versions.remove_stale_versions(tmp_path, "d", newer.path) == 0
    assert _tables(tmp_path, "d") == sorted([held.layer, newer.layer])
    release.set()
    t.join(30)
    assert features_pg.drop_superseded(engine) == 1
    assert _tables(tmp_path, "d") == [newer.layer]


def test_cql2_values_are_bound_never_spliced():
    from ogcapi import cql
    fields = {"name": {"type": "string"}, "n": {"type": "integer"},
              "ok": {"type": "boolean"}}
    hostile = "x'); DROP TABLE t; --"
    flt = cql.parse(json.dumps({"op": "and", "args": [
        {"op": "=", "args": [{"property": "name"}, hostile]},
        {"op": "in", "args": [{"property": "n"}, [1, 2]]},
        {"op": "=", "args": [{"property": "ok"}, True]},
        {"op": "like", "args": [{"property": "name"}, "a%"]},
        {"op": "s_intersects", "args": [{"property": "geometry"}, {
            "type": "Polygon",
            "coordinates": [[[135, 34], [135.1, 34], [135, 34.1], [135, 34]]]}]}]}),
        "cql2-json")
    sql, params = cql.PostgreSQLBuilder(fields, '"t"').where(flt)
    assert hostile not in sql and "DROP" not in sql and "135" not in sql
    assert params[:5] == [hostile, 1, 2, True, "a%"]
    assert isinstance(params[5], bytes)   # the polygon, as WKB
    assert sql.count("%s") == len(params)


def test_a_column_name_postgresql_cannot_hold_is_refused(tmp_path):
    long_name = "長" * 22   # 66 bytes: PostgreSQL would cut it
    frame = gpd.GeoDataFrame({long_name: [1]}, geometry=[Point(135, 34.8)], crs="EPSG:4326")
    with pytest.raises(ValueError, match="longer than PostgreSQL allows"):
        versions.write_version(frame, tmp_path, "long", 1)
    assert _tables(tmp_path, "long") == []


def test_a_request_that_chose_the_superseded_version_still_reads_it(tmp_path, monkeypatch):
    """The race a republish wins by a hair: a request chose version 1 (its provider built,
    its download about to start), then version 2 is switched to and the publisher retires 1.
    Version 1 stays for the grace period, so the request reads it whole; the sweep of a
    later publish drops it once the grace period is over."""
    import time
    from ogcapi.postgis import PostGISProvider, TableRegistry
    monkeypatch.setenv("RENKEI_DROP_GRACE", "2")
    old = versions.write_version(_points(["旧1", "旧2", "旧3"]), tmp_path, "r", 1)
    engine = features_pg.engine_for(tmp_path)
    provider = PostGISProvider({"name": "PostGIS", "type": "feature", "data": old.path,
                                "renkei_tables": TableRegistry(engine)})
    new = versions.write_version(_points(["新1"]), tmp_path, "r", 2)
    assert versions.remove_stale_versions(tmp_path, "r", new.path) == 0

    page = provider.query(offset=1, limit=5)
    assert [f["properties"]["名称"] for f in page["features"]] == ["旧2", "旧3"]
    assert provider.get(3)["properties"]["名称"] == "旧3"
    rows = features_pg.VersionRows(engine, old.path)
    assert [p["名称"] for chunk in rows.chunks() for p, _ in chunk] == ["旧1", "旧2", "旧3"]
    assert features_pg.drop_superseded(engine) == 0   # within the grace period
    time.sleep(2.2)
    assert features_pg.drop_superseded(engine) == 1
    assert _tables(tmp_path, "r") == [new.layer]


def test_superseded_tables_are_swept_without_a_publish(tmp_path, monkeypatch):
    """Nothing else may be published for days: `renkei db sweep` (cron) drops what is due, as
    does the end of every harvest run, and neither touches what is within its grace. (The
    grace is changed rather than waited out: the passing of time is the test above's.)"""
    from harvesters.runner import run_harvest
    from store.db import Store
    from tests.platform_world import cli
    monkeypatch.setenv("RENKEI_DROP_GRACE", "300")
    store = Store(tmp_path)
    v1 = versions.write_version(_points(["一"]), tmp_path, "w", 1)
    v2 = versions.write_version(_points(["二"]), tmp_path, "w", 2)
    assert versions.remove_stale_versions(tmp_path, "w", v2.path) == 0
    swept = cli(tmp_path, "db", "sweep")
    assert swept.returncode == 0 and swept.stdout.strip() == \
        "superseded feature tables dropped: 0"   # within the grace period
    assert _tables(tmp_path, "w") == sorted([v1.layer, v2.layer])
    monkeypatch.setenv("RENKEI_DROP_GRACE", "0")
    assert cli(tmp_path, "db", "sweep").stdout.strip() == "superseded feature tables dropped: 1"
    assert _tables(tmp_path, "w") == [v2.layer]

    monkeypatch.setenv("RENKEI_DROP_GRACE", "300")
    v3 = versions.write_version(_points(["三"]), tmp_path, "w", 3)
    assert versions.remove_stale_versions(tmp_path, "w", v3.path) == 0
    said = []
    assert run_harvest(store, [], {}, log=said.append) == []   # a run, however short
    assert _tables(tmp_path, "w") == sorted([v2.layer, v3.layer]) and said == []
    monkeypatch.setenv("RENKEI_DROP_GRACE", "0")
    run_harvest(store, [], {}, log=said.append)
    assert _tables(tmp_path, "w") == [v3.layer]
    assert said == ["superseded feature tables dropped: 1"]

    monkeypatch.setenv("RENKEI_DROP_GRACE", "300")
    v4 = versions.write_version(_points(["四"]), tmp_path, "w", 4)
    assert versions.remove_stale_versions(tmp_path, "w", v4.path) == 0
    assert cli(tmp_path, "db", "sweep", "--grace", "0").stdout.strip() == \
        "superseded feature tables dropped: 1"
    assert _tables(tmp_path, "w") == [v4.layer]


def _recording(executed, engine, **kwargs):
    """A TableRegistry whose cursors append every statement the provider runs to `executed`."""
    from contextlib import contextmanager
    from ogcapi.postgis import TableRegistry

    class Cursor:
        def __init__(self, cur):
            self._cur = cur

        def execute(self, sql, params=None):
            executed.append(sql)
            return self._cur.execute(sql, params)

        def __getattr__(self, name):
            return getattr(self._cur, name)

    class Recorded(TableRegistry):
        @contextmanager
        def transaction(self, statements=2, **kwargs):
            with super().transaction(statements, **kwargs) as cur:
                yield Cursor(cur)
    return Recorded(engine, **kwargs)


def test_a_page_end_signed_by_another_server_pages_by_key(tmp_path):
    """The next link's `keyset` lets a server that never saw the previous page skip OFFSET:
    accepted under the same secret (servers sharing RENKEI_SECRET_KEY), ignored under another,
    and either way the page is the same."""
    from ogcapi.postgis import PostGISProvider
    v = versions.write_version(_points([f"地点{i}" for i in range(30)]), tmp_path, "k", 1)
    engine = features_pg.engine_for(tmp_path)
    executed = []

    def provider(secret):
        return PostGISProvider({"name": "PostGIS", "type": "feature", "data": v.path,
                                "renkei_tables": _recording(executed, engine,
                                                           keyset_secret=secret)})

    first = provider(b"shared")
    page = first.query(q="地点1", limit=4)
    assert [f["id"] for f in page["features"]] == [2, 11, 12, 13]
    token = first.next_keyset
    assert token and token.startswith("13.")
    for secret, by_key in ((b"shared", True), (b"another", False)):
        executed.clear()
        got = provider(secret).query(q="地点1", offset=4, limit=4, keyset=token)
        assert [f["id"] for f in got["features"]] == [14, 15, 16, 17]
        (page_sql,) = [s for s in executed if "LIMIT" in s]
        assert ("fid > %s" in page_sql) is by_key
    executed.clear()   # a token for another offset is no key for this one
    provider(b"shared").query(q="地点1", offset=8, limit=4, keyset=token)
    assert not [s for s in executed if "fid > %s" in s]


def test_a_version_table_lies_in_spatial_order_and_reads_in_source_order(tmp_path):
    """Rows are stored along a space-filling curve, so the points of one bbox share heap pages
    (a 1 % bbox over 5M points: ~1,900 pages instead of ~46,000); every reader still gets them
    by fid. The source here jumps between the two ends of the prefecture row by row."""
    n = 400
    xs = [134.3 + (i % 2) * 1.1 + (i // 2) * 0.0005 for i in range(n)]
    frame = gpd.GeoDataFrame({"名称": [f"地点{i}" for i in range(n)]},
                             geometry=[Point(x, 34.8 + (i // 2) * 0.0005)
                                       for i, x in enumerate(xs)], crs="EPSG:4326")
    written = versions.write_version(frame, tmp_path, "order", 1)
    t = f'"{written.layer}"'
    with features_pg.engine_for(tmp_path).connect() as conn:
        # Storage order (ctid): a run of the west half, then the east half, not alternating.
        stored = conn.execute(text(f"SELECT ST_X(geom) FROM {t} ORDER BY ctid")).scalars().all()
        assert sum(abs(a - b) > 0.5 for a, b in zip(stored, stored[1:])) <= 2
        assert conn.execute(text(f"SELECT array_agg(fid ORDER BY fid) FROM {t}")).scalar() \
            == list(range(1, n + 1))
        keys = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = :t"),
                            {"t": written.layer}).scalars().all()
    assert any("PRIMARY KEY" in k or "(fid)" in k for k in keys)
    assert any("gist (geom)" in k for k in keys)
    assert list(read_version(tmp_path, written.path)["名称"]) == [f"地点{i}" for i in range(n)]


def test_a_budgeted_count_runs_serial_and_restores_the_sessions_settings(tmp_path):
    """The count under a time budget runs without JIT and parallel workers (their start-up
    alone outlasted a 25 ms budget at 5M rows), and what the transaction had set before, such
    as the operator's statement_timeout, holds again after it."""
    from ogcapi.postgis import TableRegistry
    engine = features_pg.engine_for(tmp_path)
    registry = TableRegistry(engine, count_budget_ms=5000)
    probe = ("SELECT count(*) FROM generate_series(1, 3) WHERE current_setting('jit') = 'off'"
             " AND current_setting('max_parallel_workers_per_gather') = '0'"
             " AND current_setting('statement_timeout') = '5s' AND %s = %s")
    with registry.transaction() as cur:
        cur.execute("SET LOCAL statement_timeout = '7s'")
        assert registry.count(cur, "t", probe, [1, 1]) == 3
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "7s"
        cur.execute("SELECT 1")   # the transaction is still usable
    with registry.transaction() as cur:   # a count over its budget is None, not an error
        assert registry.count(cur, "t", "SELECT count(*) FROM pg_sleep(0.2) WHERE %s = %s",
                              [2, 2]) is not None
    slow = TableRegistry(engine, count_budget_ms=50)
    with slow.transaction() as cur:
        assert slow.count(cur, "t", "SELECT count(*) FROM pg_sleep(1) WHERE %s = %s",
                          [3, 3]) is None
        cur.execute("SELECT 1")


def test_a_bbox_page_and_its_count_are_exact_at_the_edges(tmp_path):
    """A bbox alone is counted from the same scan as its page, and candidates inside the bbox
    shrunk by INNER_MARGIN skip the exact test: points on the edge, a hair outside it (inside
    PostGIS's float32 boxes) and in the margin band are each where ST_Intersects puts them,
    on every page, the empty one past the end included."""
    from ogcapi.postgis import INNER_MARGIN, PostGISProvider, TableRegistry
    x0, y0, x1, y1 = 135.0, 34.5, 135.1, 34.6
    hair = 1e-9   # far below float32's step at 135° (1.5e-5)
    xs = [x0, x1, x0 - hair, x1 + hair, x0 + INNER_MARGIN / 2, x1 - INNER_MARGIN / 2,
          x0 + 0.05, x0 - 0.01, x1 + 0.01]
    pts = [Point(x, y) for x in xs for y in (y0, y1, y0 - hair, y1 + hair, y0 + 0.05)]
    frame = gpd.GeoDataFrame({"名称": [f"点{i}" for i in range(len(pts))]}, geometry=pts,
                             crs="EPSG:4326")
    v = versions.write_version(frame, tmp_path, "edges", 1)
    engine = features_pg.engine_for(tmp_path)
    with engine.connect() as conn:
        expected = conn.execute(text(
            f'SELECT array_agg(fid ORDER BY fid) FROM "{v.layer}" '
            "WHERE ST_Intersects(geom, ST_MakeEnvelope(:a, :b, :c, :d, 4326))"),
            {"a": x0, "b": y0, "c": x1, "d": y1}).scalar()
    assert 0 < len(expected) < len(pts)

    def provider():
        return PostGISProvider({"name": "PostGIS", "type": "feature", "data": v.path,
                                "renkei_tables": TableRegistry(engine)})
    got, offset = [], 0
    while True:
        page = provider().query(bbox=[x0, y0, x1, y1], offset=offset, limit=4)
        assert page["numberMatched"] == len(expected)
        if not page["features"]:
            break
        got += [f["id"] for f in page["features"]]
        offset += 4
    assert got == expected
    # A box narrower than twice the margin has no inner box: every candidate is tested.
    narrow = provider().query(bbox=[x0 - hair, y0, x0 + INNER_MARGIN, y1], limit=100)
    assert narrow["numberMatched"] == len([f for f in pts if x0 - hair <= f.x <= x0 +
                                           INNER_MARGIN and y0 <= f.y <= y1])


def _many(tmp_path, n):
    """A version of n points (避難所0 … 避難所{n-1}), most rows written in SQL: the writer
    would take 10 s over them."""
    v = versions.write_version(_points(["避難所0"]), tmp_path, "many", 1)
    engine = features_pg.engine_for(tmp_path)
    with engine.begin() as conn:
        conn.execute(text(
            f'INSERT INTO "{v.layer}" SELECT i, ST_SetSRID(ST_MakePoint(134.3 + i * 1e-5, '
            f"34.8), 4326), '避難所' || (i - 1), i % 1000, i * 1.5, i % 2 = 1 "
            f"FROM generate_series(2, {n}) i"))
        conn.execute(text(f'ANALYZE "{v.layer}"'))
    return v, engine


def _like(pattern):
    from ogcapi import cql
    return cql.parse(json.dumps({"op": "like", "args": [{"property": "名称"}, pattern]}),
                     "cql2-json")


def test_a_filtered_count_costs_no_more_than_its_page(tmp_path):
    """With a generous configured budget, a count that would take longer than the page it
    comes with is cancelled and numberMatched omitted (paging goes on by `more`); asked for
    alone (resulttype=hits) the same count has the whole budget and is exact."""
    from ogcapi.postgis import PostGISProvider, TableRegistry
    n = 400_000   # a count of these costs many times any page of 10, under load too
    v, engine = _many(tmp_path, n)
    flt = _like("%9%")

    def provider():
        return PostGISProvider({"name": "PostGIS", "type": "feature", "data": v.path,
                                "renkei_tables": TableRegistry(engine,
                                                               count_budget_ms=60_000)})
    page = provider().query(filterq=flt, limit=10)
    assert [f["properties"]["名称"] for f in page["features"]][:1] == ["避難所9"]
    assert "numberMatched" not in page and page["numberReturned"] == 10
    p = provider()
    p.query(filterq=flt, limit=10)
    assert p.more is True
    expected = sum("9" in f"避難所{i}" for i in range(n))
    assert provider().query(filterq=flt, resulttype="hits")["numberMatched"] == expected


def test_a_count_shape_out_of_budget_is_skipped_for_a_while(tmp_path):
    """Once a count ran out of its budget, counts of the same SQL with other values (a filter
    tweaked, a map panned) are given up without running, DEAR_SKIPS times; then tried again.
    A count of another shape is still tried."""
    from ogcapi.postgis import DEAR_SKIPS, PostGISProvider
    v, engine = _many(tmp_path, 400_000)
    executed = []
    registry = _recording(executed, engine, count_budget_ms=60_000)

    def counted():
        return [s for s in executed if s.startswith("SELECT count(*)")]

    def page(flt):
        return PostGISProvider({"name": "PostGIS", "type": "feature", "data": v.path,
                                "renkei_tables": registry}).query(filterq=flt, limit=10)
    assert "numberMatched" not in page(_like("%9%"))   # over the page's budget
    assert len(counted()) == 1
    for i in range(DEAR_SKIPS):
        assert "numberMatched" not in page(_like(f"%{i}1%"))
    assert len(counted()) == 1   # none of these ran a count
    page(_like("%77%"))
    assert len(counted()) == 2   # tried again
    assert "numberMatched" in page(_like("避難所12345"))   # 1 row: the last page says so
    from ogcapi import cql
    other = cql.parse(json.dumps({"op": "<", "args": [{"property": "収容人数"}, 3]}),
                      "cql2-json")
    executed.clear()
    page(other)
    assert len(counted()) == 1


def _intersecting(engine, table, bbox):
    """The fids ST_Intersects finds in `bbox`, in order: what a grid must answer."""
    with engine.connect() as conn:
        return conn.execute(text(
            f'SELECT coalesce(array_agg(fid ORDER BY fid), ARRAY[]::bigint[]) '
            f'FROM "{table}" WHERE ST_Intersects(geom, ST_MakeEnvelope(:a, :b, :c, :d, 4326))'),
            dict(zip("abcd", bbox))).scalar()


def _providers(engine, path, executed):
    """A maker of providers of `path` whose statements are appended to `executed`."""
    from ogcapi.postgis import PostGISProvider
    return lambda: PostGISProvider({"name": "PostGIS", "type": "feature", "data": path,
                                    "renkei_tables": _recording(executed, engine)})


def _bbox_pages(provider, box, limit):
    """The fids of every page of `box`, by OFFSET and by the signed keyset in turn, after
    checking that `hits` and every page state the same exact count (an int)."""
    matched = provider().query(bbox=list(box), resulttype="hits")["numberMatched"]
    ids, offset, keyset = [], 0, None
    while True:
        p = provider()
        page = p.query(bbox=list(box), offset=offset, limit=limit, keyset=keyset)
        assert type(page["numberMatched"]) is int and page["numberMatched"] == matched, box
        ids += [f["id"] for f in page["features"]]
        if len(page["features"]) < limit:
            break
        offset, keyset = offset + limit, (p.next_keyset if offset % 2 else None)
    assert len(ids) == matched, box
    return ids


def test_a_large_point_tables_grid_counts_and_pages_a_bbox_exactly(tmp_path, monkeypatch):
    """A point version from point_grid.MIN_ROWS rows on gets a counting grid: a bbox alone is
    then counted from prefix sums plus the points along its edges, and paged from the cells it
    touches. Points lie on the grid's cell edges and a hair (1e-9°) either side of them, and
    the bboxes' edges on, a hair off and between cell edges: the count and every page, by
    OFFSET and by the signed keyset, are what ST_Intersects says, and dropping the version
    drops its grid."""
    import random
    from store import point_grid
    monkeypatch.setattr(point_grid, "MIN_ROWS", 1000)
    x0, y0, step, hair = 135.0, 34.75, 1 / 128, 1e-9   # 32 cells of 1/128° each way
    axis = [i * step + d for i in range(33) for d in (-hair, 0.0, hair)][1:-1]
    rng = random.Random(14)
    pts = [Point(x0 + a, y0 + b) for a in axis for b in axis] + \
        [Point(x0 + rng.uniform(0, 0.25), y0 + rng.uniform(0, 0.25)) for _ in range(2000)]
    order = list(range(len(pts)))
    rng.shuffle(order)   # fids not in any spatial order
    frame = gpd.GeoDataFrame({"名称": [f"点{i}" for i in order]},
                             geometry=[pts[i] for i in order], crs="EPSG:4326")
    v = versions.write_version(frame, tmp_path, "grid", 1)
    engine = features_pg.engine_for(tmp_path)
    cells, grid = point_grid.companions(v.layer)
    with engine.connect() as conn:
        got = conn.execute(text(f'SELECT grid FROM "{grid}" WHERE cy = -1')).scalar()
        assert got == [x0, y0, step, step, 32, 2, x0 + 32 * step, y0 + 32 * step]
        # The cells' index answers without the heap (VACUUM ran after the commit).
        assert conn.execute(text("SELECT relallvisible > 0 FROM pg_class WHERE relname = :t"),
                            {"t": cells}).scalar()

    def expected(bbox):
        return _intersecting(engine, v.layer, bbox)

    executed = []
    provider = _providers(engine, v.path, executed)

    # Edges on fine cells (odd indexes) and on coarse cells (even: 2 × 2 fine cells each).
    boxes = [(x0 + 3 * step, y0 + 5 * step, x0 + 9 * step, y0 + 12 * step),
             (x0 + 4 * step, y0 + 6 * step, x0 + 10 * step, y0 + 14 * step)]
    for d in (hair, -hair, 1e-12, step / 3):
        for a, b, c, e in boxes[:2]:
            boxes += [(a + d, b + d, c - d, e - d), (a - d, b - d, c + d, e + d)]
    for _ in range(4):
        a, b = x0 + rng.uniform(0, 0.2), y0 + rng.uniform(0, 0.2)
        boxes.append((a, b, a + 0.05, b + 0.04))
    boxes += [(134.0, 34.0, 136.0, 36.0),                      # all 256 coarse cells
              (x0 + 0.1, y0 + 0.1, x0 + 0.1 + step / 2, y0 + 0.1 + step / 2)]   # no whole cell
    for box in boxes:
        want = expected(box)
        executed.clear()
        assert _bbox_pages(provider, box, 97) == want, box
        by_name = provider().query(bbox=list(box), limit=5, sortby=[
            {"property": "名称", "order": "-"}])
        assert by_name["numberMatched"] == len(want)
    executed.clear()
    provider().query(bbox=list(boxes[0]), limit=10)
    assert any(f'"{cells}"' in s and f'"{grid}"' in s for s in executed)

    features_pg.drop_table(tmp_path, v.path)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relname IN (:a, :b)"),
                            {"a": cells, "b": grid}).scalar() == 0


def test_a_large_polygon_tables_grid_counts_and_pages_a_bbox_exactly(tmp_path, monkeypatch):
    """A polygon version from point_grid.MIN_ROWS rows on gets a grid of its boxes
    (store.box_grid): a bbox alone is counted from prefix sums over the small features'
    centres plus the features along its edges and the big ones, and paged from the cells it
    reaches. The data has small polygons centred on cell edges and a hair either side,
    concave ones whose box meets a bbox their shape misses, big ones spanning many cells, and
    rows without a geometry; bboxes lie on, a hair off and between cell edges. The count and
    every page, by OFFSET and by the signed keyset, are what ST_Intersects says."""
    import math
    import random
    from shapely.affinity import rotate
    from shapely.geometry import Polygon
    from store import box_grid, point_grid
    monkeypatch.setattr(point_grid, "MIN_ROWS", 1000)
    rng = random.Random(17)
    x0, y0 = 135.0, 34.75
    shapes, ells = [], []
    # Small ones reach up to ~1.3 fine cells across (the grid's cells are ~0.0094°).
    for _ in range(1500):   # small: 0.002-0.012° across, centred anywhere in 0.3° × 0.3°
        cx, cy, r = x0 + rng.uniform(0, 0.3), y0 + rng.uniform(0, 0.3), rng.uniform(1e-3, 6e-3)
        shapes.append(box(cx - r, cy - r * 0.7, cx + r, cy + r * 0.7))
    # Concave: Ls turned four ways, their box's centre empty, packed where the bboxes' edges
    # and corners lie: there a box's centre can be inside a bbox that the L itself misses.
    for i in range(35):
        for j in range(35):
            ax, ay, s = x0 + 0.08 + i * 0.004, y0 + 0.08 + j * 0.004, rng.uniform(4e-3, 1.2e-2)
            if (i + 2 * j) % 4 == 0:   # arms along the left and bottom of its box
                ells.append((ax, ay, s))
            shapes.append(rotate(Polygon([(ax, ay), (ax + s, ay), (ax + s, ay + s / 8),
                                          (ax + s / 8, ay + s / 8), (ax + s / 8, ay + s),
                                          (ax, ay + s)]),
                                 90 * ((i + 2 * j) % 4), origin=(ax + s / 2, ay + s / 2)))
    for _ in range(25):     # big (under 1 %, else the cells would grow to fit them)
        ax, ay = x0 + rng.uniform(0, 0.25), y0 + rng.uniform(0, 0.25)
        shapes.append(box(ax, ay, ax + rng.uniform(0.03, 0.1), ay + rng.uniform(0.03, 0.1)))
    frame = gpd.GeoDataFrame({"名称": [f"面{i}" for i in range(len(shapes) + 5)]},
                             geometry=[MultiPolygon([g]) for g in shapes] + [None] * 5,
                             crs="EPSG:4326")
    frame = frame.sample(frac=1, random_state=3).reset_index(drop=True)   # fids unordered
    v = versions.write_version(frame, tmp_path, "areas", 1)
    engine = features_pg.engine_for(tmp_path)
    cells, grid = point_grid.companions(v.layer)
    with engine.connect() as conn:
        head = conn.execute(text(f'SELECT grid FROM "{grid}" WHERE cy = -1')).scalar()
        big = conn.execute(text(f'SELECT count(*) FROM "{cells}" WHERE cell = :b'),
                           {"b": box_grid.BIG}).scalar()
    gx, gy, w, h, fine = head[:5]
    assert len(head) == 9 and big >= 25
    with engine.connect() as conn:
        g = box_grid.grid_of(conn.connection.driver_connection.cursor(), v.layer)
    assert isinstance(g, box_grid.BoxGrid)

    def expected(bbox):
        return _intersecting(engine, v.layer, bbox)

    executed = []
    provider = _providers(engine, v.path, executed)

    def edge(i, j):
        return gx + i * w, gy + j * h
    def cell(x, origin, step):
        return round((x - origin) / step)
    boxes = []
    # Edges on the fine cells nearest 0.1° and 0.2° into the data, a hair or a part of a cell
    # off them; then random ones. All in the band of Ls.
    i0, j0 = cell(x0 + 0.1, gx, w), cell(y0 + 0.1, gy, h)
    i1, j1 = cell(x0 + 0.2, gx, w), cell(y0 + 0.2, gy, h)
    (a, b), (c, d) = edge(i0, j0), edge(i1, j1)
    for e in (0.0, 1e-9, -1e-9, 1e-12, w / 2, w / 3, w / 5):
        boxes += [(a + e, b + e, c - e, d - e), (a - e, b - e, c + e, d + e),
                  (a + e, b - e, c + e, d - e)]
    for _ in range(8):
        a, b = x0 + rng.uniform(0.085, 0.12), y0 + rng.uniform(0.085, 0.12)
        boxes.append((a, b, x0 + rng.uniform(0.18, 0.215), y0 + rng.uniform(0.18, 0.215)))
    # A bbox whose lower left corner lies between an L's arms and its box's centre, the centre
    # in the bbox's first whole cell: the L is centred inside the bbox and misses it.
    def between(lo, hi, origin, step):
        edge = origin + (math.floor((lo - origin) / step) + 1) * step
        return (lo + edge) / 2 if edge < hi - 1e-6 else None
    for ax, ay, s in ells:
        lx = between(ax + s / 8 + 1e-6, ax + s / 2, gx, w)
        ly = between(ay + s / 8 + 1e-6, ay + s / 2, gy, h)
        if lx is not None and ly is not None and len(boxes) < 50:
            boxes.append((lx, ly, lx + 0.09, ly + 0.09))
    assert len(boxes) == 50
    boxes += [(134.0, 34.0, 136.0, 36.0), (x0 + 0.1, y0 + 0.1, x0 + 0.1 + w, y0 + 0.1 + h)]
    gridded = 0
    for b in boxes:
        executed.clear()
        assert _bbox_pages(provider, b, 251) == expected(b), b
        # The grid counts every bbox holding a whole cell besides its ring.
        uses = g.count_sql(b) is not None
        assert any(f'"{cells}"' in s and f'"{grid}"' in s for s in executed) == uses, b
        gridded += uses
    assert gridded >= 28

    features_pg.drop_table(tmp_path, v.path)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relname IN (:a, :b)"),
                            {"a": cells, "b": grid}).scalar() == 0


def test_a_large_polygon_tables_stored_texts_are_the_texts_it_would_build(tmp_path,
                                                                          monkeypatch):
    """A polygon version with a grid keeps its default Feature texts in its cells
    (store.box_grid): pages, filtered and bbox pages and items read from them are byte for byte
    what the provider builds for the same rows (asked with every property named, which builds
    them), Japanese text, NULLs, booleans, floats, holes and rows without a geometry included;
    `properties`, `skipGeometry`, `crs` and `sortby` still build theirs."""
    from ogcapi.postgis import PostGISProvider
    from pygeoapi.util import CrsTransformSpec
    from store import point_grid
    monkeypatch.setattr(point_grid, "MIN_ROWS", 500)
    n = 800
    shapes = [box(135 + (i % 40) * 0.005, 34.8 + (i // 40) * 0.005,
                  135.003 + (i % 40) * 0.005, 34.803 + (i // 40) * 0.005) for i in range(n)]
    shapes[7] = shapes[7].difference(shapes[7].centroid.buffer(0.0005))   # a hole
    frame = gpd.GeoDataFrame({
        "名称": [None if i % 9 == 0 else f"区域\"{i}\"\n" for i in range(n)],
        "深さ": [None if i % 7 == 0 else i / 3 for i in range(n)],
        "ランク": list(range(n)), "開設": [i % 2 == 0 for i in range(n)]},
        geometry=[None if i in (5, 600) else MultiPolygon([g]) for i, g in enumerate(shapes)],
        crs="EPSG:4326")
    v = versions.write_version(frame, tmp_path, "stored", 1)
    engine = features_pg.engine_for(tmp_path)
    executed = []

    def provider():
        return PostGISProvider({"name": "PostGIS", "type": "feature", "data": v.path,
                                "renkei_tables": _recording(executed, engine)})
    names = ["名称", "深さ", "ランク", "開設"]
    j = f'"c_{v.layer[2:]}".feature'   # the texts, kept in the grid's cells
    from ogcapi import cql
    flt = cql.parse(json.dumps({"op": ">", "args": [{"property": "ランク"}, 100]}), "cql2-json")
    # A filtered page builds its texts from the rows it scanned; the others read them.
    for kwargs, reads in [(dict(limit=300), True), (dict(limit=300, offset=450), True),
                          (dict(limit=300, bbox=[135.02, 34.81, 135.11, 34.84]), True),
                          (dict(limit=300, offset=300, bbox=[135.0, 34.8, 135.2, 34.9]), True),
                          (dict(limit=200, filterq=flt), False),
                          (dict(limit=200, offset=300, filterq=flt), False)]:
        executed.clear()
        stored = provider().query(raw_json=True, **kwargs)["features"]
        assert any(j in s for s in executed) == reads, kwargs
        executed.clear()
        built = provider().query(raw_json=True, select_properties=names, **kwargs)["features"]
        assert not any(j in s for s in executed)
        # Both as one UTF-8 body (FeatureBytes), byte for byte.
        assert bytes(stored.body) == bytes(built.body) and len(stored) > 100
    # Unfiltered pages of kept texts are ranges of fids: every row once, in order, and each
    # page knows whether another follows (its range reaches one row past the page).
    seen, more = [], []
    for offset in range(0, n + 1, 300):
        p = provider()
        seen += [f["id"] for f in p.query(limit=300, offset=offset)["features"]]
        more.append(p.more)
    assert seen == list(range(1, n + 1)) and more == [True, True, False]
    item = provider().get(8)
    assert item == provider().query(select_properties=names, limit=1, offset=7)["features"][0]
    assert len(item["geometry"]["coordinates"][0]) == 2   # the hole came through
    assert provider().get(6)["geometry"] is None   # a row no bbox holds keeps its text too
    executed.clear()
    by_rank = provider().query(limit=3, sortby=[{"property": "ランク", "order": "-"}])
    assert [f["id"] for f in by_rank["features"]] == [n, n - 1, n - 2]
    assert not any(j in s for s in executed)   # a top-N builds only its page's texts
    bare = provider().query(limit=2, skip_geometry=True)["features"]
    assert all(f["geometry"] is None for f in bare)
    some = provider().query(limit=2, select_properties=["ランク"])["features"]
    assert all(list(f["properties"]) == ["ランク"] for f in some)
    spec = CrsTransformSpec("http://www.opengis.net/def/crs/OGC/1.3/CRS84", "",
                            "http://www.opengis.net/def/crs/EPSG/0/4326", "")
    flipped = provider().query(limit=1, crs_transform_spec=spec)["features"][0]
    x, y = flipped["geometry"]["coordinates"][0][0][0]
    assert 34 < x < 35 and 135 < y < 136   # latitude first, built, not the stored text


def test_only_large_tables_get_a_grid(tmp_path, monkeypatch):
    """From point_grid.MIN_ROWS rows on: points a point grid, polygons a box grid whose cells
    keep their Feature texts; smaller versions neither."""
    from store import point_grid
    monkeypatch.setattr(point_grid, "MIN_ROWS", 50)

    def areas(n):
        return gpd.GeoDataFrame({"名称": [f"面{i}" for i in range(n)]}, geometry=[
            box(135 + i * 0.01, 34.8, 135.005 + i * 0.01, 34.805) for i in range(n)],
            crs="EPSG:4326")
    small = versions.write_version(_points([f"点{i}" for i in range(49)]), tmp_path, "s", 1)
    small_area = versions.write_version(areas(49), tmp_path, "sa", 1)
    area = versions.write_version(areas(60), tmp_path, "a", 1)
    large = versions.write_version(_points([f"点{i}" for i in range(50)]), tmp_path, "l", 1)
    with features_pg.engine_for(tmp_path).connect() as conn:
        def has(v, table):
            return conn.execute(text("SELECT to_regclass(:g) IS NOT NULL"),
                                {"g": table}).scalar()
        grids = [has(v, point_grid.companions(v.layer)[1])
                 for v in (small, small_area, area, large)]
        texts = [conn.execute(text("SELECT count(*) FROM pg_attribute WHERE attname = 'feature' "
                                   "AND attrelid = to_regclass(:c)"),
                              {"c": f'"{point_grid.companions(v.layer)[0]}"'}).scalar() == 1
                 for v in (small, small_area, area, large)]
        assert grids == [False, False, True, True]
        assert texts == [False, False, True, False]
        head = conn.execute(text(f'SELECT grid FROM "{point_grid.companions(area.layer)[1]}" '
                                 "WHERE cy = -1")).scalar()
        assert len(head) == 9   # a grid of boxes