"""Sign-in through the prefecture's OpenID Connect identity provider (Authlib), an option
beside local accounts. Configured by the environment; without RENKEI_OIDC_ISSUER nothing here
is active and the sign-in page shows no provider button:

- RENKEI_OIDC_ISSUER         the provider's issuer URL (http or https); its discovery document
                             is read from `<issuer>/.well-known/openid-configuration`
- RENKEI_OIDC_CLIENT_ID, RENKEI_OIDC_CLIENT_SECRET   renkei's registration at the provider
- RENKEI_OIDC_NAME           the provider's name on the button (default 外部ID)
- RENKEI_OIDC_NEW_ACCOUNTS=1 a verified e-mail no account holds gets a new account without any
                             membership (default: only accounts the operator registered)

The flow is the authorization code flow with PKCE (S256), state and nonce; Authlib checks the
ID token's signature against the provider's JWKS, and its iss, aud, exp and nonce. The
discovery document is checked before it is used: its issuer must be the configured one (OpenID
Connect Discovery §4.3) and every endpoint an http(s) URL. Which account a token signs in as is
store.accounts.oidc_user (the linking rule). The redirect URI is built from RENKEI_BASE_URL,
never from the request's Host header.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, abort, current_app, redirect, render_template, session
from joserfc.errors import JoseError

from catalog.i18n import _
from store import accounts
from store.access import Principal

bp = Blueprint("oidc", __name__)
log = logging.getLogger(__name__)

CALLBACK = "/login/oidc/callback"
# Asymmetric signatures only: the JWKS is public, so an HMAC "key" in it proves nothing.
SIGNING_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                "ES512", "EdDSA")
TIMEOUT = 10


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    name: str | None
    allow_new: bool


class ProviderError(RuntimeError):
    """The provider's discovery document cannot be trusted or read."""


def _http_url(url) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def config_from_env(env=os.environ) -> OidcConfig | None:
    issuer = (env.get("RENKEI_OIDC_ISSUER") or "").strip()
    if not issuer:
        return None
    if not _http_url(issuer):
        raise ValueError("RENKEI_OIDC_ISSUER must be an http(s) URL")
    client_id = env.get("RENKEI_OIDC_CLIENT_ID", "").strip()
    if not client_id:
        raise ValueError("RENKEI_OIDC_ISSUER is set but RENKEI_OIDC_CLIENT_ID is not")
    return OidcConfig(issuer=issuer, client_id=client_id,
                      client_secret=env.get("RENKEI_OIDC_CLIENT_SECRET", ""),
                      name=(env.get("RENKEI_OIDC_NAME") or "").strip() or None,
                      allow_new=env.get("RENKEI_OIDC_NEW_ACCOUNTS", "") in ("1", "true", "yes"))


def init_app(app) -> None:
    cfg = config_from_env()
    app.extensions["renkei_oidc"] = cfg
    app.register_blueprint(bp)
    app.jinja_env.globals["oidc_button"] = button_label
    if cfg is None:
        return
    oauth = OAuth(app)
    client = oauth.register(
        "renkei_idp", client_id=cfg.client_id, client_secret=cfg.client_secret,
        server_metadata_url=cfg.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256",
                       "default_timeout": TIMEOUT})
    app.extensions["renkei_oidc_client"] = client


def button_label() -> str | None:
    """The provider button's text on the sign-in page, or None when no provider is set."""
    cfg = current_app.extensions.get("renkei_oidc")
    if cfg is None:
        return None
    return _("%(name)sでログイン", name=cfg.name or _("外部ID"))


def _client():
    cfg = current_app.extensions.get("renkei_oidc")
    if cfg is None:
        abort(404)
    client = current_app.extensions["renkei_oidc_client"]
    metadata = client.load_server_metadata()
    if not metadata.get("_renkei_checked"):
        try:
            _check_metadata(metadata, cfg.issuer)
        except ProviderError:
            client.server_metadata.clear()   # read again next time, never used as it is
            raise
    return cfg, client


def _check_metadata(metadata: dict, issuer: str) -> None:
    if metadata.get("issuer") != issuer:
        raise ProviderError(f"discovery issuer {metadata.get('issuer')!r} is not {issuer!r}")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not _http_url(metadata.get(key)):
            raise ProviderError(f"discovery {key} is not an http(s) URL")
    for key in ("userinfo_endpoint", "end_session_endpoint"):
        if key in metadata and not _http_url(metadata[key]):
            raise ProviderError(f"discovery {key} is not an http(s) URL")
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    algs = [a for a in offered if a in SIGNING_ALGS] if isinstance(offered, list) else []
    if not algs:
        raise ProviderError("the provider offers no asymmetric ID token signature")
    metadata["id_token_signing_alg_values_supported"] = algs  # what Authlib will accept
    metadata.pop("jwks", None)   # keys come from jwks_uri only, fetched by Authlib
    metadata["_renkei_checked"] = True


def _page(error: str, status: int):
    from catalog.auth import LoginForm
    return render_template("login.html", form=LoginForm(), error=error), status


# A link, not a form: the pages' CSP says form-action 'self', which Chromium applies to the
# redirect that follows a form post too, so a posted form could never reach the provider.
# Starting here changes nothing but this browser's own pending state.
@bp.route("/login/oidc")
def start():
    from catalog.auth import _safe_next
    from flask import request
    try:
        _cfg, client = _client()
        session["oidc_next"] = _safe_next(request.args.get("next"))
        return client.authorize_redirect(
            redirect_uri=current_app.config["RENKEI_BASE_URL"] + CALLBACK)
    except (requests.RequestException, ProviderError) as exc:
        log.warning("OpenID provider unusable: %s", exc)
        return _page(_("外部IDの認証サービスに接続できませんでした。しばらくしてからお試しください。"),
                     502)


@bp.route(CALLBACK)
def callback():
    from catalog.auth import _load_user
    from flask_login import login_user
    try:
        cfg, client = _client()
        # aud is named here: Authlib's own ID token check looks at azp, not at aud alone.
        token = client.authorize_access_token(
            claims_options={"iss": {"essential": True, "value": cfg.issuer},
                            "aud": {"essential": True, "value": cfg.client_id},
                            "sub": {"essential": True}})
        claims = token.get("userinfo")
        if claims is None:
            raise OAuthError(description="no ID token in the token response")
    except (requests.RequestException, ProviderError) as exc:  # first: some are ValueErrors
        log.warning("OpenID provider unusable: %s", exc)
        return _page(_("外部IDの認証サービスに接続できませんでした。しばらくしてからお試しください。"),
                     502)
    except (OAuthError, JoseError, ValueError, KeyError, TypeError) as exc:
        log.warning("OpenID sign-in refused: %s: %s", type(exc).__name__, exc)
        return _page(_("外部IDでのログインを確認できませんでした。もう一度お試しください。"), 400)
    store = current_app.extensions["renkei_store"]
    try:
        with store.session() as s, s.begin():
            user, how = accounts.oidc_user(s, cfg.issuer, str(claims["sub"]),
                                           claims.get("email"), claims.get("email_verified"),
                                           allow_new=cfg.allow_new)
            if how != "known":
                accounts.audit(s, Principal(user_id=user.id, email=user.email, via="session"),
                               f"oidc_{how}", "user", user.email, issuer=cfg.issuer)
            uid = user.id
    except accounts.OidcRefused as exc:
        log.warning("OpenID sign-in without an account (%s): %s", cfg.issuer, exc.reason)
        return _page(_("このIDで利用できるアカウントがありません。運営者にお問い合わせください。"), 403)
    next_ = session.pop("oidc_next", None) or "/"
    login_user(_load_user(str(uid)))
    return redirect(next_)
