"""Turn one downloaded resource into GeoDataFrames in EPSG:4326 (x = lon, y = lat).

GDAL (through pyogrio) parses every spatial format; this module decides what GDAL cannot know
from the bytes alone — the format behind a wrong CKAN label, the text encoding of a DBF without
.cpg, the CRS of a KSJ shapefile without .prj — and reports every row it refuses.
Tabular input (CSV, JSON records, XLSX sheets) is handled in geo.csvread.
"""
from __future__ import annotations

import io
import json
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable
import warnings
import zlib
import zipfile
from pathlib import Path, PurePosixPath

import geopandas as gpd
import pyogrio

from . import csvread, jsonread, xlsxread
from .gdal_safety import has_crs_link, network_off, strip_crs_links
from .redact import hide_paths
from .crs import assume_crs, crs_source_text, ksj_srs_from_xml
# Re-exported: callers of read_resource catch ReadError and read Layers from here.
from .layers import (Layer, Limits, ReadError, RowIssue, clean_columns,  # noqa: F401
                     finish_spatial, jsonify_objects)


_HEAD = 64 * 1024
_DECLARED = {  # CKAN resource formats / mimetypes → hint
    "csv": "csv", "tsv": "csv", "text/csv": "csv", "geojson": "geojson",
    "application/geo+json": "geojson", "json": "json", "application/json": "json",
    "shp": "shapefile-zip", "shapefile": "shapefile-zip", "esri shapefile": "shapefile-zip",
    "zip": "shapefile-zip", "application/zip": "shapefile-zip", "kml": "kml", "kmz": "kml",
    "application/vnd.google-earth.kml+xml": "kml", "gpkg": "gpkg", "geopackage": "gpkg",
    "xlsx": "xlsx", "excel": "xlsx",
}
_GEOJSON_TYPES = {"FeatureCollection", "Feature", "Point", "MultiPoint", "LineString",
                  "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
# Only collection/feature markers: NGSI entities nest {"type": "Point"} geometries too.
_GEOJSON_HEAD = re.compile(r'"type"\s*:\s*"(FeatureCollection|Feature)"|"features"\s*:\s*\[')
_MEMBER_EXT = {".geojson": "geojson", ".json": "json", ".kml": "kml", ".gpkg": "gpkg",
               ".csv": "csv"}


def detect_format(path, declared: str | None = None) -> str | None:
    """'csv' | 'geojson' | 'shapefile-zip' | 'zip' | 'kml' | 'gpkg' | 'xlsx' | 'json' | None.

    Content decides; `declared` (a CKAN format such as 'CSV', 'SHP', 'ZIP') only breaks ties,
    because portals label zips 'CSV' and GeoJSON 'JSON'. 'zip' = an archive without .shp
    whose members are other readable files (KSJ *_GEOJSON.zip)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    return _sniff(head, _hint(declared), path)


def read_resource(path, declared_format: str | None = None,
                  limits: Limits = Limits()) -> list[Layer]:
    """Read every layer of the resource. Layers whose rows were all rejected are kept (with
    their reasons) as long as another layer has rows; if none has, ReadError. GDAL reads
    with its network off (geo.gdal_safety); `limits` bound what one file may make us hold
    (a file past one is a ReadError, never a process out of memory)."""
    with network_off():
        return _read_resource(Path(path), declared_format, limits)


def _read_resource(path: Path, declared_format: str | None, limits: Limits) -> list[Layer]:
    global _LIMITS
    fmt = detect_format(path, declared_format)
    if fmt is None:
        raise ReadError(_unsupported(path, declared_format))
    _LIMITS = limits
    if zipfile.is_zipfile(path):
        check_zip_budget(path, limits)
    if fmt in ("shapefile-zip", "zip"):
        layers = _read_zip(path)
    elif fmt in ("csv", "json"):
        if path.stat().st_size > limits.max_table:
            raise ReadError(f"表が大きすぎて一度に読めません ({path.stat().st_size:,} バイト; "
                            f"上限 {limits.max_table:,} バイト)")
        layers = _read_text(fmt, path.read_bytes(), path.stem, str(path))
    elif fmt == "xlsx":
        layers = _read_xlsx(path)
    elif fmt == "kml" and zipfile.is_zipfile(path):                          # KMZ
        with zipfile.ZipFile(path) as zf:
            doc = next((m for m in _members(zf) if m.lower().endswith(".kml")), None)
        if doc is None:
            raise ReadError("KMZ の中に KML がありません")
        layers = _read_gdal(fmt, _vsizip(path, doc), path.stem, None)
    else:
        layers = _read_gdal(fmt, str(path), path.stem, lambda: open(path, "rb"))
    layers = [lay for lay in layers if lay.rows_in]          # empty KML folders, empty sheets
    if not any(len(lay.frame) for lay in layers):
        first = next((i for lay in layers for i in lay.rejected), None)
        if first is None:
            raise ReadError("データ行がありません")
        raise ReadError(f"使える行がありません。最初の問題 ({first.row} 行目): {first.reason}",
                        row=first.row)
    return layers


# The limits of the read under way (one harvest reads one file at a time), so that every
# reader below sees them without a parameter threaded through each.
_LIMITS = Limits()


# Bits 0 (encrypted), 5 (patched data) and 6 (strong encryption) of a member's flags.
_ZIP_ENCRYPTED = 0x1 | 0x20 | 0x40
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def check_zip_budget(path, limits: Limits) -> None:
    """Refuse a zip whose members claim more than `limits.unpacked` bytes, or one member that
    unpacks more than `limits.zip_ratio` times its packed size (a bomb: 1.5 MB → 1.5 GiB).
    What members really unpack to is counted again while they are read (_check_crc)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ReadError(f"zip として読めません (壊れているか途中で切れています): "
                        f"{hide_paths(str(e), path)}") from None
    total = sum(i.file_size for i in infos)
    if total > limits.unpacked:
        raise ReadError(f"zip を展開すると {total:,} バイトになり、上限 {limits.unpacked:,} "
                        f"バイトを超えます (zip 爆弾の可能性があります)")
    for i in infos:
        if i.file_size > 1024 ** 2 and i.file_size > limits.zip_ratio * max(i.compress_size, 1):
            raise ReadError(f"zip のメンバー {i.filename} の圧縮率が異常です ({i.compress_size:,} "
                            f"→ {i.file_size:,} バイト; zip 爆弾の可能性があります)")
        # What zipfile cannot open it says with NotImplementedError or RuntimeError, which
        # no reader should have to expect: one read error here, naming the member.
        if i.flag_bits & _ZIP_ENCRYPTED:
            raise ReadError(f"zip のメンバー {i.filename} は暗号化されていて読めません")
        if i.compress_type not in _ZIP_METHODS:
            raise ReadError(f"zip のメンバー {i.filename} の圧縮方式 ({i.compress_type}) には"
                            "対応していません")


@dataclass
class StreamPlan:
    """A resource to read in chunks (geo.stream) instead of whole."""
    fmt: str                 # geojson | gpkg | csv
    src: str | None          # what GDAL opens (geojson, gpkg)
    opener: Callable         # a fresh binary stream of the bytes
    name: str


def stream_plan(path, fmt: str | None, *, stream_bytes: int,
                limits: Limits = Limits()) -> StreamPlan | None:
    """How to read a resource too large to hold, or None to read it whole: a single-layer
    GeoJSON/GeoPackage above `stream_bytes`, a CSV or JSON table above `limits.table_bytes`,
    and a zip whose one readable member is such a GeoJSON, CSV or JSON table."""
    path = Path(path)
    size = path.stat().st_size
    if fmt in ("geojson", "gpkg") and size > stream_bytes:
        with network_off():
            if len(_list_layers(str(path))) != 1:
                return None
        return StreamPlan(fmt, str(path), lambda: open(path, "rb"), path.stem)
    if fmt == "csv" and size > limits.table_bytes:
        return StreamPlan("csv", None, lambda: open(path, "rb"), path.stem)
    if fmt == "json" and size > limits.table_bytes:
        return _json_plan(lambda: open(path, "rb"), str(path), path.stem,
                          size > stream_bytes)
    if fmt == "xlsx":
        check_zip_budget(path, limits)
        sheets = xlsx_parts(path, limits.max_table)
        if len(sheets) == 1 and sheets[0] > limits.table_bytes:
            return StreamPlan("xlsx", None, lambda: open(path, "rb"), path.stem)
        return None
    if fmt != "zip":
        return None
    check_zip_budget(path, limits)
    with zipfile.ZipFile(path) as zf:
        readable = [m for m in _members(zf) if PurePosixPath(m).suffix.lower() in _MEMBER_EXT]
        if len(readable) != 1:
            return None
        member = readable[0]
        info = zf.getinfo(member)
        try:
            with zf.open(member) as f:
                kind = _sniff(f.read(_HEAD), _MEMBER_EXT[PurePosixPath(member).suffix.lower()])
        except (zipfile.BadZipFile, zlib.error, EOFError):
            return None          # the whole read reports it
        name = PurePosixPath(_display(zf, member)).stem

    def opener():
        return _zip_member(path, member)

    if kind == "csv" and info.file_size > limits.table_bytes:
        return StreamPlan("csv", None, opener, name)
    if kind == "geojson" and info.file_size > min(stream_bytes, limits.max_table):
        return StreamPlan("geojson", _vsizip(path, member), opener, name)
    if kind == "json" and info.file_size > limits.table_bytes:
        return _json_plan(opener, _vsizip(path, member), name,
                          info.file_size > min(stream_bytes, limits.max_table))
    return None


def _json_plan(opener, src: str, name: str, large_geojson: bool) -> StreamPlan | None:
    """A JSON table in chunks of records; a GeoJSON whose head did not say so (its "type"
    after 64 KiB) goes to GDAL's stream when large, else is read whole."""
    prefix = jsonread.records_prefix(opener)
    if prefix is None:
        return StreamPlan("geojson", src, opener, name) if large_geojson else None
    return StreamPlan("json", None, opener, name)


@contextmanager
def _zip_member(path, member):
    with zipfile.ZipFile(path) as zf, zf.open(member) as f:
        yield f


# ---------------------------------------------------------------------------------------------
# format detection

def _hint(declared: str | None) -> str | None:
    return _DECLARED.get((declared or "").strip().lower().lstrip("."))


def _sniff(head: bytes, hint: str | None, path=None) -> str | None:
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(path, hint) if path is not None else None
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"            # GDAL's GPKG/SQLite drivers read both
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "replace")
    elif b"\x00" in head:
        return None              # binary: legacy .xls, PDF, images...
    else:
        text = head.decode("utf-8", "replace")
    text = text.lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        return "geojson" if hint == "geojson" or _GEOJSON_HEAD.search(text) else "json"
    if text.startswith("["):
        return "json"
    if text.startswith("<"):
        return "kml" if re.search(r"<kml[\s>]", text[:4096]) else None   # HTML error pages, GML
    first = text.split("\n", 1)[0]
    return "csv" if ("," in first or "\t" in first or hint == "csv") else None


def _zip_kind(path, hint):
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n.lower() for n in _members(zf)]
    except (zipfile.BadZipFile, OSError):
        return hint if hint in ("xlsx", "kml", "shapefile-zip") else "zip"   # reader reports it
    if "[content_types].xml" in names and any(n.startswith("xl/") for n in names):
        return "xlsx"
    if any(n.endswith(".shp") for n in names):
        return "shapefile-zip"
    exts = {PurePosixPath(n).suffix for n in names}
    if exts & {".kml"} and not exts & {".geojson", ".json", ".gpkg", ".csv"}:
        return "kml"             # KMZ
    return "zip" if exts & set(_MEMBER_EXT) else None


def _unsupported(path: Path, declared) -> str:
    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    if head[:1] == b"<" and b"html" in head.lower():
        return "HTML ページでした (データではありません)"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "旧 Excel (.xls) 形式には対応していません"
    return f"対応していない形式です (宣言された形式: {declared!r})"


def _members(zf: zipfile.ZipFile) -> list[str]:
    return [n for n in zf.namelist() if not n.endswith("/") and "__MACOSX/" not in n
            and not PurePosixPath(n).name.startswith("._")]


# ---------------------------------------------------------------------------------------------
# readers per format

def _read_text(fmt: str, data: bytes, name: str, gdal_src: str) -> list[Layer]:
    if fmt == "csv":
        return [csvread.read_csv_bytes(data, name, _LIMITS)]
    text, encoding = csvread.decode_text(data)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReadError(f"JSON として読めません: {e.msg} ({e.lineno} 行 {e.colno} 列)") from None
    if isinstance(obj, dict) and obj.get("type") in _GEOJSON_TYPES:
        return _read_gdal("geojson", gdal_src, name, lambda: io.BytesIO(data))
    return [csvread.read_json_records(obj, name, encoding, _LIMITS)]


def _read_xlsx(path: Path) -> list[Layer]:
    sheets = xlsx_parts(path, _LIMITS.max_table)
    if sum(sheets) > _LIMITS.max_table:
        raise ReadError(f"XLSX のシートが大きすぎて一度に読めません (展開後 {sum(sheets):,} バイト; "
                        f"上限 {_LIMITS.max_table:,} バイト; 大きな表は 1 シートで公開してください)")
    return xlsxread.read_xlsx(path, _LIMITS)


def xlsx_parts(path, max_table: int) -> list[int]:
    """The unpacked bytes of each sheet's XML. openpyxl holds the shared strings table whole
    whatever the path: past `max_table`, refused."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ReadError(f"XLSX として読めません: {hide_paths(str(e), path)}") from None
    sheets = [i.file_size for i in infos if i.filename.startswith("xl/worksheets/")
              and i.filename.endswith(".xml")]
    strings = sum(i.file_size for i in infos if i.filename == "xl/sharedStrings.xml")
    if strings > max_table:
        raise ReadError(f"XLSX の共有文字列表が大きすぎます (展開後 {strings:,} バイト; 上限 "
                        f"{max_table:,} バイト)")
    return sheets


def _read_gdal(fmt: str, src: str, stem: str, opener, *, encoding=None, crs_hint=None,
               fix_dbf=None) -> list[Layer]:
    """GeoJSON, KML, GPKG and one shapefile, all through pyogrio."""
    warns: list[str] = []
    kw = {}
    if fmt == "geojson":
        encoding = csvread.sniff_stream_encoding(opener)
        if encoding == "cp932":     # RFC 7946 says UTF-8; GDAL would read mojibake
            with opener() as f:
                src = f.read().decode("cp932").encode("utf-8")
            warns.append("GeoJSON が CP932 でした (RFC 7946 では UTF-8); 変換して読みました")
        if has_crs_link(opener if not isinstance(src, bytes)
                        else (lambda data=src: io.BytesIO(data))):
            if isinstance(src, bytes):
                data = src
            else:
                with opener() as f:
                    data = f.read()
            src, links = strip_crs_links(data)
            warns.append(f"GeoJSON の crs がリンク形式でした ({links} 件)。リンク先は取得せず無視し、"
                         "RFC 7946 の WGS 84 経緯度として読みました")
    elif fmt == "shapefile":
        # fid_as_index: the DBF decimals fix maps rows back to records by FID.
        kw = {"encoding": encoding, "fid_as_index": True}
    layers = []
    for index, (lname, gtype) in enumerate(_list_layers(src)):
        lwarns = list(warns)
        # Bytes get a new /vsimem/ name on every open: name the layer by position then.
        df = _gdal_read(src, lwarns, layer=index if isinstance(src, bytes) and fmt == "geojson"
                        else lname, **kw)
        name = stem if fmt in ("geojson", "shapefile") else lname
        if not isinstance(df, gpd.GeoDataFrame) or gtype is None:
            df.columns = clean_columns(df.columns)
            jsonify_objects(df)
            layers.append(Layer(name, df, False, None, None, len(df), [], lwarns))
            continue
        if fix_dbf is not None:
            try:
                fix_dbf(df, lwarns)
            except (IndexError, ValueError):   # GDAL saw other records than the DBF's header says
                lwarns.append("DBF のレコード数が宣言と合わないため、小数の補正をしませんでした")
        if fmt == "kml":
            df = _drop_libkml_defaults(df)
        if df.crs is not None:
            crs_source = crs_source_text(fmt, df.crs)
        else:
            try:
                df, crs_source, warning = assume_crs(df, crs_hint, fmt)
            except ValueError as e:
                raise ReadError(f"{name}: {e}") from None
            lwarns.append(warning)
        layers.append(finish_spatial(df, name, encoding=None if fmt in ("kml", "gpkg")
                                     else encoding, crs_source=crs_source, warnings_=lwarns))
    return layers


_LIBKML_DEFAULTS = {"id": None, "Name": None, "description": None, "timestamp": None,
                    "begin": None, "end": None, "altitudeMode": None, "tessellate": -1,
                    "extrude": 0, "visibility": -1, "drawOrder": None, "icon": None}


def _drop_libkml_defaults(df):
    """LIBKML adds a dozen KML housekeeping columns; keep only those that carry a value."""
    drop = [c for c, default in _LIBKML_DEFAULTS.items() if c in df.columns
            and (df[c].isna() | (df[c] == default if default is not None else False)).all()]
    return df.drop(columns=drop)


def _list_layers(src):
    try:
        with warnings.catch_warnings():
            # GDAL's warnings here name the file's server path; reading it says them again,
            # without the path (_gdal_read).
            warnings.simplefilter("ignore", RuntimeWarning)
            return [(n, g) for n, g in pyogrio.list_layers(src)]
    except Exception as e:   # DataSourceError, corrupt members, GDAL errors
        raise ReadError(f"読み込めません: {_gdal_text(e, src)}") from None


def _gdal_read(src, warns: list[str], **kw):
    try:
        info = pyogrio.read_info(src, layer=kw.get("layer"), encoding=kw.get("encoding"))
    except Exception as e:
        raise ReadError(f"読み込めません ({kw.get('layer')}): {_gdal_text(e, src)}") from None
    if len(info.get("fields", ())) > _LIMITS.columns:
        raise ReadError(f"列が多すぎます ({len(info['fields']):,} 列; 上限 {_LIMITS.columns:,} 列)")
    if (info.get("features") or 0) > _LIMITS.rows:
        raise ReadError(f"行が多すぎます ({info['features']:,} 行; 上限 {_LIMITS.rows:,} 行)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df = pyogrio.read_dataframe(src, **kw)
        except Exception as e:
            raise ReadError(f"読み込めません ({kw.get('layer')}): {_gdal_text(e, src)}") from None
    msgs = [_gdal_text(w.message, src) for w in caught
            if "parsed incompletely" not in str(w.message)]
    if msgs:
        warns.append(f"GDAL の警告 {len(msgs)} 件: " + "; ".join(dict.fromkeys(msgs[:3])))
    return df


def _gdal_text(message, src) -> str:
    """A GDAL message without the server path of the file it names."""
    return hide_paths(str(message), src if isinstance(src, str) else None)


# ---------------------------------------------------------------------------------------------
# zip archives: KSJ shapefiles, or GeoJSON/KML/GPKG/CSV members

def _read_zip(path: Path) -> list[Layer]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ReadError(f"zip として読めません (壊れているか途中で切れています): "
                        f"{hide_paths(str(e), path)}") from None
    with zf:
        members = _members(zf)
        shps = [m for m in members if m.lower().endswith(".shp")]
        if shps:
            return [lay for m in shps for lay in _read_zipped_shapefile(path, zf, m, members)]
        layers = []
        for m in members:
            ext = PurePosixPath(m).suffix.lower()
            if ext not in _MEMBER_EXT:
                continue
            name, src = PurePosixPath(_display(zf, m)).stem, _vsizip(path, m)
            try:
                _check_crc(zf, [m])
                fmt = _sniff(zf.open(m).read(_HEAD), _MEMBER_EXT[ext])
                # Only one readable member is read in chunks (stream_plan): a member of a
                # zip of several is held whole, so past max_table it is refused, whatever
                # its format (GDAL holds a GeoJSON/GPKG member whole too).
                if zf.getinfo(m).file_size > _LIMITS.max_table:
                    raise ReadError(f"zip のメンバー {_display(zf, m)} は大きすぎて一度に読めません "
                                    f"({zf.getinfo(m).file_size:,} バイト; 上限 "
                                    f"{_LIMITS.max_table:,} バイト)")
                if fmt in ("csv", "json"):
                    layers += _read_text(fmt, zf.read(m), name, src)
                elif fmt in ("geojson", "kml", "gpkg"):
                    layers += _read_gdal(fmt, src, name, lambda m=m: zf.open(m))
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise ReadError(f"zip のメンバー {m} が壊れています: {e}") from None
        if not layers:
            raise ReadError("zip の中に読めるファイルがありません")
        return layers


def _read_zipped_shapefile(path, zf, shp, members) -> list[Layer]:
    sib = {PurePosixPath(m).suffix.lower(): m for m in members
           if m[:-4].lower() == shp[:-4].lower() and len(m) == len(shp)}
    warns: list[str] = []
    try:
        _check_crc(zf, sib.values())
        dbf = csvread.Dbf(zf.read(sib[".dbf"])) if ".dbf" in sib else None
        cpg = zf.read(sib[".cpg"]).decode("ascii", "replace").strip() if ".cpg" in sib else None
        hint = None
        if ".prj" not in sib:   # the KSJ GML beside the shapefile names its datum
            xmls = [m for m in members if m.lower().endswith(".xml") and "ks-meta" not in m.lower()]
            found = (ksj_srs_from_xml(zf.open(m).read(_HEAD)) for m in xmls)
            hint = next(filter(None, found), None)
        src, enc = _vsizip(path, shp), None
        if dbf is not None:
            enc = dbf.encoding(cpg, warns)
            if dbf.names_cut(enc):
                # pyogrio cannot decode a field name cut mid-character: rebuild in memory.
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as out:
                    for ext, m in sib.items():
                        out.writestr("layer" + ext, dbf.with_clean_names(enc) if ext == ".dbf"
                                     else enc if ext == ".cpg" else zf.read(m))
                src = buf.getvalue()
    except (zipfile.BadZipFile, OSError, EOFError, struct.error, ValueError, IndexError,
            zlib.error) as e:
        # struct/ValueError/IndexError: a DBF or member header cut or overwritten (fuzzing)
        raise ReadError(f"zip のメンバーが壊れています ({shp}): {hide_paths(str(e), path)}") from None
    fix = (lambda df, w: dbf.fix_decimals(df, enc, w)) if dbf is not None else None
    layers = _read_gdal("shapefile", src, PurePosixPath(_display(zf, shp)).stem, None,
                        encoding=enc, crs_hint=hint, fix_dbf=fix)
    for lay in layers:
        lay.warnings[:0] = warns
    return layers


def _check_crc(zf: zipfile.ZipFile, members) -> None:
    """Read members through zipfile, which checks CRC-32: GDAL's /vsizip/ reads a damaged
    member without complaint and yields garbage features instead of an error. The bytes are
    counted too: a member header that lies about its size meets the unpacked budget here."""
    total = 0
    for m in members:
        with zf.open(m) as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
                if total > _LIMITS.unpacked:
                    raise ReadError(f"zip を展開すると上限 {_LIMITS.unpacked:,} バイトを超えます "
                                    f"(zip 爆弾の可能性があります)")


def _vsizip(path: Path, member: str) -> str:
    return f"/vsizip/{{{Path(path).resolve()}}}/{member}"   # {} = archive of any file name


def _display(zf, member: str) -> str:
    """Member name for humans: names without the zip UTF-8 flag are often CP932, not CP437."""
    info = zf.getinfo(member)
    if info.flag_bits & 0x800:
        return member
    try:
        return member.encode("cp437").decode("cp932")
    except UnicodeError:
        return member
