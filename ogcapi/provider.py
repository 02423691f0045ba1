"""pygeoapi feature provider over renkei's GeoPackages, with plain sqlite3.

pygeoapi's own SQLiteGPKG provider needs SpatiaLite (our Python cannot load extensions) and its
OGR provider needs GDAL's Python bindings; both also re-open the file on every request. This one
reads the GeoPackage tables directly: attributes with SQL, geometries as GPKG blobs decoded by
shapely, bbox through the GPKG R-tree, CQL2 filters translated to SQL (ogcapi.cql). What is kept
between requests (connections, schema, counts, CRS operations) lives in ogcapi.gpkg_read.

What the client got wrong is raised as ogcapi.errors.QueryError (400); every other error is the
server's (500).
"""

import os
import sqlite3
import time

import numpy as np
import shapely

from pygeoapi.provider.base import (
    BaseProvider, ProviderConnectionError, ProviderItemNotFoundError, ProviderQueryError)

from ogcapi import cql, feature_text, query_params
from ogcapi.errors import QueryError
from ogcapi.gpkg_read import (SQLITE_INT_RANGE as _INT64, STANDALONE_FILES,
                              decode, geometries_to_geojson, intersects_box, last_page_count,
                              point_coordinates, polygon_coordinates,
                              quote_ident as _quote_ident, transformer)
from ogcapi.postgis import RawFeatures

__all__ = ['FILES_KEY', 'GPKGProvider', 'geometries_to_geojson']

# Provider definition key of the ogcapi.gpkg_read.FileRegistry the provider reads through.
FILES_KEY = 'renkei_files'


def _ids(text):
    """Integers of a group_concat (None: none)."""
    return np.fromstring(text, dtype=np.int64, sep=',') if text else np.zeros(0, np.int64)


class GPKGProvider(BaseProvider):
    """Read-only OGC API Features provider for one GeoPackage layer.

    Provider definition keys: ``data`` (path), ``layer`` (table name,
    required), ``field_info`` (optional ``{name: {title, description}}``
    merged into the fields; types always come from the GPKG columns),
    ``renkei_files`` (the FileRegistry of the OGCAPI that publishes it; without
    one, a process-wide registry that is never pruned).
    Feature ids are the integer fid.
    """

    def __init__(self, provider_def):
        super().__init__(provider_def)
        self.table = provider_def.get('layer')
        if not self.table:
            raise ProviderConnectionError('GPKGProvider needs a layer name')
        self._files = provider_def.get(FILES_KEY) or STANDALONE_FILES
        self._path = os.path.abspath(self.data)
        self._file = self._files.file(self._path)
        self._layer = self._file.layer(self.table)
        self.id_field = self._layer.fid
        self._field_info = provider_def.get('field_info') or {}
        if self.title_field is None and 'name' in self._layer.texts:
            self.title_field = 'name'
        self._fields = self.get_fields()
        self.more = None  # set by query(): whether rows follow the page
        self._get_sql = None   # (names, SQL) of get(), made on first use

    def is_current(self):
        """Whether the file on disk is still the version this provider reads (a provider
        kept across requests, ogcapi.api's item readers, asks before each)."""
        return self._files.file(self._path) is self._file

    def get_fields(self):
        # Fresh dicts every time: pygeoapi's schema and OpenAPI code mutate
        # the field dicts it is given, and the layer's copy is shared.
        extra = self._field_info
        fields = {}
        for name, schema in self._layer.fields.items():
            f = dict(schema)
            info = extra.get(name)
            if isinstance(info, dict):  # a bare type string adds nothing
                f.update({k: info[k] for k in ('title', 'description') if info.get(k)})
            fields[name] = f
        return fields

    # -- query -------------------------------------------------------------

    def query(self, offset=0, limit=10, resulttype='results', bbox=[],
              datetime_=None, properties=[], sortby=[], select_properties=[],
              skip_geometry=False, q=None, filterq=None,
              crs_transform_spec=None, raw_json=False, **kwargs):
        """``raw_json``: features as GeoJSON texts (RawFeatures), which the items view joins
        into the body as they are, as for the PostGIS provider."""
        if datetime_ is not None:
            raise QueryError('datetime is not supported: the collection has no time field')
        if resulttype not in ('results', 'hits'):
            raise QueryError('resulttype must be results or hits')
        if int(offset) > _INT64[1]:
            raise QueryError(f'offset value should be at most {_INT64[1]}')
        lyr, t = self._layer, _quote_ident(self._layer.table)
        box = self._box(bbox) if bbox else None
        where, params = [], []
        for name, value in properties:
            where.append(f'{t}.{_quote_ident(name)} = ?')
            params.append(self._typed(name, value))
        if q:
            where_q, params_q = self._q_clause(q)
            where.append(where_q)
            params.extend(params_q)
        if filterq is not None:
            where_f, params_f = self._filter_clause(filterq)
            where.append(where_f)
            params.extend(params_f)
        # A bbox alone is answered by the R-tree: the count and the page's fids come from it
        # without reading one table row, except the exact test of edge candidates.
        rtree_only = box is not None and lyr.rtree is not None and not where and not sortby
        if box is not None and not rtree_only:
            joins, where_b, params_b = self._bbox_clause(box)
            where, params = where_b + where, params_b + params
        else:
            joins = ''
        from_ = f'{t}{joins}'
        cond = (' WHERE ' + ' AND '.join(where)) if where else ''

        with self._file.connection() as con:
            try:
                features, page_fids, page_ms = [], None, None
                if rtree_only:
                    # The R-tree gives both the count and the page's fids.
                    matched, page_fids = self._rtree_page(con, box, int(offset),
                                                          int(limit) + 1)
                else:   # counted after the page, which may answer it or bounds its cost
                    matched = lyr.count if not where else None
                returned = 0
                if resulttype == 'results':
                    started = time.perf_counter()
                    rows, names = self._select(con, from_, cond, params, offset,
                                               limit, sortby, select_properties,
                                               skip_geometry, page_fids)
                    # One row past the page tells whether a next page exists, with or
                    # without a count (ogcapi.api's items view reads self.more; pygeoapi's
                    # own views link on a full page).
                    returned, rows = len(rows), rows[:int(limit)]
                    features = (self._texts if raw_json else self._features)(
                        rows, names, skip_geometry, crs_transform_spec)
                    page_ms = (time.perf_counter() - started) * 1000
                if where:
                    matched = None if page_ms is None else \
                        last_page_count(int(offset), int(limit), returned)
                    if matched is None:
                        matched = self._file.count(con, f'SELECT COUNT(*) FROM {from_}{cond}',
                                                   params, page_ms=page_ms)
            except sqlite3.Error as err:
                # The path is for the log (the traceback names it); clients see user_msg.
                raise ProviderQueryError(f'{self.data}: {err}', user_msg='query failed') from err
        self.more = returned > int(limit) if resulttype == 'results' else None
        if raw_json and isinstance(features, list):
            features = RawFeatures(features)
        out = {'type': 'FeatureCollection', 'features': features,
               'numberReturned': len(features)}
        if matched is not None:
            # Omitted when counting would cost more than the page (OGC API Features allows
            # it); clients follow the next link, which is there exactly when more rows exist.
            out['numberMatched'] = matched
        return out

    def _box(self, bbox):
        return query_params.box(bbox)

    def _rtree_page(self, con, box, offset, size):
        """(count, sorted fids offset..offset+size) of the features meeting the bbox, exactly,
        from the R-tree: every entry whose box meets the bbox, less the edge candidates whose
        geometry does not. Edge candidates (boxes not inside the bbox: float32 boxes are
        rounded outwards, so "inside" is safe) are searched for in the R-tree as what meets
        one of the bbox's four edge strips, which is narrow, and their geometries are read in
        one query and tested together (gpkg_read.intersects_box). For points the R-tree box
        is the point, so they are only the few points within float32 rounding of an edge.
        group_concat: one string for ~10k ids, parsed by numpy, rather than ~10k row tuples;
        no per-entry test in SQL either (reading an R-tree entry's bounds in a
        FILTER or CASE cost more than the search itself: 2.5 ms against 1 ms at 10k ids)."""
        minx, miny, maxx, maxy = box
        lyr, t = self._layer, _quote_ident(self._layer.table)
        rtree = _quote_ident(lyr.rtree)
        meets = 'r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ?'
        params = [maxx, minx, maxy, miny]
        fids = _ids(con.execute(f'SELECT group_concat(r.id) FROM {rtree} r WHERE {meets}',
                                params).fetchone()[0])
        strips = ' UNION '.join(f'SELECT r.id FROM {rtree} r WHERE {meets} AND r.{side} ?'
                                for side in ('minx <', 'maxx >', 'miny <', 'maxy >'))
        edge = con.execute(f'SELECT group_concat(id) FROM ({strips})',
                           (params + [minx]) + (params + [maxx]) + (params + [miny])
                           + (params + [maxy])).fetchone()[0]
        if edge:
            fid = _quote_ident(lyr.fid)
            rows = con.execute(f'SELECT {fid}, {_quote_ident(lyr.geom)} FROM {t} '
                               f'WHERE {fid} IN ({edge})').fetchall()
            try:
                hit = intersects_box([r[1] for r in rows], minx, miny, maxx, maxy)
            except shapely.errors.ShapelyError as err:
                raise ProviderQueryError(f'{self.data}: undecodable geometry: {err}',
                                         user_msg='query failed') from err
            # Candidates with no row (an R-tree entry left behind) never match either.
            miss = np.setdiff1d(_ids(edge), np.array([r[0] for r in rows], np.int64)[hit])
            if len(miss):
                fids = fids[~np.isin(fids, miss)]
        end = offset + size
        if end < len(fids):
            # Only the page needs sorting: the ids up to its end, picked in linear time.
            return len(fids), np.sort(np.partition(fids, end - 1)[:end])[offset:]
        return len(fids), np.sort(fids)[offset:]

    def _bbox_clause(self, box):
        minx, miny, maxx, maxy = box
        lyr, t = self._layer, _quote_ident(self._layer.table)
        exact = f'renkei_intersects({t}.{_quote_ident(lyr.geom)}, ?, ?, ?, ?)'
        if lyr.rtree is None:
            return '', [exact], [minx, miny, maxx, maxy]
        # The R-tree holds float32 boxes rounded outwards: "box inside bbox"
        # is still a safe accept; only edge candidates pay for the exact test.
        joins = f' JOIN {_quote_ident(lyr.rtree)} r ON r.id = {t}.{_quote_ident(lyr.fid)}'
        where = ['r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ?',
                 f'((r.minx >= ? AND r.maxx <= ? AND r.miny >= ? AND r.maxy <= ?)'
                 f' OR {exact})']
        params = [maxx, minx, maxy, miny, minx, maxx, miny, maxy,
                  minx, miny, maxx, maxy]
        return joins, where, params

    def _filter_clause(self, filterq):
        # pygeoapi's own parser (ECQL, for f=csv/jsonld) hands over a bare AST; our items
        # view hands over a cql.Filter that also knows filter-crs.
        flt = filterq if isinstance(filterq, cql.Filter) else cql.Filter(filterq)
        lyr, t = self._layer, _quote_ident(self._layer.table)
        builder = cql.SQLBuilder(
            lyr.fields, t, _quote_ident(lyr.fid), _quote_ident(lyr.geom),
            rtree=_quote_ident(lyr.rtree) if lyr.rtree else None, geom_name=lyr.geom)
        return builder.where(flt)

    def _q_clause(self, q):
        texts = self._layer.texts
        if not texts:
            raise QueryError('q: this collection has no text fields')
        t = _quote_ident(self._layer.table)
        ors, params = [], []
        # instr(lower()) rather than LIKE: connections run LIKE case-sensitively (CQL2),
        # while q stays case-insensitive for ASCII as before.
        for term in query_params.q_terms(q):
            for col in texts:
                ors.append(f"instr(lower({t}.{_quote_ident(col)}), ?) > 0")
                params.append(term)
        return '(' + (' OR '.join(ors) or '0') + ')', params

    def _typed(self, name, value):
        return query_params.typed(self._layer.fields, name, value)

    def _select(self, con, from_, cond, params, offset, limit, sortby,
                select_properties, skip_geometry, page_fids=None):
        """The rows of the page, plus one row more when there is one (the caller trims it),
        and the property names they hold after the fid."""
        lyr, t = self._layer, _quote_ident(self._layer.table)
        names = [n for n in lyr.fields
                 if not select_properties or n in select_properties]
        cols = [f'{t}.{_quote_ident(lyr.fid)}']
        cols += [f'{t}.{_quote_ident(n)}' for n in names]
        if not skip_geometry:
            cols.append(f'{t}.{_quote_ident(lyr.geom)}')
        order = [f'{t}.{_quote_ident(s["property"])} '
                 f'{"DESC" if s["order"] == "-" else "ASC"}' for s in sortby]
        # fid last: a total order, so pages never overlap or skip rows.
        order.append(f'{t}.{_quote_ident(lyr.fid)}')
        offset, params = int(offset), list(params)
        if not cond and page_fids is None and not sortby and lyr.dense and offset:
            # fid = row number: the page starting at row offset+1 is a primary-key range, so
            # a deep page costs what the first does (OFFSET would step over every row).
            cond, params, offset = f' WHERE {t}.{_quote_ident(lyr.fid)} > ?', [offset], 0
        fid, order_by = f'{t}.{_quote_ident(lyr.fid)}', ', '.join(order)
        if page_fids is not None:
            # The page's fids, known already (R-tree, sorted): read just those rows, by
            # primary key, in that order (CROSS JOIN: the fids' loop outside). One JSON
            # parameter rather than an IN list of 1,000 literals for SQLite's parser
            # (~0.7 ms less a page).
            wanted = page_fids.tolist()
            sql = (f'SELECT {", ".join(cols)} FROM json_each(?) j CROSS JOIN {t} '
                   f'ON {fid} = j.value')
            rows = con.execute(sql, (f'[{",".join(map(str, wanted))}]',)).fetchall()
            if [r[0] for r in rows] != wanted:   # a fid with no row (or a planner change)
                rows.sort(key=lambda r: r[0])
            return rows, names
        if sortby or from_ != t:  # a bbox join or a sort (never the keyset case)
            # Pick the page's fids first, then read their rows: SQLite then sorts only the
            # keys of every match (~10k for a 1% bbox of 1M points), not whole rows with
            # their geometry blobs (measured 23 ms -> 5 ms).
            sql = (f'SELECT {", ".join(cols)} FROM {t} WHERE {fid} IN (SELECT {fid} FROM '
                   f'{from_}{cond} ORDER BY {order_by} LIMIT ? OFFSET ?) ORDER BY {order_by}')
        else:
            sql = (f'SELECT {", ".join(cols)} FROM {from_}{cond} '
                   f'ORDER BY {order_by} LIMIT ? OFFSET ?')
        return con.execute(sql, [*params, int(limit) + 1, offset]).fetchall(), names

    def _texts(self, rows, names, skip_geometry, crs_spec):
        """Feature texts of ``rows``, the same bytes the items view writes for the dicts of
        _features (ogcapi.feature_text), without building those dicts: a list of texts, or
        for a page Arrow writes, one feature_text.FeatureBytes."""
        geoms = None
        if skip_geometry:
            geoms = ['null'] * len(rows)
        elif crs_spec is None:
            blobs = [r[-1] for r in rows]
            xy = point_coordinates(blobs)
            if xy is not None:
                geoms = feature_text.point_texts(*xy)
            elif (ragged := polygon_coordinates(blobs)) is not None:
                geoms = feature_text.polygon_texts(*ragged)
        if geoms is None:
            tr = (transformer(crs_spec.source_crs_uri, crs_spec.target_crs_uri)
                  if crs_spec is not None else None)
            try:
                geoms = feature_text.shape_texts(decode([r[-1] for r in rows], tr))
            except (shapely.errors.ShapelyError, IndexError, TypeError) as err:
                raise ProviderQueryError(f'{self.data}: undecodable geometry: {err}',
                                         user_msg='query failed') from err
        cols = list(zip(*rows)) if rows else [()] * (len(names) + 2)
        return feature_text.page(cols[0], geoms, cols[1:1 + len(names)], names,
                                 self._layer.booleans)

    def _geometries(self, rows, crs_spec):
        tr = (transformer(crs_spec.source_crs_uri, crs_spec.target_crs_uri)
              if crs_spec is not None else None)
        try:
            return geometries_to_geojson([r[-1] for r in rows], tr)
        except (shapely.errors.ShapelyError, IndexError, TypeError) as err:
            # Blobs we wrote decode; these did not: the file is damaged. The log needs its path.
            raise ProviderQueryError(f'{self.data}: undecodable geometry: {err}',
                                     user_msg='query failed') from err

    def _features(self, rows, names, skip_geometry, crs_spec):
        geoms = [None] * len(rows) if skip_geometry else self._geometries(rows, crs_spec)
        bools = [i for i, n in enumerate(names) if n in self._layer.booleans]
        features = []
        for row, geom in zip(rows, geoms):
            values = list(row[1:1 + len(names)])
            for i in bools:
                if values[i] is not None:
                    values[i] = bool(values[i])
            features.append({'type': 'Feature', 'id': row[0], 'geometry': geom,
                             'properties': dict(zip(names, values))})
        return features

    def get(self, identifier, crs_transform_spec=None, **kwargs):
        try:
            fid = int(str(identifier))
        except ValueError:
            fid = None
        if fid is None or not _INT64[0] <= fid <= _INT64[1]:
            raise ProviderItemNotFoundError(user_msg=f'no item {identifier}')
        names, sql = self._get_sql or self._item_sql()
        with self._file.connection() as con:
            try:
                row = con.execute(sql, (fid,)).fetchone()
            except sqlite3.Error as err:
                raise ProviderQueryError(f'{self.data}: {err}', user_msg='query failed') from err
        if row is None:
            raise ProviderItemNotFoundError(user_msg=f'no item {identifier}')
        return self._features([row], names, False, crs_transform_spec)[0]

    def _item_sql(self):
        # Once per provider: ogcapi.api keeps one for items by id across requests.
        lyr, t = self._layer, _quote_ident(self._layer.table)
        names = list(lyr.fields)
        cols = [_quote_ident(lyr.fid), *map(_quote_ident, names), _quote_ident(lyr.geom)]
        where = f'{_quote_ident(lyr.fid)} = ?'
        self._get_sql = names, f'SELECT {", ".join(cols)} FROM {t} WHERE {where}'
        return self._get_sql

    def __repr__(self):
        return f'<GPKGProvider> {self.data}#{self.table}'

