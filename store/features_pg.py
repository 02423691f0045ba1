"""Feature versions in PostGIS (PostgreSQL mode): names of the layout in notes/PGMODE.md.

Placeholder of pg-tiles until pg-features' writer lands (theirs replaces this file): only the
names every reader agrees on.
"""
from __future__ import annotations

import hashlib

PREFIX = "postgis:"


def table_name(collection_id: str, version: int) -> str:
    return "f_" + hashlib.sha1(collection_id.encode()).hexdigest()[:20] + "_v" + str(version)


def is_postgis(path: str | None) -> bool:
    return bool(path) and str(path).startswith(PREFIX)


def table_of(path: str) -> str:
    return str(path)[len(PREFIX):]
