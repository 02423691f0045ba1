"""Who did what, for those who answer for it: `/organizations/<id>/audit` (the organization's
admins and sysadmins: every write with who, token or session, when, and the access level
before and after) and `/admin` (sysadmins: users, organizations, sources)."""
from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from sqlalchemy import func, select

from catalog import auth
from catalog.i18n import _
from catalog.pages.common import _store
from store import access, accounts
from store.db import Dataset, Organization, Source

bp = Blueprint("admin", __name__)
AUDIT_PAGE = 100


@bp.route("/organizations/<org_id>/audit")
def audit(org_id: str):
    p = auth.principal()
    if not p.signed_in:
        return auth.login_manager.unauthorized()
    store = _store()
    with store.session() as s:
        org = s.get(Organization, org_id)
        if org is None or not access.can_admin(p, org_id):
            abort(404)   # not an admin there: the page does not exist for them
        try:
            page = max(1, int(request.args.get("page") or 1))
        except ValueError:
            abort(400, description=_("ページ番号は数字で指定してください。"))
        events = list(s.scalars(
            select(accounts.AuditEvent).where(accounts.AuditEvent.organization_id == org_id)
            .order_by(accounts.AuditEvent.id.desc())
            .offset((page - 1) * AUDIT_PAGE).limit(AUDIT_PAGE + 1)))
        return render_template("audit.html", org=org, events=events[:AUDIT_PAGE],
                               more=len(events) > AUDIT_PAGE, page=page)


@bp.route("/admin")
def admin():
    p = auth.principal()
    if not p.signed_in:
        return auth.login_manager.unauthorized()
    if not p.is_sysadmin:
        abort(404)
    store = _store()
    with store.session() as s:
        users = list(s.scalars(select(accounts.User).order_by(accounts.User.email)))
        roles = {}
        for m in s.scalars(select(accounts.Membership)):
            roles.setdefault(m.user_id, []).append((m.organization_id, m.role))
        counts = dict(s.execute(select(Dataset.organization_id, func.count()).where(
            Dataset.status == "active").group_by(Dataset.organization_id)).all())
        orgs = list(s.scalars(select(Organization).order_by(Organization.id)))
        sources = list(s.scalars(select(Source).order_by(Source.name)))
        return render_template("admin.html", users=users, roles=roles, orgs=orgs,
                               counts=counts, sources=sources)
