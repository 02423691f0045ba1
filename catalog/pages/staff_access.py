"""Who may see the staff pages (/harvest, /harvest/<job>): the one place that decides.

A signed-in member of an organization (session or API token) or a sysadmin; anonymous callers
are sent to /login, signed-in users of no organization get 403. What each member sees on the
pages is narrowed to their organizations' sources and jobs (catalog.pages.harvest, with
store.access.staff_organizations). The RENKEI_STAFF_PAGES=open switch that stood in for
sign-in is gone: setting it opens nothing.
"""
from __future__ import annotations

import functools

from catalog import auth


def init_app(app) -> None:
    """Nothing to set up any more (kept so blueprints that call it need not change)."""


def staff_only(view):
    """Decorate every staff view with this."""
    @functools.wraps(view)
    def gated(*args, **kwargs):
        refused = auth.staff_required()
        if refused is not None:
            return refused
        return view(*args, **kwargs)
    return gated
