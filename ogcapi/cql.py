"""CQL2 filters (OGC API Features Part 3) as WHERE clauses: SQLite over one GeoPackage layer
(SQLBuilder), PostgreSQL over one PostGIS version table (PostgreSQLBuilder).

pygeofilter parses CQL2 text or JSON into an AST; this module turns the AST into SQL with bound
parameters, so the filter runs inside SQLite, next to the data. Supported: comparison
(= <> < <= > >=), LIKE, IN, BETWEEN, IS NULL, AND/OR/NOT, S_INTERSECTS with a geometry or a
BBOX (R-tree first, then an exact test in shapely). Anything else is a FilterError (a QueryError:
HTTP 400): a filter we cannot apply is refused, never ignored.
"""

import datetime
import json

import numpy as np
import shapely
from pygeofilter import ast, values

from ogcapi.errors import QueryError
from ogcapi.gpkg_read import CRS84, SQLITE_INT_RANGE as _INT64, quote_ident, transformer

LANGUAGES = ('cql2-text', 'cql2-json')
# Budgets of one filter, checked before any SQL is built. Chains of one operator (a OR b OR …)
# are joined flat, so only alternating AND/OR/NOT nest; SQLite's parser stack (3.40: 100
# entries) holds about 30 levels of parentheses and its expression tree 1,000 levels, and each
# flat term adds one level. Beyond these a filter is refused with a 400.
MAX_TERMS = 256
MAX_NESTING = 20
MAX_IN_VALUES = 1000
# GDAL's OAPIF driver speaks only `cql-text` (the Part 3 draft's name), and only the subset that
# reads the same in CQL2 text: comparisons, LIKE, IS NULL, AND/OR/NOT with parentheses. It is
# accepted as a name for cql2-text, so GDAL filters on the server (see ogcapi.api openapi).
ALIASES = {'cql-text': 'cql2-text'}
_COMPARISONS = {ast.Equal: '=', ast.NotEqual: '<>', ast.LessThan: '<',
                ast.LessEqual: '<=', ast.GreaterThan: '>', ast.GreaterEqual: '>='}
_GEOMETRY_NAMES = ('geometry', 'geom')


class FilterError(QueryError):
    """A filter that is malformed or uses something this server does not implement."""


class Filter:
    """A parsed filter: the AST and the CRS its geometry literals are written in."""

    def __init__(self, node, crs=CRS84, envelope_is_xyxy=False):
        self.node, self.crs = node, crs
        # pygeofilter 0.4's CQL2-JSON parser fills Envelope(x1, x2, y1, y2) positionally
        # from [minx, miny, maxx, maxy]; remembered here so bbox literals are read right.
        self.envelope_is_xyxy = envelope_is_xyxy

    def __repr__(self):
        return f'Filter({self.node!r}, crs={self.crs})'


def parse(text, lang=None, crs=None):
    """Parse a ``filter`` parameter. ``lang`` defaults to cql2-text (Part 3)."""
    lang = ALIASES.get(lang, lang) or 'cql2-text'
    if lang not in LANGUAGES:
        raise FilterError(f'filter-lang {lang!r} is not supported; use one of '
                          + ', '.join(LANGUAGES))
    if not text or not text.strip():
        raise FilterError('filter is empty')
    # Imported on first use: building the Lark grammars costs ~0.3 s, which every gunicorn
    # worker would otherwise pay at boot.
    from pygeofilter.parsers.cql2_json import parse as parse_cql2_json
    from ogcapi.cql2_text import parse as parse_cql2_text   # CQL2 identifiers (日本語 too)
    try:
        node = parse_cql2_text(text) if lang == 'cql2-text' else parse_cql2_json(text)
    except Exception as err:  # lark and json raise many types; all mean "bad filter"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FilterError(f'invalid {lang} filter: {first}')
    check_budget(node)
    return Filter(node, crs or CRS84, envelope_is_xyxy=(lang == 'cql2-json'))


class SQLBuilder:
    """Translates one Filter for one layer. ``table``/``fid``/``geom`` are quoted SQL names.

    This is the SQLite dialect (GeoPackage); PostgreSQLBuilder below is PostGIS's. Both bind
    every value as a parameter: nothing from the filter is ever spliced into the SQL text.
    """
    P = '?'               # the driver's placeholder
    TRUE, FALSE = '1', '0'

    def __init__(self, fields, table, fid, geom, rtree=None, geom_name='geometry'):
        self.fields = fields  # name -> JSON Schema ({'type': ...})
        self.t, self.fid, self.geom = table, fid, geom
        self.rtree = rtree
        self.geom_names = {geom_name, *_GEOMETRY_NAMES}

    def where(self, flt):
        self._flt = flt
        check_budget(flt.node)
        params = []
        sql = self._bool(flt.node, params)
        return sql, params

    # -- boolean structure -------------------------------------------------

    def _bool(self, node, params):
        if isinstance(node, (ast.And, ast.Or)):
            # pygeofilter nests n-ary chains as binary pairs; SQL gets them flat.
            op = ' AND ' if isinstance(node, ast.And) else ' OR '
            return '(' + op.join(self._bool(n, params) for n in _operands(node)) + ')'
        if isinstance(node, ast.Not):
            return '(NOT ' + self._bool(node.sub_node, params) + ')'
        if type(node) in _COMPARISONS:
            return self._compare(node, _COMPARISONS[type(node)], params)
        if isinstance(node, ast.Like):
            return self._like(node, params)
        if isinstance(node, ast.In):
            col, kind = self._column(node.lhs)
            if not node.sub_nodes:
                raise FilterError('IN needs at least one value')
            marks = ', '.join(self.P for _ in node.sub_nodes)
            params.extend(self._literal(v, kind) for v in node.sub_nodes)
            return f'({col} {"NOT IN" if node.not_ else "IN"} ({marks}))'
        if isinstance(node, ast.Between):
            col, kind = self._column(node.lhs)
            params += [self._literal(node.low, kind), self._literal(node.high, kind)]
            return f'({col} {"NOT BETWEEN" if node.not_ else "BETWEEN"} {self.P} AND {self.P})'
        if isinstance(node, ast.IsNull):
            col, _ = self._column(node.lhs)
            return f'({col} IS {"NOT NULL" if node.not_ else "NULL"})'
        if isinstance(node, ast.GeometryIntersects):
            return self._intersects(node.lhs, node.rhs, params)
        if isinstance(node, ast.BBox):  # ECQL BBOX(geom, ...) from pygeoapi's own parser
            return self._intersects(node.lhs, ('box', node.minx, node.miny, node.maxx,
                                               node.maxy), params)
        if isinstance(node, bool):
            return self.TRUE if node else self.FALSE
        raise FilterError(f'not supported in filters here: {_describe(node)}')

    # -- predicates ----------------------------------------------------------

    def _compare(self, node, op, params):
        lhs, rhs = node.lhs, node.rhs
        if not isinstance(lhs, ast.Attribute) and isinstance(rhs, ast.Attribute):
            lhs, rhs = rhs, lhs
            op = {'<': '>', '>': '<', '<=': '>=', '>=': '<='}.get(op, op)
        col, kind = self._column(lhs)
        if isinstance(rhs, ast.Attribute):
            other, other_kind = self._column(rhs)
            if _family(kind) != _family(other_kind):
                raise FilterError(f'cannot compare {lhs.name} ({kind}) with {rhs.name} '
                                  f'({other_kind})')
            return f'({col} {op} {other})'
        params.append(self._literal(rhs, kind))
        return f'({col} {op} {self.P})'

    def _like(self, node, params):
        col, kind = self._column(node.lhs)
        if kind != 'string':
            raise FilterError(f'LIKE needs a text property; {node.lhs.name} is {kind}')
        if node.nocase:
            raise FilterError('case-insensitive LIKE is not supported')
        if not isinstance(node.pattern, str):
            raise FilterError('LIKE needs a text pattern')
        # CQL2 wildcards are SQL's own (% and _, escaped with a backslash), whatever
        # singlechar pygeofilter reports, so the pattern is passed as it is.
        params.append(node.pattern)
        return f"({col} {'NOT LIKE' if node.not_ else 'LIKE'} {self.P} ESCAPE '\\')"

    def _intersects(self, lhs, rhs, params):
        if isinstance(rhs, ast.Attribute) and not isinstance(lhs, ast.Attribute):
            lhs, rhs = rhs, lhs
        if not isinstance(lhs, ast.Attribute) or lhs.name not in self.geom_names:
            raise FilterError('S_INTERSECTS needs the geometry property and a geometry '
                              f'literal (geometry property: {sorted(self.geom_names)[0]})')
        geom = self._geometry(rhs)
        if geom.is_empty:
            return self.FALSE
        return self._intersects_sql(geom, params)

    def _intersects_sql(self, geom, params):
        minx, miny, maxx, maxy = geom.bounds
        if self.rtree:
            prefilter = (f'{self.t}.{self.fid} IN (SELECT id FROM {self.rtree} WHERE '
                         'minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?) AND ')
            params += [maxx, minx, maxy, miny]
        else:
            prefilter = ''
        if shapely.equals(geom, shapely.box(minx, miny, maxx, maxy)):
            params += [minx, miny, maxx, maxy]
            exact = f'renkei_intersects({self.t}.{self.geom}, ?, ?, ?, ?)'
        else:
            params.append(shapely.to_wkb(geom))
            exact = f'renkei_intersects_geom({self.t}.{self.geom}, ?)'
        return f'({prefilter}{exact})'

    # -- operands ----------------------------------------------------------------

    def _quote(self, name):
        return quote_ident(name)

    def _column(self, node):
        if not isinstance(node, ast.Attribute) or not isinstance(node.name, str):
            raise FilterError(f'expected a property name, got {_describe(node)}')
        schema = self.fields.get(node.name)
        if schema is None:
            raise FilterError(f'unknown property {node.name!r}: see /queryables')
        return f'{self.t}.{self._quote(node.name)}', schema['type']

    @staticmethod
    def _literal(value, kind):
        if isinstance(value, bool):
            if kind != 'boolean':
                raise FilterError(f'a {kind} property cannot be compared with a boolean')
            return int(value)
        if isinstance(value, (int, float)):
            if kind not in ('integer', 'number'):
                raise FilterError(f'a {kind} property cannot be compared with a number')
            if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
                return float(str(value))  # via text: past 1e308 it is inf, not OverflowError
            return value
        if isinstance(value, str):
            if kind != 'string':
                raise FilterError(f'a {kind} property cannot be compared with text')
            return value
        if isinstance(value, (datetime.date, datetime.datetime)):
            if kind != 'string':
                raise FilterError(f'a {kind} property cannot be compared with a date')
            # Dates are stored as ISO 8601 text, which sorts like the dates themselves.
            if isinstance(value, datetime.datetime):
                return value.strftime('%Y-%m-%dT%H:%M:%S') + (
                    'Z' if value.utcoffset() == datetime.timedelta(0) else '')
            return value.isoformat()
        raise FilterError(f'not supported as a value: {_describe(value)}')

    def _geometry(self, node):
        if isinstance(node, values.Geometry):
            try:
                geom = shapely.geometry.shape(node.geometry)
            except (ValueError, TypeError, KeyError, IndexError,
                    shapely.errors.ShapelyError) as err:
                # The parser accepts shapes GEOS cannot build (a two-point ring, …).
                raise FilterError(f'invalid geometry literal: {err}')
        elif isinstance(node, values.Envelope):
            x = (node.x1, node.x2, node.y1, node.y2) if self._flt.envelope_is_xyxy \
                else (node.x1, node.y1, node.x2, node.y2)
            geom = shapely.box(*x)
        elif isinstance(node, ast.Function) and node.name.lower() == 'bbox':
            args = node.arguments
            if len(args) == 6:
                args = [args[0], args[1], args[3], args[4]]
            if len(args) != 4 or not all(isinstance(a, (int, float)) for a in args):
                raise FilterError('BBOX needs 4 (or 6) numbers')
            geom = shapely.box(*args)
        elif isinstance(node, tuple) and node[0] == 'box':
            geom = shapely.box(*node[1:])
        else:
            raise FilterError(f'expected a geometry literal, got {_describe(node)}')
        if geom is None or (not geom.is_empty and not all(map(np.isfinite, geom.bounds))):
            raise FilterError('geometry literals need finite coordinates (no NaN or infinity)')
        if self._flt.crs != CRS84:
            try:
                t = transformer(self._flt.crs, CRS84)
            except ValueError as err:
                raise FilterError(f'filter-crs: {err}')
            geom = shapely.transform(geom, lambda xy: _stack(t.transform(xy[:, 0], xy[:, 1])))
        return geom


class PostgreSQLBuilder(SQLBuilder):
    """The same translation for a PostGIS table (store.features_pg layout), for psycopg:
    %s placeholders, SQL booleans, and the spatial test in PostGIS (GiST first, through &&)."""
    P = '%s'
    TRUE, FALSE = 'TRUE', 'FALSE'

    def __init__(self, fields, table, fid='fid', geom='geom'):
        super().__init__(fields, table, fid, geom, rtree=None, geom_name='geometry')

    def _quote(self, name):
        return pg_quote_ident(name)

    @staticmethod
    def _literal(value, kind):
        if isinstance(value, bool) and kind == 'boolean':
            return value
        return SQLBuilder._literal(value, kind)

    def _intersects_sql(self, geom, params):
        g = f'{self.t}.{self.geom}'
        minx, miny, maxx, maxy = geom.bounds
        if shapely.equals(geom, shapely.box(minx, miny, maxx, maxy)):
            # GiST first (&&), then the exact test (see ogcapi.postgis on why not `@`).
            params += [minx, miny, maxx, maxy] * 2
            env = 'ST_MakeEnvelope(%s, %s, %s, %s, 4326)'
            return f'({g} && {env} AND ST_Intersects({g}, {env}))'
        params.append(shapely.to_wkb(geom))
        return f'ST_Intersects({g}, ST_GeomFromWKB(%s, 4326))'


def pg_quote_ident(name):
    """A quoted PostgreSQL identifier for SQL run through psycopg with parameters: a % in a
    column name is doubled, or the driver would read it as a placeholder."""
    return '"' + name.replace('"', '""').replace('%', '%%') + '"'


def _operands(node):
    """The operands of a chain of one boolean operator, left to right, without recursion."""
    kind, out, todo = type(node), [], [node]
    while todo:
        n = todo.pop()
        if type(n) is kind:
            todo += [n.rhs, n.lhs]
        else:
            out.append(n)
    return out


def check_budget(node):
    """FilterError when a filter has more terms, IN values or nesting than MAX_*."""
    terms, todo = 0, [(node, 0)]
    while todo:
        n, depth = todo.pop()
        if depth > MAX_NESTING:
            raise FilterError(f'filter nests too deeply (at most {MAX_NESTING} levels of '
                              'alternating AND/OR/NOT)')
        if isinstance(n, (ast.And, ast.Or)):
            todo += [(n.lhs, depth + (type(n.lhs) is not type(n))),
                     (n.rhs, depth + (type(n.rhs) is not type(n)))]
        elif isinstance(n, ast.Not):
            todo.append((n.sub_node, depth + 1))
        else:
            terms += 1
            if terms > MAX_TERMS:
                raise FilterError(f'filter has too many terms (at most {MAX_TERMS})')
            if isinstance(n, ast.In) and len(n.sub_nodes) > MAX_IN_VALUES:
                raise FilterError(f'IN has too many values (at most {MAX_IN_VALUES})')


def _stack(pair):
    return np.column_stack(pair)


def _family(kind):
    return 'number' if kind in ('integer', 'number') else kind


def _describe(node):
    if isinstance(node, ast.Node):
        return type(node).__name__
    return json.dumps(node, default=str, ensure_ascii=False)[:80]
