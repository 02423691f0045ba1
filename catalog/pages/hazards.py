"""「この場所の災害リスクと避難先」: the /hazards page and the /api/hazards lookup.

The page works without JavaScript (a plain form with latitude and longitude, answered on the
server); with it, a click on the map or the browser's location fills the same form. The lookup
itself is ogcapi.hazards, over the collections of the current OGC API version.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request

from catalog import auth
from catalog.i18n import _
from catalog.pages.common import basemap
from ogcapi import hazards
from ogcapi.tiles import MVT

bp = Blueprint("hazards", __name__)
# Flood depth ranks in the national legend colours (国土交通省「水害ハザードマップ作成の手引き」),
# sediment-disaster zones in the customary yellow (警戒区域) and red (特別警戒区域).
FLOOD_LEGEND = [(1, "0.5m未満", "#F7F5A9"), (2, "0.5m以上3m未満", "#FFD8C0"),
                (3, "3m以上5m未満", "#FFB7B7"), (4, "5m以上10m未満", "#FF9191"),
                (5, "10m以上20m未満", "#F285C9"), (6, "20m以上", "#DC7ADC")]
LANDSLIDE_LEGEND = [("警戒区域", "#FFE14D"), ("特別警戒区域", "#E8383D")]
TSUNAMI_LEGEND = [(0.3, "0.3m未満", "#F7F5A9"), (1, "0.3m以上1m未満", "#FFD8C0"),
                  (2, "1m以上2m未満", "#FFB7B7"), (5, "2m以上5m未満", "#FF9191"),
                  (None, "5m以上", "#F285C9")]


def published_layers() -> list[hazards.Layer]:
    """The collections the lookup may read: those of the current OGC API version that the
    caller may read (store.access labels; one place for page and API)."""
    ogc = current_app.extensions["renkei_ogcapi"]
    return [hazards.Layer(c["id"], c["title"], c.get("theme"), c["path"], c["layer"],
                          c.get("dataset"), c.get("bbox"))
            for c in ogc.collections(auth.readable())]


def _lookup(lat: float, lon: float) -> dict:
    ogc = current_app.extensions["renkei_ogcapi"]
    return hazards.lookup(ogc.files, published_layers(), lat, lon,
                          engine=ogc.database.engine if ogc.database else None)


@bp.route("/api/hazards")
def api_hazards():
    try:
        lat, lon = hazards.parse_point(request.args.get("lat"), request.args.get("lon"))
    except hazards.BadPoint as err:
        return jsonify({"error": str(err)}), 400
    return jsonify(_lookup(lat, lon))


@bp.route("/hazards")
def page():
    lat_text, lon_text = request.args.get("lat"), request.args.get("lon")
    result, error, point = None, None, None
    if lat_text is not None or lon_text is not None:
        try:
            point = hazards.parse_point(lat_text, lon_text)
            result = _lookup(*point)
        except hazards.BadPoint:
            error = _("緯度と経度を数字（度）で入力してください。例：緯度 34.756、経度 134.842")
    published = published_layers()
    # What the map draws: every hazard layer, then the shelters on top.
    layers = [{"id": lyr.id, "theme": lyr.theme, "bounds": lyr.bbox} for lyr in published
              if lyr.theme in hazards.HAZARD_THEMES and lyr.id != f"theme-{lyr.theme}"]
    layers += [{"id": lyr.id, "theme": "shelter", "bounds": lyr.bbox} for lyr in published
               if lyr.id == hazards.SHELTER_LAYER]
    status = 400 if error else 200
    return render_template(
        "hazards.html", result=result, error=error, point=point, lat=lat_text or "",
        lon=lon_text or "", layers=layers, basemap=basemap(), mvt=MVT,
        flood_legend=FLOOD_LEGEND, landslide_legend=LANDSLIDE_LEGEND,
        tsunami_legend=TSUNAMI_LEGEND, hazard_names=hazards.HAZARD_NAMES,
        themes=[lyr["theme"] for lyr in layers]), status
