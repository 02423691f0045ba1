"""The switch: catalogue record, resources, collections and search entry in one transaction.

Feature files were written aside before this runs; until the commit, readers keep seeing the
previous version of everything, and a crash before it leaves that version serving.
"""
from __future__ import annotations

from catalog.store import (Collection, Dataset, Organization, Resource, Store, utcnow)
from geo import featurestore


def publish_dataset(store: Store, source, remote, dataset_id: str, metadata_hash: str,
                    outcomes: list, orgs: dict) -> None:
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
        ds.raw, ds.metadata_hash, ds.status = remote.raw, metadata_hash, "active"
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
            if out.failed and res.state not in (None, "pending", "error"):
                # Keep the last good version of a resource that failed this time.
                kept_collections |= {c.id for c in old_collections.values()
                                     if c.resource_id == out.resource_id}
                continue
            if not out.changed:
                kept_collections |= {c.id for c in old_collections.values()
                                     if c.resource_id == out.resource_id}
                continue
            for key, value in out.fields.items():
                setattr(res, key, value)
            res.size = out.fields.get("size", r.size)
            res.fetched_at = utcnow()
            for new in out.collections:
                col = old_collections.get(new["id"])
                if col is None:
                    col = Collection(id=new["id"], dataset=ds, resource_id=out.resource_id)
                    s.add(col)
                col.title, col.layer_name = new["title"], new["layer_name"]
                col.description = remote.description
                col.keywords = list(remote.tags)
                col.path, col.layer = new["path"], new["layer"]
                col.feature_count, col.bbox = new["feature_count"], new["bbox"]
                col.fields, col.version = new["fields"], new["version"]
                col.status, col.published_at = "active", utcnow()
                kept_collections.add(col.id)
                switched.append((col.id, col.path))
        themes = [new.get("theme") for out in outcomes for new in out.collections]
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
        store.search.upsert(s.connection(), search_doc(ds, s))
        store.bump_version(s)
    for cid, keep in switched:
        featurestore.remove_stale_versions(store.data_dir, cid, keep)


def search_doc(ds: Dataset, session) -> dict:
    org = session.get(Organization, ds.organization_id) if ds.organization_id else None
    formats = sorted({(r.format or r.detected_format or "").upper()
                      for r in ds.resources if (r.format or r.detected_format)})
    return {"id": ds.id, "title": ds.title, "description": ds.description or "",
            "tags": list(ds.tags or []), "organization": ds.organization_id,
            "organization_title": org.name_ja if org else None, "theme": ds.theme,
            "formats": formats, "license_id": ds.license_id,
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
    org.code = str(known["code"]) if known.get("code") else org.code


def _union(boxes: list) -> list | None:
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


# ---------------------------------------------------------------------------------------------
# prefecture-wide theme layers (geo.theme_layers): one Dataset + Collection per theme

THEME_SOURCE = "renkei-themes"


def publish_theme_layers(store: Store, log=None) -> list[str]:
    """Rebuild every theme layer whose members (collection id + version) changed, each in one
    switch; return the themes rebuilt. Called at the end of each harvest job; a lock keeps
    jobs of different sources from rebuilding the same layer at once."""
    import fcntl

    from geo import themes
    rebuilt = []
    lock_dir = store.data_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{THEME_SOURCE}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        for name, theme in themes.THEMES.items():
            try:
                if _publish_theme(store, name, theme):
                    rebuilt.append(name)
                    (log or print)(f"[{THEME_SOURCE}] rebuilt theme layer {name}")
            except Exception as exc:   # one theme's failure must not stop the others
                (log or print)(f"[{THEME_SOURCE}] theme layer {name} not rebuilt "
                               f"(the previous version stays): {type(exc).__name__}: {exc}")
    return rebuilt


def _theme_members(s, name: str, theme) -> list[Collection]:
    from sqlalchemy import select
    wanted = {f.name for f in theme.fields}
    stmt = (select(Collection).join(Dataset)
            .where(Dataset.theme == name, Dataset.status == "active",
                   Dataset.source_name != THEME_SOURCE, Collection.status == "active")
            .order_by(Collection.id))
    # A dataset's theme comes from its first layer; only layers in the theme schema join.
    return [c for c in s.scalars(stmt) if wanted <= set(c.fields or {})]


def _publish_theme(store: Store, name: str, theme) -> bool:
    import hashlib

    from geo.themes import MERGED_TITLE_PREFIX, field_info
    from geo.themes import collection_id
    cid = collection_id(name)
    with store.session() as s:
        members = _theme_members(s, name, theme)
        signature = hashlib.sha256(repr([(c.id, c.version, c.path) for c in members])
                                   .encode()).hexdigest()
        ds = s.get(Dataset, cid)
        if (ds is None and not members) or (ds is not None and ds.metadata_hash == signature):
            return False
        old = s.get(Collection, cid)
        version = (old.version if old else 0) + 1
        paths = [(store.data_dir / c.path, c.layer) for c in members]
        member_titles = [c.title for c in members]
    from geo import theme_layers  # the GIS stack loads only when a layer is rebuilt
    written = theme_layers.write_merged(name, paths, store.data_dir, version) if members else None
    title = f"{MERGED_TITLE_PREFIX} {theme.title_ja}（統合）"
    description = (f"県内の各組織が公開した「{theme.title_ja}」のデータを、共通の項目に変換して"
                   "一つにまとめたレイヤーです。同じ施設が複数の組織から公開されている場合は一つにまとめ、"
                   "出典（sources）に全ての提供元を記しています。元データ: " + "、".join(member_titles))
    with store.session() as s, s.begin():
        ds = s.get(Dataset, cid)
        if ds is None:
            ds = Dataset(id=cid, source_name=THEME_SOURCE, remote_id=cid, name=cid,
                         created_at=utcnow())
            s.add(ds)
        ds.title, ds.description, ds.theme = title, description, name
        ds.tags = [theme.title_ja, "統合レイヤー"]
        ds.organization_id = "hyogo-pref" if s.get(Organization, "hyogo-pref") else None
        ds.license_title = "各提供元のライセンスに従います"
        ds.metadata_hash, ds.updated_at = signature, utcnow()
        ds.raw = {"members": [str(p) for p, _ in paths]}
        col = s.get(Collection, cid)
        if written is None:
            ds.status = "withdrawn"
            if col is not None:
                s.delete(col)
        else:
            ds.status = "active"
            if col is None:
                col = Collection(id=cid, dataset=ds, resource_id=cid)
                s.add(col)
            col.title, col.layer_name, col.description = title, name, description
            col.keywords = list(ds.tags)
            col.path, col.layer = written["path"], written["layer"]
            col.feature_count, col.bbox = written["feature_count"], written["bbox"]
            col.fields = field_info(name, set(written["fields"]), merged=True)
            col.version, col.status, col.published_at = version, "active", utcnow()
            ds.bbox = written["bbox"]
        s.flush()
        if written is None:
            store.search.delete(s.connection(), cid)
        else:
            store.search.upsert(s.connection(), search_doc(ds, s))
        store.bump_version(s)
    featurestore.remove_stale_versions(store.data_dir, cid, written["path"] if written else None)
    return True
