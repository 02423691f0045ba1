"""CKAN sources, through ckanapi's RemoteCKAN and the Action API.

Full runs page through package_search. With `incremental: true` the runner sets `since` (the
start of the last error-free job minus a margin) and only datasets modified after it are asked
for (`fq=metadata_modified:[since TO *]`); the names of all datasets come cheaply from
package_list, so deletions are still seen, and names we do not hold as active (new, withdrawn
earlier, or never harvested) are fetched one by one with package_show. A file that changes
without its CKAN record changing is only seen by a full run, so incremental is opt-in.
"""
from __future__ import annotations

from typing import Iterator

import ckanapi
import requests

from harvesters.base import (Harvester, HarvestFailure, JobError, RemoteDataset,
                             RemoteResource, SourceConfig)
from harvesters.http import (USER_AGENT, BodyTooLarge, TruncatedBody, read_capped,
                             session_for)
from harvesters.netguard import BlockedAddress

LIST_PAGE = 1000


class CKANHarvester(Harvester, source_type="ckan"):
    page_size = 100

    def __init__(self, source: SourceConfig, **kw):
        super().__init__(source, **kw)
        self.page_size = int(source.options.get("rows", self.page_size))
        self.fq = source.options.get("fq")
        self.incremental = bool(source.options.get("incremental", False))
        self.session = session_for(source.options)

    def enumerate(self) -> Iterator[RemoteDataset]:
        with _CappedCKAN(self.source.url.rstrip("/"), user_agent=USER_AGENT,
                         session=self.session, max_body=self.max_page_bytes) as ckan:
            if not (self.incremental and self.since):
                seen: set[str] = set()
                for remote in self._search(ckan, self.fq):
                    seen.add(remote.name)
                    yield remote
                self.present_names = seen
                return
            names = self._names(ckan)
            since = self.since.strftime("%Y-%m-%dT%H:%M:%SZ")
            fq = f"metadata_modified:[{since} TO *]"
            seen = set()
            for remote in self._search(ckan, f"({self.fq}) AND {fq}" if self.fq else fq):
                seen.add(remote.name)
                yield remote
            for name in sorted(names - seen - self.known_names):
                seen.add(name)
                try:
                    pkg = self._call(ckan, "package_show", {"id": name})
                except HarvestFailure as exc:  # one unreadable record is not a source failure
                    self.failures.append(exc.locate(dataset=name).error())
                    continue
                remote = self._convert(pkg)
                if remote is not None:
                    yield remote
            self.skipped_unchanged = len((names & self.known_names) - seen)
            self.present_names = names | seen

    def _names(self, ckan) -> set[str]:
        """Every dataset name, cheaply: package_list pages (or package_search fl=name under fq).

        A page shorter than asked is not taken as the end (sites cap `limit` below what we
        ask): paging goes on to an empty page, and the names are checked against
        package_search's count, so a list answered in short pages cannot hide datasets."""
        if self.fq:
            return {r.name for r in self._search(ckan, self.fq, fields="id,name")}
        names: set[str] = set()
        offset = 0
        while True:
            page = self._call(ckan, "package_list", {"limit": LIST_PAGE, "offset": offset})
            if not isinstance(page, list) or not all(isinstance(n, str) for n in page):
                raise HarvestFailure("enumerate", "CKAN package_list did not answer a list of "
                                     "names")
            if not page:
                break
            if set(page) <= names:
                self._incomplete(f"package_list repeated a page at offset {offset}")
                return names
            names.update(page)
            offset += len(page)
            if len(page) > LIST_PAGE:   # the site ignores limit and sent them all
                break
        total = _count(self._call(ckan, "package_search", {"rows": 0}))
        if total is None or len(names) < total:
            self._incomplete(f"package_list named {len(names)} datasets but package_search "
                             f"counts {total if total is not None else 'an unreadable number'}")
        return names

    def _search(self, ckan, fq: str | None, fields: str | None = None) -> Iterator[RemoteDataset]:
        seen: set[str] = set()
        unnamed = 0     # records without a usable id: counted, but cannot be told apart
        start, count = 0, None
        counted = False
        while not counted or count is None or start < count:
            params = {"rows": self.page_size, "start": start, "sort": "id asc"}
            if fq:
                params["fq"] = fq
            if fields:
                params["fl"] = fields
            page = self._call(ckan, "package_search", params)
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                raise HarvestFailure("enumerate", f"CKAN package_search answered no result "
                                     f"list at start={start}")
            now = _count(page)
            if not counted:
                counted, count = True, now
                if count is None:
                    self._incomplete(f"package_search answered a count that is not a number "
                                     f"({str(page.get('count'))[:40]!r})")
            elif now != count:
                self._incomplete(f"package_search count changed during paging ({count} → "
                                 f"{page.get('count')})")
            if not results:
                if count is not None and start < count:  # a site that stops early must not look like deletions
                    self._incomplete(f"package_search returned an empty page at start={start} "
                                     f"of {count}")
                break
            # Sites cap rows below what we ask (often 1000 → 100): advance by what came back.
            start += len(results)
            keys = [_key(pkg) for pkg in results]
            if all(k is not None and k in seen for k in keys):
                self._incomplete(f"package_search repeated a page at start={start}")
                break
            for i, (key, pkg) in enumerate(zip(keys, results)):
                if key is not None and key in seen:
                    continue
                if key is None:
                    unnamed += 1
                else:
                    seen.add(key)
                remote = self._convert(pkg, f"record {start - len(results) + i + 1}")
                if remote is not None:
                    yield remote
        if count is not None and len(seen) + unnamed < count:
            # Rows repeated across pages while the count stayed: others were never sent.
            self._incomplete(f"package_search sent {len(seen) + unnamed} different datasets "
                             f"of the {count} it counts")

    def _incomplete(self, reason: str) -> None:
        """The enumeration missed (or may have missed) datasets: said once as a warning and
        as an error of the job, and nothing is withdrawn this run."""
        self.complete = False
        self.warnings.append(reason)
        self.failures.append(JobError("enumerate", f"{reason}; the source was not enumerated "
                                      f"completely, so nothing is withdrawn this run"))

    def _convert(self, pkg, place: str = "a record") -> RemoteDataset | None:
        """One record the site sent in a shape we cannot read is one error, not the end of the
        enumeration; since its dataset was not seen, nothing may be withdrawn this run."""
        try:
            if not isinstance(pkg, dict):
                raise HarvestFailure("enumerate", f"CKAN sent {place} that is not a dataset "
                                     f"object ({type(pkg).__name__})")
            return None if is_derived(pkg) else to_remote_dataset(pkg)
        except Exception as exc:
            name = (pkg.get("name") or pkg.get("id")) if isinstance(pkg, dict) else None
            self.failures.append(JobError.from_exception(
                "enumerate", exc, dataset=str(name)[:200] if name else place))
            self.complete = False
            return None

    def _call(self, ckan, action: str, params: dict):
        try:
            return ckan.call_action(action, params, requests_kwargs={"timeout": self.timeout})
        except ckanapi.errors.CKANAPIError as exc:
            # ckanapi raises when `success` is false, whatever the HTTP status was.
            raise HarvestFailure("enumerate", f"CKAN {action} failed: {_short(exc)}") from exc
        except (BlockedAddress, BodyTooLarge, TruncatedBody) as exc:
            raise HarvestFailure("enumerate", f"CKAN {action}: {exc}") from exc
        except requests.RequestException as exc:
            raise HarvestFailure("enumerate", f"CKAN site unreachable: {_short(exc)}") from exc


class _CappedCKAN(ckanapi.RemoteCKAN):
    """ckanapi reads every answer whole (`r.text`); ours stop at the page budget."""

    def __init__(self, *args, max_body: int, **kw):
        super().__init__(*args, **kw)
        self.max_body = max_body

    def _request_fn(self, url, data, headers, files, requests_kwargs):
        with self.session.post(url, data=data, headers=headers, files=files,
                               allow_redirects=False, stream=True, **requests_kwargs) as r:
            body = read_capped(r, self.max_body)
            return r.status_code, body.decode(r.encoding or "utf-8", "replace")


def is_derived(item: dict) -> bool:
    """A renkei peer marks what it derived itself (theme layers, OGC API links, translated
    downloads): we derive those again from the originals, so harvesting them would copy copies."""
    if item.get("renkei_derived") in (True, "true"):
        return True
    return any(e.get("key") == "renkei_derived" and e.get("value") == "true"
               for e in item.get("extras") or [] if isinstance(e, dict))


def to_remote_dataset(pkg: dict) -> RemoteDataset:
    org = pkg.get("organization") or None
    resources = [
        RemoteResource(remote_id=r.get("id") or f"{pkg['id']}-{i}", url=r.get("url") or "",
                       name=r.get("name") or "", format=(r.get("format") or None),
                       description=r.get("description") or "",
                       remote_modified=r.get("last_modified") or r.get("metadata_modified"),
                       size=_int_or_none(r.get("size")))
        for i, r in enumerate(pkg.get("resources") or []) if not is_derived(r)]
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


def _count(page) -> int | None:
    value = page.get("count") if isinstance(page, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        count = int(value)
    except ValueError:
        return None
    return count if count >= 0 else None


def _key(pkg) -> str | None:
    """The record's id as a set key (ids may come as numbers, or as anything at all)."""
    value = pkg.get("id") if isinstance(pkg, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"
