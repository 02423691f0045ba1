"""Download a resource to the content cache: streamed, size-limited, conditional, hashed.

Which URLs a resource may have depends on who named it (`LocalReads`): a remote source (CKAN,
and whatever else an upstream server fills in) gets http(s) only, through the SSRF guard of
the session (harvesters.netguard). Local paths (and file:// URLs) belong to `files` sources
alone and must stay inside the folder of sources.yaml, symlinks and `..` resolved; they are
read in place, so the offline demo goes through the same change detection (content hash) as
remote files. `cache:` URLs name files an API harvester (NGSI, OGC API) wrote under the cache
from the entities it paged through, and must stay inside it. A refusal never says whether a
path exists, and no message names a server path.
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
from harvesters.http import describe

CACHE_SCHEME = "cache:"
CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalReads:
    """What besides http(s) a source's resource URLs may name."""
    root: Path | None = None     # local paths inside this folder (files sources)
    cache: bool = False          # cache: URLs (the API harvesters' own files)


REMOTE_ONLY = LocalReads()


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
          session: requests.Session | None = None, local: LocalReads = REMOTE_ONLY,
          dataset: str | None = None, resource: str | None = None) -> Fetched:
    """`max_bytes` has no default: the limit is the operator's (RENKEI_MAX_DOWNLOAD, read into
    harvesters.context.HarvestSettings when the command starts). `session` should come from
    harvesters.http (the SSRF guard lives on its adapter); without one, a guarded session
    that refuses every non-public address is used."""
    where = {"dataset": dataset, "resource": resource or url}
    url = url.strip()
    if url.startswith(CACHE_SCHEME):
        if not local.cache:
            raise HarvestFailure("fetch", "refused: cache: URLs are not accepted from this "
                                 "source (http and https only)", **where)
        return _local(Path(cache_dir), url[len(CACHE_SCHEME):], max_bytes, where)
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or re.match(r"^[A-Za-z]:[\\/]", url):
        if local.root is None:
            raise HarvestFailure("fetch", "refused: a local file path; this source's resources "
                                 "must be http or https URLs", **where)
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise HarvestFailure("fetch", "refused: a file:// URL naming another host", **where)
        return _local(local.root, path, max_bytes, where)
    if parsed.scheme not in ("http", "https"):
        raise HarvestFailure("fetch", f"refused: {parsed.scheme!r} URLs are not fetched "
                             f"(http and https only)", **where)
    if session is None:
        from harvesters.http import make_session
        session = make_session()
    headers = {"User-Agent": "renkei-harvester/0.1"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
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
                # A body shorter than declared is cut, whatever urllib3 made of it; with a
                # Content-Encoding the declared length is of the encoded bytes.
                if declared and declared.isdigit() and size != int(declared) \
                        and not resp.headers.get("Content-Encoding"):
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
    except requests.exceptions.ChunkedEncodingError as exc:
        raise HarvestFailure("fetch", "truncated body: the connection ended inside the "
                             "answer", **where) from exc
    except requests.RequestException as exc:
        raise HarvestFailure("fetch", f"download failed: {describe(exc, timeout)}"[:400],
                             **where) from exc


def _local(root: Path, name: str, max_bytes: int, where: dict) -> Fetched:
    """A file under `root`, by a name relative to it (or absolute inside it). Resolved first
    (symlinks, `..`), so nothing outside `root` is read; refusals and "not found" name the
    file only as the source wrote it."""
    base = Path(root).resolve()
    try:
        path = (base / name).resolve()
        path.relative_to(base)
    except (ValueError, OSError, RuntimeError):
        raise HarvestFailure("fetch", "refused: a local path outside the folder this source "
                             "may read", **where) from None
    if not path.is_file():
        raise HarvestFailure("fetch", "file not found (or not a regular file)", **where)
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
        if isinstance(geometry, dict) and "crs" in geometry:
            # GeoJSON 2008 `crs` links would be fetched by GDAL (geo.gdal_safety); RFC 7946
            # geometries are WGS 84 and carry none.
            geometry = {k: v for k, v in geometry.items() if k != "crs"}
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
