"""A harvest job per source: lock, enumerate, process each dataset, record everything.

A job runs to completion in this process. Whatever fails is recorded with its stage, dataset,
resource and row; nothing published before is removed by a failure.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from catalog.store import HarvestError, HarvestJob, Source, Store, utcnow
from harvesters.base import HarvestFailure, SourceConfig
from harvesters.config import harvester_for
from harvesters.pipeline import process_dataset


@dataclass
class JobReport:
    source: str
    job_id: int | None
    status: str = "done"   # done | failed | locked
    counts: Counter = field(default_factory=Counter)
    errors: list[HarvestFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class SourceLocked(Exception):
    pass


@contextmanager
def source_lock(data_dir: Path, name: str):
    """An advisory lock the kernel drops when the process dies: no stale lock after a crash."""
    folder = Path(data_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / f"{name}.lock", "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise SourceLocked(f"source {name!r} is being harvested by another process") from exc
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def run_harvest(store: Store, sources: list[SourceConfig], orgs: dict, *,
                timeout: float = 30.0, log=None) -> list[JobReport]:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    return [run_source(store, src, orgs, timeout=timeout, log=log) for src in sources]


def run_source(store: Store, source: SourceConfig, orgs: dict, *, timeout: float,
               log) -> JobReport:
    started = time.monotonic()
    try:
        with source_lock(store.data_dir, source.name):
            _close_abandoned_jobs(store, source.name)
            report = _run_locked(store, source, orgs, timeout=timeout, log=log)
    except SourceLocked as exc:
        log(f"[{source.name}] {exc}; skipped")
        report = JobReport(source.name, None, status="locked", warnings=[str(exc)])
    report.seconds = time.monotonic() - started
    return report


def _run_locked(store: Store, source: SourceConfig, orgs: dict, *, timeout, log) -> JobReport:
    with store.session() as s, s.begin():
        src = s.get(Source, source.name) or Source(name=source.name)
        src.type, src.url, src.organization_id = source.type, source.url, source.organization
        s.add(src)
        job = HarvestJob(source_name=source.name)
        s.add(job)
        s.flush()
        report = JobReport(source.name, job.id)
    harvester = harvester_for(source, timeout)
    http = requests.Session()
    log(f"[{source.name}] harvesting {source.type} {source.url or ''}".rstrip())
    try:
        for remote in harvester.enumerate():
            try:
                outcome = process_dataset(store, source, remote, orgs, session=http,
                                          timeout=timeout)
            except HarvestFailure as exc:
                exc.dataset = exc.dataset or remote.title
                report.counts["failed"] += 1
                report.errors.append(exc)
                continue
            except Exception as exc:  # a bug or an unexpected input must not stop the job
                report.counts["failed"] += 1
                report.errors.append(HarvestFailure(
                    "publish", f"{type(exc).__name__}: {exc}", dataset=remote.title))
                continue
            report.counts[outcome.status] += 1
            report.errors.extend(outcome.errors)
            log(f"[{source.name}] {outcome.status:9} {remote.title}")
    except HarvestFailure as exc:
        report.errors.append(exc)
        report.status = "failed"
    report.warnings.extend(harvester.warnings)
    _record(store, report)
    return report


def _record(store: Store, report: JobReport) -> None:
    with store.session() as s, s.begin():
        job = s.get(HarvestJob, report.job_id)
        job.finished_at = utcnow()
        job.status = report.status
        for key in ("added", "updated", "unchanged", "withdrawn", "failed"):
            setattr(job, key, report.counts.get(key, 0))
        job.message = "\n".join(report.warnings) or None
        for err in report.errors:
            s.add(HarvestError(job_id=job.id, stage=err.stage, dataset=err.dataset,
                               resource=err.resource, row=err.row, message=err.message))
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
            job.message = "the harvest process ended before the job finished"


def exit_code(reports: list[JobReport]) -> int:
    return 0 if all(r.status == "done" and not r.errors for r in reports) else 1


def summary(reports: list[JobReport]) -> str:
    """The table a cron mail shows: counts per source, then every error grouped by message."""
    lines = [f"{'source':20} {'status':7} {'added':>6} {'updated':>8} {'unchanged':>10} "
             f"{'withdrawn':>10} {'failed':>7} {'seconds':>8}"]
    for r in reports:
        c = r.counts
        lines.append(f"{r.source:20} {r.status:7} {c['added']:>6} {c['updated']:>8} "
                     f"{c['unchanged']:>10} {c['withdrawn']:>10} {c['failed']:>7} "
                     f"{r.seconds:>8.1f}")
    for r in reports:
        for w in r.warnings:
            lines.append(f"warning [{r.source}] {w}")
        groups: dict[tuple, list[HarvestFailure]] = {}
        for e in r.errors:
            groups.setdefault((e.stage, e.dataset, e.resource, e.message), []).append(e)
        for (stage, dataset, resource, message), errs in groups.items():
            rows = sorted(e.row for e in errs if e.row is not None)
            where = " / ".join(x for x in (r.source, dataset, resource) if x)
            row_text = f" (row {', '.join(map(str, rows[:20]))}{' …' if len(rows) > 20 else ''})" \
                if rows else ""
            lines.append(f"error [{stage}] {where}: {message}{row_text}")
    return "\n".join(lines)
