"""Sign-in and sign-out through the real form (Flask-WTF CSRF, Flask-Login session): cookie
flags, one message for every failure, throttling, no open redirect, sign-out only by a POST
with its CSRF token, argon2 hashes in the database, secrets in 0600 files."""
from __future__ import annotations

import io
import re
import uuid

import pytest
import requests
from sqlalchemy import select

from store import accounts
from store.db import Store
from tests.accounts import PASSWORD, add_org, add_user
from tests.servers import live_server

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture()
def app(tmp_path):
    from catalog.app import create_app
    data_dir = tmp_path / "data"
    store = Store(data_dir)
    add_org(store, "kasai", "加西市", "282201")
    add_user(store, "staff@city.kasai.example", org="kasai", role="editor")
    return create_app(data_dir)


def _csrf(client, path="/login") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def _login(client, email, password, next_=None):
    path = "/login" + (f"?next={next_}" if next_ else "")
    return client.post(path, data={"email": email, "password": password,
                                   "csrf_token": _csrf(client)})


def test_sign_in_sets_a_protected_session_cookie_and_sign_out_needs_csrf(app):
    client = app.test_client()
    resp = _login(client, "staff@city.kasai.example", PASSWORD)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    page = client.get("/").get_data(as_text=True)
    assert "ログアウト" in page and "データを公開" in page
    assert client.get("/logout").status_code == 405               # never by a link
    assert client.post("/logout").status_code == 400              # no CSRF token
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert "ログアウト" not in client.get("/").get_data(as_text=True)


def test_secure_cookie_behind_https(tmp_path):
    from catalog.app import create_app
    app = create_app(tmp_path / "d", base_url="https://renkei.example.jp")
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_every_failure_says_the_same_and_sign_in_is_throttled(app):
    client = app.test_client()
    wrong = _login(client, "staff@city.kasai.example", "not the password")
    unknown = _login(client, "nobody@city.kasai.example", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    message = "メールアドレスまたはパスワードが正しくありません。"
    assert message in wrong.get_data(as_text=True) and message in unknown.get_data(as_text=True)
    assert client.post("/login", data={"email": "staff@city.kasai.example",
                                       "password": PASSWORD}).status_code == 400  # no CSRF
    for _ in range(10):
        _login(client, "staff@city.kasai.example", "still wrong")
    # Throttled now, even with the right password: a plain message and when to come back.
    over = _login(client, "staff@city.kasai.example", PASSWORD)
    assert over.status_code == 429 and 0 < int(over.headers["Retry-After"]) <= 15 * 60
    assert "ログインの失敗が続いたため" in over.get_data(as_text=True)
    assert 'name="email"' in over.get_data(as_text=True)         # the form, not an error page


def test_the_address_limit_stops_one_password_tried_on_many_accounts(app):
    client = app.test_client()
    for i in range(30):
        assert _login(client, f"guess{i}@city.kasai.example", "Summer2026!").status_code == 401
    # A 31st account from the same address waits, though its own count is zero.
    assert _login(client, "staff@city.kasai.example", PASSWORD).status_code == 429
    # Another address is not held back (the test client's REMOTE_ADDR).
    other = app.test_client()
    resp = other.post("/login", data={"email": "staff@city.kasai.example", "password": PASSWORD,
                                      "csrf_token": _csrf(other)},
                      environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert resp.status_code == 302


def test_next_is_only_a_path_on_this_site(app):
    client = app.test_client()
    resp = _login(client, "staff@city.kasai.example", PASSWORD, next_="//evil.example/x")
    assert resp.headers["Location"] == "/"
    client = app.test_client()
    resp = _login(client, "staff@city.kasai.example", PASSWORD, next_="/datasets/new")
    assert resp.headers["Location"] == "/datasets/new"


def test_passwords_are_argon2_and_secrets_are_private(app):
    store = app.extensions["renkei_store"]
    with store.session() as s:
        user = s.scalar(select(accounts.User))
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    for name in ("token.secret", "session.secret"):
        assert (store.data_dir / name).stat().st_mode & 0o777 == 0o600


def test_a_bad_token_is_401_on_every_path(app):
    client = app.test_client()
    for path in ("/", "/datasets", "/api/3/action/package_list", "/ogcapi/collections"):
        for headers in ({"Authorization": "renkei_nope"}, {"X-CKAN-API-Key": "x"},
                        {"Authorization": "Bearer renkei_nope"}):
            resp = client.get(path, headers=headers)
            assert resp.status_code == 401, (path, headers)
            assert resp.json["error"]["__type"] == "Authorization Error"


def test_a_signed_in_session_cannot_write_through_the_api(app):
    """The API is CSRF-exempt because its writes take tokens only: a cookie is not enough."""
    client = app.test_client()
    _login(client, "staff@city.kasai.example", PASSWORD)
    resp = client.post("/api/3/action/package_create",
                       json={"name": "by-cookie", "title": "x", "owner_org": "kasai"})
    assert resp.status_code == 403 and "API token" in resp.json["error"]["message"]


def test_a_request_over_the_limit_is_a_ckan_error(tmp_path):
    from catalog.app import create_app
    app = create_app(tmp_path / "d", config={"MAX_CONTENT_LENGTH": 1024})
    resp = app.test_client().post("/api/3/action/resource_create",
                                  data={"package_id": "x",
                                        "upload": (io.BytesIO(b"a" * 5000), "big.csv")})
    assert resp.status_code == 413 and resp.json["error"]["__type"] == "Validation Error"


def _post_login(base: str, email: str, password: str):
    s = requests.Session()
    page = s.get(base + "/login", timeout=30).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return s.post(base + "/login", data={"email": email, "password": password,
                                         "csrf_token": token}, allow_redirects=False, timeout=30)


def _two_servers(data_dir):
    from catalog.app import create_app
    a, b = create_app(data_dir), create_app(data_dir)
    return live_server(a), live_server(b)


def test_failed_sign_ins_are_counted_across_servers_through_redis(tmp_path, monkeypatch):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    data_dir = tmp_path / "data"
    store = Store(data_dir)
    add_org(store, "kasai", "加西市", "282201")
    add_user(store, "staff@city.kasai.example", org="kasai", role="editor")
    email = "staff@city.kasai.example"
    # Control: without Redis each server counts alone, so 5 failures on each lock nothing.
    one, two = _two_servers(data_dir)
    with one as a, two as b:
        for i in range(10):
            assert _post_login((a, b)[i % 2], email, "wrong password").status_code == 401
        assert _post_login(a, email, PASSWORD).status_code == 302
    prefix = f"renkei-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("RENKEI_REDIS_URL", REDIS)
    monkeypatch.setenv("RENKEI_RATE_LIMIT_PREFIX", prefix)
    try:
        one, two = _two_servers(data_dir)
        with one as a, two as b:
            for i in range(10):
                assert _post_login((a, b)[i % 2], email, "wrong password").status_code == 401
            for base in (a, b):      # one shared count: both servers hold the account back
                over = _post_login(base, email, PASSWORD)
                assert over.status_code == 429, base
                assert 0 < int(over.headers["Retry-After"]) <= 15 * 60
                assert "ログインの失敗が続いたため" in over.text
            # Another account from the same address is not held back (its limit is looser).
            add_user(store, "other@city.kasai.example", org="kasai", role="member")
            assert _post_login(b, "other@city.kasai.example", PASSWORD).status_code == 302
        # limits stores "LIMITS:LIMITER/<prefix>/<key>/<endpoint>/<limit>"
        keys = [k.decode() for k in client.scan_iter(f"*{prefix}*")]
        assert any("signin-account:" + email in k for k in keys), keys
    finally:
        for k in client.scan_iter(f"*{prefix}*"):
            client.delete(k)
