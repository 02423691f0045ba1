"""Catalogue pages for citizens: home, search with facets, dataset pages (Japanese UI).

Server-rendered and JavaScript-free: every search state lives in the URL so results can be
shared, crawled and paged on any phone. Harvested text is never marked safe (Jinja autoescape),
and harvested URLs are only turned into links when they are http(s).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, abort, current_app, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from catalog import i18n
from catalog.i18n import _, lazy_gettext
from catalog.search import FACETS, SORTS
from catalog.store import Collection, Dataset, Organization

bp = Blueprint("pages", __name__, template_folder="templates")
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


def _store():
    return current_app.extensions["renkei_store"]


# -- search state in the URL ----------------------------------------------------------------

class SearchState:
    """q, filters, sort and page parsed from (and written back to) the query string."""

    def __init__(self, q: str, filters: dict[str, list[str]], sort: str | None, page: int):
        self.q, self.filters, self.explicit_sort, self.page = q, filters, sort, page

    @classmethod
    def from_args(cls, args) -> "SearchState":
        q = " ".join((args.get("q") or "").split())[:MAX_Q]
        filters = {}
        for key in FACETS:
            values = list(dict.fromkeys(v.strip() for v in args.getlist(key) if v.strip()))
            if values:
                filters[key] = values[:20]
        sort = args.get("sort") or None
        if sort is not None and sort not in SORTS:
            abort(400, description=_("並べ替えの指定「%(sort)s」は使えません。", sort=sort))
        try:
            page = int(args.get("page") or 1)
        except ValueError:
            abort(400, description=_("ページ番号は数字で指定してください。"))
        if not 1 <= page <= 10_000:
            abort(400, description=_("ページ番号が範囲外です。"))
        return cls(q, filters, sort, page)

    @property
    def sort(self) -> str:
        # Relevance means nothing without words; the newest datasets are what people expect then.
        if self.explicit_sort and not (self.explicit_sort == "relevance" and not self.q):
            return self.explicit_sort
        return "relevance" if self.q else "modified"

    def pairs(self, *, q=..., filters=None, sort=..., page=1) -> list[tuple[str, str]]:
        q = self.q if q is ... else q
        sort = self.explicit_sort if sort is ... else sort
        out = [("q", q)] if q else []
        for key in FACETS:
            out += [(key, v) for v in (self.filters if filters is None else filters).get(key, [])]
        if sort:
            out.append(("sort", sort))
        if page and page > 1:
            out.append(("page", str(page)))
        return out

    def url(self, **kw) -> str:
        pairs = self.pairs(**kw)
        return url_for("pages.datasets") + ("?" + urlencode(pairs) if pairs else "")

    def with_filter(self, key: str, value: str) -> str:
        filters = {k: list(v) for k, v in self.filters.items()}
        if value not in filters.setdefault(key, []):
            filters[key].append(value)
        return self.url(filters=filters)

    def without_filter(self, key: str, value: str) -> str:
        filters = {k: [v for v in vs if not (k == key and v == value)]
                   for k, vs in self.filters.items()}
        return self.url(filters=filters)

    def page_url(self, page: int) -> str:
        return self.url(page=page)


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
    rows = session.scalars(select(Dataset).where(Dataset.id.in_(ids), Dataset.status == "active")
                           .options(selectinload(Dataset.resources)))
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
    return {"organization": orgs, "license_id": licenses, "theme": themes}


def _formats(dataset: Dataset) -> list[str]:
    # Declared format first, as catalog.publish indexes it, so badges match the format facet.
    return sorted({(r.format or r.detected_format or "").upper() for r in dataset.resources} - {""})


# -- pages -----------------------------------------------------------------------------------

@bp.route("/")
def index():
    store = _store()
    # The empty query's facets and total describe the whole catalogue.
    recent = store.search.search("", sort="modified", per_page=6)
    with store.session() as s:
        labels = _value_labels(s)
        datasets = _datasets_in_order(s, recent.ids)
        n_collections = s.scalar(select(func.count()).select_from(Collection).join(Dataset).where(
            Collection.status == "active", Dataset.status == "active"))
        orgs = [(oid, labels["organization"].get(oid, oid), n)
                for oid, n in recent.facets.get("organization", [])]
        themes = [(t, labels["theme"].get(t, t), n) for t, n in recent.facets.get("theme", [])]
        tags = recent.facets.get("tags", [])[:12]
        return render_template("home.html", total=recent.total, datasets=datasets,
                               organizations=orgs, themes=themes, tags=tags,
                               n_collections=n_collections or 0, labels=labels, formats=_formats)


@bp.route("/datasets")
def datasets():
    state = SearchState.from_args(request.args)
    store = _store()
    result = store.search.search(state.q, state.filters, sort=state.sort,
                                 page=state.page, per_page=PER_PAGE)
    last = max(1, -(-result.total // PER_PAGE))
    suggestions, without_filters = [], None
    if result.total == 0 and state.q:
        # Zero results: say which words (alone, or without the filters) do find something.
        words = state.q.split()
        if len(words) > 1:
            suggestions = [(w, n) for w in words
                           if (n := store.search.search(w, state.filters, per_page=1).total)]
        if state.filters:
            without_filters = store.search.search(state.q, per_page=1).total
    with store.session() as s:
        labels = _value_labels(s)
        items = _datasets_in_order(s, result.ids)
        chips = [(key, v, FACET_LABELS[key], labels.get(key, {}).get(v, v))
                 for key in FACET_ORDER for v in state.filters.get(key, [])]
        facets = [(key, FACET_LABELS[key],
                   [(v, labels.get(key, {}).get(v, v), n, v in state.filters.get(key, []))
                    for v, n in result.facets.get(key, [])])
                  for key in FACET_ORDER if result.facets.get(key)]
        return render_template(
            "search.html", state=state, result=result, items=items, chips=chips,
            facets=facets, labels=labels, formats=_formats, last_page=last,
            pages=_pages(min(state.page, last), last), suggestions=suggestions,
            without_filters=without_filters,
            sorts=[(k, v) for k, v in SORT_LABELS.items() if k != "relevance" or state.q])


@bp.app_errorhandler(404)
def not_found(e):
    if request.path.startswith(_MACHINE_PREFIXES):
        return e
    return render_template("error.html", status=404, heading=_("ページが見つかりません"),
                           message=_("URLが正しいか確認してください。")), 404


@bp.errorhandler(400)
def bad_request(e):
    return render_template("error.html", status=400, heading=_("指定に誤りがあります"),
                           message=e.description), 400


# -- helpers for the dataset page -------------------------------------------------------------

def base_url() -> str:
    return current_app.config.get("RENKEI_BASE_URL") or request.url_root.rstrip("/")


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
    """Only http(s) URLs become links: a harvested `javascript:` URL must stay text."""
    if not url or not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else None


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


# Routes of the other page modules live on this blueprint (url_for("pages.…") everywhere).
from catalog import dataset_views, downloads, site_views  # noqa: E402,F401
