"""Catalogue pages served by a real HTTP server on 127.0.0.1 and fetched with requests."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

from catalog.app import create_app
from store.db import Collection, Dataset, Organization, Resource, Source, Store
from tests.servers import live_server

def index_doc(ds: Dataset, org: Organization | None) -> dict:
    return {"id": ds.id, "title": ds.title, "description": ds.description, "tags": ds.tags,
            "organization": ds.organization_id,
            "organization_title": org.name_ja if org else "", "theme": ds.theme,
            "formats": sorted({(r.format or "").upper() for r in ds.resources} - {""}),
            "license_id": ds.license_id, "modified": ds.modified}


def seed(store: Store) -> None:
    orgs = {o.id: o for o in [Organization(id="hyogo-pref", name_ja="兵庫県", code="280003"),
                              Organization(id="himeji", name_ja="姫路市", code="282014"),
                              Organization(id="kakogawa", name_ja="加古川市", code="282103")]}
    ckan = "https://ckan.example.lg.jp"
    cc_by = dict(license_id="cc-by-4.0", license_title="クリエイティブ・コモンズ 表示 4.0 国際",
                 license_url="https://creativecommons.org/licenses/by/4.0/deed.ja")

    def dataset(id, title, org, modified, description="", tags=(), resources=(), **kw):
        ds = Dataset(id=id, source_name="hyogo-ckan", remote_id=id, name=id, title=title,
                     description=description, tags=list(tags), organization_id=org,
                     modified=modified, landing_page=kw.pop("landing_page", f"{ckan}/dataset/{id}"),
                     **{**cc_by, **kw})
        for i, r in enumerate(resources):
            ds.resources.append(Resource(id=f"{id}/r{i}", remote_id=f"r{i}", position=i, **r))
        return ds

    shelters = dataset(
        "himeji-shelters", "指定緊急避難場所一覧", "himeji", "2024-06-01T09:00:00",
        "姫路市が指定する指定緊急避難場所の一覧です。\n令和６年度版。", ["避難所", "防災"],
        theme="shelter", raw={"extras": [{"key": "更新頻度", "value": "毎年4月"}]}, resources=[
            dict(name="避難場所一覧（CSV）", url=f"{ckan}/dl/shelters.csv", format="CSV",
                 size=2048, encoding="cp932", state="table",
                 preview={"columns": ["名称", "所在地", "収容人数"],
                          "rows": [["白鷺小学校", "姫路市本町", 300], ["城南公園", "姫路市南町", None]]},
                 quality=[{"layer": "shelters", "rows_in": 3, "rows_published": 2,
                           "rejected": [{"row": 3, "reason": "緯度経度が数値ではありません"}],
                           "warnings": ["列「備考」は空です"], "crs_source": "EPSG:4326",
                           "encoding": "cp932"}]),
            dict(name="避難場所（GeoJSON）", url=f"{ckan}/dl/shelters.geojson", format="GeoJSON",
                 size=5 * 1024 * 1024, encoding="utf-8", state="ok")])
    shelters.collections.append(Collection(
        id="himeji-shelters-geojson", resource_id="himeji-shelters/r1", title="指定緊急避難場所一覧",
        path="features/himeji-shelters.gpkg", feature_count=120))
    datasets = [
        shelters,
        dataset("kakogawa-aed", "ＡＥＤ設置箇所一覧", "kakogawa", "2024-03-01T00:00:00",
                "市内の公共施設に設置したＡＥＤです。", ["AED"],
                resources=[dict(name="AED一覧", url=f"{ckan}/dl/aed.csv", format="CSV")]),
        dataset("hyogo-population", "兵庫県の推計人口", "hyogo-pref", "2024-07-01T00:00:00",
                "市区町別の人口と世帯数。", ["統計"],
                resources=[dict(name="推計人口", url=f"{ckan}/dl/pop.xlsx", format="XLSX")]),
        dataset("evil", "注意<b>太字</b>", "hyogo-pref", "2020-01-01T00:00:00",
                "<script>alert('xss')</script>\n2行目\n\n[罠](javascript:alert(4)) **太字** [公式](https://example.lg.jp/)",
                ["<i>タグ</i>"],
                landing_page="javascript:alert(2)", license_url="javascript:alert(3)",
                resources=[dict(name="危険なリンク", url="javascript:alert(1)", format="CSV")]),
    ]
    datasets += [dataset(f"facility-{n:02d}", f"公共施設一覧 その{n}", "hyogo-pref",
                         f"2019-01-{n:02d}T00:00:00", "県の公共施設。", ["施設"])
                 for n in range(1, 23)]
    withdrawn = dataset("old-shelters", "旧避難所一覧", "himeji", "2018-01-01T00:00:00",
                        status="withdrawn")
    docs = [index_doc(ds, orgs.get(ds.organization_id)) for ds in datasets]
    with store.session() as s:
        s.add_all(list(orgs.values()) + datasets + [withdrawn])
        s.add(Source(name="hyogo-ckan", type="ckan", url=f"{ckan}/"))
        s.commit()
    with store.engine.begin() as conn:
        for d in docs:
            store.search.upsert(conn, d)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("pages") / "data")
    seed(app.extensions["renkei_store"])
    with live_server(app) as url:
        yield url


def get(site, path, params=None, status=200):
    r = requests.get(site + path, params=params, timeout=10)
    assert r.status_code == status, (path, params, r.status_code, r.text[:500])
    return r.text


def result_titles(html: str) -> list[str]:
    return re.findall(r'<h3><a href="/datasets/[^"]+">([^<]*)</a></h3>', html)


def test_home(site):
    html = get(site, "/")
    assert '<html lang="ja">' in html
    assert 'href="#main"' in html and 'id="main"' in html  # skip link and its target
    assert '<label for="q">' in html and 'id="q" name="q"' in html
    assert "<strong>26</strong> データセット" in html  # the withdrawn one is not counted
    assert "<strong>1</strong> 地図データ" in html
    assert result_titles(html)[:2] == ["兵庫県の推計人口", "指定緊急避難場所一覧"]
    assert re.search(r'href="/datasets\?organization=himeji">姫路市</a> <span class="count">1件', html)
    r = requests.get(site + "/static/renkei.css", timeout=10)
    assert r.status_code == 200 and "focus-visible" in r.text


@pytest.mark.parametrize("q, title", [("人口", "兵庫県の推計人口"), ("AED", "ＡＥＤ設置箇所一覧"),
                                      ("aed", "ＡＥＤ設置箇所一覧"), ("ＡＥＤ", "ＡＥＤ設置箇所一覧"),
                                      ("避難所\u3000姫路", "指定緊急避難場所一覧")])
def test_search_japanese_and_ascii(site, q, title):
    html = get(site, "/datasets", {"q": q})
    assert result_titles(html) == [title]
    assert "<strong>1</strong> 件のデータセット" in html
    assert 'name="q" type="search" value="' in html


def test_search_all_paginated(site):
    html = get(site, "/datasets")
    assert "<strong>26</strong> 件のデータセット（1 / 2 ページ）" in html
    assert len(result_titles(html)) == 20
    assert '<link rel="next" href="/datasets?page=2">' in html
    assert "旧避難所一覧" not in html
    page2 = get(site, "/datasets", {"page": "2"})
    assert len(result_titles(page2)) == 6
    assert 'rel="prev"' in page2 and 'aria-current="page">2<' in page2
    assert not set(result_titles(html)) & set(result_titles(page2))


def test_facets_filter_and_chips(site):
    html = get(site, "/datasets")
    # Facet links carry counts and add the filter to the URL.
    assert re.search(r'<a href="/datasets\?organization=hyogo-pref">兵庫県 <span class="count">24件', html)
    assert 'href="/datasets?res_format=XLSX">XLSX' in html
    filtered = get(site, "/datasets", {"q": "避難", "organization": "himeji"})
    assert result_titles(filtered) == ["指定緊急避難場所一覧"]
    # Removable chips: each drops just its own part of the state.
    assert 'href="/datasets?organization=himeji">キーワード：避難' in filtered
    assert 'href="/datasets?q=%E9%81%BF%E9%9B%A3">組織：姫路市' in filtered
    tag = get(site, "/datasets", {"tags": "AED"})
    assert result_titles(tag) == ["ＡＥＤ設置箇所一覧"]
    assert "<strong>1</strong> 件" in tag


def test_zero_results_helps(site):
    html = get(site, "/datasets", {"q": "避難 人口", "organization": "kakogawa"})
    assert "<strong>0</strong> 件" in html
    assert "条件に一致するデータセットはありませんでした" in html
    assert "キーワードの数を減らして" in html
    assert "組織「加古川市」の絞り込みを外す" in html


def test_sort_and_bad_parameters(site):
    html = get(site, "/datasets", {"sort": "title"})
    assert '<option value="title" selected>' in html
    assert '<option value="relevance"' not in html  # no relevance without a query
    titles = result_titles(html)
    assert titles == sorted(titles, key=lambda t: __import__("unicodedata").normalize("NFKC", t).casefold())
    assert '<option value="relevance" selected>' in get(site, "/datasets", {"q": "避難"})
    bad = get(site, "/datasets", {"sort": "popular"}, status=400)
    assert "指定に誤りがあります" in bad and '<html lang="ja">' in bad
    get(site, "/datasets", {"page": "abc"}, status=400)
    get(site, "/datasets", {"page": "0"}, status=400)


def test_dataset_page(site):
    html = get(site, "/datasets/himeji-shelters")
    assert "<h1>指定緊急避難場所一覧</h1>" in html
    assert "一覧です。<br />\n令和６年度版。" in html  # line breaks kept (Markdown, breaks on)
    assert 'href="/organizations/himeji">姫路市</a>' in html
    assert ('<a href="https://creativecommons.org/licenses/by/4.0/deed.ja" rel="noopener license">'
            "クリエイティブ・コモンズ 表示 4.0 国際</a>") in html
    assert "出典：姫路市「指定緊急避難場所一覧」（https://ckan.example.lg.jp/dataset/himeji-shelters）" in html
    assert 'href="/datasets?tags=%E9%81%BF%E9%9B%A3%E6%89%80">避難所</a>' in html
    assert re.search(r'href="/datasets\?theme=shelter">[^<]*避難[^<]*</a>', html)  # theme title from geo.themes
    assert '<time datetime="2024-06-01T09:00:00">2024年6月1日</time>' in html
    assert "このカタログへの取り込み" in html and "（日本時間）" in html
    assert "外部のカタログ（hyogo-ckan）" in html
    assert 'href="https://ckan.example.lg.jp/dataset/himeji-shelters"' in html
    # Resources: name, format, size, encoding, state, download of the original URL.
    assert "<h3 id=\"res-1\">避難場所一覧（CSV）</h3>" in html
    assert "<dd>2.0 KB</dd>" in html and "<dd>5.0 MB</dd>" in html and "<dd>cp932</dd>" in html
    assert "表データ（プレビューあり）" in html
    assert 'href="https://ckan.example.lg.jp/dl/shelters.csv"' in html
    assert "「避難場所（GeoJSON）」をダウンロード" in html
    # Table preview.
    assert '<th scope="col">名称</th><th scope="col">所在地</th>' in html
    assert "<td>白鷺小学校</td>" in html and "表のプレビュー（先頭 2 行）" in html
    # OGC API collection.
    assert 'href="/ogcapi/collections/himeji-shelters-geojson"' in html
    assert 'href="/ogcapi/collections/himeji-shelters-geojson/items?f=json"' in html
    assert "120件の地物" in html
    # Quality report.
    assert "<dt>読み込んだ行数</dt><dd>3</dd>" in html and "<dt>公開した行数</dt><dd>2</dd>" in html
    assert "3行目：緯度経度が数値ではありません" in html and "列「備考」は空です" in html
    assert "<dt>元の座標参照系</dt><dd>EPSG:4326</dd>" in html
    ld = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(ld)["name"] == "指定緊急避難場所一覧"


def test_harvested_text_stays_inert(site):
    html = get(site, "/datasets/evil")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert('xss')&lt;/script&gt;<br />\n2行目" in html
    assert "<b>太字</b>" not in html and "注意&lt;b&gt;太字&lt;/b&gt;" in html
    assert "<i>タグ</i>" not in html
    assert "javascript:" not in html.split("<body>", 1)[1].replace(
        "<code>javascript:alert(1)</code>", "").replace(
        "[罠](javascript:alert(4))", "")  # shown as text, never as a link
    ld = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S).group(1)
    assert "<" not in ld and json.loads(ld)["description"].startswith("<script>")
    listing = get(site, "/datasets", {"q": "注意"})
    assert "<script>alert" not in listing and "&lt;script&gt;" in listing


def test_empty_catalogue_home(tmp_path):
    client = create_app(tmp_path).test_client()
    r = client.get("/")
    assert r.status_code == 200 and "まだデータセットがありません" in r.get_data(as_text=True)
    assert client.get("/static/renkei.css").status_code == 200


def test_unknown_dataset_404(site):
    html = get(site, "/datasets/no-such-dataset", status=404)
    assert '<html lang="ja">' in html and "データセットが見つかりません" in html
    assert "ページが見つかりません" in get(site, "/no-such-page", status=404)


def test_withdrawn_dataset_410(site):
    html = get(site, "/datasets/old-shelters", status=410)
    assert "公開を終了しました" in html and "旧避難所一覧" in html
    gone = get(site, "/datasets", {"q": "旧避難所"})
    assert result_titles(gone) == [] and "<strong>0</strong> 件" in gone


def test_description_markdown_is_safe_and_frequency_shown(site):
    evil = get(site, "/datasets/evil")
    assert "<strong>太字</strong>" in evil and '<a href="https://example.lg.jp/">公式</a>' in evil
    assert 'href="javascript' not in evil  # markdown-it refuses the URL; the text stays text
    shelters = get(site, "/datasets/himeji-shelters")
    assert "<dt>更新頻度</dt>\n  <dd>毎年4月</dd>" in shelters  # CKAN extras 更新頻度
    assert "提供元の記載なし" in get(site, "/datasets/kakogawa-aed")


def test_organization_pages(site):
    html = get(site, "/organizations")
    assert re.search(r'href="/organizations/hyogo-pref">兵庫県</a> <span class="count">24件', html)
    org = get(site, "/organizations/himeji")
    assert "<h1>姫路市</h1>" in org and "<dd>282014</dd>" in org
    assert result_titles(org) == ["指定緊急避難場所一覧"]  # not the withdrawn one
    assert 'href="/feeds/organizations/himeji.atom"' in org
    big = get(site, "/organizations/hyogo-pref")
    assert len(result_titles(big)) == 20 and 'href="?page=2"' in big
    assert "組織が見つかりません" in get(site, "/organizations/nowhere", status=404)


def test_sitemap_and_robots(site):
    import xml.etree.ElementTree as ET
    r = requests.get(site + "/sitemap.xml", timeout=10)
    assert r.headers["Content-Type"].startswith("application/xml")
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = [e.text for e in ET.fromstring(r.content).findall("s:url/s:loc", ns)]
    assert any(u.endswith("/datasets/himeji-shelters") for u in locs)
    assert not any(u.endswith("/datasets/old-shelters") for u in locs)  # withdrawn
    assert any(u.endswith("/organizations/himeji") for u in locs)
    assert len([u for u in locs if "/datasets/" in u]) == 26
    robots = requests.get(site + "/robots.txt", timeout=10)
    assert robots.headers["Content-Type"].startswith("text/plain")
    assert "Sitemap: " in robots.text and robots.text.strip().endswith("/sitemap.xml")


def test_atom_feeds(site):
    import xml.etree.ElementTree as ET
    atom = "{http://www.w3.org/2005/Atom}"
    r = requests.get(site + "/feeds/datasets.atom", timeout=10)
    assert r.headers["Content-Type"].startswith("application/atom+xml")
    feed = ET.fromstring(r.content)
    entries = feed.findall(f"{atom}entry")
    assert len(entries) == 26 and feed.find(f"{atom}updated").text.endswith("Z")
    titles = {e.find(f"{atom}title").text for e in entries}
    assert "注意<b>太字</b>" in titles  # escaped in XML, text again once parsed
    assert "旧避難所一覧" not in titles
    org = ET.fromstring(requests.get(site + "/feeds/organizations/himeji.atom", timeout=10).content)
    assert [e.find(f"{atom}title").text for e in org.findall(f"{atom}entry")] == ["指定緊急避難場所一覧"]
    assert requests.get(site + "/feeds/organizations/nowhere.atom", timeout=10).status_code == 404


def test_english_switch(site):
    s = requests.Session()
    html = s.get(site + "/datasets", params={"q": "避難", "lang": "en"}, timeout=10).text
    assert '<html lang="en">' in html
    assert "Results for “避難”" in html and "<strong>1</strong> datasets" in html
    assert ">Filter</h2>" in html and 'lang="ja" hreflang="ja">日本語</a>' in html
    again = s.get(site + "/", timeout=10).text  # the cookie remembers the choice
    assert '<html lang="en">' in again and "Recently updated datasets" in again
    back = s.get(site + "/", params={"lang": "ja"}, timeout=10).text
    assert '<html lang="ja">' in back and "最近更新されたデータセット" in back
    page = s.get(site + "/datasets/himeji-shelters", params={"lang": "en"}, timeout=10).text
    assert "Update frequency" in page and "How to credit the source" in page


def test_zero_results_suggests_single_words(site):
    html = get(site, "/datasets", {"q": "避難 人口"})
    assert "<strong>0</strong> 件" in html
    assert "「避難」だけで探す（1件）" in html and "「人口」だけで探す（1件）" in html
    filtered = get(site, "/datasets", {"q": "人口", "organization": "kakogawa"})
    assert "絞り込みを外して「人口」だけで探す（1件）" in filtered


def test_message_catalogue_is_compiled_from_the_po():
    """The English catalogue the app loads says what the tracked .po says. The .mo is compiled
    by the build (setup.py's build_mo, for a wheel and for `pip install -e .`), never by the
    app: starting it and serving English leaves the installed .mo untouched."""
    import os

    from babel.messages.pofile import read_po
    from flask import Flask
    from flask_babel import get_translations

    from catalog import i18n
    repo = Path(__file__).resolve().parent.parent
    with open(repo / "catalog/translations/en/LC_MESSAGES/messages.po", "rb") as po:
        source = read_po(po, locale="en")
    mo_file = i18n.TRANSLATIONS / "en" / "LC_MESSAGES" / "messages.mo"  # the installed package's
    assert mo_file.is_file(), "no compiled catalogue: reinstall the package (pip install -e .)"
    before = os.stat(mo_file).st_mtime_ns
    app = Flask(__name__)
    i18n.init_app(app)
    with app.test_request_context("/?lang=en"):
        translations = get_translations()
    assert os.stat(mo_file).st_mtime_ns == before
    assert str(mo_file) in translations.files
    for m in source:
        if not m.id:
            continue
        if isinstance(m.id, tuple):  # plural: English has two forms
            assert [translations.ngettext(*m.id, n) for n in (1, 2)] == list(m.string), m.id
        else:
            assert translations.gettext(m.id) == m.string, m.id
    assert all(m.string for m in source if m.id)  # every Japanese text has its English
