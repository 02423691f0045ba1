"""Metering: every response of the open APIs becomes one usage event (store.usage).

The request path does only what cannot be done later: it notes the clock at the start, and at
the end appends one tuple (time, caller, path facts, status, bytes, features, duration) to an
in-process deque. A writer thread per process drains it every `interval` seconds, or sooner
when `batch` events wait, resolves collection and dataset ids to datasets and owner
organizations, and writes the batch in one INSERT. It also mails quota warnings (80 %, 100 % of
the monthly requests of the terms) to a token's owner. Streamed bodies of unknown length are
counted as they are sent, and the event is queued when the body is closed.

Open APIs: /ogcapi/ (tiles when the path has /tiles/), the CKAN API, downloads, DCAT and the
hazard lookup. Pages are not metered.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone

from flask import g, request
from sqlalchemy import select

from catalog.response_headers import header
from store import terms as terms_store
from store import usage
from store.accounts import ApiToken, User
from store.db import Collection, Dataset, Resource

LOGGER = logging.getLogger(__name__)
DOWNLOAD = re.compile(r"/datasets/([^/]+)/collections/([^/]+)\.(?:geojson|csv|gpkg)$")
DCAT_DATASET = re.compile(r"/datasets/(.+)\.(?:jsonld|ttl|rdf)$")
ITEM = re.compile(r"/collections/([^/]+)/items/[^/]+$")
NUMBER_RETURNED = re.compile(rb'"numberReturned"\s*:\s*(\d+)')
SMALL_BODY = 64 * 1024   # a CKAN action body the hook may read again for its id
MAP_TTL = 10.0   # seconds a dataset map is trusted before the writer reloads it


def interface(path: str) -> str | None:
    """The open API a path belongs to, or None (not metered)."""
    if path.startswith("/ogcapi/"):
        return "tiles" if "/tiles/" in path else "ogcapi"
    if path.startswith(("/api/3/action/", "/api/action/")):
        return "ckan"
    if path.startswith("/catalog."):
        return "dcat"
    if path.startswith("/datasets/"):
        if DOWNLOAD.search(path):
            return "download"
        if DCAT_DATASET.match(path):
            return "dcat"
        return None
    if path.startswith("/api/hazards"):
        return "hazards"
    return None


def _ckan_id() -> str | None:
    """The dataset or resource a CKAN action names: `id` (or `package_id` of a resource
    action) in the query, or in the body the view has already parsed (JSON or form)."""
    value = request.args.get("id")
    if value is None and request.method == "POST":
        # Only a body the view has parsed: the hook must never read (or choke on) one itself,
        # e.g. a body over the size cap that was answered 413.
        parsed = request.__dict__
        body = None
        if parsed.get("form"):
            body = parsed["form"]
        elif "_cached_json" in parsed:   # werkzeug: (normal, silent)
            body = next((b for b in parsed["_cached_json"] if b is not Ellipsis), None)
        if body is None and 0 < len(parsed.get("_cached_data") or b"") <= SMALL_BODY:
            try:
                body = json.loads(parsed["_cached_data"])
            except ValueError:
                body = None
        if body is not None and hasattr(body, "get"):
            value = body.get("id") or body.get("package_id")
    return value if isinstance(value, str) else None


def _content_length(resp) -> int | None:
    """resp.content_length, without werkzeug's two header lookups (``in``, then the value)."""
    value = header(resp.headers, "content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


class Meter:
    def __init__(self, app, store, *, batch: int = 500, interval: float = 1.0):
        self.app, self.store = app, store
        self.batch, self.interval = batch, interval
        self.queue: deque = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()      # one writer at a time (thread or flush())
        self._pid = None
        self._thread = None
        self._map: dict = {}
        self._map_at = 0.0

    # -- the request path ---------------------------------------------------------------------

    def before(self):
        if interface(request.path) is not None:
            g._meter_t0 = time.perf_counter()

    def after(self, resp):
        ctx_g = g._get_current_object()   # one proxy lookup, not one per use
        t0 = ctx_g.pop("_meter_t0", None)
        if t0 is None:
            return resp
        path = request.path
        p = ctx_g.get("principal")
        ident = (p.token_id, p.user_id, tuple(p.roles)) if p is not None and p.signed_in \
            else (None, None, ())
        status = resp.status_code
        features = 0
        key = _ckan_id() if path[1] == "a" else None   # CKAN: package/resource id
        size = _content_length(resp)
        if size is not None or not resp.is_streamed:
            if size is None:
                size = len(resp.get_data())
            if status == 200 and path.endswith("/items"):
                data = resp.get_data()
                m = NUMBER_RETURNED.search(data, max(0, len(data) - 4096)) or \
                    NUMBER_RETURNED.search(data)
                features = int(m.group(1)) if m else 0
            elif status == 200 and path[1] == "o" and ITEM.search(path):
                features = 1
            self._push((time.time(), ident, path, key, status, size, features,
                        (time.perf_counter() - t0) * 1000.0))
        else:
            counted = [0]
            inner = resp.iter_encoded()   # bytes as sent (a text chunk may be longer in UTF-8)

            def counting():
                for chunk in inner:
                    counted[0] += len(chunk)
                    yield chunk
            resp.response = counting()
            now = time.time()
            resp.call_on_close(lambda: self._push(
                (now, ident, path, key, status, counted[0], features,
                 (time.perf_counter() - t0) * 1000.0)))
        return resp

    def _push(self, event) -> None:
        self.queue.append(event)
        if self._pid != os.getpid():      # first event in this process (gunicorn forks)
            self._start()
        if len(self.queue) >= self.batch:
            self._wake.set()

    # -- the writer ---------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="renkei-meter", daemon=True)
            self._thread.start()
            # A worker that stops (gunicorn's graceful exit runs atexit) writes what it holds.
            atexit.register(self._last_flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:   # the writer must outlive a bad batch; the log says why
                LOGGER.exception("usage events could not be written")

    def _last_flush(self) -> None:
        try:
            self.flush()
        except Exception:
            LOGGER.exception("usage events could not be written at exit")

    def flush(self) -> int:
        """Write every queued event now; returns how many."""
        with self._lock:
            events = []
            while self.queue:
                events.append(self.queue.popleft())
            if not events:
                return 0
            rows = [self._row(e) for e in events]
            usage.write_events(self.store.engine, rows)
            tokens = {r["token_id"] for r in rows if r["token_id"] is not None}
            if tokens:
                self._quota_warnings(tokens)
            return len(rows)

    def _datasets(self) -> dict:
        now = time.monotonic()
        if now - self._map_at > MAP_TTL:
            m: dict = {}
            with self.store.session() as s:
                for ds_id, name, org in s.execute(select(Dataset.id, Dataset.name,
                                                          Dataset.organization_id)):
                    m[("d", ds_id)] = m[("d", name)] = (ds_id, org, 0)
                for rid, ds_id, org in s.execute(select(Resource.id, Resource.dataset_id,
                                                        Dataset.organization_id)
                                                 .join(Dataset)):
                    m[("d", rid)] = (ds_id, org, 0)
                for cid, ds_id, org, count in s.execute(
                        select(Collection.id, Collection.dataset_id, Dataset.organization_id,
                               Collection.feature_count).join(Dataset)):
                    m[("c", cid)] = (ds_id, org, count)
            self._map, self._map_at = m, now
        return self._map

    def _row(self, e) -> dict:
        at, (token_id, user_id, roles), path, key, status, size, features, ms = e
        iface = interface(path)
        dmap = self._datasets()
        found = None
        if iface in ("ogcapi", "tiles"):
            parts = path.split("/")
            if len(parts) > 3 and parts[2] == "collections":
                found = dmap.get(("c", parts[3]))
        elif iface == "ckan" and key:
            found = dmap.get(("d", key))
        elif iface == "download":
            m = DOWNLOAD.search(path)
            found = dmap.get(("c", m.group(2))) or dmap.get(("d", m.group(1)))
            if found and status == 200:
                features = found[2]
        elif iface == "dcat" and path.startswith("/datasets/"):
            found = dmap.get(("d", DCAT_DATASET.match(path).group(1)))
        consumer = sorted(roles)[0] if roles else None
        return {"at": datetime.fromtimestamp(at, timezone.utc).replace(tzinfo=None),
                "token_id": token_id, "user_id": user_id, "consumer_org": consumer,
                "dataset_id": found[0] if found else None,
                "owner_org": found[1] if found else None, "interface": iface,
                "status": status, "bytes": int(size or 0), "features": int(features),
                "duration_ms": ms}

    def _quota_warnings(self, token_ids: set[int]) -> None:
        from catalog import mail
        terms = terms_store.current(self.store)
        quota = terms.monthly_requests
        if not quota:
            return
        month = usage.current_month()
        mail_ids = []
        with self.store.session() as s, s.begin():
            for token_id in sorted(token_ids):
                used = usage.token_requests(s, token_id, month)
                for level in (100, 80):
                    if used * 100 >= quota * level:
                        if usage.claim_notice(s, token_id, month, level):
                            owner = s.scalar(select(User.email).join(
                                ApiToken, ApiToken.user_id == User.id)
                                .where(ApiToken.id == token_id))
                            if owner:   # queued with its claim: one notice, never lost
                                mail_ids.append(mail.queue(s, owner, *quota_message(
                                    token_id, level, used, quota, month)))
                        break
        mail.deliver(self.store, mail_ids)


def quota_message(token_id: int, level: int, used: int, quota: int, month: str):
    if level >= 100:
        subject = f"【renkei】APIキーの今月の上限に達しました / API key reached its monthly quota"
    else:
        subject = f"【renkei】APIキーの今月の利用が上限の{level}%を超えました / API key passed " \
                  f"{level}% of its monthly quota"
    body = (f"APIキー（番号 {token_id}）の{month}の利用は {used} 件で、月間上限 {quota} 件の"
            f"{level}%に達しました。\n\n"
            f"Your API key (number {token_id}) has made {used} requests in {month}: {level}% of "
            f"its monthly quota of {quota}.\n")
    return subject, body


def init_app(app, store) -> Meter:
    meter = Meter(app, store, batch=int(app.config.get("RENKEI_METER_BATCH", 500)),
                  interval=float(app.config.get("RENKEI_METER_INTERVAL", 1.0)))
    app.extensions["renkei_meter"] = meter
    if app.config.get("RENKEI_METERING", True):
        app.before_request(meter.before)
        app.after_request(meter.after)
    return meter
