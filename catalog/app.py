"""The application factory: one Flask app serving the catalogue, the open APIs and the OGC API."""
from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

from flask import Flask

from sqlalchemy import select

from store import access, features_pg
from store.db import Dataset, Store

STATIC_DIR = Path(__file__).resolve().parent / "static"


class _App(Flask):
    """Flask, asking once per function whether it is a coroutine function: Flask asks for
    every hook and view on every request (a dozen times per OGC API item, more than a tenth
    of its Python calls, issue 17), and a function never changes kind."""

    def ensure_sync(self, func):
        return self.async_to_sync(func) if _is_async(func) else func


@functools.lru_cache(maxsize=1024)   # bounded: per-request closures (after_this_request) pass
def _is_async(func) -> bool:
    return inspect.iscoroutinefunction(func)


def create_app(data_dir: Path | str, *, base_url: str = "http://127.0.0.1:8000",
               config: dict | None = None, make_dir: bool = True) -> Flask:
    app = _App(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config.update(RENKEI_DATA=str(data_dir), RENKEI_BASE_URL=base_url.rstrip("/"),
                      JSON_AS_ASCII=False,
                      # The whole request; each organization's own file limit is checked
                      # while the file streams to disk (harvesters.upload).
                      MAX_CONTENT_LENGTH=int(os.environ.get("RENKEI_MAX_REQUEST",
                                                            1024 * 1024 * 1024)))
    app.json.ensure_ascii = False
    if config:
        app.config.update(config)
    from store import applications  # noqa: F401 (its tables exist before the Store makes them)
    store = Store(data_dir, make_dir=make_dir)   # a stateless web server makes none
    app.extensions["renkei_store"] = store
    _read_replica_for_gets(app, store)
    from catalog import auth, metering, quotas
    metering.init_app(app, store)   # first: its clock starts before sign-in and limits
    auth.init_app(app)
    limiter = quotas.init_app(app, store)   # after auth: limits are counted per token or user

    from ogcapi.blueprint import register_ogcapi
    from ogcapi.api import OGCAPI
    ogcapi = OGCAPI(app.config["RENKEI_BASE_URL"] + "/ogcapi",
                    list_collections=lambda: collection_dicts(store),
                    version=store.publish_version,
                    # PostgreSQL mode: features are PostGIS tables in the catalogue's database.
                    engine=store.engine if features_pg.enabled(store.data_dir) else None,
                    # Servers sharing RENKEI_SECRET_KEY accept each other's next links' keysets.
                    keyset_secret=app.secret_key,
                    **({"count_budget_ms": app.config["RENKEI_COUNT_BUDGET_MS"]}
                       if "RENKEI_COUNT_BUDGET_MS" in app.config else {}))
    ogc_bp = register_ogcapi(app, ogcapi, prefix="/ogcapi",
                             readable=lambda: access.labels(auth.principal()))
    # POST items is a search (CQL2 JSON body), not a change: no CSRF token to ask for.
    auth.csrf.exempt(ogc_bp)
    # One per app: it owns the GeoPackages this app has open (ogcapi.api).
    app.extensions["renkei_ogcapi"] = ogcapi

    from catalog.api.ckan import bp as ckan_api
    from catalog.api import ckan_write  # noqa: F401 (registers the write actions)
    from catalog.api.dcat import bp as dcat
    from catalog.api.openapi import bp as openapi_spec
    # Token-authenticated calls carry no cookie: no CSRF; its writes accept tokens only.
    auth.csrf.exempt(ckan_api)
    for blueprint in (ckan_api, dcat, openapi_spec, auth.bp):  # before pages: specific routes
        app.register_blueprint(blueprint)
    auth.throttle_sign_in(app, limiter)
    from catalog import oidc
    oidc.init_app(app)
    from catalog.pages import (admin, admin_applications, common, dataset, downloads, harvest,
                               hazards, join, publish, search, site, terms, usage)
    for module in (common, usage, search, publish, dataset, downloads, site, harvest, hazards,
                   admin, join, terms, admin_applications):
        app.register_blueprint(module.bp)
    from catalog import security_headers
    security_headers.init_app(app)
    return app


def _read_replica_for_gets(app: Flask, store: Store) -> None:
    """With RENKEI_DATABASE_REPLICA_URL, GET and HEAD requests read through the replica
    (store.session(), searches, the publish counter); writes and metering, token checks and
    harvest locks always use the primary (store.engine). A page shown right after a write may
    lag by the replica's delay: every form posts to the primary and redirects. In PostgreSQL
    mode with or without a replica, GET sessions read in autocommit (store.db.Store.session)."""
    if not store.postgresql:
        return
    from flask import g, request

    @app.before_request
    def _reads_through_the_replica():
        if request.method in ("GET", "HEAD"):
            g.renkei_reading = store.start_reading()

    @app.teardown_request
    def _reads_done(_exc):
        token = g.pop("renkei_reading", None)
        if token is not None:
            store.stop_reading(token)


def collection_dicts(store: Store) -> list[dict]:
    """The published collections every read path serves (OGC API, tiles, hazard lookup), each
    with its dataset's access label (store.access): callers filter by their labels."""
    out = []
    with store.session() as s:
        levels = dict(((i, access.dataset_label(level, org)) for i, level, org in s.execute(
            select(Dataset.id, Dataset.access_level, Dataset.organization_id))))
    for c in store.active_collections():
        out.append({"access": levels.get(c.dataset_id, "organization"), "id": c.id,
                    "title": c.title, "description": c.description,
                    "keywords": c.keywords or [], "bbox": c.bbox, "count": c.feature_count,
                    "path": c.path if features_pg.is_postgis(c.path) else str(store.data_dir / c.path),
                    "layer": c.layer, "fields": c.fields,
                    "theme": c.dataset.theme, "dataset": c.dataset_id, "version": c.version})
    return out
