"""A read-only CKAN-compatible Action API at /api/3/action/<action> (and /api/action/<action>).

Aggregators (search.ckan.jp, BODIK, the national catalogue) and ckanapi harvest renkei as if it
were CKAN 2.10, so the wire format follows CKAN's own `ckan/views/api.py`: the envelope
``{"help", "success", "result" | "error": {"__type", "message"}}``, request data from the query
string (GET), a JSON body or a form (POST), an unknown action answered 400 with the bare JSON
string ``"Bad request - Action name not known: <name>"``, a write action 400 on GET ("use POST")
and 403 Authorization Error on POST, a missing record 404 Not Found Error, bad parameters 409
Validation Error and a bad query 400 Search Query Error.

`metadata_modified` is our own last change of the record (Dataset.updated_at), not the source's,
so an incremental harvester of renkei (``fq=metadata_modified:[T TO *]``) sees what we changed.
"""
from __future__ import annotations

import json
import logging
import re

from flask import Blueprint, Response, current_app, request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from catalog import auth
from catalog.api import ckan_dicts as dicts
from catalog.api import ckan_query
from store.db import Dataset, Organization

LOGGER = logging.getLogger(__name__)
bp = Blueprint("ckan_api", __name__)

API_VERSION = 3
CKAN_VERSION = "2.10.0"  # the Action API generation we imitate; clients branch on it
MAX_LIST = 1000
# CKAN's write actions all end like this; anything else we do not know is "not known".
WRITE_ACTION = re.compile(r"_(create|update|patch|delete|purge|revise|import|upsert|follow|"
                          r"unfollow|invite|clear)$|^(bulk_|member_|package_owner_org)")
ACTIONS: dict = {}
# JSONP: the name of a function, dotted at most (jQuery's jQuery123_456, app.cb); anything else
# would be script of the caller's choosing served from our origin.
JSONP_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}(?:\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,4}")


class ActionError(Exception):
    def __init__(self, status: int, error: dict):
        super().__init__(error.get("message"))
        self.status, self.error = status, error


def not_found(what: str | None = None) -> ActionError:
    return ActionError(404, {"__type": "Not Found Error",
                             "message": "Not found" + (f": {what}" if what else "")})


def invalid(field: str, message: str) -> ActionError:
    return ActionError(409, {"__type": "Validation Error", field: [message]})


def action(name: str):
    def register(fn):
        ACTIONS[name] = fn
        return fn
    return register


# -- the endpoint ---------------------------------------------------------------------------------

@bp.route("/api/3", methods=["GET"])
@bp.route("/api/3/action", methods=["GET"])
def api_version():
    return _finish(200, {"version": API_VERSION})


@bp.route("/api/3/action/<name>", methods=["GET", "POST"])
@bp.route("/api/action/<name>", methods=["GET", "POST"])
def call(name: str):
    fn = ACTIONS.get(name)
    if fn is None and not WRITE_ACTION.search(name):
        return _bad_request(f"Action name not known: {name}")
    envelope = {"help": f"{_base_url()}/api/3/action/help_show?name={name}"}
    if WRITE_ACTION.search(name) and request.method == "GET":
        return _bad_request("JSON Error: Invalid request. Please use POST method for your request")
    try:
        data = _request_data()
    except ValueError as exc:
        return _bad_request(f"JSON Error: {exc}")
    callback = data.pop("callback", None)
    if callback is not None and not (isinstance(callback, str) and JSONP_CALLBACK.fullmatch(callback)):
        return _bad_request("callback must be a JavaScript function name (letters, digits, _ "
                            "and $, dotted at most)")
    try:
        if fn is None:
            raise ActionError(403, {"__type": "Authorization Error",
                                    "message": f"Access denied: {name} is not available"})
        envelope.update(success=True, result=fn(data))
    except ActionError as exc:
        envelope.update(success=False, error=exc.error)
        return _finish(exc.status, envelope)
    except Exception:  # CKAN answers every other failure with this envelope, never a bare 500
        LOGGER.exception("CKAN API %s failed for %r", name, data)
        envelope.update(success=False, error={"__type": "Internal Server Error",
                                              "message": "Internal Server Error"})
        return _finish(500, envelope)
    return _finish(200, envelope, callback=callback if request.method == "GET" else None)


@bp.app_errorhandler(413)
def too_large(e):
    """A request over RENKEI_MAX_REQUEST: on the API in CKAN's shape (ckanapi raises
    ValidationError on it), elsewhere Flask's page."""
    if not request.path.startswith("/api/"):
        return e
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return _finish(413, {"help": None, "success": False, "error": {
        "__type": "Validation Error",
        "upload": [f"File upload too large: requests are limited to {limit // (1024 * 1024)} MB"]}})


def _request_data() -> dict:
    """CKAN's _get_request_data: form first, then the query string, then a JSON body."""
    def mixed(multi) -> dict:
        return {k: v[0] if len(v) == 1 else v for k, v in multi.to_dict(flat=False).items()}

    if request.method == "POST" and request.form:
        values = list(request.form.values())
        if len(values) == 1 and values[0] in ("1", ""):  # a JSON dict posted as a form key
            data = json.loads(next(iter(request.form.keys())))
        else:
            data = mixed(request.form)
    elif request.args:
        data = mixed(request.args)
    elif request.method == "POST" and request.get_data():
        try:
            data = json.loads(request.get_data())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"Error decoding JSON data. Error: {exc!r}") from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"Request data JSON decoded to {data!r} but it needs to be a dictionary.")
    return data


def _finish(status: int, body, callback: str | None = None) -> Response:
    text = json.dumps(body, ensure_ascii=False)
    mimetype = "application/json;charset=utf-8"
    if callback and status == 200:
        # Line and paragraph separators end a string literal in older JavaScript engines.
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        text, mimetype = f"{callback}({text});", "application/javascript;charset=utf-8"
    resp = Response(text, status=status, content_type=mimetype)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Access-Control-Allow-Origin"] = "*"  # public read-only data
    return resp


def _bad_request(message: str) -> Response:
    return _finish(400, f"Bad request - {message}")


def _store():
    return current_app.extensions["renkei_store"]


def _base_url() -> str:
    return current_app.config.get("RENKEI_BASE_URL") or request.url_root.rstrip("/")


# -- parameter helpers (CKAN's validators and their messages) -------------------------------------

def natural(data: dict, key: str, default: int | None) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return default
    try:
        n = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        n = None
    if n is None or isinstance(value, bool):
        raise invalid(key, "Invalid integer")
    if n < 0:
        raise invalid(key, "Must be a natural number")
    return min(n, 2**31)  # past any catalogue's end; SQLite's integers stop at 2**63


def boolean(data: dict, key: str, default: bool) -> bool:
    value = data.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on", "t"):
        return True
    if text in ("false", "0", "no", "n", "off", "f"):
        return False
    raise invalid(key, "Value must be a boolean")


def required_str(data: dict, key: str = "id") -> str:
    value = data.get(key)
    if isinstance(value, list) or value is None or str(value).strip() == "":
        raise invalid(key, "Missing value")
    return str(value).strip()


def str_list(data: dict, key: str) -> list[str]:
    value = data.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else [value]
        except ValueError:
            raise invalid(key, "Invalid list") from None
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise invalid(key, "Invalid list")
    return [str(v) for v in value]


# -- actions --------------------------------------------------------------------------------------

@action("status_show")
def status_show(data: dict):
    """Site information: title, URL, default locale, extensions and the CKAN API version."""
    return {"site_title": "兵庫オープンデータ連携カタログ（renkei）",
            "site_description": "兵庫県と県内市町のオープンデータを集約して提供する連携基盤です。",
            "site_url": _base_url(), "locale_default": "ja", "error_emails_to": None,
            "extensions": ["dcat", "spatial_metadata", "renkei"], "ckan_version": CKAN_VERSION}


@action("help_show")
def help_show(data: dict):
    """The documentation of an action (`name`)."""
    name = required_str(data, "name")
    if name not in ACTIONS:
        raise not_found("Action function not found")
    return (ACTIONS[name].__doc__ or "").strip() + f"\n\nSee {_base_url()}/api"


@action("package_search")
def package_search(data: dict):
    """Search datasets: q, fq, fq_list, rows (<= 1000), start, sort, facet, facet.field,
    facet.limit. fq understands organization, owner_org, tags, res_format, groups, license_id,
    name, id and metadata_modified/metadata_created ranges ([2025-01-01T00:00:00Z TO *])."""
    store = _store()
    with store.session() as s:
        try:
            query = ckan_query.parse_search(data, natural=natural, boolean=boolean,
                                            str_list=str_list, max_rows=MAX_LIST)
            found = ckan_query.run(store, s, query, where_readable=auth.read_where(),
                                   readable=auth.readable())
        except ckan_query.QueryError as exc:
            raise ActionError(400, {"__type": "Search Query Error",
                                    "message": f"Search Query is invalid: {exc}"}) from None
        results = _packages(s, found.ids)
        facets, search_facets = ckan_query.facet_dicts(s, found.facets)
    return {"count": found.count, "results": results, "sort": query.sort_text,
            "facets": facets, "search_facets": search_facets}


@action("package_show")
def package_show(data: dict):
    """One dataset by `id` (our id or its CKAN name)."""
    ref = required_str(data)
    with _store().session() as s:
        ds = dicts.find_dataset(s, ref)
        if not auth.may_read(ds):   # restricted: as if it did not exist
            raise not_found()
        return _package(s, ds)


@action("package_list")
def package_list(data: dict):
    """The names of all active datasets, sorted; `limit` and `offset` page the list."""
    limit, offset = natural(data, "limit", None), natural(data, "offset", 0)
    stmt = select(Dataset.id).where(Dataset.status == "active", auth.read_where()) \
        .order_by(Dataset.id)
    with _store().session() as s:
        names = sorted(dicts.ckan_name(i) for i in s.scalars(stmt))
    return names[offset: None if limit is None else offset + limit]


@action("resource_show")
def resource_show(data: dict):
    """One resource by `id` (harvested resources and the derived OGC API resources)."""
    ref = required_str(data)
    with _store().session() as s:
        found = dicts.find_resource(s, ref, _base_url(), may_read=auth.may_read)
    if found is None:
        raise not_found("Resource was not found.")
    return found


@action("organization_list")
def organization_list(data: dict):
    """Organization names (or dicts with all_fields); sort "name asc", "title asc" or
    "package_count desc"; limit, offset; `organizations` restricts to the names given."""
    all_fields = boolean(data, "all_fields", False)
    sort = str(data.get("sort") or data.get("order_by") or "name asc").strip().lower()
    limit, offset = natural(data, "limit", MAX_LIST), natural(data, "offset", 0)
    wanted = set(str_list(data, "organizations"))
    with _store().session() as s:
        counts = dict(s.execute(select(Dataset.organization_id, func.count()).where(
            Dataset.status == "active", auth.read_where()).group_by(Dataset.organization_id)).all())
        orgs = [o for o in s.scalars(select(Organization)) if not wanted or o.id in wanted]
    keys = {"name": lambda o: o.id, "title": lambda o: (o.name_ja, o.id),
            "package_count": lambda o: (counts.get(o.id, 0), o.id)}
    field, _, direction = sort.partition(" ")
    if field not in keys:
        raise invalid("sort", "Cannot sort by field `%s`" % field)
    orgs.sort(key=keys[field], reverse=direction.strip() == "desc")
    orgs = orgs[offset: offset + min(limit, MAX_LIST)]
    if all_fields:
        return [dicts.organization_dict(o, counts.get(o.id, 0)) for o in orgs]
    return [o.id for o in orgs]


@action("organization_show")
def organization_show(data: dict):
    """One organization by `id`; include_datasets adds its datasets (up to 1000)."""
    ref = required_str(data)
    with_datasets = boolean(data, "include_datasets", False)
    with _store().session() as s:
        org = s.get(Organization, ref)
        if org is None:
            raise not_found("Organization was not found.")
        stmt = select(Dataset).where(Dataset.organization_id == org.id, auth.read_where(),
                                     Dataset.status == "active").order_by(Dataset.id)
        datasets = list(s.scalars(stmt))
        out = dicts.organization_dict(org, len(datasets))
        if with_datasets:
            out["packages"] = _packages(s, [d.id for d in datasets[:MAX_LIST]])
    return out


@action("group_list")
def group_list(data: dict):
    """Groups are our themes (防災, 施設, …): names, or dicts with all_fields."""
    all_fields = boolean(data, "all_fields", False)
    with _store().session() as s:
        rows = s.execute(select(Dataset.theme, func.count()).where(
            Dataset.status == "active", Dataset.theme.is_not(None), auth.read_where())
            .group_by(Dataset.theme)).all()
    rows = sorted((t, n) for t, n in rows if t)
    if not all_fields:
        return [t for t, _ in rows]
    return [{"id": t, "name": t, "title": t, "display_name": t, "description": "",
             "image_display_url": "", "type": "group", "state": "active",
             "is_organization": False, "package_count": n} for t, n in rows]


@action("tag_list")
def tag_list(data: dict):
    """All tags of active datasets, sorted; `query` keeps those containing it."""
    query = str(data.get("query") or data.get("q") or "").strip()
    all_fields = boolean(data, "all_fields", False)
    with _store().session() as s:
        tags = ckan_query.all_tags(s, auth.read_where())
    if query:
        tags = [t for t in tags if query.casefold() in t.casefold()]
    if all_fields:
        return [{"id": t, "name": t, "display_name": t, "vocabulary_id": None} for t in tags]
    return tags


@action("license_list")
def license_list(data: dict):
    """The licences a publisher can choose and those the datasets the caller may read use, in
    CKAN's licence shape (id, title, url …)."""
    from harvesters.files import LICENSES
    with _store().session() as s:
        rows = s.execute(select(Dataset.license_id, Dataset.license_title, Dataset.license_url)
                         .where(Dataset.status == "active", auth.read_where()).distinct()).all()
    rows = [(k, title, url) for k, (title, url) in LICENSES.items()] + list(rows)
    seen: dict[str, dict] = {}
    for lid, title, url in rows:
        key = lid or title
        if not key or key in seen:
            continue
        is_open = dicts.license_is_open(lid or "")
        seen[key] = {"id": key, "title": title or key, "url": url or "", "status": "active",
                     "maintainer": "", "family": "", "domain_content": True,
                     "domain_data": True, "domain_software": False,
                     "od_conformance": "approved" if is_open else "not reviewed",
                     "osd_conformance": "not reviewed", "is_generic": False,
                     "is_okd_compliant": is_open, "is_osi_compliant": False}
    return [seen[k] for k in sorted(seen)]


@action("current_package_list_with_resources")
def current_package_list_with_resources(data: dict):
    """Active datasets with their resources, most recently modified first; limit, offset
    (page as in CKAN 2.9: page × limit)."""
    limit, offset = natural(data, "limit", None), natural(data, "offset", 0)
    page = natural(data, "page", None)
    if page is not None:
        if not page or limit is None:
            raise invalid("page", "Must be larger than 0 and given with limit")
        offset = (page - 1) * limit
    stmt = (select(Dataset.id).where(Dataset.status == "active", auth.read_where())
            .order_by(Dataset.updated_at.desc(), Dataset.id)
            .offset(offset).limit(min(limit if limit is not None else MAX_LIST, MAX_LIST)))
    with _store().session() as s:
        return _packages(s, list(s.scalars(stmt)))


# -- helpers --------------------------------------------------------------------------------------

def _package(s, ds: Dataset) -> dict:
    org = s.get(Organization, ds.organization_id) if ds.organization_id else None
    return dicts.package_dict(ds, org, _base_url())


def _packages(s, ids: list[str]) -> list[dict]:
    if not ids:
        return []
    rows = s.scalars(select(Dataset).where(Dataset.id.in_(ids)).options(
        selectinload(Dataset.resources), selectinload(Dataset.collections)))
    by_id = {d.id: d for d in rows}
    orgs = {o.id: o for o in s.scalars(select(Organization))}
    return [dicts.package_dict(by_id[i], orgs.get(by_id[i].organization_id), _base_url())
            for i in ids if i in by_id]
