"""One remote dataset, top to bottom: fetch each resource, read and translate it, write new
feature versions aside, then hand everything to the publisher for one atomic switch."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import requests

from store import publish
from store.db import Dataset, Resource, Store
from store.versions import write_chunks, write_version
from harvesters.base import HarvestFailure, RemoteDataset, RemoteResource, SourceConfig
from harvesters.fetch import fetch

PREVIEW_ROWS = 20
# Files above this size are translated in chunks straight into the GeoPackage (geo.stream), so a
# 1 GB hazard layer never sits in memory whole.
STREAM_BYTES = int(os.environ.get("RENKEI_STREAM_BYTES", 200 * 1024 * 1024))
FORMAT_LABELS = {"csv": "CSV", "geojson": "GeoJSON", "shapefile-zip": "SHP", "zip": "ZIP",
                 "kml": "KML", "gpkg": "GPKG", "xlsx": "XLSX", "json": "JSON"}
MAX_QUALITY_ROWS = 1000  # rejected rows kept on the page; the job report keeps all of them


@dataclass
class ResourceOutcome:
    remote: RemoteResource
    resource_id: str
    changed: bool                       # False: content unchanged, keep what is published
    fields: dict = field(default_factory=dict)          # Resource columns to store
    collections: list[dict] = field(default_factory=list)  # new collection versions written
    failed: bool = False


@dataclass
class DatasetOutcome:
    dataset_id: str
    status: str          # added | updated | unchanged | failed
    errors: list[HarvestFailure] = field(default_factory=list)


def dataset_id_for(source: SourceConfig, remote: RemoteDataset) -> str:
    return f"{source.name}--{remote.name}"


def resource_id_for(dataset_id: str, remote: RemoteResource) -> str:
    return f"{dataset_id}--{hashlib.sha1(remote.remote_id.encode()).hexdigest()[:8]}"


def metadata_hash(remote: RemoteDataset) -> str:
    return hashlib.sha256(json.dumps(remote.raw, sort_keys=True, ensure_ascii=False,
                                     default=str).encode()).hexdigest()


def process_dataset(store: Store, source: SourceConfig, remote: RemoteDataset, orgs: dict, *,
                    session: requests.Session, timeout: float) -> DatasetOutcome:
    dataset_id = dataset_id_for(source, remote)
    with store.session() as s:
        existing = s.get(Dataset, dataset_id)
        previous = {r.id: r for r in existing.resources} if existing else {}
        versions = {c.id: c.version for c in existing.collections} if existing else {}
        old_hash = existing.metadata_hash if existing else None
        was_active = existing is not None and existing.status == "active"
    errors: list[HarvestFailure] = []
    outcomes = []
    spatial_resources = sum(1 for r in remote.resources if r.url)
    for remote_res in remote.resources:
        rid = resource_id_for(dataset_id, remote_res)
        try:
            outcomes.append(_process_resource(store, remote, remote_res, rid, previous.get(rid),
                                              versions, spatial_resources > 1, errors,
                                              session=session, timeout=timeout, orgs=orgs))
        except HarvestFailure as exc:
            exc.dataset = exc.dataset or remote.title
            exc.resource = exc.resource or remote_res.name or remote_res.url
            errors.append(exc)
            outcomes.append(ResourceOutcome(remote_res, rid, changed=rid not in previous,
                                            fields={"state": "error", "message": exc.message},
                                            failed=True))
    new_hash = metadata_hash(remote)
    changed = (new_hash != old_hash or not was_active
               or any(o.changed for o in outcomes if not (o.failed and o.resource_id in previous))
               or set(previous) - {o.resource_id for o in outcomes})
    if changed:
        publish.publish_dataset(store, source, remote, dataset_id, new_hash, outcomes, orgs)
    if errors:
        status = "failed"
    elif existing is None:
        status = "added"
    else:
        status = "updated" if changed else "unchanged"
    return DatasetOutcome(dataset_id, status, errors)


def _process_resource(store: Store, remote: RemoteDataset, res: RemoteResource, rid: str,
                      prev: Resource | None, versions: dict, several: bool,
                      errors: list[HarvestFailure], *, session, timeout,
                      orgs=None) -> ResourceOutcome:
    where = {"dataset": remote.title, "resource": res.name or res.url}
    if not res.url:
        raise HarvestFailure("fetch", "resource has no URL", **where)
    got = fetch(res.url, store.data_dir / "cache", timeout=timeout, session=session,
                etag=prev.etag if prev and prev.state != "error" else None,
                last_modified=prev.last_modified if prev and prev.state != "error" else None,
                **where)
    if got.not_modified or (prev is not None and prev.state != "error"
                            and prev.sha256 == got.sha256):
        return ResourceOutcome(res, rid, changed=False)
    # The GIS stack loads only once a resource really changed: an unchanged re-harvest
    # (conditional GETs and hashes) never pays for importing it.
    import pyogrio

    from geo.readers import ReadError, detect_format, read_resource
    from geo.translate import as_layer, collection_extras, publisher_of, translate
    base = {"sha256": got.sha256, "size": got.size, "etag": got.etag,
            "last_modified": got.last_modified}
    org_id = (remote.organization or {}).get("name")
    who = publisher_of(org_id, orgs or {}, remote.organization)
    fmt = detect_format(got.path, res.format)
    if (got.size or 0) > STREAM_BYTES and fmt in ("geojson", "gpkg") \
            and len(pyogrio.list_layers(got.path)) == 1:
        return _stream_resource(store, remote, res, rid, got, fmt, versions, several, errors,
                                base, who, where)
    try:
        layers = read_resource(got.path, res.format)
    except ReadError as exc:
        raise HarvestFailure("translate", str(exc), row=getattr(exc, "row", None), **where) from exc
    translated = {}   # id(layer) → geo.translate.Translated: the theme schema and its report
    for i, layer in enumerate(layers):
        if layer.spatial:
            t = translate(layer, title=remote.title, tags=remote.tags,
                          source_dataset=rid.rsplit("--", 1)[0], **who)
            layers[i] = as_layer(layer, t)
            translated[id(layers[i])] = t
    outcome = ResourceOutcome(res, rid, changed=True, fields=dict(base))
    quality, encodings = [], set()
    spatial = [layer for layer in layers if layer.spatial]
    for layer in layers:
        for issue in layer.rejected:
            errors.append(HarvestFailure("translate", issue.reason, row=issue.row, **where))
        encodings.add(layer.encoding)
        quality.append({"layer": layer.name, "rows_in": layer.rows_in,
                        "rows_published": len(layer.frame) if layer.spatial else 0,
                        "rejected": [{"row": i.row, "reason": i.reason}
                                     for i in layer.rejected[:MAX_QUALITY_ROWS]],
                        "rejected_count": len(layer.rejected), "warnings": list(layer.warnings),
                        "crs_source": layer.crs_source, "encoding": layer.encoding,
                        "spatial": layer.spatial,
                        **(translated[id(layer)].report() if id(layer) in translated else {})})
        if not layer.spatial:
            outcome.fields["preview"] = table_preview(layer.frame)
            continue
        if len(layer.frame) == 0:
            continue
        cid = rid if len(spatial) == 1 else f"{rid}--{_slug(layer.name)}"
        written = write_version(layer.frame, store.data_dir, cid,
                                             versions.get(cid, 0) + 1).as_dict()
        title = remote.title
        if several:
            title += f"（{res.name or layer.name}）"
        if len(spatial) > 1:
            title += f" {layer.name}"
        extras = collection_extras(translated[id(layer)]) if id(layer) in translated else {}
        outcome.collections.append({**written, **extras, "id": cid, "title": title,
                                    "layer_name": layer.name, "version": versions.get(cid, 0) + 1})
    outcome.fields.update(
        state="ok" if outcome.collections else ("table" if layers and not spatial else "empty"),
        message=None if outcome.collections or not spatial else "no features could be published",
        quality=quality, encoding=next((e for e in encodings if e), None),
        detected_format=FORMAT_LABELS.get(fmt))
    return outcome


def _stream_resource(store, remote, res, rid, got, fmt, versions, several, errors, base, who,
                     where) -> ResourceOutcome:
    """The large-file path: chunked translate-and-write, same report and collection shape."""
    from geo import stream, themes
    version = versions.get(rid, 0) + 1
    chunks = stream.ChunkedTranslation(got.path, fmt=fmt, title=remote.title, tags=remote.tags,
                                       source_dataset=rid.rsplit("--", 1)[0], **who)
    try:
        written = write_chunks(chunks, store.data_dir, rid, version).as_dict()
    except Exception as exc:  # GDAL errors surface mid-stream as plain exceptions
        raise HarvestFailure("translate", f"{type(exc).__name__}: {exc}"[:400], **where) from exc
    t = chunks.result
    if t.theme:
        written["fields"] = themes.field_info(t.theme)
    for issue in t.rejected:
        errors.append(HarvestFailure("translate", issue.reason, row=issue.row, **where))
    title = remote.title + (f"（{res.name}）" if several and res.name else "")
    quality = [{"layer": res.name or "features", "rows_in": t.rows_in,
                "rows_published": written["feature_count"],
                "rejected": [{"row": i.row, "reason": i.reason}
                             for i in t.rejected[:MAX_QUALITY_ROWS]],
                "rejected_count": len(t.rejected), "warnings": list(t.warnings),
                "crs_source": None, "encoding": None, "spatial": True,
                "streamed": True, **t.report()}]
    collections = [] if not written["feature_count"] else [
        {**written, "theme": t.theme, "id": rid, "title": title, "layer_name": res.name,
         "version": version}]
    return ResourceOutcome(res, rid, changed=True, collections=collections, fields={
        **base, "state": "ok" if collections else "empty", "quality": quality,
        "message": None if collections else "no features could be published",
        "encoding": None, "detected_format": FORMAT_LABELS.get(fmt)})


def table_preview(frame) -> dict:
    import pandas as pd
    head = frame.head(PREVIEW_ROWS)
    rows = [["" if pd.isna(v) else str(v) for v in row] for row in head.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows, "total": int(len(frame))}


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return slug or hashlib.sha1(name.encode()).hexdigest()[:8]
