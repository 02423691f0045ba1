"""Reading a response's headers without werkzeug's cost for a missing one.

werkzeug's ``Headers.get`` and ``in`` build a BadRequestKeyError (an HTTP exception with its
description) for every header that is not there, and lower-case every name on each lookup.
The hooks that run on every response (security headers, Vary, rate-limit headers, CORS) ask
mostly for headers that are absent: issue 17 counted seven such exceptions per OGC API item.
"""
from __future__ import annotations


def header(headers, name: str) -> str | None:
    """The first value of header ``name`` (given in lower case) in werkzeug ``headers``, or
    None: what ``headers.get(name)`` answers."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
