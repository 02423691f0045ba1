"""FIWARE NGSI v2 brokers (Orion): one dataset, and one collection, per entity type.

```yaml
  - name: kakogawa-fiware
    type: ngsi-v2
    url: https://broker.example.lg.jp/       # broker root; /v2/entities is appended
    organization: kakogawa-city
    service: kakogawa                         # Fiware-Service (tenant)
    service_path: /                           # Fiware-ServicePath ("/#" for the whole tree)
    entity_types:                             # omitted: every type from /v2/types
      - EvacuationSite
      - {type: PointOfInterest, title: 加古川市 観光スポット, license: cc-by-4.0, tags: [観光]}
    key_values: false                         # ask for options=keyValues
    limit: 1000                               # page size asked for (Orion's maximum is 1000)
    auth: {type: oauth2, token_url: …, client_id_env: …, client_secret_env: …}
```
The entities of a type are paged through completely, flattened (normalized `{"type", "value"}`
→ value, Relationship → object id, nested values as JSON text) and written as one GeoJSON file
under the cache; the dataset's resource points at it, so the usual pipeline reads it and the
content hash decides "unchanged". A type whose paging goes wrong is reported and not published,
so what is served stays as it was.
"""
from __future__ import annotations

import json
from typing import Iterator

import requests

from harvesters.auth import Credentials
from harvesters.base import Harvester, HarvestFailure, JobError, RemoteDataset, RemoteResource
from harvesters.fetch import FeatureFileWriter
from harvesters.files import LICENSES
from harvesters.http import capped_json, describe, session_for

GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                  "MultiPolygon", "GeometryCollection"}
# Japanese titles for the data models the cities use (datamodels.jp, Smart Data Models).
TYPE_TITLES = {"EvacuationSite": "指定緊急避難場所", "DesignatedShelter": "指定避難所",
               "EvacuationShelter": "避難所の開設状況", "PointOfInterest": "施設・スポット",
               "AED": "AED設置箇所", "PublicFacility": "公共施設"}


class EntityHarvester(Harvester):
    """Paging, anomaly checks and file writing shared by NGSI v2, NGSI-LD and OGC API sources;
    the pages read are written under the cache dir, in a folder named by the source type."""
    max_page = 1000
    count_header = "Fiware-Total-Count"
    local_reads = "cache"

    def __init__(self, source, **kw):
        super().__init__(source, **kw)
        opts = source.options
        self.session = session_for(opts)
        self.credentials = Credentials(opts.get("auth"), source.name)
        self.limit = max(1, min(int(opts.get("limit", self.max_page)), self.max_page))
        self.key_values = bool(opts.get("key_values", False))

    def secrets(self) -> list[str]:
        return self.credentials.secrets()

    # -- hooks ------------------------------------------------------------------------------
    def entities_url(self) -> str:
        return self.source.url.rstrip("/") + "/v2/entities"

    def tenant_headers(self) -> dict:
        opts, out = self.source.options, {}
        if opts.get("service"):
            out["Fiware-Service"] = str(opts["service"])
        out["Fiware-ServicePath"] = str(opts.get("service_path") or "/")
        return out

    def page_params(self, entity_type: str, offset: int) -> dict:
        options = "count,keyValues" if self.key_values else "count"
        return {"type": entity_type, "limit": self.limit, "offset": offset, "options": options}

    def discover_types(self) -> list[str]:
        doc = self._get(self.source.url.rstrip("/") + "/v2/types",
                        {"options": "values", "limit": 1000}, "entity types")
        return [t for t in doc if isinstance(t, str)] if isinstance(doc, list) else []

    def flatten(self, entity: dict) -> tuple[dict | None, dict]:
        return flatten_entity(entity)

    # -- the walk ---------------------------------------------------------------------------
    def enumerate(self) -> Iterator[RemoteDataset]:
        self.credentials.headers(self.session, self.timeout)  # a refused login fails the source
        specs = self.source.options.get("entity_types") or self.discover_types()
        if not specs:
            self.complete = False
            self.warnings.append("the broker lists no entity types (check the tenant headers)")
        for spec in specs:
            spec = {"type": spec} if isinstance(spec, str) else dict(spec)
            if not isinstance(spec.get("type"), str):
                continue
            try:
                remote = self._harvest_type(spec)
            except _NothingToPublish:
                continue
            except SourceFailure:
                raise
            except HarvestFailure as exc:
                self.complete = False  # a type we could not read must not look deleted
                self.failures.append(exc.locate(dataset=self._title(spec)).error())
                continue
            except Exception as exc:   # an answer in a shape no check foresaw: this type only
                self.complete = False
                self.failures.append(JobError.from_exception("enumerate", exc,
                                                             dataset=self._title(spec)))
                continue
            if remote is not None:
                yield remote

    def _harvest_type(self, spec: dict) -> RemoteDataset | None:
        etype, title = spec["type"], self._title(spec)
        offset, total, seen, first = 0, None, set(), None
        writer = FeatureFileWriter(self.cache_dir, self.source_type, self.source.name, etype)
        with writer:
            while total is None or offset < total:
                resp = self._request(self.entities_url(), self.page_params(etype, offset), title)
                page = _json_list(resp, title, self.max_page_bytes)
                counted = resp.headers.get(self.count_header) or resp.headers.get(
                    self.count_header.lower())
                now = int(counted) if counted and counted.strip().isdigit() else None
                if total is None:
                    total = now
                elif now is not None and now != total:
                    raise HarvestFailure("enumerate", f"{self.count_header} changed during "
                                         f"paging ({total} → {now}); not published this time",
                                         dataset=title)
                if not page:
                    if total is not None and offset < total:
                        raise HarvestFailure("enumerate", f"empty page at offset {offset} of "
                                             f"{total}; not published this time", dataset=title)
                    break
                ids = [_entity_id(e, offset + n) for n, e in enumerate(page)]
                if any(i in seen for i in ids) or len(set(ids)) != len(ids):
                    raise HarvestFailure("enumerate", f"page at offset {offset} repeats entities "
                                         f"already received; not published this time",
                                         dataset=title)
                for entity, eid in zip(page, ids):
                    seen.add(eid)
                    first = first or entity
                    geometry, props = self.flatten(entity)
                    writer.add(None, geometry, props)
                # Brokers cap the page below what we ask: advance by what came back.
                offset += len(page)
                if total is None and len(page) < self.limit:
                    break
            if writer.count == 0:
                # Orion answers [] (not an error) to a wrong Fiware-Service: say so, publish nothing.
                self.complete = False
                self.warnings.append(f"0 entities of type {etype}: check the tenant/service "
                                     f"headers and the type name; nothing changed for it")
                raise _NothingToPublish()
        return self._dataset(spec, title, writer, first)

    def _dataset(self, spec, title, writer, first) -> RemoteDataset:
        lic = str(spec.get("license") or self.source.options.get("license") or "").strip()
        lic_title, lic_url = LICENSES.get(lic.lower(), (lic or None, None))
        org = self.source.organization
        raw = {"source_type": self.source_type, "broker": self.source.url,
               "entity_type": spec["type"], "entities": writer.count,
               **{k: v for k, v in self.tenant_headers().items()},
               "query": {k: v for k, v in self.page_params(spec["type"], 0).items()
                         if k not in ("offset",)},
               "example_entity": first}
        return RemoteDataset(
            remote_id=spec["type"], name=spec.get("name") or spec["type"], title=title,
            description=spec.get("description") or f"{self.source.url} の {spec['type']} "
                                                   f"エンティティ（{writer.count}件）",
            tags=list(spec.get("tags") or []) + [spec["type"]],
            organization={"name": org, "title": org} if org else None,
            license_id=lic or None, license_title=lic_title, license_url=lic_url,
            landing_page=spec.get("landing_page"),
            resources=[RemoteResource(remote_id=f"{spec['type']}-entities", url=writer.url,
                                      name=writer.path.name, format=writer.format)],
            raw=raw)

    def _title(self, spec: dict) -> str:
        if spec.get("title"):
            return str(spec["title"])
        label = TYPE_TITLES.get(spec["type"], spec["type"])
        return f"{self.source.name} {label}"

    # -- HTTP -------------------------------------------------------------------------------
    def _request(self, url: str, params: dict, what: str) -> requests.Response:
        for attempt in (1, 2):
            headers = {"Accept": "application/json", **self.tenant_headers(),
                       **self.extra_headers(),
                       **self.credentials.headers(self.session, self.timeout)}
            try:
                # Streamed: the body is read under the page budget (_get, _json_list).
                resp = self.session.get(url, params=params, headers=headers, timeout=self.timeout,
                                        stream=True)
            except requests.RequestException as exc:
                raise HarvestFailure("enumerate", f"{describe(exc, self.timeout)}: {url}",
                                     dataset=what) from None
            if resp.status_code == 401 and attempt == 1 and self.credentials.auth:
                resp.close()
                self.credentials.refresh()  # an expired token: ask once for a new one
                continue
            if resp.status_code in (401, 403):
                raise SourceFailure("enumerate", f"HTTP {resp.status_code} from {url}: access "
                                    f"refused (check the source's credentials)", dataset=what)
            if resp.status_code >= 400:
                raise HarvestFailure("enumerate", f"HTTP {resp.status_code} from {url}"
                                     f"{_error_text(resp)}", dataset=what)
            return resp
        raise AssertionError("unreachable")

    def extra_headers(self) -> dict:
        return {}

    def _get(self, url: str, params: dict, what: str):
        resp = self._request(url, params, what)
        return _read_json(resp, self.max_page_bytes, what, f"{url} did not answer JSON")


class SourceFailure(HarvestFailure):
    """A failure of the whole source (refused credentials): no type will do better."""


class _NothingToPublish(Exception):
    """Raised inside the writer so an empty answer leaves the previous file untouched."""


class NGSIv2Harvester(EntityHarvester, source_type="ngsi-v2"):
    pass


def flatten_entity(entity: dict) -> tuple[dict | None, dict]:
    """(GeoJSON geometry, flat properties) of a normalized or keyValues NGSI entity."""
    values = {k: _attr_value(a) for k, a in entity.items() if k not in ("id", "type", "@context")}
    geo_keys = [k for k, (v, kind) in values.items()
                if _is_geometry(v) or (kind == "geo:point" and isinstance(v, str))]
    # `location` is the model's place when there are several geometries (e.g. an area too).
    main = "location" if "location" in geo_keys else (geo_keys[0] if geo_keys else None)
    # entity_id/entity_type: GDAL would take a property called "id" for the feature id.
    geometry, props = None, {"entity_id": entity.get("id"), "entity_type": entity.get("type")}
    for key, (value, kind) in values.items():
        if key == main:
            geometry = value if _is_geometry(value) else _geo_point(value)
            if geometry is not None:
                continue
        props[key] = _scalar(value)
    return geometry, props


def _geo_point(text: str) -> dict | None:
    """Legacy Orion geo:point, "lat, lon" in that order."""
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        return None
    return {"type": "Point", "coordinates": [lon, lat]}


def _attr_value(attr):
    if isinstance(attr, dict) and "type" in attr and ("value" in attr or "object" in attr):
        if attr.get("type") == "Relationship" or "object" in attr:
            return attr.get("object"), "Relationship"
        return attr.get("value"), attr.get("type")
    return attr, None


def _is_geometry(value) -> bool:
    return isinstance(value, dict) and value.get("type") in GEOMETRY_TYPES and (
        "coordinates" in value or "geometries" in value)


def _scalar(value):
    if isinstance(value, dict) and "@value" in value:  # NGSI-LD {"@type": "DateTime", ...}
        return value["@value"]
    if isinstance(value, (dict, list)):
        # GeoPackage columns hold scalars; nested values stay readable as JSON text.
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def _entity_id(entity: dict, place: int) -> str:
    value = entity.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise HarvestFailure("enumerate", f"entity {place + 1} has no usable id "
                             f"({type(value).__name__}); not published this time")
    return str(value)


def _read_json(resp: requests.Response, limit: int, what: str, not_json: str):
    """The JSON of a streamed answer, read under the page budget."""
    try:
        with resp:
            return capped_json(resp, limit)
    except ValueError:
        raise HarvestFailure("enumerate", not_json, dataset=what) from None
    except requests.RequestException as exc:
        raise HarvestFailure("enumerate", f"{describe(exc, 0)}: {resp.url}",
                             dataset=what) from None


def _json_list(resp: requests.Response, what: str, limit: int) -> list[dict]:
    doc = _read_json(resp, limit, what, f"{resp.url} did not answer JSON (truncated or not "
                                        f"an entity list)")
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise HarvestFailure("enumerate", f"{resp.url} did not answer a list of entities",
                             dataset=what)
    return doc


def _error_text(resp: requests.Response) -> str:
    try:
        with resp:
            doc = capped_json(resp, 64 * 1024)
    except (ValueError, requests.RequestException):
        return ""
    if isinstance(doc, dict):
        text = " ".join(str(doc.get(k)) for k in ("error", "title", "description", "detail")
                        if doc.get(k))
        return f": {text[:200]}" if text else ""
    return ""
