"""Staff status pages for harvesting: `/harvest` (sources and jobs) and `/harvest/<job>`
(counts, every error grouped by message with its stage, and each dataset's provenance).

Tracebacks stay in the job record (`renkei jobs --tracebacks`): they name server paths. The
pages are for signed-in members (catalog.pages.staff_access): sources and jobs of their
organizations, all of them for sysadmins; even so URLs are shown redacted
(catalog.public_text): no userinfo, no keys.

Read-only and server-rendered, in Japanese. Errors come grouped by harvesters.runner's
group_errors, the same grouping as the CLI summary, so a page and a cron mail never disagree.
"""
from __future__ import annotations

import json

from flask import Blueprint, abort, render_template, request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from catalog import auth
from catalog.pages.common import _store
from catalog.pages import staff_access
from catalog.pages.staff_access import staff_only
from catalog.public_text import public_url, redact_doc
from store import locks
from store.access import staff_organizations
from store.db import Dataset, HarvestError, HarvestJob, Organization, Source
from harvesters.runner import group_errors

bp = Blueprint("harvest", __name__)
bp.record_once(lambda state: staff_access.init_app(state.app))

JOBS_PER_PAGE = 50
SQLITE_MAX_INT = 2**63 - 1
PROVENANCE_LIMIT = 500  # datasets shown on one job page; a source larger than this is paged
STATUS_LABELS = {"done": "完了", "failed": "失敗", "running": "実行中", "locked": "実行中のためスキップ"}
STAGE_LABELS = {"enumerate": "一覧取得", "fetch": "ダウンロード", "translate": "変換",
                "publish": "公開", "withdraw": "取り下げ", "theme-layers": "統合レイヤーの再構築"}


def _job_state(job: HarvestJob, store) -> str:
    """A job marked running whose source lock nobody holds died with its process (the lock is
    an flock, or a PostgreSQL advisory lock seen from any web server: store.locks)."""
    if job.status == "running" and not locks.held(store, job.source_name):
        return "abandoned"
    return job.status


def _visible_sources(s) -> list[Source]:
    """Sources of the caller's organizations (all of them for a sysadmin)."""
    orgs = staff_organizations(auth.principal())
    stmt = select(Source).order_by(Source.name)
    if orgs is not None:
        stmt = stmt.where(Source.organization_id.in_(orgs))
    return list(s.scalars(stmt))


def _job_filter(s):
    """Jobs of the visible sources; a sysadmin also sees jobs of sources since removed."""
    if staff_organizations(auth.principal()) is None:
        return HarvestJob.id.is_not(None)
    return HarvestJob.source_name.in_([src.name for src in _visible_sources(s)])


@bp.route("/harvest")
@staff_only
def jobs():
    store = _store()
    source = request.args.get("source") or None
    try:
        page = max(1, int(request.args.get("page") or 1))
        if (page - 1) * JOBS_PER_PAGE > SQLITE_MAX_INT:  # SQLite's OFFSET is 64-bit
            raise ValueError
    except ValueError:
        abort(400, description="ページ番号は数字で指定してください（大きすぎる値は使えません）。")
    with store.session() as s:
        sources = _visible_sources(s)
        latest = {}
        for src in sources:
            latest[src.name] = s.scalars(select(HarvestJob).where(
                HarvestJob.source_name == src.name).order_by(HarvestJob.id.desc()).limit(1)).first()
        stmt = select(HarvestJob).where(_job_filter(s)).order_by(HarvestJob.id.desc())
        if source:
            stmt = stmt.where(HarvestJob.source_name == source)
        rows = list(s.scalars(stmt.offset((page - 1) * JOBS_PER_PAGE).limit(JOBS_PER_PAGE + 1)))
        error_counts = dict(s.execute(
            select(HarvestError.job_id, func.count()).where(
                HarvestError.job_id.in_([j.id for j in rows])).group_by(HarvestError.job_id)).all())
        states = {j.id: _job_state(j, store) for j in rows}
        states.update({j.id: _job_state(j, store) for j in latest.values() if j})
    return render_template("harvest.html", sources=sources, latest=latest,
                           jobs=rows[:JOBS_PER_PAGE], more=len(rows) > JOBS_PER_PAGE,
                           page=page, source=source, error_counts=error_counts, states=states,
                           labels=STATUS_LABELS)


@bp.route("/harvest/<int:job_id>")
@staff_only
def job(job_id: int):
    store = _store()
    with store.session() as s:
        # A number past SQLite's 64-bit integers names no job (and would overflow the query).
        job_ = (s.get(HarvestJob, job_id, options=[selectinload(HarvestJob.errors)])
                if job_id <= SQLITE_MAX_INT else None)
        if job_ is None or s.scalar(select(HarvestJob.id).where(
                HarvestJob.id == job_id, _job_filter(s))) is None:
            return render_template("error.html", status=404, heading="収集ジョブが見つかりません",
                                   message=f"番号 {job_id} の収集ジョブはありません。"), 404
        src = s.get(Source, job_.source_name)
        datasets = list(s.scalars(
            select(Dataset).where(Dataset.source_name == job_.source_name, auth.read_where())
            .options(selectinload(Dataset.resources), selectinload(Dataset.collections))
            .order_by(Dataset.title).limit(PROVENANCE_LIMIT + 1)))
        orgs = {o.id: o for o in s.scalars(select(Organization))}
        # Redacted: a source's raw record carries its resource URLs, keys and all.
        provenance = [{"ds": d, "raw": _pretty(redact_doc(d.raw)),
                       "record": _pretty(redact_doc(_record(d, orgs)))}
                      for d in datasets[:PROVENANCE_LIMIT]]
        groups = group_errors(job_.errors)
        state = _job_state(job_, store)
    return render_template("harvest_job.html", job=job_, source=src, groups=groups,
                           provenance=provenance, truncated=len(datasets) > PROVENANCE_LIMIT,
                           state=state, labels=STATUS_LABELS, stage_labels=STAGE_LABELS,
                           warnings=(job_.message or "").splitlines())


def _record(ds: Dataset, orgs: dict) -> dict:
    """The translated catalogue record, as the catalogue holds it now."""
    org = orgs.get(ds.organization_id)
    return {
        "id": ds.id, "status": ds.status, "title": ds.title, "description": ds.description,
        "tags": ds.tags, "theme": ds.theme,
        "organization": {"id": ds.organization_id, "name_ja": org.name_ja if org else None,
                         "code": org.code if org else None},
        "license": {"id": ds.license_id, "title": ds.license_title, "url": ds.license_url},
        "issued": ds.issued, "modified": ds.modified, "landing_page": ds.landing_page,
        "bbox": ds.bbox,
        "resources": [{"name": r.name, "url": public_url(r.url), "format": r.format,
                       "detected_format": r.detected_format, "state": r.state,
                       "message": r.message, "sha256": r.sha256, "size": r.size,
                       "encoding": r.encoding} for r in ds.resources],
        "collections": [{"id": c.id, "title": c.title, "features": c.feature_count,
                         "version": c.version, "status": c.status} for c in ds.collections],
    }


def _pretty(doc) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True, default=str)
