"""HTTP sessions for harvesting: bounded retries with backoff on timeouts, connection errors and
5xx answers; never on 4xx (a 400 repeated ten times is still a 400 — magda #2792); the SSRF
guard (harvesters.netguard) on every request and redirect hop; bodies read under a cap.

Retries live in urllib3's Retry on the session's adapter, so ckanapi, the NGSI/OGC API
clients and the resource download all get the same policy from one place.
"""
from __future__ import annotations

import json

import requests
from urllib3.util.retry import Retry

from harvesters.netguard import MAX_REDIRECTS, BlockedAddress, GuardedAdapter

USER_AGENT = "renkei-harvester/0.1 (+https://github.com/renkei)"
RETRY_STATUSES = (500, 502, 503, 504)
DEFAULT_MAX_PAGE = 64 * 1024 ** 2   # RENKEI_MAX_PAGE: bytes of one API answer


class BodyTooLarge(requests.RequestException):
    pass


class TruncatedBody(requests.RequestException):
    pass


def retry_settings(options: dict) -> tuple[int, float]:
    """`retries` (tries in all, default 3) and `backoff` (seconds, doubled each retry)."""
    tries = max(1, int(options.get("retries", 3)))
    backoff = max(0.0, float(options.get("backoff", 1.0)))
    return tries, backoff


def session_for(options: dict) -> requests.Session:
    """The session of one source, with its retries and its network permission."""
    return make_session(*retry_settings(options),
                        allow_private=options.get("allow_private_networks") is True)


def make_session(tries: int = 3, backoff: float = 1.0, *,
                 allow_private: bool = False) -> requests.Session:
    retry = Retry(total=tries - 1, connect=tries - 1, read=tries - 1, status=tries - 1,
                  other=0, backoff_factor=backoff, backoff_max=30.0,
                  status_forcelist=RETRY_STATUSES,
                  allowed_methods=None,  # CKAN's POSTs are reads too
                  raise_on_status=False,  # hand the last 5xx to the caller, who reports it
                  respect_retry_after_header=False)  # a Retry-After of hours must not stall cron
    session = requests.Session()
    adapter = GuardedAdapter(max_retries=retry, allow_private=allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = USER_AGENT
    return session


def read_capped(resp: requests.Response, limit: int) -> bytes:
    """The body of a streamed response, refused past `limit` bytes (declared or received)
    and when shorter than its Content-Length."""
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the answer is {int(declared):,} bytes, over the limit of "
                           f"{limit:,} (RENKEI_MAX_PAGE)")
    parts, size = [], 0
    for chunk in resp.iter_content(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the answer exceeds the limit of {limit:,} bytes "
                               f"(RENKEI_MAX_PAGE)")
        parts.append(chunk)
    if declared and declared.isdigit() and not resp.headers.get("Content-Encoding") \
            and size != int(declared):
        raise TruncatedBody(f"truncated answer: {size:,} of {int(declared):,} bytes")
    return b"".join(parts)


def capped_json(resp: requests.Response, limit: int):
    """json.loads of a capped body; ValueError when it is not JSON."""
    return json.loads(read_capped(resp, limit))   # RFC 8259: UTF-8 (json detects UTF-16/32)


def describe(exc: requests.RequestException, timeout: float) -> str:
    """A short reason for a failed request; the URL is named by the caller (no headers here,
    so a bearer token can never reach a message)."""
    if isinstance(exc, (BlockedAddress, BodyTooLarge, TruncatedBody)):
        return str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return f"timed out after {timeout:g} s"
    if isinstance(exc, requests.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed (server unreachable)"
    return f"{type(exc).__name__}"
