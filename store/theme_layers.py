"""Prefecture-wide theme layers: one Dataset + Collection per theme, rebuilt in one switch
whenever its members (collection id + version) change. The merge itself is geo.theme_layers;
with members stored in PostGIS (PostgreSQL mode), area themes are merged in SQL
(store.theme_layers_pg)."""
from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from geo import themes
from geo.themes import MERGED_TITLE_PREFIX, collection_id, field_info
from store import locks, theme_layers_pg, tiles_pg, versions
from store.features_pg import is_postgis, table_of
from store.versions import WrittenVersion
from store.db import Collection, Dataset, Organization, Store, utcnow
from store.publish import search_doc


THEME_SOURCE = "renkei-themes"


@dataclass
class ThemeLayerFailure:
    """A theme layer that could not be rebuilt; its previous version keeps serving."""
    theme: str
    collection_id: str
    title: str
    message: str
    traceback: str


@dataclass
class ThemeLayerRebuild:
    rebuilt: list[str] = field(default_factory=list)
    failed: list[ThemeLayerFailure] = field(default_factory=list)


def publish_theme_layers(store: Store, log=None) -> ThemeLayerRebuild:
    """Rebuild every theme layer whose members (collection id + version) changed, each in one
    switch. Called at the end of each harvest job; a lock keeps jobs of different sources
    from rebuilding the same layer at once. A theme that fails is returned with its traceback
    for the job record (not logged: the caller records it), and the others go on."""
    result = ThemeLayerRebuild()
    # Waits for another machine's rebuild too (store.locks: flock, or a PostgreSQL advisory lock).
    with locks.exclusive(store, THEME_SOURCE, wait=True):
        for name, theme in themes.THEMES.items():
            try:
                if _publish_theme(store, name, theme):
                    result.rebuilt.append(name)
                    (log or print)(f"[{THEME_SOURCE}] rebuilt theme layer {name}")
            except Exception as exc:   # one theme's failure must not stop the others
                # Member files named relative to the data dir: no server path in a message.
                reason = str(exc).replace(f"{store.data_dir.resolve()}/", "") \
                    .replace(f"{store.data_dir}/", "")
                result.failed.append(ThemeLayerFailure(
                    name, collection_id(name), _title(theme),
                    f"theme layer {name} not rebuilt (its previous version keeps serving): "
                    f"{type(exc).__name__}: {reason}"[:400],
                    traceback.format_exc()))
    return result


# The theme layers are made here, by the prefecture's platform: 兵庫県 is their publisher.
PLATFORM_ORGANIZATION = {"id": "hyogo-pref", "name_ja": "兵庫県", "name_en": "Hyogo Prefecture",
                         "code": "280003"}


def _platform_organization(s) -> Organization:
    org = s.get(Organization, PLATFORM_ORGANIZATION["id"])
    if org is None:
        org = Organization(**PLATFORM_ORGANIZATION)
        s.add(org)
    return org


def _title(theme) -> str:
    return f"{MERGED_TITLE_PREFIX} {theme.title_ja}（統合）"


def _theme_members(s, name: str, theme) -> list[Collection]:
    wanted = {f.name for f in theme.fields}
    stmt = (select(Collection).join(Dataset)
            # Public members only: a merged layer is public, so restricted features never join it.
            .where(Dataset.theme == name, Dataset.status == "active",
                   Dataset.access_level == "public",
                   Dataset.source_name != THEME_SOURCE, Collection.status == "active")
            .order_by(Collection.id))
    # A dataset's theme comes from its first layer; only layers in the theme schema join.
    return [c for c in s.scalars(stmt) if wanted <= set(c.fields or {})]


def _publish_theme(store: Store, name: str, theme) -> bool:
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
        paths = [(c.path if is_postgis(c.path) else store.data_dir / c.path, c.layer)
                 for c in members]
        member_titles = [c.title for c in members]
        licences = {(c.dataset.license_id, c.dataset.license_title, c.dataset.license_url)
                    for c in members}
    written = _write_merged(name, paths, store, version) if members else None
    title = _title(theme)
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
        ds.access_level = "public"
        ds.tags = [theme.title_ja, "統合レイヤー"]
        ds.organization_id = _platform_organization(s).id
        if len(licences) == 1:   # every member under one licence: the layer is too
            ds.license_id, ds.license_title, ds.license_url = next(iter(licences))
        else:
            ds.license_id, ds.license_url = None, None
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
            col.path, col.layer = written.path, written.layer
            col.feature_count, col.bbox = written.feature_count, written.bbox
            col.fields = field_info(name, set(written.fields), merged=True)
            col.version, col.status, col.published_at = version, "active", utcnow()
            ds.bbox = written.bbox
        s.flush()
        if written is None:
            store.search.delete(s.connection(), cid)
        else:
            store.search.upsert(s.connection(), search_doc(ds, s))
        store.bump_version(s)
    versions.remove_stale_versions(store.data_dir, cid, written.path if written else None)
    return True


def _write_merged(theme: str, members: list[tuple], store: Store,
                  version: int) -> WrittenVersion:
    from geo import theme_layers  # the GIS stack loads only when a layer is rebuilt
    cid = collection_id(theme)
    data_dir = store.data_dir
    if theme_layers.streams(theme) and all(is_postgis(p) for p, _ in members):
        written = theme_layers_pg.merge_areas(store.engine, theme,
                                              [table_of(p) for p, _ in members], cid, version)
        # Written at publish time as every large version's (store.versions does it for theirs).
        tiles_pg.publish_pyramid(store.engine, written.layer, name=cid,
                                 count=written.feature_count)
    elif any(is_postgis(p) for p, _ in members):
        # Point themes (and a site moving to PostgreSQL, some members still files): the
        # members' frames, merged in Python as in the embedded mode.
        frames = [theme_layers_pg.read_member(store.engine, table_of(p), theme)
                  if is_postgis(p) else theme_layers.read_member(p, lyr, theme)
                  for p, lyr in members]
        written = versions.write_version(theme_layers.merge(theme, frames), data_dir, cid,
                                         version)
    elif theme_layers.streams(theme):
        written = versions.write_chunks(theme_layers.member_chunks(theme, members), data_dir,
                                        cid, version)
    else:   # point themes: merged in chunks (geo.theme_layers.merged_chunks)
        written = versions.write_chunks(theme_layers.merged_chunks(theme, members), data_dir,
                                        cid, version, promote_to_multi=None)
    return written
