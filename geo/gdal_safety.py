"""GDAL never goes on the network for what a publisher wrote.

GDAL's GeoJSON driver resolves a `crs` member of type "link"/"url" (collection- or
geometry-level, GeoJSON 2008) by downloading its `href` while it opens the file, and no
configuration option turns that off (OGRSpatialReference::importFromUrl calls CPLHTTPFetch
unconditionally). So the links are taken out before GDAL sees the bytes (`strip_crs_links`;
the CRS then comes from the usual default, and the reader says so), and `network_off()`
points GDAL's HTTP at a proxy that cannot be reached, as a second line for anything else
that would fetch (it does not hold where NO_PROXY names the target, hence the first line).
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager

_CRS_OBJECT = re.compile(rb'"crs"\s*:\s*\{(?:[^{}]|\{[^{}]*\})*\}')
_LINK_TYPE = re.compile(rb'"type"\s*:\s*"\s*(?:link|url)\s*"', re.IGNORECASE)
_CRS_KEY = re.compile(rb'"crs"\s*:')
_OVERLAP = 64 * 1024

OFFLINE = {
    "GDAL_HTTP_PROXY": "http://0.0.0.0:0",   # nothing listens there: every fetch fails at once
    "GDAL_HTTP_TIMEOUT": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "1",
    "GDAL_HTTP_MAX_RETRY": "0",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".renkei-never",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}
_lock = threading.RLock()


@contextmanager
def network_off():
    import pyogrio
    with _lock:
        before = {k: pyogrio.get_gdal_config_option(k) for k in OFFLINE}
        pyogrio.set_gdal_config_options(OFFLINE)
        try:
            yield
        finally:
            pyogrio.set_gdal_config_options(
                {k: (None if v is None else str(v)) for k, v in before.items()})


def has_crs_link(open_stream, chunk: int = 1 << 20) -> bool:
    """Whether a GeoJSON stream has a `crs` object of type link/url, read in chunks."""
    tail = b""
    with open_stream() as f:
        while True:
            data = f.read(chunk)
            if not data:
                return False
            window = tail + data
            if _CRS_KEY.search(window) and any(
                    _LINK_TYPE.search(m.group()) for m in _CRS_OBJECT.finditer(window)):
                return True
            tail = window[-_OVERLAP:]


def strip_crs_links(data: bytes) -> tuple[bytes, int]:
    """(data with every linked `crs` member set to null, how many there were)."""
    count = 0

    def unlink(m: re.Match) -> bytes:
        nonlocal count
        if _LINK_TYPE.search(m.group()):
            count += 1
            return b'"crs": null'
        return m.group()

    return _CRS_OBJECT.sub(unlink, data), count
