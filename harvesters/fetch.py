"""Download a resource to the content cache: streamed, size-limited, conditional, hashed.

Local paths (and file:// URLs) are read in place, so the offline demo and `files` sources of
local paths go through the same change detection (content hash) as remote ones. So are
`cache:` URLs: files that an API harvester (NGSI, OGC API) wrote under the cache from the
entities it paged through; they are relative to the data dir, so no server path reaches a page.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests

from harvesters.base import HarvestFailure

CACHE_SCHEME = "cache:"
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


def fetch(url: str, cache_dir: Path, *, max_bytes: int, etag: str | None = None,
          last_modified: str | None = None, timeout: float = 60.0,
          session: requests.Session | None = None,
          dataset: str | None = None, resource: str | None = None) -> Fetched:
    """`max_bytes` has no default: the limit is the operator's (RENKEI_MAX_DOWNLOAD, read into
    harvesters.context.HarvestSettings when the command starts)."""
    where = {"dataset": dataset, "resource": resource or url}
    if url.startswith(CACHE_SCHEME):
        return _local(cache_dir / url[len(CACHE_SCHEME):], max_bytes, where)
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


class FeatureFileWriter:
    """Features streamed into `<cache>/<kind>/<source>/<name>.geojson`, one per line, so 50,000
    entities never sit in memory twice. The same entities give the same bytes (no timestamps,
    keys sorted), so the content hash says "unchanged". Written aside and renamed on success:
    a failed enumeration leaves the previous file as it was."""

    def __init__(self, cache_dir: Path, kind: str, source: str, name: str):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"
        if safe != name:  # two type names that fold to the same file must not collide
            safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        self.cache_dir = Path(cache_dir)
        self.relative = f"{kind}/{source}/{safe}.geojson"
        self.path = self.cache_dir / self.relative
        self.count = self.placed = 0
        self.format = "GeoJSON"
        self._out = None

    @property
    def url(self) -> str:
        return CACHE_SCHEME + self.relative

    def __enter__(self) -> "FeatureFileWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".part")
        self._out = open(self._tmp, "w", encoding="utf-8")
        self._out.write('{"type": "FeatureCollection", "features": [\n')
        return self

    def add(self, feature_id, geometry: dict | None, properties: dict) -> None:
        if self.count:
            self._out.write(",\n")
        feature = {"type": "Feature", "geometry": geometry, "properties": properties}
        if feature_id is not None:
            feature["id"] = feature_id
        self._out.write(json.dumps(feature, ensure_ascii=False, sort_keys=True,
                                   separators=(",", ":")))
        self.count += 1
        self.placed += geometry is not None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._out.write("\n]}\n")
        self._out.close()
        if exc_type is not None:
            Path(self._tmp).unlink(missing_ok=True)
        elif self.count and not self.placed:
            self._as_table()
        else:
            os.replace(self._tmp, self.path)

    def _as_table(self) -> None:
        """Entities without any place (e.g. shelter opening status) are a table, not a layer:
        a JSON array of records, which the readers turn into a catalogue entry with a preview."""
        self.relative = self.relative[: -len(".geojson")] + ".json"
        self.path = self.cache_dir / self.relative
        self.format = "JSON"
        tmp = self.path.with_name(self.path.name + ".part")
        with open(self._tmp, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as out:
            out.write("[\n")
            first = True
            for line in src:
                line = line.strip().rstrip(",")
                if not line.startswith('{"geometry"'):
                    continue  # the FeatureCollection's opening and closing lines
                out.write(("" if first else ",\n") + json.dumps(
                    json.loads(line)["properties"], ensure_ascii=False, sort_keys=True))
                first = False
            out.write("\n]\n")
        os.replace(tmp, self.path)
        Path(self._tmp).unlink(missing_ok=True)
