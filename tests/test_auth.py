"""Sign-in and sign-out through the real form (Flask-WTF CSRF, Flask-Login session): cookie
flags, one message for every failure, throttling, no open redirect, sign-out only by a POST
with its CSRF token, argon2 hashes in the database, secrets in 0600 files."""
from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import select

from store import accounts
from store.db import Store
from tests.accounts import PASSWORD, add_org, add_user


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
    # Throttled now, even with the right password.
    assert _login(client, "staff@city.kasai.example", PASSWORD).status_code == 429


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
