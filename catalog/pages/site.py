"""Site-wide pages: organizations, sitemap.xml, robots.txt, Atom feeds, and Leaflet's files
served from the xstatic-leaflet package (no CDN: the map works offline and on LG-WAN)."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, abort, render_template, request, send_from_directory, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from catalog import auth
from catalog.public_text import xml_text
from catalog.i18n import _
from store.db import Dataset, Organization
from catalog.pages.common import PER_PAGE, _store, _datasets_in_order, _formats, _pages, _value_labels, base_url

FEED_ENTRIES = 50
SITEMAP_MAX = 50_000  # the sitemap protocol's limit per file

bp = Blueprint("site", __name__)


@bp.route("/organizations")
def organizations():
    store = _store()
    counts = dict(store.search.search("", per_page=1, readable=auth.readable())
                  .facets.get("organization", []))
    with store.session() as s:
        labels = _value_labels(s)
        orgs = [(o, labels["organization"].get(o.id, o.name_ja), counts.get(o.id, 0))
                for o in s.scalars(select(Organization).order_by(Organization.code, Organization.id))]
    return render_template("organizations.html", orgs=orgs)


@bp.route("/organizations/<org_id>")
def organization(org_id: str):
    store = _store()
    try:
        page = max(1, int(request.args.get("page") or 1))
    except ValueError:
        abort(400, description=_("ページ番号は数字で指定してください。"))
    # Searched before the session opens: the search reads through a connection of its own,
    # and a request holding one while waiting for another can deadlock a full pool.
    result = store.search.search("", {"organization": [org_id]}, sort="modified",
                                 page=page, per_page=PER_PAGE, readable=auth.readable())
    with store.session() as s:
        org = s.get(Organization, org_id)
        if org is None:
            return render_template("error.html", status=404, heading=_("組織が見つかりません"),
                                   message=_("「%(id)s」という組織はありません。", id=org_id)), 404
        labels = _value_labels(s)
        items = _datasets_in_order(s, result.ids)
        last = max(1, -(-result.total // PER_PAGE))
        return render_template("organization.html", org=org, result=result, items=items,
                               labels=labels, formats=_formats, page=min(page, last), last_page=last,
                               pages=_pages(min(page, last), last),
                               name=labels["organization"].get(org.id, org.name_ja))


@bp.route("/robots.txt")
def robots():
    body = ("User-agent: *\nAllow: /\n"
            "Disallow: /harvest\n"  # job reports: operators' pages, not for search engines
            f"Sitemap: {base_url()}/sitemap.xml\n")
    return Response(body, content_type="text/plain; charset=utf-8")


@bp.route("/sitemap.xml")
def sitemap():
    store = _store()
    root = base_url()
    with store.session() as s:
        rows = s.execute(select(Dataset.id, Dataset.updated_at)
                         .where(Dataset.status == "active", auth.read_where())
                         .order_by(Dataset.id).limit(SITEMAP_MAX)).all()
        org_ids = list(s.scalars(select(Organization.id).order_by(Organization.id)))
    urls = [(root + "/", None), (root + url_for("search.datasets"), None),
            (root + url_for("site.organizations"), None)]
    urls += [(root + url_for("site.organization", org_id=o), None) for o in org_ids]
    urls += [(root + url_for("dataset.dataset", dataset_id=i), u) for i, u in rows]
    xml = xml_text(render_template("sitemap.xml", urls=urls))
    return Response(xml, content_type="application/xml; charset=utf-8")


def _feed(title: str, self_url: str, org_id: str | None):
    store = _store()
    with store.session() as s:
        stmt = (select(Dataset).where(Dataset.status == "active", auth.read_where())
                .options(selectinload(Dataset.resources))
                .order_by(Dataset.updated_at.desc(), Dataset.id).limit(FEED_ENTRIES))
        if org_id:
            stmt = stmt.where(Dataset.organization_id == org_id)
        entries = list(s.scalars(stmt))
        labels = _value_labels(s)
        updated = max((d.updated_at for d in entries), default=datetime(2000, 1, 1))
        # A harvested title with \x0b would make the whole feed malformed XML.
        xml = xml_text(render_template("feed.xml", title=title, self_url=self_url,
                                       entries=entries, updated=updated, root=base_url(),
                                       labels=labels))
    return Response(xml, content_type="application/atom+xml; charset=utf-8")


@bp.route("/feeds/datasets.atom")
def feed_all():
    return _feed(_("兵庫オープンデータ連携カタログ：更新されたデータセット"),
                 base_url() + url_for("site.feed_all"), None)


@bp.route("/feeds/organizations/<org_id>.atom")
def feed_organization(org_id: str):
    with _store().session() as s:
        org = s.get(Organization, org_id)
        if org is None:
            abort(404)
        name = org.name_ja
    return _feed(_("%(name)s：更新されたデータセット", name=name),
                 base_url() + url_for("site.feed_organization", org_id=org_id), org_id)


@bp.route("/static/leaflet/<path:filename>")
def leaflet(filename: str):
    import xstatic.pkg.leaflet as pkg
    return send_from_directory(pkg.BASE_DIR, filename, max_age=86400)
