"""JSON tables, XLSX sheets and zip members read as streams, under the budgets (issue 11,
item 4: CSV, XLSX, zip members and JSON were read whole)."""
from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from geo.layers import Limits, ReadError
from geo.readers import detect_format, read_resource, stream_plan
from geo.stream import ChunkedTranslation
from store.db import Dataset, Store
from tests.test_security_harvest import errors_of, files_config, harvest, zip_of


def records(n: int, start: int = 0) -> list[dict]:
    # NGSI-like flattened entities: an id, a type, a name and two coordinates.
    return [{"id": f"urn:ngsi-ld:Shelter:{i}", "type": "Shelter", "名称": f"避難所{i}",
             "緯度": 34.6 + (i % 1000) / 10000, "経度": 134.7 + (i // 1000) / 1000,
             "収容人数": i % 500} for i in range(start, start + n)]


def json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def xlsx_bytes(rows: int, *, sheets: int = 1) -> bytes:
    from openpyxl import Workbook
    wb = Workbook(write_only=True)
    for s in range(sheets):
        ws = wb.create_sheet(f"Sheet{s + 1}")
        ws.append(["名称", "緯度", "経度", "コード"])
        for i in range(rows):
            ws.append([f"地点{i}", 34.6 + (i % 1000) / 10000, 134.7 + (i // 1000) / 1000,
                       f"{i:010d}"])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def streamed_frames(path: Path, limits: Limits, chunk: int = 500):
    fmt = detect_format(path)
    plan = stream_plan(path, fmt, stream_bytes=64 * 1024 ** 2, limits=limits)
    assert plan is not None, f"{fmt} is not read in chunks"
    chunks = ChunkedTranslation(plan.src, fmt=plan.fmt, opener=plan.opener, name=plan.name,
                                limits=limits, chunk=chunk)
    return plan, chunks


# -- JSON tables --------------------------------------------------------------------------------

def test_a_large_json_table_is_read_in_chunks_and_published_the_same(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    (root / "array.json").write_bytes(json_bytes(records(3000)))
    (root / "wrapped.json").write_bytes(json_bytes({"count": 3000, "data": records(3000)}))
    zip_of(root / "zipped.zip", {"entities.json": json_bytes(records(3000))})
    sjis = records(3000)
    sjis[1]["備考"] = "2 件目からの列"      # a key that the first record lacks
    (root / "sjis.json").write_bytes(json.dumps(sjis, ensure_ascii=False).encode("cp932"))
    (root / "table.json").write_bytes(json_bytes([{"市区町村": "加古川市", "人口": 258000}] * 3000))
    config = files_config(root / "sources.yaml", [
        ("array", "array.json"), ("wrapped", "wrapped.json"), ("zipped", "zipped.zip"),
        ("sjis", "sjis.json"), ("table", "table.json")])
    result = harvest(data_dir, config, RENKEI_TABLE_STREAM_BYTES="10000",
                     RENKEI_STREAM_CHUNK="700")
    assert result.returncode == 0, result.stderr
    with Store(data_dir).session() as s:
        for name in ("array", "wrapped", "zipped", "sjis"):
            ds = s.get(Dataset, f"city-files--{name}")
            assert ds.collections[0].feature_count == 3000, name
            assert ds.resources[0].quality[0].get("streamed") is True, name
        assert s.get(Dataset, "city-files--sjis").resources[0].quality[0]["encoding"] == "cp932"
        table = s.get(Dataset, "city-files--table").resources[0]
        assert table.state == "table" and table.preview["total"] == 3000
        assert table.preview["rows"][0] == ["加古川市", "258000"]


def test_json_row_budget_ends_the_read_before_the_rest_is_parsed(tmp_path):
    # 500 records and then a cut: the budget of 100 rows is met long before the cut.
    path = tmp_path / "cut.json"
    path.write_bytes(json_bytes(records(500))[:-2000])
    limits = Limits(table_bytes=1000, rows=100)
    with pytest.raises(ReadError, match="行が多すぎます"):
        _, chunks = streamed_frames(path, limits)
        list(chunks)
    # Under the budget the same cut is a JSON error, never a traceback.
    with pytest.raises(ReadError, match="JSON として読めません"):
        _, chunks = streamed_frames(path, Limits(table_bytes=1000))
        list(chunks)


def test_a_json_table_is_never_held_whole(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(json_bytes(records(30_000)))
    size = path.stat().st_size
    assert size > 3_000_000
    plan, chunks = streamed_frames(path, Limits(table_bytes=1000), chunk=2000)
    tracemalloc.start()
    try:
        rows = sum(len(f) for f in chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 30_000
    # json.loads alone of these records holds several times the file.
    assert peak < size, f"peak {peak:,} bytes for a {size:,}-byte file"


def test_json_that_is_no_table_is_one_error(tmp_path):
    for doc, expected in [({"a": [1], "b": [2]}, "構造に対応していません"),
                          ([{"a": 1}, 5], "オブジェクトの配列ではありません"),
                          ('{"a": [', "JSON として読めません")]:
        path = tmp_path / "odd.json"
        path.write_bytes(doc.encode() if isinstance(doc, str) else json_bytes(doc))
        path.write_bytes(path.read_bytes() + b" " * 2000)
        with pytest.raises(ReadError, match=expected):
            _, chunks = streamed_frames(path, Limits(table_bytes=1000))
            list(chunks)


# -- zip members --------------------------------------------------------------------------------

def test_a_member_too_large_to_hold_in_a_zip_of_several_is_refused(data_dir, tmp_path):
    """Only a zip's one readable member is read in chunks; in a zip of several, a GeoJSON
    member was read whole by GDAL, whatever its size."""
    root = tmp_path / "conf"
    root.mkdir()
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": i},
         "geometry": {"type": "Point", "coordinates": [134.8, 34.7]}} for i in range(3000)]}
    zip_of(root / "two.zip", {"a.geojson": json_bytes(doc),
                              "b.csv": "名称,緯度,経度\n加古川駅,34.7565,134.8414\n".encode()})
    result = harvest(data_dir, files_config(root / "sources.yaml", [("two", "two.zip")]),
                     RENKEI_MAX_TABLE_BYTES="100000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (error,) = errors_of(data_dir)
    assert "大きすぎて一度に読めません" in error.message and "100,000" in error.message


# -- XLSX ---------------------------------------------------------------------------------------

def test_xlsx_rows_are_text_as_written(tmp_path):
    path = tmp_path / "points.xlsx"
    path.write_bytes(xlsx_bytes(50))
    (lay,) = read_resource(path)
    assert lay.spatial and len(lay.frame) == 50
    assert lay.frame["コード"].iloc[3] == "0000000003" and lay.frame["名称"].iloc[3] == "地点3"
    assert lay.frame.geometry.iloc[1].y == pytest.approx(34.6001)


def test_xlsx_row_budget_ends_the_read_before_the_rest_is_parsed(tmp_path):
    """The sheet's XML is cut after its 300th row: a reader that stops at the budget of 100
    never meets the cut (GDAL's XLSX driver parsed the whole sheet first)."""
    data = xlsx_bytes(1000)
    src = zipfile.ZipFile(io.BytesIO(data))
    # The <dimension> Excel writes before the rows (openpyxl's writer leaves it out).
    sheet = src.read("xl/worksheets/sheet1.xml").replace(
        b"<sheetData>", b'<dimension ref="A1:D1001"/><sheetData>')
    cut = sheet.index(b'<row r="300"')
    out = tmp_path / "cut.xlsx"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in src.infolist():
            zf.writestr(info.filename, sheet[:cut] + b"<row r=" if info.filename.endswith(
                "sheet1.xml") else src.read(info.filename))
    with pytest.raises(ReadError, match="行が多すぎます"):
        read_resource(out, limits=Limits(rows=100))
    with pytest.raises(ReadError, match="壊れています"):
        read_resource(out)


def test_a_large_xlsx_sheet_is_read_in_chunks_and_published_the_same(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    (root / "points.xlsx").write_bytes(xlsx_bytes(3000))
    (root / "two.xlsx").write_bytes(xlsx_bytes(3000, sheets=2))
    result = harvest(data_dir, files_config(root / "sources.yaml", [
        ("points", "points.xlsx"), ("two", "two.xlsx")]),
        RENKEI_TABLE_STREAM_BYTES="10000", RENKEI_STREAM_CHUNK="700",
        RENKEI_MAX_TABLE_BYTES="200000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    with Store(data_dir).session() as s:
        ds = s.get(Dataset, "city-files--points")
        assert ds.collections[0].feature_count == 3000
        assert ds.resources[0].quality[0].get("streamed") is True
    # Two sheets are read whole, so past max_table they are refused.
    (error,) = errors_of(data_dir)
    assert error.dataset == "two のデータ" and "大きすぎて一度に読めません" in error.message


def test_an_xlsx_without_its_name_is_read(tmp_path):
    """Downloads are cached under names of their own: openpyxl refuses a path not named
    *.xlsx, so the reader hands it a stream (found by bench/fuzz_readers.py)."""
    path = tmp_path / "download"
    path.write_bytes(xlsx_bytes(5))
    (lay,) = read_resource(path)
    assert len(lay.frame) == 5
    path.write_bytes(xlsx_bytes(5)[:3000])      # cut: one error, no traceback
    with pytest.raises(ReadError):
        read_resource(path, "XLSX")


@pytest.mark.parametrize("part", ["[Content_Types].xml", "xl/workbook.xml",
                                  "xl/worksheets/sheet1.xml"])
def test_an_xlsx_with_a_blank_part_is_one_read_error(tmp_path, part):
    """An empty XML part makes openpyxl's parser raise its own syntax error (lxml's
    XMLSyntaxError when lxml is installed, not ElementTree's ParseError): one read error, no
    traceback (found by bench/fuzz_readers.py)."""
    src = zipfile.ZipFile(io.BytesIO(xlsx_bytes(5)))
    path = tmp_path / "blank.xlsx"
    with zipfile.ZipFile(path, "w") as zf:
        for info in src.infolist():
            zf.writestr(info.filename, b"" if info.filename == part else src.read(info.filename))
    with pytest.raises(ReadError):
        read_resource(path, "XLSX")
