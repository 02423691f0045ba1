"""Security headers on every response of the app: catalogue pages, APIs and the OGC API.

The Content-Security-Policy allows script only from our own origin (no inline script: the
pages keep theirs in catalog/static and ogcapi/assets, and data in JSON data blocks), so a
harvested value that slips into markup still runs nothing. The map libraries are vendored, so
the only outside origin is the base map's tile server: images for Leaflet, and fetch for
MapLibre GL JS (the hazard maps), which loads raster tiles with fetch; its worker is a static
file of ours (the CSP build), so no blob: worker is needed.
"""
from __future__ import annotations

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


def init_app(app: Flask) -> None:
    @app.after_request
    def _headers(resp):
        h = resp.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        if "Content-Security-Policy" not in h:
            from catalog.pages.common import basemap
            catalogue_gsi = basemap() == "gsi"
            origins = [GSI_TILES] if request.path.startswith("/ogcapi") or catalogue_gsi else []
            h["Content-Security-Policy"] = content_security_policy(
                origins, [GSI_TILES] if catalogue_gsi else [])
        return resp
