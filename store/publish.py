"""The switch: catalogue record, resources, collections and search entry in one transaction.

Feature files were written aside before this runs; until the commit, readers keep seeing the
previous version of everything, and a crash before it leaves that version serving.

What a harvest hands over is typed: per resource a `ResourceOutcome` (unchanged, failed, or new
content with its `LayerReport`s and the `NewCollection`s written aside).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.db import (Collection, Dataset, Organization, Resource, Store, utcnow)
from store import versions
from store.access import dataset_label
from store.versions import WrittenVersion


@dataclass
class LayerReport:
    """How one layer of a resource was read and translated: the quality report of the
    dataset page (stored as JSON on the resource)."""
    layer: str
    rows_in: int
    rows_published: int
    rejected: list[tuple[int | None, str]]   # (row, reason), the first ones only
    rejected_count: int                       # all of them
    warnings: list[str]
    crs_source: str | None
    encoding: str | None
    spatial: bool
    streamed: bool = False                    # translated in chunks (very large file)
    translation: dict = field(default_factory=dict)  # geo.translate.Translated.report()

    def as_dict(self) -> dict:
        out = {"layer": self.layer, "rows_in": self.rows_in,
               "rows_published": self.rows_published,
               "rejected": [{"row": row, "reason": reason} for row, reason in self.rejected],
               "rejected_count": self.rejected_count, "warnings": list(self.warnings),
               "crs_source": self.crs_source, "encoding": self.encoding,
               "spatial": self.spatial}
        if self.streamed:
            out["streamed"] = True
        return {**out, **self.translation}


@dataclass
class NewCollection:
    """A collection version complete on disk, to switch to."""
    id: str
    title: str
    layer_name: str
    version: int
    written: WrittenVersion
    theme: str | None = None
    fields: dict | None = None   # the theme schema's fields with titles; else as written

    @property
    def field_info(self) -> dict:
        return self.fields if self.fields is not None else self.written.fields


@dataclass
class ResourceContent:
    """What changed content gave: the Resource columns a harvest sets."""
    state: str                       # ok | table | empty
    sha256: str | None
    size: int | None
    etag: str | None = None
    last_modified: str | None = None
    message: str | None = None       # why nothing is published from it
    detected_format: str | None = None
    encoding: str | None = None
    quality: list[LayerReport] = field(default_factory=list)
    preview: dict | None = None      # first rows of a table


@dataclass
class ResourceOutcome:
    """One resource after fetch and translation. `content` None and no `error`: unchanged,
    keep what is published. `error`: it failed this time; the last good version stays."""
    remote: Any                      # what the source says (harvesters.base.RemoteResource)
    resource_id: str
    content: ResourceContent | None = None
    collections: list[NewCollection] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def publish_dataset(store: Store, source, remote, dataset_id: str, metadata_hash: str,
                    outcomes: list[ResourceOutcome], orgs: dict, *,
                    access_level: str | None = None, status: str = "active") -> None:
    """`status` draft: switched in but on no read path (every one asks for active) until
    `activate`; the web form's preview."""
    org_id = _organization(remote, source)
    switched: list[tuple[str, str | None]] = []
    with store.session() as s, s.begin():
        if org_id:
            _upsert_organization(s, org_id, remote, orgs)
        ds = s.get(Dataset, dataset_id)
        if ds is None:
            ds = Dataset(id=dataset_id, source_name=source.name, created_at=utcnow())
            s.add(ds)
        ds.remote_id, ds.name, ds.title = remote.remote_id, remote.name, remote.title
        ds.description, ds.tags = remote.description, list(remote.tags)
        ds.license_id, ds.license_title = remote.license_id, remote.license_title
        ds.license_url, ds.organization_id = remote.license_url, org_id
        ds.issued, ds.modified, ds.landing_page = remote.issued, remote.modified, remote.landing_page
        ds.raw, ds.metadata_hash, ds.status = remote.raw, metadata_hash, status
        # Harvested data is public unless its source says otherwise (sources.yaml access_level);
        # an uploaded dataset's level is its publisher's choice, set by the caller.
        ds.access_level = access_level or source.options.get("access_level") or "public"
        ds.updated_at = utcnow()

        old_resources = {r.id: r for r in ds.resources}
        old_collections = {c.id: c for c in ds.collections}
        kept_collections: set[str] = set()
        for position, out in enumerate(outcomes):
            res = old_resources.pop(out.resource_id, None)
            if res is None:
                res = Resource(id=out.resource_id, dataset=ds)
                s.add(res)
            r = out.remote
            res.remote_id, res.position, res.name = r.remote_id, position, r.name
            res.description, res.url, res.format = r.description, r.url, r.format
            res.remote_modified = r.remote_modified
            if out.content is None:   # unchanged, or failed: what was published stays
                kept_collections |= {c.id for c in old_collections.values()
                                     if c.resource_id == out.resource_id}
                if out.failed and res.state in (None, "pending", "error"):
                    # Nothing good was ever published from it: the page says why.
                    res.state, res.message = "error", out.error
                    res.size, res.fetched_at = r.size, utcnow()
                continue
            _set_content(res, out.content)
            res.size = out.content.size if out.content.size is not None else r.size
            res.fetched_at = utcnow()
            for new in out.collections:
                col = old_collections.get(new.id)
                if col is None:
                    col = Collection(id=new.id, dataset=ds, resource_id=out.resource_id)
                    s.add(col)
                col.title, col.layer_name = new.title, new.layer_name
                col.description = remote.description
                col.keywords = list(remote.tags)
                col.path, col.layer = new.written.path, new.written.layer
                col.feature_count, col.bbox = new.written.feature_count, new.written.bbox
                col.fields, col.version = new.field_info, new.version
                col.status, col.published_at = "active", utcnow()
                kept_collections.add(col.id)
                switched.append((col.id, col.path))
        themes = [new.theme for out in outcomes for new in out.collections]
        if themes:   # the first translated layer names the dataset's theme (geo.translate)
            ds.theme = next((t for t in themes if t), None)
        for gone in old_resources.values():
            s.delete(gone)
        for cid, col in old_collections.items():
            if cid not in kept_collections:
                s.delete(col)
                switched.append((cid, None))
        s.flush()
        ds.bbox = _union([c.bbox for c in ds.collections if c.bbox])
        if status == "active":
            store.search.upsert(s.connection(), search_doc(ds, s))
        else:
            store.search.delete(s.connection(), ds.id)
        store.bump_version(s)
    for cid, keep in switched:
        versions.remove_stale_versions(store.data_dir, cid, keep)


def activate(store: Store, dataset_id: str) -> None:
    """A draft goes live: onto the search index and, through the version token, every path."""
    with store.session() as s, s.begin():
        ds = s.get(Dataset, dataset_id)
        ds.status, ds.updated_at = "active", utcnow()
        s.flush()
        store.search.upsert(s.connection(), search_doc(ds, s))
        store.bump_version(s)


def _set_content(res: Resource, content: ResourceContent) -> None:
    res.state, res.message = content.state, content.message
    res.sha256, res.etag, res.last_modified = content.sha256, content.etag, content.last_modified
    res.detected_format, res.encoding = content.detected_format, content.encoding
    res.quality = [layer.as_dict() for layer in content.quality]
    res.preview = content.preview


# Resources every published layer adds (catalog.api.ckan_dicts: the translated downloads and the
# OGC API collection), spelt as those resources are: the format facet counts them too, so that
# it agrees with the package dicts (CKAN's res_format).
DERIVED_FORMATS = ("GeoJSON", "CSV", "GPKG", "OGC API Features")


def dataset_formats(ds: Dataset) -> list[str]:
    """Upper-cased formats of a dataset's resources, the derived ones included."""
    formats = {(r.format or r.detected_format or "").upper()
               for r in ds.resources if (r.format or r.detected_format)}
    if any(c.status == "active" for c in ds.collections):
        formats |= {f.upper() for f in DERIVED_FORMATS}
    return sorted(formats)


def search_doc(ds: Dataset, session) -> dict:
    org = session.get(Organization, ds.organization_id) if ds.organization_id else None
    formats = dataset_formats(ds)
    return {"id": ds.id, "title": ds.title, "description": ds.description or "",
            "tags": list(ds.tags or []), "organization": ds.organization_id,
            "organization_title": org.name_ja if org else None, "theme": ds.theme,
            "formats": formats, "license_id": ds.license_id,
            "access": dataset_label(ds.access_level, ds.organization_id),
            "modified": ds.modified or ds.updated_at.isoformat()}


def _organization(remote, source) -> str | None:
    if remote.organization and remote.organization.get("name"):
        return remote.organization["name"]
    return source.organization


def _upsert_organization(s, org_id: str, remote, orgs: dict) -> None:
    known = orgs.get(org_id, {})
    title = (remote.organization or {}).get("title")
    org = s.get(Organization, org_id)
    if org is None:
        org = Organization(id=org_id)
        s.add(org)
    org.name_ja = known.get("name_ja") or title or org.name_ja or org_id
    org.name_en = known.get("name_en") or org.name_en
    if known.get("code"):
        org.code = str(known["code"])
    elif not org.code:   # 「加西市」 or `kasai`: its code from the official list (geo.lgcodes)
        from geo.lgcodes import of_organization
        listed = of_organization(title, org_id)
        org.code = listed.code if listed else org.code


def _union(boxes: list) -> list | None:
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]
