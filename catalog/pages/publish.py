"""Publishing by hand: `/datasets/new` → the quality report as a preview → publish; edit and
withdraw from the dataset page. Members with the editor or admin role only; CSRF on every form
(Flask-WTF). The file goes through the harvest pipeline (harvesters.upload) as a draft — on no
read path — so the member sees what renkei understood of it before anyone else does.
"""
from __future__ import annotations

import secrets

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField
from sqlalchemy import select
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from catalog import auth
from catalog.i18n import _, lazy_gettext
from catalog.pages.common import QUALITY_LABELS, STATE_LABELS, theme_label
from harvesters import upload
from harvesters.base import RemoteDataset, RemoteResource
from harvesters.files import LICENSES
from store import access, accounts
from store.db import Dataset, Organization
from store.publish import activate
from store.theme_layers import publish_theme_layers

bp = Blueprint("publish", __name__)
EXTENSIONS = ["csv", "xlsx", "geojson", "json", "zip", "kml", "gpkg"]
LEVEL_LABELS = {
    "public": lazy_gettext("公開（どなたでも見られます）"),
    "members": lazy_gettext("参加団体に共有（ログインした参加組織の職員のみ）"),
    "organization": lazy_gettext("組織内のみ（自分の組織のメンバーのみ）"),
}


class DatasetForm(FlaskForm):
    organization = SelectField(lazy_gettext("公開する組織"), validators=[DataRequired()])
    title = StringField(lazy_gettext("タイトル"), validators=[DataRequired(), Length(max=200)])
    description = TextAreaField(lazy_gettext("説明"), validators=[Optional(), Length(max=10_000)])
    license = SelectField(lazy_gettext("ライセンス"),
                          choices=[SelectChoice(k, title)
                                   for k, (title, _url) in LICENSES.items()])
    tags = StringField(lazy_gettext("タグ（読点またはカンマ区切り）"),
                       validators=[Optional(), Length(max=500)])
    theme = SelectField(lazy_gettext("テーマ"))
    access_level = RadioField(lazy_gettext("公開範囲"),
                              choices=[SelectChoice(k, v) for k, v in LEVEL_LABELS.items()],
                              default="organization")
    file = FileField(lazy_gettext("ファイル（CSV、Excel、GeoJSON、Shapefile の ZIP、KML、GeoPackage）"),
                     validators=[FileAllowed(EXTENSIONS, lazy_gettext(
                         "CSV、XLSX、GeoJSON、ZIP（Shapefile）、KML、GeoPackage のいずれかを選んでください。"))])


def _writable_orgs(s) -> list[Organization]:
    p = auth.principal()
    return [o for o in s.scalars(select(Organization).order_by(Organization.code, Organization.id))
            if access.can_write(p, o.id)]


def _form(s, ds: Dataset | None = None) -> DatasetForm:
    from geo.themes import THEMES
    form = DatasetForm()
    form.organization.choices = [SelectChoice(o.id, o.name_ja) for o in _writable_orgs(s)]
    form.theme.choices = [SelectChoice("", _("ファイルの内容から自動で判定"))] + \
        [SelectChoice(k, theme_label(k)) for k in THEMES]
    if ds is not None and request.method == "GET":
        form.organization.data = ds.organization_id
        form.title.data, form.description.data = ds.title, ds.description
        form.license.data = ds.license_id
        form.tags.data = "、".join(ds.tags or [])
        form.theme.data = (ds.raw or {}).get("renkei_theme") or ""
        form.access_level.data = ds.access_level
    return form


def _limit_text(s, org_ids) -> str:
    limits = {upload.session_upload_limit(s, o) for o in org_ids}
    return "、".join(f"{n // (1024 * 1024)} MB" for n in sorted(limits))


def _tags(text: str | None) -> list[str]:
    import re
    return list(dict.fromkeys(t.strip() for t in re.split(r"[、,，]", text or "") if t.strip()))


def _owned(s, dataset_id: str) -> Dataset:
    """A member dataset the caller may change; 404 for whoever may not read it."""
    ds = s.get(Dataset, dataset_id)
    if ds is None or ds.status == "withdrawn" or not auth.may_read(ds) \
            or ds.source_name != upload.UPLOAD_SOURCE:
        abort(404)
    if not access.can_write(auth.principal(), ds.organization_id):
        abort(403)
    return ds


def _submit(form: DatasetForm, ds: Dataset | None):
    """Translate and switch (a draft when new); the error to show, or None."""
    p = auth.principal()
    store = current_app.extensions["renkei_store"]
    org_id = form.organization.data
    level = form.access_level.data
    if level == "public" and (ds is None or ds.access_level != "public") \
            and not access.can_make_public(p, org_id):
        return _("「公開」にできるのは組織の管理者だけです。「組織内のみ」か「参加団体に共有」を選んでください。"), None
    dataset_id = ds.id if ds is not None else f"{org_id}-{secrets.token_hex(4)}"
    held = {r.id: RemoteResource(remote_id=r.remote_id, url=r.url, name=r.name or "",
                                 format=r.format, description=r.description or "", size=r.size)
            for r in (ds.resources if ds is not None else [])}
    staged = {}
    f = form.file.data
    if f is not None and getattr(f, "filename", ""):
        try:
            new = upload.stage_file(store, f.stream, f.filename, org_id)
        except upload.UploadTooLarge as exc:
            return _("ファイルが大きすぎます。%(org)s の上限は 1 ファイル %(mb)s MB です。",
                     org=exc.organization, mb=exc.limit // (1024 * 1024)), None
        from harvesters.pipeline import resource_id_for
        # One file per form-published dataset: a new one replaces the old.
        remote = next(iter(held.values()), None) or RemoteResource(
            remote_id=secrets.token_hex(8), url="", name="")
        rid = resource_id_for(dataset_id, remote)
        from urllib.parse import quote
        remote.url = (current_app.config["RENKEI_BASE_URL"] +
                      f"/datasets/{dataset_id}/resources/{rid}/download/{quote(new.filename)}")
        remote.name, remote.size = new.filename, new.size
        remote.format = upload.guess_format(new.filename, None)
        held = {rid: remote}
        staged[remote.remote_id] = new
    elif ds is None:
        return _("ファイルを選んでください。"), None
    lic = form.license.data
    title, url_ = LICENSES.get(lic, (lic, None))
    meta = RemoteDataset(remote_id=dataset_id, name=dataset_id, title=form.title.data.strip(),
                         description=form.description.data or "", tags=_tags(form.tags.data),
                         license_id=lic, license_title=title, license_url=url_,
                         resources=list(held.values()),
                         raw={"renkei_theme": form.theme.data or None})
    status = "draft" if ds is None or ds.status == "draft" else "active"
    try:
        outcome = upload.publish(store, dataset_id, meta, org_id, level, staged, status=status)
    finally:
        for st in staged.values():
            st.path.unlink(missing_ok=True)
    if outcome.status == "failed":
        first = outcome.errors[0]
        row = _("（%(row)s 行目）", row=first.row) if first.row is not None else ""
        return _("ファイルを読み込めませんでした%(row)s：%(msg)s", row=row, msg=first.message), None
    with store.session() as s, s.begin():
        accounts.audit(s, p, "form_" + ("create" if ds is None else "update"), "dataset",
                       dataset_id, organization_id=org_id,
                       before=ds.access_level if ds is not None else None, after=level,
                       files=[st.filename for st in staged.values()] or None)
    return None, dataset_id


@bp.route("/datasets/new", methods=["GET", "POST"])
@auth.signed_in_required
def new_dataset():
    store = current_app.extensions["renkei_store"]
    # The session is closed before _submit, which publishes through sessions of its own: a
    # request holding one connection while it waits for another can deadlock a full pool.
    with store.session() as s:
        form = _form(s)
        if not form.organization.choices:
            return render_template("error.html", status=403, heading=_("権限がありません"),
                                   message=_("データを公開できるのは、組織の編集者または管理者です。")), 403
        if request.method == "GET" and len(form.organization.choices) == 1:
            form.organization.data = form.organization.choices[0].value
        limit = _limit_text(s, [c.value for c in form.organization.choices])
    error = None
    if form.validate_on_submit():
        error, dataset_id = _submit(form, None)
        if error is None:
            return redirect(url_for("publish.preview", dataset_id=dataset_id), code=303)
    return render_template("publish_form.html", form=form, error=error, ds=None, limit=limit,
                           heading=_("データを公開する")), 400 if error or form.errors else 200


@bp.route("/datasets/<dataset_id>/edit", methods=["GET", "POST"])
@auth.signed_in_required
def edit_dataset(dataset_id: str):
    store = current_app.extensions["renkei_store"]
    with store.session() as s:   # closed before _submit, as in new_dataset
        ds = _owned(s, dataset_id)
        form = _form(s, ds)
        limit = _limit_text(s, [ds.organization_id])
        ds.resources   # loaded here: _submit reads them after the session has closed
    error = None
    if form.validate_on_submit():
        error, _id = _submit(form, ds)
        if error is None:
            target = "publish.preview" if ds.status == "draft" else "dataset.dataset"
            return redirect(url_for(target, dataset_id=dataset_id), code=303)
    return render_template("publish_form.html", form=form, error=error, ds=ds, limit=limit,
                           heading=_("データセットを編集する")), 400 if error or form.errors else 200


class ConfirmForm(FlaskForm):
    """Only the CSRF token: publish, withdraw."""


@bp.route("/datasets/<dataset_id>/preview")
@auth.signed_in_required
def preview(dataset_id: str):
    store = current_app.extensions["renkei_store"]
    with store.session() as s:
        ds = _owned(s, dataset_id)
        org = s.get(Organization, ds.organization_id)
        return render_template("publish_preview.html", ds=ds, org=org, form=ConfirmForm(),
                               quality_labels=QUALITY_LABELS, state_labels=STATE_LABELS,
                               level_label=LEVEL_LABELS.get(ds.access_level, ds.access_level),
                               theme_label=theme_label)


@bp.route("/datasets/<dataset_id>/publish", methods=["POST"])
@auth.signed_in_required
def publish(dataset_id: str):
    store = current_app.extensions["renkei_store"]
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    with store.session() as s:
        ds = _owned(s, dataset_id)
        org_id, level, status = ds.organization_id, ds.access_level, ds.status
    if status == "draft":
        activate(store, dataset_id)
        publish_theme_layers(store, log=lambda _m: None)
        with store.session() as s, s.begin():
            accounts.audit(s, auth.principal(), "form_publish", "dataset", dataset_id,
                           organization_id=org_id, before=None, after=level)
    return redirect(url_for("dataset.dataset", dataset_id=dataset_id), code=303)


@bp.route("/datasets/<dataset_id>/withdraw", methods=["POST"])
@auth.signed_in_required
def withdraw(dataset_id: str):
    store = current_app.extensions["renkei_store"]
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    with store.session() as s:
        ds = _owned(s, dataset_id)
        org_id, level = ds.organization_id, ds.access_level
    upload.withdraw(store, dataset_id)
    with store.session() as s, s.begin():
        accounts.audit(s, auth.principal(), "form_withdraw", "dataset", dataset_id,
                       organization_id=org_id, before=level, after=None)
    return redirect(url_for("search.index"), code=303)
