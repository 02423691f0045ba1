"""Publishing through the CKAN write API with the real ckanapi client, against a real server.

Kasai (加西市, slug kasai) and its members are created with the `renkei` CLI, tokens too; the
members then publish shelter CSVs with `RemoteCKAN(url, apikey=token)` and `ckanapi load
datasets`, and the result must be translated into the `shelter` theme and served by the OGC
API, with the role rules, the size limit and the audit trail checked on the way.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from ckanapi import NotAuthorized, NotFound, RemoteCKAN, ValidationError

from store import accounts
from store.db import Store
from tests import pg_mode
from tests.servers import REPO, TEST_DATA, live_server

SHELTERS = TEST_DATA / "csv" / "yaizu_222127_evacuation_space.csv"
SJIS_SHELTERS = REPO / "catalog" / "examples" / "kakogawa_shelters_sjis.csv"
UA = "renkei-tests/1.0"


def renkei(data_dir, *args, stdin: str | None = None,
           process: bool = False) -> subprocess.CompletedProcess:
    """The `renkei` command: its real entry point in this process (with stdin, stdout and
    stderr of its own), or as a child process with `process=True`."""
    argv = ["--data-dir", str(data_dir), *args]
    if process:
        proc = subprocess.run([sys.executable, "-m", "catalog.cli", *argv], input=stdin,
                              capture_output=True, text=True, cwd=REPO, timeout=120)
    else:
        from catalog.cli import main
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        finally:
            sys.stdin = old_stdin
        proc = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from catalog.app import create_app
    data_dir = tmp_path_factory.mktemp("publish") / "data"
    renkei(data_dir, "org", "add", "kasai", "加西市", "--name-en", "Kasai City",
           "--code", "282201", "--upload-limit-mb", "1", process=True)
    renkei(data_dir, "org", "add", "yabu", "養父市", "--code", "282227")
    tokens = {}
    for email, org, role in (("admin@city.kasai.example", "kasai", "admin"),
                             ("editor@city.kasai.example", "kasai", "editor"),
                             ("member@city.kasai.example", "kasai", "member"),
                             ("editor@city.yabu.example", "yabu", "editor")):
        renkei(data_dir, "user", "add", email, "--org", org, "--role", role,
               stdin="a long enough password\n")
        tokens[email] = renkei(data_dir, "token", "create", email, "--scope", "write",
                               "--name", "tests").stdout.strip()
    tokens["read"] = renkei(data_dir, "token", "create", "admin@city.kasai.example",
                            "--scope", "read", process=True).stdout.strip()
    with live_server(create_app(data_dir)) as url:
        yield url, data_dir, tokens


def here(url: str, absolute: str) -> str:
    """An absolute URL the app built (its configured base) on the test server."""
    parts = urlsplit(absolute)
    return url + parts.path + (f"?{parts.query}" if parts.query else "")


def client(site, who: str) -> RemoteCKAN:
    url, _, tokens = site
    return RemoteCKAN(url, apikey=tokens[who], user_agent=UA)


def test_tokens_are_stored_only_as_keyed_hashes(site):
    _, data_dir, tokens = site
    if pg_mode.active():  # every row of every table of the data dir's schema, as text
        from sqlalchemy import inspect, text
        rows = []
        with Store(data_dir).engine.connect() as conn:
            for name in inspect(conn).get_table_names():
                rows += conn.execute(text(f'SELECT CAST(t AS text) FROM "{name}" t')).scalars()
        assert len(rows) > len(tokens)
        raw = "\n".join(rows).encode()
    else:
        raw = (data_dir / "catalogue.db").read_bytes()
    for token in tokens.values():
        assert token.startswith("renkei_") and token.encode() not in raw
        assert token[7:].encode() not in raw
    assert oct((data_dir / "token.secret").stat().st_mode & 0o777) == "0o600"


def test_a_kasai_admin_publishes_a_shelter_csv_with_ckanapi(site):
    url, data_dir, _ = site
    ckan = client(site, "admin@city.kasai.example")
    pkg = ckan.action.package_create(name="kasai-shelters", title="加西市 避難場所（テスト）",
                                     owner_org="kasai", notes="職員がAPIで公開", license_id="cc-by-4.0",
                                     tags=[{"name": "避難場所"}])
    assert pkg["access_level"] == "public" and pkg["organization"]["name"] == "kasai"
    with SHELTERS.open("rb") as fh:
        res = ckan.action.resource_create(package_id="kasai-shelters", name="避難場所一覧",
                                          upload=fh)
    assert res["url_type"] == "upload" and res["format"] == "CSV"
    pkg = ckan.action.package_show(id="kasai-shelters")
    collection = here(url, next(r["url"] for r in pkg["resources"]
                                if r["format"] == "OGC API Features"))
    items = requests.get(collection + "/items", params={"f": "json", "limit": 1000},
                         timeout=30).json()
    assert items["numberMatched"] == 31  # every row of the file, translated
    props = items["features"][0]["properties"]
    assert "name" in props  # the shelter theme's fields
    ds = requests.get(url + "/api/3/action/package_show", params={"id": "kasai-shelters"},
                      timeout=10).json()["result"]
    assert {"key": "theme", "value": "shelter"} in ds["extras"]
    theme = requests.get(url + "/ogcapi/collections/theme-shelter/items",
                         params={"f": "json", "limit": 1000}, timeout=30).json()
    assert theme["numberMatched"] >= 31
    # The original file downloads as it was sent.
    original = requests.get(here(url, res["url"]), timeout=10)
    assert original.status_code == 200 and original.content == SHELTERS.read_bytes()
    assert original.headers["Content-Disposition"].startswith("attachment; filename=")
    assert "yaizu_222127_evacuation_space.csv" in original.headers["Content-Disposition"]
    # Kept beside the catalogue in the embedded mode, in the database in PostgreSQL mode.
    assert (data_dir / "uploads").is_dir() != pg_mode.active()


def test_a_new_file_replaces_the_published_version(site):
    url, _, _ = site
    ckan = client(site, "admin@city.kasai.example")
    rid = next(r["id"] for r in ckan.action.package_show(id="kasai-shelters")["resources"]
               if r.get("url_type") == "upload")
    with SJIS_SHELTERS.open("rb") as fh:
        ckan.call_action("resource_patch", {"id": rid},
                         files={"upload": ("kakogawa_shelters_sjis.csv", fh)})
    pkg = ckan.action.package_show(id="kasai-shelters")
    collection = here(url, next(r["url"] for r in pkg["resources"]
                                if r["format"] == "OGC API Features"))
    items = requests.get(collection + "/items", params={"f": "json", "limit": 1000},
                         timeout=30).json()
    names = {f["properties"]["name"] for f in items["features"]}
    assert "加古川公民館" in names  # CP932 read right, old rows gone
    assert items["numberMatched"] == len(SJIS_SHELTERS.read_bytes().splitlines()) - 1


def test_a_broken_file_is_refused_and_the_old_version_keeps_serving(site):
    url, _, _ = site
    ckan = client(site, "admin@city.kasai.example")
    pkg = ckan.action.package_show(id="kasai-shelters")
    rid = next(r["id"] for r in pkg["resources"] if r.get("url_type") == "upload")
    collection = here(url, next(r["url"] for r in pkg["resources"]
                                if r["format"] == "OGC API Features"))
    before = requests.get(collection + "/items", params={"f": "json"}, timeout=30).json()
    with pytest.raises(ValidationError) as err:
        ckan.call_action("resource_patch", {"id": rid},
                         files={"upload": ("broken.csv", b"\x82\xff\xfe\x80,,\n\x00\x01")})
    message = json.dumps(err.value.error_dict, ensure_ascii=False)
    assert "broken.csv" in message or "kasai-shelters" in message or "避難場所" in message
    assert str(site[1]) not in message  # no server path
    after = requests.get(collection + "/items", params={"f": "json"}, timeout=30).json()
    assert after["numberMatched"] == before["numberMatched"]


def test_the_upload_limit_is_the_organizations_and_is_stated(site):
    ckan = client(site, "admin@city.kasai.example")
    with pytest.raises(ValidationError) as err:
        ckan.call_action("resource_create", {"package_id": "kasai-shelters"},
                         files={"upload": ("big.csv", b"a,b\n" * 300_000)})
    assert "1 MB" in json.dumps(err.value.error_dict, ensure_ascii=False)


def test_role_rules(site):
    url, _, _ = site
    editor = client(site, "editor@city.kasai.example")
    # An editor's dataset starts restricted; making it public is an admin's decision.
    pkg = editor.action.package_create(name="kasai-draft", title="加西市 下書き", owner_org="kasai")
    assert pkg["access_level"] == "organization"
    with pytest.raises(NotAuthorized):
        editor.action.package_patch(id="kasai-draft", access_level="public")
    with pytest.raises(NotAuthorized):
        editor.action.package_create(name="kasai-public", title="x", owner_org="kasai",
                                     access_level="public")
    # Anonymous callers cannot see it: 404, as if it did not exist.
    assert requests.get(url + "/api/3/action/package_show", params={"id": "kasai-draft"},
                        timeout=10).status_code == 404
    # A member reads it but cannot write; another organization's editor neither.
    member = client(site, "member@city.kasai.example")
    assert member.action.package_show(id="kasai-draft")["title"] == "加西市 下書き"
    with pytest.raises(NotAuthorized):
        member.action.package_patch(id="kasai-draft", title="変更")
    with pytest.raises(NotFound):
        client(site, "editor@city.yabu.example").action.package_patch(id="kasai-draft",
                                                                      title="変更")
    with pytest.raises(NotAuthorized):
        client(site, "editor@city.yabu.example").action.package_create(
            name="yabu-in-kasai", title="x", owner_org="kasai")
    # A read-only token reads, never writes.
    with pytest.raises(NotAuthorized):
        client(site, "read").action.package_patch(id="kasai-draft", title="変更")
    # The admin publishes it.
    admin = client(site, "admin@city.kasai.example")
    assert admin.action.package_patch(id="kasai-draft", access_level="public")[
        "access_level"] == "public"
    assert requests.get(url + "/api/3/action/package_show", params={"id": "kasai-draft"},
                        timeout=10).status_code == 200


def test_organization_list_for_user_and_license_list(site):
    editor = client(site, "editor@city.kasai.example")
    orgs = editor.action.organization_list_for_user(permission="create_dataset")
    assert [o["name"] for o in orgs] == ["kasai"] and orgs[0]["capacity"] == "editor"
    assert client(site, "member@city.kasai.example").action.organization_list_for_user(
        permission="create_dataset") == []
    ids = {lic["id"] for lic in editor.action.license_list()}
    assert {"cc-by-4.0", "cc0"} <= ids


def test_ckanapi_load_datasets(site, tmp_path):
    url, _, tokens = site
    lines = [{"name": "kasai-aed", "title": "加西市 AED（load）", "owner_org": "kasai",
              "notes": "ckanapi load datasets で登録", "tags": [{"name": "AED"}],
              "resources": [{"name": "紹介ページ", "url": "https://www.city.kasai.hyogo.jp/"}]}]
    jl = tmp_path / "datasets.jsonl"
    jl.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                  encoding="utf-8")
    for act in ("create", "update"):  # the second run finds it and updates it
        # The ckanapi command of this environment (its workers call `ckanapi` on PATH).
        bindir = str(Path(sys.executable).parent)
        proc = subprocess.run([str(Path(bindir) / "ckanapi"), "load", "datasets", "-I", str(jl),
                               "-r", url, "-a", tokens["admin@city.kasai.example"], "-p", "1"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PATH": bindir + os.pathsep +
                                   os.environ.get("PATH", "")})
        assert proc.returncode == 0, proc.stderr
        # ckanapi's report line: `<n> [<worker>] <elapsed> <action> <error> "<name>"`.
        assert f'{act} None "kasai-aed"' in proc.stderr, proc.stderr
    pkg = client(site, "admin@city.kasai.example").action.package_show(id="kasai-aed")
    assert pkg["title"] == "加西市 AED（load）"
    assert [r["url"] for r in pkg["resources"]] == ["https://www.city.kasai.hyogo.jp/"]


def test_delete_withdraws_from_every_read_path_and_everything_is_audited(site):
    url, data_dir, _ = site
    admin = client(site, "admin@city.kasai.example")
    admin.action.package_delete(id="kasai-aed")
    assert requests.get(url + "/api/3/action/package_show", params={"id": "kasai-aed"},
                        timeout=10).status_code == 404
    with Store(data_dir).session() as s:
        events = s.query(accounts.AuditEvent).order_by(accounts.AuditEvent.id).all()
        actions = [(e.action, e.object_id, e.via) for e in events]
        assert ("package_create", "kasai-shelters", "token") in actions
        assert ("resource_create", "kasai-shelters", "token") in actions
        assert ("package_delete", "kasai-aed", "token") in actions
        public = [e for e in events if e.object_id == "kasai-draft" and e.access_after == "public"]
        assert public and public[0].access_before == "organization"
        assert public[0].user_email == "admin@city.kasai.example"
        assert ("user_add", "admin@city.kasai.example", "cli") in actions


def test_the_audit_trail_is_shown_to_organization_admins_only(site):
    url, _, tokens = site
    page = requests.get(url + "/organizations/kasai/audit", timeout=10,
                        headers={"Authorization": tokens["admin@city.kasai.example"]})
    assert page.status_code == 200
    assert "kasai-shelters" in page.text and "package_create" in page.text
    assert "organization → public" in page.text  # kasai-draft made public by the admin
    for who in ("editor@city.kasai.example", "editor@city.yabu.example"):
        assert requests.get(url + "/organizations/kasai/audit", timeout=10,
                            headers={"Authorization": tokens[who]}).status_code == 404
    assert requests.get(url + "/organizations/kasai/audit", timeout=10,
                        allow_redirects=False).status_code == 302
    assert requests.get(url + "/admin", timeout=10,
                        headers={"Authorization": tokens["admin@city.kasai.example"]}
                        ).status_code == 404


def _kept(data_dir, resource_id: str) -> int:
    """Bytes of a resource's original kept in the database (PostgreSQL mode)."""
    from sqlalchemy import func, select
    from store.originals import UploadChunk
    with Store(data_dir).session() as s:
        return s.scalar(select(func.coalesce(func.sum(func.length(UploadChunk.data)), 0))
                        .where(UploadChunk.resource_id == resource_id))


def test_resource_delete_removes_the_file_and_its_published_version(site):
    url, data_dir, _ = site
    ckan = client(site, "admin@city.kasai.example")
    ckan.action.package_create(name="kasai-temp", title="加西市 一時データ", owner_org="kasai")
    with SHELTERS.open("rb") as fh:
        res = ckan.action.resource_create(package_id="kasai-temp", upload=fh)
    if pg_mode.active():
        assert _kept(data_dir, res["id"]) == SHELTERS.stat().st_size
    collections = [r["id"] for r in ckan.action.package_show(id="kasai-temp")["resources"]
                   if r["format"] == "OGC API Features"]
    assert collections
    ckan.action.resource_delete(id=res["id"])
    assert ckan.action.package_show(id="kasai-temp")["resources"] == []
    with pytest.raises(NotFound):
        ckan.action.resource_show(id=res["id"])
    assert requests.get(here(url, res["url"]), timeout=10).status_code == 404
    if pg_mode.active():
        assert _kept(data_dir, res["id"]) == 0
    cid = collections[0].removesuffix("--ogcapi")
    assert requests.get(f"{url}/ogcapi/collections/{cid}", params={"f": "json"},
                        timeout=10).status_code == 404


def test_an_organization_admin_manages_its_members(site):
    import re
    url, data_dir, tokens = site
    renkei(data_dir, "user", "add", "new@city.kasai.example", stdin="a long enough password\n")
    admin = requests.Session()
    form = admin.get(url + "/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    admin.post(url + "/login", data={"email": "admin@city.kasai.example",
                                     "password": "a long enough password", "csrf_token": csrf},
               timeout=10)
    page = admin.get(url + "/organizations/kasai/members", timeout=10)
    assert page.status_code == 200 and "editor@city.kasai.example" in page.text
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    assert admin.post(url + "/organizations/kasai/members", timeout=10,
                      data={"email": "new@city.kasai.example", "role": "editor"}
                      ).status_code == 400                       # no CSRF token
    admin.post(url + "/organizations/kasai/members", timeout=10,
               data={"email": "new@city.kasai.example", "role": "editor", "csrf_token": csrf})
    raw = renkei(data_dir, "token", "create", "new@city.kasai.example",
                 "--scope", "write").stdout.strip()
    newcomer = RemoteCKAN(url, apikey=raw, user_agent=UA)
    assert [o["name"] for o in newcomer.action.organization_list_for_user(
        permission="create_dataset")] == ["kasai"]
    admin.post(url + "/organizations/kasai/members", timeout=10,
               data={"email": "new@city.kasai.example", "role": "editor", "remove": "1",
                     "csrf_token": csrf})
    assert newcomer.action.organization_list_for_user(permission="create_dataset") == []
    # Only the organization's admins see the page.
    assert requests.get(url + "/organizations/kasai/members", timeout=10,
                        headers={"Authorization": tokens["editor@city.kasai.example"]}
                        ).status_code == 404


def _reference_file_server(path: Path):
    """What the embedded mode answers for a kept original: Flask's send_file of the file."""
    from flask import Flask, send_file
    app = Flask("reference")

    @app.route("/file")
    def file():
        return send_file(path, as_attachment=True, download_name=path.name, conditional=True)
    return live_server(app)


def test_an_original_answers_byte_ranges_as_a_file_does(site, tmp_path):
    """A member's original (in PostgreSQL mode: 1 MB chunks in the database) answers single
    byte ranges exactly as Werkzeug's send_file answers them for the same file, which is how
    the embedded mode sends its kept copy: the same status, Content-Range, Content-Length and
    bytes, across chunk boundaries, at the ends, and 416 past them. Several ranges get the
    whole file (200) in both. A dataset the caller may not read stays 404, Range or not."""
    from store.originals import CHUNK
    url, _, tokens = site
    header, *rows = SHELTERS.read_text(encoding="utf-8").splitlines()
    # Long notes make a real shelter list span three chunks with few rows to translate.
    lines = [header] + [f"{i},{row.split(',', 1)[1]}{'避難経路の補足説明。' * 70}"   # 備考
                        for i, row in enumerate(rows * 36, start=1)]
    big = tmp_path / "ranges.csv"
    big.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    data = big.read_bytes()
    size = len(data)
    assert 2 * CHUNK < size < 3 * CHUNK
    ckan = client(site, "editor@city.yabu.example")
    ckan.action.package_create(name="yabu-ranges", title="養父市 範囲取得テスト",
                               owner_org="yabu", access_level="members")
    with big.open("rb") as fh:
        res = ckan.action.resource_create(package_id="yabu-ranges", upload=fh)
    ours = here(url, res["url"])
    key = {"Authorization": tokens["editor@city.yabu.example"]}
    # Not to be seen: 404 whatever the Range.
    for anonymous in ({}, {"Range": "bytes=0-99"}, {"Range": f"bytes={size}-"}):
        assert requests.get(ours, headers=anonymous, timeout=30).status_code == 404
    ranges = [None, "bytes=0-99", "bytes=100-", "bytes=-500", f"bytes={CHUNK - 10}-{CHUNK + 9}",
              f"bytes={CHUNK}-{2 * CHUNK - 1}", f"bytes={2 * CHUNK + 5}-", f"bytes={size - 1}-",
              f"bytes={size - 5}-{size + 100}", f"bytes=0-{size - 1}", f"bytes={size}-",
              f"bytes={size + 10}-{size + 20}", "bytes=5-2", "bytes=0-0,5-9"]
    with _reference_file_server(big) as ref:
        for rng in ranges:
            extra = {"Range": rng} if rng else {}
            got = requests.get(ours, headers={**key, **extra}, timeout=60)
            # Several ranges: renkei answers as to no Range (bare send_file would say 416).
            want = requests.get(ref + "/file", headers={} if "," in (rng or "") else extra,
                                timeout=60)
            assert got.status_code == want.status_code, (rng, got.status_code, want.status_code)
            for name in ("Content-Range", "Accept-Ranges", "Content-Type"):
                assert got.headers.get(name) == want.headers.get(name), (rng, name)
            if got.status_code in (200, 206):
                assert got.headers["Content-Length"] == want.headers["Content-Length"], rng
                assert got.content == want.content, rng
        # A resumed download: If-Range with the ETag it got answers the range; any other
        # validator (a replaced file) answers the whole file.
        etag = requests.head(ours, headers=key, timeout=30).headers["ETag"]
        resumed = requests.get(ours, headers={**key, "Range": "bytes=1000-", "If-Range": etag},
                               timeout=60)
        assert resumed.status_code == 206 and resumed.content == data[1000:]
        stale = requests.get(ours, headers={**key, "Range": "bytes=1000-",
                                            "If-Range": '"not-this-file"'}, timeout=60)
        assert stale.status_code == 200 and stale.content == data
    expected = {None: (200, None), "bytes=0-99": (206, f"bytes 0-99/{size}"),
                "bytes=-500": (206, f"bytes {size - 500}-{size - 1}/{size}"),
                f"bytes={size}-": (416, f"bytes */{size}"), "bytes=0-0,5-9": (200, None)}
    for rng, (status, content_range) in expected.items():
        got = requests.get(ours, headers={**key, **({"Range": rng} if rng else {})}, timeout=60)
        assert (got.status_code, got.headers.get("Content-Range")) == (status, content_range)
        if status != 416:
            assert got.headers["Accept-Ranges"] == "bytes"
    if pg_mode.active():   # a range reads only its chunks: the first two gone, the third serves
        from sqlalchemy import delete

        from store.originals import UploadChunk
        with Store(site[1]).engine.begin() as conn:
            conn.execute(delete(UploadChunk).where(UploadChunk.resource_id == res["id"],
                                                   UploadChunk.seq < 2))
        tail = requests.get(ours, headers={**key, "Range": f"bytes={2 * CHUNK + 5}-"},
                            timeout=60)
        assert tail.status_code == 206 and tail.content == data[2 * CHUNK + 5:]
