"""Security headers on every response of the app: catalogue pages, APIs and the OGC API.

The Content-Security-Policy allows script only from our own origin (no inline script: the
pages keep theirs in catalog/static and ogcapi/assets, and data in JSON data blocks), so a
harvested value that slips into markup still runs nothing. The map libraries are vendored, so
the only outside origin is the base map's tile server: images for Leaflet, and fetch for
MapLibre GL JS (the hazard maps), which loads raster tiles with fetch; its worker is a static
file of ours (the CSP build), so no blob: worker is needed.
"""
from __future__ import annotations

import functools

from flask import Flask, request

# 地理院タイル: the OGC API pages' base map (ogcapi.api.MAP), and the catalogue map's when
# RENKEI_BASEMAP=gsi.
GSI_TILES = "https://cyberjapandata.gsi.go.jp"


def content_security_policy(image_origins: list[str], connect_origins: list[str] = ()) -> str:
    img = " ".join(["'self'", "data:", *image_origins])
    connect = " ".join(["'self'", *connect_origins])
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        # Leaflet and pygeoapi's templates set inline styles; styles cannot run script.
        "style-src 'self' 'unsafe-inline'",
        f"img-src {img}",
        f"connect-src {connect}",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


@functools.lru_cache(maxsize=8)
def _policy(ogcapi: bool, catalogue_gsi: bool) -> str:
    # Two inputs, four texts: built once each rather than on every response (issue 17).
    return content_security_policy([GSI_TILES] if ogcapi or catalogue_gsi else [],
                                   [GSI_TILES] if catalogue_gsi else [])


def init_app(app: Flask) -> None:
    from catalog.pages.common import basemap

    @app.after_request
    def _headers(resp):
        h = resp.headers
        # One pass over the headers a view set (each lookup of werkzeug's Headers is a pass).
        present = {k.lower() for k, _ in h}
        if "x-content-type-options" not in present:
            h.add("X-Content-Type-Options", "nosniff")
        if "referrer-policy" not in present:
            h.add("Referrer-Policy", "strict-origin-when-cross-origin")
        if "content-security-policy" not in present:
            h.add("Content-Security-Policy", _policy(request.path.startswith("/ogcapi"),
                                                     basemap() == "gsi"))
        return resp
