"""The one authorization rule: who may read a dataset, who may write one.

A dataset carries one access label, like CKAN's permission labels:
- `public`                → everyone;
- `members`               → any signed-in member (any role) of any organization;
- `org:<organization id>` → members (any role) of the owning organization (CKAN's private).
A caller holds a set of labels; sysadmins hold all of them. `can_read` is the rule for one
record; `read_filter` is the same rule as a SQL condition (lists, counts, facets); `labels`
is the same rule for the search arrays and the per-caller OGC API. Every read path calls one
of these three, nothing else decides.

A caller who may not read a dataset must not learn it exists: read paths answer 404.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import and_, or_, true

from store.db import Dataset

LEVELS = ("public", "members", "organization")
PUBLIC, MEMBERS = "public", "members"
ROLES_ANY = ("member", "editor", "admin")
WRITE_ROLES = ("editor", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is asking. `via` is session, token, cli or anonymous; `scope` limits a token."""
    user_id: int | None = None
    email: str | None = None
    is_sysadmin: bool = False
    roles: dict[str, str] = field(default_factory=dict)   # organization id → role
    via: str = "anonymous"
    token_id: int | None = None
    scope: str = "write"

    @property
    def signed_in(self) -> bool:
        return self.user_id is not None

    @property
    def is_member(self) -> bool:
        return self.is_sysadmin or bool(self.roles)


ANONYMOUS = Principal()


def normalize_level(level: str | None, private=None) -> str:
    """A package dict's access: `access_level` wins; `private: true` alone is `organization`."""
    if level:
        if level not in LEVELS:
            raise ValueError(f"access_level must be one of {', '.join(LEVELS)}")
        return level
    if private in (True, "true", "True", "1", 1):
        return "organization"
    return PUBLIC


def dataset_label(access_level: str | None, organization_id: str | None) -> str:
    level = access_level or PUBLIC
    if level == PUBLIC:
        return PUBLIC
    if level == MEMBERS:
        return MEMBERS
    return f"org:{organization_id}"


def labels(p: Principal) -> frozenset[str] | None:
    """The labels the caller holds; None means every label (sysadmin)."""
    if p.is_sysadmin:
        return None
    if not p.roles:
        return frozenset((PUBLIC,))
    return frozenset([PUBLIC, MEMBERS] + [f"org:{o}" for o in p.roles])


def can_read(p: Principal, ds) -> bool:
    """`ds` is a Dataset, or anything with access_level and organization_id."""
    held = labels(p)
    return held is None or dataset_label(ds.access_level, ds.organization_id) in held


def read_filter(p: Principal, model=Dataset):
    """can_read as a SQL condition on `model` (Dataset)."""
    if p.is_sysadmin:
        return true()
    return _read_filter(model, tuple(sorted(p.roles)))


@lru_cache(maxsize=1024)
def _read_filter(model, orgs: tuple[str, ...]):
    # Built once per set of organizations: building the expression costs more than the query
    # it filters (bench/auth_bench.py); SQLAlchemy expressions are immutable, so sharing is safe.
    conds = [model.access_level == PUBLIC]
    if orgs:
        conds.append(model.access_level == MEMBERS)
        conds.append(and_(model.access_level == "organization",
                          model.organization_id.in_(orgs)))
    return or_(*conds) if len(conds) > 1 else conds[0]


def role_in(p: Principal, organization_id: str | None) -> str | None:
    if p.is_sysadmin:
        return "admin"
    return p.roles.get(organization_id) if organization_id else None


def can_write(p: Principal, organization_id: str | None) -> bool:
    """Create, update and delete the organization's datasets (editor, admin, sysadmin), with a
    token of scope write or a session."""
    if p.via == "token" and p.scope != "write":
        return False
    return role_in(p, organization_id) in WRITE_ROLES


def can_make_public(p: Principal, organization_id: str | None) -> bool:
    """Only an organization admin decides what becomes public (CKAN #3837, #5889)."""
    return can_write(p, organization_id) and role_in(p, organization_id) == "admin"


def can_admin(p: Principal, organization_id: str | None) -> bool:
    return role_in(p, organization_id) == "admin"


def staff_organizations(p: Principal) -> list[str] | None:
    """Organizations whose sources and jobs the caller sees on staff pages; None = all."""
    return None if p.is_sysadmin else sorted(p.roles)

