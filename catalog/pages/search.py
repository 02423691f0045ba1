"""Home and search with facets (Japanese UI).

Server-rendered and JavaScript-free: every search state lives in the URL so results can be
shared, crawled and paged on any phone.
"""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, render_template, request, url_for
from sqlalchemy import func, select

from catalog import auth
from catalog.i18n import _
from catalog.pages.common import (FACET_LABELS, FACET_ORDER, MAX_Q, PER_PAGE, SORT_LABELS,
                                  _datasets_in_order, _formats, _pages, _store, _value_labels)
from store.db import Collection, Dataset
from store.search import FACETS, SORTS

bp = Blueprint("search", __name__)


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
        return url_for("search.datasets") + ("?" + urlencode(pairs) if pairs else "")

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


# -- routes -----------------------------------------------------------------------------------

@bp.route("/")
def index():
    store = _store()
    # The empty query's facets and total describe the whole catalogue.
    recent = store.search.search("", sort="modified", per_page=6, readable=auth.readable())
    with store.session() as s:
        labels = _value_labels(s)
        datasets = _datasets_in_order(s, recent.ids)
        n_collections = s.scalar(select(func.count()).select_from(Collection).join(Dataset).where(
            Collection.status == "active", Dataset.status == "active", auth.read_where()))
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
    readable = auth.readable()
    result = store.search.search(state.q, state.filters, sort=state.sort,
                                 page=state.page, per_page=PER_PAGE, readable=readable)
    last = max(1, -(-result.total // PER_PAGE))
    suggestions, without_filters = [], None
    if result.total == 0 and state.q:
        # Zero results: say which words (alone, or without the filters) do find something.
        words = state.q.split()
        if len(words) > 1:
            suggestions = [(w, n) for w in words
                           if (n := store.search.search(w, state.filters, per_page=1,
                                                        readable=readable).total)]
        if state.filters:
            without_filters = store.search.search(state.q, per_page=1, readable=readable).total
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


