"""The CKAN write actions, so existing CKAN tools (ckanapi, `ckanapi load datasets`) publish
to renkei unchanged: package_create/update/patch/delete, resource_create/update/patch/delete
(multipart `upload` field) and organization_list_for_user (license_list is catalog.api.ckan's).

Rules (store.access): writes need an API token of scope `write` (a cookie session cannot write
through the API, which is why the API needs no CSRF token); an editor or admin of the owning
organization creates and updates its datasets; only an organization admin (or a sysadmin) may
make a dataset public, so an editor's new dataset starts at `organization` level. Harvested
datasets belong to their source and are not writable here. A dataset the caller may not read
is 404, as on every read path; one they may read but not change is 403. Every write is audited.
Files are translated by the harvest pipeline (harvesters.upload) before anything switches.
"""
from __future__ import annotations

import re
import secrets

from flask import request
from sqlalchemy import select

from catalog import auth
from catalog.api import ckan_dicts as dicts
from catalog.api.ckan import (ActionError, _base_url, _package, _store, action, boolean,
                              invalid, not_found, required_str)
from harvesters import upload
from harvesters.base import RemoteDataset, RemoteResource
from harvesters.files import LICENSES
from harvesters.pipeline import resource_id_for
from store import accounts, access
from store.db import Dataset, Organization, Resource

NAME = re.compile(r"^[a-z0-9_-]{2,100}$")


def denied(message: str) -> ActionError:
    return ActionError(403, {"__type": "Authorization Error", "message": f"Access denied: {message}"})


def _writer() -> access.Principal:
    p = auth.principal()
    if p.via != "token":
        raise denied("writing needs an API token (Authorization or X-CKAN-API-Key header)")
    if p.scope != "write":
        raise denied("this API token is read-only (scope read)")
    return p


def _validation(errors: dict) -> ActionError:
    return ActionError(409, {"__type": "Validation Error", **errors})


# -- reading what a client sends ------------------------------------------------------------------

def _tags(data: dict) -> list[str]:
    tags = data.get("tags")
    out = []
    if isinstance(tags, list):
        for t in tags:
            name = t.get("name") if isinstance(t, dict) else t
            if isinstance(name, str) and name.strip():
                out.append(name.strip())
    elif data.get("tag_string"):
        out = [t.strip() for t in str(data["tag_string"]).split(",") if t.strip()]
    return list(dict.fromkeys(out))[:100]


def _level(data: dict, default: str) -> str:
    try:
        if data.get("access_level") in (None, "") and data.get("private") in (None, ""):
            return default
        private = boolean(data, "private", False) if data.get("private") not in (None, "") \
            else None
        return access.normalize_level(data.get("access_level") or None, private)
    except ValueError as exc:
        raise invalid("access_level", str(exc)) from None


def _text(data: dict, key: str, limit: int = 10_000) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int, float)):
        raise invalid(key, "Must be a string")
    return str(value)[:limit]


def _remote_resources(ds: Dataset | None) -> dict[str, RemoteResource]:
    """What the dataset holds now, by resource id, as the pipeline's RemoteResources."""
    if ds is None:
        return {}
    return {r.id: RemoteResource(remote_id=r.remote_id, url=r.url, name=r.name or "",
                                 format=r.format, description=r.description or "",
                                 size=r.size) for r in ds.resources}


def _link(res: dict) -> RemoteResource:
    url = _text(res, "url") or ""
    if url and not re.match(r"^https?://", url):
        raise invalid("resources", "a resource URL must be http(s); send a file as `upload`")
    return RemoteResource(remote_id=secrets.token_hex(8), url=url,
                          name=_text(res, "name", 500) or url.rsplit("/", 1)[-1],
                          format=_text(res, "format", 40) or None,
                          description=_text(res, "description") or "")


# -- the one write path ---------------------------------------------------------------------------

def _load(s, ref: str) -> Dataset:
    ds = dicts.find_dataset(s, ref)
    if not auth.may_read(ds):
        raise not_found()
    return ds


def _check_writable(p, ds: Dataset) -> None:
    if ds.source_name != upload.UPLOAD_SOURCE:
        raise denied(f"{ds.id} is harvested from its source ({ds.source_name}); change it there")
    if not access.can_write(p, ds.organization_id):
        raise denied(f"you are not an editor of {ds.organization_id}")


def _save(p, *, dataset_id: str, fields: dict, org_id: str, level: str,
          resources: list[RemoteResource], staged: dict, action_name: str,
          before: str | None) -> dict:
    """Authorize the level, run the pipeline, audit, answer with the package dict."""
    if level == "public" and before != "public" and not access.can_make_public(p, org_id):
        raise denied(f"only an admin of {org_id} may make a dataset public; "
                     "send access_level organization or members")
    lic = fields.get("license_id")
    lic_title, lic_url = LICENSES.get((lic or "").lower(), (lic, None))
    meta = RemoteDataset(remote_id=dataset_id, name=dataset_id, title=fields["title"],
                         description=fields.get("notes") or "", tags=fields.get("tags") or [],
                         license_id=lic, license_title=lic_title, license_url=lic_url,
                         resources=resources,
                         raw={k: v for k, v in fields.items() if k != "resources"})
    store = _store()
    try:
        outcome = upload.publish(store, dataset_id, meta, org_id, level, staged)
    finally:
        for st in staged.values():
            st.path.unlink(missing_ok=True)
    if outcome.status == "failed":
        first = outcome.errors[0]
        where = " / ".join(x for x in (first.dataset, first.resource) if x)
        row = f" row {first.row}" if first.row is not None else ""
        raise _validation({"upload": [f"{where}{row}: {first.message}"]})
    with store.session() as s, s.begin():
        accounts.audit(s, p, action_name, "dataset", dataset_id, organization_id=org_id,
                       before=before, after=level,
                       files=[st.filename for st in staged.values()] or None)
    with store.session() as s:
        return _package(s, dicts.find_dataset(s, dataset_id))


def _stage_upload(org_id: str) -> upload.Staged | None:
    f = request.files.get("upload")
    if f is None or not f.filename:
        return None
    try:
        return upload.stage_file(_store(), f.stream, f.filename, org_id)
    except upload.UploadTooLarge as exc:
        raise _validation({"upload": [str(exc)]}) from None


def _download_url(dataset_id: str, rid: str, filename: str) -> str:
    from urllib.parse import quote
    return f"{_base_url()}/datasets/{dataset_id}/resources/{rid}/download/{quote(filename)}"


# -- packages -------------------------------------------------------------------------------------

@action("package_create")
def package_create(data: dict):
    """Create a dataset: name, title, notes, owner_org, tags, license_id, access_level
    (public | members | organization; `private: true` means organization), resources (links;
    send files with resource_create). Needs a write token of an editor of owner_org."""
    p = _writer()
    name = required_str(data, "name")
    if not NAME.match(name) or "--" in name:
        raise invalid("name", "Must be purely lowercase alphanumeric (ascii) characters and "
                              "these symbols: -_ (2 to 100 characters, no `--`)")
    org_id = required_str(data, "owner_org")
    store = _store()
    with store.session() as s:
        if s.get(Organization, org_id) is None:
            raise invalid("owner_org", "Organization does not exist")
        if not access.can_write(p, org_id):
            raise denied(f"you are not an editor of {org_id}")
        if s.get(Dataset, name) is not None:
            raise invalid("name", "That URL is already in use.")
    default = "public" if access.can_make_public(p, org_id) else "organization"
    resources = [_link(r) for r in data.get("resources") or [] if isinstance(r, dict)]
    fields = {"title": _text(data, "title", 500) or name, "notes": _text(data, "notes"),
              "tags": _tags(data), "license_id": _text(data, "license_id", 100)}
    return _save(p, dataset_id=name, fields=fields, org_id=org_id,
                 level=_level(data, default), resources=resources, staged={},
                 action_name="package_create", before=None)


def _update(data: dict, *, patch: bool, action_name: str):
    p = _writer()
    ref = required_str(data) if data.get("id") else required_str(data, "name")
    store = _store()
    with store.session() as s:
        ds = _load(s, ref)
        _check_writable(p, ds)
        held = _remote_resources(ds)
        current = {"title": ds.title, "notes": ds.description, "tags": list(ds.tags or []),
                   "license_id": ds.license_id}
        org_id, before, dataset_id = ds.organization_id, ds.access_level, ds.id
    fields = dict(current) if patch else {"title": ds.title, "notes": "", "tags": [],
                                          "license_id": None}
    for key, limit in (("title", 500), ("notes", 10_000), ("license_id", 100)):
        if key in data:
            fields[key] = _text(data, key, limit)
    if "tags" in data or "tag_string" in data:
        fields["tags"] = _tags(data)
    new_org = data.get("owner_org") or org_id
    if new_org != org_id and not access.can_write(p, new_org):
        raise denied(f"you are not an editor of {new_org}")
    if "resources" in data:
        resources = []
        for r in data.get("resources") or []:
            if not isinstance(r, dict):
                continue
            old = held.get(str(r.get("id") or ""))
            if old is not None:
                for key in ("name", "description", "format"):
                    if r.get(key) is not None:
                        setattr(old, key, str(r[key]))
                resources.append(old)
            else:
                resources.append(_link(r))
    else:
        resources = list(held.values())
    return _save(p, dataset_id=dataset_id, fields=fields, org_id=new_org,
                 level=_level(data, before), resources=resources, staged={},
                 action_name=action_name, before=before)


@action("package_update")
def package_update(data: dict):
    """Replace a dataset's metadata (id or name; fields as package_create). Resources listed
    with their id are kept; new ones without id are links; resources left out are removed."""
    return _update(data, patch=False, action_name="package_update")


@action("package_patch")
def package_patch(data: dict):
    """Change only the fields sent (id; any package_create field, access_level included)."""
    return _update(data, patch=True, action_name="package_patch")


@action("package_delete")
def package_delete(data: dict):
    """Withdraw a dataset (id): it leaves every read path; its record stays for the audit."""
    p = _writer()
    store = _store()
    with store.session() as s:
        ds = _load(s, required_str(data))
        _check_writable(p, ds)
        dataset_id, org_id, level = ds.id, ds.organization_id, ds.access_level
    upload.withdraw(store, dataset_id)
    with store.session() as s, s.begin():
        accounts.audit(s, p, "package_delete", "dataset", dataset_id, organization_id=org_id,
                       before=level, after=None)
    return None


# -- resources ------------------------------------------------------------------------------------

def _resource_write(data: dict, *, rid: str | None, patch: bool, delete: bool = False,
                    action_name: str):
    p = _writer()
    store = _store()
    with store.session() as s:
        if rid is not None:
            res = s.get(Resource, rid)
            if res is None:
                raise not_found("Resource was not found.")
            ds = _load(s, res.dataset_id)
        else:
            ds = _load(s, required_str(data, "package_id"))
        _check_writable(p, ds)
        held = _remote_resources(ds)
        fields = {"title": ds.title, "notes": ds.description, "tags": list(ds.tags or []),
                  "license_id": ds.license_id}
        org_id, level, dataset_id = ds.organization_id, ds.access_level, ds.id
    staged = {}
    if delete:
        held.pop(rid)
        target_rid = None
    else:
        if rid is None:
            remote = RemoteResource(remote_id=secrets.token_hex(8), url="", name="")
            held[resource_id_for(dataset_id, remote)] = remote
        else:
            remote = held[rid]
        target_rid = resource_id_for(dataset_id, remote)
        if not patch and rid is not None:   # update: what is not sent is cleared
            remote.name, remote.description = "", ""
        for key in ("name", "description", "format"):
            if data.get(key) is not None:
                setattr(remote, key, _text(data, key, 500 if key == "name" else 10_000))
        new = _stage_upload(org_id)
        if new is not None:
            staged[remote.remote_id] = new
            remote.url = _download_url(dataset_id, target_rid, new.filename)
            remote.name = remote.name or new.filename
            remote.format = remote.format or upload.guess_format(new.filename, None)
            remote.size = new.size
        elif data.get("url") is not None:
            link = _link({"url": data.get("url")})
            remote.url = link.url
            remote.name = remote.name or link.name
        if not remote.url:
            raise invalid("url", "Missing value: send a file as `upload` or an http(s) url")
    result = _save(p, dataset_id=dataset_id, fields=fields, org_id=org_id, level=level,
                   resources=list(held.values()), staged=staged, action_name=action_name,
                   before=level)
    if delete:
        upload.remove_original(store, rid)
        return None
    return next(r for r in result["resources"] if r["id"] == target_rid)


@action("resource_create")
def resource_create(data: dict):
    """Add a resource to a dataset (package_id): a file as multipart `upload`, or a `url`;
    name, description, format. The file is translated as a harvest is."""
    return _resource_write(data, rid=None, patch=False, action_name="resource_create")


@action("resource_update")
def resource_update(data: dict):
    """Replace a resource (id): a new `upload` replaces its file and its published version."""
    return _resource_write(data, rid=required_str(data), patch=False,
                           action_name="resource_update")


@action("resource_patch")
def resource_patch(data: dict):
    """Change only what is sent of a resource (id); `upload` replaces its file."""
    return _resource_write(data, rid=required_str(data), patch=True,
                           action_name="resource_patch")


@action("resource_delete")
def resource_delete(data: dict):
    """Remove a resource (id) and what was published from it."""
    return _resource_write(data, rid=required_str(data), patch=True, delete=True,
                           action_name="resource_delete")


# -- who may do what ------------------------------------------------------------------------------

@action("organization_list_for_user")
def organization_list_for_user(data: dict):
    """The organizations where the caller holds `permission` (manage_group: any role;
    create_dataset, update_dataset, delete_dataset: editor or admin; admin: admin)."""
    p = auth.principal()
    permission = str(data.get("permission") or "manage_group")
    wanted = {"manage_group": access.ROLES_ANY, "read": access.ROLES_ANY,
              "create_dataset": access.WRITE_ROLES, "update_dataset": access.WRITE_ROLES,
              "delete_dataset": access.WRITE_ROLES, "admin": ("admin",),
              "membership": ("admin",)}.get(permission)
    if wanted is None:
        raise invalid("permission", "Unknown permission")
    with _store().session() as s:
        orgs = list(s.scalars(select(Organization).order_by(Organization.id)))
        out = []
        for org in orgs:
            role = access.role_in(p, org.id)
            if role in wanted:
                d = dicts.organization_dict(org)
                d["capacity"] = role
                out.append(d)
    return out
