"""Japanese first, English through the same templates (Flask-Babel message catalogues).

msgids are the Japanese texts themselves, so Japanese needs no catalogue and a missing English
translation falls back to Japanese rather than to a key. The language comes from `?lang=`
(remembered in a cookie), else the cookie, else Japanese. `catalog/translations/en/.../
messages.po` is the source; the .mo beside it is compiled from it when the package is built
(setup.py's build_mo, for a wheel and for `pip install -e .` alike), never at run time.
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import request
from flask_babel import Babel, get_locale, gettext, lazy_gettext, ngettext  # noqa: F401

LANGS = ("ja", "en")
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
COOKIE = "lang"
LOGGER = logging.getLogger(__name__)


def _(text: str, **kw) -> str:
    return gettext(text, **kw)


def select_locale() -> str:
    lang = request.args.get("lang")
    if lang in LANGS:
        return lang
    lang = request.cookies.get(COOKIE)
    return lang if lang in LANGS else "ja"


def init_app(app) -> None:
    if "babel" in app.extensions:
        return
    for po in TRANSLATIONS.glob("*/LC_MESSAGES/*.po"):
        if not po.with_suffix(".mo").exists():  # compiled by the build only (setup.py)
            LOGGER.warning("%s has no compiled .mo beside it: reinstall the package "
                           "(pip install -e .) to compile it", po.relative_to(TRANSLATIONS.parent))
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "ja")
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    Babel(app, locale_selector=select_locale)

    @app.after_request
    def remember_language(resp):
        lang = request.args.get("lang")
        if lang in LANGS and request.cookies.get(COOKIE) != lang:
            resp.set_cookie(COOKIE, lang, max_age=365 * 24 * 3600, samesite="Lax")
        return resp

    @app.context_processor
    def language():
        lang = str(get_locale() or "ja")
        other = "en" if lang == "ja" else "ja"
        args = request.args.to_dict(flat=False)
        args["lang"] = [other]
        from urllib.parse import urlencode
        switch = request.path + "?" + urlencode([(k, v) for k, vs in args.items() for v in vs])
        return {"current_lang": lang, "other_lang": other, "lang_switch_url": switch}
