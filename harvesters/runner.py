"""A harvest job per source: lock, enumerate, process each dataset, withdraw what is gone,
rebuild the theme layers, record everything.

A job runs to completion in this process, within the source's time limit (`time_limit`
seconds, default 3600): past it the job stops where it is, nothing half-done is switched, and
the job is recorded as failed with the reason. Every error is recorded with its stage,
dataset, resource, row and traceback; nothing published before is removed by a failure. A job
left "running" by a killed process is closed as failed by the next run (the lock tells us it
died). Errors go to the job record and the summary, never as a traceback to the terminal.
The lock is store.locks': an flock in the data dir, or a PostgreSQL advisory lock when the
catalogue is there (harvests on several machines); a job whose lock connection is lost stops.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Iterator

from sqlalchemy import select

from store import features_pg, locks
from store.db import Dataset, HarvestError, HarvestJob, Source, Store, utcnow
from store.locks import SourceLocked
from store.theme_layers import THEME_SOURCE, publish_theme_layers
from store.versions import remove_stale_versions
from harvesters.auth import redact
from harvesters.base import (Harvester, HarvestFailure, JobError, RemoteDataset, SourceConfig,
                             stage)
from harvesters.config import DEFAULT_TIME_LIMIT, harvester_for
from harvesters.context import HarvestSettings, JobContext
from harvesters.http import session_for
from harvesters.pipeline import process_dataset

MAX_WITHDRAW = 0.2        # share of a source's datasets one run may withdraw
INCREMENTAL_MARGIN = 3600  # seconds before the last good job's start, for clock skew


@dataclass
class JobReport:
    source: str
    job_id: int | None
    status: str = "done"   # done | failed | locked
    counts: Counter = field(default_factory=Counter)
    errors: list[JobError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class TimeLimitExceeded(BaseException):
    """BaseException: no `except Exception` on the way may swallow it."""


def source_lock(store: Store, name: str):
    """One harvest per source, across processes and machines (store.locks)."""
    return locks.exclusive(store, name)


@contextmanager
def time_limit(seconds: float):
    """Interrupt the job wherever it is (a hanging read included) once `seconds` have passed.
    Signals only reach the main thread; elsewhere the runner's checks between datasets do."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum, _frame):
        raise TimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_harvest(store: Store, sources: list[SourceConfig], orgs: dict, *,
                settings: HarvestSettings | None = None, timeout: float | None = None,
                log=None) -> list[JobReport]:
    """Sources one after another; each is bounded by its own time limit, so a slow or dead
    source delays the others by at most that, and never fails them. Without `settings`, they
    are read from the environment now (the CLI reads them when the command starts)."""
    settings = settings or HarvestSettings.from_environ()
    if timeout is not None:
        settings = replace(settings, timeout=timeout)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    reports = [run_source(store, src, orgs, settings, log) for src in sources]
    _sweep(store, log)
    return reports


def _sweep(store: Store, log) -> None:
    """Drop the superseded feature tables whose grace period is over, of every collection
    (PostgreSQL mode): those this run retired stay for the next run or `renkei db sweep`. A
    failing sweep is said, never a failed harvest: the tables wait for the next one."""
    if not store.postgresql:
        return
    try:
        dropped = features_pg.drop_superseded(store.engine)
    except Exception as exc:   # noqa: BLE001 (the run's own work is done and recorded)
        log(f"sweep of superseded feature tables failed ({exc.__class__.__name__}); "
            "`renkei db sweep` retries it")
        return
    if dropped:
        log(f"superseded feature tables dropped: {dropped}")


def run_source(store: Store, source: SourceConfig, orgs: dict, settings: HarvestSettings,
               log) -> JobReport:
    started = time.monotonic()
    try:
        with source_lock(store, source.name) as lock:
            _close_abandoned_jobs(store, source.name)
            report = _run_locked(store, source, orgs, settings, log, lock)
    except SourceLocked as exc:
        log(f"[{source.name}] {exc}; skipped")
        report = JobReport(source.name, None, status="locked", warnings=[str(exc)])
    report.seconds = time.monotonic() - started
    return report


def _run_locked(store: Store, source: SourceConfig, orgs: dict, settings: HarvestSettings,
                log, lock: locks.Lock) -> JobReport:
    report = JobReport(source.name, _open_job(store, source))
    try:
        with stage("enumerate"):
            harvester = harvester_for(source, settings.timeout, store.data_dir / "cache")
            harvester.max_page_bytes = settings.max_page
    except HarvestFailure as exc:   # options a SourceConfig built in code got wrong
        report.status = "failed"
        report.errors.append(exc.error())
        _record(store, report, [])
        return report
    secrets = harvester.secrets

    def say(msg: str) -> None:
        log(redact(msg, secrets()))

    limit = float(source.options.get("time_limit", DEFAULT_TIME_LIMIT))
    ctx = JobContext(store=store, source=source, organizations=orgs, settings=settings,
                     http=session_for(source.options), time_limit=limit,
                     deadline=time.monotonic() + limit, log=say)
    seen: set[str] = set()
    say(f"[{source.name}] harvesting {source.type} {source.url or ''}".rstrip())
    try:
        with time_limit(limit):
            with stage("enumerate"):
                _prepare_incremental(ctx, harvester)
            for remote in _enumerated(harvester):
                seen.add(remote.name)
                _process(ctx, remote, report)
                _heartbeat(store, report.job_id)
                if not lock.alive():
                    raise HarvestFailure("enumerate", "the database connection holding this "
                                         "source's lock was lost; the job stopped, so that no "
                                         "other harvest of the source runs beside it")
                if ctx.expired():
                    raise TimeLimitExceeded()
    except TimeLimitExceeded:
        report.status = "failed"
        harvester.complete = False
        report.errors.append(JobError(
            "enumerate", f"time limit of {limit:g} s exceeded; the job stopped after "
            f"{sum(report.counts.values())} datasets (what was published stays)"))
    except HarvestFailure as exc:
        report.errors.append(exc.error())
        report.status = "failed"
        harvester.complete = False
    failures = harvester.failures
    if failures and not seen:
        report.status = "failed"  # nothing of the source could be read: the source failed
    report.errors.extend(failures)
    report.counts["failed"] += len(failures)
    report.counts["unchanged"] += harvester.skipped_unchanged
    report.warnings.extend(harvester.warnings)
    if harvester.complete and report.status == "done":
        present = harvester.present_names
        try:
            with stage("withdraw"):
                _withdraw_missing(ctx, present if present is not None else seen, report)
        except HarvestFailure as exc:
            report.errors.append(exc.error())
    elif report.status == "done":
        report.warnings.append("the source was not enumerated completely: nothing withdrawn")
    report.errors.extend(_rebuild_theme_layers(ctx))
    _record(store, report, secrets())
    return report


def _open_job(store: Store, source: SourceConfig) -> int:
    with store.session() as s, s.begin():
        src = s.get(Source, source.name) or Source(name=source.name)
        src.type, src.url, src.organization_id = source.type, source.url, source.organization
        s.add(src)
        job = HarvestJob(source_name=source.name, heartbeat_at=utcnow())
        s.add(job)
        s.flush()
        return job.id


def _enumerated(harvester: Harvester) -> Iterator[RemoteDataset]:
    """The harvester's datasets; an exception it did not foresee ends the enumeration as an
    error of that stage (nothing is withdrawn after an incomplete one)."""
    with stage("enumerate"):
        yield from harvester.enumerate()


def _process(ctx: JobContext, remote: RemoteDataset, report: JobReport) -> None:
    outcome = process_dataset(ctx, remote)
    report.counts[outcome.status] += 1
    report.errors.extend(outcome.errors)
    ctx.log(f"[{ctx.source.name}] {outcome.status:9} {remote.title}")


def _rebuild_theme_layers(ctx: JobContext) -> list[JobError]:
    """Merged layers of the themes whose members changed. A theme that cannot be rebuilt is
    an error of this job (its previous version keeps serving); the other themes go on."""
    try:
        with stage("theme-layers", dataset=THEME_SOURCE):
            rebuild = publish_theme_layers(ctx.store, log=ctx.log)
    except HarvestFailure as exc:
        return [exc.error()]
    return [JobError("theme-layers", f.message, dataset=f.title, resource=f.collection_id,
                     traceback=f.traceback) for f in rebuild.failed]


def _prepare_incremental(ctx: JobContext, harvester: Harvester) -> None:
    """Tell an incremental harvester what we hold and since when nothing failed."""
    if not harvester.incremental:
        return
    source = ctx.source
    with ctx.store.session() as s:
        last = s.scalars(select(HarvestJob).where(
            HarvestJob.source_name == source.name, HarvestJob.status == "done",
            HarvestJob.failed == 0, ~HarvestJob.errors.any())
            .order_by(HarvestJob.id.desc()).limit(1)).first()
        harvester.known_names = set(s.scalars(select(Dataset.name).where(
            Dataset.source_name == source.name, Dataset.status == "active")))
    if last is not None:
        margin = float(source.options.get("incremental_margin", INCREMENTAL_MARGIN))
        harvester.since = last.started_at - timedelta(seconds=margin)


def _withdraw_missing(ctx: JobContext, present: set[str], report: JobReport) -> None:
    """Withdraw (never purge) datasets gone from a completely enumerated source, unless so
    many are gone that the source itself is more likely broken than emptied."""
    source, store = ctx.source, ctx.store
    cap = float(source.options.get("max_withdraw", MAX_WITHDRAW))
    with store.session() as s, s.begin():
        active = list(s.scalars(select(Dataset).where(Dataset.source_name == source.name,
                                                      Dataset.status == "active")))
        gone = [d for d in active if d.name not in present]
        if not gone:
            return
        if len(gone) > cap * len(active):
            names = ", ".join(d.title for d in gone[:10]) + (" …" if len(gone) > 10 else "")
            report.warnings.append(
                f"{len(gone)} of {len(active)} datasets are no longer offered by the source "
                f"(over {cap:.0%}): nothing withdrawn; check the source, or raise max_withdraw "
                f"for one run if the removal is real ({names})")
            return
        released = []
        for ds in gone:
            ds.status, ds.updated_at = "withdrawn", utcnow()
            store.search.delete(s.connection(), ds.id)
            if features_pg.enabled(store.data_dir):
                released += _release_tables(s, ds)
            ctx.log(f"[{source.name}] withdrawn {ds.title}")
        store.bump_version(s)
        report.counts["withdrawn"] += len(gone)
    for cid in released:   # after the switch: readers of the old tables finish first
        remove_stale_versions(store.data_dir, cid, None)


def _release_tables(s, ds: Dataset) -> list[str]:
    """PostgreSQL mode: a withdrawn dataset's version tables go (its record stays). Its
    collections go with them, and its resources forget what was fetched, so a dataset that
    comes back is translated and written again rather than pointing at dropped tables."""
    cids = [c.id for c in ds.collections]
    for col in list(ds.collections):
        s.delete(col)
    for res in ds.resources:
        res.sha256 = res.etag = res.last_modified = None
    return cids


def _heartbeat(store: Store, job_id: int) -> None:
    with store.session() as s, s.begin():
        s.get(HarvestJob, job_id).heartbeat_at = utcnow()


def _record(store: Store, report: JobReport, secrets: list[str]) -> None:
    # Nothing a source's credentials produced may be stored, tracebacks included.
    report.errors = [replace(e, message=redact(e.message, secrets),
                             dataset=redact(e.dataset, secrets),
                             resource=redact(e.resource, secrets),
                             traceback=redact(e.traceback, secrets)) for e in report.errors]
    report.warnings = [redact(w, secrets) for w in report.warnings]
    with store.session() as s, s.begin():
        job = s.get(HarvestJob, report.job_id)
        job.finished_at = job.heartbeat_at = utcnow()
        job.status = report.status
        for key in ("added", "updated", "unchanged", "withdrawn", "failed"):
            setattr(job, key, report.counts.get(key, 0))
        job.message = "\n".join(report.warnings) or None
        for err in report.errors:
            s.add(HarvestError(job_id=job.id, stage=err.stage, dataset=err.dataset,
                               resource=err.resource, row=err.row, message=err.message,
                               traceback=err.traceback))
        src = s.get(Source, report.source)
        if report.status == "done" and not report.errors:
            src.last_success = job.finished_at
        else:
            src.last_failure = job.finished_at


def _close_abandoned_jobs(store: Store, name: str) -> None:
    """We hold the lock, so a job still marked running for this source died with its process."""
    with store.session() as s, s.begin():
        for job in s.query(HarvestJob).filter_by(source_name=name, status="running"):
            job.status, job.finished_at = "failed", utcnow()
            last = job.heartbeat_at or job.started_at
            job.message = (f"the harvest process ended before the job finished (last sign of "
                           f"life {last:%Y-%m-%d %H:%M:%S} UTC); closed by the next run")


def exit_code(reports: list[JobReport]) -> int:
    return 0 if all(r.status == "done" and not r.errors for r in reports) else 1


def group_errors(errors) -> list[dict]:
    """Errors grouped by stage and message, each with every place it happened: one line per
    problem, however many rows or datasets share it (no "first twenty only"), and the first
    traceback among them for staff (errors recorded before tracebacks were kept have none)."""
    groups: dict[tuple, dict] = {}
    for e in errors:
        g = groups.setdefault((e.stage, e.message), {"stage": e.stage, "message": e.message,
                                                     "count": 0, "places": {},
                                                     "traceback": None})
        g["count"] += 1
        g["traceback"] = g["traceback"] or e.traceback
        rows = g["places"].setdefault((e.dataset, e.resource), [])
        if e.row is not None:
            rows.append(e.row)
    out = []
    for g in groups.values():
        g["places"] = [{"dataset": d, "resource": r, "rows": sorted(rows)}
                       for (d, r), rows in g["places"].items()]
        out.append(g)
    return sorted(out, key=lambda g: (-g["count"], g["stage"], g["message"]))


def _rows_text(rows: list[int]) -> str:
    if not rows:
        return ""
    return f" (row {', '.join(map(str, rows[:20]))}{f' … {len(rows)} rows' if len(rows) > 20 else ''})"


def summary(reports: list[JobReport], redact=lambda text: text) -> str:
    """The table a cron mail shows: counts per source, then every error grouped by message.
    `redact` is applied to every text a source supplied (its URLs in resources, messages and
    warnings): the command passes catalog.public_text.redact_text, as the pages do, since a
    cron mail travels further than the job record."""
    lines = [f"{'source':20} {'status':7} {'added':>6} {'updated':>8} {'unchanged':>10} "
             f"{'withdrawn':>10} {'failed':>7} {'seconds':>8}"]
    for r in reports:
        c = r.counts
        lines.append(f"{r.source:20} {r.status:7} {c['added']:>6} {c['updated']:>8} "
                     f"{c['unchanged']:>10} {c['withdrawn']:>10} {c['failed']:>7} "
                     f"{r.seconds:>8.1f}")

    def place(p):
        return " / ".join(redact(x) for x in (r.source, p["dataset"], p["resource"]) if x)

    for r in reports:
        for w in r.warnings:
            lines.append(f"warning [{r.source}] {redact(w)}")
        for g in group_errors(r.errors):
            places, message = g["places"], redact(g["message"])
            if len(places) == 1:
                p = places[0]
                lines.append(f"error [{g['stage']}] {place(p)}: {message}"
                             f"{_rows_text(p['rows'])}")
                continue
            lines.append(f"error [{g['stage']}] {r.source}: {message} "
                         f"({g['count']} times, {len(places)} places)")
            for p in places:
                lines.append(f"    {place(p)}{_rows_text(p['rows'])}")
    return "\n".join(lines)
