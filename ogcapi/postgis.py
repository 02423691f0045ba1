"""pygeoapi feature provider over renkei's PostGIS version tables (PostgreSQL mode).

The layout is store.features_pg's: one table per collection version, `fid` 1..n, `geom` in
EPSG:4326 under a GiST index, then the properties. What this does that pygeoapi's own
PostgreSQL provider does not (reference note A1-A4): pages by key (`fid > last`) rather than
OFFSET whenever it knows where the previous page ended, counts within a time budget and caches
the count per version, translates CQL2 with bound parameters only (ogcapi.cql), and has
PostgreSQL build each Feature's GeoJSON text (or read it, stored at publish in the box grid of
large polygon versions), which the items view joins without parsing it. Large versions count
and page a bbox from their grid (store.point_grid, store.box_grid).

A request reads its version inside one transaction (ACCESS SHARE on the table), so the
publisher's DROP of a superseded version waits for it or is retried later, never cuts it.
"""

import functools
import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

from pygeoapi.provider.base import (
    BaseProvider, ProviderConnectionError, ProviderItemNotFoundError, ProviderQueryError)

from ogcapi import cql, query_params
from ogcapi.cql import pg_quote_ident as _q
from ogcapi.errors import QueryError
from ogcapi.feature_text import FeatureBytes
from ogcapi.gpkg_read import CRS84, DEFAULT_COUNT_BUDGET_MS, SQLITE_INT_RANGE as _INT64, \
    crs_from_uri, last_page_count, page_bounded
from store import feature_json
from store.features_pg import table_of
from store.box_grid import BY_FID, BoxGrid, grid_of
from store.point_grid import POINT_TYPE

__all__ = ['TABLES_KEY', 'PostGISProvider', 'TableRegistry']

# Provider definition key of the TableRegistry the provider reads through.
TABLES_KEY = 'renkei_tables'
_MAX_CACHED = 1024
# Counts of a shape skipped after one of its values ran out of budget (TableRegistry.count).
DEAR_SKIPS = 20
# Degrees: a bbox shrunk by this holds only what the bbox holds, whatever float32 rounding
# PostGIS's boxes carry (2**-16 degrees at most, at ±180).
INNER_MARGIN = 1e-4
# Pages a grid statement's bitmap heap scans may ask the kernel for ahead of reading them
# (effective_io_concurrency; PostgreSQL's default of 1 reads a cold scattered page at a time).
PREFETCH_PAGES = 64


class Table:
    """Schema and size of one version table, read once (versions are never modified)."""

    def __init__(self, cur, table):
        cols = feature_json.columns(cur.execute, table)
        if not cols:
            raise ProviderConnectionError(f'no feature table postgis:{table}')
        self.table, self.fid, self.geom = table, 'fid', 'geom'
        # Point columns (not MultiPoint): a bbox test is then exact on the coordinates.
        self.points = any(n == self.geom and POINT_TYPE.match(t) for n, t in cols)
        self.fields = {n: {'type': k} for n, k in feature_json.properties(cols).items()}
        self.booleans = {k for k, v in self.fields.items() if v['type'] == 'boolean'}
        self.texts = [k for k, v in self.fields.items() if v['type'] == 'string']
        # fid is 1..n (store.features_pg): the largest is the count, read from the key index.
        cur.execute(f'SELECT coalesce(max(fid), 0) FROM {_q(table)}', [])
        self.count = cur.fetchone()[0]
        # Large tables count and page a bbox from their grid (store.point_grid, box_grid).
        self.grid = grid_of(cur, table)
        # Large tables of polygons and lines keep their default Feature texts in their grid's
        # cells (store.box_grid): the table to read them from.
        self.stored = self.grid.cells if isinstance(self.grid, BoxGrid) else None


class TableRegistry:
    """What one OGC API keeps between requests in PostgreSQL mode: the engine, table schemas,
    counts and page boundaries, keyed by table (one table is one immutable version).

    It travels inside pygeoapi's provider definitions (deep-copied), so a copy is itself.
    """

    def __init__(self, engine, count_budget_ms=DEFAULT_COUNT_BUDGET_MS, keyset_secret=None):
        self.engine = engine
        self.count_budget_ms = count_budget_ms
        # Signs the page ends carried in next links (sign_page_end). Servers given the same
        # secret (RENKEI_SECRET_KEY) accept each other's; without one, this process's own.
        self._mac_key = hmac.new(keyset_secret or os.urandom(32), b'renkei ogcapi keyset',
                                 hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._tables = {}
        self._counts = OrderedDict()
        self._pages = OrderedDict()   # (table, query key, offset) -> fid that ends the page
        self._dear = OrderedDict()    # (table, count SQL) -> counts of that shape to skip

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __repr__(self):
        return f'<TableRegistry of {len(self._tables)} tables>'

    @contextmanager
    def transaction(self, statements=2, scattered=False):
        """A psycopg cursor in one read transaction (the version's table stays while held).

        ``statements=1``: the caller runs one statement, which is its own transaction anyway;
        it runs without BEGIN and ROLLBACK, two round trips fewer for item-by-id and pages
        whose count is known. ``scattered``, for statements that read rows scattered over a
        large table (a grid's count or page, kept texts by fid):
        - the transaction plans without parallel workers or JIT: the estimated cost of such
          statements crosses those thresholds though they run in a few ms, and starting a
          worker took 20-40 ms of a 7 ms count (issue 14's polygons);
        - its bitmap heap scans (the grid's ring of edge candidates, a page of kept texts) ask
          for PREFETCH_PAGES pages ahead, unless the server is set to more: with the file
          cache cold, 19-27 -> 12-14 ms a polygon bbox, 22 -> 6.5 ms a page of kept texts.
        Both transaction-local, so safe behind PgBouncer.
        """
        with self.engine.connect() as conn:
            if statements == 1 and not scattered:
                conn = conn.execution_options(isolation_level='AUTOCOMMIT')
            raw = conn.connection.driver_connection
            try:
                with raw.cursor() as cur:
                    if scattered:
                        cur.execute("SELECT set_config('max_parallel_workers_per_gather', "
                                    "'0', true), set_config('jit', 'off', true), "
                                    "set_config('effective_io_concurrency', greatest("
                                    "current_setting('effective_io_concurrency')::int, %s)"
                                    "::text, true)", [PREFETCH_PAGES])
                    yield cur
            finally:
                conn.rollback()

    def known_count(self, table, sql, params):
        """(True, count) when this count is cached, else (False, None)."""
        key = (table, sql, tuple(map(_hashable, params)))
        with self._lock:
            if key in self._counts:
                return True, self._counts[key]
        return False, None

    def cached(self, table):
        return self._tables.get(table)

    def table(self, cur, table):
        t = self._tables.get(table)
        if t is None:
            t = Table(cur, table)
            with self._lock:
                self._tables[table] = t
        return t

    def retain_only(self, tables):
        keep = set(tables)
        with self._lock:
            for t in [t for t in self._tables if t not in keep]:
                del self._tables[t]
            for cache in (self._counts, self._pages, self._dear):
                for k in [k for k in cache if k[0] not in keep]:
                    del cache[k]

    def _remember(self, cache, key, value):
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            if len(cache) > _MAX_CACHED:
                cache.popitem(last=False)

    def _skip_dear(self, shape):
        """Whether to give up on a count of this shape (its SQL, whatever the values) without
        trying: one ran out of its budget on this version lately. Map pans and filter tweaks
        change only the values, and a scan's cost hardly depends on them, so a hopeless count
        would otherwise cost every new request its page's time again. After DEAR_SKIPS skips
        the shape is tried again (a smaller bbox in the filter may now fit)."""
        with self._lock:
            left = self._dear.get(shape)
            if not left:
                return False
            if left > 1:
                self._dear[shape] = left - 1
            else:
                del self._dear[shape]
            return True

    def remember_count(self, table, sql, params, n):
        self._remember(self._counts, (table, sql, tuple(map(_hashable, params))), n)

    def count(self, cur, table, sql, params, budgeted=True, page_ms=None):
        """COUNT(*) of one query on one version, cached; with a budget, None when it runs out
        (cached too: a count known to be dear is not tried on every page). Given what the
        page cost (`page_ms`), the budget is no more than that, and at least COUNT_FLOOR_MS:
        the count never costs more than the page it comes with (issue 17)."""
        key = (table, sql, tuple(map(_hashable, params)))
        with self._lock:
            if key in self._counts:
                return self._counts[key]
        budget = page_bounded(self.count_budget_ms if budgeted else None, page_ms)
        shape = (table, sql)
        if budget is not None and self._skip_dear(shape):
            return None   # not cached: after its skips, this query may be counted again
        if budget is not None and budget < 1:
            n = None   # PostgreSQL times statements in whole milliseconds
        else:
            import psycopg
            cur.execute('SAVEPOINT renkei_count', [])
            if budget is not None:
                # A count over millions of rows crosses jit_above_cost and the parallel
                # thresholds: compiling it and starting workers took 50-110 ms before the
                # timeout could cancel a 25 ms budget (5M rows, issue 14's bench). Serial and
                # interpreted, a count that does not fit is cancelled on time.
                cur.execute("SELECT set_config('statement_timeout', %s, true), "
                            "set_config('jit', 'off', true), "
                            "set_config('max_parallel_workers_per_gather', '0', true)",
                            [f'{int(budget)}ms'])
            try:
                cur.execute(sql, params)
                n = cur.fetchone()[0]
            except psycopg.errors.QueryCanceled:
                n = None
                self._remember(self._dear, shape, DEAR_SKIPS)
            # Rolling back to the savepoint also restores the settings the transaction had
            # before (the operator's statement_timeout among them).
            cur.execute('ROLLBACK TO SAVEPOINT renkei_count', [])
        self._remember(self._counts, key, n)
        return n

    def page_end(self, table, key, offset):
        with self._lock:
            return self._pages.get((table, key, offset))

    def _mac(self, table, key, offset, fid):
        what = repr((table, key, int(offset), int(fid))).encode('utf-8', 'surrogatepass')
        return hmac.new(self._mac_key, what, hashlib.sha256).hexdigest()[:24]

    def sign_page_end(self, table, key, offset, fid):
        """The `keyset` parameter of the next link: where the page at `offset` of this query
        on this version starts, so any server can page by key rather than OFFSET."""
        return f'{int(fid)}.{self._mac(table, key, offset, fid)}'

    def signed_page_end(self, token, table, key, offset):
        """The fid a `keyset` parameter vouches for, or None (absent, forged, or made for
        another query, version or offset: the page then falls back to OFFSET)."""
        if not token or not isinstance(token, str) or token.count('.') != 1:
            return None
        fid, mac = token.split('.')
        if not fid.isdigit() or len(fid) > 19:
            return None
        fid = int(fid)
        return fid if hmac.compare_digest(mac, self._mac(table, key, offset, fid)) else None

    def remember_page_end(self, table, key, offset, fid):
        self._remember(self._pages, (table, key, offset), fid)


def _hashable(v):
    return bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v


class RawFeatures(list):
    """Features as GeoJSON text made by PostgreSQL, one string each: the items view joins
    them into the body as they are (ogcapi.api.get_items)."""


class PostGISProvider(BaseProvider):
    """Read-only OGC API Features provider for one PostGIS version table.

    Provider definition keys: ``data`` (``postgis:<table>``), ``field_info`` (as for
    GPKGProvider), ``renkei_tables`` (the TableRegistry, required).
    """

    def __init__(self, provider_def):
        super().__init__(provider_def)
        self.table = table_of(self.data)
        self._tables = provider_def.get(TABLES_KEY)
        if self._tables is None:
            raise ProviderConnectionError('PostGISProvider needs a table registry')
        try:
            self._table = self._tables.cached(self.table)
            if self._table is None:   # pygeoapi builds a provider per request: once per table
                with self._tables.transaction() as cur:
                    self._table = self._tables.table(cur, self.table)
        except ProviderConnectionError:
            raise
        except Exception as err:
            raise ProviderConnectionError(f'{self.data}: {err}') from err
        self.id_field = 'fid'
        self._field_info = provider_def.get('field_info') or {}
        if self.title_field is None and 'name' in self._table.texts:
            self.title_field = 'name'
        self._fields = self.get_fields()
        self.more = None
        self.next_keyset = None

    def is_current(self):
        """Always: a version is a table of its own, never changed once published (see
        GPKGProvider.is_current)."""
        return True

    def get_fields(self):
        fields = {}
        for name, schema in self._table.fields.items():
            f = dict(schema)
            info = self._field_info.get(name)
            if isinstance(info, dict):
                f.update({k: info[k] for k in ('title', 'description') if info.get(k)})
            fields[name] = f
        return fields

    # -- query ---------------------------------------------------------------------------

    def query(self, offset=0, limit=10, resulttype='results', bbox=[],
              datetime_=None, properties=[], sortby=[], select_properties=[],
              skip_geometry=False, q=None, filterq=None,
              crs_transform_spec=None, raw_json=False, keyset=None, **kwargs):
        if datetime_ is not None:
            raise QueryError('datetime is not supported: the collection has no time field')
        if resulttype not in ('results', 'hits'):
            raise QueryError('resulttype must be results or hits')
        offset, limit = int(offset), int(limit)
        if offset > _INT64[1]:
            raise QueryError(f'offset value should be at most {_INT64[1]}')
        lyr, t = self._table, _q(self._table.table)
        where, params = [], []
        bbox_only = bool(bbox) and not properties and not q and filterq is None
        if bbox:
            minx, miny, maxx, maxy = self._box(bbox)
            env = 'ST_MakeEnvelope(%s, %s, %s, %s, 4326)'
            # The GiST index finds candidates (&&), then the exact test. PostGIS compares
            # float32 boxes rounded outwards, so `&&` alone would take a point a hair outside
            # the bbox. A candidate whose box lies inside the bbox shrunk by INNER_MARGIN (well
            # over float32's rounding at ±180) is inside for certain and skips ST_Intersects:
            # at 50,000 points in a 1 % bbox the exact test was half the scan's time.
            if lyr.points:
                # Exact on the coordinates themselves, one bitmap scan of the GiST index (the
                # inner box below costs points a second one): 47 -> 34 ms for 50,000 points.
                where.append(f'({t}.geom && {env} AND ST_X({t}.geom) BETWEEN %s AND %s '
                             f'AND ST_Y({t}.geom) BETWEEN %s AND %s)')
                params += [minx, miny, maxx, maxy, minx, maxx, miny, maxy]
            elif maxx - minx > 2 * INNER_MARGIN and maxy - miny > 2 * INNER_MARGIN:
                where.append(f'({t}.geom && {env} AND ({t}.geom @ {env} '
                             f'OR ST_Intersects({t}.geom, {env})))')
                m = INNER_MARGIN
                params += [minx, miny, maxx, maxy, minx + m, miny + m, maxx - m, maxy - m,
                           minx, miny, maxx, maxy]
            else:
                where.append(f'({t}.geom && {env} AND ST_Intersects({t}.geom, {env}))')
                params += [minx, miny, maxx, maxy] * 2
        for name, value in properties:
            where.append(f'{t}.{_q(name)} = %s')
            params.append(self._typed(name, value))
        if q:
            where_q, params_q = self._q_clause(q)
            where.append(where_q)
            params += params_q
        if filterq is not None:
            flt = filterq if isinstance(filterq, cql.Filter) else cql.Filter(filterq)
            where_f, params_f = cql.PostgreSQLBuilder(lyr.fields, t).where(flt)
            where.append(where_f)
            params += params_f
        cond = (' WHERE ' + ' AND '.join(where)) if where else ''
        count_sql = f'SELECT count(*) FROM {t}{cond}'
        known, matched = (True, lyr.count) if not where else \
            self._tables.known_count(lyr.table, count_sql, params)
        # A bbox alone is counted exactly, from the same scan as its page: the candidates the
        # GiST index finds are read once, not once for the count and again for the page. A
        # large point table counts it from its grid instead, and pages it from the grid's
        # cells (store.point_grid): neither reads every point inside the bbox.
        grid = (lyr.grid, (minx, miny, maxx, maxy)) if bbox_only and lyr.grid else None
        grid_count = grid[0].count_sql(grid[1]) if grid and not known else None
        together = not known and bbox_only and resulttype == 'results' and not sortby
        kept_page = not where and not sortby and resulttype == 'results' and \
            self._stored(select_properties, skip_geometry, crs_transform_spec)
        try:
            with self._tables.transaction(1 if (known or together or grid_count)
                                          and resulttype == 'results' else 2,
                                          scattered=grid is not None or kept_page) as cur:
                features, page_ms = [], None
                if resulttype == 'results':
                    started = time.perf_counter()
                    features = self._page(cur, cond, params, offset, limit, sortby,
                                          select_properties, skip_geometry,
                                          crs_transform_spec, keyset, count=together,
                                          grid=grid if not sortby else None,
                                          grid_count=grid_count)
                    page_ms = (time.perf_counter() - started) * 1000
                if together:
                    features, matched = features
                    self._tables.remember_count(lyr.table, count_sql, params, matched)
                elif grid_count is not None:
                    cur.execute(*grid_count)
                    matched = cur.fetchone()[0]
                    self._tables.remember_count(lyr.table, count_sql, params, matched)
                elif not known and (page_ms is None or
                                    last_page_count(offset, limit, len(features)) is None):
                    # After the page, so that its budget can be what the page cost.
                    matched = self._tables.count(cur, lyr.table, count_sql, params,
                                                 budgeted=not bbox_only, page_ms=page_ms)
        except (QueryError, ProviderConnectionError):
            raise
        except Exception as err:
            raise self._error(err) from err
        self.more = len(features) > limit if resulttype == 'results' else None
        if matched is None and resulttype == 'results':
            # The last page states its count, whether uncounted or known to be too dear.
            matched = last_page_count(offset, limit, len(features))
        features = features[:limit]
        if not raw_json:
            features = [json.loads(f) for f in features]
        elif features and isinstance(features[0], bytes):
            features = FeatureBytes(b','.join(features), len(features))
        else:
            features = RawFeatures(features)
        out = {'type': 'FeatureCollection', 'features': features,
               'numberReturned': len(features)}
        if matched is not None:
            out['numberMatched'] = matched
        return out

    def _error(self, err):
        import psycopg
        if isinstance(err, psycopg.errors.UndefinedTable):
            # Dropped after a newer version was published; the next request sees that one.
            return ProviderConnectionError(f'{self.data}: {err}')
        return ProviderQueryError(f'{self.data}: {err}', user_msg='query failed')

    def _page(self, cur, cond, params, offset, limit, sortby, select_properties,
              skip_geometry, crs_spec, token=None, count=False, grid=None, grid_count=None):
        """The page's Feature texts, plus one more when there is one (the caller trims).
        Sets `next_keyset`: the signed end of this page for the next link (filtered pages).
        With `count` (no sortby): (texts, the number of rows matching `cond`), both from one
        scan of the matches, or from `grid_count` (SQL, params) when given. With `grid`
        ((Grid, bbox), `cond` being that bbox alone): the page's fids from the grid's cells."""
        lyr, t = self._table, _q(self._table.table)
        params = list(params)
        key = (cond, tuple(map(_hashable, params)))
        order = [f'{t}.{_q(s["property"])} {"DESC" if s["order"] == "-" else "ASC"}'
                 for s in sortby]
        order.append(f'{t}.fid')   # a total order: pages never overlap or skip rows
        keyset = None
        if not sortby and offset:
            if not cond:
                keyset = offset    # fid = row number: the page after row `offset`
            else:
                keyset = self._tables.page_end(lyr.table, key, offset)
                if keyset is None:   # another process served the page before
                    keyset = self._tables.signed_page_end(token, lyr.table, key, offset)
        # The default text of a large polygon version is stored in its grid's cells
        # (store.box_grid): a bbox page reads them with its rows (BoxGrid.page_sql), other
        # pages by key once their fids are known. Not under sortby, whose
        # top-N builds only the page's texts where a join before it would read every row's.
        stored = not sortby and self._stored(select_properties, skip_geometry, crs_spec)
        if stored:
            keyed = _q(lyr.stored)
            feature, kfid = f'{keyed}.feature', f'{keyed}.fid'
        else:
            feature = self._feature_sql(select_properties, skip_geometry, crs_spec)
            keyed, kfid = self._from(select_properties), f'{t}.fid'
        # Pages read the kept texts by fid through the index on fid alone (BY_FID).
        by_fid = f' AND {keyed}.{BY_FID}' if stored else ''
        sql_offset = 0 if keyset is not None else offset
        _texts_as_utf8(cur)
        page = None   # a grid's page: SQL giving (fid, feature), with fparams
        if grid and stored:   # the texts kept in the cells, read by the scan finding the page
            psql, fparams = grid[0].page_sql(grid[1], keyset, limit + 1, sql_offset)
            page = f'SELECT s.fid, s.feature FROM ({psql}) s'
        elif grid:
            fsql, fparams = grid[0].fids_sql(grid[1], keyset, limit + 1, sql_offset)
            # The page's rows by key, from the fids the grid's cells give.
            page = (f'SELECT {kfid} AS fid, {feature} AS feature FROM ({fsql}) k, '
                    f'{keyed} WHERE {kfid} = k.fid')
        if count and grid_count is not None and page is not None:
            # The count and the page in one statement: neither reads the whole bbox.
            csql, cparams = grid_count
            cur.execute(f'SELECT n.n, p.fid, p.feature FROM ({csql}) n(n) '
                        f'LEFT JOIN LATERAL ({page}) p ON true ORDER BY p.fid',
                        [*cparams, *fparams])
            got = cur.fetchall()
            matched = got[0][0]
            rows = [r[1:] for r in got if r[1] is not None]
        elif page is not None and not count:
            cur.execute(f'{page} ORDER BY 1', fparams)
            rows = cur.fetchall()
        elif count:
            # The matches' fids once (MATERIALIZED: one scan), their count, and the page's
            # rows fetched by key; one row with no feature when the page is empty.
            after = ' WHERE m.fid > %s' if keyset is not None else ''
            sql = (f'WITH m AS MATERIALIZED (SELECT {t}.fid FROM {t}{cond}), '
                   f'k AS (SELECT m.fid FROM m{after} ORDER BY m.fid LIMIT %s OFFSET %s) '
                   'SELECT n.n, p.fid, p.feature FROM (SELECT count(*) AS n FROM m) n '
                   f'LEFT JOIN LATERAL (SELECT {kfid} AS fid, {feature} AS feature FROM k, '
                   f'{keyed} WHERE {kfid} = k.fid{by_fid}) p ON true '
                   'ORDER BY p.fid')
            cur.execute(sql, [*params, *([keyset] if keyset is not None else []),
                              limit + 1, sql_offset])
            got = cur.fetchall()
            matched = got[0][0]
            rows = [r[1:] for r in got if r[1] is not None]
        else:
            unfiltered = not cond
            if keyset is not None:
                cond = (cond + ' AND ' if cond else ' WHERE ') + f'{t}.fid > %s'
                params.append(keyset)
            if stored and unfiltered:   # the texts alone, by their key
                # fid is the row number: the page is a range of fids, which a bitmap scan
                # reads in the cells' physical order, prefetching. In fid order, the kept
                # texts are one random heap page each (the cells are in cell order).
                after = f' AND {kfid} > %s' if keyset is not None else ''
                sql = (f'SELECT {kfid}, {feature} FROM {keyed} WHERE {keyed}.{BY_FID}{after} '
                       f'AND {kfid} <= %s ORDER BY 1 LIMIT %s OFFSET %s')
                params.append((keyset or 0) + sql_offset + limit + 1)
            else:
                # A filtered page builds its texts from the rows its scan has read: stored
                # ones would cost one more random page each (the cells are in cell order).
                built = self._feature_sql(select_properties, skip_geometry, crs_spec) \
                    if stored else feature
                sql = (f'SELECT {t}.fid, {built} FROM {self._from(select_properties)}{cond} '
                       f'ORDER BY {", ".join(order)} LIMIT %s OFFSET %s')
            cur.execute(sql, [*params, limit + 1, sql_offset])
            rows = cur.fetchall()
        if not sortby and len(rows) > limit and limit > 0:
            # Where this page ends: the next page (offset + limit) starts after this fid.
            self._tables.remember_page_end(lyr.table, key, offset + limit, rows[limit - 1][0])
            if cond:
                self.next_keyset = self._tables.sign_page_end(lyr.table, key, offset + limit,
                                                              rows[limit - 1][0])
        texts = [r[1] for r in rows]
        return (texts, matched) if count else texts

    def _feature_sql(self, select_properties, skip_geometry, crs_spec):
        """One Feature as compact JSON text, built by PostgreSQL (store.feature_json), for
        FROM _from(select_properties)."""
        t = _q(self._table.table)
        return feature_json.feature_sql(
            self._table.table, None if skip_geometry else _geometry_sql(f'{t}.geom', crs_spec))

    def _from(self, select_properties):
        """The table and, beside each row, its selected properties as feature_json.PROPS."""
        lyr = self._table
        names = [n for n in lyr.fields if not select_properties or n in select_properties]
        return feature_json.from_sql(lyr.table, names)

    def _stored(self, select_properties, skip_geometry, crs_spec):
        """Whether the asked text is the one stored at publish (the version has them)."""
        return (self._table.stored is not None and not select_properties and not skip_geometry
                and _geometry_sql('geom', crs_spec) == 'geom')

    def _box(self, bbox):
        return query_params.box(bbox)

    def _q_clause(self, q):
        texts = self._table.texts
        if not texts:
            raise QueryError('q: this collection has no text fields')
        t = _q(self._table.table)
        ors, params = [], []
        for term in query_params.q_terms(q):
            for col in texts:
                ors.append(f'strpos(lower({t}.{_q(col)}), %s) > 0')
                params.append(term)
        return '(' + (' OR '.join(ors) or 'FALSE') + ')', params

    def _typed(self, name, value):
        return query_params.typed(self._table.fields, name, value)

    def get(self, identifier, crs_transform_spec=None, **kwargs):
        try:
            fid = int(str(identifier))
        except ValueError:
            fid = None
        if fid is None or not _INT64[0] <= fid <= _INT64[1]:
            raise ProviderItemNotFoundError(user_msg=f'no item {identifier}')
        t = _q(self._table.table)
        if self._stored([], False, crs_transform_spec):
            sql = f'SELECT feature FROM {_q(self._table.stored)} WHERE fid = %s AND {BY_FID}'
        else:
            sql = (f'SELECT {self._feature_sql([], False, crs_transform_spec)} '
                   f'FROM {self._from([])} WHERE {t}.fid = %s')
        try:
            with self._tables.transaction(1) as cur:
                cur.execute(sql, [fid])
                row = cur.fetchone()
        except Exception as err:
            raise self._error(err) from err
        if row is None:
            raise ProviderItemNotFoundError(user_msg=f'no item {identifier}')
        return json.loads(row[0])

    def __repr__(self):
        return f'<PostGISProvider> {self.table}'


_AXES = {}


def _texts_as_utf8(cur):
    """Have `cur` return text columns as the UTF-8 bytes the server sends, when the
    connection's encoding is UTF-8: a page's Feature texts then go into the response as they
    came (FeatureBytes), not decoded and encoded again (a page of 1,000 polygons through
    Flask: 12.1 -> 10.7 ms)."""
    if cur.connection.info.encoding == 'utf-8':
        cur.adapters.register_loader('text', _utf8_loader())


@functools.cache
def _utf8_loader():
    from psycopg.adapt import Loader   # psycopg is imported only in PostgreSQL mode

    class Utf8(Loader):
        def load(self, data):
            return bytes(data)
    return Utf8


def _geometry_sql(column, crs_spec):
    """The stored geometry (CRS84, lon/lat) in the output CRS, in its axis order: ST_Transform
    to the EPSG code, then x/y swapped when the CRS's first axis points north or south (EPSG
    4326, 6668 and plane rectangular 6673 do), as ogcapi.gpkg_read's pyproj path does."""
    if crs_spec is None or crs_spec.target_crs_uri in (CRS84, None):
        return column
    uri = crs_spec.target_crs_uri
    got = _AXES.get(uri)
    if got is None:
        try:
            crs = crs_from_uri(uri)
        except ValueError as err:
            raise QueryError(str(err))
        authority, code = crs.to_authority() or (None, None)
        if authority != 'EPSG':
            raise QueryError(f'crs {uri!r} is not supported')
        north_first = crs.axis_info[0].direction.lower() in ('north', 'south')
        got = _AXES[uri] = (int(code), north_first)
    srid, north_first = got
    out = f'ST_Transform({column}, {srid})'
    return f'ST_FlipCoordinates({out})' if north_first else out

