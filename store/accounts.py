"""Who may act: users, their memberships in organizations, API tokens and the audit trail.

Tables live in the catalogue database (SQLAlchemy, so they work on PostgreSQL as on SQLite).
Passwords are argon2id hashes (argon2-cffi). API tokens follow udata's 2026 design: the token
is shown once; the database keeps only HMAC-SHA256(token secret, token) and a display prefix,
so a copy of the database gives no usable token. The token secret is separate from the
session secret so each can be rotated alone; it comes from RENKEI_TOKEN_SECRET, else a file
`token.secret` in the data dir created with mode 0600.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (JSON, Boolean, DateTime, ForeignKey, Integer, String, Text,
                        UniqueConstraint, bindparam, select)
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, utcnow

ROLES = ("member", "editor", "admin")
SCOPES = ("read", "write")
TOKEN_PREFIX = "renkei_"   # lets secret scanners recognise a leaked token
DISPLAY_CHARS = 12
MAX_TOKEN_DAYS = 365
DEFAULT_TOKEN_DAYS = 180   # HDX's cap; a token without expiry is a liability
LAST_USE_GRANULARITY = timedelta(minutes=1)  # one write a minute per token, not per request

_hasher = PasswordHasher()
# Verified when an e-mail is unknown, so a miss costs what a wrong password costs.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class User(Base):
    __tablename__ = "app_user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    oidc_issuer: Mapped[str | None] = mapped_column(Text)
    oidc_subject: Mapped[str | None] = mapped_column(Text)
    is_sysadmin: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(20), default="active")  # active | disabled
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject"),)


class Membership(Base):
    __tablename__ = "membership"
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(Text, default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(10), default="read")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEvent(Base):
    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    user_email: Mapped[str | None] = mapped_column(String(320))
    token_id: Mapped[int | None] = mapped_column(Integer)
    via: Mapped[str] = mapped_column(String(10))  # session | token | cli
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(20))
    object_id: Mapped[str | None] = mapped_column(Text)
    organization_id: Mapped[str | None] = mapped_column(String(100), index=True)
    access_before: Mapped[str | None] = mapped_column(String(20))
    access_after: Mapped[str | None] = mapped_column(String(20))
    detail: Mapped[dict | None] = mapped_column(JSON)


class AccountError(ValueError):
    """A request the accounts store refuses; the message is for the person who asked."""


# -- secrets -------------------------------------------------------------------------------------

class MissingSecret(RuntimeError):
    """A secret neither the environment nor a data dir provides."""


def _secret_file(data_dir: Path, name: str, env: str) -> bytes:
    value = os.environ.get(env)
    if value:
        return value.encode()
    path = Path(data_dir) / name
    if not Path(data_dir).is_dir():
        # PostgreSQL mode creates no data dir (store.db.Store): a web server without one has
        # nowhere to keep a secret, and servers behind one load balancer must share theirs.
        raise MissingSecret(
            f"{env} is not set and there is no data directory ({data_dir}) to keep {name} in: "
            f"set {env} (the same value on every web server), or give the server a data dir")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def token_secret(data_dir: Path) -> bytes:
    return _secret_file(data_dir, "token.secret", "RENKEI_TOKEN_SECRET")


def session_secret(data_dir: Path) -> bytes:
    return _secret_file(data_dir, "session.secret", "RENKEI_SECRET_KEY")


def token_hash(secret: bytes, token: str) -> str:
    return hmac.new(secret, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


# -- users and memberships -----------------------------------------------------------------------

def normalize_email(email: str) -> str:
    email = (email or "").strip()
    if "@" not in email or len(email) > 320 or any(c.isspace() for c in email):
        raise AccountError(f"not an e-mail address: {email!r}")
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise AccountError("a password needs at least 10 characters")
    return _hasher.hash(password)


def add_user(session, email: str, password: str | None, *, org: str | None = None,
             role: str | None = None, sysadmin: bool = False) -> User:
    email = normalize_email(email)
    if org is not None and role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email)
        session.add(user)
    if password is not None:
        user.password_hash = hash_password(password)
    user.is_sysadmin = user.is_sysadmin or sysadmin
    session.flush()
    if org is not None:
        m = session.get(Membership, (user.id, org))
        if m is None:
            session.add(Membership(user_id=user.id, organization_id=org, role=role))
        else:
            m.role = role
    return user


def preregister_oidc(session, email: str, issuer: str, subject: str | None = None) -> User:
    """Let the account of `email` (made if missing, without a password) be claimed by the
    first sign-in from `issuer` that carries this e-mail address as verified (oidc_user); with
    `subject`, bind it now (for providers that never say email_verified)."""
    user = add_user(session, email, None)
    if user.oidc_subject is not None and (user.oidc_issuer, user.oidc_subject) != \
            (issuer, subject or user.oidc_subject):
        raise AccountError(f"{user.email} is already linked to another identity")
    if subject is not None:
        other = session.scalar(select(User).where(User.oidc_issuer == issuer,
                                                  User.oidc_subject == subject))
        if other is not None and other.id != user.id:
            raise AccountError(f"that subject already signs in as {other.email}")
        user.oidc_subject = subject
    user.oidc_issuer = issuer
    return user


class OidcRefused(AccountError):
    """A valid ID token that no account may take; `reason` is for the server log only."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def oidc_user(session, issuer: str, subject: str, email: str | None, email_verified: bool,
              *, allow_new: bool = False) -> tuple[User, str]:
    """The account an ID token (already verified: signature, iss, aud, exp, nonce) signs in
    as, and what happened: "known", "linked" or "created". The rule (README, Sign-in):

    1. the account bound to (issuer, subject), whatever its e-mail is now;
    2. else the account of the token's e-mail, only if the operator pre-registered it for this
       issuer (`renkei user add EMAIL --oidc`) and the provider says email_verified: true —
       the subject is bound then, and later sign-ins go by rule 1;
    3. else, only when the operator allowed it (RENKEI_OIDC_NEW_ACCOUNTS), a new account with
       no password and no membership for a verified e-mail that no account holds;
    4. else refused: a local account is never taken over on an e-mail alone.
    """
    bound = session.scalar(select(User).where(User.oidc_issuer == issuer,
                                              User.oidc_subject == subject))
    if bound is not None:
        if bound.state != "active":
            raise OidcRefused("account disabled")
        return bound, "known"
    if not (email and email_verified is True):
        raise OidcRefused("no bound account and no verified e-mail")
    try:
        email = normalize_email(email)
    except AccountError:
        raise OidcRefused("the e-mail claim is not an address") from None
    holder = session.scalar(select(User).where(User.email == email))
    if holder is not None:
        if holder.oidc_issuer != issuer or holder.oidc_subject is not None:
            raise OidcRefused("the e-mail belongs to an account not pre-registered for "
                              "this provider")
        if holder.state != "active":
            raise OidcRefused("account disabled")
        holder.oidc_subject = subject
        return holder, "linked"
    if not allow_new:
        raise OidcRefused("unknown e-mail and new accounts are not allowed")
    user = User(email=email, oidc_issuer=issuer, oidc_subject=subject)
    session.add(user)
    session.flush()
    return user, "created"


def check_password(session, email: str, password: str) -> User | None:
    """The user, or None; an unknown e-mail costs one argon2 verification like a known one."""
    try:
        email = normalize_email(email)
    except AccountError:
        email = ""
    user = session.scalar(select(User).where(User.email == email)) if email else None
    stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.password_hash or user.state != "active":
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def roles_of(session, user_id: int) -> dict[str, str]:
    return dict(session.execute(select(Membership.organization_id, Membership.role)
                                .where(Membership.user_id == user_id)).all())


# -- tokens --------------------------------------------------------------------------------------

@dataclass
class NewToken:
    token: str          # shown once, never stored
    record: ApiToken


def create_token(session, secret: bytes, email: str, *, name: str = "", scope: str = "read",
                 days: int | None = DEFAULT_TOKEN_DAYS) -> NewToken:
    if scope not in SCOPES:
        raise AccountError(f"scope must be one of {', '.join(SCOPES)}")
    if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
        raise AccountError(f"expiry must be between 1 and {MAX_TOKEN_DAYS} days")
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise AccountError(f"no user {email!r}")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(user_id=user.id, name=name, token_hash=token_hash(secret, raw),
                      display_prefix=raw[:DISPLAY_CHARS], scope=scope,
                      expires_at=utcnow() + timedelta(days=days) if days else None)
    session.add(record)
    session.flush()
    return NewToken(raw, record)


def revoke_token(session, token_id: int, *, email: str | None = None) -> ApiToken:
    record = session.get(ApiToken, token_id)
    if record is None or (email is not None and session.get(User, record.user_id).email
                          != normalize_email(email)):
        raise AccountError(f"no token {token_id}" + (f" of {email}" if email else ""))
    record.revoked_at = record.revoked_at or utcnow()
    return record


@dataclass
class TokenHolder:
    """What a request needs of a live token: who holds it, their roles, its scope."""
    token_id: int
    scope: str
    user_id: int
    email: str
    is_sysadmin: bool
    roles: dict


@lru_cache(maxsize=1)
def _token_query():
    # Built once: constructing the joined SELECT costs more than running it (auth_bench).
    t, u, m = ApiToken.__table__, User.__table__, Membership.__table__
    return (select(t.c.id, t.c.scope, t.c.expires_at, t.c.revoked_at, t.c.last_used_at,
                   u.c.id, u.c.email, u.c.is_sysadmin, u.c.state, m.c.organization_id, m.c.role)
            .select_from(t.join(u, u.c.id == t.c.user_id).outerjoin(m, m.c.user_id == u.c.id))
            .where(t.c.token_hash == bindparam("hash")))


def resolve_token(engine, secret: bytes, raw: str) -> TokenHolder | None:
    """The live token of `raw`, for every request: one SQL statement (token, user and memberships joined)
    without an ORM session, since it runs before each view; None for unknown, revoked,
    expired or a disabled user. Nothing is cached, so a revocation counts from the next
    request in every worker."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    t = ApiToken.__table__
    with engine.connect() as conn:
        rows = conn.execute(_token_query(), {"hash": token_hash(secret, raw)}).all()
    if not rows:
        return None
    tid, scope, expires, revoked, last_used, uid, email, sysadmin, state = rows[0][:9]
    now = utcnow()
    if revoked is not None or (expires is not None and expires <= now) or state != "active":
        return None
    if last_used is None or now - last_used > LAST_USE_GRANULARITY:
        with engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == tid).values(last_used_at=now))
    return TokenHolder(tid, scope, uid, email, bool(sysadmin),
                       {org: role for *_, org, role in rows if org is not None})


# -- audit ---------------------------------------------------------------------------------------

def audit(session, principal, action: str, object_type: str, object_id: str | None, *,
          organization_id: str | None = None, before: str | None = None,
          after: str | None = None, **detail) -> None:
    session.add(AuditEvent(
        user_id=principal.user_id, user_email=principal.email, token_id=principal.token_id,
        via=principal.via, action=action, object_type=object_type, object_id=object_id,
        organization_id=organization_id, access_before=before, access_after=after,
        detail=detail or None))
