"""Who may see the staff pages (/harvest, /harvest/<job>): the one place that decides.

Until sign-in lands, the pages are off (404, as if they did not exist) unless the operator
opens them with RENKEI_STAFF_PAGES=open (environment, read when the app is built, or the app
config). Sign-in replaces `staff_only`'s check with "is a signed-in member"; nothing else
needs to change.
"""
from __future__ import annotations

import functools
import os

from flask import abort, current_app

SETTING = "RENKEI_STAFF_PAGES"


def init_app(app) -> None:
    app.config.setdefault(SETTING, os.environ.get(SETTING, ""))


def staff_pages_open() -> bool:
    return str(current_app.config.get(SETTING, "")).strip().lower() == "open"


def staff_only(view):
    """Decorate every staff view with this."""
    @functools.wraps(view)
    def gated(*args, **kwargs):
        if not staff_pages_open():
            abort(404)
        return view(*args, **kwargs)
    return gated
