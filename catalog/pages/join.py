"""申請窓口 /join: apply to join as an organization, to join an organization, for an API key;
the applicant's private status page (cancel, collect the API key once); the invitation page
where an invitee sets a password. Every form is a Flask-WTF form (CSRF)."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from wtforms.fields.choices import SelectChoice
from wtforms import (BooleanField, EmailField, IntegerField, PasswordField, SelectField,
                     StringField, TextAreaField)
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from catalog import auth, mail
from catalog.i18n import _, lazy_gettext
from store import access
from store import applications as apps
from store import terms as terms_store
from store.accounts import AccountError
from store.db import Organization

bp = Blueprint("join", __name__)

KIND_CHOICES = [SelectChoice("municipality", lazy_gettext("市町村")),
                SelectChoice("prefecture", lazy_gettext("都道府県")),
                SelectChoice("partner", lazy_gettext("関係団体")),
                SelectChoice("company", lazy_gettext("事業者"))]
STATUS_LABELS = {"pending": lazy_gettext("審査中"), "accepted": lazy_gettext("承認"),
                 "refused": lazy_gettext("不承認"), "canceled": lazy_gettext("取り下げ"),
                 "retired": lazy_gettext("収集終了")}
KIND_LABELS = {"organization": lazy_gettext("参加申請（団体）"),
               "membership": lazy_gettext("組織への加入申請"),
               "api_key": lazy_gettext("APIキーの申請"), "invitation": lazy_gettext("招待"),
               "source": lazy_gettext("収集元の提案")}


def _store():
    return current_app.extensions["renkei_store"]


def _base() -> str:
    return current_app.config["RENKEI_BASE_URL"]


def _terms():
    return terms_store.current(_store())


class _Applicant(FlaskForm):
    name = StringField(lazy_gettext("お名前"), validators=[DataRequired(), Length(max=200)])
    email = EmailField(lazy_gettext("メールアドレス"),
                       validators=[DataRequired(), Length(max=320)])
    accept_terms = BooleanField(lazy_gettext("利用要綱に同意します"), validators=[DataRequired()])


class OrganizationForm(_Applicant):
    name_ja = StringField(lazy_gettext("団体名"), validators=[DataRequired(), Length(max=200)])
    name_en = StringField(lazy_gettext("団体名（英語、任意）"), validators=[Optional(),
                                                                     Length(max=200)])
    slug = StringField(lazy_gettext("英字の略称（URLに使います。例：taka-town）"),
                       validators=[DataRequired(), Length(min=2, max=100)])
    kind = SelectField(lazy_gettext("団体の種類"), choices=KIND_CHOICES)
    code = StringField(lazy_gettext("全国地方公共団体コード（6桁、地方公共団体のみ）"),
                       validators=[Optional(), Length(max=6)])
    population = IntegerField(lazy_gettext("人口（地方公共団体のみ、人口割の算定に使います）"),
                              validators=[Optional(), NumberRange(min=0, max=50_000_000)])


class MembershipForm(_Applicant):
    organization = SelectField(lazy_gettext("加入する組織"), choices=[])
    comment = TextAreaField(lazy_gettext("申請の理由（所属・担当など）"),
                            validators=[DataRequired(), Length(max=2000)])


class ApiKeyForm(_Applicant):
    company = StringField(lazy_gettext("事業者・団体名"), validators=[DataRequired(),
                                                                   Length(max=200)])
    purpose = TextAreaField(lazy_gettext("利用目的"), validators=[DataRequired(), Length(max=2000)])


class SourceForm(FlaskForm):
    organization = SelectField(lazy_gettext("提供する組織"), choices=[])
    name = StringField(lazy_gettext("収集元の名前（英字の略称。例：taka-ckan）"),
                       validators=[DataRequired(), Length(min=2, max=100)])
    type = SelectField(lazy_gettext("種類"), choices=[SelectChoice(t, t)
                                                     for t in apps.SOURCE_TYPES])
    url = StringField(lazy_gettext("URL"), validators=[DataRequired(), Length(max=2000)])
    accept_terms = BooleanField(lazy_gettext("利用要綱に同意します"), validators=[DataRequired()])


class CancelForm(FlaskForm):
    pass


class PasswordForm(FlaskForm):
    password = PasswordField(lazy_gettext("パスワード（10文字以上）"),
                             validators=[DataRequired(), Length(min=10, max=1024)])


@bp.route("/join")
def index():
    return render_template("join/index.html", terms=_terms())


def _submit(form, kind: str, create):
    terms = _terms()
    error, status = None, 200
    if form.validate_on_submit():
        store = _store()
        try:
            with store.session() as s, s.begin():
                created = create(s, form, terms.version)
                mail_ids = mail.queue_notices(s, [apps.received_notice(created, _base())])
                app_id = created.application.id
        except (apps.ApplicationError, AccountError) as exc:
            error, status = str(exc), 400
        else:
            mail.deliver(store, mail_ids)
            return render_template("join/received.html", app_id=app_id,
                                   link=url_for("join.status", link=created.link,
                                                _external=False))
    elif request.method == "POST":
        error, status = _("入力内容を確認してください。"), 400
    return render_template(f"join/{kind}.html", form=form, error=error, terms=terms), status


@bp.route("/join/organization", methods=["GET", "POST"])
def organization():
    def create(s, f, version):
        return apps.apply_organization(
            s, slug=f.slug.data.strip(), name_ja=f.name_ja.data, name_en=f.name_en.data,
            kind=f.kind.data, code=(f.code.data or "").strip() or None,
            population=f.population.data, email=f.email.data, contact=f.name.data,
            terms_version=version)
    return _submit(OrganizationForm(), "organization", create)


@bp.route("/join/membership", methods=["GET", "POST"])
def membership():
    form = MembershipForm()
    with _store().session() as s:
        form.organization.choices = [SelectChoice(o.id, o.name_ja) for o in s.scalars(
            select(Organization).where(or_(Organization.kind.is_(None),
                                          Organization.kind != "company"))
            .order_by(Organization.id))]

    def create(s, f, version):
        return apps.apply_membership(s, organization_id=f.organization.data, email=f.email.data,
                                     name=f.name.data, comment=f.comment.data,
                                     terms_version=version)
    return _submit(form, "membership", create)


@bp.route("/join/api-key", methods=["GET", "POST"])
def api_key():
    def create(s, f, version):
        return apps.apply_api_key(s, email=f.email.data, name=f.name.data,
                                  company=f.company.data, purpose=f.purpose.data,
                                  terms_version=version)
    return _submit(ApiKeyForm(), "api_key", create)


@bp.route("/join/source", methods=["GET", "POST"])
@auth.signed_in_required
def source():
    """An organization's editors and admins propose a harvest source; it runs once validated."""
    p = auth.principal()
    form = SourceForm()
    with _store().session() as s:
        form.organization.choices = [
            SelectChoice(o.id, o.name_ja) for o in s.scalars(select(Organization)
                                                             .order_by(Organization.id))
            if access.can_write(p, o.id)]
    if not form.organization.choices:
        abort(404)

    def create(s, f, version):
        return apps.propose_source(s, organization_id=f.organization.data, email=p.email,
                                   name=f.name.data.strip(), type_=f.type.data,
                                   url=f.url.data.strip(), terms_version=version)
    return _submit(form, "source", create)


@bp.route("/join/status/<link>", methods=["GET", "POST"])
def status(link: str):
    store = _store()
    form = CancelForm()
    token = None
    with store.session() as s, s.begin():
        app = apps.find_by_link(s, link)
        if app is None or app.kind == "invitation":
            abort(404)
        if form.validate_on_submit():
            action = request.form.get("action")
            try:
                if action == "cancel":
                    apps.cancel(s, app)
                elif action == "issue":
                    token = apps.issue_key(s, app, current_app.extensions[
                        "renkei_token_secret"]).token
            except apps.ApplicationError:
                pass    # the page shows the state as it is
        view = {"id": app.id, "kind": app.kind, "status": app.status, "reason": app.reason,
                "created_at": app.created_at, "handled_at": app.handled_at,
                "terms_version": app.terms_version, "organization": app.organization_id,
                "key_issued": app.token_id is not None}
    resp = render_template("join/status.html", app=view, form=form, token=token,
                           kinds=KIND_LABELS, states=STATUS_LABELS)
    # The page holds a private link (and once, a key): keep it out of caches and referrers.
    return resp, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@bp.route("/join/invitation/<link>", methods=["GET", "POST"])
def invitation(link: str):
    store = _store()
    form = PasswordForm()
    error, code = None, 200
    with store.session() as s:
        app = apps.find_by_link(s, link)
        if app is None or app.kind != "invitation":
            abort(404)
        org = s.get(Organization, app.organization_id)
        view = {"email": app.email, "role": app.role, "status": app.status,
                "organization": org.name_ja if org else app.organization_id}
    if app.status == "pending" and form.validate_on_submit():
        try:
            with store.session() as s, s.begin():
                apps.accept_invitation(s, apps.find_by_link(s, link), form.password.data)
        except (apps.ApplicationError, AccountError) as exc:
            error, code = str(exc), 400
        else:
            return redirect(url_for("auth.login", next=url_for("site.organization",
                                                               org_id=app.organization_id)))
    elif request.method == "POST":
        error, code = _("パスワードは10文字以上で入力してください。"), 400
    return render_template("join/invitation.html", form=form, invitation=view,
                           error=error), code, {"Cache-Control": "no-store",
                                               "Referrer-Policy": "no-referrer"}
