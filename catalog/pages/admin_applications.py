"""/admin/applications: the operator decides every application, an organization's admins its
member requests; organization admins invite people by e-mail. Decisions mail the applicant
(and, for an accepted organization, the invitation of its first admin)."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms.fields.choices import SelectChoice
from wtforms import EmailField, SelectField, TextAreaField
from wtforms.validators import DataRequired, Length

from catalog import auth, mail
from catalog.i18n import _, lazy_gettext
from catalog.pages.join import KIND_LABELS, STATUS_LABELS
from store import access
from store import accounts
from store import applications as apps
from store.db import Organization

bp = Blueprint("admin_applications", __name__)


class DecideForm(FlaskForm):
    reason = TextAreaField(lazy_gettext("不承認の理由（不承認のときは必須）"),
                           validators=[Length(max=2000)])


class InviteForm(FlaskForm):
    organization = SelectField(lazy_gettext("組織"), choices=[])
    email = EmailField(lazy_gettext("招待する人のメールアドレス"),
                       validators=[DataRequired(), Length(max=320)])
    role = SelectField(lazy_gettext("役割"), choices=[
        SelectChoice("member", lazy_gettext("メンバー")),
        SelectChoice("editor", lazy_gettext("編集者")),
        SelectChoice("admin", lazy_gettext("管理者"))])


def _store():
    return current_app.extensions["renkei_store"]


def _admin_orgs(s, p) -> list[tuple[str, str]]:
    orgs = s.scalars(select(Organization).order_by(Organization.id))
    return [SelectChoice(o.id, o.name_ja) for o in orgs if access.can_admin(p, o.id)]


def _page(message=None, error=None, status=200):
    p = auth.principal()
    state = request.args.get("status") or None
    with _store().session() as s:
        rows = apps.listing(s, p, state if state in apps.STATES else None)
        invite = InviteForm()
        invite.organization.choices = _admin_orgs(s, p)
        items = [{"id": a.id, "kind": a.kind, "status": a.status, "email": a.email,
                  "name": a.name, "organization": a.organization_id, "payload": a.payload,
                  "terms_version": a.terms_version, "reason": a.reason,
                  "created_at": a.created_at, "handled_by": a.handled_by} for a in rows]
    return render_template("admin/applications.html", items=items, form=DecideForm(),
                           invite=invite, kinds=KIND_LABELS, states=STATUS_LABELS,
                           message=message, error=error, status_filter=state), status


def _gate():
    denied = auth.staff_required()
    if denied is not None:
        return denied
    return None


@bp.route("/admin/applications")
def applications():
    return _gate() or _page()


@bp.route("/admin/applications/<int:app_id>/<any(accept, refuse):decision>", methods=["POST"])
def decide(app_id: int, decision: str):
    denied = _gate()
    if denied is not None:
        return denied
    form = DecideForm()
    if not form.validate_on_submit():
        return _page(error=_("フォームの有効期限が切れました。もう一度お試しください。"), status=400)
    p = auth.principal()
    store = _store()
    try:
        with store.session() as s, s.begin():
            app = s.get(apps.Application, app_id)
            if app is None or not apps.may_decide(p, app):
                abort(404)
            base = current_app.config["RENKEI_BASE_URL"]
            if decision == "accept":
                notices = apps.accept(s, app_id, by=p.email, base_url=base,
                                      data_dir=store.data_dir)
            else:
                notices = apps.refuse(s, app_id, by=p.email, reason=form.reason.data or "",
                                      base_url=base)
            accounts.audit(s, p, f"application_{decision}", "application", str(app_id),
                           organization_id=app.organization_id)
            mail_ids = mail.queue_notices(s, notices)
    except apps.ApplicationError as exc:
        return _page(error=str(exc), status=400)
    mail.deliver(store, mail_ids)
    return redirect(url_for("admin_applications.applications"))


@bp.route("/admin/invitations", methods=["POST"])
def invite():
    denied = _gate()
    if denied is not None:
        return denied
    p = auth.principal()
    store = _store()
    with store.session() as s:
        form = InviteForm()
        form.organization.choices = _admin_orgs(s, p)
        if not form.validate_on_submit():
            return _page(error=_("入力内容を確認してください。"), status=400)
    try:
        with store.session() as s, s.begin():
            org = s.get(Organization, form.organization.data)
            created = apps.invite(s, organization_id=org.id, email=form.email.data,
                                  role=form.role.data, by=p.email)
            accounts.audit(s, p, "invitation_create", "application", str(created.application.id),
                           organization_id=org.id, role=form.role.data)
            notice = apps.invitation_notice(created, org.name_ja,
                                            current_app.config["RENKEI_BASE_URL"])
            mail_ids = mail.queue_notices(s, [notice])
    except (apps.ApplicationError, accounts.AccountError) as exc:
        return _page(error=str(exc), status=400)
    mail.deliver(store, mail_ids)
    return _page(message=_("%(email)s に招待を送りました。", email=notice.to))
