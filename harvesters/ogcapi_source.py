"""Another OGC API – Features server: one dataset per collection, items followed by `next` links.

```yaml
  - name: himeji-ogc
    type: ogcapi
    url: https://gis.example.lg.jp/ogcapi/     # the landing page
    organization: himeji-city
    collections: [shelters]                    # optional: only these ids
    limit: 1000                                # page size asked for (servers cap it)
```
Features are written to one GeoJSON file per collection under the cache, like NGSI entities.
A `next` link seen twice, `numberMatched` changing, or an empty page before `numberMatched`
make the collection incomplete: reported, not published, the served version stays.
"""
from __future__ import annotations

import json
from typing import Iterator
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from harvesters.base import HarvestFailure, JobError, RemoteDataset, RemoteResource
from harvesters.fetch import FeatureFileWriter
from harvesters.files import LICENSES
from harvesters.ngsi_v2 import EntityHarvester, _NothingToPublish

GEOJSON = "application/geo+json"


class OGCAPIHarvester(EntityHarvester, source_type="ogcapi"):
    max_page = 10000

    def enumerate(self) -> Iterator[RemoteDataset]:
        base = self.source.url.rstrip("/") + "/"
        doc = self._get(urljoin(base, "collections"), {"f": "json"}, "collections")
        wanted = self.source.options.get("collections")
        listed = doc.get("collections") if isinstance(doc, dict) else None
        if not isinstance(listed, list):
            raise HarvestFailure("enumerate", f"{base}collections did not answer a collection "
                                 f"list")
        collections = []
        for i, c in enumerate(listed, 1):
            cid = c.get("id") if isinstance(c, dict) else None
            if isinstance(cid, int) and not isinstance(cid, bool):
                cid = str(cid)   # ids are strings (OGC API – Features); some servers send numbers
            if not isinstance(cid, str) or not cid:
                self.complete = False
                self.failures.append(JobError("enumerate", f"collection #{i} of the list has no "
                                              f"usable id; skipped", dataset=f"collection #{i}"))
                continue
            if not wanted or cid in wanted:
                collections.append({**c, "id": cid})
        if wanted and len(collections) < len(wanted):
            missing = sorted(set(wanted) - {c["id"] for c in collections})
            self.complete = False
            self.failures.append(JobError(
                "enumerate", f"collections not offered by the server: {', '.join(missing)}"))
        for col in collections:
            title = str(col.get("title") or col["id"])[:500]
            try:
                writer = self._walk(base, col, title)
                remote = self._collection_dataset(col, title, writer)
            except _NothingToPublish:
                continue
            except HarvestFailure as exc:
                self.complete = False
                self.failures.append(exc.locate(dataset=title).error())
                continue
            except Exception as exc:   # an answer in a shape no check foresaw: this one only
                self.complete = False
                self.failures.append(JobError.from_exception("enumerate", exc, dataset=title))
                continue
            yield remote

    def _walk(self, base: str, col: dict, title: str) -> FeatureFileWriter:
        # The spec fixes this path; a server's own links may name a host we cannot reach.
        url = urljoin(base, f"collections/{quote(col['id'], safe='')}/items")
        params = {"f": "json", "limit": self.limit}
        matched, seen_urls, seen_ids, received = None, set(), set(), 0
        writer = FeatureFileWriter(self.cache_dir, self.source_type, self.source.name, col["id"])
        with writer:
            while url:
                key = url + json.dumps(params, sort_keys=True)
                if key in seen_urls:
                    raise HarvestFailure("enumerate", f"the next link repeats a page already "
                                         f"read ({url}); not published this time", dataset=title)
                seen_urls.add(key)
                page = self._get(url, params, title)
                feats = page.get("features") if isinstance(page, dict) else None
                if not isinstance(feats, list):
                    raise HarvestFailure("enumerate", f"{url} did not answer a FeatureCollection",
                                         dataset=title)
                now = page.get("numberMatched")
                if matched is None:
                    matched = now if isinstance(now, int) else None
                elif isinstance(now, int) and now != matched:
                    raise HarvestFailure("enumerate", f"numberMatched changed during paging "
                                         f"({matched} → {now}); not published this time",
                                         dataset=title)
                nxt = self._rebase(_link(page, "next", url), base)
                if not feats and (nxt or (matched is not None and received < matched)):
                    raise HarvestFailure("enumerate", f"empty page after {received} of "
                                         f"{matched if matched is not None else '?'} features; "
                                         f"not published this time", dataset=title)
                for n, feat in enumerate(feats):
                    if not isinstance(feat, dict):
                        raise HarvestFailure("enumerate", f"feature {received + n + 1} is not a "
                                             f"GeoJSON object; not published this time",
                                             dataset=title)
                    fid = feat.get("id")
                    if fid is not None and not isinstance(fid, (str, int, float)):
                        fid = json.dumps(fid, sort_keys=True, default=str)
                    if fid is not None and fid in seen_ids:
                        raise HarvestFailure("enumerate", f"feature {fid} came twice while "
                                             f"paging; not published this time", dataset=title)
                    seen_ids.add(fid)
                    raw_props = feat.get("properties") or {}
                    if not isinstance(raw_props, dict):
                        raw_props = {"properties": raw_props}
                    props = {str(k): _scalar(v) for k, v in raw_props.items()}
                    geometry = feat.get("geometry")
                    writer.add(fid, geometry if isinstance(geometry, dict) else None, props)
                received += len(feats)
                url, params = nxt, {}  # the next link carries its own query
            if matched is not None and received != matched:
                raise HarvestFailure("enumerate", f"received {received} features but the server "
                                     f"announced {matched}; not published this time",
                                     dataset=title)
            if writer.count == 0:
                self.complete = False
                self.warnings.append(f"collection {col['id']} has no features; nothing changed "
                                     f"for it")
                raise _NothingToPublish()
        return writer

    def _collection_dataset(self, col: dict, title: str, writer) -> RemoteDataset:
        opts, org = self.source.options, self.source.organization
        lic = str(opts.get("license") or "").strip()
        lic_title, lic_url = LICENSES.get(lic.lower(), (lic or None, None))
        links = col.get("links") if isinstance(col.get("links"), list) else []
        lic_link = next((ln for ln in links if isinstance(ln, dict)
                         and ln.get("rel") == "license"), None)
        if lic_link and not lic:
            lic_title, lic_url = lic_link.get("title") or lic_link.get("href"), lic_link.get("href")
        return RemoteDataset(
            remote_id=col["id"], name=col["id"], title=title,
            description=str(col.get("description") or ""),
            tags=[str(k) for k in col.get("keywords") or [] if isinstance(k, (str, int))],
            organization={"name": org, "title": org} if org else None,
            license_id=lic or None, license_title=lic_title, license_url=lic_url,
            landing_page=_link(col, "alternate", self.source.url),
            resources=[RemoteResource(remote_id=f"{col['id']}-items", url=writer.url,
                                      name=writer.path.name, format=writer.format)],
            raw={"source_type": "ogcapi", "server": self.source.url, "features": writer.count,
                 "collection": col})

    def _rebase(self, link: str | None, base: str) -> str | None:
        """Servers behind a proxy often advertise their inner host in `next` links (ckanext-
        dcatapit #37): keep their path and query, but on the host we were configured with."""
        if not link:
            return None
        ours, theirs = urlsplit(base), urlsplit(link)
        if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
            return link
        note = (f"next links name {theirs.scheme}://{theirs.netloc}; followed on "
                f"{ours.scheme}://{ours.netloc} instead")
        if note not in self.warnings:
            self.warnings.append(note)
        return urlunsplit((ours.scheme, ours.netloc, theirs.path, theirs.query, ""))

    def tenant_headers(self) -> dict:
        return {}

    def extra_headers(self) -> dict:
        return {"Accept": f"{GEOJSON}, application/json;q=0.9"}


def _link(doc: dict, rel: str, base: str) -> str | None:
    links = doc.get("links") if isinstance(doc, dict) else None
    for ln in links if isinstance(links, list) else []:
        if isinstance(ln, dict) and ln.get("rel") == rel and isinstance(ln.get("href"), str):
            kind = ln.get("type")
            if rel == "items" and kind and "json" not in kind:
                continue  # an HTML items link would not parse
            return urljoin(base, ln["href"])
    return None


def _scalar(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value
