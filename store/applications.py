"""The 申請窓口: applications to join, their decisions, and invitations (udata's request states).

Kinds: `organization` (a body joins the platform), `membership` (a person joins an existing
organization), `api_key` (a data user asks for a key to `members` data), `invitation` (an
organization admin — or the acceptance of an organization — invites a person by e-mail).
States: pending → accepted | refused (a reason is required) | canceled (by the applicant);
an accepted source → retired (the operator stops harvesting it; what it published stays).

Each application has a private link (an unguessable token; only its SHA-256 is stored) at which
the applicant sees its status; an invitation's link is where the invitee sets a password.
Decisions return `Notice`s (who to mail, what to say); sending them is the caller's job.
Accepting an organization creates it, records its participation (population, terms version)
and invites its first admin in the same transaction.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from geo import lgcodes
from store import accounts
from store import terms as terms_store
from store.access import can_admin
from store.base import Base, utcnow
from store.db import Organization

KINDS = ("organization", "membership", "api_key", "invitation", "source")
SOURCE_TYPES = ("ckan", "ngsi-v2", "ngsi-ld", "ogcapi")   # remote sources; `files` are local
VALIDATED_DIR = "sources.d"   # accepted sources, one sources.yaml document each (harvest reads)
STATES = ("pending", "accepted", "refused", "canceled", "retired")
ORG_KINDS = ("prefecture", "municipality", "partner", "company")
CODE_KINDS = ("prefecture", "municipality")   # bodies that have a 全国地方公共団体コード
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{1,99}")


class Application(Base):
    __tablename__ = "application"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    organization_id: Mapped[str | None] = mapped_column(String(100), index=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(Text, default="")          # the applicant's name
    role: Mapped[str | None] = mapped_column(String(20))          # membership, invitation
    payload: Mapped[dict] = mapped_column(JSON, default=dict)    # kind-specific fields
    terms_version: Mapped[str | None] = mapped_column(String(40))
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str | None] = mapped_column(Text)             # why refused, or retired
    handled_by: Mapped[str | None] = mapped_column(String(320))
    handled_at: Mapped[datetime | None] = mapped_column(DateTime)
    token_id: Mapped[int | None] = mapped_column(Integer)        # api_key: the key issued
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Participation(Base):
    """An organization's membership of the platform: what the fee rule needs about it."""
    __tablename__ = "participation"
    organization_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    population: Mapped[int | None] = mapped_column(Integer)
    terms_version: Mapped[str | None] = mapped_column(String(40))
    joined_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApplicationError(ValueError):
    """A request the window refuses; the message is for the person who asked."""


@dataclass
class Notice:
    to: str
    subject: str
    body: str


@dataclass
class Created:
    application: Application
    link: str            # the raw private token, known only now


def link_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def check_lg_code(code: str) -> str:
    """A 全国地方公共団体コード that names a real local government: format and check digit (JIS
    X 0402 + 総務省の検査数字: the sum of the first five digits weighted 6,5,4,3,2, taken modulo 11,
    subtracted from 11; the last digit of that is the sixth digit), then the official list
    (geo.lgcodes, package data)."""
    code = (code or "").strip()
    if not re.fullmatch(r"\d{6}", code):
        raise ApplicationError("全国地方公共団体コードは6桁の数字です / the local government code "
                               "has 6 digits")
    total = sum(int(d) * w for d, w in zip(code[:5], (6, 5, 4, 3, 2)))
    if (11 - total % 11) % 10 != int(code[5]):
        raise ApplicationError("全国地方公共団体コードの検査数字が合いません / the check digit of the "
                               "local government code is wrong")
    if lgcodes.by_code(code) is None:
        raise ApplicationError("全国地方公共団体コードの一覧にないコードです / the code is not in the "
                               "list of local government codes")
    return code


def _new(session, **fields) -> Created:
    raw = secrets.token_urlsafe(32)
    app = Application(link_hash=link_hash(raw), **fields)
    session.add(app)
    session.flush()
    return Created(app, raw)


def _pending_twice(session, kind: str, email: str, organization_id: str | None) -> bool:
    stmt = select(Application.id).where(Application.kind == kind, Application.email == email,
                                        Application.status == "pending")
    if organization_id is not None:
        stmt = stmt.where(Application.organization_id == organization_id)
    return session.scalar(stmt) is not None


def apply_organization(session, *, slug: str, name_ja: str, name_en: str | None, kind: str,
                       code: str | None, population: int | None, email: str, contact: str,
                       terms_version: str) -> Created:
    email = accounts.normalize_email(email)
    if not SLUG.fullmatch(slug or ""):
        raise ApplicationError("英字の略称は小文字の英字・数字・-・_ で2文字以上です / the short name "
                               "is lower-case letters, digits, - and _")
    if kind not in ORG_KINDS:
        raise ApplicationError(f"kind must be one of {', '.join(ORG_KINDS)}")
    if not (name_ja or "").strip():
        raise ApplicationError("団体名を入力してください / enter the organization's name")
    if code:
        code = check_lg_code(code)
    elif kind in CODE_KINDS:
        raise ApplicationError("地方公共団体は全国地方公共団体コードを入力してください / a local "
                               "government gives its code")
    if population is not None and population < 0:
        raise ApplicationError("人口は0以上の数です / population is ≥ 0")
    if session.get(Organization, slug) is not None or session.scalar(
            select(Application.id).where(Application.kind == "organization",
                                         Application.status == "pending",
                                         Application.organization_id == slug)):
        raise ApplicationError("その英字の略称はすでに使われています / that short name is taken")
    if code and session.scalar(select(Organization.id).where(Organization.code == code)):
        raise ApplicationError("その団体はすでに参加しています / that body has already joined")
    return _new(session, kind="organization", organization_id=slug, email=email, name=contact,
                terms_version=terms_version,
                payload={"name_ja": name_ja.strip(), "name_en": (name_en or "").strip() or None,
                         "kind": kind, "code": code or None, "population": population})


def apply_membership(session, *, organization_id: str, email: str, name: str, comment: str,
                     terms_version: str) -> Created:
    email = accounts.normalize_email(email)
    if session.get(Organization, organization_id) is None:
        raise ApplicationError("その組織はありません / no such organization")
    if not (comment or "").strip():
        raise ApplicationError("申請の理由を書いてください / say why you ask to join")
    if _pending_twice(session, "membership", email, organization_id):
        raise ApplicationError("同じ申請が審査中です / the same request is already pending")
    return _new(session, kind="membership", organization_id=organization_id, email=email,
                name=name, role="member", terms_version=terms_version,
                payload={"comment": comment.strip()})


def apply_api_key(session, *, email: str, name: str, company: str, purpose: str,
                  terms_version: str) -> Created:
    email = accounts.normalize_email(email)
    if not (purpose or "").strip() or not (company or "").strip():
        raise ApplicationError("利用者名と利用目的を書いてください / give your company and purpose")
    if _pending_twice(session, "api_key", email, None):
        raise ApplicationError("同じ申請が審査中です / the same request is already pending")
    return _new(session, kind="api_key", email=email, name=name, terms_version=terms_version,
                payload={"company": company.strip(), "purpose": purpose.strip()})


def invite(session, *, organization_id: str, email: str, role: str, by: str,
           terms_version: str | None = None) -> Created:
    email = accounts.normalize_email(email)
    if role not in accounts.ROLES:
        raise ApplicationError(f"role must be one of {', '.join(accounts.ROLES)}")
    return _new(session, kind="invitation", organization_id=organization_id, email=email,
                role=role, terms_version=terms_version, payload={"invited_by": by})


def propose_source(session, *, organization_id: str, email: str, name: str, type_: str,
                   url: str, terms_version: str) -> Created:
    """An organization proposes a harvest source: pending until the operator validates it;
    only then does `renkei harvest` read it (`validated_sources`)."""
    email = accounts.normalize_email(email)
    if not SLUG.fullmatch(name or ""):
        raise ApplicationError("収集元の名前は小文字の英字・数字・-・_ です / a source name is "
                               "lower-case letters, digits, - and _")
    if type_ not in SOURCE_TYPES:
        raise ApplicationError(f"type must be one of {', '.join(SOURCE_TYPES)}")
    if not re.fullmatch(r"https?://[^\s]{1,2000}", url or ""):
        raise ApplicationError("収集元のURLは http(s):// で始まります / the URL starts with http(s)://")
    if session.scalar(select(Application.id).where(
            Application.kind == "source", Application.status.in_(("pending", "accepted")),
            Application.payload["name"].as_string() == name)):
        raise ApplicationError("その名前の収集元はすでにあります / a source of that name exists")
    return _new(session, kind="source", organization_id=organization_id, email=email,
                terms_version=terms_version,
                payload={"name": name, "type": type_, "url": url})


def source_document(app: Application) -> dict:
    """An accepted source as a sources.yaml document of its own (harvest checks it as any)."""
    p = app.payload
    entry = {"name": p["name"], "type": p["type"], "url": p["url"],
             "organization": app.organization_id}
    if p.get("allow_private_networks"):   # the operator's choice when accepting, never the form's
        entry["allow_private_networks"] = True
    return {"sources": [entry]}


def validated_sources(session) -> list[tuple[str, dict]]:
    """PostgreSQL mode: the accepted sources, as (label, sources.yaml document), from their
    applications; the embedded mode keeps them as files (`write_validated_source`)."""
    rows = session.scalars(select(Application).where(
        Application.kind == "source", Application.status == "accepted").order_by(Application.id))
    return [(f"application {a.id} ({a.payload['name']})", source_document(a)) for a in rows]


def write_validated_source(data_dir, app: Application) -> Path:
    """The embedded mode: the accepted source as a file in `<data dir>/sources.d/`."""
    import yaml
    folder = Path(data_dir) / VALIDATED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    doc = source_document(app)
    path = folder / f"{app.payload['name']}.yaml"
    tmp = path.with_suffix(".yaml.part")
    tmp.write_text(f"# validated by {app.handled_by} at {app.handled_at:%Y-%m-%d %H:%M} UTC "
                   f"(application {app.id})\n" + yaml.safe_dump(doc, allow_unicode=True),
                   encoding="utf-8")
    tmp.rename(path)
    return path


def remove_validated_source(data_dir, name: str) -> bool:
    """The embedded mode: the accepted source's file gone (an operator may have removed it
    by hand already); True if there was one."""
    path = Path(data_dir) / VALIDATED_DIR / f"{name}.yaml"
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def find_by_link(session, raw: str) -> Application | None:
    if not raw or len(raw) > 100:
        return None
    return session.scalar(select(Application).where(Application.link_hash == link_hash(raw)))


def may_decide(principal, app: Application) -> bool:
    """The operator decides everything; an organization's admins decide its member requests."""
    if principal.is_sysadmin:
        return True
    return app.kind == "membership" and can_admin(principal, app.organization_id)


def listing(session, principal, status: str | None = None) -> list[Application]:
    stmt = select(Application).where(Application.kind != "invitation").order_by(
        Application.id.desc())
    if status:
        stmt = stmt.where(Application.status == status)
    return [a for a in session.scalars(stmt) if may_decide(principal, a)]


def _mark(app: Application, status: str, by: str, reason: str | None = None) -> None:
    if app.status != "pending":
        raise ApplicationError(f"申請 {app.id} はすでに「{app.status}」です / application {app.id} "
                               f"is already {app.status}")
    app.status, app.handled_by, app.handled_at, app.reason = status, by, utcnow(), reason


def _slug_for_company(session, company: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", company.lower()).strip("-")[:40] or "company"
    slug, n = base if len(base) > 1 else f"company-{base}", 1
    while session.get(Organization, slug) is not None and not _is_company_named(
            session, slug, company):
        n += 1
        slug = f"{base}-{n}"
    return slug


def _is_company_named(session, slug: str, company: str) -> bool:
    org = session.get(Organization, slug)
    return org is not None and org.kind == "company" and org.name_ja == company


def _ensure_member(session, email: str, organization_id: str, role: str) -> None:
    """A user without password (until an invitation sets one) with the given membership."""
    user = session.scalar(select(accounts.User).where(accounts.User.email == email))
    if user is None:
        user = accounts.add_user(session, email, None)
    member = session.get(accounts.Membership, (user.id, organization_id))
    if member is None:
        session.add(accounts.Membership(user_id=user.id, organization_id=organization_id,
                                        role=role))


def accept(session, app_id: int, *, by: str, base_url: str, data_dir=None,
           allow_private_networks: bool = False) -> list[Notice]:
    """Accept one pending application; the notices to mail (the invitation link included).
    A source is written to `data_dir`/sources.d in the embedded mode; in PostgreSQL mode its
    accepted application is what harvests read (a web server has no data dir).
    `allow_private_networks` validates a source on an intranet (the harvest's SSRF guard
    otherwise refuses its address)."""
    app = session.get(Application, app_id)
    if app is None or app.kind == "invitation":
        raise ApplicationError(f"申請 {app_id} はありません / no application {app_id}")
    if allow_private_networks:
        if app.kind != "source":
            raise ApplicationError(f"application {app_id} is not a source: "
                                   "--allow-private-networks is for sources")
        app.payload = {**app.payload, "allow_private_networks": True}
    _mark(app, "accepted", by)
    notices = [_decided_notice(app, base_url)]
    if app.kind == "organization":
        p = app.payload
        session.add(Organization(id=app.organization_id, name_ja=p["name_ja"],
                                 name_en=p.get("name_en"), kind=p["kind"], code=p.get("code")))
        session.add(Participation(organization_id=app.organization_id,
                                  population=p.get("population"),
                                  terms_version=app.terms_version))
        created = invite(session, organization_id=app.organization_id, email=app.email,
                         role="admin", by=by, terms_version=app.terms_version)
        notices.append(invitation_notice(created, p["name_ja"], base_url))
    elif app.kind == "membership":
        user = session.scalar(select(accounts.User).where(accounts.User.email == app.email))
        if user is not None and user.password_hash:
            _ensure_member(session, app.email, app.organization_id, app.role or "member")
        else:   # no account yet: the invitation link lets them set a password
            org = session.get(Organization, app.organization_id)
            created = invite(session, organization_id=app.organization_id, email=app.email,
                             role=app.role or "member", by=by, terms_version=app.terms_version)
            notices.append(invitation_notice(created, org.name_ja, base_url))
    elif app.kind == "api_key":
        company = app.payload["company"]
        slug = _slug_for_company(session, company)
        if session.get(Organization, slug) is None:
            session.add(Organization(id=slug, name_ja=company, kind="company"))
            session.add(Participation(organization_id=slug, terms_version=app.terms_version))
        session.flush()
        app.organization_id = slug
        _ensure_member(session, app.email, slug, "member")
    elif app.kind == "source" and session.get_bind().dialect.name != "postgresql":
        if data_dir is None:
            raise ApplicationError("a source is validated where its data dir is known")
        write_validated_source(data_dir, app)
    return notices


def refuse(session, app_id: int, *, by: str, reason: str, base_url: str) -> list[Notice]:
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("不承認の理由を書いてください / a refusal needs a reason")
    app = session.get(Application, app_id)
    if app is None or app.kind == "invitation":
        raise ApplicationError(f"申請 {app_id} はありません / no application {app_id}")
    _mark(app, "refused", by, reason)
    return [_decided_notice(app, base_url)]


def retire(session, app_id: int, *, by: str, reason: str | None, base_url: str,
           data_dir=None) -> list[Notice]:
    """Stop harvesting an accepted source: its application becomes `retired` (who, when, why in
    the decision's columns; who accepted it and when move to its payload), and the embedded
    mode's sources.d file goes in the same step, so the next harvest has neither. What the
    source published stays published until the operator withdraws it."""
    app = session.get(Application, app_id)
    if app is None or app.kind != "source" or app.status != "accepted":
        raise ApplicationError(f"申請 {app_id} は承認済みの収集元ではありません / application "
                               f"{app_id} is not an accepted source")
    on_disk = session.get_bind().dialect.name != "postgresql"
    if on_disk and data_dir is None:
        raise ApplicationError("a source is retired where its data dir is known")
    # A new dict: the JSON column sees an assignment, not an in-place change.
    app.payload = {**app.payload, "accepted_by": app.handled_by,
                   "accepted_at": f"{app.handled_at:%Y-%m-%dT%H:%M:%S}Z"
                   if app.handled_at else None}
    app.status, app.handled_by, app.handled_at = "retired", by, utcnow()
    app.reason = (reason or "").strip() or None
    session.flush()
    if on_disk:   # last: a failure above leaves the file, and the source, as they were
        remove_validated_source(data_dir, app.payload["name"])
    return [_decided_notice(app, base_url)]


def cancel(session, app: Application) -> None:
    _mark(app, "canceled", app.email)


def issue_key(session, app: Application, secret: bytes) -> accounts.NewToken:
    """The accepted api_key application's token, made when its holder asks at the private link
    (so the clear token is shown once and never stored or mailed)."""
    if app.kind != "api_key" or app.status != "accepted" or app.token_id is not None:
        raise ApplicationError("このAPIキーは発行済みか、まだ承認されていません / this key was "
                               "already issued or is not accepted yet")
    new = accounts.create_token(session, secret, app.email, name=f"application {app.id}",
                                scope="read")
    terms_store.record_token(session, new.record.id, app.terms_version or "")
    app.token_id = new.record.id
    return new


def accept_invitation(session, app: Application, password: str) -> accounts.User:
    if app.kind != "invitation" or app.status != "pending":
        raise ApplicationError("この招待は使えません / this invitation is no longer valid")
    existing = session.scalar(select(accounts.User).where(accounts.User.email == app.email))
    if existing is not None and existing.password_hash:
        # An invitation link is not a password reset: an account holder proves it is them.
        if accounts.check_password(session, app.email, password) is None:
            raise ApplicationError("すでにアカウントがあります。現在のパスワードを入力してください / "
                                   "you already have an account: enter its password")
        user = existing
    else:
        user = accounts.add_user(session, app.email, password)
    _ensure_member(session, app.email, app.organization_id, app.role or "member")
    member = session.get(accounts.Membership, (user.id, app.organization_id))
    member.role = app.role or member.role
    app.status, app.handled_by, app.handled_at = "accepted", app.email, utcnow()
    return user


# -- what the applicant is told (Japanese first, then English) ----------------------------------

KIND_LABEL = {"organization": ("参加申請", "application to join"),
              "membership": ("組織への加入申請", "request to join an organization"),
              "api_key": ("APIキーの申請", "API key request"),
              "invitation": ("招待", "invitation"),
              "source": ("収集元の提案", "proposed harvest source")}


def received_notice(created: Created, base_url: str) -> Notice:
    app = created.application
    ja, en = KIND_LABEL[app.kind]
    link = f"{base_url}/join/status/{created.link}"
    return Notice(app.email, f"【renkei】{ja}を受け付けました / {en} received",
                  f"{ja}（受付番号 {app.id}）を受け付けました。\n"
                  f"審査の状況は次のページで確認できます（このリンクは他の人に知らせないでください）。\n"
                  f"{link}\n\n"
                  f"We received your {en} (number {app.id}). Its status is at the link above; "
                  f"keep the link private.\n")


def _decided_notice(app: Application, base_url: str) -> Notice:
    ja, en = KIND_LABEL[app.kind]
    if app.status == "accepted":
        body = (f"{ja}（受付番号 {app.id}）は承認されました。\n")
        if app.kind == "api_key":
            body += "受付時にお送りしたリンクから API キーを受け取ってください。\n"
        body += f"\nYour {en} (number {app.id}) was accepted.\n"
        if app.kind == "api_key":
            body += "Collect your API key at the private link we sent when you applied.\n"
        return Notice(app.email, f"【renkei】{ja}は承認されました / {en} accepted", body)
    if app.status == "retired":
        why_ja = f"理由：{app.reason}\n" if app.reason else ""
        why_en = f"Reason: {app.reason}\n" if app.reason else ""
        name = app.payload["name"]
        return Notice(app.email, f"【renkei】収集元 {name} の収集を終了しました / harvest source "
                                 f"{name} retired",
                      f"{ja}（受付番号 {app.id}、{name}）からの収集を終了しました。\n{why_ja}"
                      f"これまでに公開したデータは、取り下げるまで公開されたままです。\n\n"
                      f"The platform no longer harvests your {en} {name} (number {app.id}).\n"
                      f"{why_en}What it already published stays published until it is "
                      f"withdrawn.\n")
    return Notice(app.email, f"【renkei】{ja}の審査結果 / decision on your {en}",
                  f"{ja}（受付番号 {app.id}）は承認されませんでした。\n理由：{app.reason}\n\n"
                  f"Your {en} (number {app.id}) was refused.\nReason: {app.reason}\n")


def invitation_notice(created: Created, org_name: str, base_url: str) -> Notice:
    app = created.application
    link = f"{base_url}/join/invitation/{created.link}"
    return Notice(app.email, f"【renkei】{org_name}への招待 / invitation to {org_name}",
                  f"{org_name}の{app.role}としてrenkeiに招待されました。\n"
                  f"次のリンクでパスワードを設定してください。\n{link}\n\n"
                  f"You are invited to renkei as {app.role} of {org_name}. "
                  f"Set your password at the link above.\n")
