"""What a harvest works with: settings read once when a command starts, and the context of one
source's job, handed down instead of long parameter lists.

The environment is read by `HarvestSettings.from_environ()`, never at import, so a process
that imports the harvesters (the web app, a test) and one that harvests agree on nothing by
accident, and a bad value is a clear error at the start of the command.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import requests

from store.db import Store
from harvesters.base import SourceConfig

DEFAULT_MAX_DOWNLOAD = 2 * 1024 ** 3       # RENKEI_MAX_DOWNLOAD
# Files above this size are translated in chunks straight into the GeoPackage (geo.stream), so
# a 1 GB hazard layer never sits in memory whole.
DEFAULT_STREAM_BYTES = 64 * 1024 ** 2      # RENKEI_STREAM_BYTES (GeoJSON/GPKG held whole
                                           # cost ~10x their size; 1 GB RSS is the budget)
DEFAULT_STREAM_CHUNK = 25_000              # RENKEI_STREAM_CHUNK: features per chunk; 100,000
                                           # polygons in transit held ~470 MB (bench/bomb_bench)
# Budgets on what one file or answer may make us hold (issue 11: a 1.5 MB zip held a 1.5 GiB
# CSV). Each is the most a legitimate open-data file plausibly needs.
DEFAULT_MAX_PAGE = 64 * 1024 ** 2          # RENKEI_MAX_PAGE: bytes of one API answer
DEFAULT_MAX_UNPACKED = 1024 ** 3           # RENKEI_MAX_UNPACKED: bytes unpacked from one zip
DEFAULT_MAX_ZIP_RATIO = 200                # RENKEI_MAX_ZIP_RATIO: unpacked/packed of a member
DEFAULT_TABLE_STREAM_BYTES = 8 * 1024 ** 2  # RENKEI_TABLE_STREAM_BYTES: CSVs above: in chunks
DEFAULT_MAX_TABLE_BYTES = 64 * 1024 ** 2   # RENKEI_MAX_TABLE_BYTES: a JSON table read whole
DEFAULT_MAX_ROWS = 10_000_000              # RENKEI_MAX_ROWS: rows (features) per file
DEFAULT_MAX_COLUMNS = 1_000                # RENKEI_MAX_COLUMNS: columns per file
DEFAULT_MIN_ROW_SHARE = 0.5                # RENKEI_MIN_ROW_SHARE: a new version below this share
                                           # of the last one's rows is not published


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class HarvestSettings:
    timeout: float = 30.0                       # seconds per request
    max_download: int = DEFAULT_MAX_DOWNLOAD    # bytes per resource
    stream_bytes: int = DEFAULT_STREAM_BYTES    # from this size on, translate in chunks
    stream_chunk: int = DEFAULT_STREAM_CHUNK    # features per chunk (peak memory)
    max_page: int = DEFAULT_MAX_PAGE
    max_unpacked: int = DEFAULT_MAX_UNPACKED
    max_zip_ratio: int = DEFAULT_MAX_ZIP_RATIO
    table_stream_bytes: int = DEFAULT_TABLE_STREAM_BYTES
    max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    max_columns: int = DEFAULT_MAX_COLUMNS
    min_row_share: float = DEFAULT_MIN_ROW_SHARE

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides) -> "HarvestSettings":
        env = os.environ if environ is None else environ
        settings = cls(max_download=_bytes(env, "RENKEI_MAX_DOWNLOAD", DEFAULT_MAX_DOWNLOAD),
                       stream_bytes=_bytes(env, "RENKEI_STREAM_BYTES", DEFAULT_STREAM_BYTES),
                       stream_chunk=_bytes(env, "RENKEI_STREAM_CHUNK", DEFAULT_STREAM_CHUNK),
                       max_page=_bytes(env, "RENKEI_MAX_PAGE", DEFAULT_MAX_PAGE),
                       max_unpacked=_bytes(env, "RENKEI_MAX_UNPACKED", DEFAULT_MAX_UNPACKED),
                       max_zip_ratio=_bytes(env, "RENKEI_MAX_ZIP_RATIO", DEFAULT_MAX_ZIP_RATIO),
                       table_stream_bytes=_bytes(env, "RENKEI_TABLE_STREAM_BYTES",
                                                 DEFAULT_TABLE_STREAM_BYTES),
                       max_table_bytes=_bytes(env, "RENKEI_MAX_TABLE_BYTES",
                                              DEFAULT_MAX_TABLE_BYTES),
                       max_rows=_bytes(env, "RENKEI_MAX_ROWS", DEFAULT_MAX_ROWS),
                       max_columns=_bytes(env, "RENKEI_MAX_COLUMNS", DEFAULT_MAX_COLUMNS),
                       min_row_share=_share(env, "RENKEI_MIN_ROW_SHARE", DEFAULT_MIN_ROW_SHARE))
        if settings.stream_chunk < 1:
            raise SettingsError("RENKEI_STREAM_CHUNK must be at least 1 feature")
        return replace(settings, **overrides)


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    """A share from 0 to 1."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise SettingsError(f"{name} must be a number from 0 to 1, got {value}")
    return value


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    """A non-negative whole number (bytes, or features for the chunk size)."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {text!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {value}")
    return value


@dataclass
class JobContext:
    """One source's job: where it publishes, what it may spend, and where it reports."""
    store: Store
    source: SourceConfig
    organizations: dict
    settings: HarvestSettings
    http: requests.Session          # retries per the source's options; used for every download
    time_limit: float               # seconds for the whole job
    deadline: float                 # time.monotonic() at which the job stops
    log: Callable[[str], None]      # progress lines, credentials already stripped

    @property
    def cache_dir(self) -> Path:
        return self.store.data_dir / "cache"

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    def expired(self) -> bool:
        return time.monotonic() > self.deadline
