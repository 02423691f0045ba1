"""/organizations/<slug>/usage: the month's fee and every input behind it, requests per day
(an SVG bar chart with the same numbers as a table), per-dataset use and a CSV download — for
that organization's admins; /admin/usage: every organization, for the operator. The numbers
are those of `renkei usage report` (store.fees), computed from the metering roll-ups."""
from __future__ import annotations

import calendar
import re

from flask import Blueprint, Response, abort, current_app, render_template, request

from catalog import auth
from catalog.i18n import _
from store import access, fees
from store import terms as terms_store
from store import usage
from store.db import Organization

bp = Blueprint("usage", __name__)


def _month() -> str:
    month = request.args.get("month") or usage.current_month()
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        abort(400, description=_("月は YYYY-MM の形で指定してください。"))
    return month


def _allowed(org_id: str | None):
    """None when the caller may see the usage; else the response."""
    p = auth.principal()
    if org_id is None and p.is_sysadmin or org_id is not None and access.can_admin(p, org_id):
        return None
    if not p.signed_in:
        return auth.login_manager.unauthorized()
    abort(404)   # not an admin there: the page does not exist for them (as the audit page)


def _report(org_id: str | None, month: str):
    store = current_app.extensions["renkei_store"]
    terms = terms_store.for_month(store, month)
    with store.session() as s, s.begin():
        rows = fees.report(s, month, terms.fees, terms.version, organization=org_id)
        by_dataset = fees.dataset_rows(s, month, org_id)
        days = usage.daily(s, month, org_id)
        org = s.get(Organization, org_id) if org_id else None
    return terms, rows, by_dataset, days, org


def _chart(month: str, days: list[tuple[str, int, int, int]]) -> dict:
    year, mon = int(month[:4]), int(month[5:])
    per_day = {d: (n, b, f) for d, n, b, f in days}
    n_days = calendar.monthrange(year, mon)[1]
    series = [(f"{month}-{i:02d}",) + per_day.get(f"{month}-{i:02d}", (0, 0, 0))
              for i in range(1, n_days + 1)]
    top = max([n for _, n, _, _ in series] + [1])
    width, height, bar = 10 * n_days + 40, 160, 8
    bars = [{"x": 30 + 10 * i, "h": round(120 * n / top, 1), "y": 130 - round(120 * n / top, 1),
             "day": d, "n": n} for i, (d, n, _, _) in enumerate(series)]
    return {"series": series, "bars": bars, "top": top, "width": width, "height": height,
            "bar": bar}


@bp.route("/organizations/<org_id>/usage")
def organization_usage(org_id: str):
    denied = _allowed(org_id)
    if denied is not None:
        return denied
    month = _month()
    terms, rows, by_dataset, days, org = _report(org_id, month)
    if org is None:
        abort(404)
    return render_template("usage.html", org=org, month=month, terms=terms, rows=rows,
                           by_dataset=by_dataset, chart=_chart(month, days),
                           fields=fees.FIELDS)


@bp.route("/organizations/<org_id>/usage.csv")
def organization_usage_csv(org_id: str):
    denied = _allowed(org_id)
    if denied is not None:
        return denied
    month = _month()
    _terms, rows, by_dataset, _days, org = _report(org_id, month)
    if org is None:
        abort(404)
    if request.args.get("by") == "dataset":
        text = fees.to_csv(by_dataset, ["month", "owner", "dataset", "consumer", "requests",
                                        "errors", "bytes", "features"])
    else:
        text = fees.to_csv([r.as_dict() for r in rows])
    return Response(text, content_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="usage-{org_id}-{month}.csv"'})


@bp.route("/admin/usage")
def all_usage():
    denied = _allowed(None)
    if denied is not None:
        return denied
    month = _month()
    terms, rows, by_dataset, days, _org = _report(None, month)
    if request.args.get("format") == "csv":
        return Response(fees.to_csv([r.as_dict() for r in rows]),
                        content_type="text/csv; charset=utf-8", headers={
                            "Content-Disposition": f'attachment; filename="usage-{month}.csv"'})
    return render_template("usage.html", org=None, month=month, terms=terms, rows=rows,
                           by_dataset=by_dataset, chart=_chart(month, days), fields=fees.FIELDS)
