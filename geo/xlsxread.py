"""Spreadsheets (XLSX) read row by row with openpyxl's read-only mode, which parses a sheet's
XML as a stream: GDAL's XLSX driver builds every sheet whole in memory before the first row is
handed over, so a sheet of a few MB packed (up to the zip budget unpacked) cost its whole
size many times over, and the row budget was checked only after the sheet was parsed.

Every cell is text, as the GDAL reading was (FIELD_TYPES=STRING): codes such as 0000000001
stay as written and translation decides the types. The first row is the header.
"""
from __future__ import annotations

import datetime as dt
import zipfile
from typing import Iterator

import pandas as pd

from .csvread import table_chunks, table_layer
from .layers import Layer, Limits, ReadError, clean_columns

# What openpyxl raises on a damaged workbook (missing parts, bad XML, bad values). Bad XML is
# a SyntaxError whichever parser openpyxl found: ElementTree's ParseError or, with lxml
# installed, lxml's XMLSyntaxError (the reader fuzz test met the latter).
_BROKEN = (zipfile.BadZipFile, KeyError, ValueError, TypeError, IndexError, AttributeError,
           SyntaxError, EOFError, OSError)


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    return str(v)


def _open(f):
    """The workbook in the binary stream `f`: a stream, not a path, because openpyxl refuses
    a path not named *.xlsx and downloaded files in the cache may have no such name."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException
    try:
        # data_only: the values cached by the writer, never formulas.
        return load_workbook(f, read_only=True, data_only=True)
    except (*_BROKEN, InvalidFileException) as e:
        raise ReadError(f"XLSX として読めません: {str(e)[:200]}") from None


def _sheet_rows(ws, limits: Limits) -> Iterator[list | tuple]:
    """The header (clean column names) first, then each non-blank row as a list of text
    cells; the row and column budgets end the reading as soon as they are passed."""
    rows = ws.iter_rows(values_only=True)
    try:
        header = next(rows, None)
        if header is None:
            return
        header = list(header)
        while header and header[-1] is None:
            header.pop()
        if len(header) > limits.columns:
            raise ReadError(f"列が多すぎます ({len(header):,} 列; 上限 {limits.columns:,} 列)")
        width = len(header)
        if not width:
            return
        yield tuple(clean_columns(_text(v) for v in header))
        n = 0
        for row in rows:
            n += 1
            if n > limits.rows:
                raise ReadError(f"行が多すぎます ({limits.rows:,} 行を超えました)")
            cells = [_text(v) for v in row[:width]]
            if any(c is not None and c != "" for c in cells):
                cells += [None] * (width - len(cells))
                yield cells
    except _BROKEN as e:
        raise ReadError(f"XLSX のシート {ws.title} が壊れています: {str(e)[:200]}") from None


def read_xlsx(path, limits: Limits = Limits()) -> list[Layer]:
    """Every sheet with rows, each held whole (geo.readers refuses a sheet above max_table)."""
    with open(path, "rb") as f:
        return _read_sheets(_open(f), limits)


def _read_sheets(wb, limits: Limits) -> list[Layer]:
    try:
        layers = []
        for ws in wb.worksheets:
            rows = _sheet_rows(ws, limits)
            header = next(rows, None)
            if header is None:
                continue
            frame = pd.DataFrame(list(rows), columns=list(header), dtype=object)
            if len(frame):
                layers.append(table_layer(frame, ws.title, None, kind="XLSX"))
        return layers
    finally:
        wb.close()


def iter_xlsx_layers(open_stream, name: str, chunk: int, limits: Limits = Limits()):
    """(Layer, offset) per `chunk` rows of a one-sheet workbook, like
    geo.csvread.iter_csv_layers."""
    with open_stream() as f:
        wb = _open(f)
        try:
            ws = wb.worksheets[0]
            rows = _sheet_rows(ws, limits)
            header = next(rows, None)
            if header is None:
                raise ReadError("データ行がありません")
            yield from table_chunks(
                rows, chunk, lambda batch: pd.DataFrame(batch, columns=list(header), dtype=object),
                ws.title, None, "XLSX")
        finally:
            wb.close()
