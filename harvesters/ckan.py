"""CKAN sources, through ckanapi's RemoteCKAN and the Action API's package_search."""
from __future__ import annotations

from typing import Iterator

import ckanapi
import requests

from harvesters.base import (Harvester, HarvestFailure, RemoteDataset, RemoteResource,
                             SourceConfig)

USER_AGENT = "renkei-harvester/0.1 (+https://github.com/renkei)"


class CKANHarvester(Harvester):
    page_size = 100

    def __init__(self, source: SourceConfig, *, timeout: float = 30.0):
        super().__init__(source, timeout=timeout)
        self.page_size = int(source.options.get("rows", self.page_size))
        self.fq = source.options.get("fq")

    def enumerate(self) -> Iterator[RemoteDataset]:
        seen: set[str] = set()
        start, count = 0, None
        with ckanapi.RemoteCKAN(self.source.url.rstrip("/"), user_agent=USER_AGENT,
                                session=requests.Session()) as ckan:
            while count is None or start < count:
                params = {"rows": self.page_size, "start": start, "sort": "id asc"}
                if self.fq:
                    params["fq"] = self.fq
                page = self._call(ckan, params)
                results = page.get("results") or []
                if count is None:
                    count = int(page.get("count", 0))
                elif int(page.get("count", 0)) != count:
                    self.complete = False
                    self.warnings.append(
                        f"package_search count changed during paging ({count} → {page.get('count')})")
                if not results:
                    if start < count:  # a site that stops early must not look like deletions
                        self.complete = False
                        self.warnings.append(
                            f"package_search returned an empty page at start={start} of {count}")
                    break
                # Sites cap rows below what we ask (often 1000 → 100): advance by what came back.
                start += len(results)
                for pkg in results:
                    if pkg.get("id") in seen:
                        continue
                    seen.add(pkg.get("id"))
                    yield to_remote_dataset(pkg)

    def _call(self, ckan, params: dict) -> dict:
        try:
            return ckan.call_action("package_search", params,
                                    requests_kwargs={"timeout": self.timeout})
        except ckanapi.errors.CKANAPIError as exc:
            # ckanapi raises when `success` is false, whatever the HTTP status was.
            raise HarvestFailure("enumerate", f"CKAN package_search failed: {_short(exc)}") from exc
        except requests.RequestException as exc:
            raise HarvestFailure("enumerate", f"CKAN site unreachable: {_short(exc)}") from exc


def to_remote_dataset(pkg: dict) -> RemoteDataset:
    org = pkg.get("organization") or None
    resources = [
        RemoteResource(remote_id=r.get("id") or f"{pkg['id']}-{i}", url=r.get("url") or "",
                       name=r.get("name") or "", format=(r.get("format") or None),
                       description=r.get("description") or "",
                       remote_modified=r.get("last_modified") or r.get("metadata_modified"),
                       size=_int_or_none(r.get("size")))
        for i, r in enumerate(pkg.get("resources") or [])]
    return RemoteDataset(
        remote_id=pkg["id"], name=pkg.get("name") or pkg["id"],
        title=pkg.get("title") or pkg.get("name") or pkg["id"],
        description=pkg.get("notes") or "",
        tags=[t.get("display_name") or t.get("name") for t in pkg.get("tags") or [] if t],
        organization={"name": org.get("name"), "title": org.get("title") or org.get("name")}
        if org else None,
        license_id=pkg.get("license_id"), license_title=pkg.get("license_title"),
        license_url=pkg.get("license_url"),
        issued=pkg.get("metadata_created"), modified=pkg.get("metadata_modified"),
        landing_page=pkg.get("url") or None, resources=resources, raw=pkg)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"
