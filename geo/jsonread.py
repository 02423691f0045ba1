"""JSON tables too large to hold (NGSI dumps, a city's "JSON" resource of records), read as a
stream of records with ijson instead of json.loads: a 64 MB array of records is ~1 GB of
Python objects once loaded whole.

The records are an array at the top, or the one array under a key of a top-level object (the
rule of geo.csvread.read_json_records). Two passes over the stream: a survey (where the
records are, how many, the union of their keys, with the row and column budgets enforced as
it goes), then the records in chunks of one schema, so that every chunk has the same columns.
Peak memory is one chunk.
"""
from __future__ import annotations

import codecs

import ijson
import pandas as pd

from .csvread import sniff_stream_encoding, table_chunks
from .layers import Limits, ReadError, clean_columns

_GEOJSON_TYPES = {"FeatureCollection", "Feature"}


class _Utf8:
    """A binary stream of UTF-8 over a stream in another encoding (ijson parses UTF-8)."""

    def __init__(self, raw, encoding: str):
        self._dec = codecs.getincrementaldecoder(encoding)("strict")
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if n == 0:                # ijson's look at the stream's type
            return b""
        data = self._raw.read(n if n > 0 else 1 << 16)
        return self._dec.decode(data, final=not data).encode("utf-8")


def _utf8(raw, encoding: str):
    return raw if encoding == "utf-8" else _Utf8(raw, encoding)


def _syntax(e: Exception) -> ReadError:
    return ReadError(f"JSON として読めません: {str(e)[:200]}")


def records_prefix(open_stream, encoding: str | None = None) -> str | None:
    """The ijson prefix of the records ('item', or '<key>.item'), or None when the document
    is a GeoJSON object (read by GDAL instead). ReadError when it is neither."""
    encoding = encoding or sniff_stream_encoding(open_stream)
    lists: list[str] = []
    key = None
    with open_stream() as raw:
        try:
            events = ijson.parse(_utf8(raw, encoding))
            for prefix, event, value in events:
                if prefix == "" and event == "start_array":
                    return "item"
                if prefix == "" and event == "start_map":
                    continue
                if prefix == "" and event == "map_key":
                    key = value
                    continue
                if prefix == "" and event in ("end_map", "end_array"):
                    break
                if key is not None and prefix == key:
                    if key == "type" and event == "string" and value in _GEOJSON_TYPES:
                        return None
                    if event == "start_array":
                        lists.append(key)
                    key = None
                if prefix == "" or len(lists) > 1:
                    break
        except ijson.JSONError as e:
            raise _syntax(e) from None
    if len(lists) != 1:
        raise ReadError("JSON の構造に対応していません (レコードの配列または GeoJSON が必要です)")
    if "." in lists[0]:      # ijson prefixes are dotted paths
        raise ReadError(f"JSON の構造に対応していません (レコードの配列のキー {lists[0]!r} に "
                        "'.' が含まれています)")
    return f"{lists[0]}.item"


def _records(open_stream, encoding: str, prefix: str):
    with open_stream() as raw:
        try:
            # use_float: numbers as floats, as json.loads gives them (not Decimal).
            yield from ijson.items(_utf8(raw, encoding), prefix, use_float=True)
        except ijson.JSONError as e:
            raise _syntax(e) from None


def survey(open_stream, encoding: str, prefix: str, limits: Limits) -> tuple[list[str], int]:
    """(the keys of the records in order of first appearance, the number of records); the row
    and column budgets end the survey as soon as they are passed."""
    keys: dict[str, None] = {}
    rows = 0
    for record in _records(open_stream, encoding, prefix):
        rows += 1
        if not isinstance(record, dict):
            raise ReadError("JSON の構造に対応していません (オブジェクトの配列ではありません)",
                            row=rows)
        if rows > limits.rows:
            raise ReadError(f"行が多すぎます ({limits.rows:,} 行を超えました)")
        keys.update(dict.fromkeys(record))
        if len(keys) > limits.columns:
            raise ReadError(f"列が多すぎます (上限 {limits.columns:,} 列)")
    if not rows:
        raise ReadError("データ行がありません")
    return list(keys), rows


def iter_json_layers(open_stream, name: str, chunk: int, limits: Limits = Limits(),
                     prefix: str | None = None):
    """(Layer, offset) per `chunk` records, like geo.csvread.iter_csv_layers."""
    encoding = sniff_stream_encoding(open_stream)
    prefix = prefix or records_prefix(open_stream, encoding)
    if prefix is None:
        raise ReadError("GeoJSON はレコードの表としては読めません")
    keys, _ = survey(open_stream, encoding, prefix, limits)
    columns = clean_columns(keys)

    def frame_of(records):
        frame = pd.DataFrame.from_records(records, columns=keys)
        frame.columns = columns
        return frame

    yield from table_chunks(_records(open_stream, encoding, prefix), chunk, frame_of, name,
                            encoding, "JSON")

