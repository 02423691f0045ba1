"""`renkei user|org|token …`: bootstrap accounts from the command line (who runs the server
may create them). Secrets are printed once, to standard output, and never stored in clear."""
from __future__ import annotations

import re
import secrets
import sys

from sqlalchemy import select

from store import accounts
from store import terms
from store.access import Principal
from store.db import Organization, Store

CLI = Principal(via="cli")


def _fail(message: str) -> int:
    print(f"renkei: {message}", file=sys.stderr)
    return 2


def cmd_user_add(args) -> int:
    if (args.org is None) != (args.role is None):
        return _fail("--org and --role go together")
    if getattr(args, "oidc_subject", None) and not args.oidc:
        return _fail("--oidc-subject goes with --oidc")
    if getattr(args, "oidc", False):
        return _user_add_oidc(args)
    generated = None
    if sys.stdin.isatty():
        generated = secrets.token_urlsafe(15)
        password = generated
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    store = Store(args.data_dir, make_dir=False)
    try:
        with store.session() as s, s.begin():
            if args.org is not None and s.get(Organization, args.org) is None:
                raise accounts.AccountError(
                    f"no organization {args.org!r}: harvest its source or `renkei org add` it")
            user = accounts.add_user(s, args.email, password, org=args.org, role=args.role,
                                     sysadmin=args.sysadmin)
            accounts.audit(s, CLI, "user_add", "user", user.email, organization_id=args.org,
                           role=args.role, sysadmin=args.sysadmin)
            email = user.email
    except accounts.AccountError as exc:
        return _fail(str(exc))
    where = f" ({args.role} of {args.org})" if args.org else ""
    print(f"user {email}{where}{' sysadmin' if args.sysadmin else ''}", file=sys.stderr)
    if generated:
        print(f"password (shown once): {generated}")
    return 0


def _user_add_oidc(args) -> int:
    import os
    issuer = (os.environ.get("RENKEI_OIDC_ISSUER") or "").strip()
    if not issuer:
        return _fail("--oidc needs RENKEI_OIDC_ISSUER (the identity provider's issuer URL)")
    store = Store(args.data_dir, make_dir=False)
    try:
        with store.session() as s, s.begin():
            if args.org is not None and s.get(Organization, args.org) is None:
                raise accounts.AccountError(
                    f"no organization {args.org!r}: harvest its source or `renkei org add` it")
            user = accounts.preregister_oidc(s, args.email, issuer,
                                             getattr(args, "oidc_subject", None))
            accounts.add_user(s, user.email, None, org=args.org, role=args.role,
                              sysadmin=args.sysadmin)
            accounts.audit(s, CLI, "user_add", "user", user.email, organization_id=args.org,
                           role=args.role, sysadmin=args.sysadmin, oidc_issuer=issuer)
            email = user.email
    except accounts.AccountError as exc:
        return _fail(str(exc))
    print(f"user {email} signs in through {issuer}", file=sys.stderr)
    return 0


def cmd_org_add(args) -> int:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{1,99}", args.slug):
        return _fail("an organization slug is lower-case letters, digits, - and _")
    if args.code and not re.fullmatch(r"\d{6}", args.code):
        return _fail("--code is the 6-digit 全国地方公共団体コード")
    store = Store(args.data_dir, make_dir=False)
    with store.session() as s, s.begin():
        org = s.get(Organization, args.slug) or Organization(id=args.slug)
        s.add(org)
        org.name_ja, org.kind = args.name_ja, args.kind
        org.name_en = args.name_en or org.name_en
        org.code = args.code or org.code
        if args.upload_limit_mb:
            org.upload_limit = args.upload_limit_mb * 1024 * 1024
        accounts.audit(s, CLI, "organization_add", "organization", args.slug,
                       organization_id=args.slug)
    print(f"organization {args.slug} {args.name_ja}", file=sys.stderr)
    return 0


def cmd_token_create(args) -> int:
    # A data dir even in PostgreSQL mode: without RENKEI_TOKEN_SECRET the key lives there.
    store = Store(args.data_dir)
    version = terms.current(store).version   # who runs the CLI accepts it
    try:
        with store.session() as s, s.begin():
            new = accounts.create_token(s, accounts.token_secret(store.data_dir), args.email,
                                        name=args.name, scope=args.scope, days=args.expires)
            terms.record_token(s, new.record.id, version)
            accounts.audit(s, CLI, "token_create", "token", str(new.record.id),
                           scope=args.scope, user=args.email, terms_version=version)
            record = new.record
    except accounts.AccountError as exc:
        return _fail(str(exc))
    print(f"token {record.id} ({record.scope}, expires {record.expires_at:%Y-%m-%d}) "
          f"for {args.email}; shown once:", file=sys.stderr)
    print(new.token)
    return 0


def cmd_token_list(args) -> int:
    store = Store(args.data_dir, make_dir=False)
    with store.session() as s:
        user = s.scalar(select(accounts.User).where(
            accounts.User.email == accounts.normalize_email(args.email)))
        if user is None:
            return _fail(f"no user {args.email!r}")
        print(f"{'id':>5} {'prefix':14} {'scope':6} {'expires':11} {'last use':17} state  name")
        for t in s.scalars(select(accounts.ApiToken).where(accounts.ApiToken.user_id == user.id)
                           .order_by(accounts.ApiToken.id)):
            state = "revoked" if t.revoked_at else ("expired" if t.expires_at and
                                                    t.expires_at <= accounts.utcnow() else "live")
            expires = f"{t.expires_at:%Y-%m-%d}" if t.expires_at else "-"
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-"
            print(f"{t.id:>5} {t.display_prefix:14} {t.scope:6} {expires:11} {used:17} "
                  f"{state:6} {t.name}")
    return 0


def cmd_token_revoke(args) -> int:
    store = Store(args.data_dir, make_dir=False)
    try:
        with store.session() as s, s.begin():
            record = accounts.revoke_token(s, args.token_id)
            accounts.audit(s, CLI, "token_revoke", "token", str(record.id))
    except accounts.AccountError as exc:
        return _fail(str(exc))
    print(f"token {args.token_id} revoked", file=sys.stderr)
    return 0
