"""The OGC API's HTML pages load every asset from our own server (no CDN).

The demo sources are harvested once, the full app is served on 127.0.0.1, and each page
kind is fetched as HTML: every <script src>, <link href>, <img src>… must be same-origin
and answer 200, and the Japanese template words must still render. Plain <a href> may
point elsewhere (licence, pygeoapi.io): following a link loads nothing by itself.
"""

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from catalog.app import create_app
from tests.servers import live_server

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = '/usr/bin/chromium'
CDN_HOSTS = ('unpkg.com', 'cdnjs.cloudflare.com', 'cdn.jsdelivr.net', 'fonts.googleapis.com')


class _Assets(HTMLParser):
    """URLs a browser fetches on its own while loading the page."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('src'):
            self.urls.append(a['src'])
        if tag == 'link' and a.get('href') and set((a.get('rel') or '').lower().split()) & {
                'stylesheet', 'icon', 'preload', 'modulepreload', 'manifest'}:
            self.urls.append(a['href'])


def assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('data')
    env = dict(os.environ, no_proxy='*')
    result = subprocess.run([sys.executable, '-m', 'catalog.cli', '--data-dir', str(data_dir),
                             'harvest', '--config', str(REPO / 'catalog/examples/sources.yaml')],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    # The OGC API builds its links from base_url, known only once the port is bound.
    holder = {}
    with live_server(lambda environ, start: holder['app'](environ, start)) as url:
        holder['app'] = create_app(data_dir, base_url=url)
        yield url


@pytest.fixture(scope='module')
def pages(base):
    cols = requests.get(base + '/ogcapi/collections?f=json', timeout=30).json()['collections']
    cid = next(c['id'] for c in cols if not c['id'].startswith('theme-'))
    items = requests.get(f'{base}/ogcapi/collections/{cid}/items?f=json&limit=1',
                         timeout=30).json()
    iid = items['features'][0]['id']
    return {
        'landing': '/ogcapi?f=html',
        'collections': '/ogcapi/collections?f=html',
        'collection': f'/ogcapi/collections/{cid}?f=html',
        'items': f'/ogcapi/collections/{cid}/items?f=html',
        'item': f'/ogcapi/collections/{cid}/items/{iid}?f=html',
        'openapi': '/ogcapi/openapi?f=html',
    }


def test_pages_load_only_local_assets(base, pages):
    origin = urlsplit(base).netloc
    checked = set()
    for name, path in pages.items():
        r = requests.get(base + path, timeout=60, headers={'Accept-Language': 'ja'})
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        assert r.headers['Content-Type'].startswith('text/html'), name
        for host in CDN_HOSTS:
            assert host not in r.text, (name, host)
        urls = [urljoin(base + path, u) for u in assets(r.text)]
        assert urls, name  # every page has at least the stylesheet
        for url in urls:
            assert urlsplit(url).netloc == origin, (name, url)
            if url not in checked:
                got = requests.get(url, timeout=30)
                assert got.status_code == 200, (name, url, got.status_code)
                checked.add(url)
    # The libraries the maps need are among what was served.
    for lib in ('/ogcapi/vendor/leaflet/leaflet.js', '/ogcapi/vendor/leaflet/leaflet.css',
                '/ogcapi/vendor/bootstrap/css/bootstrap.min.css',
                '/ogcapi/vendor/leaflet-markercluster/leaflet.markercluster.js'):
        assert base + lib in checked, lib


def test_pages_keep_japanese_labels(base, pages):
    def get(name):
        return requests.get(base + pages[name], timeout=60,
                            headers={'Accept-Language': 'ja'}).text

    landing = get('landing')
    assert 'lang="ja"' in landing
    assert '兵庫県オープンデータ連携基盤' in landing
    assert 'コレクション' in get('collections')
    items = get('items')
    assert 'ホーム' in items and 'アイテム' in items
    openapi = get('openapi')
    assert 'OpenAPI 3.0 の JSON 文書' in openapi and '/ogcapi/openapi?f=json' in openapi
    assert requests.get(base + '/ogcapi/openapi?f=json', timeout=60).json()['openapi']


def test_vendor_route_serves_only_known_packages(base):
    assert requests.get(base + '/ogcapi/vendor/jquery/jquery.js', timeout=10).status_code == 404
    assert requests.get(base + '/ogcapi/vendor/leaflet/../../../__init__.py',
                        timeout=10).status_code == 404
    css = requests.get(base + '/ogcapi/vendor/leaflet/leaflet.css', timeout=10)
    assert css.status_code == 200 and '.leaflet-container' in css.text


def test_items_map_draws_markers_offline(base, pages):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f'{CHROMIUM} not installed: the browser check needs a local Chromium')
    playwright = pytest.importorskip('playwright.sync_api')
    origin = urlsplit(base).netloc
    outside, errors = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        try:
            page = browser.new_page()
            page.on('pageerror', lambda e: errors.append(str(e)))

            def route(r):
                # Base-map tiles (GSI) are the only outside requests we expect; never sent.
                if urlsplit(r.request.url).netloc == origin:
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()
            page.route('**/*', route)
            page.goto(base + pages['items'], wait_until='load', timeout=30000)
            page.wait_for_selector('#items-map .leaflet-marker-icon', timeout=15000)
            markers = page.locator('#items-map .leaflet-marker-icon').count()
        finally:
            browser.close()
    assert markers > 0
    assert errors == []
    assert all('cyberjapandata.gsi.go.jp' in u for u in outside), outside
