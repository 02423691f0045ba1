"""Catalogue records as the dicts CKAN 2.10's Action API returns (package, resource, organization).

Names: a CKAN `name` must match ``[a-z0-9_-]{2,100}``. Our dataset ids (``<source>--<remote
name>``) already do in almost every case — both halves are CKAN names or slugs — so the id *is*
the name. Only an id that breaks the rule (Japanese file ids of a `files` source, upper case,
over 100 characters) gets a derived name: an ASCII slug of the id plus the first 8 hex digits
of its SHA-1, stable across harvests and resolvable back (see `find_dataset`).

Resources derived by renkei (the OGC API collection of each published layer, then its
translated downloads: GeoJSON, CSV, GeoPackage) follow the harvested ones and carry
``renkei_derived: true``, so a client can tell copies from originals. Their ids are the
collection id plus a suffix (``--ogcapi``, ``--geojson`` …), so resource_show finds them again.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from catalog.public_text import public_url
from store.db import Collection, Dataset, Organization, Resource

CKAN_NAME = re.compile(r"^[a-z0-9_-]{2,100}$")
CKAN_TIME = "%Y-%m-%dT%H:%M:%S.%f"
OGC_FORMAT = "OGC API Features"
OGC_SUFFIX = "--ogcapi"
# The translated downloads of catalog.pages.downloads: ext -> (CKAN format, IANA media type, label).
# The media types are those the route answers with (without its charset parameter).
DOWNLOADS = {
    "geojson": ("GeoJSON", "application/geo+json", "GeoJSON"),
    "csv": ("CSV", "text/csv", "CSV"),
    "gpkg": ("GPKG", "application/geopackage+sqlite3", "GeoPackage"),
}
_DERIVED_ID = re.compile(r"^(.+)--(ogcapi|geojson|csv|gpkg)$")
# Datasets renkei makes itself (store.theme_layers.THEME_SOURCE: the prefecture-wide theme layers).
DERIVED_SOURCES = ("renkei-themes",)
MIMETYPES = {
    "CSV": "text/csv", "GEOJSON": "application/geo+json", "JSON": "application/json",
    "ZIP": "application/zip", "SHP": "application/zip",
    "KML": "application/vnd.google-earth.kml+xml",
    "KMZ": "application/vnd.google-earth.kmz", "GPKG": "application/geopackage+sqlite3",
    "XLSX": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "XLS": "application/vnd.ms-excel", "PDF": "application/pdf", "XML": "application/xml",
    "GML": "application/gml+xml", "TXT": "text/plain", "HTML": "text/html",
}
# Licences that are "open" in CKAN's sense (isopen): the Open Definition conformant ones we meet.
OPEN_LICENSES = ("cc-by", "cc0", "cc-zero", "odc", "pdl", "gsi", "gov", "政府標準利用規約",
                 "公共データ利用規約")


def license_is_open(license_id: str) -> bool:
    lic = (license_id or "").lower()
    return any(key in lic for key in OPEN_LICENSES)


def ckan_name(dataset_id: str) -> str:
    if CKAN_NAME.match(dataset_id):
        return dataset_id
    slug = re.sub(r"[^a-z0-9_-]+", "-", unicodedata.normalize("NFKC", dataset_id).lower())
    slug = slug.strip("-_")[:80] or "dataset"
    return f"{slug}-{hashlib.sha1(dataset_id.encode()).hexdigest()[:8]}"


def ckan_time(value) -> str | None:
    """A datetime or a date string (ISO 8601 or HTTP date) in CKAN's form, UTC, naive."""
    if value is None or value == "":
        return None
    if not isinstance(value, datetime):
        text = str(value).strip()
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                value = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.strftime(CKAN_TIME)


def find_dataset(session, id_or_name: str) -> Dataset | None:
    """package_show's `id`: our id, or a derived name (a scan, only when the id misses)."""
    opts = [selectinload(Dataset.resources), selectinload(Dataset.collections)]
    ds = session.get(Dataset, id_or_name, options=opts)
    # A derived name ends in "-" + 8 hex digits; anything else cannot be one.
    if ds is None and re.fullmatch(r"[a-z0-9_-]+-[0-9a-f]{8}", id_or_name):
        for (did,) in session.execute(select(Dataset.id).where(Dataset.status == "active")):
            if not CKAN_NAME.match(did) and ckan_name(did) == id_or_name:
                ds = session.get(Dataset, did, options=opts)
                break
    return ds if ds is not None and ds.status == "active" else None


def download_url(base_url: str, dataset_id: str, collection_id: str, ext: str) -> str:
    """The absolute URL of a translated download, built from the route itself so the two never
    drift. The map is bound without the script root: base_url already carries it."""
    path = current_app.url_map.bind("localhost").build(
        "downloads.download", {"dataset_id": dataset_id, "collection_id": collection_id, "ext": ext})
    return base_url + path


def find_resource(session, resource_id: str, base_url: str, *, may_read) -> dict | None:
    """resource_show's `id`: a harvested resource, or a derived one (OGC API, downloads)."""
    res = session.get(Resource, resource_id)
    dataset_id = res.dataset_id if res is not None else None
    derived = _DERIVED_ID.match(resource_id) if res is None else None
    if derived:
        col = session.get(Collection, derived.group(1))
        dataset_id = col.dataset_id if col is not None and col.status == "active" else None
    if dataset_id is None:
        return None
    ds = find_dataset(session, dataset_id)
    if ds is None or not may_read(ds):
        return None
    org = session.get(Organization, ds.organization_id) if ds.organization_id else None
    return next((r for r in package_dict(ds, org, base_url)["resources"]
                 if r["id"] == resource_id), None)


def organization_dict(org: Organization, package_count: int | None = None) -> dict:
    out = {
        "id": org.id, "name": org.id, "title": org.name_ja, "display_name": org.name_ja,
        "description": "", "image_url": "", "image_display_url": "",
        "created": ckan_time(org.created_at),
        "is_organization": True, "type": "organization", "state": "active",
        "approval_status": "approved", "num_followers": 0,
        "extras": [{"key": k, "value": v} for k, v in
                   (("lg_code", org.code), ("title_en", org.name_en)) if v],
    }
    if package_count is not None:
        out["package_count"] = package_count
    return out


def package_dict(ds: Dataset, org: Organization | None, base_url: str) -> dict:
    created, modified = ckan_time(ds.created_at), ckan_time(ds.updated_at)
    resources = [resource_dict(r, ds, modified) for r in ds.resources]
    for col in ds.collections:
        if col.status == "active":
            resources.append(ogc_resource_dict(col, ds, base_url, modified))
            resources += [download_resource_dict(col, ds, ext, base_url, modified)
                          for ext in DOWNLOADS]
    for i, r in enumerate(resources):
        r["position"] = i
    tags = [{"id": t, "name": t, "display_name": t, "state": "active", "vocabulary_id": None}
            for t in dict.fromkeys(ds.tags or []) if t]
    groups = ([{"id": ds.theme, "name": ds.theme, "title": ds.theme, "display_name": ds.theme,
                "description": "", "image_display_url": ""}] if ds.theme else [])
    lic = (ds.license_id or "").lower()
    return {
        "id": ds.id, "name": ckan_name(ds.id), "title": ds.title, "notes": ds.description or "",
        "url": public_url(ds.landing_page or ""), "version": None, "type": "dataset", "state": "active",
        # CKAN's private is our `organization` level; access_level says all three levels.
        "private": (ds.access_level or "public") == "organization",
        "access_level": ds.access_level or "public", "author": None, "author_email": None,
        "maintainer": org.name_ja if org else None, "maintainer_email": None,
        "license_id": ds.license_id or "notspecified",
        "license_title": ds.license_title or ds.license_id or "License not specified",
        "license_url": public_url(ds.license_url or ""),
        "isopen": license_is_open(lic),
        "metadata_created": created, "metadata_modified": modified,
        "creator_user_id": None, "owner_org": ds.organization_id,
        "organization": organization_dict(org) if org else None,
        "groups": groups, "tags": tags, "num_tags": len(tags),
        "resources": resources, "num_resources": len(resources),
        "extras": _extras(ds, org), "relationships_as_object": [], "relationships_as_subject": [],
    }


def resource_dict(r: Resource, ds: Dataset, package_modified: str | None) -> dict:
    fmt = r.format or r.detected_format or ""
    return {
        "id": r.id, "package_id": ds.id, "name": r.name or public_url(r.url).rsplit("/", 1)[-1],
        "description": r.description or "", "url": public_url(r.url), "format": fmt,
        "mimetype": MIMETYPES.get(fmt.upper()), "mimetype_inner": None,
        "size": r.size, "hash": r.sha256 or "", "encoding": r.encoding,
        "created": ckan_time(ds.created_at),
        "last_modified": ckan_time(r.remote_modified) or ckan_time(r.last_modified)
        or ckan_time(r.fetched_at),
        "metadata_modified": package_modified, "state": "active",
        # A member's uploaded file (served by our download route), as CKAN marks its own.
        "url_type": "upload" if ds.source_name == "upload" and r.state != "other" else None,
        "resource_type": None, "cache_url": None, "cache_last_updated": None,
        "datastore_active": False, "position": r.position,
    }


def ogc_resource_dict(col, ds: Dataset, base_url: str, package_modified: str | None) -> dict:
    return {
        "id": col.id + OGC_SUFFIX, "package_id": ds.id,
        "name": f"{col.title}（OGC API Features）",
        "description": f"地図データ（{col.feature_count}件）を OGC API – Features で提供しています。"
                       "GIS ソフトや GDAL の OAPIF ドライバーで読み込めます。",
        "url": f"{base_url}/ogcapi/collections/{col.id}", "format": OGC_FORMAT,
        "mimetype": "application/json", "mimetype_inner": None, "size": None, "hash": "",
        "created": ckan_time(col.published_at), "last_modified": ckan_time(col.published_at),
        "metadata_modified": package_modified, "state": "active", "url_type": None,
        "resource_type": "api", "cache_url": None, "cache_last_updated": None,
        "datastore_active": False, "renkei_derived": True,
    }


def download_resource_dict(col, ds: Dataset, ext: str, base_url: str,
                           package_modified: str | None) -> dict:
    fmt, mimetype, label = DOWNLOADS[ext]
    note = {"geojson": "GeoJSON（EPSG:4326）です。",
            "csv": "Excel でそのまま開ける CSV（UTF-8 BOM 付き）です。点は経度・緯度の列、"
                   "それ以外の形は WKT の列で入っています。",
            "gpkg": "GeoPackage です。QGIS などの GIS ソフトで開けます。"}[ext]
    return {
        "id": f"{col.id}--{ext}", "package_id": ds.id, "name": f"{col.title}（{label}）",
        "description": f"連携カタログで変換した地図データ（{col.feature_count}件）の{note}",
        "url": download_url(base_url, ds.id, col.id, ext), "format": fmt,
        "mimetype": mimetype, "mimetype_inner": None, "size": None, "hash": "",
        "created": ckan_time(col.published_at), "last_modified": ckan_time(col.published_at),
        "metadata_modified": package_modified, "state": "active", "url_type": None,
        "resource_type": "file", "cache_url": None, "cache_last_updated": None,
        "datastore_active": False, "renkei_derived": True,
    }


def _extras(ds: Dataset, org: Organization | None) -> list[dict]:
    pairs = [("harvest_source_name", ds.source_name), ("harvest_remote_id", ds.remote_id),
             ("source_metadata_modified", ds.modified), ("issued", ds.issued),
             ("theme", ds.theme), ("lg_code", org.code if org else None),
             ("renkei_derived", "true" if ds.source_name in DERIVED_SOURCES else None)]
    if ds.bbox:
        w, s, e, n = ds.bbox
        pairs.append(("spatial", json.dumps({"type": "Polygon", "coordinates": [
            [[w, s], [e, s], [e, n], [w, n], [w, s]]]})))
    return [{"key": k, "value": str(v)} for k, v in pairs if v]
