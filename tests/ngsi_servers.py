"""Fixture brokers on 127.0.0.1 that behave like Orion (NGSI v2), an NGSI-LD broker and an
OGC API Features server, with knobs to misbehave (5xx, hangs, truncated bodies, paging faults).

Entities are built from real records: GSI 指定緊急避難場所 of 加古川市 (282103) in the
datamodels.jp EvacuationSite shape, and the Smart Data Models / datamodels.jp examples as they
are in tests/data/fiware/.
"""
from __future__ import annotations

import base64
import copy
import json
import threading
import time
from collections import Counter

from flask import Flask, Response, abort, jsonify, request

from tests.servers import TEST_DATA

FIWARE = TEST_DATA / "fiware"
HAZARDS = {"洪水": "flood", "崖崩れ、土石流及び地滑り": "landslide", "高潮": "stormSurge",
           "地震": "earthquake", "津波": "tsunami", "大規模な火事": "greatFire",
           "内水氾濫": "inlandFlood", "火山現象": "eruption"}
LD_CONTEXT = "https://datamodels.jp/context/disaster/v1.0.0.jsonld"


def gsi_sites(code: str = "282103", ld: bool = False) -> list[dict]:
    """GSI 指定緊急避難場所 as normalized EvacuationSite entities (v2 or LD attribute types)."""
    doc = json.loads((TEST_DATA / f"geojson/gsi_emergency_{code}.json").read_text("utf-8"))
    text, struct, geo = ("Property", "Property", "GeoProperty") if ld else \
        ("Text", "StructuredValue", "geo:json")
    out = []
    for f in doc["features"]:
        p = f["properties"]
        out.append({
            "id": f"urn:ngsi-ld:EvacuationSite:{p['共通ID']}", "type": "EvacuationSite",
            "name": {"type": text, "value": p["施設・場所名"]},
            "nationalShelterId": {"type": text, "value": p["共通ID"]},
            "localGovernmentCode": {"type": text, "value": code},
            "address": {"type": struct, "value": {"addressCountry": "JP", "addressText": p["住所"]}},
            "hazardTypes": {"type": struct,
                            "value": [v for k, v in HAZARDS.items() if p.get(k) == "1"]},
            "location": {"type": geo, "value": f["geometry"]},
        })
    return out


def fiware_example(name: str) -> dict:
    return json.loads((FIWARE / name).read_text("utf-8"))


def key_values(entity: dict) -> dict:
    out = {}
    for k, v in entity.items():
        if isinstance(v, dict) and "type" in v and ("value" in v or "object" in v):
            out[k] = v.get("object", v.get("value"))
        else:
            out[k] = v
    return out


class Faults:
    """Misbehaviour switched on by tests: statuses to answer first, hangs, cut bodies, gates."""

    def __init__(self):
        self.statuses: list[int] = []     # answered (in order) before behaving
        self.hang: float = 0.0            # seconds to sleep before answering
        self.hang_offset: int | None = None
        self.truncate_offset: int | None = None
        self.empty_offset: int | None = None
        self.repeat_offset: int | None = None
        self.count_shift_after_first = 0
        self.gate_offset: int | None = None   # block here until `release` is set
        self.entered = threading.Event()
        self.release = threading.Event()

    def before(self, offset: int):
        if self.statuses:
            return Response(json.dumps({"error": "InternalError"}), status=self.statuses.pop(0),
                            mimetype="application/json")
        if self.gate_offset is not None and offset == self.gate_offset:
            self.entered.set()
            self.release.wait(60)
        if self.hang and (self.hang_offset is None or offset == self.hang_offset):
            time.sleep(self.hang)
        return None


class FakeOrion:
    """Orion's /v2/entities: Fiware-Service tenants, options=count, keyValues, limit ≤ 1000."""

    def __init__(self, entities: list[dict], *, service: str = "kakogawa", service_path: str = "/",
                 max_limit: int = 1000, client: tuple[str, str] | None = None):
        self.entities, self.service, self.service_path = entities, service, service_path
        self.max_limit, self.client = max_limit, client
        self.faults = Faults()
        self.hits: Counter = Counter()
        self.requests: list[dict] = []    # headers and args of every call (for assertions)
        self.tokens: set[str] = set()
        self.app = self._make_app()

    def _authorized(self) -> bool:
        if not self.client:
            return True
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def _make_app(self) -> Flask:
        app = Flask("fake_orion")

        @app.post("/oauth2/token")
        def token():
            expected = "Basic " + base64.b64encode(":".join(self.client).encode()).decode()
            if request.headers.get("Authorization") != expected or \
                    request.form.get("grant_type") != "client_credentials":
                return jsonify({"error": "invalid_client"}), 401
            tok = f"tok-{len(self.tokens) + 1}-abcdef"
            self.tokens.add(tok)
            return jsonify({"access_token": tok, "token_type": "bearer", "expires_in": 3600})

        @app.get("/v2/types")
        def types():
            if not self._authorized():
                return jsonify({"error": "Unauthorized"}), 401
            return jsonify(sorted({e["type"] for e in self._tenant()}))

        @app.get("/v2/entities")
        def entities():
            self.requests.append({"headers": dict(request.headers), "args": dict(request.args)})
            if not self._authorized():
                return jsonify({"error": "Unauthorized", "description": "token required"}), 401
            limit = int(request.args.get("limit", 20))
            offset = int(request.args.get("offset", 0))
            self.hits[(request.args.get("type"), offset)] += 1
            if limit > 1000:
                return jsonify({"error": "BadRequest", "description":
                                f"Bad pagination limit: /{limit}/ [a value between 1 and "
                                f"1000 is allowed]"}), 400
            early = self.faults.before(offset)
            if early is not None:
                return early
            options = (request.args.get("options") or "").split(",")
            rows = [e for e in self._tenant() if e["type"] == request.args.get("type")]
            total = len(rows)
            if self.faults.count_shift_after_first and offset > 0:
                total += self.faults.count_shift_after_first
            if offset == self.faults.repeat_offset:
                offset = 0
            page = rows[offset:offset + min(limit, self.max_limit)]
            if offset == self.faults.empty_offset:
                page = []
            if "keyValues" in options:
                page = [key_values(e) for e in page]
            body = json.dumps(page, ensure_ascii=False)
            if offset == self.faults.truncate_offset:
                body = body[: len(body) // 2]
            resp = Response(body, mimetype="application/json")
            if "count" in options:
                resp.headers["Fiware-Total-Count"] = str(total)
            return resp

        return app

    def _tenant(self) -> list[dict]:
        # Orion answers an empty list, not an error, for a tenant or path it does not know.
        if request.headers.get("Fiware-Service") != self.service:
            return []
        path = request.headers.get("Fiware-ServicePath", "/")
        if path not in (self.service_path, "/#"):
            return []
        return self.entities


class FakeNGSILD:
    """/ngsi-ld/v1/entities with NGSILD-Tenant, a Link @context, count=true and a small cap."""

    def __init__(self, entities: list[dict], *, tenant: str = "hyogo", context: str = LD_CONTEXT,
                 max_limit: int = 3):
        self.entities, self.tenant, self.context, self.max_limit = entities, tenant, context, max_limit
        self.faults = Faults()
        self.requests: list[dict] = []
        self.app = self._make_app()

    def _make_app(self) -> Flask:
        app = Flask("fake_ngsi_ld")

        @app.get("/ngsi-ld/v1/types")
        def types():
            return jsonify({"id": "urn:ngsi-ld:EntityTypeList:1", "type": "EntityTypeList",
                            "typeList": sorted({e["type"] for e in self.entities})})

        @app.get("/ngsi-ld/v1/entities")
        def entities():
            self.requests.append({"headers": dict(request.headers), "args": dict(request.args)})
            limit = int(request.args.get("limit", 20))
            offset = int(request.args.get("offset", 0))
            early = self.faults.before(offset)
            if early is not None:
                return early
            rows = self._visible(request.args.get("type"))
            page = rows[offset:offset + min(limit, self.max_limit)]
            if offset == self.faults.empty_offset:
                page = []
            out = []
            for e in page:
                e = {k: v for k, v in e.items() if k != "@context"}  # context goes in Link
                out.append(key_values(e) if request.args.get("options") == "keyValues" else e)
            resp = Response(json.dumps(out, ensure_ascii=False), mimetype="application/json")
            resp.headers["Link"] = f'<{self.context}>; rel="http://www.w3.org/ns/json-ld#context"'
            if request.args.get("count") == "true":
                resp.headers["NGSILD-Results-Count"] = str(len(rows))
            return resp

        return app

    def _visible(self, etype: str | None) -> list[dict]:
        if request.headers.get("NGSILD-Tenant") != self.tenant:
            return []
        # A short type name is expanded with the Link context; without it, it matches nothing.
        if self.context not in request.headers.get("Link", ""):
            return []
        return [e for e in self.entities if e["type"] == etype]


class FakeOGCAPI:
    """/collections and /collections/<id>/items with limit/offset and `next` links."""

    def __init__(self, collections: dict[str, tuple[str, dict]], *, max_limit: int = 7):
        self.collections, self.max_limit = collections, max_limit
        self.faults = Faults()
        self.app = self._make_app()

    def _make_app(self) -> Flask:
        app = Flask("fake_ogcapi")

        @app.get("/collections")
        def collections():
            return jsonify({"collections": [
                {"id": cid, "title": title, "description": f"{title}（国土地理院）",
                 "keywords": ["避難所"],
                 "links": [{"rel": "items", "type": "application/geo+json",
                            "href": f"{request.host_url}collections/{cid}/items"},
                           {"rel": "license", "href": "https://www.gsi.go.jp/kikakuchousei/kikakuchousei40182.html",
                            "title": "国土地理院コンテンツ利用規約"}]}
                for cid, (title, _fc) in self.collections.items()], "links": []})

        @app.get("/collections/<cid>/items")
        def items(cid):
            if cid not in self.collections:
                abort(404)
            feats = self.collections[cid][1]["features"]
            limit = min(int(request.args.get("limit", 10)), self.max_limit)
            offset = int(request.args.get("offset", 0))
            early = self.faults.before(offset)
            if early is not None:
                return early
            page = feats[offset:offset + limit]
            if offset == self.faults.empty_offset:
                page = []
            links = []
            nxt = self.faults.repeat_offset if offset == (self.faults.repeat_offset or 0) + limit \
                and self.faults.repeat_offset is not None else offset + limit
            if offset + limit < len(feats):
                links.append({"rel": "next", "type": "application/geo+json",
                              "href": f"{request.base_url}?offset={nxt}&limit={limit}"})
            return Response(json.dumps({
                "type": "FeatureCollection",
                "features": [dict(f, id=offset + i + 1) for i, f in enumerate(page)],
                "numberMatched": len(feats), "numberReturned": len(page), "links": links},
                ensure_ascii=False), mimetype="application/geo+json")

        return app


def copy_entities(entities: list[dict]) -> list[dict]:
    return copy.deepcopy(entities)


def run(data_dir, *sources, orgs=None, timeout: float = 5.0):
    """Harvest in this process; returns (reports, log lines)."""
    from store.db import Store
    from harvesters.runner import run_harvest
    lines: list[str] = []
    reports = run_harvest(Store(data_dir), list(sources), orgs or {}, timeout=timeout,
                          log=lines.append)
    return reports, lines


def source(name: str, kind: str, url: str, organization: str | None = "kakogawa-city",
           **options):
    """A SourceConfig as load_config builds it (retries without backoff: tests stay fast)."""
    from harvesters.base import SourceConfig
    options.setdefault("backoff", 0)
    options.setdefault("allow_private_networks", True)   # the fixtures live on 127.0.0.1
    return SourceConfig(name=name, type=kind, url=url, organization=organization,
                        options=options)
