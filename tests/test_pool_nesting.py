"""No request holds one pooled connection while it waits for another (issue 14).

A request that reads the catalogue through one connection and, before giving it back, checks
out a second (a feature table, a search) needs two at once. When as many such requests as the
pool holds arrive together in one worker, each holds one and waits for another, and all of them
wait until the pool's timeout (30 s by default): behind PgBouncer's small pool the same happens
with its server connections. A worker whose pool holds exactly one connection turns any such
path into a failure of every single request that takes it. So this test serves, from such a
worker with a pool timeout of 2 s and one request at a time, the read paths of the catalogue,
the CKAN and DCAT APIs, the OGC API and its tiles, the hazard lookup and the downloads (to
anonymous callers and with a member's API token), the staff pages (signed in), and a member's
publishing through the form (upload, preview, publish, edit, withdraw), and requires every
answer well inside that timeout.

Found this way (each had made a request wait out the pool's timeout and then answer without
its data or with a 500): the dataset page read its attribute table, the organization page ran
its search, and the publish form read the upload limit and published, each while its own
session still held a connection."""
from __future__ import annotations

import os

import pytest
import requests

from store.db import Store
from tests import pg_mode
from tests.accounts import add_user, token
from tests.platform_world import csrf, sign_in
from tests.servers import renkei_serve
from tests.test_security_serve import harvest
from tests.test_stateless_servers import DATASET, sources, view

pytestmark = pytest.mark.pg_only(reason="the pool of a PostgreSQL-mode worker")


def test_every_read_path_answers_from_a_pool_of_one_connection(tmp_path, monkeypatch):
    shared = pg_mode.url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)
    monkeypatch.setenv("RENKEI_SECRET_KEY", "pool-test-session-secret")
    monkeypatch.setenv("RENKEI_TOKEN_SECRET", "pool-test-token-secret")
    assert harvest(tmp_path / "harvester", sources(tmp_path / "src", with_file=True)
                   ).returncode == 0
    store = Store(tmp_path / "harvester")
    add_user(store, "ops@pref.hyogo.example", sysadmin=True)
    add_user(store, "staff@kakogawa.example", org="kakogawa-city", role="editor")
    bearer = {"Authorization": "Bearer " + token(store, "staff@kakogawa.example")}
    store.engine.dispose()
    monkeypatch.setenv("RENKEI_DB_POOL_SIZE", "1")
    monkeypatch.setenv("RENKEI_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("RENKEI_DB_POOL_TIMEOUT", "2")
    with renkei_serve(tmp_path / "web", workers=1, extra_args=("--threads", "1")) as (base, _):
        seen = view(base)
        assert sorted(seen[c]["matched"] for c in seen["collections"]) == [5, 40]
        assert seen["search"] == [DATASET]
        assert all(seen[c]["status"] == 200 for c in seen["collections"])
        assert all(seen["page " + n] == 200 for n in seen["ids"])
        one = seen["collections"][0]
        paths = ["/", "/?lang=en", "/datasets", "/datasets?q=地点", f"/datasets/{DATASET}",
                 f"/datasets/{DATASET}.jsonld", "/catalog.ttl", "/feeds/datasets.atom",
                 "/feeds/organizations/kakogawa-city.atom", "/catalog.jsonld",
                 "/organizations", "/organizations/kakogawa-city", "/terms", "/sitemap.xml",
                 "/join", "/login", "/openapi.json", "/hazards?lat=34.71&lon=134.81",
                 "/api/hazards?lat=34.71&lon=134.81", "/api/3/action/package_list",
                 f"/api/3/action/package_show?id={DATASET}",
                 "/api/3/action/package_search?q=地点", "/api/3/action/organization_list",
                 "/ogcapi/", "/ogcapi/collections?f=html", "/ogcapi/openapi?f=json"]
        for cid in seen["collections"]:
            paths += [f"/ogcapi/collections/{cid}", f"/ogcapi/collections/{cid}/queryables",
                      f"/ogcapi/collections/{cid}/items/3",
                      f"/ogcapi/collections/{cid}/items?bbox=134.7,34.6,135.5,35.2&limit=3",
                      f"/ogcapi/collections/{cid}/items?filter=%E5%9C%B0%E7%82%B9%20LIKE%20%27%E5%85%B1%25%27",
                      f"/ogcapi/collections/{cid}/items?f=html&limit=2",
                      f"/ogcapi/collections/{cid}/tiles/WebMercatorQuad/12/3225/1622"]
            paths += [f"/datasets/{DATASET}/collections/{cid}.{ext}"
                      for ext in ("csv", "geojson", "gpkg")]
        answers = {}
        staff = sign_in(base, "ops@pref.hyogo.example")
        for who, path in ([(requests, p) for p in paths]
                          + [(staff, p) for p in ("/", f"/datasets/{DATASET}", "/admin",
                                                  "/admin/usage", "/admin/applications",
                                                  "/harvest", "/datasets/new",
                                                  "/organizations/kakogawa-city/members",
                                                  "/organizations/kakogawa-city/usage",
                                                  "/organizations/kakogawa-city/usage.csv",
                                                  "/organizations/kakogawa-city/audit",
                                                  "/harvest/1", "/join/membership",
                                                  "/join/organization", "/join/source",
                                                  "/join/api-key")]
                          + [("bearer", f"/ogcapi/collections/{one}/items?limit=2"),
                             ("bearer", f"/ogcapi/collections/{one}/items/3"),
                             ("bearer", "/api/3/action/package_search?q=地点")]):
            if who == "bearer":
                got = requests.get(base + path, headers=bearer, timeout=30)
            else:
                got = who.get(base + path, timeout=30)
            assert got.status_code in ((200, 400, 404) if who is requests else (200,)), \
                (who, path, got.status_code)
            # Well inside one pool timeout: it never waited for a connection its own first
            # one was keeping from it (a path that catches the pool's error answers 200 late).
            assert got.elapsed.total_seconds() < 1.5, (path, got.elapsed)
            answers.setdefault(path, got)
        # Publishing through the form, as a member: the upload, its preview, the switch, an
        # edit and the withdrawal, each well inside one pool timeout too.
        editor = sign_in(base, "staff@kakogawa.example")
        csv = "名称,緯度,経度\n" + "".join(f"集会所{i},34.7{i},134.8{i}\n" for i in range(5))

        def post(path, data, **kw):
            got = editor.post(base + path, data={"csrf_token": csrf(editor, base + path),
                                                 **data}, allow_redirects=False, timeout=30, **kw)
            assert got.status_code in (302, 303), (path, got.status_code, got.text[-2000:])
            assert got.elapsed.total_seconds() < 1.5, (path, got.elapsed)
            return got.headers["Location"]

        form = {"organization": "kakogawa-city", "title": "集会所の一覧", "license": "cc-by-4.0",
                "access_level": "organization", "theme": ""}
        preview = post("/datasets/new", form,
                       files={"file": ("shukaijo.csv", csv.encode("utf-8"), "text/csv")})
        new_id = preview.rstrip("/").split("/")[-2]
        assert editor.get(base + preview, timeout=30).status_code == 200
        got = editor.post(base + f"/datasets/{new_id}/publish",
                          data={"csrf_token": csrf(editor, base + preview)},
                          allow_redirects=False, timeout=30)
        assert got.status_code == 303 and got.elapsed.total_seconds() < 1.5, got
        post(f"/datasets/{new_id}/edit", {**form, "title": "集会所の一覧（更新）"})
        mine = editor.get(base + f"/datasets/{new_id}", timeout=30)
        assert mine.status_code == 200 and "集会所の一覧（更新）" in mine.text
        assert mine.elapsed.total_seconds() < 1.5
        got = editor.post(base + f"/datasets/{new_id}/withdraw",
                          data={"csrf_token": csrf(editor, base + f"/datasets/{new_id}")},
                          allow_redirects=False, timeout=30)
        assert got.status_code == 303 and got.elapsed.total_seconds() < 1.5, got
        assert editor.get(base + f"/datasets/{new_id}", timeout=30).status_code == 410
        # The dataset page's attribute table was read (it shows an apology when it cannot be).
        page = answers[f"/datasets/{DATASET}"].text
        assert "共有地点7" in page and "属性データを読み込めなかった" not in page
