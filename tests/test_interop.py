"""Clients and validators nobody here wrote, against a running renkei (issue 16): ckanapi for the
CKAN API, pyshacl with SEMIC's official DCAT-AP 3.0.1 shapes (tests/data/dcat-ap, provenance in
tests/data/README.md), Google's schema.org Dataset properties, and openapi-core validating live
requests and responses against /openapi.json."""
from __future__ import annotations

import json
import re
from collections import Counter
from urllib.parse import quote

import ckanapi
import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF, SH

from tests.servers import TEST_DATA, FakeCKAN, package
from tests.test_ckan_api import PACKAGES, Served, active_ids, renkei_server
from tests.test_harvest_ckan import harvest, write_config

SHAPES = TEST_DATA / "dcat-ap"
DCATAP = Namespace("http://data.europa.eu/r5r/")


# A source that says which period its data covers (ckanext-dcat's temporal_start/_end extras).
TEMPORAL = {**package("temporal", "加古川市 避難所（令和6年度）", [("kakogawa_bom.csv", "CSV")]),
            "extras": [{"key": "temporal_start", "value": "2024-04-01"},
                       {"key": "temporal_end", "value": "2025-03-31"}]}


@pytest.fixture(scope="module")
def served(fixture_files, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interop")
    site = FakeCKAN(PACKAGES + [TEMPORAL], fixture_files, max_rows=4)
    with site.running() as site_url:
        result = harvest(tmp / "a", write_config(tmp / "a.yaml", site_url))
        assert result.returncode == 0, result.stderr
        with renkei_server(tmp / "a") as url:
            yield Served(site_url, url, tmp / "a")


@pytest.fixture
def ckan(served):
    with ckanapi.RemoteCKAN(served.url, user_agent="renkei-interop-test") as remote:
        yield remote


def every_package(ckan) -> list[dict]:
    out, start = [], 0
    while True:
        page = ckan.action.package_search(rows=100, start=start)
        out += page["results"]
        start += len(page["results"])
        if not page["results"] or start >= page["count"]:
            return out


# -- 11. CKAN API with ckanapi ------------------------------------------------------------------

def test_res_format_facet_and_fq_agree_with_the_resources_listed(ckan, served):
    packages = every_package(ckan)
    expected = Counter(f for p in packages for f in {r["format"] for r in p["resources"]})
    assert {"GeoJSON", "CSV", "GPKG", "OGC API Features", "KML"} <= set(expected)
    found = ckan.action.package_search(rows=0, **{"facet.field": ["res_format"],
                                                  "facet.limit": -1})
    assert found["facets"]["res_format"] == dict(expected)
    for fmt, n in expected.items():
        assert ckan.action.package_search(rows=0, fq=f'res_format:"{fmt}"')["count"] == n, fmt
    # Solr's OR between clauses, as CKAN passes fq on.
    either = ckan.action.package_search(rows=100, fq="res_format:KML OR res_format:GPKG")
    assert either["count"] == sum(1 for p in packages if {r["format"] for r in p["resources"]}
                                  & {"KML", "GPKG"})
    grouped = ckan.action.package_search(rows=100, fq="(res_format:KML OR res_format:GPKG) "
                                                      "-organization:yabu-city")
    assert grouped["count"] == either["count"] - sum(
        1 for p in packages if p["organization"]["name"] == "yabu-city"
        and {r["format"] for r in p["resources"]} & {"KML", "GPKG"})
    orgs = ckan.action.package_search(rows=100, fq="organization:yabu-city OR "
                                                   "organization:kasai-city")
    assert sorted(p["name"] for p in orgs["results"]) == [
        "hyogo-ckan--kasai-plane5", "hyogo-ckan--yabu-gpkg", "hyogo-ckan--yabu-kml"]


def test_facet_items_in_ckans_order(ckan):
    found = ckan.action.package_search(rows=0, **{"facet.field": ["organization", "tags",
                                                                  "res_format"]})
    for name, facet in found["search_facets"].items():
        shown = [i["display_name"] for i in facet["items"]]
        # ckan.logic.action.get.package_search: sorted by display_name, reverse=True
        assert shown == sorted(shown, reverse=True), name


def test_license_list_current_packages_and_organization_created(ckan, served):
    licences = ckan.action.license_list()
    assert {"cc-by-4.0"} <= {lic["id"] for lic in licences}
    cc = next(lic for lic in licences if lic["id"] == "cc-by-4.0")
    assert cc["url"].startswith("https://creativecommons.org/") and cc["title"]
    everything = ckan.action.current_package_list_with_resources(limit=1000)
    assert {p["id"] for p in everything} == active_ids(served.data_dir)
    assert all("resources" in p for p in everything)
    modified = [p["metadata_modified"] for p in everything]
    assert modified == sorted(modified, reverse=True)
    page2 = ckan.action.current_package_list_with_resources(limit=3, offset=3)
    assert [p["id"] for p in page2] == [p["id"] for p in everything[3:6]]
    for org in ckan.action.organization_list(all_fields=True):
        assert org["created"], org["name"]
        assert ckan.action.organization_show(id=org["name"])["created"] == org["created"]


# -- 12. DCAT-AP 3.0.1 SHACL ---------------------------------------------------------------------

def catalogue_graph(base: str) -> Graph:
    g, url = Graph(), f"{base}/catalog.ttl"
    while url:
        page = Graph().parse(data=requests.get(url, timeout=30).text, format="turtle")
        g += page
        nxt = page.value(predicate=URIRef("http://www.w3.org/ns/hydra/core#next"), any=True)
        url = str(nxt) if nxt is not None else None
    return g


def shacl_results(data: Graph) -> list[tuple[str, str, str]]:
    """(severity, path, focus class) of every result of the official shapes + range shapes."""
    from pyshacl import validate
    shapes = Graph()
    shapes.parse(SHAPES / "dcat-ap-SHACL.ttl", format="turtle")
    shapes.parse(SHAPES / "ranges.ttl", format="turtle")
    # The 3.0.1 release files name five property shapes (two of dcat:DatasetShape, two of
    # dcat:DistributionShape, one of dcat:RelationshipShape) that neither file defines, and
    # pyshacl refuses a dangling sh:property: those references (no constraint) are dropped.
    defined = set(shapes.subjects(SH.path, None))
    for shape, prop in list(shapes.subject_objects(SH.property)):
        if prop not in defined:
            shapes.remove((shape, SH.property, prop))
    _conforms, report, _text = validate(data, shacl_graph=shapes, inference="none",
                                        allow_warnings=True)
    out = []
    for res in report.subjects(RDF.type, SH.ValidationResult):
        focus = report.value(res, SH.focusNode)
        kinds = ",".join(sorted(str(c).rsplit("/", 1)[-1].rsplit("#", 1)[-1]
                                for c in data.objects(focus, RDF.type)))
        out.append((str(report.value(res, SH.resultSeverity)).rsplit("#", 1)[-1],
                    str(report.value(res, SH.resultPath)), kinds))
    return out


def test_dcat_ap_3_shacl_no_violations(served):
    data = catalogue_graph(served.url)
    results = shacl_results(data)
    violations = Counter(r for r in results if r[0] == "Violation")
    print("SHACL results:", Counter(r[0] for r in results), dict(violations))
    assert not violations, violations


def test_dcat_ap_recommended_properties(served):
    """The official 3.0.1 shapes check cardinalities and ranges only; the recommended
    properties the issue lists are checked here, on the same graph."""
    g = catalogue_graph(served.url)
    (cat,) = g.subjects(RDF.type, DCAT.Catalog)
    for prop in (DCTERMS.issued, DCTERMS.license, DCTERMS.spatial, DCAT.themeTaxonomy):
        assert g.value(cat, prop) is not None, prop
    for dist in g.subjects(RDF.type, DCAT.Distribution):
        assert g.value(dist, DCATAP.availability) is not None, dist
    for service in g.subjects(RDF.type, DCAT.DataService):
        for prop in (DCAT.contactPoint, DCTERMS.publisher, DCAT.servesDataset):
            assert g.value(service, prop) is not None, (service, prop)
    for ds in g.subjects(RDF.type, DCAT.Dataset):
        place = g.value(ds, DCTERMS.spatial)
        if place is not None:
            assert g.value(place, DCAT.centroid) is not None, ds
        assert g.value(ds, DCTERMS.publisher) is not None, ds   # the theme layers' too
    period = g.value(URIRef(f"{served.url}/datasets/hyogo-ckan--temporal"), DCTERMS.temporal)
    assert str(g.value(period, DCAT.startDate)) == "2024-04-01"
    assert str(g.value(period, DCAT.endDate)) == "2025-03-31"


def test_dcat_ap_uses_eu_vocabularies_and_types_objects(served):
    g = catalogue_graph(served.url)
    for dist in g.subjects(RDF.type, DCAT.Distribution):
        fmt = g.value(dist, DCTERMS.format)
        if fmt is not None and str(fmt).startswith("http://publications.europa.eu/"):
            assert (fmt, RDF.type, DCTERMS.MediaTypeOrExtent) in g
    langs = set(g.objects(None, DCTERMS.language))
    assert langs == {URIRef("http://publications.europa.eu/resource/authority/language/JPN")}
    theme_layer = next(d for d in g.subjects(RDF.type, DCAT.Dataset)
                       if str(d).endswith("/datasets/theme-shelter"))
    publisher = g.value(theme_layer, DCTERMS.publisher)
    assert publisher is not None and "兵庫県" in {str(o) for o in g.objects(publisher, None)}


# -- 13. schema.org Dataset (Google Dataset Search) -----------------------------------------------

def page_jsonld(url: str) -> dict:
    html = requests.get(url, timeout=30).text
    (block,) = re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    return json.loads(block)


GOOGLE_REQUIRED = ("name", "description")
GOOGLE_RECOMMENDED = ("url", "identifier", "keywords", "license", "creator",
                      "isAccessibleForFree", "spatialCoverage", "distribution")


@pytest.mark.parametrize("dataset", ["hyogo-ckan--evac-282103", "hyogo-ckan--population",
                                     "theme-shelter"])
def test_schema_org_dataset_has_googles_properties(served, dataset):
    doc = page_jsonld(f"{served.url}/datasets/{quote(dataset)}")
    assert doc["@type"] == "Dataset"
    for key in GOOGLE_REQUIRED:
        assert doc.get(key), key
    assert 50 <= len(doc["description"]) <= 5000
    for key in GOOGLE_RECOMMENDED:
        if key == "spatialCoverage" and dataset == "hyogo-ckan--population":
            continue   # a table without places
        assert doc.get(key), key
    assert re.match(r"^https?://", doc["license"]), doc["license"]   # a URL, not prose
    assert doc.get("dateModified"), "the catalogue knows when it changed"
    for dist in doc["distribution"]:
        assert dist["@type"] == "DataDownload"
        assert dist["contentUrl"].startswith("http") and dist["encodingFormat"]
    creator = doc["creator"]
    assert creator["@type"] in ("Organization", "GovernmentOrganization") and creator["name"]
    if dataset == "theme-shelter":
        assert creator["name"] == "兵庫県"


def test_schema_org_temporal_coverage_where_known(served):
    doc = page_jsonld(f"{served.url}/datasets/hyogo-ckan--temporal")
    assert doc["temporalCoverage"] == "2024-04-01/2025-03-31"
    other = page_jsonld(f"{served.url}/datasets/hyogo-ckan--evac-282103")
    assert "temporalCoverage" not in other   # not known: not invented


# -- 14. /openapi.json with openapi-core -------------------------------------------------------

def test_live_responses_match_openapi_json(served, ckan):
    # JSON-LD is JSON: the validator is told to read it so (it knows application/json only).
    config = Config(extra_media_type_deserializers={
        "application/ld+json": lambda value, **_params: json.loads(value)})
    spec = OpenAPI.from_dict(requests.get(served.url + "/openapi.json", timeout=10).json(),
                             config=config)
    u = served.url
    calls = [
        ("GET", u + "/api/3/action/package_search",
         {"q": "避難所", "rows": "2", "facet.field": json.dumps(["organization", "res_format"]),
          "fq": "res_format:GeoJSON OR res_format:KML"}),
        ("GET", u + "/api/3/action/package_show", {"id": "hyogo-ckan--evac-282103"}),
        ("GET", u + "/api/3/action/package_list", {}),
        ("GET", u + "/api/3/action/organization_list", {"all_fields": "true"}),
        ("GET", u + "/api/3/action/organization_show", {"id": "yabu-city"}),
        ("GET", u + "/api/3/action/license_list", {}),
        ("GET", u + "/api/3/action/current_package_list_with_resources", {"limit": "2"}),
        ("GET", u + "/api/3/action/package_show", {"id": "no-such-dataset"}),
        ("GET", u + "/catalog.jsonld", {}),
        ("GET", u + "/datasets/hyogo-ckan--evac-282103.jsonld", {}),
    ]
    for method, url, params in calls:
        resp = requests.request(method, url, params=params, timeout=30)
        req = RequestsOpenAPIRequest(resp.request)
        spec.validate_request(req)
        spec.validate_response(req, RequestsOpenAPIResponse(resp))
    # ckanapi sends facet.field as a JSON array string: the spec says so, and it works.
    sent = ckan.action.package_search(rows=0, **{"facet.field": ["tags"]})
    assert sent["facets"]["tags"]
