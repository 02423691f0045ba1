"""Sign-in and the caller of each request: sessions (Flask-Login), CSRF (Flask-WTF), API tokens.

Every request gets `g.principal` (store.access.Principal) before any view runs:
- a token in `Authorization: <token>`, `Authorization: Bearer <token>` or `X-CKAN-API-Key`
  (ckanapi sends the first and the last) — a token that is unknown, revoked or expired is
  refused with 401 on that very request, never silently downgraded to anonymous;
- else the signed-in session;
- else anonymous.
Token-authenticated calls carry no cookie, so the CKAN API is exempt from CSRF; its write
actions accept only tokens (a cookie session cannot write through it, so no CSRF there).
"""
from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import (Blueprint, Response, current_app, g, json, redirect, render_template,
                   request, session, url_for)
from flask.globals import request_ctx
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from catalog.i18n import _, lazy_gettext
from catalog.response_headers import header
from store import accounts
from store import access
from store.access import ANONYMOUS, Principal

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

# Failed sign-ins allowed within 15 minutes, then sign-in waits (even with the right password)
# until the window ends. Per account, the guard against guessing one password; per client
# address, the guard against trying one password on many accounts — looser, because a town
# hall's staff reach us through one proxy address (LGWAN).
ACCOUNT_FAILURES = "10 per 15 minutes"
ADDRESS_FAILURES = "30 per 15 minutes"


class SessionUser(UserMixin):
    def __init__(self, principal: Principal):
        self.principal = principal
        self.id = str(principal.user_id)


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building the signer for a request that brings
    no session cookie (API clients, issue 17): its session is new and empty either way."""

    def open_session(self, app, request):
        # No Cookie header at all (API clients): no cookie to parse for it (issue 17).
        if app.secret_key and (not request.environ.get("HTTP_COOKIE")
                               or not request.cookies.get(self.get_cookie_name(app))):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        # Flask's own steps do nothing for a session nobody read or wrote that is empty (no
        # cookie, no Vary: Cookie), after working out every cookie attribute.
        if session or session.accessed or session.modified:
            super().save_session(app, session, response)


def init_app(app) -> None:
    store = app.extensions["renkei_store"]
    app.secret_key = accounts.session_secret(store.data_dir)
    app.session_interface = _CookieSessions()
    secure = app.config["RENKEI_BASE_URL"].startswith("https:")
    # Flask's defaults exist (SameSite None, Secure off), so these are set, not defaulted.
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=secure, REMEMBER_COOKIE_HTTPONLY=True,
                      REMEMBER_COOKIE_SECURE=secure, REMEMBER_COOKIE_SAMESITE="Lax",
                      WTF_CSRF_TIME_LIMIT=3600 * 8)
    app.extensions["renkei_token_secret"] = accounts.token_secret(store.data_dir)
    login_manager.init_app(app)
    hooks = app.after_request_funcs.setdefault(None, [])
    hooks[:] = [_remember_me if f == login_manager._update_remember_cookie else f for f in hooks]
    login_manager.login_view = "auth.login"
    login_manager.login_message = lazy_gettext("このページを見るにはログインしてください。")
    csrf.init_app(app)
    app.before_request(_resolve_principal)
    app.after_request(_no_shared_caching_for_callers)
    app.context_processor(lambda: {"principal": principal()})


@login_manager.user_loader
def _load_user(user_id: str):
    store = current_app.extensions["renkei_store"]
    try:
        uid = int(user_id)
    except ValueError:
        return None
    with store.session() as s:
        user = s.get(accounts.User, uid)
        if user is None or user.state != "active":
            return None
        return SessionUser(Principal(user_id=user.id, email=user.email,
                                     is_sysadmin=user.is_sysadmin,
                                     roles=accounts.roles_of(s, user.id), via="session"))


def _presented_token() -> str | None:
    # The WSGI environ's keys for these headers, as werkzeug's request.headers reads them,
    # without the exception a missing header costs it (issue 17).
    environ = request.environ
    raw = environ.get("HTTP_X_CKAN_API_KEY") or environ.get("HTTP_AUTHORIZATION")
    if raw is None:
        return None
    raw = raw.strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    return raw


def _resolve_principal():
    raw = _presented_token()
    if raw is not None:
        store = current_app.extensions["renkei_store"]
        holder = accounts.resolve_token(store.engine, current_app.extensions["renkei_token_secret"],
                                        raw)
        if holder is None:
            return unauthorized()
        g.principal = Principal(user_id=holder.user_id, email=holder.email,
                                is_sysadmin=holder.is_sysadmin, roles=holder.roles,
                                via="token", token_id=holder.token_id, scope=holder.scope)
        return None
    if not request.environ.get("HTTP_COOKIE") or not request.cookies:
        # No session and no remember-me cookie: Flask-Login would find nobody, after hashing
        # the address and user agent for its session protection. API clients send no cookies.
        g.principal = ANONYMOUS
        return None
    g.principal = current_user.principal if current_user.is_authenticated else ANONYMOUS
    return None


def _remember_me(resp: Response) -> Response:
    """Flask-Login's remember-me step (_update_remember_cookie), unless this request never
    touched a session that is empty: then there is nothing to remember or clear, and Flask-Login
    reading it would mark it accessed (Flask 3.1), so that saving it (Vary: Cookie, which
    _no_shared_caching_for_callers sends anyway) cost an API request as much as its hooks
    (issue 17)."""
    ctx_session = getattr(request_ctx._get_current_object(), "_session", None)
    if ctx_session is not None and not ctx_session and not ctx_session.accessed \
            and not current_app.config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST"):
        return resp
    return login_manager._update_remember_cookie(resp)


_VARY = ("Authorization", "Cookie", "X-CKAN-API-Key")
_VARY_TEXT = ", ".join(_VARY)


def _no_shared_caching_for_callers(resp: Response) -> Response:
    """An answer depends on who asks, and one to a signed-in caller or a token may hold
    restricted data: no shared cache (proxy, CDN) may keep it or hand the anonymous answer to a
    member. Anonymous answers, public data only, stay cacheable as their views say."""
    h = resp.headers
    if header(h, "vary") is not None:
        resp.vary.update(_VARY)
    else:   # the usual case, without parsing and re-writing a header set (issue 17)
        h.add("Vary", _VARY_TEXT)
    if principal().signed_in:
        kept = [d.strip() for d in resp.headers.get("Cache-Control", "").split(",")
                if d.strip() and d.strip().lower() not in ("public", "private")]
        resp.headers["Cache-Control"] = ", ".join(["private", *kept])
    return resp


def principal() -> Principal:
    return g.get("principal", ANONYMOUS)


def unauthorized() -> Response:
    """401 in CKAN's error shape (ckanapi raises NotAuthorized on it); the token is not echoed."""
    body = {"help": None, "success": False,
            "error": {"__type": "Authorization Error",
                      "message": "Invalid, revoked or expired API token"}}
    return Response(json.dumps(body), status=401, content_type="application/json;charset=utf-8",
                    headers={"WWW-Authenticate": 'Bearer realm="renkei"'})


def signed_in_required(view):
    """Pages for signed-in callers only: anyone else is sent to the sign-in page."""
    @functools.wraps(view)
    def gated(*args, **kwargs):
        if not principal().signed_in:
            return login_manager.unauthorized()
        return view(*args, **kwargs)
    return gated


def staff_required():
    """None when a signed-in member (any organization) or sysadmin asks; else the response:
    the sign-in page for a browser, 404 never (staff pages are not secret, their data is)."""
    p = principal()
    if p.is_member:
        return None
    if p.signed_in:
        return render_template("error.html", status=403, heading=_("権限がありません"),
                               message=_("このページは組織のメンバーだけが見られます。")), 403
    return login_manager.unauthorized()


# -- sign-in and sign-out ---------------------------------------------------------------------

class LoginForm(FlaskForm):
    email = EmailField(lazy_gettext("メールアドレス"), validators=[DataRequired(), Length(max=320)])
    password = PasswordField(lazy_gettext("パスワード"), validators=[DataRequired(),
                                                                    Length(max=1024)])


def _account_key() -> str:
    email = (request.form.get("email") or "").strip()
    try:
        email = accounts.normalize_email(email)
    except accounts.AccountError:
        pass                       # still counted, under what was typed
    return "signin-account:" + email[:320]


def _address_key() -> str:
    return f"signin-addr:{request.remote_addr}"


def _throttled_page(_limit):
    form = LoginForm(formdata=None)
    return Response(render_template(
        "login.html", form=form,
        error=_("ログインの失敗が続いたため、しばらく時間をおいてからお試しください。")), 429)


def throttle_sign_in(app, limiter) -> None:
    """Count failed sign-ins (answers 401) with the app's Flask-Limiter: its storage is Redis
    when RENKEI_REDIS_URL is set, so every worker and server shares the counts. Past a limit
    the form answers 429 with Retry-After before any password is checked."""
    failed = dict(methods=["POST"], deduct_when=lambda resp: resp.status_code == 401,
                  on_breach=_throttled_page, override_defaults=True)
    view = app.view_functions["auth.login"]
    view = limiter.limit(ACCOUNT_FAILURES, key_func=_account_key, **failed)(view)
    view = limiter.limit(ADDRESS_FAILURES, key_func=_address_key, **failed)(view)
    app.view_functions["auth.login"] = view


def _safe_next(target: str | None) -> str:
    """Only a path on this site: an open redirect would make our sign-in page a phishing aid."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") \
                and not target.startswith("//") and "\\" not in target:
            return target
    return url_for("search.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    error, status = None, 200
    if form.validate_on_submit():
        store = current_app.extensions["renkei_store"]
        with store.session() as s, s.begin():
            user = accounts.check_password(s, form.email.data, form.password.data)
            uid = user.id if user is not None else None
        if uid is None:
            error, status = _("メールアドレスまたはパスワードが正しくありません。"), 401
        else:
            login_user(_load_user(str(uid)))
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        error, status = _("入力内容を確認してください。"), 400
    return render_template("login.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
def logout():
    logout_user()
    session.clear()   # also any half-done provider sign-in and the CSRF secret
    return redirect(url_for("search.index"))


# -- the request's caller against store.access (the one rule) ----------------------------------

def readable():
    """The caller's access labels (None: all) for the search arrays and the OGC API."""
    return access.labels(principal())


def may_read(ds) -> bool:
    return ds is not None and access.can_read(principal(), ds)


def read_where(model=None):
    """The caller's read rule as a SQL condition on Dataset."""
    return access.read_filter(principal()) if model is None else \
        access.read_filter(principal(), model)
