"""HTTP sessions for harvesting: bounded retries with backoff on timeouts, connection errors and
5xx answers; never on 4xx (a 400 repeated ten times is still a 400 — magda #2792).

Retries live in urllib3's Retry on the session's adapter, so ckanapi, the NGSI/OGC API
clients and the resource download all get the same policy from one place.
"""
from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

USER_AGENT = "renkei-harvester/0.1 (+https://github.com/renkei)"
RETRY_STATUSES = (500, 502, 503, 504)


def retry_settings(options: dict) -> tuple[int, float]:
    """`retries` (tries in all, default 3) and `backoff` (seconds, doubled each retry)."""
    tries = max(1, int(options.get("retries", 3)))
    backoff = max(0.0, float(options.get("backoff", 1.0)))
    return tries, backoff


def make_session(tries: int = 3, backoff: float = 1.0) -> requests.Session:
    retry = Retry(total=tries - 1, connect=tries - 1, read=tries - 1, status=tries - 1,
                  other=0, backoff_factor=backoff, backoff_max=30.0,
                  status_forcelist=RETRY_STATUSES,
                  allowed_methods=None,  # CKAN's POSTs are reads too
                  raise_on_status=False,  # hand the last 5xx to the caller, who reports it
                  respect_retry_after_header=False)  # a Retry-After of hours must not stall cron
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def describe(exc: requests.RequestException, timeout: float) -> str:
    """A short reason for a failed request; the URL is named by the caller (no headers here,
    so a bearer token can never reach a message)."""
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
        return f"timed out after {timeout:g} s"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed (server unreachable)"
    return f"{type(exc).__name__}"

