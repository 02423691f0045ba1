"""Two stateless web servers over one PostgreSQL database (issue 14).

Two `renkei serve` processes start with different, empty data dirs and the same
RENKEI_DATABASE_URL, before the database holds anything; harvests run from a third process with
a data dir of its own (its download cache). Without a restart, both serve the same catalogue
(CKAN API listing and search, 1- and 2-character Japanese queries, dataset pages), collections,
items, item by id and downloads, and both stop serving a withdrawn dataset (410 for its page,
404 for its features) while keeping the rest. Nothing of it lands in the web servers' data dirs:
the catalogue, the search index and the features are all in PostgreSQL. So are what the operator
once kept in a data dir: the terms versions, and the outbox of mail the servers send.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests import pg_mode
from tests.servers import REPO, renkei_serve
from tests.test_security_serve import harvest

pytestmark = pytest.mark.pg_only(reason="several servers share one PostgreSQL database")
DATASET = "shared-files--points"
KEPT = "shared-files--kept"


def sources(folder: Path, with_file: bool) -> Path:
    """A files source of two CSVs; without `with_file` the points file is gone upstream."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["地点,緯度,経度,備考"] + [f"共有地点{i},{34.70 + i * 0.001:.6f},"
                                         f"{134.80 + i * 0.001:.6f},メモ{i}" for i in range(40)]
    (folder / "points.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "kept.csv").write_text("施設,緯度,経度\n" + "".join(
        f"避難施設{i},{34.8 + i * 0.01:.4f},{135.0 + i * 0.01:.4f}\n" for i in range(5)),
        encoding="utf-8")
    files = "    files:\n      - id: kept\n        title: 避難施設の一覧\n" \
            "        url: kept.csv\n        license: cc-by-4.0\n"
    if with_file:
        files += ("      - id: points\n        title: 共有地点の一覧\n"
                  "        url: points.csv\n        license: cc-by-4.0\n")
    config = folder / "sources.yaml"
    config.write_text("sources:\n  - name: shared-files\n    type: files\n"
                      "    organization: kakogawa-city\n    max_withdraw: 1.0\n" + files,
                      encoding="utf-8")
    return config


def _search(base: str, **params) -> list[str]:
    found = requests.get(f"{base}/api/3/action/package_search",
                         params={"rows": 100, **params}, timeout=30).json()["result"]
    return sorted(p["name"] for p in found["results"])


def view(base: str) -> dict:
    """What one server answers about the shared catalogue."""
    cols = requests.get(f"{base}/ogcapi/collections?f=json", timeout=30).json()["collections"]
    out = {"collections": sorted(c["id"] for c in cols), "ids": _search(base, sort="name asc"),
           "search": _search(base, q="共有地点"), "地点": _search(base, q="地点"),
           "避": _search(base, q="避")}
    for cid in out["collections"]:
        items = requests.get(f"{base}/ogcapi/collections/{cid}/items",
                             params={"f": "json", "limit": 15, "offset": 2}, timeout=30)
        doc = items.json()
        out[cid] = {"status": items.status_code, "matched": doc.get("numberMatched"),
                    "features": doc["features"]}
        one = requests.get(f"{base}/ogcapi/collections/{cid}/items/3?f=json", timeout=30)
        out[cid]["item"] = {k: v for k, v in one.json().items() if k != "links"}  # own URL
    for name in out["ids"]:
        out["page " + name] = requests.get(f"{base}/datasets/{name}", timeout=30).status_code
    return out


def _csv(base: str, cid: str) -> tuple[int, bytes]:
    got = requests.get(f"{base}/datasets/{DATASET}/collections/{cid}.csv", timeout=30)
    return got.status_code, got.content


def _until_equal(base: str, want: dict, seconds: float = 30) -> dict:
    """Another server's view, once it has caught up (it follows the publish counter)."""
    deadline = time.monotonic() + seconds
    while True:
        seen = view(base)
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def test_two_servers_with_empty_data_dirs_serve_one_database(tmp_path, monkeypatch):
    shared = pg_mode.url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)   # the servers' and the harvest's
    web_a, web_b, harvester = tmp_path / "web-a", tmp_path / "web-b", tmp_path / "harvester"
    for d in (web_a, web_b):   # empty data dirs (the test below has none at all)
        d.mkdir()
    with renkei_serve(web_a, workers=1) as (a, _), renkei_serve(web_b, workers=1) as (b, _):
        empty = view(a)   # an empty database: the first server made the schema
        assert empty["collections"] == empty["ids"] == [] and view(b) == empty

        assert harvest(harvester, sources(tmp_path / "src", with_file=True)).returncode == 0
        seen_a = view(a)
        assert _until_equal(b, seen_a) == seen_a
        assert seen_a["ids"] == sorted([DATASET, KEPT]) and seen_a["search"] == [DATASET]
        assert seen_a["地点"] == [DATASET] and seen_a["避"] == [KEPT]
        assert seen_a["page " + DATASET] == seen_a["page " + KEPT] == 200
        (cid,) = [c for c in seen_a["collections"] if seen_a[c]["matched"] == 40]
        assert seen_a[cid]["status"] == 200
        assert [f["id"] for f in seen_a[cid]["features"]] == list(range(3, 18))
        assert seen_a[cid]["item"]["properties"]["地点"] == "共有地点2"
        for base in (a, b):
            status, body = _csv(base, cid)
            assert status == 200 and body.decode("utf-8-sig").count("共有地点") == 40

        # Gone upstream: withdrawn on both, the other dataset kept.
        assert harvest(harvester, sources(tmp_path / "src", with_file=False)).returncode == 0
        gone_b = view(b)
        assert _until_equal(a, gone_b) == gone_b
        assert gone_b["ids"] == [KEPT] and gone_b["search"] == gone_b["地点"] == []
        assert cid not in gone_b["collections"] and len(gone_b["collections"]) == 1
        for base in (a, b):
            assert requests.get(f"{base}/datasets/{DATASET}", timeout=30).status_code == 410
            assert requests.get(f"{base}/ogcapi/collections/{cid}/items?f=json",
                                timeout=30).status_code == 404
            assert _csv(base, cid)[0] == 404
    for d in (web_a, web_b):   # nothing published lives on a web server's disk
        assert not [p for p in d.rglob("*") if p.suffix in (".gpkg", ".db", ".mbtiles")]
    assert {p.name for p in harvester.iterdir()} <= {"cache"}   # at most its download cache


def test_a_web_server_runs_with_no_data_dir_at_all(tmp_path, monkeypatch):
    """Secrets from the environment (the same on every server), the shipped terms, the
    rest from PostgreSQL: the data dir it is given does not exist before, nor after."""
    from tests.accounts import add_user, token
    from store.db import Store
    shared = pg_mode.url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)
    monkeypatch.delenv("RENKEI_SECRET_KEY", raising=False)
    monkeypatch.delenv("RENKEI_TOKEN_SECRET", raising=False)
    harvester, none = tmp_path / "harvester", tmp_path / "no-data-dir"
    assert harvest(harvester, sources(tmp_path / "src", with_file=True)).returncode == 0

    refused = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(none),
                              "serve", "--port", "1"], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2
    assert "RENKEI_SECRET_KEY and RENKEI_TOKEN_SECRET must be set" in refused.stderr

    monkeypatch.setenv("RENKEI_SECRET_KEY", "session-secret-shared-by-all-servers")
    monkeypatch.setenv("RENKEI_TOKEN_SECRET", "token-secret-shared-by-all-servers")
    store = Store(harvester)   # an operator's machine issues a token with the shared secret
    add_user(store, "operator@pref.hyogo.example", sysadmin=True)
    bearer = {"Authorization": "Bearer " + token(store, "operator@pref.hyogo.example")}
    with renkei_serve(none, workers=1) as (base, _), \
            renkei_serve(tmp_path / "no-data-dir-either", workers=1) as (other, _):
        seen = view(base)
        assert seen["search"] == [DATASET] and len(seen["collections"]) == 2
        (cid,) = [c for c in seen["collections"] if seen[c]["matched"] == 40]
        assert _csv(base, cid)[0] == 200
        assert requests.get(f"{base}/harvest", headers=bearer, timeout=30).status_code == 200
        wrong = {"Authorization": "Bearer renkei_" + "x" * 40}
        assert requests.get(f"{base}/harvest", headers=wrong, timeout=30).status_code == 401
        terms = requests.get(f"{base}/terms", timeout=30)
        assert terms.status_code == 200 and "要綱" in terms.text
        login = requests.get(f"{base}/login", timeout=30)
        assert login.status_code == 200 and "csrf_token" in login.text

        # Keyset paging across servers: a filtered page's next link carries where the page
        # ends, signed with the shared secret; the other server pages on from it.
        items = f"{base}/ogcapi/collections/{cid}/items"
        params = {"f": "json", "limit": 4, "q": "地点1"}   # fids 2, 11..20: not row numbers
        first = requests.get(items, params=params, timeout=30).json()
        assert [f["id"] for f in first["features"]] == [2, 11, 12, 13]
        nxt = next(link["href"] for link in first["links"] if link["rel"] == "next")
        assert "keyset=" in nxt and "offset=4" in nxt
        on_other = requests.get(nxt.replace(base, other), timeout=30).json()
        assert [f["id"] for f in on_other["features"]] == [14, 15, 16, 17]
        token = nxt.split("keyset=")[1].split("&")[0]
        fid, mac = token.split(".")
        for forged in (f"19.{mac}", f"{fid}.{'0' * len(mac)}", "x"):   # ignored: OFFSET
            got = requests.get(nxt.replace(base, other).replace(token, forged), timeout=30)
            assert [f["id"] for f in got.json()["features"]] == [14, 15, 16, 17]
        last = next(link["href"] for link in on_other["links"] if link["rel"] == "next")
        end = requests.get(last.replace(other, base), timeout=30).json()
        assert [f["id"] for f in end["features"]] == [18, 19, 20]
        assert not [link for link in end["links"] if link["rel"] == "next"]
    assert not none.exists()


def test_mail_and_terms_live_in_the_database_for_every_server(tmp_path, monkeypatch):
    """What the web servers and the operator once kept in a data dir: the operator publishes a
    terms version from a machine with no data dir, and both servers show it and have applicants
    accept it; an application made on one server queues its mail in the database (no SMTP on
    the servers), where the operator reads it and delivers it through SMTP later, and its
    private link works on the other server. No data dir is made anywhere."""
    import email
    from email import policy
    from tests.platform_world import csrf, link_in, run_cli
    from tests.smtp_server import smtp_server
    from tests.test_platform import TERMS_V2
    shared = pg_mode.url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)
    monkeypatch.setenv("RENKEI_SECRET_KEY", "session-secret-shared-by-all-servers")
    monkeypatch.setenv("RENKEI_TOKEN_SECRET", "token-secret-shared-by-all-servers")
    monkeypatch.delenv("RENKEI_SMTP_URL", raising=False)
    web_a, web_b, operator = tmp_path / "none-a", tmp_path / "none-b", tmp_path / "none-op"
    (tmp_path / "mine").mkdir()
    terms_file = tmp_path / "mine" / "2026-10.yaml"
    terms_file.write_text(TERMS_V2, encoding="utf-8")
    with renkei_serve(web_a, workers=1) as (a, _), renkei_serve(web_b, workers=1) as (b, _):
        for base in (a, b):   # the shipped default, before the operator publishes
            assert "テスト要綱 第2版" not in requests.get(f"{base}/terms", timeout=30).text
        added = run_cli(operator, "terms", "add", str(terms_file))
        assert added.returncode == 0, added.stderr
        for base in (a, b):   # read from the database on every request: no restart
            page = requests.get(f"{base}/terms", timeout=30)
            assert page.status_code == 200 and "テスト要綱 第2版" in page.text
            assert requests.get(f"{base}/terms/2026-10", timeout=30).status_code == 200
        listed = run_cli(operator, "terms", "list").stdout
        assert "* 2026-10 " in listed

        s = requests.Session()
        form = {"name_ja": "テスト協会", "slug": "test-kyokai", "kind": "partner",
                "name": "多可 太郎", "email": "kyokai@example.org", "accept_terms": "y",
                "csrf_token": csrf(s, a + "/join/organization")}
        applied = s.post(a + "/join/organization", data=form, timeout=30)
        assert applied.status_code == 200 and "受け付けました" in applied.text
        apps = run_cli(operator, "applications", "list").stdout
        assert "kyokai@example.org" in apps and " 2026-10 " in apps   # the terms accepted

        outbox = run_cli(operator, "mail", "outbox", "--status", "queued")
        assert outbox.returncode == 0 and "kyokai@example.org" in outbox.stdout
        message_id = outbox.stdout.splitlines()[1].split()[0]
        raw = run_cli(operator, "mail", "show", message_id, "--raw")
        queued = email.message_from_string(raw.stdout, policy=policy.default)
        status = link_in(queued, "status")
        page = requests.get(b + status, timeout=30)   # the other server knows the link
        assert page.status_code == 200 and "審査中" in page.text and "参加申請（団体）" in page.text

        with smtp_server() as (url, inbox):
            sent = run_cli(operator, "mail", "send", env={"RENKEI_SMTP_URL": url})
            assert sent.returncode == 0 and f"mail {message_id}: sent" in sent.stdout
        (got,) = inbox.to("kyokai@example.org")
        assert link_in(got, "status") == status
        after = run_cli(operator, "mail", "outbox").stdout
        assert f"{message_id:>6} sent" in after and "delivered" in after
    assert not web_a.exists() and not web_b.exists() and not operator.exists()


def test_a_file_uploaded_on_one_server_downloads_from_the_other(tmp_path, monkeypatch):
    """A member publishes a CSV through the CKAN API of one server with no data dir; the other
    serves its features and the original file, as sent (kept in the database)."""
    from ckanapi import RemoteCKAN
    from store.db import Store
    from tests.accounts import add_org, add_user, token
    from tests.servers import TEST_DATA
    shelters = TEST_DATA / "csv" / "yaizu_222127_evacuation_space.csv"
    shared = pg_mode.url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)
    monkeypatch.setenv("RENKEI_SECRET_KEY", "session-secret-shared-by-all-servers")
    monkeypatch.setenv("RENKEI_TOKEN_SECRET", "token-secret-shared-by-all-servers")
    store = Store(tmp_path / "operator")
    add_org(store, "kasai", "加西市", "282201")
    add_user(store, "admin@city.kasai.example", org="kasai", role="admin")
    key = token(store, "admin@city.kasai.example", scope="write")
    web_a, web_b = tmp_path / "none-a", tmp_path / "none-b"
    with renkei_serve(web_a, workers=1) as (a, _), renkei_serve(web_b, workers=1) as (b, _):
        ckan = RemoteCKAN(a, apikey=key)
        ckan.action.package_create(name="kasai-shelters", title="加西市 避難場所", owner_org="kasai")
        with shelters.open("rb") as fh:
            res = ckan.action.resource_create(package_id="kasai-shelters", upload=fh)
        path = res["url"].split("/", 3)[3]   # the URL the app built names its own base
        got = requests.get(f"{b}/{path}", timeout=30)
        assert got.status_code == 200 and got.content == shelters.read_bytes()
        assert int(got.headers["Content-Length"]) == shelters.stat().st_size
        pkg = requests.get(f"{b}/api/3/action/package_show", params={"id": "kasai-shelters"},
                           timeout=30).json()["result"]
        (cid,) = [r["id"].removesuffix("--ogcapi") for r in pkg["resources"]
                  if r["format"] == "OGC API Features"]
        items = requests.get(f"{b}/ogcapi/collections/{cid}/items", params={"f": "json"},
                             timeout=30).json()
        assert items["numberMatched"] == 31
    assert not web_a.exists() and not web_b.exists()
