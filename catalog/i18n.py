"""Japanese first, English through the same templates (Flask-Babel message catalogues).

msgids are the Japanese texts themselves, so Japanese needs no catalogue and a missing English
translation falls back to Japanese rather than to a key. The language comes from `?lang=`
(remembered in a cookie), else the cookie, else Japanese. `catalog/translations/en/.../
messages.po` is the source; the .mo beside it is compiled from it (committed, and recompiled
at start-up when the .po is newer).
"""
from __future__ import annotations

from pathlib import Path

from flask import request
from flask_babel import Babel, get_locale, gettext, lazy_gettext, ngettext  # noqa: F401

LANGS = ("ja", "en")
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
COOKIE = "lang"


def _(text: str, **kw) -> str:
    return gettext(text, **kw)


def select_locale() -> str:
    lang = request.args.get("lang")
    if lang in LANGS:
        return lang
    lang = request.cookies.get(COOKIE)
    return lang if lang in LANGS else "ja"


def compile_catalogues() -> None:
    """Compile every messages.po whose .mo is missing or older (a read-only install skips)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    for po in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        try:
            with open(po, "rb") as fh:
                catalog = read_po(fh)
            with open(mo, "wb") as fh:
                write_mo(fh, catalog)
        except OSError:
            pass


def init_app(app) -> None:
    if "babel" in app.extensions:
        return
    compile_catalogues()
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
