"""Rate limits on the open APIs: per API token, per signed-in user, else per client address.
The limit is `RENKEI_RATE_LIMIT` when set, else the terms' `limits.rate`, else 1000/hour (API
Umbrella's default per key), counted per endpoint. Map tiles have a limit of their own,
`RENKEI_TILE_RATE_LIMIT` (default 30000/hour): one view of a MapLibre map asks for 20–60 tiles,
so the API's limit would cut a citizen off after a few dozen pans of the hazard map — and many
phones share one carrier address (CGNAT). Tiles are still metered like any open API. Counters
live in Redis when `RENKEI_REDIS_URL` is set — every `renkei serve` process and worker shares
them — else in this process's memory (limits' storages, keyed as Flask-Limiter keys them;
Flask-Limiter itself throttles sign-in, catalog.auth).
A refused request gets 429 with Retry-After and X-RateLimit-Limit/-Remaining/-Reset.
`RENKEI_RATE_LIMIT_PREFIX` separates the counters of several platforms (or test runs) that
share one Redis.
"""
from __future__ import annotations

import functools
import os
import time

from flask import g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many
from limits.storage import MemoryStorage
from werkzeug.http import parse_date

from catalog.metering import interface
from catalog.response_headers import header
from store import terms as terms_store

DEFAULT_RATE = "1000/hour"
DEFAULT_TILE_RATE = "30000/hour"


# How often the in-process counters drop the windows that have ended (their memory only: a
# window's end is checked on every read, so counting never depends on it).
PURGE_EVERY = 60.0
# How many (caller, endpoint) pairs' limit keys ApiLimits keeps built (a few MB at most).
KEYS_KEPT = 10_000


class ProcessMemoryStorage(MemoryStorage):
    """limits' memory:// storage (this process's counters) that drops ended windows inline, at
    most every PURGE_EVERY seconds, instead of starting a timer thread: MemoryStorage starts a
    new threading.Timer on any count made more than 10 ms after the last one, i.e. one thread
    per API request on a quiet or ordinary server (issue 17: ~0.1 ms of the worker's CPU per
    request). A fixed window's count is still exact: `get` drops an ended window before every
    read and increment."""

    STORAGE_SCHEME = ["renkei-memory"]

    def __init__(self, uri: str | None = None, **options):
        self._purged = time.monotonic()
        super().__init__(uri, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:   # overrides its private hook
        now = time.monotonic()
        if now - self._purged >= PURGE_EVERY:
            self._purged = now
            self._MemoryStorage__expire_events()


def caller_key() -> str:
    p = g.get("principal")
    if p is not None and p.token_id is not None:
        return f"token:{p.token_id}"
    if p is not None and p.user_id is not None:
        return f"user:{p.user_id}"
    return f"addr:{request.remote_addr}"


def rate(store) -> str:
    return os.environ.get("RENKEI_RATE_LIMIT") or terms_store.current(store).rate_limit \
        or DEFAULT_RATE


def tile_rate() -> str:
    return os.environ.get("RENKEI_TILE_RATE_LIMIT") or DEFAULT_TILE_RATE


class ApiLimits:
    """The open APIs' limit, counted as Flask-Limiter counted its default limits (same storage,
    same keys `LIMITER/<prefix>/<caller>/<endpoint>/<limit>`, so each endpoint has its own count
    per caller; same 429 and headers), without its generic per-request machinery: resolving
    decorated, blueprint and default limits for every view cost more than an OGC API item
    itself (issue 17). Flask-Limiter still throttles sign-in (catalog.auth); ``enabled`` on it
    switches both off."""

    def __init__(self, limiter: Limiter, api_limit: str, tiles_limit: str, prefix: str):
        self.limiter = limiter
        # Parsed once; in the order Flask-Limiter tries them (the shortest window first).
        self.api, self.tiles = sorted(parse_many(api_limit)), sorted(parse_many(tiles_limit))
        self.prefix = [prefix] if prefix else []
        self._keys: dict = {}

    def count(self):
        """before_request: count this request against its caller's limit; 429 past it."""
        limiter = self.limiter
        if not limiter.enabled:
            return
        req = request._get_current_object()   # one proxy lookup, not one per use
        endpoint = req.endpoint
        kind = interface(req.path)
        # Not counted, as with Flask-Limiter: pages, no route (a 404), static files.
        if kind is None or not endpoint or endpoint.rsplit(".", 1)[-1] == "static":
            return
        items = self.tiles if kind == "tiles" else self.api
        keys = self._keys_of(items, caller_key(), endpoint)
        # limits' fixed window (FixedWindowRateLimiter.hit) on the storage itself: the count
        # the increment returns is also what the headers state, so no second read (in Redis,
        # a round trip less per request).
        storage = limiter.limiter.storage
        first = None
        for item, key in zip(items, keys):
            count = storage.incr(key, item.get_expiry())
            if count > item.amount:
                g._renkei_limit = (item, key, count)
                raise RateLimitExceeded(_Breached(item))
            first = first or (item, key, count)
        g._renkei_limit = first   # the headers state the shortest window, as Flask-Limiter

    def _keys_of(self, items, caller: str, endpoint: str) -> list[str]:
        """limits' storage keys of ``items`` for this caller and endpoint, built once per
        (caller, endpoint) rather than on every request (up to KEYS_KEPT pairs)."""
        found = self._keys.get((id(items), caller, endpoint))
        if found is None:
            if len(self._keys) >= KEYS_KEPT:
                self._keys.clear()
            args = (*self.prefix, caller, endpoint)
            found = self._keys[(id(items), caller, endpoint)] = [i.key_for(*args) for i in items]
        return found

    def headers(self, resp):
        """after_request: X-RateLimit-Limit/-Remaining/-Reset and Retry-After, as Flask-Limiter
        wrote them, on every counted answer (the 429 too)."""
        state = g.pop("_renkei_limit", None)
        if state is None or not self.limiter.enabled:
            return resp
        item, key, count = state
        remaining = max(0, item.amount - count)
        reset_at = int(self.limiter.limiter.storage.get_expiry(key) + 1)
        h = resp.headers
        existing = header(h, "retry-after")
        h.add("X-RateLimit-Limit", str(item.amount))
        h.add("X-RateLimit-Remaining", str(remaining))
        h.add("X-RateLimit-Reset", str(reset_at))
        if existing is None:
            h.add("Retry-After", str(int(reset_at - time.time())))
        else:   # the view's own, in seconds or as an HTTP date
            later = parse_date(existing)
            later = time.time() + int(existing) if later is None else later.timestamp()
            reset_at = max(int(later), reset_at)
            h.set("Retry-After", str(int(reset_at - time.time())))
        return resp


class _Breached:
    """What RateLimitExceeded reads of a limit: its text ("3 per 1 hour") is the 429's."""

    error_message = None

    def __init__(self, item):
        self.limit = item


def _sign_in_only(app, limiter: Limiter) -> None:
    """Run Flask-Limiter's request hooks for the auth blueprint only (the sign-in throttle,
    its one remaining use), not around every request of the app. Hooks it no longer registers
    where expected stay where they are: slower, never wrong."""
    for registry in (app.before_request_funcs, app.after_request_funcs,
                     app.teardown_request_funcs):
        every = registry.get(None, [])
        ours = [f for f in every if getattr(f, "__self__", None) is limiter
                or (isinstance(f, functools.partial) and f.args[:1] == (limiter,))]
        if len(ours) == 1:
            every.remove(ours[0])
            registry.setdefault("auth", []).append(ours[0])


def init_app(app, store) -> Limiter:
    redis_url = os.environ.get("RENKEI_REDIS_URL")
    limiter = Limiter(
        caller_key, app=app, storage_uri=redis_url or "renkei-memory://", headers_enabled=True,
        key_prefix=os.environ.get("RENKEI_RATE_LIMIT_PREFIX", "renkei"),
        strategy="fixed-window")
    _sign_in_only(app, limiter)
    limits = ApiLimits(limiter, rate(store), tile_rate(),
                       os.environ.get("RENKEI_RATE_LIMIT_PREFIX", "renkei"))
    app.before_request(limits.count)
    app.after_request(limits.headers)
    app.extensions["renkei_limiter"] = limiter
    app.extensions["renkei_api_limits"] = limits
    return limiter
