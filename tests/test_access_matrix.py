"""Every read path × every kind of caller, against one real server (werkzeug on 127.0.0.1).

Three datasets are harvested from real GSI files by the `files` harvester, with sources.yaml
setting their access level: Kasai's shelters at `organization` level (kasai-city only), Yabu's
at `members` level (any member of any organization), Kakogawa's public. Every path is asked by
anonymous, another organization's member, Kasai's member (signed in through the /login form),
editor and admin (tokens), a read-only token, a revoked token, an expired token and a
sysadmin; the test checks the exact status and that nothing of a dataset the caller may not
read — title, id, collection id, a feature's 共通ID — is anywhere in the body.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest
import requests

from store import accounts
from store.db import Store, utcnow
from tests.accounts import PASSWORD, add_user, token
from tests.servers import REPO, live_server

EXAMPLES = REPO / "catalog" / "examples"
SECRET = {"id": "kasai-secret--emergency-282201", "title": "加西市 職員限定テスト避難場所",
          "feature": "E2822000003201", "level": "organization"}
SHARED = {"id": "yabu-shared--emergency-282227", "title": "養父市 会員共有テスト避難場所",
          "feature": "E2822200001201", "level": "members"}
OPEN = {"id": "kakogawa-open--evacuation-282103", "title": "加古川市 公開テスト避難所",
        "feature": "E2821000001111", "level": "public"}
CONFIG = f"""
sources:
  - name: kasai-secret
    type: files
    organization: kasai-city
    access_level: organization
    files:
      - id: emergency-282201
        title: {SECRET['title']}
        url: gsi_emergency_282201.json
        license: gsi
        tags: [避難場所]
  - name: yabu-shared
    type: files
    organization: yabu-city
    access_level: members
    files:
      - id: emergency-282227
        title: {SHARED['title']}
        url: gsi_emergency_282227.json
        license: gsi
        tags: [避難場所]
  - name: kakogawa-open
    type: files
    organization: kakogawa-city
    files:
      - id: evacuation-282103
        title: {OPEN['title']}
        url: gsi_evacuation_282103.json
        license: gsi
        tags: [避難所]
"""
CALLERS = ("anonymous", "other_org", "member", "editor", "admin", "read_token",
           "revoked_token", "expired_token", "sysadmin")


def _sees(caller: str, ds: dict) -> bool:
    if caller in ("revoked_token", "expired_token"):
        return False
    if ds["level"] == "public" or caller == "sysadmin":
        return True
    if ds["level"] == "members":
        return caller != "anonymous"
    return caller in ("member", "editor", "admin", "read_token")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from catalog.app import create_app
    root = tmp_path_factory.mktemp("matrix")
    for name in ("gsi_emergency_282201.json", "gsi_emergency_282227.json",
                 "gsi_evacuation_282103.json"):
        shutil.copy(EXAMPLES / name, root / name)
    (root / "sources.yaml").write_text(CONFIG, encoding="utf-8")
    data_dir = root / "data"
    proc = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(root / "sources.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    store = Store(data_dir)
    add_user(store, "kasai-member@city.kasai.example", org="kasai-city", role="member")
    add_user(store, "kasai-editor@city.kasai.example", org="kasai-city", role="editor")
    add_user(store, "kasai-admin@city.kasai.example", org="kasai-city", role="admin")
    add_user(store, "himeji@city.himeji.example", org="himeji-city", role="admin")
    add_user(store, "ops@pref.hyogo.example", sysadmin=True)
    revoked = token(store, "kasai-admin@city.kasai.example", "write")
    expired = token(store, "kasai-admin@city.kasai.example", "write")
    with store.session() as s, s.begin():
        secret = accounts.token_secret(data_dir)
        for raw in (revoked, expired):
            rec = s.query(accounts.ApiToken).filter_by(
                token_hash=accounts.token_hash(secret, raw)).one()
            if raw == revoked:
                rec.revoked_at = utcnow()
            else:
                rec.expires_at = utcnow() - timedelta(seconds=1)
    bearer = {"editor": token(store, "kasai-editor@city.kasai.example", "write"),
              "admin": token(store, "kasai-admin@city.kasai.example", "write"),
              "read_token": token(store, "kasai-member@city.kasai.example", "read"),
              "other_org": token(store, "himeji@city.himeji.example", "read"),
              "sysadmin": token(store, "ops@pref.hyogo.example", "read"),
              "revoked_token": revoked, "expired_token": expired}
    with live_server(create_app(data_dir)) as url:
        clients = {}
        for caller in CALLERS:
            c = requests.Session()
            if caller in bearer:
                # The three header forms ckanapi and others send, spread over the callers.
                form = CALLERS.index(caller) % 3
                raw = bearer[caller]
                c.headers.update({"Authorization": f"Bearer {raw}"} if form == 0 else
                                 {"Authorization": raw} if form == 1 else
                                 {"X-CKAN-API-Key": raw})
            clients[caller] = c
        _sign_in(clients["member"], url, "kasai-member@city.kasai.example")
        ids = _ids(clients["sysadmin"], url)
        yield url, clients, ids, data_dir


def _sign_in(session: requests.Session, url: str, email: str) -> None:
    form = session.get(url + "/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    resp = session.post(url + "/login", data={"email": email, "password": PASSWORD,
                                              "csrf_token": csrf}, timeout=10,
                        allow_redirects=False)
    assert resp.status_code == 302, resp.text


def _ids(sysadmin: requests.Session, url: str) -> dict:
    """Resource, collection and feature ids of each dataset, as a sysadmin sees them."""
    out = {}
    for ds in (SECRET, SHARED, OPEN):
        pkg = sysadmin.get(url + "/api/3/action/package_show", params={"id": ds["id"]},
                           timeout=10).json()["result"]
        cid = next(r["url"].rsplit("/", 1)[-1] for r in pkg["resources"]
                   if r["format"] == "OGC API Features")
        items = sysadmin.get(f"{url}/ogcapi/collections/{cid}/items",
                             params={"f": "json", "limit": 1}, timeout=10).json()
        lon, lat = items["features"][0]["geometry"]["coordinates"][:2]
        z = 14   # the web-mercator tile holding the first feature
        x = int((lon + 180) / 360 * 2 ** z)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2 ** z)
        out[ds["id"]] = {"resource": pkg["resources"][0]["id"], "collection": cid,
                         "item": items["features"][0]["id"], "lat": lat, "lon": lon,
                         "z": z, "y": y, "x": x}
    return out


# (name, path template, status when the dataset is readable, status when it is not;
#  None: a list, 200 either way and the dataset simply absent)
SINGLE = [
    ("dataset page", "/datasets/{id}", 200, 404),
    ("dataset DCAT", "/datasets/{id}.ttl", 200, 404),
    ("package_show", "/api/3/action/package_show?id={id}", 200, 404),
    ("resource_show", "/api/3/action/resource_show?id={resource}", 200, 404),
    ("derived resource_show", "/api/3/action/resource_show?id={collection}--geojson", 200, 404),
    ("collection", "/ogcapi/collections/{collection}?f=json", 200, 404),
    ("collection html", "/ogcapi/collections/{collection}?f=html", 200, 404),
    ("items", "/ogcapi/collections/{collection}/items?f=json&limit=1000", 200, 404),
    ("item", "/ogcapi/collections/{collection}/items/{item}?f=json", 200, 404),
    ("queryables", "/ogcapi/collections/{collection}/queryables?f=json", 200, 404),
    ("schema", "/ogcapi/collections/{collection}/schema?f=json", 200, 404),
    ("download geojson", "/datasets/{id}/collections/{collection}.geojson", 200, 404),
    ("download csv", "/datasets/{id}/collections/{collection}.csv", 200, 404),
    ("tilesets (i15)", "/ogcapi/collections/{collection}/tiles?f=json", 200, 404),
    ("tile (i15)", "/ogcapi/collections/{collection}/tiles/WebMercatorQuad/{z}/{y}/{x}", 200, 404),
]
LISTS = [
    ("home", "/"),
    ("search page", "/datasets?q=テスト"),
    ("search facets", "/datasets?q=避難"),
    ("organization page", "/organizations/{org}"),
    ("organizations", "/organizations"),
    ("package_search", "/api/3/action/package_search?q=テスト&rows=1000&facet.field=[\"organization\",\"tags\"]"),
    ("package_search fq", "/api/3/action/package_search?fq=organization:{org}"),
    ("package_list", "/api/3/action/package_list"),
    ("organization_show", "/api/3/action/organization_show?id={org}&include_datasets=true"),
    ("tag_list", "/api/3/action/tag_list"),
    ("current_package_list_with_resources",
     "/api/3/action/current_package_list_with_resources?limit=1000"),
    ("collections", "/ogcapi/collections?f=json"),
    ("collections html", "/ogcapi/collections?f=html"),
    ("openapi", "/ogcapi/openapi?f=json"),
    ("theme layer", "/ogcapi/collections/theme-shelter/items?f=json&limit=1000"),
    ("DCAT catalogue", "/catalog.ttl"),
    ("Atom", "/feeds/datasets.atom"),
    ("Atom of organization", "/feeds/organizations/{org}.atom"),
    ("sitemap", "/sitemap.xml"),
    ("hazard lookup (i15)", "/api/hazards?lat={lat}&lon={lon}"),
    ("hazards page (i15)", "/hazards?lat={lat}&lon={lon}"),
]
ORGS = {SECRET["id"]: "kasai-city", SHARED["id"]: "yabu-city", OPEN["id"]: "kakogawa-city"}


def _markers(ds: dict, ids: dict) -> list[str]:
    return [ds["title"], ds["id"], ids[ds["id"]]["collection"], ds["feature"]]


def _get(world, caller: str, template: str, ds: dict) -> requests.Response:
    url, clients, ids, _ = world
    path = template.format(id=ds["id"], org=ORGS[ds["id"]], **ids[ds["id"]])
    return clients[caller].get(url + path, timeout=30)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("name,template,seen,unseen", SINGLE, ids=[p[0] for p in SINGLE])
def test_one_record(world, caller, name, template, seen, unseen):
    for ds in (SECRET, SHARED, OPEN):
        resp = _get(world, caller, template, ds)
        if caller in ("revoked_token", "expired_token"):
            assert resp.status_code == 401, (name, ds["id"], resp.status_code)
            assert "renkei_" not in resp.text
        elif _sees(caller, ds):
            assert resp.status_code == seen, (name, caller, ds["id"], resp.status_code)
        else:
            assert resp.status_code == unseen, (name, caller, ds["id"], resp.status_code)
        if not _sees(caller, ds):
            # The error names nothing the caller did not send: no title, no feature.
            for marker in (ds["title"], ds["feature"]):
                assert marker not in resp.text, (name, caller, marker)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("name,template", LISTS, ids=[p[0] for p in LISTS])
def test_lists(world, caller, name, template):
    _, _, ids, _ = world
    for ds in (SECRET, SHARED, OPEN):
        resp = _get(world, caller, template, ds)
        if caller in ("revoked_token", "expired_token"):
            assert resp.status_code == 401, (name, resp.status_code)
            continue
        assert resp.status_code == 200, (name, caller, resp.status_code)
        body = resp.text
        if name == "theme layer":
            # A merged layer is public: only public members' features, whoever asks.
            assert (ds["feature"] in body) == (ds["level"] == "public"), (caller, ds["id"])
            continue
        if _sees(caller, ds):
            if name not in ("organizations", "openapi", "tag_list", "search facets",
                            "hazard lookup (i15)", "hazards page (i15)"):
                assert ds["id"] in body or ds["title"] in body, (name, caller, ds["id"])
        else:
            for marker in _markers(ds, ids):
                assert marker not in body, (name, caller, marker)


def test_counts_follow_the_caller(world):
    """Organization counts and facet counts are counts of what the caller may read."""
    url, clients, _, _ = world

    def kasai_count(caller):
        orgs = clients[caller].get(url + "/api/3/action/organization_list",
                                   params={"all_fields": "true"}, timeout=10).json()["result"]
        return next(o["package_count"] for o in orgs if o["name"] == "kasai-city")

    def facet(caller):
        found = clients[caller].get(url + "/api/3/action/package_search",
                                    params={"facet.field": '["organization"]', "rows": 0},
                                    timeout=10).json()["result"]
        return found["count"], found["facets"]["organization"].get("kasai-city", 0)

    assert kasai_count("anonymous") == 0 and kasai_count("other_org") == 0
    assert kasai_count("member") == 1 and kasai_count("sysadmin") == 1
    public, _ = facet("anonymous")   # Kakogawa's and the merged shelter layer
    assert public == 2 and facet("anonymous")[1] == 0
    assert facet("other_org") == (public + 1, 0)      # + Yabu's, shared with members
    assert facet("read_token") == (public + 2, 1)     # + Kasai's own


def test_access_level_in_package_dicts(world):
    url, clients, _, _ = world
    pkg = clients["admin"].get(url + "/api/3/action/package_show",
                               params={"id": SECRET["id"]}, timeout=10).json()["result"]
    assert pkg["access_level"] == "organization" and pkg["private"] is True
    pkg = clients["admin"].get(url + "/api/3/action/package_show",
                               params={"id": SHARED["id"]}, timeout=10).json()["result"]
    assert pkg["access_level"] == "members" and pkg["private"] is False


def test_staff_pages_need_a_member(world):
    url, clients, _, _ = world
    assert clients["anonymous"].get(url + "/harvest", timeout=10,
                                    allow_redirects=False).status_code == 302
    page = clients["member"].get(url + "/harvest", timeout=10)
    assert page.status_code == 200
    # Kasai's member sees Kasai's source, not the others'.
    assert "kasai-secret" in page.text and "yabu-shared" not in page.text
    everything = clients["sysadmin"].get(url + "/harvest", timeout=10).text
    assert all(n in everything for n in ("kasai-secret", "yabu-shared", "kakogawa-open"))


def test_a_token_revoked_while_in_use_is_refused_on_its_next_request(world):
    url, _, _, data_dir = world
    store = Store(data_dir)
    raw = token(store, "kasai-editor@city.kasai.example", "read")
    headers = {"Authorization": raw}
    assert requests.get(url + "/api/3/action/package_show", params={"id": SECRET["id"]},
                        headers=headers, timeout=10).status_code == 200
    with store.session() as s, s.begin():
        rec = s.query(accounts.ApiToken).filter_by(
            token_hash=accounts.token_hash(accounts.token_secret(store.data_dir), raw)).one()
        accounts.revoke_token(s, rec.id)
    assert requests.get(url + "/api/3/action/package_show", params={"id": SECRET["id"]},
                        headers=headers, timeout=10).status_code == 401


def test_private_and_capacity_filters_follow_the_access_level(world):
    url, clients, _, _ = world

    def names(caller, fq):
        found = clients[caller].get(url + "/api/3/action/package_search",
                                    params={"fq": fq, "rows": 100}, timeout=10).json()["result"]
        return {r["name"] for r in found["results"]}

    assert names("read_token", "private:true") == {SECRET["id"]}
    assert names("anonymous", "private:true") == set()
    assert names("read_token", "capacity:private") == {SECRET["id"], SHARED["id"]}
    assert OPEN["id"] in names("read_token", "capacity:public")
    assert SECRET["id"] not in names("read_token", "private:false")


def test_post_items_is_a_read_under_the_same_rule(world):
    """POST items (a CQL2 JSON search) needs no CSRF token, and follows the read rule."""
    url, clients, ids, _ = world
    body = {"op": "=", "args": [{"property": "共通ID"}, SECRET["feature"]]}
    path = f"{url}/ogcapi/collections/{ids[SECRET['id']]['collection']}/items"
    seen = clients["read_token"].post(path, json=body, timeout=30,
                                      headers={"Content-Type": "application/query-cql-json"})
    assert seen.status_code == 200 and SECRET["feature"] in seen.text
    hidden = clients["anonymous"].post(path, json=body, timeout=30,
                                       headers={"Content-Type": "application/query-cql-json"})
    assert hidden.status_code == 404 and SECRET["feature"] not in hidden.text


def test_answers_to_callers_are_never_kept_by_shared_caches(world):
    """Tiles say Cache-Control public; to a member (token or session) the same URL must say
    private, and every answer varies on the credentials, so a proxy never hands one caller's
    answer to another."""
    url, clients, ids, _ = world
    path = "/ogcapi/collections/{collection}/tiles/WebMercatorQuad/{z}/{y}/{x}"
    anon = _get(world, "anonymous", path, OPEN)
    assert anon.status_code == 200 and "public" in anon.headers["Cache-Control"]
    assert {"authorization", "cookie"} <= {v.strip().lower()
                                           for v in anon.headers["Vary"].split(",")}
    for caller in ("read_token", "member"):
        for ds in (SECRET, OPEN):
            resp = _get(world, caller, path, ds)
            assert resp.status_code == 200, (caller, ds["id"])
            directives = [d.strip() for d in resp.headers["Cache-Control"].split(",")]
            assert "private" in directives and "public" not in directives, (caller, directives)
