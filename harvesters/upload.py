"""Datasets members publish themselves (CKAN API or the web form), through the harvest pipeline.

An uploaded file is streamed to disk (never held in memory), with the organization's size
limit, then translated by harvesters.pipeline.process_upload exactly as a harvested download is,
and switched in by store.publish in one transaction; the merged theme layers follow. The
original file is kept for the download route, replaced only after the new version was
published, so a failed upload leaves the old file and the old features serving: beside the
catalogue in the embedded mode (renamed into place), in the database in PostgreSQL mode
(store.originals; staged in the system's temporary directory, as a web server there has no
data dir).
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import select

from store import originals
from store.db import Dataset, Organization, Store, utcnow
from store.theme_layers import publish_theme_layers
from harvesters.base import RemoteDataset, SourceConfig
from harvesters.context import HarvestSettings, JobContext
from harvesters.pipeline import DatasetOutcome, process_upload

UPLOAD_SOURCE = "upload"   # Dataset.source_name of member-published datasets
DEFAULT_LIMIT = 50 * 1024 * 1024
CHUNK = 1024 * 1024
FORMATS = {".csv": "CSV", ".xlsx": "XLSX", ".geojson": "GeoJSON", ".json": "GeoJSON",
           ".zip": "SHP", ".kml": "KML", ".gpkg": "GPKG"}


class UploadTooLarge(ValueError):
    def __init__(self, limit: int, organization: str):
        self.limit, self.organization = limit, organization
        super().__init__(f"File upload too large: the limit for {organization} is "
                         f"{limit // (1024 * 1024)} MB per file")


@dataclass
class Staged:
    """An uploaded file on disk, not yet in place."""
    path: Path
    filename: str
    size: int


def upload_limit(store: Store, organization_id: str) -> int:
    with store.session() as s:
        return session_upload_limit(s, organization_id)


def session_upload_limit(s, organization_id: str) -> int:
    """upload_limit read through a session the caller holds (a second one would need a second
    connection while the first is held)."""
    org = s.get(Organization, organization_id)
    return (org.upload_limit if org is not None and org.upload_limit else
            int(os.environ.get("RENKEI_UPLOAD_LIMIT", DEFAULT_LIMIT)))


def safe_filename(name: str) -> str:
    name = unicodedata.normalize("NFKC", Path(name or "upload").name)
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", name).strip(" .") or "upload"
    return name[-120:]


def stage_file(store: Store, stream, filename: str, organization_id: str) -> Staged:
    """Copy `stream` to a part file, 1 MB at a time, stopping at the limit."""
    limit = upload_limit(store, organization_id)
    name = safe_filename(filename)
    suffix = Path(name).suffix.lower()
    if store.postgresql:   # no data dir: a private new file (O_EXCL, 0600) in the temp dir
        fd, tmp = tempfile.mkstemp(prefix="renkei-upload-", suffix=suffix)
        path, out = Path(tmp), os.fdopen(fd, "wb")
    else:
        folder = store.data_dir / "uploads" / ".staging"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{secrets.token_hex(8)}{suffix}"
        out = open(path, "wb")
    size = 0
    try:
        with out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit, organization_id)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Staged(path, name, size)


def original_dir(store: Store, resource_id: str) -> Path:
    return store.data_dir / "uploads" / hashlib.sha1(resource_id.encode()).hexdigest()


def original_file(store: Store, resource_id: str) -> Path | None:
    """The embedded mode's kept file (PostgreSQL mode: `stored_original`)."""
    folder = original_dir(store, resource_id)
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    return files[0] if files else None


def stored_original(store: Store, resource_id: str) -> originals.Original | None:
    """PostgreSQL mode's kept file, opened for one download."""
    return originals.open_original(store.engine, resource_id)


def remove_original(store: Store, resource_id: str) -> None:
    """resource_delete: its original goes with it (the published version is already gone)."""
    import shutil
    if store.postgresql:
        originals.remove(store.engine, resource_id)
        return
    shutil.rmtree(original_dir(store, resource_id), ignore_errors=True)


def _context(store: Store, organization_id: str) -> JobContext:
    with store.session() as s:
        orgs = {o.id: {"name_ja": o.name_ja, "name_en": o.name_en, "code": o.code}
                for o in s.scalars(select(Organization))}
    settings = HarvestSettings.from_environ()
    return JobContext(store=store, source=SourceConfig(UPLOAD_SOURCE, UPLOAD_SOURCE, "",
                                                       organization_id),
                      organizations=orgs, settings=settings, http=requests.Session(),
                      time_limit=3600, deadline=time.monotonic() + 3600, log=lambda _m: None)


def publish(store: Store, dataset_id: str, meta: RemoteDataset, organization_id: str,
            access_level: str, staged: dict[str, Staged], *,
            status: str = "active") -> DatasetOutcome:
    """Translate and switch one member dataset; `staged` maps resource remote ids to new
    files. On success each file replaces the resource's original; on failure nothing moves."""
    with store.session() as s:
        org = s.get(Organization, organization_id)
        meta.organization = {"name": organization_id, "title": org.name_ja if org else None}
    ctx = _context(store, organization_id)
    outcome = process_upload(ctx, meta, dataset_id, {k: v.path for k, v in staged.items()},
                             access_level=access_level, status=status)
    from harvesters.pipeline import resource_id_for
    for res in meta.resources:
        new = staged.get(res.remote_id)
        if new is None:
            continue
        if outcome.status == "failed":
            new.path.unlink(missing_ok=True)
            continue
        if store.postgresql:
            try:
                originals.put(store.engine, resource_id_for(dataset_id, res), new.path,
                              new.filename)
            finally:
                new.path.unlink(missing_ok=True)
            continue
        folder = original_dir(store, resource_id_for(dataset_id, res))
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / new.filename
        os.replace(new.path, target)     # the new original in place, in one rename
        for old in folder.iterdir():
            if old != target:
                old.unlink(missing_ok=True)
    if outcome.status != "failed":
        publish_theme_layers(store, log=lambda _m: None)
    return outcome


def withdraw(store: Store, dataset_id: str) -> None:
    """package_delete: withdrawn, never purged (CKAN's state=deleted); theme layers follow."""
    with store.session() as s, s.begin():
        ds = s.get(Dataset, dataset_id)
        if ds is None or ds.status == "withdrawn":
            return
        ds.status, ds.updated_at = "withdrawn", utcnow()
        store.search.delete(s.connection(), ds.id)
        store.bump_version(s)
    publish_theme_layers(store, log=lambda _m: None)


def set_access_level(store: Store, dataset_id: str, level: str) -> None:
    """A change of level alone: the catalogue record, its search entry and the theme layers
    (a dataset leaving `public` leaves the merged layer in the same call)."""
    from store.publish import search_doc
    with store.session() as s, s.begin():
        ds = s.get(Dataset, dataset_id)
        ds.access_level, ds.updated_at = level, utcnow()
        s.flush()
        store.search.upsert(s.connection(), search_doc(ds, s))
        store.bump_version(s)
    publish_theme_layers(store, log=lambda _m: None)


def guess_format(filename: str, declared: str | None) -> str | None:
    return declared or FORMATS.get(Path(filename).suffix.lower())
