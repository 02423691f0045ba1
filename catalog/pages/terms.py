"""/terms: the 要綱 in force (Japanese first, English with ?lang=en), its fee rule and limits,
and every version with its effective date. Markdown without raw HTML (markdown-it-py)."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template
from markdown_it import MarkdownIt
from markupsafe import Markup

from catalog.i18n import get_locale
from store import terms as terms_store

bp = Blueprint("terms", __name__)
_md = MarkdownIt("commonmark", {"html": False})


def _render(version: str | None):
    versions = terms_store.load_all(current_app.extensions["renkei_store"])
    in_force = terms_store.in_force(versions)
    shown = in_force if version is None else next(
        (t for t in versions if t.version == version), None)
    if shown is None:
        abort(404)
    lang = str(get_locale() or "ja")
    # Headings in the terms start at h2, under the page's h1 (the title).
    body = Markup(_md.render(shown.localized("text", lang)))
    return render_template("terms.html", terms=shown, in_force=in_force, versions=versions,
                           body=body, title=shown.localized("title", lang))


@bp.route("/terms")
def current():
    return _render(None)


@bp.route("/terms/<version>")
def version(version: str):
    return _render(version)
