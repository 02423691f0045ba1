"""Issue 11, the serving side: a broker that trusts no upstream byte. Each test plays one
attack through the real server (Flask app on 127.0.0.1 or a real `renkei serve`) and is named
after its item number in the issue (3, 7, 8, 11, 12, 13, 14, 16a).

The hostile catalogue is harvested by the real CLI from a `files` source whose CSV carries
script in a value and in a column name, and whose shelters go on into the merged theme layer.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from werkzeug.serving import make_server

from tests import pg_mode
from tests.servers import REPO, live_server

CHROMIUM = "/usr/bin/chromium"
SCRIPT_VALUE = "</script><script>window.__xss=1;alert(1)</script>"
SCRIPT_COLUMN = "<img src=x onerror=window.__xss=2;alert(2)>"
HOSTILE_ID = "hostile-files--shelters"


def hostile_sources(folder: Path) -> Path:
    """A `files` source: one shelter CSV whose name and an extra column are script."""
    folder.mkdir(parents=True, exist_ok=True)
    value = SCRIPT_VALUE.replace('"', '""')
    column = SCRIPT_COLUMN.replace('"', '""')
    (folder / "shelters.csv").write_text(
        f'名称,所在地,緯度,経度,"{column}"\n'
        f'"{value}",加古川町寺家町12-4,34.7668,134.8329,"<b onmouseover=alert(3)>x</b>"\n'
        f'別府公民館,別府町宮田町3-3,34.7298,134.8448,"line\u2028sep\u2029end &amp; <>"\n',
        encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text(textwrap.dedent("""\
        sources:
          - name: hostile-files
            type: files
            organization: kakogawa-city
            files:
              - id: shelters
                title: 避難所一覧（検証用）
                description: "悪意のある値を含む\\u2028避難所の表です。"
                url: shelters.csv
                license: cc-by-4.0
                tags: [避難所]
        """), encoding="utf-8")
    return config


def harvest(data_dir: Path, config: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


SECRETS = ("pa55word", "APIKEY-SECRET-1", "TOKEN-SECRET-2", "TOKEN-SECRET-3", "SOURCE-PW")
KEYED_ID = "keyed-ckan--keyed"
SPACED_ID = "keyed-ckan--spaced"


def keyed_packages(port: int) -> list[dict]:
    """CKAN packages whose links carry credentials, a space, and a title with control chars."""
    from tests.servers import package
    keyed = package("keyed", "鍵付き\x0bURL\x01の避難所", [("shelters.csv", "CSV"),
                                                        ("missing.csv", "CSV")])
    keyed["url"] = "https://www.city.example.lg.jp/page?access_token=TOKEN-SECRET-3"
    keyed["resources"][0]["url"] = (f"http://harvester:pa55word@127.0.0.1:{port}/files/"
                                    "shelters.csv?apikey=APIKEY-SECRET-1&format=csv")
    keyed["resources"][1]["url"] = (f"http://127.0.0.1:{port}/files/missing.csv"
                                    "?X-Amz-Signature=TOKEN-SECRET-2")
    spaced = package("spaced", "空白のあるURL", [("a b.csv", "CSV")])
    spaced["resources"][0]["url"] = f"http://127.0.0.1:{port}/files/a b.csv"
    return [keyed, spaced]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(base URL, app) of the catalogue on a data dir harvested by the real CLI from two hostile
    sources: files whose CSV carries script, and a CKAN whose links carry credentials."""
    from catalog.app import create_app
    from tests.servers import FakeCKAN, free_port
    root = tmp_path_factory.mktemp("hostile")
    config = hostile_sources(root / "src")
    csv_file = root / "src" / "shelters.csv"
    port = free_port()
    site = FakeCKAN(keyed_packages(port), {"shelters.csv": csv_file, "a b.csv": csv_file})
    server = make_server("127.0.0.1", port, site.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # allow_private_networks: the fixture is on 127.0.0.1 (the fetch policy of issue 11).
        config.write_text(config.read_text(encoding="utf-8")
                          + "  - name: keyed-ckan\n    type: ckan\n"
                          f"    url: http://harvester:SOURCE-PW@127.0.0.1:{port}\n"
                          "    allow_private_networks: true\n    rows: 100\n", encoding="utf-8")
        harvest(root / "data", config, check=False)
    finally:
        server.shutdown()
        thread.join(5)
    holder = {}
    with live_server(lambda environ, start: holder["app"](environ, start)) as url:
        holder["app"] = create_app(root / "data", base_url=url)
        yield url, holder["app"]


def _collections(base: str) -> tuple[str, str]:
    cols = requests.get(base + "/ogcapi/collections?f=json", timeout=30).json()["collections"]
    own = next(c["id"] for c in cols if not c["id"].startswith("theme-"))
    theme = next(c["id"] for c in cols if c["id"].startswith("theme-"))
    return own, theme


# -- item 3: stored XSS ----------------------------------------------------------------------

def _browse(base: str, paths: list[str], *, click_marker: bool = False):
    """Open each page in headless Chromium; return what ran, what CSP refused, the popups."""
    sync_api = pytest.importorskip("playwright.sync_api")
    origin = urlsplit(base).netloc
    report = {"dialogs": [], "errors": [], "csp": [], "xss": [], "popups": [], "rendered": []}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 375, "height": 812})
            page.on("dialog", lambda d: (report["dialogs"].append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: report["errors"].append(str(e)))
            page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
                    and report["csp"].append(m.text))
            # Tests never reach the internet: base-map tiles are refused here.
            page.route("**/*", lambda r: r.continue_() if urlsplit(r.request.url).netloc == origin
                       else r.abort())
            for path in paths:
                page.goto(base + path, wait_until="load", timeout=30000)
                page.wait_for_timeout(300)  # let the page scripts and any injected one run
                if page.locator("[data-rendered], #map[data-features]").count():
                    report["rendered"].append(path)
                marker = page.locator(".leaflet-marker-icon, #map path.leaflet-interactive")
                if click_marker:
                    marker.first.wait_for(timeout=10000)
                if click_marker and marker.count():
                    marker.first.click(force=True)
                    page.wait_for_selector(".leaflet-popup-content", timeout=5000)
                    report["popups"].append(page.evaluate(
                        "() => { const c = document.querySelector('.leaflet-popup-content');"
                        " return [c.textContent, c.querySelectorAll('script,img,b').length]; }"))
                if page.evaluate("() => window.__xss"):
                    report["xss"].append(path)
        finally:
            browser.close()
    return report


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_3_hostile_values_run_no_script_on_ogcapi_pages(hostile):
    base, _app = hostile
    own, theme = _collections(base)
    paths = []
    for cid in (own, theme):
        fids = [f["id"] for f in requests.get(
            f"{base}/ogcapi/collections/{cid}/items?f=json", timeout=30).json()["features"]]
        paths += [f"/ogcapi/collections/{cid}/items?f=html",
                  *[f"/ogcapi/collections/{cid}/items/{fid}?f=html" for fid in fids],
                  f"/ogcapi/collections/{cid}?f=html", f"/ogcapi/collections/{cid}/queryables?f=html",
                  f"/ogcapi/collections/{cid}/schema?f=html"]
    paths += ["/ogcapi?f=html", "/ogcapi/collections?f=html", "/ogcapi/conformance?f=html",
              "/ogcapi/openapi?f=html"]
    report = _browse(base, paths)
    assert report["dialogs"] == [] and report["xss"] == [], report
    assert report["errors"] == [] and report["csp"] == [], report
    # The maps still draw under the policy.
    assert f"/ogcapi/collections/{own}/items?f=html" in report["rendered"]
    assert f"/ogcapi/collections/{own}?f=html" in report["rendered"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_3_popups_show_hostile_values_as_text(hostile):
    base, _app = hostile
    own, theme = _collections(base)
    report = _browse(base, [f"/ogcapi/collections/{theme}/items?f=html&limit=1",
                            f"/ogcapi/collections/{own}/items?f=html&limit=1"], click_marker=True)
    assert report["dialogs"] == [] and report["xss"] == [], report
    assert len(report["popups"]) == 2, report
    for text, elements in report["popups"]:
        assert elements == 0
    # The theme layer's title field is the shelter's name: shown literally.
    assert any(SCRIPT_VALUE in text for text, _ in report["popups"]), report["popups"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium")
def test_3_catalogue_dataset_page_runs_no_script_and_maps_under_csp(hostile):
    base, _app = hostile
    report = _browse(base, [f"/datasets/{HOSTILE_ID}", "/datasets/theme-shelter", "/",
                            f"/datasets?q={quote('避難所')}", "/api", "/organizations"])
    assert report["dialogs"] == [] and report["xss"] == [], report
    assert report["errors"] == [] and report["csp"] == [], report
    assert f"/datasets/{HOSTILE_ID}" in report["rendered"]
    # The map popup (catalog/static/map.js) shows the hostile name as text.
    popups = _browse(base, [f"/datasets/{HOSTILE_ID}"], click_marker=True)["popups"]
    assert popups and popups[0][1] == 0 and "</script>" in popups[0][0], popups


def test_3_json_in_pages_is_escaped_and_every_page_has_a_csp(hostile):
    base, app = hostile
    own, _theme = _collections(base)
    client = app.test_client()
    html = client.get(f"/ogcapi/collections/{own}/items?f=html").get_data(as_text=True)
    assert "</script><script>" not in html and SCRIPT_COLUMN not in html
    assert "\\u003c/script\\u003e" in html  # the value is there, as JSON escapes
    import json
    import re

    def data_block(path):
        page = client.get(path).get_data(as_text=True)
        block = re.search(r'<script type="application/json" id="items-data">(.*?)</script>',
                          page, re.S)
        assert block and not set(block.group(1)) & {"<", ">", "&", "\u2028", "\u2029"}
        return [v for f in json.loads(block.group(1)) for v in f["properties"].values()]
    assert SCRIPT_VALUE in data_block(f"/ogcapi/collections/{own}/items?f=html")
    # A layer that kept the hostile column: separators and markup survive as JSON escapes.
    raw = _own_collection(client)
    assert "line\u2028sep\u2029end &amp; <>" in data_block(f"/ogcapi/collections/{raw}/items?f=html")
    assert "<script>" not in html  # no inline script at all: everything is in files
    for path in ("/", f"/datasets/{HOSTILE_ID}", "/ogcapi?f=html",
                 f"/ogcapi/collections/{own}/items?f=html", "/api/3/action/package_list",
                 "/catalog.ttl", "/no-such-page"):
        r = client.get(path)
        csp = r.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], path
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
        assert r.headers.get("X-Content-Type-Options") == "nosniff", path
        assert r.headers.get("Referrer-Policy"), path


# -- item 16a: JSONP callback ----------------------------------------------------------------

@pytest.mark.parametrize("callback", [
    "alert(document.domain)//", "cb;alert(1)", "<script>", "a b", "1cb", "cb.", "a..b",
    "x" * 70, "cb\u2028", "", "cb()", "a.b.c.d.e.f.g"])
def test_16a_jsonp_callback_must_be_a_function_name(hostile, callback):
    base, _app = hostile
    r = requests.get(base + "/api/3/action/package_list", params={"callback": callback}, timeout=10)
    assert r.status_code == 400, (callback, r.text[:200])
    assert r.headers["Content-Type"].startswith("application/json")
    assert callback not in r.text or callback == ""


@pytest.mark.parametrize("callback", ["cb", "jQuery3410_1700000000000", "app.handlers.$cb"])
def test_16a_jsonp_with_a_function_name_is_javascript_with_nosniff(hostile, callback):
    base, _app = hostile
    r = requests.get(base + "/api/3/action/package_show",
                     params={"id": HOSTILE_ID, "callback": callback}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/javascript")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.text.startswith(callback + "({") and r.text.endswith("});")
    # A separator in harvested text (the description) cannot end a string literal.
    assert "\u2028" not in r.text and "\\u2028" in r.text


# -- item 11: secrets and paths on public pages ----------------------------------------------

def _public_documents(client) -> dict[str, str]:
    paths = [f"/datasets/{KEYED_ID}", f"/datasets/{SPACED_ID}", f"/datasets/{HOSTILE_ID}",
             f"/api/3/action/package_show?id={KEYED_ID}",
             f"/api/3/action/package_show?id={HOSTILE_ID}",
             "/api/3/action/package_search?rows=100",
             "/catalog.ttl", "/catalog.jsonld", "/catalog.rdf", f"/datasets/{KEYED_ID}.ttl",
             f"/datasets/{HOSTILE_ID}.jsonld", "/feeds/datasets.atom", "/sitemap.xml", "/datasets"]
    out = {}
    for path in paths:
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        out[path] = r.get_data(as_text=True)
    return out


def test_11_public_pages_and_apis_show_no_secrets_or_server_paths(hostile):
    base, app = hostile
    data_dir = Path(app.config["RENKEI_DATA"])
    src_dir = str(data_dir.parent / "src")
    client = app.test_client()
    docs = _public_documents(client)
    for path, text in docs.items():
        for secret in SECRETS:
            assert secret not in text, (path, secret)
        assert src_dir not in text and str(data_dir) not in text, path
    # The links are still there, redacted; the file of a `files` source by its name.
    show = client.get(f"/api/3/action/package_show?id={KEYED_ID}").get_json()["result"]
    urls = [r["url"] for r in show["resources"]]
    assert any(u.endswith("/files/shelters.csv?apikey=%2A%2A%2A&format=csv")
               or u.endswith("/files/shelters.csv?apikey=***&format=csv") for u in urls), urls
    files = client.get(f"/api/3/action/package_show?id={HOSTILE_ID}").get_json()["result"]
    assert files["resources"][0]["url"] == "shelters.csv"
    assert "shelters.csv" in docs[f"/datasets/{HOSTILE_ID}"]


def test_11_staff_pages_need_a_signed_in_member(hostile, tmp_path):
    from catalog.app import create_app
    from tests.accounts import sysadmin_headers
    _base, app = hostile
    data_dir = app.config["RENKEI_DATA"]
    closed = create_app(data_dir).test_client()
    for path in ("/harvest", "/harvest/1", "/harvest?source=keyed-ckan"):
        resp = closed.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], path
    opened = create_app(data_dir).test_client()
    opened.environ_base["HTTP_AUTHORIZATION"] = sysadmin_headers(data_dir)["Authorization"]
    listing = opened.get("/harvest")
    assert listing.status_code == 200 and "keyed-ckan" in listing.get_data(as_text=True)
    texts = [listing.get_data(as_text=True)]
    for job_id in (1, 2, 3, 4):
        r = opened.get(f"/harvest/{job_id}")
        if r.status_code == 200:
            texts.append(r.get_data(as_text=True))
    joined = "\n".join(texts)
    assert "missing.csv" in joined and "127.0.0.1" in joined  # the error and the source shown
    for secret in SECRETS:
        assert secret not in joined, secret


def test_11_the_old_environment_switch_opens_nothing(hostile, monkeypatch):
    from catalog.app import create_app
    _base, app = hostile
    monkeypatch.setenv("RENKEI_STAFF_PAGES", "open")
    assert create_app(app.config["RENKEI_DATA"]).test_client().get("/harvest").status_code == 302


# -- item 12: one bad value never breaks the catalogue-wide exports --------------------------

def test_12_catalogue_exports_parse_despite_a_space_and_control_characters(hostile):
    import xml.etree.ElementTree as ET
    from rdflib import Graph, URIRef
    from rdflib.namespace import DCAT, DCTERMS
    _base, app = hostile
    client = app.test_client()
    graphs = {}
    for fmt, rdf_format in (("ttl", "turtle"), ("rdf", "xml"), ("jsonld", "json-ld")):
        r = client.get(f"/catalog.{fmt}")
        assert r.status_code == 200, (fmt, r.get_data(as_text=True)[:300])
        graphs[fmt] = Graph().parse(data=r.get_data(as_text=True), format=rdf_format)
        if fmt == "rdf":
            ET.fromstring(r.get_data())  # well-formed XML
    g = graphs["ttl"]
    assert len(g) == len(graphs["rdf"]) == len(graphs["jsonld"])
    titles = {str(t) for t in g.objects(None, DCTERMS.title)}
    assert "鍵付きURLの避難所" in titles  # the title kept, its control characters gone
    downloads = {str(u) for u in g.objects(None, DCAT.downloadURL)}
    assert any(u.endswith("/files/a%20b.csv") for u in downloads), downloads
    # Every dataset of the catalogue is in the export, the one with a bad URL included.
    datasets = set(g.subjects(None, DCAT.Dataset))
    assert {str(d).rsplit("/", 1)[-1] for d in datasets} >= {KEYED_ID, SPACED_ID, HOSTILE_ID}
    for fmt in ("ttl", "rdf"):
        r = client.get(f"/datasets/{SPACED_ID}.{fmt}")
        assert r.status_code == 200
        Graph().parse(data=r.get_data(as_text=True), format={"ttl": "turtle", "rdf": "xml"}[fmt])
    assert isinstance(next(iter(datasets)), URIRef)


def test_12_atom_feeds_and_sitemap_are_well_formed(hostile):
    import xml.etree.ElementTree as ET
    _base, app = hostile
    client = app.test_client()
    atom = "{http://www.w3.org/2005/Atom}"
    for path in ("/feeds/datasets.atom", "/feeds/organizations/kakogawa-city.atom", "/sitemap.xml"):
        r = client.get(path)
        assert r.status_code == 200, path
        root = ET.fromstring(r.get_data())
        if path.endswith(".atom"):
            titles = [e.findtext(atom + "title") for e in root.iter(atom + "entry")]
            assert "鍵付きURLの避難所" in titles, (path, titles)


# -- item 14: bad input is a 400 (or 404), never a 500 ---------------------------------------

def _own_collection(client) -> str:
    cols = client.get("/ogcapi/collections?f=json").get_json()["collections"]
    return next(c["id"] for c in cols if c["id"].startswith("keyed-ckan--spaced"))


def _cmp(i: int) -> dict:
    return {"op": "=", "args": [{"property": "名称"}, f"x{i}"]}


def test_14_out_of_range_numbers_are_client_errors(hostile):
    from catalog.app import create_app
    _base, app = hostile
    from tests.accounts import sysadmin_headers
    client = create_app(app.config["RENKEI_DATA"]).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = \
        sysadmin_headers(app.config["RENKEI_DATA"])["Authorization"]
    cid = _own_collection(client)
    expected = {
        f"/ogcapi/collections/{cid}/items?offset=9223372036854775808": 400,
        f"/ogcapi/collections/{cid}/items?offset=9223372036854775808&f=html": 400,
        f"/ogcapi/collections/{cid}/items/99999999999999999999999": 404,
        f"/ogcapi/collections/{cid}/items/99999999999999999999999?f=html": 404,
        "/harvest/99999999999999999999": 404,
        "/harvest?page=99999999999999999999": 400,
        f"/catalog.ttl?page={10**21}": 400,
        f"/catalog.rdf?page={10**21}": 400,
        f"/catalog.jsonld?page={2**63}": 400,
        f"/ogcapi/collections/{cid}/items?bbox=nan,nan,nan,nan": 400,
        f"/ogcapi/collections/{cid}/items?bbox=0,0,nan,1": 400,
        f"/ogcapi/collections/{cid}/items?bbox=-inf,0,inf,1": 400,
        f"/ogcapi/collections/{cid}/items?bbox=nan,0,1,1&f=csv": 400,
    }
    got = {path: client.get(path).status_code for path in expected}
    assert got == expected


@pytest.mark.parametrize("name, doc, status", [
    ("property as a list", {"property": ["a"]}, 400),
    ("compared property as a list", {"op": "=", "args": [{"property": ["a"]}, 1]}, 400),
    ("isNull of a dict", {"op": "isNull", "args": [{"property": {"a": 1}}]}, 400),
    ("NaN in a bbox literal", {"op": "s_intersects", "args": [{"property": "geometry"},
                                                              {"bbox": [float("nan"), 0, 1, 1]}]}, 400),
    ("90 OR terms", {"op": "or", "args": [_cmp(i) for i in range(90)]}, 200),
    ("256 AND terms", {"op": "and", "args": [_cmp(i) for i in range(256)]}, 200),
    ("3000 OR terms", {"op": "or", "args": [_cmp(i) for i in range(3000)]}, 400),
])
def test_14_cql2_json_filters(hostile, name, doc, status):
    import json
    _base, app = hostile
    client = app.test_client()
    cid = _own_collection(client)
    r = client.get(f"/ogcapi/collections/{cid}/items",
                   query_string={"filter-lang": "cql2-json", "filter": json.dumps(doc)})
    assert r.status_code == status, (name, r.get_data(as_text=True)[:300])


@pytest.mark.parametrize("terms, status", [(90, 200), (256, 200), (3000, 400)])
def test_14_cql2_text_or_chains_are_flat_with_a_budget(hostile, terms, status):
    _base, app = hostile
    client = app.test_client()
    cid = _own_collection(client)
    text = " OR ".join(f"\"名称\" = 'x{i}'" for i in range(terms - 1)) + " OR \"名称\" = '別府公民館'"
    r = client.get(f"/ogcapi/collections/{cid}/items", query_string={"filter": text})
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    if status == 200:
        assert r.get_json()["numberMatched"] == 1  # the chain is applied, not ignored
    else:
        assert "too many terms" in r.get_json()["description"]


def test_14_nested_filters_within_budget_run_beyond_it_are_400(hostile):
    import json
    from ogcapi.cql import MAX_NESTING
    _base, app = hostile
    client = app.test_client()
    cid = _own_collection(client)

    def nested(depth):  # as text: json.dumps itself recurses
        node = json.dumps(_cmp(0))
        for d in range(depth):
            node = f'{{"op": "{"and" if d % 2 else "or"}", "args": [{json.dumps(_cmp(d + 1))}, {node}]}}'
        return node
    for depth, status in ((MAX_NESTING, 200), (MAX_NESTING + 1, 400), (900, 400)):
        r = client.get(f"/ogcapi/collections/{cid}/items",
                       query_string={"filter-lang": "cql2-json", "filter": nested(depth)})
        assert r.status_code == status, (depth, r.get_data(as_text=True)[:300])


def test_14_sweep_query_parameters_for_500s(hostile):
    """hypothesis over the query parameters of the OGC API items and the CKAN API search."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    _base, app = hostile
    client = app.test_client()
    cid = _own_collection(client)
    numbers = st.one_of(st.integers(min_value=-2**70, max_value=2**70).map(str),
                        st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", " ", "1.5"]))
    text = st.text(max_size=30)
    ogc = st.fixed_dictionaries({}, optional={
        "offset": numbers, "limit": numbers, "bbox": st.lists(numbers, max_size=7).map(",".join),
        "f": st.sampled_from(["json", "html", "csv", "jsonld", "xml", ""]),
        "sortby": text, "properties": text, "filter": text,
        "filter-lang": st.sampled_from(["cql2-text", "cql2-json", "x"]),
        "crs": text, "bbox-crs": text, "skipGeometry": text, "resulttype": text, "名称": text})
    ckan = st.fixed_dictionaries({}, optional={
        "q": text, "fq": text, "rows": numbers, "start": numbers, "sort": text,
        "facet.field": text, "facet.limit": numbers, "include_private": text})

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(ogc, ckan, st.sampled_from(["package_search", "package_list", "organization_list",
                                        "tag_list", "package_show"]))
    def sweep(ogc_params, ckan_params, action):
        r = client.get(f"/ogcapi/collections/{cid}/items", query_string=ogc_params)
        assert r.status_code < 500, (ogc_params, r.get_data(as_text=True)[:300])
        r = client.get(f"/api/3/action/{action}", query_string=ckan_params)
        assert r.status_code < 500, (action, ckan_params, r.get_data(as_text=True)[:300])
    sweep()


# -- item 7: a republish mid-download never cuts the body ------------------------------------

BIG_ROWS = 15_000


def _write_points(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pad = marker * 130  # ~400 bytes a row: the body outgrows the sockets' buffers
    lines = ["地点,緯度,経度,備考"] + [
        f"地点{i},{34.7 + (i % 1000) * 0.0001:.6f},{134.8 + (i // 1000) * 0.0001:.6f},{pad}{i}"
        for i in range(BIG_ROWS)]
    (folder / "big.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text("sources:\n  - name: big-files\n    type: files\n"
                      "    organization: kakogawa-city\n    files:\n      - id: big\n"
                      "        title: 測定地点の一覧\n        url: big.csv\n"
                      "        license: cc-by-4.0\n", encoding="utf-8")
    return config


class _SlowDownload:
    """A raw-socket client with a tiny receive buffer: the server blocks mid-body."""

    def __init__(self, base: str, path: str):
        import socket
        host, port = urlsplit(base).hostname, urlsplit(base).port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        self.sock.connect((host, port))
        self.sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        self.data = bytearray()

    def read(self, at_least: int) -> None:
        while len(self.data) < at_least:
            got = self.sock.recv(4096)
            if not got:
                break
            self.data += got

    def rest(self) -> tuple[bytes, bytes]:
        while True:
            got = self.sock.recv(65536)
            if not got:
                break
            self.data += got
        self.sock.close()
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return head, body


def _dechunk(body: bytes) -> bytes:
    """HTTP/1.1 chunked transfer coding; a cut stream (no last chunk) raises."""
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise AssertionError(f"the body was cut after {sum(map(len, out))} bytes")
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        chunk = body[end + 2:end + 2 + size]
        if len(chunk) != size:
            raise AssertionError(f"the body was cut after {sum(map(len, out))} bytes")
        out.append(chunk)
        pos = end + 2 + size + 2


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A data dir with one 15,000-feature layer (GeoJSON ~9 MB); yields (data dir, its folder)."""
    root = tmp_path_factory.mktemp("big")
    harvest(root / "data", _write_points(root / "src", "あ"))
    return root / "data", root


def _big_collection(data_dir: Path) -> tuple[str, Path]:
    from store.db import Collection, Store
    with Store(data_dir).session() as s:
        col = s.query(Collection).filter(Collection.dataset_id == "big-files--big").one()
        return col.id, data_dir / col.path


def _tables(data_dir: Path, name: str) -> list[str]:
    """The PostGIS version tables of that name in the data dir's schema."""
    from sqlalchemy import text
    from store import features_pg
    with features_pg.engine_for(data_dir).connect() as conn:
        return list(conn.execute(text("SELECT relname FROM pg_class WHERE relname = :n AND "
                                      "relnamespace = current_schema()::regnamespace"),
                                 {"n": name}).scalars())


def test_7_republish_mid_download_leaves_the_old_body_whole(big):
    import csv as csv_module
    import io
    import json
    from catalog.app import create_app
    from store.db import Collection, Store
    data_dir, tmp_path = big
    cid, old_path = _big_collection(data_dir)
    marker = "い" if "あ" in (tmp_path / "src" / "big.csv").read_text(encoding="utf-8")[:200] else "あ"
    old = "あ" if marker == "い" else "い"
    with live_server(create_app(data_dir)) as base:
        downloads = {ext: _SlowDownload(base, f"/datasets/big-files--big/collections/{cid}.{ext}")
                     for ext in ("geojson", "csv")}
        for d in downloads.values():
            d.read(64 * 1024)  # the stream has begun
        harvest(data_dir, _write_points(tmp_path / "src", marker))  # a new version, the old removed
        assert not old_path.exists()
        with Store(data_dir).session() as s:
            assert s.get(Collection, cid).path != str(old_path.relative_to(data_dir))
        old_table = old_path.name.removeprefix("postgis:")
        if pg_mode.active():   # the readers hold the old table: its drop was left for later
            assert _tables(data_dir, old_table) == [old_table]
        (gj_head, geojson), (csv_head, csv_body) = (downloads["geojson"].rest(),
                                                    downloads["csv"].rest())
    if pg_mode.active():   # once they are done, the next sweep drops it
        from store import features_pg
        assert features_pg.drop_superseded(features_pg.engine_for(data_dir)) == 1
        assert _tables(data_dir, old_table) == []
    assert gj_head.startswith(b"HTTP/1.") and b" 200 " in gj_head.split(b"\r\n")[0]
    features = json.loads(geojson)["features"]
    assert len(features) == BIG_ROWS
    assert all(f["properties"]["備考"].startswith(old) for f in features)  # the old version, whole
    rows = list(csv_module.reader(io.StringIO(csv_body.decode("utf-8-sig"))))
    assert len(rows) == BIG_ROWS + 1 and rows[0][3] == "備考"
    assert all(r[3].startswith(old) for r in rows[1:])


# -- item 8: slow clients cannot take the site down ------------------------------------------

def test_8_slow_readers_neither_block_the_site_nor_get_killed(big):
    """A real `renkei serve` with one worker and a 3 s timeout: two clients read a 9 MB
    download slowly for longer than the timeout; meanwhile `/` answers, and afterwards both
    bodies are whole."""
    import json
    import time
    from tests.servers import renkei_serve
    data_dir, _root = big
    cid, _path = _big_collection(data_dir)
    with renkei_serve(data_dir, workers=1, extra_args=("--threads", "4", "--timeout", "3")) \
            as (base, _pid):
        readers = [_SlowDownload(base, f"/datasets/big-files--big/collections/{cid}.geojson")
                   for _ in range(2)]
        for r in readers:
            r.read(16 * 1024)
        started = time.monotonic()
        home = requests.get(base + "/", timeout=5)  # while both readers hold the server
        assert home.status_code == 200 and "兵庫" in home.text
        while time.monotonic() - started < 5:  # slower than the worker timeout
            for r in readers:
                r.read(len(r.data) + 8 * 1024)
            time.sleep(0.25)
        assert requests.get(base + "/datasets", timeout=5).status_code == 200
        bodies = [r.rest()[1] for r in readers]
    for body in bodies:
        assert len(json.loads(body)["features"]) == BIG_ROWS


# -- item 13: package_search?q=…&rows=1 reads one page, not every match -----------------------

def seed_catalogue(data_dir: Path, n: int) -> None:
    """n active datasets whose titles all match 避難所 (rows and their index entries)."""
    from sqlalchemy import insert
    from store.db import Dataset, Store
    store = Store(data_dir)
    orgs = ("kakogawa-city", "kasai-city", "yabu-city")
    rows = [{"id": f"seed--{i:05d}", "source_name": "seed", "remote_id": str(i),
             "name": f"seed-{i:05d}", "title": f"指定避難所一覧 第{i}版", "description": "防災の資料",
             "tags": ["防災", f"t{i % 7}"], "organization_id": orgs[i % 3],
             "license_id": "cc-by-4.0", "status": "active", "raw": {}} for i in range(n)]
    with store.session() as s:
        s.execute(insert(Dataset), rows)
        s.commit()
    with store.engine.begin() as conn:
        store.search.upsert_many(conn, [
            {"id": r["id"], "title": r["title"], "description": r["description"],
             "tags": r["tags"], "organization": r["organization_id"], "formats": ["CSV"],
             "license_id": r["license_id"], "modified": f"2025-01-{1 + i % 28:02d}"}
            for i, r in enumerate(rows)])


def test_13_package_search_pages_in_the_search_index(tmp_path):
    from sqlalchemy import event
    from catalog.app import create_app
    n = 2_100  # more than one 1,000-id batch of the old collect-everything loop
    seed_catalogue(tmp_path / "data", n)
    app = create_app(tmp_path / "data")
    store = app.extensions["renkei_store"]
    statements = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cur, stmt, params, ctx, many: statements.append(stmt))
    client = app.test_client()

    def search(**params):
        statements.clear()
        r = client.get("/api/3/action/package_search", query_string=params)
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        return r.get_json()["result"], [s for s in statements if "MATCH" in s]

    result, fts = search(q="避難所", rows=1, **{"facet.field": '["organization"]'})
    assert result["count"] == n and len(result["results"]) == 1
    assert len(fts) <= 2, f"{len(fts)} full-text queries for one page"  # any-field + title
    assert sum(v for v in result["facets"]["organization"].values()) == n
    best = store.search.search("避難所", per_page=1).ids
    assert [p["id"] for p in result["results"]] == best
    # Offsets page exactly like the catalogue's own pages; filters go with them.
    result, _ = search(q="避難所", rows=5, start=1000)
    assert [p["id"] for p in result["results"]] == store.search.search("避難所", page=201, per_page=5).ids
    result, fts = search(q="避難所", rows=3, fq="organization:kasai-city")
    assert result["count"] == n // 3 and len(fts) <= 2
    assert all(p["owner_org"] == "kasai-city" for p in result["results"])
    result, _ = search(q="避難所", rows=1, start=2**63)
    assert result["count"] == n and result["results"] == []
