"""The dataset page: metadata, licence and attribution, resources, map and table previews of
the translated data, the quality report, machine links and schema.org JSON-LD.

Harvested text is untrusted: descriptions are rendered as Markdown with raw HTML disabled
(markdown-it escapes it; its link validator drops javascript:/data: URLs), everything else is
autoescaped, and harvested URLs become links only when they are http(s).
"""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, url_for
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy.orm import selectinload

from catalog import auth
from catalog.pages.publish import ConfirmForm
from store import access, features_pg
from catalog.pages.downloads import FORMATS, table_page
from catalog.i18n import _
from store.db import Dataset, Organization, Source
from catalog.pages.common import (QUALITY_LABELS, STATE_LABELS, base_url, basemap,
                                  column_titles, http_url, theme_label)
from catalog.api.dcat import license_uri, temporal_coverage
from catalog.pages.hazards import FLOOD_LEGEND, LANDSLIDE_LEGEND, TSUNAMI_LEGEND
from ogcapi.hazards import HAZARD_THEMES
from store.theme_layers import THEME_SOURCE

TABLE_ROWS = 20
PREVIEW_FEATURES = 1000   # what the GeoJSON map preview draws (its items request's limit)
# Keys under which sources give an update frequency (CKAN extras, DCAT, our files harvester).
FREQUENCY_KEYS = ("更新頻度", "update_frequency", "frequency", "accrualPeriodicity",
                  "accrual_periodicity", "dct:accrualPeriodicity")

_md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False})

bp = Blueprint("dataset", __name__)


def render_description(text: str) -> Markup:
    return Markup(_md.render(text or ""))


def update_frequency(raw) -> str | None:
    """The source's own wording for how often the data is updated, when it gives one."""
    if not isinstance(raw, dict):
        return None
    for key in FREQUENCY_KEYS:
        if isinstance(raw.get(key), str) and raw[key].strip():
            return raw[key].strip()
    for extra in raw.get("extras") or []:
        if isinstance(extra, dict) and extra.get("key") in FREQUENCY_KEYS and extra.get("value"):
            return str(extra["value"]).strip()
    return None


@bp.route("/datasets/<path:dataset_id>")
def dataset(dataset_id: str):
    store = current_app.extensions["renkei_store"]
    with store.session() as s:
        ds = s.get(Dataset, dataset_id, options=[selectinload(Dataset.resources),
                                                 selectinload(Dataset.collections)])
        # A dataset the caller may not read does not exist for them; nor does a draft (its
        # publisher sees it on its preview page).
        if not auth.may_read(ds) or ds.status == "draft":
            return render_template("error.html", status=404, heading=_("データセットが見つかりません"),
                                   message=_("「%(id)s」というデータセットはありません。", id=dataset_id)), 404
        if ds.status != "active":
            return render_template(
                "error.html", status=410, heading=_("このデータセットは公開を終了しました"),
                message=_("「%(title)s」は提供元で取り下げられたため、このカタログでも公開を終了しました。",
                          title=ds.title)), 410
        org = s.get(Organization, ds.organization_id) if ds.organization_id else None
        source = s.get(Source, ds.source_name)
        collections = [c for c in ds.collections if c.status == "active"]
    # The session's connection is back in the pool before the table's rows are read: in
    # PostgreSQL mode they come through a connection of their own, and a request holding one
    # while it waits for another can wait on others doing the same until the pool times out.
    page_url = base_url() + url_for("dataset.dataset", dataset_id=ds.id)
    try:
        tpage = max(1, int(request.args.get("table_page") or 1))
    except ValueError:
        tpage = 1
    table = None
    if collections:
        first = collections[0]
        table = table_page(first.path if features_pg.is_postgis(first.path)
                           else store.data_dir / first.path, first.layer, tpage, TABLE_ROWS,
                           first.feature_count)
        table["collection"] = first
        table["titles"] = column_titles(ds.theme, table["columns"])
    data_modified = max((c.published_at for c in collections), default=None)
    return render_template(
        "dataset.html", ds=ds, org=org, source=source, collections=collections,
        page_url=page_url, quality=_quality_layers, state_labels=STATE_LABELS,
        quality_labels=QUALITY_LABELS, jsonld=jsonld(ds, org, page_url, collections),
        description=render_description(ds.description) if ds.description else None,
        frequency=update_frequency(ds.raw), table=table, formats=FORMATS,
        basemap=basemap(), tile_map=_tile_map(ds, collections),
        flood_legend=FLOOD_LEGEND, landslide_legend=LANDSLIDE_LEGEND,
        tsunami_legend=TSUNAMI_LEGEND,
        data_modified=data_modified, theme_label=theme_label,
        made_here=ds.source_name == THEME_SOURCE,
        can_edit=ds.source_name == "upload" and
        access.can_write(auth.principal(), ds.organization_id),
        confirm_form=ConfirmForm())


def _tile_map(ds: Dataset, collections) -> bool:
    """Vector tiles (MapLibre) for hazard layers and for layers too large for the GeoJSON
    preview (it draws 1,000 features at most); Leaflet and GeoJSON for the rest."""
    if not collections:
        return False
    return ds.theme in HAZARD_THEMES or collections[0].feature_count > PREVIEW_FEATURES


def _quality_layers(quality) -> list[dict]:
    """resource.quality is a list of per-layer reports; accept one report or {"layers": [...]}."""
    if not quality:
        return []
    if isinstance(quality, dict):
        quality = quality.get("layers") if isinstance(quality.get("layers"), list) else [quality]
    return [q for q in quality if isinstance(q, dict)]


def jsonld(ds: Dataset, org: Organization | None, page_url: str, collections=()) -> dict:
    """schema.org Dataset, so the page can appear in Google Dataset Search."""
    root = base_url()
    dist = [{"@type": "DataDownload", "name": r.name or http_url(r.url), "contentUrl": http_url(r.url),
             "encodingFormat": r.detected_format or r.format}
            for r in ds.resources if http_url(r.url)]
    for c in collections:
        for ext, (mime, _label) in FORMATS.items():
            dist.append({"@type": "DataDownload", "name": f"{c.title} ({ext})",
                         "encodingFormat": mime,
                         "contentUrl": root + url_for("downloads.download", dataset_id=ds.id,
                                                      collection_id=c.id, ext=ext)})
    description = ds.description or ds.title
    if len(description) < 50:   # Google Dataset Search wants 50 to 5,000 characters
        who = f"{org.name_ja}が公開し、" if org is not None else ""
        description += f"（{who}兵庫県オープンデータ連携基盤 renkei が収集して提供しているデータセットです）"
    doc = {"@context": "https://schema.org/", "@type": "Dataset", "name": ds.title,
           "description": description[:5000], "url": page_url, "identifier": ds.id,
           "keywords": list(ds.tags or []), "isAccessibleForFree": True, "inLanguage": "ja"}
    if dist:   # an empty list tells Google there is nothing to download
        doc["distribution"] = dist
    # The source's own date when it gives one, else when the catalogue last changed the record.
    doc["dateModified"] = ds.modified or (ds.updated_at.isoformat(timespec="seconds") + "Z"
                                          if ds.updated_at else None)
    if not doc["dateModified"]:
        del doc["dateModified"]
    if ds.issued:
        doc["datePublished"] = ds.issued
    period = temporal_coverage(ds.raw)
    if period:
        doc["temporalCoverage"] = f"{period[0] or '..'}/{period[1] or '..'}"
    licence = license_uri(ds.license_id, ds.license_title, ds.license_url)
    if licence:   # Google reads a URL (or a CreativeWork), never prose
        doc["license"] = licence
    elif ds.license_title or ds.license_id:
        doc["license"] = {"@type": "CreativeWork", "name": ds.license_title or ds.license_id,
                          "url": page_url + "#license"}
    if org is not None:
        doc["publisher"] = doc["creator"] = {"@type": "GovernmentOrganization", "name": org.name_ja}
    if ds.bbox and len(ds.bbox) == 4:
        w, s_, e, n = ds.bbox
        doc["spatialCoverage"] = {"@type": "Place",
                                  "geo": {"@type": "GeoShape", "box": f"{s_} {w} {n} {e}"}}
    if http_url(ds.landing_page):
        doc["sameAs"] = http_url(ds.landing_page)
    return doc
