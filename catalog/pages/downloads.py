"""Downloads of the translated data (GeoJSON, CSV for Excel, GeoPackage) and the attribute
table preview, all read from the collection's published version: its GeoPackage, or in
PostgreSQL mode its PostGIS table (store.features_pg.VersionRows, one transaction per body).

GeoJSON and CSV are streamed in chunks of CHUNK features, so a 100,000-feature layer never
sits in memory as one document, all read through one SQLite connection (see _Rows), so a
republish mid-stream never cuts the body. CSV starts with a UTF-8 BOM: Excel in Japan opens BOM-less
UTF-8 as Shift_JIS and shows mojibake.

A file that cannot be read is the server's fault, never the user's: they get a polite page
(500) that names no path and quotes no exception, and the operator gets the traceback in the
log.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import mimetypes
import os
import re
import sqlite3
import tempfile
import threading
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pyogrio
import shapely
from flask import (Blueprint, Response, abort, current_app, render_template, request,
                   send_file, stream_with_context)
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wsgi import FileWrapper

from catalog import auth
from catalog.i18n import _
from ogcapi.gpkg_read import Layer, quote_ident, wkb
from store import features_pg
from store.db import Collection, Dataset, Resource

bp = Blueprint("downloads", __name__)
LOGGER = logging.getLogger(__name__)

CHUNK = 2000
FORMATS = {  # ext -> (media type, label)
    "geojson": ("application/geo+json", "GeoJSON"),
    "csv": ("text/csv; charset=utf-8", "CSV（Excel 対応・UTF-8 BOM 付き）"),
    "gpkg": ("application/geopackage+sqlite3", "GeoPackage"),
}
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')


def content_disposition(title: str, fallback: str, ext: str) -> str:
    """RFC 6266: an ASCII filename for old clients, filename* with the Japanese title."""
    name = (_UNSAFE.sub("_", title).strip() or fallback) + "." + ext
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", fallback) + "." + ext
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _collection(dataset_id: str, collection_id: str) -> tuple[Collection, Path | str]:
    store = current_app.extensions["renkei_store"]
    for attempt in (1, 2):
        with store.session() as s:
            col = s.get(Collection, collection_id)
            ds = s.get(Dataset, dataset_id)
            if (col is None or not auth.may_read(ds) or col.dataset_id != dataset_id
                    or col.status != "active" or ds.status != "active"):
                abort(404)
            s.expunge(col)
        if features_pg.is_postgis(col.path):
            return col, col.path    # a PostGIS table: read in one transaction below
        path = store.data_dir / col.path
        if path.exists():
            return col, path
        # else a republish may have removed this version since the lookup: look again once
    abort(404)


class _Rows:
    """The rows of one published layer, read in chunks of CHUNK through ONE SQLite connection
    opened before the status line and held until the body is sent.

    A republish may delete this version mid-stream (store.versions.remove_stale_versions);
    on POSIX the open connection keeps reading the unlinked file, so the client gets the whole
    old body. Reopening by path per chunk (as pyogrio's skip_features would) cut it instead.
    Versions are written once, fsynced and renamed, in rollback-journal mode, never modified:
    `immutable=1` (no locks, no -wal/-shm lookups) is exact for them.
    """

    def __init__(self, path: Path, layer: str):
        self.con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=False)
        try:
            self.layer = Layer(self.con, layer)
            lyr = self.layer
            self.names = list(lyr.fields)
            cols = ", ".join([*map(quote_ident, self.names), quote_ident(lyr.geom)])
            self.cursor = self.con.execute(
                f"SELECT {cols} FROM {quote_ident(lyr.table)} ORDER BY {quote_ident(lyr.fid)}")
            self.first = self.cursor.fetchmany(CHUNK)  # an unreadable file fails here, early
        except Exception:
            self.con.close()
            raise

    def chunks(self):
        """Lists of (properties dict, shapely geometry or None), CHUNK rows at a time."""
        try:
            rows, booleans = self.first, self.layer.booleans
            while rows:
                geoms = shapely.from_wkb([wkb(r[-1]) for r in rows])
                out = []
                for r, g in zip(rows, geoms):
                    props = dict(zip(self.names, r[:-1]))
                    for b in booleans:
                        if props[b] is not None:
                            props[b] = bool(props[b])
                    out.append((props, g))
                yield out
                rows = self.cursor.fetchmany(CHUNK)
        finally:
            self.con.close()


def _geojson(rows: _Rows, title: str):
    yield ('{"type": "FeatureCollection", "name": ' + json.dumps(title, ensure_ascii=False)
           + ', "features": [\n')
    sep = ""
    for chunk in rows.chunks():
        # One write per chunk, not per feature: a slow client costs one syscall per chunk.
        parts = []
        for props, g in chunk:
            geometry = None if g is None or g.is_empty else g.__geo_interface__
            parts.append(sep + json.dumps({"type": "Feature", "properties": props,
                                           "geometry": geometry}, ensure_ascii=False))
            sep = ",\n"
        yield "".join(parts)
    yield "\n]}\n"


def _csv(rows: _Rows):
    yield "\ufeff"
    chunks = rows.chunks()
    first = next(chunks, [])
    columns = rows.names
    # The columns depend on the first chunk: points as 経度/緯度, anything else as WKT.
    as_points = bool(first) and all(g is not None and g.geom_type == "Point" for _, g in first)
    taken = set(columns)
    coords = (["経度", "緯度"] if not {"経度", "緯度"} & taken
              else ["経度_WGS84", "緯度_WGS84"]) if as_points else ["WKT"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns + coords)
    for chunk in itertools.chain([first], chunks):
        for props, g in chunk:
            cells = ["" if v is None else v for v in props.values()]
            if as_points:
                cells += [g.x, g.y] if g is not None and g.geom_type == "Point" else ["", ""]
            else:
                cells.append(g.wkt if g is not None else "")
            writer.writerow(cells)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def _logged(body, what: str):
    """The stream, with a failure past the first chunk logged for the operator.

    The status line is sent by then, so the error is raised on: the server then drops the
    connection and the client knows the file is incomplete, rather than keeping half of it.
    """
    try:
        yield from body
    except Exception:
        LOGGER.exception("%s broke off while streaming", what)
        raise


def _unreadable_page(title: str):
    """The page for data we hold but cannot read: polite, no path, no exception text."""
    return render_template(
        "error.html", status=500, heading=_("データを読み込めませんでした"),
        message=_("申し訳ありません。「%(title)s」のデータを読み込めなかったため、"
                  "ご用意できませんでした。この問題は運用担当者に記録されています。"
                  "時間をおいてもう一度お試しください。", title=title)), 500


@bp.route("/datasets/<dataset_id>/resources/<resource_id>/download/<filename>")
def original(dataset_id: str, resource_id: str, filename: str):
    """The file a member uploaded, as they sent it (CKAN's resource download)."""
    from harvesters.upload import original_file
    store = current_app.extensions["renkei_store"]
    with store.session() as s:
        ds = s.get(Dataset, dataset_id)
        res = s.get(Resource, resource_id)
        if not auth.may_read(ds) or ds.status != "active" or res is None \
                or res.dataset_id != dataset_id:
            abort(404)
    _whole_for_several_ranges()
    if store.postgresql:
        return _stored_original(store, resource_id)
    path = original_file(store, resource_id)
    if path is None:
        abort(404)
    return send_file(path, as_attachment=True, download_name=path.name, conditional=True)


def _whole_for_several_ranges() -> None:
    """A Range of several ranges gets the whole file (200), as RFC 9110 lets a server answer:
    Werkzeug's conditional responses would refuse it with 416, and our stored originals answer
    single ranges only, as Werkzeug does."""
    if "," in request.headers.get("Range", ""):
        request.environ.pop("HTTP_RANGE", None)


def _stored_original(store, resource_id: str):
    """PostgreSQL mode: the file from the database, from one snapshot. Werkzeug's conditional
    response (as send_file makes for the embedded mode's file) decides 200, 206 with
    Content-Range, 304 or 416; the body reads only the chunks of the range it sends."""
    from harvesters.upload import stored_original
    from store.originals import CHUNK
    blob = stored_original(store, resource_id)
    if blob is None:
        abort(404)
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", unicodedata.normalize(
        "NFKD", blob.filename).encode("ascii", "ignore").decode("ascii")).strip("_") or "download"
    # A FileWrapper is seekable, so a range starts with a seek rather than a read from byte 0.
    resp = current_app.response_class(
        FileWrapper(blob, CHUNK), direct_passthrough=True,
        mimetype=mimetypes.guess_type(blob.filename)[0] or "application/octet-stream")
    resp.call_on_close(blob.close)   # a client gone before the body: the snapshot ends
    resp.headers["Content-Disposition"] = (f'attachment; filename="{ascii_name}"; '
                                           f"filename*=UTF-8''{quote(blob.filename, safe='')}")
    resp.content_length = blob.size
    resp.last_modified = blob.stored_at
    resp.cache_control.no_cache = True
    # Changes when the file is replaced, so a resumed download (If-Range) never splices two.
    resp.set_etag(hashlib.sha256(f"{resource_id}\0{blob.size}\0{blob.stored_at.isoformat()}"
                                 .encode()).hexdigest()[:32])
    try:
        return resp.make_conditional(request, accept_ranges=True, complete_length=blob.size)
    except RequestedRangeNotSatisfiable:
        blob.close()
        raise


@bp.route("/datasets/<dataset_id>/collections/<collection_id>.<any(geojson, csv, gpkg):ext>")
def download(dataset_id: str, collection_id: str, ext: str):
    for attempt in (1, 2):
        col, path = _collection(dataset_id, collection_id)
        what = f"download {ext} of collection {col.id} ({path})"
        try:
            resp = _opened(col, path, ext, what)
            break
        except Exception:  # any failure to read our own file is ours, not the user's
            if attempt == 1 and not features_pg.is_postgis(str(path)) and not path.exists():
                # A republish removed this version between the lookup and the open (readers
                # that have opened a version keep it): serve the version that replaced it.
                continue
            LOGGER.exception("%s failed", what)
            return _unreadable_page(col.title)
    resp.headers["Content-Disposition"] = content_disposition(col.title, col.id, ext)
    return resp


def _opened(col: Collection, path: Path | str, ext: str, what: str):
    """The download's response, its file opened (and the first chunk read) before the status
    line: a file that cannot be read at all still gets a proper error page."""
    mime = FORMATS[ext][0]
    if features_pg.is_postgis(str(path)):
        return _postgis_download(str(path), col, ext)
    if ext == "gpkg":
        # Sent as it is, so check first that it opens: a broken copy helps nobody.
        pyogrio.read_info(path, layer=col.layer)
        return send_file(path, mimetype=mime, conditional=True, etag=True)
    rows = _Rows(path, col.layer)
    if ext == "geojson":
        return Response(stream_with_context(_logged(_geojson(rows, col.title), what)),
                        mimetype=mime)
    return Response(stream_with_context(_logged(_csv(rows), what)), content_type=mime)


def _postgis_download(path: str, col: Collection, ext: str):
    """A download of a version stored in PostGIS, read inside one transaction (see
    store.features_pg.VersionRows): the first chunk is read before the status line."""
    engine = current_app.extensions["renkei_store"].engine
    mime = FORMATS[ext][0]
    what = f"download {ext} of collection {col.id} ({path})"
    rows = features_pg.VersionRows(engine, path, CHUNK)
    if ext == "geojson":
        return Response(stream_with_context(_logged(_geojson(rows, col.title), what)),
                        mimetype=mime)
    if ext == "csv":
        return Response(stream_with_context(_logged(_csv(rows), what)), content_type=mime)
    # A GeoPackage is a file, not a stream: made once per version and process (versions never
    # change) in the temporary folder, since a web server in this mode has no data dir.
    folder = Path(tempfile.gettempdir()) / "renkei-downloads"
    folder.mkdir(exist_ok=True)
    target = folder / f"{features_pg.table_of(path)}.gpkg"
    if target.exists():
        rows.close()
    else:
        partial = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}"
        try:
            features_pg.write_geopackage(rows, partial, layer="features")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return send_file(target, mimetype=mime, conditional=True, etag=True)


def table_page(path: Path | str, layer: str, page: int, rows: int, total: int) -> dict:
    """One page of the attribute table (no geometry), read with skip/max from the GeoPackage."""
    last = max(1, -(-int(total or 0) // rows))
    page = min(page, last)
    try:
        if features_pg.is_postgis(str(path)):
            columns, values = features_pg.attribute_page(
                current_app.extensions["renkei_store"].engine, str(path), (page - 1) * rows,
                rows)
            frame = pd.DataFrame(values, columns=columns)
        else:
            frame = pyogrio.read_dataframe(path, layer=layer, read_geometry=False,
                                           skip_features=(page - 1) * rows, max_features=rows)
    except Exception:  # an unreadable file must not break the dataset page
        LOGGER.exception("attribute table of %s (layer %s) could not be read", path, layer)
        return {"columns": [], "rows": [], "page": 1, "last": 1, "total": 0,
                "error": _("申し訳ありません。属性データを読み込めなかったため、表を表示できません。")}
    values = [["" if v is None or v != v else v for v in r] for r in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": values, "page": page,
            "last": last, "total": int(total or 0), "first_row": (page - 1) * rows + 1}
