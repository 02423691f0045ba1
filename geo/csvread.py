"""Tables and text encodings: CSV, JSON record arrays and spreadsheet sheets → Layer, and
the byte-level look at a shapefile's DBF that GDAL needs help with.

Points come from latitude/longitude columns found by name, never by position, because the
two layouts of 自治体標準オープンデータセット put 緯度/経度 at different positions and many cities
publish their own column orders.
"""
from __future__ import annotations

import codecs
import io
import re
import struct
import unicodedata
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd

from .crs import JAPAN_LAT, JAPAN_LON
from .layers import Layer, Limits, ReadError, RowIssue, clean_columns, jsonify_objects

# (latitude, longitude) name pairs after NFKC + casefold, in order of preference: a 街区レベル
# 位置参照情報 file carries both 緯度/経度 and X座標/Y座標 (plane-rectangular metres), and the
# degrees must win.
COORD_PAIRS = [("緯度", "経度"), ("lat", "lon"), ("lat", "lng"), ("latitude", "longitude"),
               ("y", "x"), ("y座標", "x座標"), ("北緯", "東経")]
_COORD_NAMES = {n for pair in COORD_PAIRS for n in pair}
_TRAILING_NOTE = re.compile(r"\s*[(\[【][^)\]】]*[)\]】]$")   # 緯度(世界測地系), lat [deg]
_BAD_LINE = re.compile(r"line (\d+): (.*)")


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode by strict trial, never by name: BOM → UTF-8 → CP932; else ReadError at the byte."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        attempts = ["utf-16"]
    elif data.startswith(codecs.BOM_UTF8):
        attempts = ["utf-8-sig"]
    else:
        attempts = ["utf-8", "cp932"]
    failures = []
    for enc in attempts:
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError as e:
            failures.append((e.start, enc))
    # The codec that got furthest is most likely the real one; its failure point is the bad byte.
    pos, enc = max(failures)
    line = data.count(b"\n", 0, pos) + 1
    raise ReadError(
        f"文字コードを判定できません ({'/'.join(attempts)} のいずれでもありません): "
        f"{pos} バイト目 ({line} 行目) の {data[pos:pos + 2]!r} が {enc} として不正です",
        row=line - 1 if line > 1 else None)


def sniff_stream_encoding(open_stream, chunk: int = 1 << 20) -> str:
    """decode_text's rule, incrementally, for files GDAL reads itself (GeoJSON can be 1 GB).

    open_stream: a callable returning a fresh binary stream (file or zip member)."""
    for enc in ("utf-8-sig", "cp932"):
        dec = codecs.getincrementaldecoder(enc)("strict")
        with open_stream() as f:
            data = f.read(chunk)
            bom = data.startswith(codecs.BOM_UTF8)
            try:
                while data:
                    dec.decode(data)
                    data = f.read(chunk)
                dec.decode(b"", final=True)
            except UnicodeDecodeError:
                continue
        return ("utf-8-sig" if bom else "utf-8") if enc == "utf-8-sig" else enc
    raise ReadError("文字コードを判定できません (UTF-8 でも CP932 でもありません)")


def _check_columns(first_line: str, sep: str, limits: Limits) -> None:
    if first_line.count(sep) + 1 > limits.columns:
        raise ReadError(f"列が多すぎます ({first_line.count(sep) + 1:,} 列; 上限 {limits.columns:,} 列)")


def read_csv_bytes(data: bytes, name: str, limits: Limits = Limits()) -> Layer:
    if len(data) > limits.max_table:
        raise ReadError(f"表が大きすぎて一度に読めません ({len(data):,} バイト; 上限 "
                        f"{limits.max_table:,} バイト)")
    text, encoding = decode_text(data)
    first = text.split("\n", 1)[0]
    sep = "\t" if first.count("\t") > first.count(",") else ","
    _check_columns(first, sep, limits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            # header=None: pandas would rename empty/duplicate headers ("Unnamed: 3", "名称.1");
            # we do that ourselves so every reader names columns the same way.
            # keep_default_na=False: "NA"/"None" are real values (names, codes); only "" is missing.
            raw = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str,
                              keep_default_na=False, na_values=[""], on_bad_lines="warn",
                              skip_blank_lines=False)
        except pd.errors.EmptyDataError:
            raise ReadError("CSV が空です") from None
        except pd.errors.ParserError as e:
            m = re.search(r"(?:row|line) (\d+)", str(e))
            raise ReadError(f"CSV を解析できません: {e}",
                            row=int(m.group(1)) - 1 if m else None) from None
    issues, skipped = [], []
    for w in caught:
        for line, msg in _BAD_LINE.findall(str(w.message)):
            skipped.append(int(line))
            issues.append(RowIssue(int(line) - 1, f"列数が見出しと一致しません ({msg.strip()})"))
    # Record numbers of the rows pandas kept: every record after the header except skipped ones.
    records = np.setdiff1d(np.arange(2, len(raw) + len(skipped) + 1), skipped)
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = clean_columns(raw.iloc[0].tolist())
    blank = frame.isna().all(axis=1).to_numpy()      # blank lines are not rows
    frame = frame[~blank].reset_index(drop=True)
    if len(frame) > limits.rows:
        raise ReadError(f"行が多すぎます ({len(frame):,} 行; 上限 {limits.rows:,} 行)")
    return table_layer(frame, name, encoding, rows=records[~blank] - 1, issues=issues,
                       warnings_=["区切り文字はタブです"] if sep == "\t" else [])


def iter_csv_layers(open_stream, name: str, chunk: int, limits: Limits = Limits()):
    """A CSV too large to hold, as (Layer, offset) per `chunk` rows (rows numbered in the
    chunk from 1; the offset makes them the file's data row numbers):
    the encoding is decided by decode_text's rule over the whole stream first, then pandas
    parses it chunk by chunk. Peak memory is one chunk. A chunk whose rows are all refused
    gives its first refusal as an issue, not the end of the file."""
    encoding = sniff_stream_encoding(open_stream)
    with open_stream() as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        first = text.readline()
        if not first.strip():
            raise ReadError("CSV が空です")
        sep = "\t" if first.count("\t") > first.count(",") else ","
        _check_columns(first, sep, limits)
        header = pd.read_csv(io.StringIO(first), sep=sep, header=None, dtype=str,
                             keep_default_na=False).iloc[0].tolist()
        columns = clean_columns(header)
        reader = pd.read_csv(text, sep=sep, header=None, names=list(range(len(columns))),
                             dtype=str, keep_default_na=False, na_values=[""],
                             on_bad_lines="warn", chunksize=chunk, index_col=False)
        done = 0
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    frame = next(reader)
                except StopIteration:
                    return
                except pd.errors.ParserError as e:
                    raise ReadError(f"CSV を解析できません: {e}") from None
            # pandas numbers lines in the stream after the header; bad lines are not rows.
            issues = [RowIssue(max(1, int(line) - done), f"列数が見出しと一致しません ({msg.strip()})")
                      for w in caught for line, msg in _BAD_LINE.findall(str(w.message))]
            frame.columns = columns
            frame = frame[~frame.isna().all(axis=1)].reset_index(drop=True)
            offset = done
            done += len(frame)
            if done > limits.rows:
                raise ReadError(f"行が多すぎます ({limits.rows:,} 行を超えました)")
            if frame.empty:
                continue
            try:
                layer = table_layer(frame, name, encoding, issues=issues,
                                    warnings_=["区切り文字はタブです"] if sep == "\t" else [])
            except ReadError as e:   # every row of this chunk refused
                layer = Layer(name, frame.head(0), True, encoding, None, len(frame) + len(issues),
                              issues + [RowIssue(e.row or 1, e.message)], [])
            del frame     # not held while the caller works on the layer (one chunk, not two)
            yield layer, offset
            del layer


def read_json_records(obj, name: str, encoding: str, limits: Limits = Limits()) -> Layer:
    """A JSON array of flat objects (the usual CSV→JSON conversion, e.g. 加古川市 shelters)."""
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ReadError("JSON の構造に対応していません (レコードの配列または GeoJSON が必要です)")
        obj = lists[0]
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise ReadError("JSON の構造に対応していません (オブジェクトの配列ではありません)")
    if len(obj) > limits.rows:
        raise ReadError(f"行が多すぎます ({len(obj):,} 行; 上限 {limits.rows:,} 行)")
    keys = set()
    for record in obj:
        keys.update(record)
        if len(keys) > limits.columns:
            raise ReadError(f"列が多すぎます (上限 {limits.columns:,} 列)")
    frame = pd.DataFrame.from_records(obj)
    frame.columns = clean_columns(frame.columns)
    return table_layer(frame, name, encoding, kind="JSON")


def coordinate_columns(columns) -> tuple[str, str] | None:
    keys: dict[str, str] = {}
    for c in columns:
        k = unicodedata.normalize("NFKC", str(c)).strip().casefold()
        keys.setdefault(_TRAILING_NOTE.sub("", k), c)
    for lat, lon in COORD_PAIRS:
        if lat in keys and lon in keys:
            return keys[lat], keys[lon]
    return None


def _numbers(s: pd.Series):
    text = s.astype("string").str.normalize("NFKC").str.strip()   # full-width digits occur
    blank = (text.isna() | (text == "")).to_numpy(dtype=bool)
    num = pd.to_numeric(text.mask(blank), errors="coerce")
    num = num.to_numpy(dtype="float64", na_value=np.nan)
    return s.to_numpy(dtype=object), blank, num


def table_layer(frame: pd.DataFrame, name: str, encoding: str | None, kind: str = "CSV",
                rows=None, issues: list[RowIssue] | None = None,
                warnings_: list[str] | None = None) -> Layer:
    """A point Layer when the table has coordinate columns, else a table Layer."""
    issues, warns = list(issues or []), list(warnings_ or [])
    rows = np.arange(1, len(frame) + 1) if rows is None else np.asarray(rows)
    rows_in = len(frame) + len(issues)
    jsonify_objects(frame)
    pair = coordinate_columns(frame.columns)
    if pair is None:
        lonely = [c for c in frame.columns if unicodedata.normalize("NFKC", str(c)).strip()
                  .casefold() in _COORD_NAMES]
        if lonely:
            warns.append(f"座標列 {lonely} の対になる列がないため、表として読みました")
        if frame.empty:
            raise ReadError("データ行がありません")
        return Layer(name, frame, False, encoding, None, rows_in, issues, warns)

    lat_c, lon_c = pair
    lat_raw, lat_blank, lat = _numbers(frame[lat_c])
    lon_raw, lon_blank, lon = _numbers(frame[lon_c])
    numeric = np.isfinite(lat) & np.isfinite(lon)
    if numeric.any() and _looks_swapped(lat[numeric], lon[numeric]):
        # Rows already written lat/lon the right way round stay as they are.
        with np.errstate(invalid="ignore"):
            right = ((lat >= JAPAN_LAT[0]) & (lat <= JAPAN_LAT[1])
                     & (lon >= JAPAN_LON[0]) & (lon <= JAPAN_LON[1]))
        lat, lon = np.where(right, lat, lon), np.where(right, lon, lat)
        warns.append(f"{lat_c} と {lon_c} の値が入れ替わっていたため、入れ替えて読みました")
    blank = lat_blank | lon_blank
    nonnum = ~blank & ~numeric
    with np.errstate(invalid="ignore"):
        zero = numeric & (lat == 0) & (lon == 0)
        out = numeric & ~zero & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
    bad = blank | nonnum | zero | out
    label = f"{lat_c}/{lon_c}"
    for i in np.flatnonzero(bad):
        vals = f"{lat_c}={lat_raw[i]!r}, {lon_c}={lon_raw[i]!r}"
        if blank[i]:
            reason = f"{label} が空です"
        elif nonnum[i]:
            reason = f"{label} が数値ではありません: {vals}"
        elif zero[i]:
            reason = f"{label} が 0,0 です (座標未設定とみなしました)"
        else:
            reason = f"{label} が緯度経度の範囲外です (平面直角座標など投影座標の可能性): {vals}"
        issues.append(RowIssue(int(rows[i]), reason))
    issues.sort(key=lambda r: r.row)
    if bad.all():
        if not issues:
            raise ReadError("データ行がありません")
        first = issues[0]
        raise ReadError(f"座標が使える行がありません。{first.row} 行目: {first.reason}",
                        row=first.row)
    good = ~bad
    with np.errstate(invalid="ignore"):
        outside = good & ((lat < JAPAN_LAT[0]) | (lat > JAPAN_LAT[1])
                          | (lon < JAPAN_LON[0]) | (lon > JAPAN_LON[1]))
    if outside.any():
        example = int(rows[outside][0])
        warns.append(f"{int(outside.sum())} 行の座標が日本の範囲外です (例: {example} 行目)")
    points = gpd.points_from_xy(lon[good], lat[good], crs="EPSG:4326")
    gdf = gpd.GeoDataFrame(frame[good].reset_index(drop=True), geometry=points)
    return Layer(name, gdf, True, encoding, f"EPSG:4326 ({kind} {lat_c}/{lon_c} columns)",
                 rows_in, issues, warns)



def table_chunks(rows, chunk: int, frame_of, name: str, encoding: str | None, kind: str):
    """(Layer, offset) per `chunk` rows of a table read row by row (JSON records, XLSX rows),
    each batch made a frame by `frame_of` and a table layer; a chunk whose every row is
    refused is one issue of that chunk, not the end of the read."""
    def layer_of(batch):
        frame = frame_of(batch)
        try:
            return table_layer(frame, name, encoding, kind=kind)
        except ReadError as e:
            return Layer(name, frame.head(0), True, encoding, None, len(frame),
                         [RowIssue(e.row or 1, e.message)], [])

    done, batch = 0, []
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            layer = layer_of(batch)
            batch = []
            yield layer, done
            done += layer.rows_in
            del layer   # one chunk in memory at a time
    if batch:
        yield layer_of(batch), done

def _looks_swapped(lat: np.ndarray, lon: np.ndarray) -> bool:
    """Columns exchanged by the publisher: 'latitudes' that are Japanese longitudes."""
    mlat, mlon = np.median(lat), np.median(lon)
    return (JAPAN_LON[0] <= mlat <= JAPAN_LON[1]) and (JAPAN_LAT[0] <= mlon <= JAPAN_LAT[1])


# ---------------------------------------------------------------------------------------------
# DBF (the table of a shapefile): GDAL reads it, but cannot know its encoding without a .cpg

_CPG_ALIASES = {"932": "cp932", "ansi 932": "cp932", "sjis": "cp932", "shift_jis": "cp932",
                "shift-jis": "cp932", "cp932": "cp932", "65001": "utf-8", "utf8": "utf-8",
                "utf-8": "utf-8"}


class Dbf:
    """The raw bytes of a dBase III table, for the two things GDAL gets wrong in KSJ data:
    the text encoding (no .cpg; GDAL falls back to the LDID byte or ISO-8859-1) and numeric
    fields declared with 0 decimals that hold '4.500' (GDAL makes them integers: 4)."""

    def __init__(self, data: bytes):
        if len(data) < 32:
            raise ReadError("DBF が途中で切れています (ヘッダーがありません)")
        nrec, hlen, rlen = struct.unpack("<IHH", data[4:12])
        if hlen > len(data) or rlen < 1:
            raise ReadError("DBF のヘッダーが壊れています")
        self.data, self.fields, pos, off = data, [], 32, 1   # record byte 0 = deletion flag
        while pos + 32 <= min(hlen, len(data)) and data[pos] != 0x0D:
            d = data[pos:pos + 32]
            typ, width, dec = chr(d[11]), d[16], d[17]
            if typ == "C":                  # Clipper/FoxPro: long text widths use both bytes
                width, dec = d[16] + 256 * d[17], 0
            if width < 1 or off + width > rlen:
                raise ReadError("DBF の列定義がレコード長と合いません (壊れています)")
            self.fields.append((d[:11].split(b"\0", 1)[0], typ, off, width, dec, pos))
            off, pos = off + width, pos + 32
        n = min(nrec, max(0, (len(data) - hlen) // max(rlen, 1)))
        self.recs = np.frombuffer(data, np.uint8, count=n * rlen, offset=hlen).reshape(n, rlen)

    def _column(self, off, width) -> np.ndarray:
        return self.recs[:, off:off + width].copy().view(f"S{width}").ravel()

    def names(self, enc: str) -> list[str]:
        # Writers (GDAL 3.12 included) cut long Japanese names at 10 bytes, mid-character; a
        # non-final incremental decode keeps the whole characters and drops the cut one.
        return [codecs.getincrementaldecoder(enc)().decode(f[0]) for f in self.fields]

    def names_cut(self, enc: str) -> bool:
        return any(_decodes(f[0], enc) is False for f in self.fields)

    def encoding(self, cpg: str | None, warns: list[str]) -> str:
        """Strict trial on the DBF's own text: the .cpg if it fits, else UTF-8, else CP932."""
        tried = []
        if cpg:
            tried = [_CPG_ALIASES[cpg.lower()]] if cpg.lower() in _CPG_ALIASES else []
            if not tried:
                warns.append(f".cpg の文字コード {cpg!r} を解釈できないため、内容から判定します")
        texts = [np.unique(self._column(o, w)) for _, t, o, w, _, _ in self.fields if t == "C"]
        for enc in tried + ["utf-8", "cp932"]:
            if (all(_decodes(f[0], enc) is not None for f in self.fields)
                    and all(_decodes(b"\n".join(v), enc) or all(
                        _decodes(x.rstrip(b" "), enc) is not None for x in v) for v in texts)):
                return enc
            if enc in tried:
                warns.append(f".cpg は {cpg!r} ですが DBF の内容と一致しないため、内容から判定します")
        raise ReadError("DBF の文字コードを判定できません (UTF-8 でも CP932 でもありません)")

    def with_clean_names(self, enc: str) -> bytes:
        data = bytearray(self.data)
        for (_, _, _, _, _, pos), name in zip(self.fields, self.names(enc)):
            data[pos:pos + 11] = name.encode(enc)[:10].ljust(11, b"\0")
        return bytes(data)

    def fix_decimals(self, df, enc: str, warns: list[str]) -> None:
        """Replace GDAL's truncated integers by the DBF's own text; df.index must be the FID."""
        fixed = []
        for name, (_, typ, off, width, dec, _) in zip(self.names(enc), self.fields):
            if typ not in "NF" or dec or name not in df.columns:
                continue
            vals = np.char.decode(self._column(off, width), "latin-1")
            if (np.char.find(vals, ".") >= 0).any():
                nums = pd.to_numeric(pd.Series(np.char.strip(vals)), errors="coerce").to_numpy()
                df[name] = nums[df.index.to_numpy()]
                fixed.append(name)
        if fixed:
            warns.append(f"DBF の数値列 {fixed} は小数桁 0 と宣言されながら小数を含むため、"
                         "GDAL の整数化を避けて DBF の値をそのまま読みました")


def _decodes(raw: bytes, enc: str) -> bool | None:
    """True: decodes strictly. False: only a character cut at the end. None: not this encoding."""
    try:
        raw.decode(enc)
        return True
    except UnicodeDecodeError:
        try:
            codecs.getincrementaldecoder(enc)().decode(raw)
            return False
        except UnicodeDecodeError:
            return None
