"""The published specification: /openapi.json loads as OpenAPI 3, /api renders it in Japanese
without outside assets, and schemathesis drives every operation against a running renkei."""
from __future__ import annotations

import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.test_ckan_api import harvested_renkei


@pytest.fixture(scope="module")
def served(fixture_files, tmp_path_factory):
    with harvested_renkei(fixture_files, tmp_path_factory.mktemp("openapi")) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(served.url + "/openapi.json")


def test_spec_and_its_japanese_page(served):
    spec = requests.get(served.url + "/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.") and spec["servers"] == [{"url": served.url}]
    assert spec["externalDocs"]["url"].startswith(served.url + "/ogcapi/openapi")
    for action in ("status_show", "package_search", "package_show", "package_list",
                   "organization_list", "organization_show", "group_list", "tag_list",
                   "resource_show"):
        assert f"/api/3/action/{action}" in spec["paths"]
    assert {"/catalog.jsonld", "/catalog.ttl", "/catalog.rdf", "/datasets/{id}.jsonld",
            "/datasets/{id}.ttl"} <= set(spec["paths"])
    page = requests.get(served.url + "/api", timeout=10)
    assert page.ok and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert '<html lang="ja">' in html and "API 仕様" in html and "データセットの検索" in html
    assert 'href="/ogcapi/openapi"' in html and 'href="/openapi.json"' in html
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert f"{method.upper()} {path}" in html
            for p in op.get("parameters", []):
                assert f"<code>{p['name']}</code>" in html, (path, p["name"])
    # Nothing loaded from elsewhere: every script/style/img source is on this site.
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html)


def test_no_operation_answers_500(api_schema):
    """Every operation, a few generated requests each (examples kept small: well under a
    minute). Driven through hypothesis directly: schemathesis's pytest plugin does not run
    under pytest 9 (AttributeError: 'Function' object has no attribute '_nodeid')."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 17  # (schemathesis leaves out the schema's own URL)
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=[not_a_server_error])
        check()
