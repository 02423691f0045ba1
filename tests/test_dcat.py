"""DCAT-AP 3 from a running renkei, parsed back with rdflib: mandatory classes and properties,
Hydra paging followed to the end, modified_since, per-dataset documents and licence URIs."""
from __future__ import annotations

import pytest
import requests
from rdflib import Graph, Literal, URIRef
from rdflib import namespace as ns  # (module attribute: pytest probes DCAT names otherwise)

from catalog.api.dcat import CC_BY_4, GOV_STANDARD_TERMS, HYDRA, license_uri
from tests.test_ckan_api import PACKAGES, active_ids, harvested_renkei

MIMETYPES = {"ttl": "text/turtle", "jsonld": "application/ld+json", "rdf": "application/rdf+xml"}
PARSERS = {"ttl": "turtle", "jsonld": "json-ld", "rdf": "xml"}


@pytest.fixture(scope="module")
def served(fixture_files, tmp_path_factory):
    # Four datasets a page, so the small fixture catalogue spans several pages.
    with harvested_renkei(fixture_files, tmp_path_factory.mktemp("dcat"),
                          RENKEI_DCAT_PAGE_SIZE=4) as s:
        yield s


def fetch(url: str, fmt: str, **params) -> Graph:
    r = requests.get(url, params=params, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(MIMETYPES[fmt])
    return Graph().parse(data=r.text, format=PARSERS[fmt])


def walk(base: str, fmt: str, **params) -> tuple[list[Graph], int]:
    """Follow hydra:next from page 1; returns the pages and hydra:totalItems."""
    pages, url, total = [], f"{base}/catalog.{fmt}", None
    while url:
        g = fetch(url, fmt, **params)
        params = {}  # the next link carries them
        pages.append(g)
        (view,) = g.subjects(ns.RDF.type, HYDRA.PartialCollectionView)
        assert (view, ns.RDF.type, HYDRA.PagedCollection) in g  # the older form, same node
        total = int(g.value(view, HYDRA.totalItems))
        nxt = g.value(view, HYDRA.next)
        assert (nxt is None) == (g.value(view, HYDRA.nextPage) is None)
        url = str(nxt) if nxt is not None else None
        assert len(pages) < 50
    return pages, total


@pytest.mark.parametrize("fmt", ["ttl", "jsonld", "rdf"])
def test_paged_catalogue_has_every_dataset_once(served, fmt):
    pages, total = walk(served.url, fmt)
    expected = active_ids(served.data_dir)
    assert total == len(expected) and len(pages) == -(-total // 4)
    seen = []
    for g in pages:
        (cat,) = g.subjects(ns.RDF.type, ns.DCAT.Catalog)
        assert g.value(cat, ns.DCTERMS.title) is not None
        assert g.value(cat, ns.DCTERMS.description) is not None
        publisher = g.value(cat, ns.DCTERMS.publisher)
        assert (publisher, ns.RDF.type, ns.FOAF.Agent) in g
        assert g.value(publisher, ns.DCTERMS.identifier) == Literal("280003")
        datasets = list(g.objects(cat, ns.DCAT.dataset))
        assert 0 < len(datasets) <= 4
        seen += [str(g.value(d, ns.DCTERMS.identifier)) for d in datasets]
    assert sorted(seen) == sorted(expected)


def test_mandatory_dcat_ap_properties(served):
    g = Graph()
    for page in walk(served.url, "ttl")[0]:
        g += page
    datasets = list(g.subjects(ns.RDF.type, ns.DCAT.Dataset))
    assert len(datasets) == len(active_ids(served.data_dir))
    for d in datasets:
        assert g.value(d, ns.DCTERMS.title) is not None and g.value(d, ns.DCTERMS.description) is not None
        for dist in g.objects(d, ns.DCAT.distribution):
            assert (dist, ns.RDF.type, ns.DCAT.Distribution) in g
            assert g.value(dist, ns.DCAT.accessURL) is not None
    titles = {str(g.value(d, ns.DCTERMS.title)): d for d in datasets}
    assert {p["title"] for p in PACKAGES} <= set(titles)
    evac = titles["加古川市 指定避難所"]
    urls = {str(g.value(x, ns.DCAT.downloadURL)) for x in g.objects(evac, ns.DCAT.distribution)}
    assert f"{served.site}/files/gsi_evacuation_282103.json" in urls
    publisher = g.value(evac, ns.DCTERMS.publisher)
    assert g.value(publisher, ns.DCTERMS.identifier) == Literal("282103")  # 全国地方公共団体コード
    assert Literal("加古川市", lang="ja") in set(g.objects(publisher, ns.FOAF.name))
    licences = {g.value(x, ns.DCTERMS.license) for x in g.objects(evac, ns.DCAT.distribution)}
    assert licences == {URIRef(CC_BY_4)}
    # The OGC API collection: a distribution served by the catalogue's dcat:DataService.
    ogc = [x for x in g.objects(evac, ns.DCAT.distribution) if g.value(x, ns.DCAT.accessService)]
    assert len(ogc) == 1
    service = g.value(ogc[0], ns.DCAT.accessService)
    assert (service, ns.RDF.type, ns.DCAT.DataService) in g
    assert g.value(service, ns.DCAT.endpointURL) == URIRef(served.url + "/ogcapi/")
    assert (service, ns.DCAT.servesDataset, evac) in g
    collection = requests.get(str(g.value(ogc[0], ns.DCAT.accessURL)), params={"f": "json"},
                              timeout=10)
    assert collection.ok and collection.json()["title"] == "加古川市 指定避難所"
    # The translated downloads: one file distribution each, fetched from the running renkei.
    file_type = "http://publications.europa.eu/resource/authority/file-type/"
    iana = "https://www.iana.org/assignments/media-types/"
    downloads = {str(g.value(x, ns.DCTERMS.format)).removeprefix(file_type): x
                 for x in g.objects(evac, ns.DCAT.distribution)
                 if str(g.value(x, ns.DCAT.downloadURL)).startswith(served.url)}
    assert set(downloads) == {"GEOJSON", "CSV", "GPKG"}
    media = {"GEOJSON": "application/geo+json", "CSV": "text/csv",
             "GPKG": "application/geopackage+sqlite3"}
    for fmt, x in downloads.items():
        url = g.value(x, ns.DCAT.downloadURL)
        assert g.value(x, ns.DCAT.accessURL) == url
        assert str(url).endswith("." + fmt.lower())
        assert g.value(x, ns.DCAT.mediaType) == URIRef(iana + media[fmt])
        assert str(g.value(x, ns.DCTERMS.title)).startswith("加古川市 指定避難所（")
        assert g.value(x, ns.DCTERMS.license) == URIRef(CC_BY_4)
        got = requests.get(str(url), timeout=30)
        assert got.status_code == 200 and got.headers["Content-Type"].split(";")[0] == media[fmt]


def test_modified_since(served):
    everything, total = walk(served.url, "ttl")
    _, none = walk(served.url, "ttl", modified_since="2999-01-01T00:00:00Z")
    _, all_ = walk(served.url, "ttl", modified_since="2000-01-01")
    assert none == 0 and all_ == total
    r = requests.get(served.url + "/catalog.ttl", params={"modified_since": "yesterday"},
                     timeout=10)
    assert r.status_code == 400 and "ISO 8601" in r.text
    assert requests.get(served.url + "/catalog.ttl", params={"page": "0"}, timeout=10)\
        .status_code == 400
    g = fetch(served.url + "/catalog.ttl", "ttl", modified_since="2000-01-01", page=2)
    (view,) = g.subjects(ns.RDF.type, HYDRA.PartialCollectionView)
    link = g.value(view, HYDRA.next) or g.value(view, HYDRA.first)
    assert "modified_since=2000-01-01" in str(link)


@pytest.mark.parametrize("fmt", ["jsonld", "ttl", "rdf"])
def test_one_dataset_document_wins_over_the_html_page(served, fmt):
    g = fetch(f"{served.url}/datasets/hyogo-ckan--ksj-p23.{fmt}", fmt)
    (d,) = g.subjects(ns.RDF.type, ns.DCAT.Dataset)
    assert str(g.value(d, ns.DCTERMS.title)) == "海岸保全施設（国土数値情報 P23）"
    dists = list(g.objects(d, ns.DCAT.distribution))
    # The zip, its two layers in the OGC API, and three downloads per layer.
    assert len(dists) == 1 + 2 + 2 * 3
    assert sum(1 for x in dists if g.value(x, ns.DCAT.accessService)) == 2
    downloads = [str(g.value(x, ns.DCAT.downloadURL)) for x in dists
                 if str(g.value(x, ns.DCAT.downloadURL)).startswith(served.url)]
    assert sorted(u.rsplit(".", 1)[1] for u in downloads) == ["csv", "csv", "geojson", "geojson",
                                                              "gpkg", "gpkg"]
    page = requests.get(f"{served.url}/datasets/hyogo-ckan--ksj-p23", timeout=10)
    assert page.ok and page.headers["Content-Type"].startswith("text/html")
    missing = requests.get(f"{served.url}/datasets/no-such.{fmt}", timeout=10)
    assert missing.status_code == 404


def test_licence_uris():
    assert license_uri("cc-by-4.0", None, None) == CC_BY_4
    assert license_uri(None, "クリエイティブ・コモンズ 表示 4.0 国際", None) == CC_BY_4
    assert license_uri("cc-by", None, "http://www.opendefinition.org/licenses/cc-by") == CC_BY_4
    assert license_uri("pdl-1.0", "公共データ利用規約（第1.0版）", None).endswith(
        "public_data_license_v1.0")
    assert license_uri(None, "政府標準利用規約（第2.0版）", None) == GOV_STANDARD_TERMS
    assert license_uri("cc0", None, None) == "http://creativecommons.org/publicdomain/zero/1.0/"
    assert license_uri("other", "独自の規約", "https://example.lg.jp/terms") == \
        "https://example.lg.jp/terms"
    assert license_uri("other", "独自の規約", "javascript:alert(1)") is None
