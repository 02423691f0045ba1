"""Who did what, for those who answer for it: `/organizations/<id>/audit` (the organization's
admins and sysadmins: every write with who, token or session, when, and the access level
before and after), `/organizations/<id>/members` (its admins add, re-role and remove members)
and `/admin` (sysadmins: users, organizations, sources)."""
from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length
from sqlalchemy import func, select

from catalog import auth
from catalog.i18n import _, lazy_gettext
from catalog.pages.common import _store
from store import access, accounts
from store.db import Dataset, Organization, Source

bp = Blueprint("admin", __name__)
AUDIT_PAGE = 100


def _administered(s, p, org_id: str) -> Organization:
    """The organization, for its admins (and sysadmins); 404 for everyone else: to whoever is
    not an admin there, its admin pages do not exist."""
    org = s.get(Organization, org_id)
    if org is None or not access.can_admin(p, org_id):
        abort(404)
    return org


@bp.route("/organizations/<org_id>/audit")
@auth.signed_in_required
def audit(org_id: str):
    p = auth.principal()
    store = _store()
    with store.session() as s:
        org = _administered(s, p, org_id)
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
@auth.signed_in_required
def admin():
    p = auth.principal()
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


ROLE_LABELS = {"member": lazy_gettext("メンバー（閲覧）"), "editor": lazy_gettext("編集者"),
               "admin": lazy_gettext("管理者")}


class MemberForm(FlaskForm):
    email = EmailField(lazy_gettext("メールアドレス"), validators=[DataRequired(), Length(max=320)])
    role = SelectField(lazy_gettext("役割"),
                       choices=[SelectChoice(k, v) for k, v in ROLE_LABELS.items()])
    remove = HiddenField()


@bp.route("/organizations/<org_id>/members", methods=["GET", "POST"])
@auth.signed_in_required
def members(org_id: str):
    """An organization's admins manage its members. A member must have an account already
    (`renkei user add`); an admin cannot remove or demote themselves (someone must remain)."""
    p = auth.principal()
    store = _store()
    with store.session() as s:
        org = _administered(s, p, org_id)
        form = MemberForm()
        error = None
        if form.validate_on_submit():
            email = accounts.normalize_email(form.email.data) if "@" in form.email.data else ""
            user = s.scalar(select(accounts.User).where(accounts.User.email == email))
            if user is None:
                error = _("そのメールアドレスの利用者はいません。先に利用者を登録してください。")
            elif user.id == p.user_id:
                error = _("自分自身の役割は変更できません。")
            else:
                m = s.get(accounts.Membership, (user.id, org_id))
                before = m.role if m else None
                if form.remove.data == "1":
                    if m is not None:
                        s.delete(m)
                    after = None
                else:
                    if m is None:
                        s.add(accounts.Membership(user_id=user.id, organization_id=org_id,
                                                  role=form.role.data))
                    else:
                        m.role = form.role.data
                    after = form.role.data
                accounts.audit(s, p, "membership", "user", user.email, organization_id=org_id,
                               role_before=before, role_after=after)
                s.commit()
                return redirect(url_for("admin.members", org_id=org_id), code=303)
        rows = s.execute(select(accounts.User.email, accounts.Membership.role)
                         .join(accounts.Membership,
                               accounts.Membership.user_id == accounts.User.id)
                         .where(accounts.Membership.organization_id == org_id)
                         .order_by(accounts.User.email)).all()
        return render_template("members.html", org=org, rows=rows, form=form, error=error,
                               role_labels=ROLE_LABELS), 400 if error else 200
