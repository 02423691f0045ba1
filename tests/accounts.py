"""Accounts for tests, made through the same store functions the CLI uses (no shortcuts)."""
from __future__ import annotations

from pathlib import Path

from store import accounts
from store.db import Organization, Store

PASSWORD = "correct horse battery staple"


def add_org(store: Store, slug: str, name_ja: str, code: str | None = None) -> None:
    with store.session() as s, s.begin():
        org = s.get(Organization, slug) or Organization(id=slug, name_ja=name_ja)
        org.code = code
        s.add(org)


def add_user(store: Store, email: str, *, org: str | None = None, role: str | None = None,
             sysadmin: bool = False) -> None:
    with store.session() as s, s.begin():
        accounts.add_user(s, email, PASSWORD, org=org, role=role, sysadmin=sysadmin)


def token(store: Store, email: str, scope: str = "read", days: int | None = 30) -> str:
    with store.session() as s, s.begin():
        return accounts.create_token(s, accounts.token_secret(store.data_dir), email,
                                     scope=scope, days=days).token


def sysadmin_headers(data_dir: Path | str) -> dict[str, str]:
    """An `Authorization` header of a fresh sysadmin's read token (staff pages in tests)."""
    store = Store(data_dir)
    email = "operator@pref.hyogo.example"
    add_user(store, email, sysadmin=True)
    return {"Authorization": "Bearer " + token(store, email)}
