"""Sign-in through an OpenID provider: a real one (tests/oidc_provider.py, Authlib's server
side, RSA-signed ID tokens, JWKS, discovery) on 127.0.0.1, and renkei on another port, driven
by a requests session that follows the redirects as a browser does (and once by Chromium).
Covers PKCE/state/nonce on the wire, the account-linking rule, the provider's bad tokens
(wrong audience, bad signature, expired, unknown issuer, no nonce), a replayed callback, a
discovery document naming another issuer, and sign-out."""
from __future__ import annotations

import html
import re
import threading
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from store import accounts
from store.db import Store
from tests.accounts import PASSWORD, add_org, add_user
from tests.oidc_provider import TestProvider
from tests.platform_world import cli

STAFF = "staff@pref.hyogo.example"
REFUSED = "このIDで利用できるアカウントがありません。"
UNVERIFIED = "外部IDでのログインを確認できませんでした。"


@pytest.fixture()
def idp():
    provider = TestProvider()
    with provider.running():
        yield provider


@pytest.fixture()
def data_dir(tmp_path):
    data = tmp_path / "data"
    store = Store(data)
    add_org(store, "hyogo-pref", "兵庫県", "280003")
    return data


@contextmanager
def renkei(data_dir, idp, monkeypatch, **env):
    from catalog.app import create_app
    monkeypatch.setenv("RENKEI_OIDC_ISSUER", idp.issuer)
    monkeypatch.setenv("RENKEI_OIDC_CLIENT_ID", idp.client.client_id)
    monkeypatch.setenv("RENKEI_OIDC_CLIENT_SECRET", idp.client.client_secret)
    monkeypatch.setenv("RENKEI_OIDC_NAME", "兵庫県職員ID")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    server.app = create_app(data_dir, base_url=base)
    idp.client.redirect_uris = [base + "/login/oidc/callback"]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        thread.join(5)


def preregister(data_dir, idp, email=STAFF, *extra):
    import os
    os.environ["RENKEI_OIDC_ISSUER"] = idp.issuer   # what the operator's shell has
    try:
        result = cli(data_dir, "user", "add", email, "--oidc", *extra)
    finally:
        del os.environ["RENKEI_OIDC_ISSUER"]
    assert result.returncode == 0, result.stderr


def start(base, session=None, next_=None):
    """Follow the provider link of the sign-in page, and every redirect after it."""
    session = session or requests.Session()
    page = session.get(base + "/login" + (f"?next={next_}" if next_ else ""), timeout=30)
    link = re.search(r'<a class="button" href="([^"]+)">', page.text).group(1)
    return session, session.get(base + html.unescape(link), timeout=30)


def signed_in(session, base) -> bool:
    return "ログアウト" in session.get(base + "/", timeout=30).text


def _refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "catalog.oidc"]


def user_row(data_dir, email):
    with Store(data_dir).session() as s:
        return s.scalar(select(accounts.User).where(accounts.User.email == email))


def test_a_preregistered_account_signs_in_with_pkce_state_and_nonce(data_dir, idp, monkeypatch):
    preregister(data_dir, idp, STAFF, "--org", "hyogo-pref", "--role", "admin")
    assert user_row(data_dir, STAFF).password_hash is None        # no password made
    with renkei(data_dir, idp, monkeypatch) as base:
        session, resp = start(base, next_="/datasets/new")
        assert resp.status_code == 200 and urlsplit(resp.url).path == "/datasets/new", resp.text
        # On the wire: the authorization request carried state, nonce and an S256 challenge;
        # the token request the verifier of that challenge and the same redirect URI.
        auth = idp.authorize_requests[-1]
        assert auth["code_challenge_method"] == "S256" and len(auth["code_challenge"]) == 43
        assert auth["state"] and auth["nonce"] and auth["scope"] == "openid email profile"
        assert auth["redirect_uri"] == base + "/login/oidc/callback"
        sent = idp.token_requests[-1]
        assert len(sent["code_verifier"]) >= 43 and sent["redirect_uri"] == auth["redirect_uri"]
        assert signed_in(session, base)
        user = user_row(data_dir, STAFF)
        assert (user.oidc_issuer, user.oidc_subject) == (idp.issuer, "hyogo-0001")
        # Keyed by issuer + subject: a later e-mail change at the provider signs in the same
        # account.
        idp.user = {**idp.user, "email": "renamed@pref.hyogo.example"}
        again, resp = start(base)
        assert resp.status_code == 200 and signed_in(again, base)
        assert user_row(data_dir, "renamed@pref.hyogo.example") is None
        # Sign-out clears the whole session: nothing signed in, the old cookie gone.
        page = session.get(base + "/", timeout=30).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        out = session.post(base + "/logout", data={"csrf_token": csrf}, allow_redirects=False,
                           timeout=30)
        assert out.status_code == 302
        assert "session=;" in out.headers["Set-Cookie"] or "session=\"\"" in \
            out.headers["Set-Cookie"] or "Expires=Thu, 01 Jan 1970" in out.headers["Set-Cookie"]
        assert not signed_in(session, base)
    with Store(data_dir).session() as s:
        actions = s.scalars(select(accounts.AuditEvent.action)).all()
    assert "oidc_linked" in actions


def test_a_replayed_callback_is_refused(data_dir, idp, monkeypatch, caplog):
    preregister(data_dir, idp)
    with renkei(data_dir, idp, monkeypatch) as base:
        # Step by step, to keep the callback URL and the cookie as they were before it.
        session = requests.Session()
        to_idp = session.get(base + "/login/oidc", allow_redirects=False, timeout=30)
        back = session.get(to_idp.headers["Location"], allow_redirects=False, timeout=30)
        callback = back.headers["Location"]
        assert parse_qs(urlsplit(callback).query).keys() >= {"code", "state"}
        before = requests.utils.dict_from_cookiejar(session.cookies)
        done = session.get(callback, allow_redirects=False, timeout=30)
        assert done.status_code == 302 and signed_in(session, base)
        # The same browser again: its state was spent with the first use.
        again = session.get(callback, timeout=30)
        assert again.status_code == 400 and UNVERIFIED in again.text
        assert "MismatchingStateError" in _refusals(caplog)[-1]
        # Another browser (a login CSRF): the state was never its own.
        stranger = requests.Session()
        resp = stranger.get(callback, timeout=30)
        assert resp.status_code == 400 and not signed_in(stranger, base)
        # The cookie as it was before the callback: the state matches, but the provider has
        # spent the code (a code works once).
        old = requests.Session()
        old.cookies.update(before)
        resp = old.get(callback, timeout=30)
        assert resp.status_code == 400 and not signed_in(old, base)
        assert "invalid_grant" in _refusals(caplog)[-1]


@pytest.mark.parametrize("misbehave,why", [
    ("audience", "Invalid claim: 'aud'"), ("signature", "BadSignatureError"),
    ("expired", "ExpiredTokenError"), ("issuer", "Invalid claim: 'iss'"),
    ("no-nonce", "Missing claim: 'nonce'")])
def test_a_bad_id_token_signs_nobody_in(data_dir, idp, monkeypatch, caplog, misbehave, why):
    preregister(data_dir, idp)
    with renkei(data_dir, idp, monkeypatch) as base:
        idp.misbehave = misbehave
        session, resp = start(base)
        assert resp.status_code == 400 and UNVERIFIED in resp.text, misbehave
        # Refused for that reason (in the server log only), not for another one.
        assert why in _refusals(caplog)[-1]
        assert idp.token_requests, "the code was exchanged, the ID token refused"
        assert not signed_in(session, base)
        assert user_row(data_dir, STAFF).oidc_subject is None     # nothing was linked
        # The same provider behaving again: the same browser signs in.
        idp.misbehave = None
        session, resp = start(base, session)
        assert resp.status_code == 200 and signed_in(session, base)


@pytest.mark.parametrize("changes", [
    {"issuer": "http://127.0.0.1:9/impostor"},          # another issuer's document
    {"jwks_uri": "file:///etc/passwd"},                  # not an http(s) URL
    {"token_endpoint": "gopher://127.0.0.1:70/"},
    {"id_token_signing_alg_values_supported": ["none", "HS256"]},
])
def test_an_untrustworthy_discovery_document_is_not_used(data_dir, idp, monkeypatch, changes):
    preregister(data_dir, idp)
    with renkei(data_dir, idp, monkeypatch) as base:
        idp.discovery_changes = changes
        session, resp = start(base)
        assert resp.status_code == 502 and not idp.authorize_requests
        assert "接続できませんでした" in resp.text
        idp.discovery_changes = {}       # read again, not kept as it was
        session, resp = start(base)
        assert resp.status_code == 200 and signed_in(session, base)


def test_a_provider_that_does_not_answer(data_dir, monkeypatch):
    from catalog.app import create_app
    monkeypatch.setenv("RENKEI_OIDC_ISSUER", "http://127.0.0.1:9")   # discard port: refused
    monkeypatch.setenv("RENKEI_OIDC_CLIENT_ID", "renkei")
    client = create_app(data_dir).test_client()
    resp = client.get("/login/oidc")
    assert resp.status_code == 502 and "接続できませんでした" in resp.get_data(as_text=True)


def test_a_local_account_is_never_taken_over_by_e_mail(data_dir, idp, monkeypatch):
    add_user(Store(data_dir), STAFF, org="hyogo-pref", role="admin")   # a password account
    with renkei(data_dir, idp, monkeypatch, RENKEI_OIDC_NEW_ACCOUNTS="1") as base:
        session, resp = start(base)
        assert resp.status_code == 403 and REFUSED in resp.text
        assert not signed_in(session, base)
        assert user_row(data_dir, STAFF).oidc_subject is None
        # Its owner still signs in with the password.
        page = session.get(base + "/login", timeout=30).text
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        r = session.post(base + "/login", data={"csrf_token": csrf, "email": STAFF,
                                                "password": PASSWORD}, timeout=30)
        assert r.status_code == 200 and signed_in(session, base)


def test_an_unverified_e_mail_links_nothing(data_dir, idp, monkeypatch):
    preregister(data_dir, idp)
    idp.user = {**idp.user, "email_verified": False}
    with renkei(data_dir, idp, monkeypatch) as base:
        session, resp = start(base)
        assert resp.status_code == 403 and not signed_in(session, base)
        assert user_row(data_dir, STAFF).oidc_subject is None
        idp.user = {**idp.user, "email_verified": "true"}    # a string is not a boolean
        session, resp = start(base, session)
        assert resp.status_code == 403


def test_a_provider_without_email_verified_signs_in_a_subject_the_operator_bound(
        data_dir, idp, monkeypatch):
    """Entra ID, for one, sends no email_verified: the operator binds the subject instead."""
    idp.user = {k: v for k, v in idp.user.items() if k != "email_verified"}
    preregister(data_dir, idp)
    with renkei(data_dir, idp, monkeypatch) as base:
        session, resp = start(base)
        assert resp.status_code == 403
        preregister(data_dir, idp, STAFF, "--oidc-subject", "hyogo-0001")
        session, resp = start(base)
        assert resp.status_code == 200 and signed_in(session, base)
    # One subject, one account.
    import os
    os.environ["RENKEI_OIDC_ISSUER"] = idp.issuer
    try:
        taken = cli(data_dir, "user", "add", "other@pref.hyogo.example", "--oidc",
                    "--oidc-subject", "hyogo-0001")
    finally:
        del os.environ["RENKEI_OIDC_ISSUER"]
    assert taken.returncode == 2 and "already signs in as" in taken.stderr


def test_new_accounts_only_when_the_operator_allows_them(data_dir, idp, monkeypatch):
    newcomer = "newcomer@pref.hyogo.example"
    idp.user = {**idp.user, "sub": "hyogo-0999", "email": newcomer}
    with renkei(data_dir, idp, monkeypatch) as base:
        session, resp = start(base)
        assert resp.status_code == 403 and user_row(data_dir, newcomer) is None
    with renkei(data_dir, idp, monkeypatch, RENKEI_OIDC_NEW_ACCOUNTS="1") as base:
        session, resp = start(base)
        assert resp.status_code == 200 and signed_in(session, base)
        user = user_row(data_dir, newcomer)
        assert user.password_hash is None and user.oidc_subject == "hyogo-0999"
        with Store(data_dir).session() as s:
            assert accounts.roles_of(s, user.id) == {}          # no membership: reads public
        assert session.get(base + "/datasets/new", timeout=30).status_code == 403


def test_the_button_is_there_only_when_a_provider_is_set(data_dir, idp, monkeypatch):
    from catalog.app import create_app
    plain = create_app(data_dir).test_client()
    assert "/login/oidc" not in plain.get("/login").get_data(as_text=True)
    assert plain.get("/login/oidc").status_code == 404
    with renkei(data_dir, idp, monkeypatch) as base:
        page = requests.get(base + "/login?next=/datasets/new", timeout=30).text
        assert '<a class="button" href="/login/oidc?next=/datasets/new">兵庫県職員IDでログイン</a>' \
            in page
        en = requests.get(base + "/login?lang=en", timeout=30).text
        assert "Sign in with 兵庫県職員ID" in en
        # Only a path on this site is kept for after the sign-in.
        preregister(data_dir, idp)
        session, resp = start(base, next_="//evil.example/")
        assert resp.status_code == 200 and resp.url == base + "/" and signed_in(session, base)


def test_the_issuer_must_be_an_http_url(monkeypatch):
    from catalog.oidc import config_from_env
    for bad in ("file:///etc/passwd", "gopher://idp.example", "idp.example"):
        with pytest.raises(ValueError):
            config_from_env({"RENKEI_OIDC_ISSUER": bad, "RENKEI_OIDC_CLIENT_ID": "x"})
    assert config_from_env({}) is None
