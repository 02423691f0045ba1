"""Downloads of the translated data (GeoJSON, CSV for Excel, GeoPackage) and the attribute
table preview, all read from the collection's published GeoPackage.

GeoJSON and CSV are streamed in chunks of CHUNK features, so a 100,000-feature layer never
sits in memory as one document. CSV starts with a UTF-8 BOM: Excel in Japan opens BOM-less
UTF-8 as Shift_JIS and shows mojibake.

A file that cannot be read is the server's fault, never the user's: they get a polite page
(500) that names no path and quotes no exception, and the operator gets the traceback in the
log.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote

import pyogrio
from flask import (Blueprint, Response, abort, current_app, render_template, send_file,
                   stream_with_context)

from catalog.i18n import _
from store.db import Collection, Dataset

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


def _collection(dataset_id: str, collection_id: str) -> tuple[Collection, Path]:
    store = current_app.extensions["renkei_store"]
    with store.session() as s:
        col = s.get(Collection, collection_id)
        ds = s.get(Dataset, dataset_id)
        if (col is None or ds is None or col.dataset_id != dataset_id or col.status != "active"
                or ds.status != "active"):
            abort(404)
        path = store.data_dir / col.path
        if not path.exists():
            abort(404)
        s.expunge(col)
        return col, path


def _chunks(path: Path, layer: str):
    start = 0
    while True:
        frame = pyogrio.read_dataframe(path, layer=layer, skip_features=start, max_features=CHUNK)
        if len(frame) == 0:
            return
        yield frame
        if len(frame) < CHUNK:
            return
        start += CHUNK


def _geojson(frames, title: str):
    yield ('{"type": "FeatureCollection", "name": ' + json.dumps(title, ensure_ascii=False)
           + ', "features": [\n')
    first = True
    for frame in frames:
        for feature in json.loads(frame.to_json(na="null", drop_id=True))["features"]:
            yield ("" if first else ",\n") + json.dumps(feature, ensure_ascii=False)
            first = False
    yield "\n]}\n"


def _csv(frames):
    yield "\ufeff"
    header_done = False
    for frame in frames:
        geom = frame.geometry
        table = frame.drop(columns=[geom.name])
        points = bool(len(frame)) and (geom.geom_type == "Point").all()
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        if not header_done:
            # The columns depend on the first chunk: points as 経度/緯度, anything else as WKT.
            as_points = points
            taken = set(map(str, table.columns))
            coords = (["経度", "緯度"] if not {"経度", "緯度"} & taken
                      else ["経度_WGS84", "緯度_WGS84"]) if as_points else ["WKT"]
            writer.writerow(list(table.columns) + coords)
            header_done = True
        for i, row in enumerate(table.itertuples(index=False)):
            g = geom.iloc[i]
            cells = ["" if v is None or v != v else v for v in row]
            if as_points:
                cells += [g.x, g.y] if g is not None and g.geom_type == "Point" else ["", ""]
            else:
                cells.append(g.wkt if g is not None else "")
            writer.writerow(cells)
        yield buf.getvalue()


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


@bp.route("/datasets/<dataset_id>/collections/<collection_id>.<any(geojson, csv, gpkg):ext>")
def download(dataset_id: str, collection_id: str, ext: str):
    col, path = _collection(dataset_id, collection_id)
    mime = FORMATS[ext][0]
    disposition = content_disposition(col.title, col.id, ext)
    what = f"download {ext} of collection {col.id} ({path})"
    try:
        if ext == "gpkg":
            # Sent as it is, so check first that it opens: a broken copy helps nobody.
            pyogrio.read_info(path, layer=col.layer)
            resp = send_file(path, mimetype=mime, conditional=True, etag=True)
        else:
            # The first chunk is read before the status line: a file that cannot be read at
            # all still gets a proper error page.
            chunks = _chunks(path, col.layer)
            first = next(chunks, None)
            frames = itertools.chain([] if first is None else [first], chunks)
            if ext == "geojson":
                resp = Response(stream_with_context(_logged(_geojson(frames, col.title), what)),
                                mimetype=mime)
            else:
                resp = Response(stream_with_context(_logged(_csv(frames), what)),
                                content_type=mime)
    except Exception:  # any failure to read our own file is ours, not the user's
        LOGGER.exception("%s failed", what)
        return _unreadable_page(col.title)
    resp.headers["Content-Disposition"] = disposition
    return resp


def table_page(path: Path, layer: str, page: int, rows: int, total: int) -> dict:
    """One page of the attribute table (no geometry), read with skip/max from the GeoPackage."""
    last = max(1, -(-int(total or 0) // rows))
    page = min(page, last)
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, read_geometry=False,
                                       skip_features=(page - 1) * rows, max_features=rows)
    except Exception:  # an unreadable file must not break the dataset page
        LOGGER.exception("attribute table of %s (layer %s) could not be read", path, layer)
        return {"columns": [], "rows": [], "page": 1, "last": 1, "total": 0,
                "error": _("申し訳ありません。属性データを読み込めなかったため、表を表示できません。")}
    values = [["" if v is None or v != v else v for v in r] for r in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": values, "page": page,
            "last": last, "total": int(total or 0), "first_row": (page - 1) * rows + 1}
