"""Downloads of the translated data (GeoJSON, CSV for Excel, GeoPackage) and the attribute
table preview, all read from the collection's published GeoPackage.

GeoJSON and CSV are streamed in chunks of CHUNK features, so a 100,000-feature layer never
sits in memory as one document. CSV starts with a UTF-8 BOM: Excel in Japan opens BOM-less
UTF-8 as Shift_JIS and shows mojibake.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from urllib.parse import quote

import pyogrio
from flask import Blueprint, Response, abort, current_app, send_file, stream_with_context

from store.db import Collection, Dataset

bp = Blueprint("downloads", __name__)

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


def _geojson(path: Path, layer: str, title: str):
    yield ('{"type": "FeatureCollection", "name": ' + json.dumps(title, ensure_ascii=False)
           + ', "features": [\n')
    first = True
    for frame in _chunks(path, layer):
        for feature in json.loads(frame.to_json(na="null", drop_id=True))["features"]:
            yield ("" if first else ",\n") + json.dumps(feature, ensure_ascii=False)
            first = False
    yield "\n]}\n"


def _csv(path: Path, layer: str):
    yield "\ufeff"
    header_done = False
    for frame in _chunks(path, layer):
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


@bp.route("/datasets/<dataset_id>/collections/<collection_id>.<any(geojson, csv, gpkg):ext>")
def download(dataset_id: str, collection_id: str, ext: str):
    col, path = _collection(dataset_id, collection_id)
    mime = FORMATS[ext][0]
    disposition = content_disposition(col.title, col.id, ext)
    if ext == "gpkg":
        resp = send_file(path, mimetype=mime, conditional=True, etag=True)
    elif ext == "geojson":
        resp = Response(stream_with_context(_geojson(path, col.layer, col.title)), mimetype=mime)
    else:
        resp = Response(stream_with_context(_csv(path, col.layer)), content_type=mime)
    resp.headers["Content-Disposition"] = disposition
    return resp


def table_page(path: Path, layer: str, page: int, rows: int, total: int) -> dict:
    """One page of the attribute table (no geometry), read with skip/max from the GeoPackage."""
    last = max(1, -(-int(total or 0) // rows))
    page = min(page, last)
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, read_geometry=False,
                                       skip_features=(page - 1) * rows, max_features=rows)
    except Exception as exc:  # noqa: BLE001 - a missing file must not break the page
        return {"columns": [], "rows": [], "page": 1, "last": 1, "total": 0, "error": str(exc)}
    values = [["" if v is None or v != v else v for v in r] for r in frame.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": values, "page": page,
            "last": last, "total": int(total or 0), "first_row": (page - 1) * rows + 1}
