"""One remote dataset, top to bottom: fetch each resource, read and translate it, write new
feature versions aside, then hand everything to the publisher for one atomic switch.

Every step runs under its stage (fetch, translate, publish): whatever fails, expectedly or not,
comes back as JobErrors of that stage with its traceback, never as an exception, so one bad
dataset is one failed dataset of the job.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from store import publish
from store.db import Dataset, Resource
from store.publish import LayerReport, NewCollection, ResourceContent, ResourceOutcome
from store.versions import discard, write_chunks, write_version
from harvesters.base import (HarvestFailure, JobError, RemoteDataset, RemoteResource,
                             SourceConfig, harvester_class, stage)
from harvesters.context import JobContext
from harvesters.fetch import REMOTE_ONLY, Fetched, LocalReads, fetch

PREVIEW_ROWS = 20
FORMAT_LABELS = {"csv": "CSV", "geojson": "GeoJSON", "shapefile-zip": "SHP", "zip": "ZIP",
                 "kml": "KML", "gpkg": "GPKG", "xlsx": "XLSX", "json": "JSON"}
MAX_QUALITY_ROWS = 1000  # rejected rows kept on the page; the job report keeps all of them


@dataclass
class DatasetOutcome:
    dataset_id: str
    status: str          # added | updated | unchanged | failed
    errors: list[JobError] = field(default_factory=list)


@dataclass
class ResourceResult:
    outcome: ResourceOutcome                              # what the switch receives
    errors: list[JobError] = field(default_factory=list)  # the failure, or rows rejected


@dataclass
class _Held:
    """What the catalogue holds of the dataset before this run."""
    exists: bool = False
    active: bool = False
    metadata_hash: str | None = None
    resources: dict[str, Resource] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)   # collection id → version
    counts: dict[str, int] = field(default_factory=dict)     # collection id → features served


@dataclass
class _Target:
    """One resource to process and what it is named by in reports and collections."""
    remote: RemoteDataset
    res: RemoteResource
    rid: str
    several: bool           # the dataset has more than one downloadable resource
    held: _Held

    @property
    def where(self) -> dict:
        return {"dataset": self.remote.title, "resource": self.res.name or self.res.url}

    @property
    def previous(self) -> Resource | None:
        """The last good state of this resource, which conditional requests start from."""
        prev = self.held.resources.get(self.rid)
        return prev if prev is not None and prev.state != "error" else None


def dataset_id_for(source: SourceConfig, remote: RemoteDataset) -> str:
    return f"{source.name}--{remote.name}"


def resource_id_for(dataset_id: str, remote: RemoteResource) -> str:
    # str(): a source may send numeric ids; surrogatepass: any text at all has an id.
    key = str(remote.remote_id).encode("utf-8", "surrogatepass")
    return f"{dataset_id}--{hashlib.sha1(key).hexdigest()[:8]}"


def metadata_hash(remote: RemoteDataset) -> str:
    return hashlib.sha256(json.dumps(remote.raw, sort_keys=True, ensure_ascii=False,
                                     default=str).encode()).hexdigest()


def process_dataset(ctx: JobContext, remote: RemoteDataset) -> DatasetOutcome:
    dataset_id = dataset_id_for(ctx.source, remote)
    try:
        with stage("publish", dataset=remote.title):
            held = _held(ctx, dataset_id)
    except HarvestFailure as exc:
        return DatasetOutcome(dataset_id, "failed", [exc.error()])
    several = sum(1 for r in remote.resources if r.url) > 1
    results = [_process_resource(ctx, _Target(remote, res, resource_id_for(dataset_id, res),
                                              several, held))
               for res in remote.resources]
    outcomes = [r.outcome for r in results]
    errors = [e for r in results for e in r.errors]
    try:
        with stage("publish", dataset=remote.title):
            new_hash = metadata_hash(remote)
            changed = (new_hash != held.metadata_hash or not held.active
                       or any(o.content is not None for o in outcomes)
                       or any(o.failed and o.resource_id not in held.resources for o in outcomes)
                       or bool(set(held.resources) - {o.resource_id for o in outcomes}))
            if changed:
                publish.publish_dataset(ctx.store, ctx.source, remote, dataset_id, new_hash,
                                        outcomes, ctx.organizations)
    except HarvestFailure as exc:
        return DatasetOutcome(dataset_id, "failed", errors + [exc.error()])
    if errors:
        status = "failed"
    elif not held.exists:
        status = "added"
    else:
        status = "updated" if changed else "unchanged"
    return DatasetOutcome(dataset_id, status, errors)


def _held(ctx: JobContext, dataset_id: str) -> _Held:
    with ctx.store.session() as s:
        existing = s.get(Dataset, dataset_id)
        if existing is None:
            return _Held()
        return _Held(exists=True, active=existing.status == "active",
                     metadata_hash=existing.metadata_hash,
                     resources={r.id: r for r in existing.resources},
                     versions={c.id: c.version for c in existing.collections},
                     counts={c.id: c.feature_count or 0 for c in existing.collections
                             if c.status == "active"})


def _process_resource(ctx: JobContext, target: _Target) -> ResourceResult:
    try:
        return _fetch_and_translate(ctx, target)
    except HarvestFailure as exc:
        return ResourceResult(ResourceOutcome(target.res, target.rid, error=exc.message),
                              [exc.locate(**target.where).error()])


def _fetch_and_translate(ctx: JobContext, target: _Target) -> ResourceResult:
    res, prev, where = target.res, target.previous, target.where
    if not res.url:
        raise HarvestFailure("fetch", "resource has no URL", **where)
    with stage("fetch", **where):
        got = fetch(res.url, ctx.cache_dir, max_bytes=ctx.settings.max_download,
                    timeout=ctx.timeout, session=ctx.http,
                    etag=prev.etag if prev else None,
                    last_modified=prev.last_modified if prev else None,
                    local=local_reads(ctx.source), **where)
    if got.not_modified or (prev is not None and prev.sha256 == got.sha256):
        return ResourceResult(ResourceOutcome(res, target.rid))
    with stage("translate", **where):
        # The GIS stack loads only once a resource really changed: an unchanged re-harvest
        # (conditional GETs and hashes) never pays for importing it.
        from geo.gdal_safety import has_crs_link
        from geo.readers import ReadError, detect_format, stream_plan
        fmt = detect_format(got.path, res.format)
        try:
            plan = stream_plan(got.path, fmt, stream_bytes=ctx.settings.stream_bytes,
                               limits=limits_of(ctx))
        except ReadError as exc:
            raise HarvestFailure("translate", str(exc), row=exc.row, **where) from exc
        if plan is not None and plan.fmt == "geojson" and has_crs_link(plan.opener):
            raise HarvestFailure("translate", "a GeoJSON this large with a crs link (which "
                                 "would be fetched from the network) is not read", **where)
    if plan is not None:
        return _stream_resource(ctx, target, got, fmt, plan)
    return _read_resource(ctx, target, got, fmt)


def limits_of(ctx: JobContext):
    """The reading budgets of this harvest (geo.layers.Limits) from its settings."""
    from geo.layers import Limits
    s = ctx.settings
    return Limits(unpacked=s.max_unpacked, zip_ratio=s.max_zip_ratio,
                  table_bytes=s.table_stream_bytes, max_table=s.max_table_bytes,
                  rows=s.max_rows, columns=s.max_columns)


def local_reads(source: SourceConfig) -> LocalReads:
    """What the source's type may read besides http(s) (harvesters.base.Harvester.local_reads)."""
    cls = harvester_class(source.type)
    kind = cls.local_reads if cls is not None else None
    if kind == "cache":
        return LocalReads(cache=True)
    if kind == "config" and source.options.get("base_dir"):
        return LocalReads(root=Path(source.options["base_dir"]))
    return REMOTE_ONLY


def _content(got: Fetched, fmt: str | None, **columns) -> ResourceContent:
    return ResourceContent(sha256=got.sha256, size=got.size, etag=got.etag,
                           last_modified=got.last_modified,
                           detected_format=FORMAT_LABELS.get(fmt), **columns)


def _rejected(issues, where: dict) -> list[JobError]:
    return [JobError("translate", i.reason, row=i.row, **where) for i in issues]


def _translation_args(ctx: JobContext, target: _Target) -> dict:
    """What geo.translate is told about a resource, on the in-memory and the chunked path."""
    from geo.translate import publisher_of
    remote = target.remote
    who = publisher_of((remote.organization or {}).get("name"), ctx.organizations,
                       remote.organization)
    from geo.themes import THEMES
    # A member may name the theme of an upload (the web form); else it is detected.
    chosen = (remote.raw or {}).get("renkei_theme") if ctx.source.type == "upload" else None
    args = dict(title=remote.title, tags=remote.tags,
                source_dataset=target.rid.rsplit("--", 1)[0], **who)
    if chosen in THEMES:
        args["theme"] = chosen
    return args


def _read_resource(ctx: JobContext, target: _Target, got: Fetched, fmt: str | None
                   ) -> ResourceResult:
    """The in-memory path: read every layer, translate the spatial ones, write each aside."""
    where, remote, res = target.where, target.remote, target.res
    with stage("translate", **where):
        from geo.readers import ReadError, read_resource
        from geo.translate import as_layer, collection_extras, translate
        try:
            layers = read_resource(got.path, res.format, limits_of(ctx))
        except ReadError as exc:
            raise HarvestFailure("translate", str(exc), row=exc.row, **where) from exc
        translated = {}   # id(layer) → geo.translate.Translated: the theme schema, its report
        for i, layer in enumerate(layers):
            if layer.spatial:
                t = translate(layer, **_translation_args(ctx, target))
                layers[i] = as_layer(layer, t)
                translated[id(layers[i])] = t
    spatial = [layer for layer in layers if layer.spatial]
    errors: list[JobError] = []
    quality: list[LayerReport] = []
    preview = None
    for layer in layers:
        errors += _rejected(layer.rejected, where)
        t = translated.get(id(layer))
        quality.append(LayerReport(
            layer=layer.name, rows_in=layer.rows_in,
            rows_published=len(layer.frame) if layer.spatial else 0,
            rejected=[(i.row, i.reason) for i in layer.rejected[:MAX_QUALITY_ROWS]],
            rejected_count=len(layer.rejected), warnings=list(layer.warnings),
            crs_source=layer.crs_source, encoding=layer.encoding, spatial=layer.spatial,
            translation=t.report() if t is not None else {}))
        if not layer.spatial:
            preview = table_preview(layer.frame)
    collections = []
    cids = [target.rid if len(spatial) == 1 else f"{target.rid}--{_slug(layer.name)}"
            for layer in spatial]
    for cid, layer in zip(cids, spatial):   # before anything is written
        _check_collapse(ctx, target, cid, len(layer.frame))
    for cid, layer in zip(cids, spatial):
        if len(layer.frame) == 0:
            continue
        version = target.held.versions.get(cid, 0) + 1
        with stage("publish", **where):   # the new version, written aside
            written = write_version(layer.frame, ctx.store.data_dir, cid, version)
        title = remote.title
        if target.several:
            title += f"（{res.name or layer.name}）"
        if len(spatial) > 1:
            title += f" {layer.name}"
        extras = collection_extras(translated[id(layer)]) if id(layer) in translated else {}
        collections.append(NewCollection(id=cid, title=title, layer_name=layer.name,
                                         version=version, written=written,
                                         theme=extras.get("theme"), fields=extras.get("fields")))
    encoding = next((layer.encoding for layer in layers if layer.encoding), None)
    content = _content(
        got, fmt, quality=quality, preview=preview, encoding=encoding,
        state="ok" if collections else ("table" if layers and not spatial else "empty"),
        message=None if collections or not spatial else "no features could be published")
    return ResourceResult(ResourceOutcome(res, target.rid, content, collections), errors)


def _stream_resource(ctx: JobContext, target: _Target, got: Fetched, fmt: str, plan
                     ) -> ResourceResult:
    """The large-file path: chunked translate-and-write, same report and collection shape.
    Translation happens while the version is written, so both are the translate stage."""
    where, remote, res, rid = target.where, target.remote, target.res, target.rid
    version = target.held.versions.get(rid, 0) + 1
    with stage("translate", **where):
        import itertools

        from geo import stream, themes
        from geo.readers import ReadError
        chunks = stream.ChunkedTranslation(plan.src, fmt=plan.fmt, opener=plan.opener,
                                           name=plan.name, limits=limits_of(ctx),
                                           chunk=ctx.settings.stream_chunk,
                                           **_translation_args(ctx, target))
        try:
            frames = iter(chunks)
            head = list(itertools.islice(frames, 1))
            if not head and chunks.table is not None:
                return _streamed_table(ctx, target, got, fmt, chunks)
            written = write_chunks(itertools.chain(head, frames), ctx.store.data_dir, rid,
                                   version)
        except ReadError as exc:
            raise HarvestFailure("translate", str(exc), row=exc.row, **where) from exc
    try:
        _check_collapse(ctx, target, rid, written.feature_count)
    except HarvestFailure:
        discard(ctx.store.data_dir, written)   # never switched to
        raise
    t = chunks.result
    quality = [LayerReport(
        layer=res.name or "features", rows_in=t.rows_in, rows_published=written.feature_count,
        rejected=[(i.row, i.reason) for i in t.rejected[:MAX_QUALITY_ROWS]],
        rejected_count=len(t.rejected), warnings=list(t.warnings), crs_source=None,
        encoding=chunks.encoding, spatial=True, streamed=True, translation=t.report())]
    title = remote.title + (f"（{res.name}）" if target.several and res.name else "")
    collections = [] if not written.feature_count else [
        NewCollection(id=rid, title=title, layer_name=res.name, version=version, written=written,
                      theme=t.theme, fields=themes.field_info(t.theme) if t.theme else None)]
    content = _content(got, fmt, quality=quality, state="ok" if collections else "empty",
                       message=None if collections else "no features could be published")
    return ResourceResult(ResourceOutcome(res, rid, content, collections),
                          _rejected(t.rejected, where))


def _streamed_table(ctx: JobContext, target: _Target, got: Fetched, fmt: str, chunks
                    ) -> ResourceResult:
    """A large CSV without coordinate columns: a catalogue entry with its first rows."""
    preview = table_preview(chunks.table)
    preview["total"] = chunks.table_rows
    quality = [LayerReport(layer=chunks.name, rows_in=chunks.table_rows, rows_published=0,
                           rejected=[], rejected_count=0, warnings=[], crs_source=None,
                           encoding=chunks.encoding, spatial=False, streamed=True)]
    content = _content(got, fmt, quality=quality, preview=preview, encoding=chunks.encoding,
                       state="table")
    return ResourceResult(ResourceOutcome(target.res, target.rid, content, []))


def _check_collapse(ctx: JobContext, target: _Target, cid: str, rows: int) -> None:
    """A new version with a fraction of the rows of the one served is far more often a cut
    download or a broken export than a real change (issue 11: a third of a 30,000-row CSV
    sent with `Connection: close` and no length replaced the whole): not published; the
    served version stays. `min_row_share` (source option, else RENKEI_MIN_ROW_SHARE; 0
    turns the check off) is the share below which a version counts as collapsed."""
    served = target.held.counts.get(cid)
    share = float(ctx.source.options.get("min_row_share", ctx.settings.min_row_share))
    if served and rows < share * served:
        raise HarvestFailure(
            "publish", f"the new version has {rows:,} features where {served:,} are served "
            f"(under {share:.0%}); it looks cut or broken and is not published, the served "
            f"version stays (set min_row_share: 0 on the source for one run if the drop is "
            f"real)", **target.where)


def table_preview(frame) -> dict:
    import pandas as pd
    head = frame.head(PREVIEW_ROWS)
    rows = [["" if pd.isna(v) else str(v) for v in row] for row in head.itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows, "total": int(len(frame))}


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return slug or hashlib.sha1(name.encode()).hexdigest()[:8]


def process_upload(ctx: JobContext, remote: RemoteDataset, dataset_id: str,
                   files: dict, *, access_level: str, status: str = "active") -> DatasetOutcome:
    """A dataset a member publishes: resources whose remote_id is in `files` are read from
    that local file and translated exactly as a harvested download is; the others are links,
    recorded and never fetched (a member's URL is not ours to request from the server).
    Nothing is switched when an uploaded file cannot be read: the outcome is `failed` with the
    reason, and what was published before keeps serving."""
    try:
        with stage("publish", dataset=remote.title):
            held = _held(ctx, dataset_id)
    except HarvestFailure as exc:
        return DatasetOutcome(dataset_id, "failed", [exc.error()])
    several = len(remote.resources) > 1
    results = []
    for res in remote.resources:
        target = _Target(remote, res, resource_id_for(dataset_id, res), several, held)
        if res.remote_id in files:
            results.append(_process_local(ctx, target, files[res.remote_id]))
        elif target.rid in held.resources:   # kept as it is
            results.append(ResourceResult(ResourceOutcome(res, target.rid)))
        else:                                # a new link: listed, downloadable at its URL
            results.append(ResourceResult(ResourceOutcome(
                res, target.rid, ResourceContent(state="other", sha256=None, size=res.size))))
    failures = [e for r in results if r.outcome.failed for e in r.errors]
    if failures:
        return DatasetOutcome(dataset_id, "failed", failures)
    with stage("publish", dataset=remote.title):
        publish.publish_dataset(ctx.store, ctx.source, remote, dataset_id, metadata_hash(remote),
                                [r.outcome for r in results], ctx.organizations,
                                access_level=access_level, status=status)
    return DatasetOutcome(dataset_id, "updated" if held.exists else "added",
                          [e for r in results for e in r.errors])


def _process_local(ctx: JobContext, target: _Target, path) -> ResourceResult:
    where = target.where
    try:
        with stage("fetch", **where):
            # The member's file, staged by the server: the one local path this dataset may
            # name, read inside its staging folder only.
            got = fetch(str(path), ctx.cache_dir, max_bytes=ctx.settings.max_download,
                        local=LocalReads(root=Path(path).parent), **where)
        prev = target.previous
        if prev is not None and prev.sha256 == got.sha256:
            return ResourceResult(ResourceOutcome(target.res, target.rid))
        with stage("translate", **where):
            from geo.readers import detect_format
            fmt = detect_format(got.path, target.res.format)
        return _read_resource(ctx, target, got, fmt)
    except HarvestFailure as exc:
        return ResourceResult(ResourceOutcome(target.res, target.rid, error=exc.message),
                              [exc.locate(**where).error()])
