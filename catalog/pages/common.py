"""What every catalogue page shares: labels, loading helpers, template filters, the HTML error
pages and the i18n set-up. A blueprint without routes; each page module has its own.

Harvested text is never marked safe (Jinja autoescape), and harvested URLs are only turned into
links when they are http(s).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from catalog import auth, i18n
from catalog.i18n import _, lazy_gettext
from catalog.public_text import public_url, redact_text
from store.db import Dataset, Organization
from store.publish import DERIVED_FORMATS, dataset_formats

bp = Blueprint("common", __name__)
bp.record_once(lambda state: i18n.init_app(state.app))

PER_PAGE = 20
MAX_Q = 200
FACET_LABELS = {"organization": lazy_gettext("組織"), "theme": lazy_gettext("テーマ"),
                "tags": lazy_gettext("タグ"), "res_format": lazy_gettext("ファイル形式"),
                "license_id": lazy_gettext("ライセンス")}
FACET_ORDER = ("organization", "theme", "tags", "res_format", "license_id")
SORT_LABELS = {"relevance": lazy_gettext("関連度順"), "modified": lazy_gettext("更新日の新しい順"),
               "title": lazy_gettext("タイトル順")}
STATE_LABELS = {"ok": lazy_gettext("公開済み（地図・API）"),
                "table": lazy_gettext("表データ（プレビューあり）"),
                "error": lazy_gettext("取り込みエラー"), "pending": lazy_gettext("未処理"),
                "other": lazy_gettext("ダウンロードのみ")}
QUALITY_LABELS = {"layer": lazy_gettext("レイヤー"), "rows_in": lazy_gettext("読み込んだ行数"),
                  "rows_published": lazy_gettext("公開した行数"),
                  "crs_source": lazy_gettext("元の座標参照系"), "encoding": lazy_gettext("文字コード"),
                  "geometry_type": lazy_gettext("ジオメトリの種類"),
                  "theme": lazy_gettext("テーマ"), "theme_reason": lazy_gettext("テーマの判定理由"),
                  "mapping": lazy_gettext("項目の対応（元の列 → 共通項目）"),
                  "unmapped": lazy_gettext("共通項目に対応しない列（統合レイヤーには含めていません）")}
# Paths whose 404 belongs to an API (JSON answers), not to the citizens' HTML pages.
_MACHINE_PREFIXES = ("/ogcapi", "/api/", "/catalog.", "/static/", "/feeds/", "/openapi")
JST = timedelta(hours=9)


def basemap() -> str:
    """'gsi' (地理院タイル pale, the default, DESIGN.md) or 'none' (offline: the demo, the
    tests): the app's config first, then RENKEI_BASEMAP."""
    value = current_app.config.get("RENKEI_BASEMAP") or os.environ.get("RENKEI_BASEMAP") or "gsi"
    return "none" if value == "none" else "gsi"


def _store():
    return current_app.extensions["renkei_store"]


def _pages(page: int, last: int) -> list[int | None]:
    """Page numbers around the current one, None where numbers are skipped."""
    wanted = {1, last} | set(range(max(1, page - 2), min(last, page + 2) + 1))
    out: list[int | None] = []
    for n in sorted(wanted):
        if out and n - (out[-1] or 0) > 1:
            out.append(None)
        out.append(n)
    return out


# -- loading ---------------------------------------------------------------------------------

def _datasets_in_order(session, ids: list[str]) -> list[Dataset]:
    if not ids:
        return []
    # status: a withdrawn dataset whose index entry was not yet removed must not be linked.
    # read_where: the index is filtered by access already; this is the same rule once more, so
    # a page can never link a dataset the caller may not read even if the index lags.
    rows = session.scalars(select(Dataset).where(Dataset.id.in_(ids), Dataset.status == "active",
                                                 auth.read_where())
                           .options(selectinload(Dataset.resources),
                                    selectinload(Dataset.collections)))
    by_id = {d.id: d for d in rows}
    return [by_id[i] for i in ids if i in by_id]


def _value_labels(session) -> dict[str, dict[str, str]]:
    """Facet values are ids; people read names."""
    en = str(i18n.get_locale()) == "en"
    orgs = {o.id: (o.name_en if en and o.name_en else o.name_ja)
            for o in session.scalars(select(Organization))}
    licenses = {lid: title for lid, title in session.execute(
        select(Dataset.license_id, Dataset.license_title).distinct()) if lid and title}
    themes = {t: theme_label(t) for (t,) in session.execute(select(Dataset.theme).distinct()) if t}
    formats = {f.upper(): f for f in DERIVED_FORMATS}   # "OGC API Features", not upper case
    return {"organization": orgs, "license_id": licenses, "theme": themes, "res_format": formats}


def _formats(dataset: Dataset) -> list[str]:
    # As store.publish indexes them (translated downloads included), so badges match the facet.
    return dataset_formats(dataset)


def _ogcapi_exception(e):
    """Under /ogcapi, what routing refuses (an unknown path, a method the path does not take)
    is an OGC API exception document in JSON, like every other error there; a browser that
    asks for HTML (f=html, or Accept) gets the HTTP error page."""
    wants_html = request.args.get("f") == "html" or (
        request.args.get("f") is None and request.accept_mimetypes.best_match(
            ["application/json", "text/html"]) == "text/html"
        and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"])
    if wants_html:
        return None
    code = {404: "NotFound", 405: "InvalidOperation"}.get(e.code, "InvalidParameterValue")
    body = json.dumps({"code": code, "type": code, "description": e.description},
                      ensure_ascii=False)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if getattr(e, "valid_methods", None):
        headers["Allow"] = ", ".join(e.valid_methods)
    return body, e.code, headers


@bp.app_errorhandler(405)
def method_not_allowed(e):
    if request.path == "/ogcapi" or request.path.startswith("/ogcapi/"):
        return _ogcapi_exception(e) or e
    return e


@bp.app_errorhandler(404)
def not_found(e):
    if request.path == "/ogcapi" or request.path.startswith("/ogcapi/"):
        return _ogcapi_exception(e) or e
    if request.path.startswith(_MACHINE_PREFIXES):
        return e
    return render_template("error.html", status=404, heading=_("ページが見つかりません"),
                           message=_("URLが正しいか確認してください。")), 404


@bp.app_errorhandler(400)
def bad_request(e):
    if request.path.startswith(_MACHINE_PREFIXES):
        return e
    return render_template("error.html", status=400, heading=_("指定に誤りがあります"),
                           message=e.description), 400


# -- helpers for the dataset page -------------------------------------------------------------

def base_url() -> str:
    return current_app.config.get("RENKEI_BASE_URL") or request.url_root.rstrip("/")


def column_titles(theme: str | None, columns) -> dict[str, str]:
    """{column: title} for the theme's fields among `columns` (Japanese, English with ?lang=en);
    source columns keep their published names and get no entry."""
    if not theme:
        return {}
    from geo.themes import THEMES, PROVENANCE, SOURCES_FIELD
    t = THEMES.get(theme)
    if t is None:
        return {}
    english = str(i18n.get_locale()) == "en"
    fields = {f.name: f for f in (*t.fields, *PROVENANCE, SOURCES_FIELD)}
    return {c: (fields[c].title_en if english else fields[c].title_ja)
            for c in columns if c in fields}


def theme_label(theme: str | None) -> str:
    """Theme ids (shelter, aed …) as people read them, from the theme schemas in geo.themes."""
    if not theme:
        return ""
    try:
        from geo.themes import THEMES
    except ImportError:  # the theme module is optional for the pages
        return theme
    t = THEMES.get(theme)
    if t is None:
        return theme
    return t.title_en if str(i18n.get_locale()) == "en" else t.title_ja


@bp.app_template_filter("http_url")
def http_url(url) -> str | None:
    """Only http(s) URLs become links: a harvested `javascript:` URL must stay text. The link
    is the public form (catalog.public_text): no userinfo, no secret query values."""
    if not url or not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        return public_url(url)
    return None


bp.add_app_template_filter(public_url, "public_url")
bp.add_app_template_filter(redact_text, "redact")


@bp.app_template_filter("ja_date")
def ja_date(value) -> str:
    """'2024-05-01T…' or a datetime -> '2024年5月1日'; unparseable text is shown as it is."""
    if not value:
        return ""
    if isinstance(value, datetime):
        value = value + JST  # our own timestamps are naive UTC
        return f"{value.year}年{value.month}月{value.day}日"
    try:
        d = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00")[:10])
    except ValueError:
        return str(value)
    return f"{d.year}年{d.month}月{d.day}日"


@bp.app_template_filter("ja_datetime")
def ja_datetime(value) -> str:
    if not isinstance(value, datetime):
        return ja_date(value)
    v = value + JST
    return f"{v.year}年{v.month}月{v.day}日 {v.hour:02d}:{v.minute:02d}（日本時間）"


@bp.app_template_filter("filesize")
def filesize(n) -> str:
    if n is None:
        return "不明"
    n = int(n)
    if n < 1024:
        return f"{n} バイト"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
    return ""


@bp.app_template_filter("excerpt")
def excerpt(text_: str, length: int = 120) -> str:
    flat = " ".join((text_ or "").split())
    return flat if len(flat) <= length else flat[:length] + "…"


@bp.app_template_filter("iso_utc")
def iso_utc(value) -> str:
    """Our timestamps are naive UTC; Atom and sitemaps want RFC 3339."""
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat() + "Z"
    return str(value or "")
