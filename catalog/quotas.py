"""Rate limits on the open APIs (Flask-Limiter): per API token, per signed-in user, else per
client address. The limit is `RENKEI_RATE_LIMIT` when set, else the terms' `limits.rate`, else
1000/hour (API Umbrella's default per key). Map tiles have a limit of their own,
`RENKEI_TILE_RATE_LIMIT` (default 30000/hour): one view of a MapLibre map asks for 20–60 tiles,
so the API's limit would cut a citizen off after a few dozen pans of the hazard map — and many
phones share one carrier address (CGNAT). Tiles are still metered like any open API. Counters live in Redis when `RENKEI_REDIS_URL` is
set — every `renkei serve` process and worker shares them — else in this process's memory.
A refused request gets 429 with Retry-After and X-RateLimit-Limit/-Remaining/-Reset.
`RENKEI_RATE_LIMIT_PREFIX` separates the counters of several platforms (or test runs) that
share one Redis.
"""
from __future__ import annotations

import os

from flask import g, request
from flask_limiter import Limiter

from catalog.metering import interface
from store import terms as terms_store

DEFAULT_RATE = "1000/hour"
DEFAULT_TILE_RATE = "30000/hour"


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


def init_app(app, store) -> Limiter:
    redis_url = os.environ.get("RENKEI_REDIS_URL")
    api_limit, tiles_limit = rate(store), tile_rate()

    def limit() -> str:
        return tiles_limit if interface(request.path) == "tiles" else api_limit

    limiter = Limiter(
        caller_key, app=app, default_limits=[limit],
        default_limits_exempt_when=lambda: interface(request.path) is None,
        storage_uri=redis_url or "memory://", headers_enabled=True,
        key_prefix=os.environ.get("RENKEI_RATE_LIMIT_PREFIX", "renkei"),
        strategy="fixed-window")
    app.extensions["renkei_limiter"] = limiter
    return limiter
