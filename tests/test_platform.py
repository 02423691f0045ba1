"""Joining the platform and paying for it, on real servers: terms versions, the application
window's states and CLI, metering counted against what a client received, fees recomputed from
the rule, rate limits (memory and Redis shared by two `renkei serve` processes) and quota mails.
The browser walk-throughs are in tests/test_join_browser.py."""
from __future__ import annotations

import csv
import io
import json
import re
import uuid

import pytest
import requests

from store import applications as apps
from store import terms as terms_store
from store import usage
from tests import pg_mode
from tests.accounts import add_user, token
from tests.platform_world import (OPEN, OPERATOR, SHARED, build, cli, csrf, link_in,
                                  mail_to, sign_in)
from tests.servers import live_server, renkei_serve

TERMS_V2 = """
version: "2026-10"
effective: 2026-10-01
title: {ja: テスト要綱 第2版, en: Test terms v2}
text: {ja: "## 第1条\\n改定版です。", en: "## Article 1\\nRevised."}
fees:
  fixed_per_member: 10000
  fixed_kinds: [municipality]
  population: {pool: 500000, exponent: 0.585}
  usage: {per_1000_requests: 1000, per_gib_transferred: 2048, per_gib_stored: 1024,
          per_dataset: 100}
limits: {rate: 1000/hour, monthly_requests: 5}
"""
TERMS_FUTURE = TERMS_V2.replace('"2026-10"', '"2099-01"').replace("2026-10-01", "2099-01-01")
NO_ACCEPT = {"Accept-Encoding": "identity"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build(tmp_path_factory.mktemp("platform"))


@pytest.fixture(scope="module")
def site(world):
    from catalog.app import create_app
    app = create_app(world)
    with live_server(app) as url:
        yield url, app


# -- 要綱 --------------------------------------------------------------------------------------

def publish_terms(data_dir, text: str, name: str = "2026-10.yaml"):
    """What the operator does: `renkei terms add FILE` (into the database, both modes)."""
    folder = data_dir.parent / f"{data_dir.name}-terms"   # the operator's copy, not a data dir
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    done = cli(data_dir, "terms", "add", str(folder / name))
    assert done.returncode == 0, done.stderr
    return done


def test_terms_versions_added_by_the_operator(tmp_path):
    from catalog.app import create_app
    from store.db import Store
    store = Store(tmp_path)
    assert terms_store.current(store).version == "2026-04"    # shipped default
    assert "2026-10 published, effective 2026-10-01" in publish_terms(tmp_path, TERMS_V2).stdout
    publish_terms(tmp_path, TERMS_FUTURE, "2099-01.yaml")
    current = terms_store.current(store)
    assert current.version == "2026-10" and current.monthly_requests == 5
    assert current.fees.per_1000_requests == 1000
    assert [t.version for t in terms_store.load_all(store)] == ["2026-10", "2099-01"]
    listed = cli(tmp_path, "terms", "list").stdout.splitlines()
    assert listed[0].startswith("* 2026-10 ") and listed[1].startswith("  2099-01 ")
    client = create_app(tmp_path).test_client()
    page = client.get("/terms").get_data(as_text=True)
    assert "テスト要綱 第2版" in page and "改定版です。" in page and "/terms/2099-01" in page
    assert "Revised." in client.get("/terms?lang=en").get_data(as_text=True)
    assert client.get("/terms/2099-01").status_code == 200
    assert client.get("/terms/nope").status_code == 404

    # The checks of a terms file, said the same way; nothing is published by a refused file.
    for text, name, said in (
            ("version: x\neffective: soon\n", "bad.yaml", "bad.yaml: effective must be a date"),
            ("- a list", "list.yaml", "list.yaml: expected a mapping"),
            (TERMS_V2.replace("1000/hour", "often"), "rate.yaml", "rate.yaml: limits.rate"),
            (TERMS_V2.replace("テスト要綱 第2版", "改ざん"), "again.yaml",
             "again.yaml: version 2026-10 is already published (from 2026-10.yaml)")):
        (tmp_path.parent / name).write_text(text, encoding="utf-8")
        refused = cli(tmp_path, "terms", "add", str(tmp_path.parent / name))
        assert refused.returncode == 2 and f"renkei: {said}" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and str(tmp_path) not in refused.stderr
    assert [t.version for t in terms_store.load_all(store)] == ["2026-10", "2099-01"]
    assert "改ざん" not in client.get("/terms").get_data(as_text=True)


@pytest.mark.embedded_only(reason="the data dir's terms/ folder is the embedded mode's")
def test_terms_versions_from_the_data_dir(tmp_path):
    from catalog.app import create_app
    from store.db import Store
    store = Store(tmp_path)
    folder = tmp_path / "terms"
    folder.mkdir()
    (folder / "2026-10.yaml").write_text(TERMS_V2, encoding="utf-8")
    publish_terms(tmp_path, TERMS_FUTURE, "2099-01.yaml")   # files and added versions together
    current = terms_store.current(store)
    assert current.version == "2026-10" and current.monthly_requests == 5
    client = create_app(tmp_path).test_client()
    assert "テスト要綱 第2版" in client.get("/terms").get_data(as_text=True)
    assert client.get("/terms/2099-01").status_code == 200
    (tmp_path.parent / "dup.yaml").write_text(TERMS_V2, encoding="utf-8")
    refused = cli(tmp_path, "terms", "add", str(tmp_path.parent / "dup.yaml"))
    assert refused.returncode == 2 and \
        "version 2026-10 is already published (from 2026-10.yaml)" in refused.stderr
    (folder / "bad.yaml").write_text("version: x\neffective: soon\n", encoding="utf-8")
    with pytest.raises(terms_store.TermsError, match="bad.yaml: effective"):
        terms_store.load_all(store)


@pytest.mark.pg_only(reason="PostgreSQL mode reads the terms from the database alone")
def test_a_terms_folder_on_one_server_changes_nothing(tmp_path):
    from store.db import Store
    (tmp_path / "terms").mkdir()
    (tmp_path / "terms" / "2026-10.yaml").write_text(TERMS_V2, encoding="utf-8")
    assert terms_store.current(Store(tmp_path)).version == "2026-04"


def test_local_government_code_check_digit():
    for code in ("282103", "281000", "282014", "280003", "011002"):   # 加古川 神戸 姫路 兵庫県 札幌
        assert apps.check_lg_code(code) == code
    # 289990 has a right check digit but names no local government (28999 is not a code).
    for bad in ("282104", "28210", "abcdef", "2821033", "289990"):
        with pytest.raises(apps.ApplicationError):
            apps.check_lg_code(bad)


# -- 申請窓口 -----------------------------------------------------------------------------------

def _apply_org(base: str, **over) -> requests.Response:
    s = requests.Session()
    form = {"name_ja": "多可町", "name_en": "Taka Town", "slug": "taka-town",
            "kind": "municipality", "code": "283657", "population": "19000",
            "name": "多可 太郎", "email": "joho@town.taka.example", "accept_terms": "y"}
    form.update(over)
    form["csrf_token"] = csrf(s, base + "/join/organization")
    return s.post(base + "/join/organization", data=form, timeout=30)


def test_refusal_needs_a_reason_and_states_are_final(site, world):
    base, _app = site
    r = _apply_org(base, slug="refuse-me", code="", kind="partner", name_ja="テスト協会",
                   email="kyokai@example.org")
    assert r.status_code == 200, r.text
    status_path = re.search(r'id="status-link" href="([^"]+)"', r.text).group(1)
    app_id = re.search(r"受付番号は (\d+) です", r.text).group(1)
    assert cli(world, "applications", "refuse", app_id, "--reason", " ").returncode == 2
    done = cli(world, "applications", "refuse", app_id, "--reason", "会員資格がありません")
    assert done.returncode == 0, done.stderr
    again = cli(world, "applications", "approve", app_id)
    assert again.returncode == 2 and "refused" in again.stderr
    page = requests.get(base + status_path, timeout=30).text
    assert 'data-status="refused"' in page and "会員資格がありません" in page
    assert "会員資格がありません" in mail_to(world, "kyokai@example.org")[-1].get_body(
        ("plain",)).get_content()
    listing = cli(world, "applications", "list", "--status", "refused").stdout
    assert f"{app_id:>5}" in listing and "会員資格がありません" in listing


def test_wrong_code_and_missing_consent_are_refused_by_the_form(site):
    base, _app = site
    r = _apply_org(base, slug="bad-code", code="283658")
    assert r.status_code == 400 and "検査数字" in r.text
    r = _apply_org(base, slug="no-consent", accept_terms="")
    assert r.status_code == 400


def test_cancel_at_the_private_link(site):
    base, _app = site
    r = _apply_org(base, slug="cancel-town", code="283011", name_ja="猪名川町",
                   email="c@town.inagawa.example")
    status_path = re.search(r'id="status-link" href="([^"]+)"', r.text).group(1)
    s = requests.Session()
    token_ = csrf(s, base + status_path)
    page = s.post(base + status_path, data={"csrf_token": token_, "action": "cancel"},
                  timeout=30).text
    assert 'data-status="canceled"' in page
    assert requests.get(base + "/join/status/" + "x" * 43, timeout=30).status_code == 404


def test_org_admin_decides_member_requests_only(site, world):
    base, _app = site
    from store.db import Store
    store = Store(world)
    add_user(store, "admin@city.kakogawa.example", org="kakogawa-city", role="admin")
    s = requests.Session()
    r = s.post(base + "/join/membership", data={
        "csrf_token": csrf(s, base + "/join/membership"), "organization": "kakogawa-city",
        "name": "加古川 花子", "email": "hanako@city.kakogawa.example",
        "comment": "防災課の担当です", "accept_terms": "y"}, timeout=30)
    assert r.status_code == 200, r.text
    app_id = int(re.search(r"受付番号は (\d+) です", r.text).group(1))
    other = _apply_org(base, slug="pending-org", code="283657", email="x@example.org")
    other_id = int(re.search(r"受付番号は (\d+) です", other.text).group(1))
    admin = sign_in(base, "admin@city.kakogawa.example")
    assert admin.get(base + "/organizations/kakogawa-city/usage", timeout=30).status_code == 200
    assert admin.get(base + "/organizations/yabu-city/usage", timeout=30).status_code == 404
    assert admin.get(base + "/admin/usage", timeout=30).status_code == 404
    page = admin.get(base + "/admin/applications", timeout=30).text
    assert f'id="application-{app_id}"' in page and f'id="application-{other_id}"' not in page
    token_ = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    denied = admin.post(f"{base}/admin/applications/{other_id}/accept",
                        data={"csrf_token": token_}, allow_redirects=False, timeout=30)
    assert denied.status_code == 404
    ok = admin.post(f"{base}/admin/applications/{app_id}/accept", data={"csrf_token": token_},
                    allow_redirects=False, timeout=30)
    assert ok.status_code == 302
    invitation = [m for m in mail_to(world, "hanako@city.kakogawa.example")
                  if "招待" in m["Subject"]]
    assert invitation, "the accepted member without an account is invited to set a password"
    path = link_in(invitation[0], "invitation")
    s = requests.Session()
    r = s.post(base + path, data={"csrf_token": csrf(s, base + path),
                                  "password": "hanako-no-password"}, allow_redirects=False,
               timeout=30)
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    sign_in(base, "hanako@city.kakogawa.example", "hanako-no-password")
    assert requests.get(base + path, timeout=30).text.count("すでに使われた") == 1


def test_api_key_request_approved_on_the_cli_reads_members_data(site, world):
    base, _app = site
    s = requests.Session()
    r = s.post(base + "/join/api-key", data={
        "csrf_token": csrf(s, base + "/join/api-key"), "company": "株式会社ハザードマップ",
        "name": "地図 次郎", "email": "jiro@hazard.example", "purpose": "避難所アプリの開発",
        "accept_terms": "y"}, timeout=30)
    app_id = re.search(r"受付番号は (\d+) です", r.text).group(1)
    status_path = re.search(r'id="status-link" href="([^"]+)"', r.text).group(1)
    received = mail_to(world, "jiro@hazard.example")
    assert received and link_in(received[0], "status") == status_path
    assert 'data-status="pending"' in s.get(base + status_path, timeout=30).text
    done = cli(world, "applications", "approve", app_id)
    assert done.returncode == 0, done.stderr
    page = s.get(base + status_path, timeout=30).text
    assert 'data-status="accepted"' in page and "APIキーを受け取る" in page
    page = s.post(base + status_path, data={"csrf_token": csrf(s, base + status_path),
                                            "action": "issue"}, timeout=30).text
    key = re.search(r'id="api-key" readonly value="([^"]+)"', page).group(1)
    assert "APIキーを受け取る" not in s.get(base + status_path, timeout=30).text  # once
    url = f"{base}/api/3/action/package_show?id={SHARED}"
    assert requests.get(url, timeout=30).status_code == 404
    shown = requests.get(url, headers={"Authorization": key}, timeout=30)
    assert shown.status_code == 200 and shown.json()["result"]["id"] == SHARED
    from store.db import Store
    from store.terms import TokenTerms
    with Store(world).session() as sess:
        app = sess.get(apps.Application, int(app_id))
        assert sess.get(TokenTerms, app.token_id).terms_version == app.terms_version == "2026-04"


# -- metering and fees --------------------------------------------------------------------------

def _collection(world, dataset_id):
    from store.db import Dataset, Store
    with Store(world).session() as s:
        return s.get(Dataset, dataset_id).collections[0]


def test_usage_report_counts_what_was_sent_and_computes_the_fee(tmp_path_factory):
    from catalog.app import create_app
    from store.applications import Participation
    from store.db import Organization, Store
    world = build(tmp_path_factory.mktemp("metered"))
    publish_terms(world, TERMS_V2)
    store = Store(world)
    with store.session() as s, s.begin():   # populations and kinds, as an accepted join sets
        for org, pop in (("kakogawa-city", 258000), ("yabu-city", 22000)):
            s.get(Organization, org).kind = "municipality"
            s.add(Participation(organization_id=org, population=pop))
        s.add(Organization(id="map-co", name_ja="地図株式会社", kind="company"))
    add_user(store, "dev@map.example", org="map-co", role="member")
    key = token(store, "dev@map.example")
    shared, open_ = _collection(world, SHARED), _collection(world, OPEN)
    app = create_app(world)
    expect: dict[tuple, list[int]] = {}

    def count(owner, dataset, consumer, r, features):
        t = expect.setdefault((owner, dataset, consumer), [0, 0, 0])
        t[0] += 1
        t[1] += len(r.content)
        t[2] += features
    with live_server(app) as base:
        auth = {**NO_ACCEPT, "Authorization": f"Bearer {key}"}
        for limit in (3, 5, 8):
            r = requests.get(f"{base}/ogcapi/collections/{open_.id}/items?f=json&limit={limit}",
                             headers=NO_ACCEPT, timeout=30)
            count("kakogawa-city", OPEN, "anonymous", r, r.json()["numberReturned"])
        for _ in range(2):
            r = requests.get(f"{base}/api/3/action/package_show?id={OPEN}", headers=NO_ACCEPT,
                             timeout=30)
            count("kakogawa-city", OPEN, "anonymous", r, 0)
        r = requests.get(f"{base}/datasets/{OPEN}/collections/{open_.id}.geojson",
                         headers=NO_ACCEPT, timeout=30)
        assert r.status_code == 200
        count("kakogawa-city", OPEN, "anonymous", r, open_.feature_count)
        for limit in (2, 7):
            r = requests.get(f"{base}/ogcapi/collections/{shared.id}/items?f=json&limit={limit}",
                             headers=auth, timeout=30)
            count("yabu-city", SHARED, "map-co", r, r.json()["numberReturned"])
        r = requests.get(f"{base}/api/3/action/package_show?id={SHARED}", headers=auth,
                         timeout=30)
        count("yabu-city", SHARED, "map-co", r, 0)
        r = requests.get(f"{base}/ogcapi/collections/{shared.id}/items?f=json", headers=NO_ACCEPT,
                         timeout=30)   # anonymous may not see it: a 404, still asked of Yabu's data
        assert r.status_code == 404
        count("yabu-city", SHARED, "anonymous", r, 0)
        r = requests.get(f"{base}/catalog.jsonld", headers=NO_ACCEPT, timeout=30)
        count("", "", "anonymous", r, 0)              # the whole catalogue: no one dataset
        requests.get(f"{base}/datasets", timeout=30)   # a page: not metered
        app.extensions["renkei_meter"].flush()   # whatever the writer thread has not written yet
        operator = sign_in(base, OPERATOR)
        month = usage.current_month()   # the month in Japan, as the bill counts it
        page = operator.get(f"{base}/organizations/kakogawa-city/usage?month={month}",
                            timeout=30).text
        page_csv = operator.get(f"{base}/organizations/kakogawa-city/usage.csv?month={month}",
                                timeout=30).text
        assert requests.get(f"{base}/organizations/kakogawa-city/usage",
                            allow_redirects=False, timeout=30).status_code == 302
    proc = cli(world, "usage", "report", "--month", month, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = {r["organization"]: r for r in csv.DictReader(io.StringIO(proc.stdout))}
    served = {"kakogawa-city": [0, 0, 0], "yabu-city": [0, 0, 0]}
    for (owner, _ds, _c), t in expect.items():
        if owner:
            served[owner] = [a + b for a, b in zip(served[owner], t)]
    for org, (n, nbytes, features) in served.items():
        row = rows[org]
        assert (int(row["requests_served"]), int(row["bytes_served"]),
                int(row["features_served"])) == (n, nbytes, features), org
    made = expect[("yabu-city", SHARED, "map-co")]
    assert (int(rows["map-co"]["requests_made"]), int(rows["map-co"]["bytes_made"])) == \
        (made[0], made[1])
    # The fee, recomputed from the rule of the terms in force and the row's own inputs.
    rule = terms_store.parse(TERMS_V2, "v2").fees
    weights = {o: int(rows[o]["population"]) ** 0.585 for o in ("kakogawa-city", "yabu-city")}
    for org, row in rows.items():
        fixed = 10000 if row["kind"] == "municipality" else 0
        pop = 500000 * weights[org] / sum(weights.values()) if org in weights else 0
        use = (1000 * int(row["requests_made"]) / 1000 + 2048 * int(row["bytes_made"]) / 2 ** 30
               + 1024 * int(row["storage_bytes"]) / 2 ** 30 + 100 * int(row["datasets"]))
        assert int(row["fee"]) == round(fixed) + round(pop) + round(use), org
        assert row["terms_version"] == "2026-10"
    assert rule.population_exponent == 0.585
    ratio = int(rows["kakogawa-city"]["population_share"]) / int(rows["yabu-city"][
        "population_share"])
    assert ratio == pytest.approx((258000 / 22000) ** 0.585, rel=1e-3)
    # The organization's page and its CSV show the same numbers as the CLI.
    kako = rows["kakogawa-city"]
    for field in ("requests_served", "bytes_served", "features_served", "population_share",
                  "fee"):
        assert f'data-field="{field}">{kako[field]}<' in page, field
    assert list(csv.DictReader(io.StringIO(page_csv)))[0] == kako
    per_dataset = cli(world, "usage", "report", "--month", month, "--by", "dataset",
                          "--format", "json")
    got = {(r["owner"], r["dataset"], r["consumer"]): [r["requests"], r["bytes"], r["features"]]
           for r in json.loads(per_dataset.stdout)["rows"]}
    assert got == {k: v for k, v in expect.items()}


# -- quotas -------------------------------------------------------------------------------------

def test_a_token_over_its_limit_gets_429_with_the_headers(world, monkeypatch):
    from catalog.app import create_app
    from store.db import Store
    monkeypatch.setenv("RENKEI_RATE_LIMIT", "3/hour")
    add_user(Store(world), "limited@example.org", org="yabu-city", role="member")
    key = token(Store(world), "limited@example.org")
    with live_server(create_app(world)) as base:
        url = f"{base}/api/3/action/package_show?id={OPEN}"
        seen = [requests.get(url, headers={"Authorization": key}, timeout=30) for _ in range(4)]
        assert [r.status_code for r in seen] == [200, 200, 200, 429]
        assert seen[0].headers["X-RateLimit-Limit"] == "3"
        assert [r.headers["X-RateLimit-Remaining"] for r in seen[:3]] == ["2", "1", "0"]
        over = seen[3]
        assert int(over.headers["Retry-After"]) > 0 and "X-RateLimit-Reset" in over.headers
        # Another caller (anonymous, by address) has its own count; pages are not limited.
        assert requests.get(url, timeout=30).status_code == 200
        assert all(requests.get(base + "/terms", timeout=30).status_code == 200
                   for _ in range(4))


def test_an_anonymous_api_answer_opens_no_session_and_a_signed_in_one_keeps_it(site, world):
    """API clients send no cookie: their answers set none and still say what they vary on,
    with every hook's headers (issue 17 skips the session's save and Flask-Login's
    remember-me step for them); a signed-in caller's session still works and is refreshed."""
    base, _ = site
    url = f"{base}/ogcapi/collections/{_collection(world, OPEN).id}/items?limit=1"
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    assert r.headers["Vary"] == "Authorization, Cookie, X-CKAN-API-Key"
    for name in ("X-Content-Type-Options", "Referrer-Policy", "Content-Security-Policy",
                 "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                 "Retry-After", "Access-Control-Allow-Origin"):
        assert name in r.headers, name
    # A Cookie header that holds no session: anonymous, nothing set.
    r = requests.get(url, headers={"Cookie": "lang=ja"}, timeout=30)
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    member = sign_in(base, OPERATOR)
    r = member.get(url, timeout=30)
    assert r.status_code == 200 and "private" in r.headers.get("Cache-Control", "")
    assert "Cookie" in r.headers["Vary"]
    assert member.get(base + "/admin", allow_redirects=False, timeout=30).status_code == 200


def test_map_tiles_have_a_limit_of_their_own(world, monkeypatch):
    """A map view asks for dozens of tiles: tiles count against RENKEI_TILE_RATE_LIMIT, never
    against the API's limit, so panning a map does not cut a caller off the API (or back)."""
    from catalog.app import create_app
    monkeypatch.setenv("RENKEI_RATE_LIMIT", "2/hour")
    monkeypatch.setenv("RENKEI_TILE_RATE_LIMIT", "5/hour")
    with live_server(create_app(world)) as base:
        coll = requests.get(f"{base}/ogcapi/collections?f=json", timeout=30).json()
        cid = coll["collections"][0]["id"]
        tile = f"{base}/ogcapi/collections/{cid}/tiles/WebMercatorQuad/0/0/0?f=mvt"
        tiles = [requests.get(tile, timeout=30) for _ in range(6)]
        assert [r.status_code for r in tiles[:5]] in ([200] * 5, [204] * 5), tiles
        assert tiles[0].headers["X-RateLimit-Limit"] == "5" and tiles[5].status_code == 429
        # The API's own count was touched once (the collections list) and is not spent.
        api = requests.get(f"{base}/ogcapi/collections?f=json", timeout=30)
        assert api.status_code == 200 and api.headers["X-RateLimit-Limit"] == "2"


def _redis_or_skip():
    """A client of the machine's Redis on 127.0.0.1:6379, or the test is skipped."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return client


def test_the_api_limit_counts_each_endpoint_in_flask_limiters_keys(world, monkeypatch):
    """The open APIs' limit is counted by catalog.quotas.ApiLimits under the keys Flask-Limiter
    used for its default limits (per caller and endpoint), so servers of the previous release
    sharing the Redis count the same requests; a path no route answers and a page are not
    counted."""
    client = _redis_or_skip()
    from catalog.app import create_app
    prefix = f"renkei-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("RENKEI_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("RENKEI_RATE_LIMIT_PREFIX", prefix)
    monkeypatch.setenv("RENKEI_RATE_LIMIT", "5/hour")
    cid = _collection(world, OPEN).id
    try:
        with live_server(create_app(world)) as base:
            items = [requests.get(f"{base}/ogcapi/collections/{cid}/items/{i}", timeout=30)
                     for i in (1, 2, 1)]
            assert [r.status_code for r in items] == [200, 200, 200]
            assert [r.headers["X-RateLimit-Remaining"] for r in items] == ["4", "3", "2"]
            page = requests.get(f"{base}/ogcapi/collections/{cid}/items?limit=1", timeout=30)
            assert page.headers["X-RateLimit-Remaining"] == "4"    # an endpoint of its own
            assert requests.get(f"{base}/ogcapi/no/such/path", timeout=30).status_code == 404
            assert requests.get(f"{base}/terms", timeout=30).status_code == 200
        counts = {k.decode().split(f"LIMITER/{prefix}/", 1)[1]: int(client.get(k))
                  for k in client.scan_iter(f"*{prefix}*")}
        assert counts == {"addr:127.0.0.1/ogcapi.item/5/1/hour": 3,
                          "addr:127.0.0.1/ogcapi.items/5/1/hour": 1}, counts
    finally:
        for k in client.scan_iter(f"*{prefix}*"):
            client.delete(k)


def test_counting_in_memory_starts_no_thread_per_request(world, monkeypatch):
    """Without Redis the counters are this process's (catalog.quotas.ProcessMemoryStorage):
    limits' own memory storage started a timer thread on any count made 10 ms after the last,
    one thread per request on an ordinary server (issue 17). The count itself is unchanged."""
    import threading
    import time
    from catalog.app import create_app
    monkeypatch.delenv("RENKEI_REDIS_URL", raising=False)
    monkeypatch.setenv("RENKEI_RATE_LIMIT", "3/hour")
    cid = _collection(world, OPEN).id
    with live_server(create_app(world)) as base:
        seen = []
        for _ in range(4):
            time.sleep(0.03)   # past limits' 10 ms timer: its storage would start a new one
            r = requests.get(f"{base}/ogcapi/collections/{cid}/items/1", timeout=30)
            timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
            seen.append((r.status_code, r.headers.get("X-RateLimit-Remaining"), len(timers)))
        assert seen == [(200, "2", 0), (200, "1", 0), (200, "0", 0), (429, "0", 0)], seen


def test_two_serve_processes_share_the_count_in_redis(world, monkeypatch):
    client = _redis_or_skip()
    prefix = f"renkei-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("RENKEI_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("RENKEI_RATE_LIMIT_PREFIX", prefix)
    monkeypatch.setenv("RENKEI_RATE_LIMIT", "12/hour")
    try:
        with renkei_serve(world, workers=1) as (a, _), renkei_serve(world, workers=1) as (b, _):
            # The readiness probes (and their retries under load) spent some of the 12 already:
            # read what is left, then alternate servers; one shared counter goes down by one
            # per request whichever server answers, and both refuse once it is spent.
            seen = []
            for url in (a, b) * 7:
                resp = requests.get(f"{url}/ogcapi/collections?f=json", timeout=30)
                seen.append((resp.status_code, int(resp.headers["X-RateLimit-Remaining"])))
            left = [r for code, r in seen if code == 200]
            assert len(left) >= 2 and left == list(range(left[0], left[0] - len(left), -1)), seen
            assert left[-1] == 0 and {code for code, _ in seen[len(left):]} == {429}, seen
            assert {code for code, _ in seen[len(left):len(left) + 2]} == {429}  # on a and on b
    finally:
        for k in client.scan_iter(f"*{prefix}*"):   # limits puts "LIMITS:LIMITER/" first
            client.delete(k)


def test_quota_warning_mails_at_80_and_100_percent(tmp_path_factory):
    from catalog.app import create_app
    from store.db import Store
    world = build(tmp_path_factory.mktemp("quota"))
    publish_terms(world, TERMS_V2)   # 5 a month
    store = Store(world)
    add_user(store, "heavy@example.org", org="yabu-city", role="member")
    key = token(store, "heavy@example.org")
    app = create_app(world)
    meter = app.extensions["renkei_meter"]
    with live_server(app) as base:
        url = f"{base}/api/3/action/package_show?id={OPEN}"
        for _ in range(3):
            requests.get(url, headers={"Authorization": key}, timeout=30)
        meter.flush()
        assert mail_to(world, "heavy@example.org") == []
        requests.get(url, headers={"Authorization": key}, timeout=30)
        meter.flush()
        first = mail_to(world, "heavy@example.org")
        assert len(first) == 1 and "80%" in first[0]["Subject"]
        for _ in range(2):
            requests.get(url, headers={"Authorization": key}, timeout=30)
        meter.flush()
        mails = mail_to(world, "heavy@example.org")
        assert len(mails) == 2 and "上限に達しました" in mails[1]["Subject"]
        requests.get(url, headers={"Authorization": key}, timeout=30)
        meter.flush()
        assert len(mail_to(world, "heavy@example.org")) == 2   # each level once


def test_a_proposed_source_runs_only_once_validated(site, world, tmp_path):
    base, _app = site
    from store.db import Store
    add_user(Store(world), "admin2@city.kakogawa.example", org="kakogawa-city", role="admin")
    assert requests.get(base + "/join/source", allow_redirects=False,
                        timeout=30).status_code == 302   # sign in first
    admin = sign_in(base, "admin2@city.kakogawa.example")
    r = admin.post(base + "/join/source", data={
        "csrf_token": csrf(admin, base + "/join/source"), "organization": "kakogawa-city",
        "name": "kako-ckan", "type": "ckan", "url": "http://127.0.0.1:9/",
        "accept_terms": "y"}, timeout=30)
    assert r.status_code == 200, r.text
    app_id = re.search(r"受付番号は (\d+) です", r.text).group(1)
    config = tmp_path / "sources.yaml"
    config.write_text("sources: []\n", encoding="utf-8")
    pending = cli(world, "harvest", "--config", str(config), "--source", "kako-ckan")
    assert pending.returncode == 2 and "no such source" in pending.stderr
    assert cli(world, "applications", "approve", app_id).returncode == 0
    # Embedded: a file beside the catalogue; PostgreSQL: the accepted application, wherever
    # it was accepted (a web server has no data dir to write it to).
    assert (world / "sources.d" / "kako-ckan.yaml").is_file() != pg_mode.active()
    ran = cli(world, "harvest", "--config", str(config), "--source", "kako-ckan")
    assert ran.returncode == 1          # it ran: the loopback address is refused by the guard
    assert "kako-ckan" in cli(world, "jobs", "--source", "kako-ckan").stdout


def test_a_retired_source_is_no_longer_harvested(world, tmp_path):
    """The operator stops harvesting an accepted source, in either mode, with one command: the
    next harvest does not fetch it; what it published stays; the organization is told."""
    from store.db import Dataset, Store
    from tests.servers import TEST_DATA, FakeCKAN, package
    name = "gsi_evacuation_282103.json"
    site = FakeCKAN([package("evac", "加古川市 指定避難所（提案）", [(name, "GeoJSON")])],
                    {name: TEST_DATA / "geojson" / name})
    store = Store(world)
    config = tmp_path / "sources.yaml"
    config.write_text("sources: []\n", encoding="utf-8")

    def jobs_of(source):
        return cli(world, "jobs", "--source", source).stdout.splitlines()[1:]

    with site.running() as url:
        with store.session() as s, s.begin():
            app_id = str(apps.propose_source(
                s, organization_id="kakogawa-city", email="gis@city.kakogawa.example",
                name="kako-intranet", type_="ckan", url=url + "/",
                terms_version="2026-04").application.id)
        # An intranet source: without the operator's consent the SSRF guard refuses 127.0.0.1.
        assert cli(world, "applications", "approve", app_id,
                   "--allow-private-networks").returncode == 0
        first = cli(world, "harvest", "--config", str(config), "--source", "kako-intranet")
        assert first.returncode == 0, first.stderr
        fetched = len(site.calls)
        assert fetched and site.downloads[name] == 1
        with store.session() as s:
            assert s.get(Dataset, "kako-intranet--evac").status == "active"

        done = cli(world, "applications", "retire", app_id, "--reason", "庁内サーバーの廃止")
        assert done.returncode == 0, done.stderr
        assert "retired" in done.stderr and "stay published until withdrawn" in done.stderr
        assert not (world / "sources.d" / "kako-intranet.yaml").exists()
        # Every validated source (another test's proposal may fail: exit 1), not this one.
        again = cli(world, "harvest", "--config", str(config))
        assert again.returncode in (0, 1), again.stderr
        assert len(site.calls) == fetched                          # not asked again
        assert len(jobs_of("kako-intranet")) == 1
        assert site.downloads[name] == 1
        only = cli(world, "harvest", "--config", str(config), "--source", "kako-intranet")
        assert only.returncode == 2 and "no such source" in only.stderr
    with store.session() as s:
        app = s.get(apps.Application, int(app_id))
        assert (app.status, app.handled_by, app.reason) == ("retired", "cli", "庁内サーバーの廃止")
        assert app.handled_at is not None and app.payload["accepted_by"] == "cli"
        # Published data stays until the operator withdraws it (its dataset page).
        assert s.get(Dataset, "kako-intranet--evac").status == "active"
    mail = mail_to(world, "gis@city.kakogawa.example")[-1]
    assert "kako-intranet" in mail["Subject"] and "retired" in mail["Subject"]
    assert "庁内サーバーの廃止" in mail.get_body(("plain",)).get_content()
    listed = cli(world, "applications", "list", "--status", "retired").stdout
    assert f"{app_id:>5} source       retired" in listed
    # Only an accepted source can be retired: one line, exit 2, nothing changed.
    for wrong in (app_id, "999999"):
        refused = cli(world, "applications", "retire", wrong)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
        assert "is not an accepted source" in refused.stderr
    with store.session() as s, s.begin():
        member = apps.apply_membership(s, organization_id="kakogawa-city",
                                       email="someone@example.org", name="x", comment="y",
                                       terms_version="2026-04").application.id
    assert cli(world, "applications", "retire", str(member)).returncode == 2
    # The name is free again for a new proposal.
    with store.session() as s, s.begin():
        apps.propose_source(s, organization_id="kakogawa-city", email="gis@city.kakogawa.example",
                            name="kako-intranet", type_="ckan", url="https://ckan.example/",
                            terms_version="2026-04")


def test_an_invitation_is_not_a_password_reset(site, world):
    base, _app = site
    from store.db import Store
    from tests.accounts import PASSWORD
    store = Store(world)
    add_user(store, "existing@example.org", org="yabu-city", role="member")
    with store.session() as s, s.begin():
        created = apps.invite(s, organization_id="kakogawa-city", email="existing@example.org",
                              role="editor", by=OPERATOR)
    path = f"/join/invitation/{created.link}"
    s = requests.Session()
    wrong = s.post(base + path, data={"csrf_token": csrf(s, base + path),
                                      "password": "someone else's guess"}, timeout=30)
    assert wrong.status_code == 400 and "現在のパスワード" in wrong.text
    sign_in(base, "existing@example.org")                  # the old password still works
    ok = s.post(base + path, data={"csrf_token": csrf(s, base + path), "password": PASSWORD},
                allow_redirects=False, timeout=30)
    assert ok.status_code == 302
    from store import accounts
    with store.session() as sess:
        user = sess.query(accounts.User).filter_by(email="existing@example.org").one()
        assert accounts.roles_of(sess, user.id) == {"yabu-city": "member",
                                                   "kakogawa-city": "editor"}


def test_a_ckan_post_is_metered_against_the_dataset_it_names(tmp_path_factory):
    from catalog.app import create_app
    from store import fees
    from store.db import Store
    world = build(tmp_path_factory.mktemp("post"))
    app = create_app(world)
    with live_server(app) as base:
        r = requests.post(f"{base}/api/3/action/package_show", json={"id": OPEN}, timeout=30)
        assert r.status_code == 200
        app.extensions["renkei_meter"].flush()
    month = usage.current_month()   # the month in Japan, as the bill counts it
    with Store(world).session() as s, s.begin():
        rows = fees.dataset_rows(s, month)
    assert [(x["dataset"], x["requests"], x["bytes"]) for x in rows] == [(OPEN, 1, len(r.content))]


def test_months_and_days_are_japanese(tmp_path):
    """Fees and quotas follow the Japanese calendar: 00:30 on 1 December in Japan is 15:30 UTC on
    30 November, and belongs to December's bill and to 1 December in the chart."""
    from datetime import datetime

    from store.db import Store
    store = Store(tmp_path)
    usage.write_events(store.engine, [
        dict(at=datetime(2026, 11, 30, 14, 30), interface="ogcapi", status=200, bytes=10,
             features=1, owner_org="kasai", dataset_id="d"),     # 23:30 on 30 Nov in Japan
        dict(at=datetime(2026, 11, 30, 15, 30), interface="ogcapi", status=200, bytes=20,
             features=2, owner_org="kasai", dataset_id="d"),     # 00:30 on 1 Dec in Japan
    ])
    with store.session() as s, s.begin():
        usage.rollup(s, "2026-11")
        usage.rollup(s, "2026-12")
        november = usage.monthly_rows(s, "2026-11")
        december = usage.monthly_rows(s, "2026-12")
        assert [(r.requests, r.bytes) for r in november] == [(1, 10)]
        assert [(r.requests, r.bytes) for r in december] == [(1, 20)]
        assert usage.daily(s, "2026-11", "kasai") == [("2026-11-30", 1, 10, 1)]
        assert usage.daily(s, "2026-12", None) == [("2026-12-01", 1, 20, 2)]
