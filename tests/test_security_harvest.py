"""Issue 11, the harvest side: a broker that trusts no upstream byte. Each test plays one
attack through real HTTP servers on 127.0.0.1 and the real `renkei harvest` (or the runner),
and is named after the item of the issue it covers."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from flask import Flask, Response, jsonify, redirect, request

from catalog.app import create_app
from store.db import Collection, Dataset, HarvestError, HarvestJob, Store
from tests import published
from tests.servers import REPO, TEST_DATA, FakeCKAN, live_server, package

SECRET = "KAKOGAWA_SECRET"


def harvest(data_dir: Path, config: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(config), "--timeout", "10"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **env})


def ckan_config(path: Path, url: str, *, private: bool = True, extra: str = "") -> Path:
    path.write_text(f"sources:\n  - name: evil-ckan\n    type: ckan\n    url: {url}\n"
                    f"    retries: 1\n    allow_private_networks: {'true' if private else 'false'}\n"
                    f"{extra}", encoding="utf-8")
    return path


def files_config(path: Path, files: list[tuple[str, str]], *, private: bool = False,
                 name: str = "city-files", extra: str = "") -> Path:
    """A `files` source; files are (id, url or path)."""
    lines = ["sources:", f"  - name: {name}", "    type: files", "    retries: 1",
             "    organization: kakogawa-city",
             f"    allow_private_networks: {'true' if private else 'false'}", "    files:"]
    for fid, url in files:
        lines += [f"      - id: {fid}", f"        title: {fid} のデータ", f"        url: '{url}'"]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def errors_of(data_dir: Path) -> list[HarvestError]:
    with Store(data_dir).session() as s:
        return list(s.query(HarvestError))


def jobs_of(data_dir: Path) -> list[HarvestJob]:
    with Store(data_dir).session() as s:
        return list(s.query(HarvestJob).order_by(HarvestJob.id))


def published_text(data_dir: Path) -> str:
    """Everything the public sees of the catalogue: every dataset page and package_show."""
    out = []
    with Store(data_dir).session() as s:
        ids = [d.id for d in s.query(Dataset)]
    with create_app(data_dir).test_client() as client:
        for did in ids:
            out.append(client.get(f"/datasets/{did}").get_data(as_text=True))
            out.append(client.get(f"/api/3/action/package_show?id={did}").get_data(as_text=True))
    return "\n".join(out)


class Recorder:
    """A web server that notes every request it gets (the target an attacker aims at)."""

    def __init__(self, body: bytes = b"name,lat,lon\nx,34.7,134.8\n"):
        self.hits: list[str] = []
        self.body = body
        self.app = Flask("recorder")

        @self.app.route("/", defaults={"path": ""})
        @self.app.route("/<path:path>")
        def anything(path):
            self.hits.append("/" + path)
            return Response(self.body, mimetype="text/csv")


# -- item 1: local file disclosure ------------------------------------------------------------

def test_item01_remote_source_urls_are_http_only_no_local_file_is_read(
        fixture_files, data_dir, tmp_path):
    secret = tmp_path / "secret.env"
    secret.write_text(f"{SECRET},DATABASE_URL\nhunter2,postgresql://u:pw@db/x\n", encoding="utf-8")
    (data_dir / "cache").mkdir(parents=True, exist_ok=True)
    (data_dir / "leak.csv").write_text(f"{SECRET},b\n1,2\n", encoding="utf-8")
    attacks = {
        "file-url": f"file://{secret}",
        "bare-path": str(secret),
        "cache-url": "cache:../leak.csv",
        "relative": "secret.env",
        "etc-passwd": "/etc/passwd",
    }
    packages = [package(pid, f"{pid} の攻撃", [(pid, "CSV")]) for pid in attacks]
    for pkg, url in zip(packages, attacks.values()):
        pkg["resources"][0]["url"] = url
    packages.append(package("good", "正常なデータ", [("yaizu_222127_aed.csv", "CSV")]))
    site = FakeCKAN(packages, fixture_files)
    with site.running() as url:
        result = harvest(data_dir, ckan_config(tmp_path / "sources.yaml", url))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = errors_of(data_dir)
    refused = {e.dataset: e for e in errors if e.stage == "fetch"}
    assert set(refused) == {f"{pid} の攻撃" for pid in attacks}
    for e in refused.values():
        assert "refused" in e.message
        assert e.resource  # source, dataset and resource are named
        assert str(tmp_path) not in e.message and "/etc" not in e.message
    assert "evil-ckan / etc-passwd の攻撃 / etc-passwd" in result.stderr
    text = published_text(data_dir)
    assert SECRET not in text and "hunter2" not in text and "root:x:0" not in text
    with Store(data_dir).session() as s:
        assert s.get(Dataset, "evil-ckan--good").collections  # the rest goes on


def test_item01_errors_never_name_server_paths(data_dir, tmp_path):
    """A file GDAL cannot open: its error (and `_list_layers`' warning) named the cache path."""
    root = tmp_path / "config-folder"
    root.mkdir()
    (root / "broken.gpkg").write_bytes(b"SQLite format 3\x00" + b"\x00garbage" * 500)
    (root / "broken.geojson").write_text('{"type": "FeatureCollection", "features": [{"type"',
                                         encoding="utf-8")
    result = harvest(data_dir, files_config(root / "sources.yaml", [
        ("broken-gpkg", "broken.gpkg"), ("broken-geojson", "broken.geojson")]))
    assert result.returncode == 1
    errors = errors_of(data_dir)
    assert len({e.dataset for e in errors}) == 2
    for text in [result.stderr] + [e.message for e in errors]:
        assert str(tmp_path) not in text and str(data_dir) not in text, text
        assert "/vsi" not in text


def test_item16b_files_paths_stay_inside_the_config_folder(data_dir, tmp_path):
    root = tmp_path / "etc-renkei"
    root.mkdir()
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"{SECRET},lat,lon\nhunter2,34.7,134.8\n",
                                        encoding="utf-8")
    (root / "link.csv").symlink_to(outside / "secret.csv")
    (root / "sub").mkdir()
    (root / "sub" / "aed.csv").write_bytes((TEST_DATA / "csv/yaizu_222127_aed.csv").read_bytes())
    config = files_config(root / "sources.yaml", [
        ("dotdot", "../private/secret.csv"),
        ("symlink", "link.csv"),
        ("absolute", str(outside / "secret.csv")),
        ("file-url", f"file://{outside / 'secret.csv'}"),
        ("sub-dotdot", "sub/../../private/secret.csv"),
        ("inside", "sub/aed.csv"),
        ("inside-absolute", str(root / "sub" / "aed.csv")),
    ])
    result = harvest(data_dir, config)
    assert result.returncode == 1, result.stderr
    refused = {e.dataset for e in errors_of(data_dir) if "refused" in e.message}
    assert refused == {f"{x} のデータ" for x in
                       ("dotdot", "symlink", "absolute", "file-url", "sub-dotdot")}
    with Store(data_dir).session() as s:
        assert s.get(Dataset, "city-files--inside").collections
        assert s.get(Dataset, "city-files--inside-absolute").collections
    assert "hunter2" not in published_text(data_dir)


def test_item16b_a_config_entry_cannot_move_the_base_folder(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    (tmp_path / "secret.csv").write_text("a,lat,lon\nhunter2,34.7,134.8\n", encoding="utf-8")
    config = files_config(root / "sources.yaml", [("moved", "secret.csv")])
    config.write_text(config.read_text().replace("    files:", f"    base_dir: {tmp_path}\n"
                                                                "    files:"), encoding="utf-8")
    assert harvest(data_dir, config).returncode == 1
    assert "hunter2" not in published_text(data_dir)


# -- item 2: SSRF ------------------------------------------------------------------------------

def test_item02_private_addresses_are_refused_in_every_spelling(data_dir, tmp_path):
    target = Recorder()
    with live_server(target.app) as url:
        port = url.rsplit(":", 1)[1]
        spellings = {
            "loopback": f"http://127.0.0.1:{port}/secret.csv",
            "localhost": f"http://localhost:{port}/secret.csv",
            "hex": f"http://0x7f000001:{port}/secret.csv",
            "decimal": f"http://2130706433:{port}/secret.csv",
            "short": f"http://127.1:{port}/secret.csv",
            "ipv6": f"http://[::1]:{port}/secret.csv",
            "mapped": f"http://[::ffff:127.0.0.1]:{port}/secret.csv",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "private": "http://10.0.0.1/x.csv",
            "cgnat": "http://100.64.0.1/x.csv",
            "unspecified": f"http://0.0.0.0:{port}/secret.csv",
            "gopher": f"gopher://127.0.0.1:{port}/x",
        }
        result = harvest(data_dir, files_config(tmp_path / "sources.yaml",
                                                list(spellings.items())))
    assert result.returncode == 1
    assert target.hits == []
    errors = errors_of(data_dir)
    assert {e.dataset for e in errors} == {f"{k} のデータ" for k in spellings}
    for e in errors:
        assert e.stage == "fetch" and "refused" in e.message and e.resource, e
    assert len(errors) == len(spellings)   # one error each
    assert "Traceback" not in result.stderr


def test_item02_allow_private_networks_opens_the_intranet_but_never_link_local(
        data_dir, tmp_path):
    target = Recorder()
    app = Flask("hops")

    @app.route("/to-metadata")
    def to_metadata():
        return redirect("http://169.254.169.254/latest/meta-data/iam/", 302)

    @app.route("/loop/<int:n>")
    def loop(n):
        return redirect(f"/loop/{n + 1}", 302)

    with live_server(target.app) as inner, live_server(app) as hops:
        config = files_config(tmp_path / "sources.yaml", [
            ("intranet", f"{inner}/shelters.csv"),
            ("redirect-to-metadata", f"{hops}/to-metadata"),
            ("redirect-loop", f"{hops}/loop/0"),
            ("metadata", "http://169.254.169.254/latest/meta-data/"),
            ("link-local-v6", "http://[fe80::1]/x.csv"),
        ], private=True)
        result = harvest(data_dir, config)
    assert result.returncode == 1
    assert target.hits == ["/shelters.csv"]
    errors = {e.dataset: e.message for e in errors_of(data_dir)}
    assert set(errors) == {"redirect-to-metadata のデータ", "redirect-loop のデータ",
                           "metadata のデータ", "link-local-v6 のデータ"}
    assert "link-local" in errors["redirect-to-metadata のデータ"]
    assert "redirects" in errors["redirect-loop のデータ"]
    with Store(data_dir).session() as s:
        assert s.get(Dataset, "city-files--intranet").collections


def test_item02_an_api_source_on_loopback_without_permission_is_one_error(
        fixture_files, data_dir, tmp_path):
    site = FakeCKAN([package("x", "x", [("yaizu_222127_aed.csv", "CSV")])], fixture_files)
    with site.running() as url:
        result = harvest(data_dir, ckan_config(tmp_path / "s.yaml", url, private=False))
    assert result.returncode == 1
    assert site.calls == []
    (job,) = jobs_of(data_dir)
    assert job.status == "failed"
    (error,) = errors_of(data_dir)
    assert "loopback" in error.message and "Traceback" not in result.stderr


def test_item02_config_refuses_a_non_boolean_permission(tmp_path, data_dir):
    config = files_config(tmp_path / "s.yaml", [("x", "http://example.org/x.csv")])
    config.write_text(config.read_text().replace("allow_private_networks: false",
                                                 "allow_private_networks: yes please"))
    assert harvest(data_dir, config).returncode == 2


# -- item 6: GDAL never goes on the network ------------------------------------------------

def _crs_link_collection(href: str) -> dict:
    doc = json.loads((TEST_DATA / "geojson/gsi_emergency_282227.json").read_text(encoding="utf-8"))
    doc["crs"] = {"type": "link", "properties": {"href": f"{href}/collection.wkt",
                                                 "type": "ogcwkt"}}
    for i, feat in enumerate(doc["features"][:5]):
        feat["geometry"]["crs"] = {"type": "link",
                                   "properties": {"href": f"{href}/geometry-{i}.wkt"}}
    return doc


def test_item06_geojson_crs_links_are_never_fetched(data_dir, tmp_path):
    target = Recorder(b'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257]],'
                      b'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]')
    root = tmp_path / "conf"
    root.mkdir()
    with live_server(target.app) as listener:
        (root / "linked.geojson").write_text(json.dumps(_crs_link_collection(listener)),
                                             encoding="utf-8")
        zbuf = io.BytesIO()
        with zipfile.ZipFile(zbuf, "w") as zf:
            zf.writestr("linked.geojson", json.dumps(_crs_link_collection(listener)))
        (root / "linked.zip").write_bytes(zbuf.getvalue())
        result = harvest(data_dir, files_config(root / "sources.yaml", [
            ("linked", "linked.geojson"), ("zipped", "linked.zip")]))
    assert target.hits == []
    assert result.returncode == 0, result.stderr
    with Store(data_dir).session() as s:
        ds = s.get(Dataset, "city-files--linked")
        assert ds.collections[0].feature_count == 162
        warnings = json.dumps(ds.resources[0].quality, ensure_ascii=False)
        assert "crs" in warnings   # the ignored link is said on the quality report


def test_item06_ogcapi_and_ngsi_geometries_lose_their_crs_links(data_dir, tmp_path):
    from tests.ngsi_servers import FakeOGCAPI, run, source
    target = Recorder()
    with live_server(target.app) as listener:
        doc = _crs_link_collection(listener)
        server = FakeOGCAPI({"shelters": ("養父市 避難場所", doc)}, max_limit=100)
        with live_server(server.app) as url:
            (report,), _ = run(data_dir, source("ogc", "ogcapi", url + "/", limit=100))
    assert target.hits == []
    assert report.status == "done" and not report.errors, report.errors
    cached = next((data_dir / "cache" / "ogcapi" / "ogc").glob("*.geojson")).read_text()
    assert listener not in cached


# -- item 5: one malformed record is one error ---------------------------------------------

class RawCKAN:
    """A CKAN Action API that answers package_search with whatever pages a test wrote, and
    serves files at /files/<name>; `{base}` in the pages is its own address."""

    def __init__(self, pages: list, files: dict[str, Path] | None = None,
                 package_list: list | None = None):
        self.pages, self.files, self.package_list = pages, files or {}, package_list
        self.base = ""
        self.calls: list[tuple[str, dict]] = []
        self.app = Flask("raw_ckan")

        @self.app.route("/api/3/action/package_search", methods=["GET", "POST"])
        @self.app.route("/api/action/package_search", methods=["GET", "POST"])
        def search():
            params = request.get_json(silent=True) or dict(request.values)
            self.calls.append(("package_search", params))
            page = self.page_for(params)
            return Response(json.dumps({"success": True, "result": page}).replace(
                "{base}", self.base), mimetype="application/json")

        @self.app.route("/api/3/action/package_list", methods=["GET", "POST"])
        @self.app.route("/api/action/package_list", methods=["GET", "POST"])
        def package_list():
            params = request.get_json(silent=True) or dict(request.values)
            self.calls.append(("package_list", params))
            return jsonify({"success": True, "result": self.list_page(params)})

        @self.app.route("/files/<name>")
        def files(name):
            from flask import send_file
            return send_file(self.files[name])

    def page_for(self, params: dict):
        start = int(params.get("start", 0))
        for page_start, page in self.pages:
            if page_start == start:
                return page
        return {"count": self.pages[0][1].get("count") if self.pages else 0, "results": []}

    def list_page(self, params: dict):
        offset, limit = int(params.get("offset", 0)), int(params.get("limit", 1000))
        return (self.package_list or [])[offset:offset + limit]


def good_package(pid: str, title: str) -> dict:
    return package(pid, title, [("aed.csv", "CSV")])


def test_item05_malformed_ckan_records_are_one_error_each_and_the_run_goes_on(
        data_dir, tmp_path):
    broken = [
        {k: v for k, v in good_package("no-id", "IDなし").items() if k != "id"},
        dict(good_package("tags", "タグが文字列"), tags=["x"]),
        dict(good_package("org", "組織が文字列"), organization="x"),
        dict(good_package("res", "リソースが辞書"), resources={"url": "x"}),
        "not a package",
        None,
    ]
    good = good_package("good", "正常なデータ")
    files = {"aed.csv": TEST_DATA / "csv/yaizu_222127_aed.csv"}
    pages = [(0, {"count": 7, "results": broken + [good]})]
    site = RawCKAN(pages, files)
    root = tmp_path / "conf"
    root.mkdir()
    (root / "shelters.geojson").write_bytes(
        (TEST_DATA / "geojson/gsi_emergency_282227.json").read_bytes())
    with live_server(site.app) as url:
        site.base = url
        config = root / "sources.yaml"
        config.write_text(
            f"sources:\n  - name: evil-ckan\n    type: ckan\n    url: {url}\n    rows: 100\n"
            f"    retries: 1\n    allow_private_networks: true\n"
            f"  - name: next-city\n    type: files\n    organization: yabu-city\n    files:\n"
            f"      - {{id: shelters, title: 養父市 避難場所, url: shelters.geojson}}\n",
            encoding="utf-8")
        result = harvest(data_dir, config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    jobs = jobs_of(data_dir)
    assert [j.source_name for j in jobs] == ["evil-ckan", "next-city"]
    assert all(j.status in ("done", "failed") for j in jobs)
    evil = [e for e in errors_of(data_dir) if e.job_id == jobs[0].id]
    assert len([e for e in evil if e.stage == "enumerate"]) == len(broken)
    with Store(data_dir).session() as s:
        assert s.get(Dataset, "evil-ckan--good").collections
        assert s.get(Dataset, "next-city--shelters").collections
        assert any(c.id == "theme-shelter" for c in s.query(Collection))  # layers rebuilt


def test_item05_a_ckan_count_that_is_not_a_number_is_one_error(data_dir, tmp_path):
    files = {"aed.csv": TEST_DATA / "csv/yaizu_222127_aed.csv"}
    site = RawCKAN([(0, {"count": "five", "results": [good_package("good", "正常")]})], files)
    with live_server(site.app) as url:
        site.base = url
        result = harvest(data_dir, ckan_config(tmp_path / "s.yaml", url))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (job,) = jobs_of(data_dir)
    assert job.status in ("done", "failed")
    messages = [e.message for e in errors_of(data_dir)]
    assert any("count" in m for m in messages), messages


def test_item05_malformed_ogcapi_and_ngsi_records(data_dir, tmp_path):
    from tests.ngsi_servers import FakeOrion, gsi_sites, run, source
    good = json.loads((TEST_DATA / "geojson/gsi_emergency_282227.json").read_text(encoding="utf-8"))
    app = Flask("evil_ogc")

    @app.get("/collections")
    def collections():
        return jsonify({"collections": [{"id": 5}, {"id": "strings"}, {"id": ["x"]},
                                        "nonsense", {"id": "good"}]})

    @app.get("/collections/<cid>/items")
    def items(cid):
        if cid == "strings":
            return jsonify({"type": "FeatureCollection", "features": ["x", 5]})
        if cid == "good":
            return Response(json.dumps(good), mimetype="application/geo+json")
        return jsonify({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [134.8, 34.7]},
             "properties": {"n": 1}, "id": 1}]})

    entities = gsi_sites()
    entities.insert(3, {"id": ["x"], "type": entities[0]["type"]})
    orion = FakeOrion(entities)
    with live_server(app) as ogc, live_server(orion.app) as broker:
        reports, _ = run(data_dir, source("evil-ogc", "ogcapi", ogc + "/"),
                         source("evil-ngsi", "ngsi-v2", broker, service="kakogawa",
                                entity_types=[entities[0]["type"]]),
                         source("good-ogc", "ogcapi", ogc + "/", collections=["good"]))
    ogc_report, ngsi_report, good_report = reports
    assert ogc_report.counts["added"] >= 2      # "5" (id as text) or good, at least
    assert any("strings" in (e.dataset or "") or "feature" in e.message
               for e in ogc_report.errors), ogc_report.errors
    assert ngsi_report.errors and all(r.status in ("done", "failed") for r in reports)
    assert good_report.status == "done" and good_report.counts["added"] == 1
    for r in reports:
        for e in r.errors:
            assert "Traceback" not in e.message


# -- item 10: an incomplete enumeration never withdraws -------------------------------------

def ten_packages() -> list[dict]:
    return [package(f"aed-{i}", f"AED その{i}", [("aed.csv", "CSV")]) for i in range(10)]


def statuses(data_dir: Path, source: str) -> dict[str, str]:
    with Store(data_dir).session() as s:
        return {d.name: d.status for d in s.query(Dataset).filter_by(source_name=source)}


def test_item10_a_duplicated_row_under_a_constant_count_withdraws_nothing(data_dir, tmp_path):
    pkgs = ten_packages()
    files = {"aed.csv": TEST_DATA / "csv/yaizu_222127_aed.csv"}
    honest = [(0, {"count": 10, "results": pkgs[0:4]}), (4, {"count": 10, "results": pkgs[4:8]}),
              (8, {"count": 10, "results": pkgs[8:10]})]
    site = RawCKAN(honest, files)
    config = tmp_path / "s.yaml"
    with live_server(site.app) as url:
        site.base = url
        ckan_config(config, url, extra="    rows: 4\n")
        assert harvest(data_dir, config).returncode == 0
        # The sort is unstable: row 3 comes again on the second page, row 4 never comes.
        site.pages = [(0, {"count": 10, "results": pkgs[0:4]}),
                      (4, {"count": 10, "results": [pkgs[3]] + pkgs[5:8]}),
                      (8, {"count": 10, "results": pkgs[8:10]})]
        result = harvest(data_dir, config)
    assert set(statuses(data_dir, "evil-ckan").values()) == {"active"}
    assert result.returncode == 1
    assert "9 different datasets of the 10" in result.stderr


class ShortListCKAN(FakeCKAN):
    """A CKAN whose package_list caps `limit` (as sites do), or drops names."""

    def __init__(self, *a, list_cap: int, drop: set[str] = frozenset(), **kw):
        self.list_cap, self.drop = list_cap, set(drop)
        super().__init__(*a, **kw)

    def _make_app(self):
        app = super()._make_app()

        def package_list():
            params = request.get_json(silent=True) or request.values
            self.calls.append(("package_list", dict(params)))
            offset = int(params.get("offset", 0))
            limit = min(int(params.get("limit", 1000)), self.list_cap)
            names = [p["name"] for p in self.packages if p["name"] not in self.drop]
            return jsonify({"success": True, "result": names[offset:offset + limit]})

        for rule in list(app.url_map.iter_rules()):
            if rule.endpoint == "package_list":
                app.view_functions[rule.endpoint] = package_list
        return app


@pytest.mark.parametrize("cap, drop, complete", [(9, set(), True), (1000, {"aed-6"}, False)])
def test_item10_package_list_in_short_pages_withdraws_nothing(data_dir, tmp_path, cap, drop,
                                                              complete):
    files = {"aed.csv": TEST_DATA / "csv/yaizu_222127_aed.csv"}
    site = ShortListCKAN(ten_packages(), files, max_rows=100, list_cap=cap, drop=drop)
    config = tmp_path / "s.yaml"
    with site.running() as url:
        ckan_config(config, url, extra="    incremental: true\n")
        assert harvest(data_dir, config).returncode == 0
        second = harvest(data_dir, config)
    assert set(statuses(data_dir, "evil-ckan").values()) == {"active"}
    lists = [p for action, p in site.calls if action == "package_list"]
    assert lists, "the second run is incremental: names come from package_list"
    if complete:   # all ten names came, in pages of nine
        assert second.returncode == 0, second.stderr
    else:          # nine names while package_search counts ten
        assert second.returncode == 1
        assert "package_list named 9 datasets but package_search counts 10" in second.stderr


# -- item 9: never publish a collapse -------------------------------------------------------

class RawFileServer:
    """An HTTP/1.1 file host written at the byte level, to send bodies as broken servers do:
    `mode` is "whole", "close" (no Content-Length, cut, Connection: close), "short" (a
    Content-Length larger than what is sent) or "chunked-cut" (chunked, ends mid-chunk)."""

    def __init__(self, body: bytes):
        import http.server
        import threading
        self.body, self.mode, self.share = body, "whole", 1 / 3
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = outer.body
                cut = body[: int(len(body) * outer.share)]
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                if outer.mode == "whole":
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Connection", "close")
                if outer.mode == "short":
                    self.send_header("Content-Length", str(len(body)))
                elif outer.mode == "chunked-cut":
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if outer.mode == "chunked-cut":
                    self.wfile.write(b"%x\r\n" % len(cut) + cut + b"\r\n")
                    self.wfile.write(b"%x\r\n" % 1000 + b"x" * 10)   # never finished
                else:
                    self.wfile.write(cut)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def big_csv(rows: int) -> bytes:
    lines = ["名称,緯度,経度"] + [f"地点{i},{34.6 + (i % 1000) / 10000:.4f},"
                                f"{134.7 + (i // 1000) / 1000:.4f}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def served_count(data_dir: Path, dataset: str) -> tuple[int, Path]:
    with Store(data_dir).session() as s:
        (col,) = s.get(Dataset, dataset).collections
        return col.feature_count, col.path


@pytest.mark.parametrize("mode", ["close", "short", "chunked-cut"])
def test_item09_a_cut_body_never_replaces_good_data(data_dir, tmp_path, mode):
    body = big_csv(30_000)
    server = RawFileServer(body)
    with server as url:
        config = files_config(tmp_path / "s.yaml", [("points", f"{url}/points.csv")],
                              private=True)
        assert harvest(data_dir, config).returncode == 0
        count, path = served_count(data_dir, "city-files--points")
        assert count == 30_000
        server.mode = mode
        result = harvest(data_dir, config)
    assert result.returncode == 1
    assert served_count(data_dir, "city-files--points") == (30_000, path)
    assert published.exists(data_dir, path)
    (error,) = errors_of(data_dir)
    assert error.dataset == "points のデータ" and error.resource
    assert ("truncated" in error.message if mode != "close"
            else "where 30,000 are served" in error.message), error.message


def test_item09_the_share_is_configurable(data_dir, tmp_path):
    server = RawFileServer(big_csv(3000))
    with server as url:
        config = files_config(tmp_path / "s.yaml", [("points", f"{url}/points.csv")],
                              private=True)
        assert harvest(data_dir, config).returncode == 0
        server.share, server.mode = 0.8, "close"
        assert harvest(data_dir, config, RENKEI_MIN_ROW_SHARE="0.9").returncode == 1
        assert served_count(data_dir, "city-files--points")[0] == 3000
        config.write_text(config.read_text().replace("    files:", "    min_row_share: 0.5\n"
                                                                  "    files:"))
        harvest(data_dir, config, RENKEI_MIN_ROW_SHARE="0.9")   # the cut row is an error
    assert 2000 < served_count(data_dir, "city-files--points")[0] < 3000


# -- item 15: a column named FID --------------------------------------------------------------

def test_item15_a_fid_column_is_kept_as_fid_source(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    (root / "arcgis.csv").write_text("FID,観測地点,水位,緯度,経度\n" + "".join(
        f"F{i},地点{i},{i / 10},{34.7 + i / 1000},{134.8 + i / 1000}\n" for i in range(1, 30)),
        encoding="utf-8")
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"fid": "same", "観測値": i},   # not a unique integer
         "geometry": {"type": "Point", "coordinates": [134.8 + i / 1000, 34.7]}}
        for i in range(20)]}
    (root / "fid.geojson").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    result = harvest(data_dir, files_config(root / "sources.yaml", [
        ("arcgis", "arcgis.csv"), ("fidjson", "fid.geojson")]))
    assert result.returncode == 0, result.stderr
    import pyogrio
    for dataset, expected, rows in (("city-files--arcgis", "F1", 29),
                                    ("city-files--fidjson", "same", 20)):
        count, path = served_count(data_dir, dataset)
        frame = published.frame(data_dir, path)
        assert frame["fid_source"].iloc[0] == expected
        assert count == len(frame) == rows


# -- item 4: budgets on everything read ---------------------------------------------------------

def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_item04_a_zip_bomb_is_refused_before_it_is_unpacked(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    line = "名称,緯度,経度\n" + "加古川駅,34.7565,134.8414\n" * (20 * 1024 ** 2 // 34)
    bomb = zip_of(root / "bomb.zip", {"shelters.csv": line.encode("utf-8")})
    assert bomb.stat().st_size < 200_000                      # 20 MiB in a few tens of kB
    big = zip_of(root / "big.zip", {"a.csv": line.encode("utf-8")[:3_000_000],
                                    "b.csv": line.encode("utf-8")[:3_000_000]})
    result = harvest(data_dir, files_config(root / "sources.yaml", [
        ("bomb", "bomb.zip"), ("big", "big.zip")]),
        RENKEI_MAX_DOWNLOAD=str(1024 ** 2), RENKEI_MAX_UNPACKED=str(5 * 1024 ** 2))
    assert result.returncode == 1
    errors = {e.dataset: e.message for e in errors_of(data_dir)}
    assert "zip 爆弾" in errors["bomb のデータ"]
    assert "上限 5,242,880 バイト" in errors["big のデータ"]
    with Store(data_dir).session() as s:
        assert not [c for c in s.query(Collection) if not c.id.startswith("theme-")]


def test_item04_rows_and_columns_per_file(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    (root / "wide.csv").write_text(",".join(f"c{i}" for i in range(2000)) + ",緯度,経度\n"
                                   + ",".join("x" * 2000) + ",34.7,134.8\n", encoding="utf-8")
    (root / "long.csv").write_text("名称,緯度,経度\n" + "".join(
        f"地点{i},34.{i:04d},134.8\n" for i in range(500)), encoding="utf-8")
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": i},
         "geometry": {"type": "Point", "coordinates": [134.8, 34.7]}} for i in range(500)]}
    (root / "long.geojson").write_text(json.dumps(doc), encoding="utf-8")
    result = harvest(data_dir, files_config(root / "sources.yaml", [
        ("wide", "wide.csv"), ("long", "long.csv"), ("longjson", "long.geojson")]),
        RENKEI_MAX_ROWS="100")
    assert result.returncode == 1
    errors = {e.dataset: e.message for e in errors_of(data_dir)}
    assert "列が多すぎます" in errors["wide のデータ"]
    assert "行が多すぎます" in errors["long のデータ"]
    assert "行が多すぎます" in errors["longjson のデータ"]


def test_item04_api_pages_are_read_under_a_cap(data_dir, tmp_path):
    from tests.ngsi_servers import FakeOrion, gsi_sites
    orion = FakeOrion(gsi_sites())
    big = [package(f"p{i}", "とても長い説明のあるデータ", [("aed.csv", "CSV")],
                   notes="説明" * 5000) for i in range(3)]
    site = RawCKAN([(0, {"count": 3, "results": big})],
                   {"aed.csv": TEST_DATA / "csv/yaizu_222127_aed.csv"})
    with live_server(orion.app) as broker, live_server(site.app) as ckan:
        site.base = ckan
        config = tmp_path / "s.yaml"
        config.write_text(
            f"sources:\n  - name: fw\n    type: ngsi-v2\n    url: {broker}\n"
            f"    service: kakogawa\n    allow_private_networks: true\n    retries: 1\n"
            f"  - name: big-ckan\n    type: ckan\n    url: {ckan}\n    retries: 1\n"
            f"    allow_private_networks: true\n", encoding="utf-8")
        result = harvest(data_dir, config, RENKEI_MAX_PAGE="20000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    messages = [e.message for e in errors_of(data_dir)]
    assert sum("over the limit" in m or "exceeds the limit" in m for m in messages) >= 2, messages


def test_item04_large_csv_is_read_in_chunks_and_published_the_same(data_dir, tmp_path):
    root = tmp_path / "conf"
    root.mkdir()
    points = big_csv(3000)
    (root / "points.csv").write_bytes(points)
    zip_of(root / "points.zip", {"points.csv": points})
    (root / "table.csv").write_text("市区町村,人口\n" + "加古川市,258000\n" * 3000,
                                    encoding="utf-8")
    config = files_config(root / "sources.yaml", [
        ("whole", "points.csv"), ("zipped", "points.zip"), ("table", "table.csv")])
    result = harvest(data_dir, config, RENKEI_TABLE_STREAM_BYTES="10000",
                     RENKEI_STREAM_CHUNK="700")
    assert result.returncode == 0, result.stderr
    with Store(data_dir).session() as s:
        for name in ("whole", "zipped"):
            ds = s.get(Dataset, f"city-files--{name}")
            assert ds.collections[0].feature_count == 3000
            assert ds.resources[0].quality[0].get("streamed") is True
        table = s.get(Dataset, "city-files--table").resources[0]
        assert table.state == "table" and table.preview["total"] == 3000
        assert table.preview["rows"][0] == ["加古川市", "258000"]


def test_item02_the_connection_goes_to_the_address_checked_under_the_name_asked(monkeypatch):
    """No DNS-rebinding window: the adapter resolves once, checks, and connects to that
    address (the name stays the Host header). A resolver that answers 127.0.0.1 for the check
    and anything else afterwards cannot move the connection."""
    import socket

    from harvesters.http import make_session
    seen = []
    app = Flask("host")

    @app.route("/x")
    def host():
        seen.append(request.headers.get("Host"))
        return "ok"

    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        real = socket.getaddrinfo
        answers = iter(["127.0.0.1"])

        def rebinding(host, *args, **kw):   # first answer checked; later ones would differ
            if host == "rebind.test":
                return real(next(answers, "169.254.169.254"), *args, **kw)
            return real(host, *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        resp = make_session(1, 0, allow_private=True).get(f"http://rebind.test:{port}/x",
                                                          timeout=5)
    assert resp.text == "ok" and seen == [f"rebind.test:{port}"]


# -- item 11: secrets in what the harvest command prints -----------------------------------------

def test_item11_the_harvest_summary_and_jobs_listing_redact_source_urls(data_dir, tmp_path):
    """A cron mail or a log is read by more people than the job record: the harvest summary and
    `renkei jobs` show source URLs as the pages do (no userinfo, no key in the query)."""
    app = Flask("gone")

    @app.route("/<path:path>")
    def gone(path):
        return Response("gone", status=404)

    with live_server(app) as base:
        host = base.removeprefix("http://")
        config = files_config(tmp_path / "sources.yaml", [
            ("shelters", f"http://kakogawa:hunter2pass@{host}/shelters.csv"
                         f"?apikey=TOPSECRET1&format=csv"),
            ("aed", f"{base}/aed.csv?access_token=TOPSECRET2")], private=True)
        done = harvest(data_dir, config)
    assert done.returncode == 1, done.stderr
    assert "HTTP 404" in done.stderr and "shelters.csv" in done.stderr, done.stderr
    listing = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                              "jobs"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "HTTP 404" in listing.stdout, listing.stdout
    for text in (done.stderr, done.stdout, listing.stdout):
        for secret in ("hunter2pass", "TOPSECRET1", "TOPSECRET2"):
            assert secret not in text, text


# -- item 2: through an outbound proxy, the proxy is told the address the guard checked --------

@pytest.fixture
def forward_proxy():
    """A real forward proxy (pproxy: HTTP absolute-form and CONNECT) on 127.0.0.1, run as its
    own process with its own resolver, as a site's outbound proxy is."""
    import shutil
    import socket
    import time
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = shutil.which("pproxy", path=str(Path(sys.executable).parent)) or shutil.which("pproxy")
    proc = subprocess.Popen([exe, "-l", f"http://127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _resolver_for(monkeypatch, name: str, address: str) -> None:
    """This process resolves `name` to `address`; the proxy's process cannot resolve it."""
    import socket
    real = socket.getaddrinfo

    def resolve(host, *args, **kw):
        return real(address if host == name else host, *args, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_item02_plain_http_through_a_proxy_goes_to_the_checked_address(
        forward_proxy, monkeypatch):
    from harvesters.http import make_session
    seen = []
    app = Flask("target")

    @app.route("/x")
    def target():
        seen.append(request.headers.get("Host"))
        return "ok"

    monkeypatch.setenv("HTTP_PROXY", forward_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _resolver_for(monkeypatch, "intranet.test", "127.0.0.1")
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        resp = make_session(1, 0, allow_private=True).get(f"http://intranet.test:{port}/x",
                                                          timeout=10)
    assert resp.status_code == 200 and resp.text == "ok" and len(seen) == 1
    # Through the proxy, without permission for private networks, the name is still refused.
    from harvesters.netguard import BlockedAddress
    with pytest.raises(BlockedAddress):
        make_session(1, 0).get(f"http://intranet.test:{port}/x", timeout=10)


def test_item02_an_https_tunnel_through_a_proxy_is_opened_to_the_checked_address(
        forward_proxy, monkeypatch):
    """The CONNECT names the address: the proxy reaches the server the guard checked (the
    TLS handshake then fails here, this server speaks no TLS; the connection is what counts)."""
    import socket
    import threading
    import requests
    from harvesters.http import make_session
    arrived = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def accept():
        server.settimeout(15)
        try:
            conn, _ = server.accept()
            arrived.set()
            conn.close()
        except OSError:
            pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _resolver_for(monkeypatch, "intranet.test", "127.0.0.1")
    try:
        with pytest.raises(requests.RequestException):
            make_session(1, 0, allow_private=True).get(f"https://intranet.test:{port}/x",
                                                       timeout=10)
        assert arrived.wait(5), "the proxy did not open its tunnel to the checked address"
    finally:
        server.close()
