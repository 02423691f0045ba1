"""Download a resource to the content cache: streamed, size-limited, conditional, hashed.

Local paths (and file:// URLs) are read in place, so the offline demo and `files` sources of
local paths go through the same change detection (content hash) as remote ones.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from harvesters.base import HarvestFailure

MAX_BYTES = int(os.environ.get("RENKEI_MAX_DOWNLOAD", 2 * 1024 ** 3))
CHUNK = 1 << 20


@dataclass
class Fetched:
    path: Path | None        # None when the server answered 304 Not Modified
    not_modified: bool
    sha256: str | None = None
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None


def fetch(url: str, cache_dir: Path, *, etag: str | None = None,
          last_modified: str | None = None, timeout: float = 60.0,
          session: requests.Session | None = None, max_bytes: int = MAX_BYTES,
          dataset: str | None = None, resource: str | None = None) -> Fetched:
    where = {"dataset": dataset, "resource": resource or url}
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return _local(Path(unquote(parsed.path)) if parsed.scheme else Path(url), max_bytes, where)
    if parsed.scheme not in ("http", "https"):
        raise HarvestFailure("fetch", f"unsupported URL scheme: {url}", **where)
    headers = {"User-Agent": "renkei-harvester/0.1"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    http = session or requests
    try:
        with http.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 304:
                return Fetched(None, True, etag=etag, last_modified=last_modified)
            if resp.status_code >= 400:
                raise HarvestFailure("fetch", f"HTTP {resp.status_code} {resp.reason} for {url}",
                                     **where)
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise HarvestFailure("fetch", f"resource is {int(declared):,} bytes, over the "
                                     f"limit of {max_bytes:,}", **where)
            cache_dir.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256(), 0
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.iter_content(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise HarvestFailure("fetch", f"resource exceeds the limit of "
                                                 f"{max_bytes:,} bytes", **where)
                        digest.update(chunk)
                        out.write(chunk)
                if declared and declared.isdigit() and size != int(declared):
                    raise HarvestFailure("fetch", f"truncated body: got {size:,} of "
                                         f"{int(declared):,} bytes", **where)
                final = cache_dir / digest.hexdigest()
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return Fetched(final, False, digest.hexdigest(), size, resp.headers.get("ETag"),
                           resp.headers.get("Last-Modified"), resp.headers.get("Content-Type"))
    except requests.Timeout as exc:
        raise HarvestFailure("fetch", f"timed out after {timeout:g} s: {url}", **where) from exc
    except requests.RequestException as exc:
        raise HarvestFailure("fetch", f"download failed: {type(exc).__name__}: {exc}"[:400],
                             **where) from exc


def _local(path: Path, max_bytes: int, where: dict) -> Fetched:
    if not path.is_file():
        raise HarvestFailure("fetch", f"file not found: {path}", **where)
    size = path.stat().st_size
    if size > max_bytes:
        raise HarvestFailure("fetch", f"file is {size:,} bytes, over the limit", **where)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return Fetched(path, False, digest.hexdigest(), size)

