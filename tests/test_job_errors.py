"""Errors are values: whatever fails in a job — a theme layer that cannot be rebuilt, an input
no reader foresaw, a record the source sent in a shape we cannot read — is recorded in the job
with its real stage and traceback (the traceback stays in the job record, for the operator's
`renkei jobs --tracebacks`, never on a page) and makes `renkei harvest` exit 1; the harvest's
terminal output is the summary line, never a traceback. Harvest settings come from the
environment when the command starts."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyogrio
import pytest
from flask import Flask, abort, send_file

from catalog.app import create_app
from store.db import Collection, Dataset, HarvestJob, Store
from harvesters.base import Harvester, harvester_class, source_types
from harvesters.config import ConfigError, load_config
from harvesters.runner import run_harvest
from tests import published
from tests.accounts import sysadmin_headers
from tests.ngsi_servers import source
from tests.servers import REPO, FakeCKAN, live_server, package

DATA = Path(__file__).resolve().parent / "data"
SHELTER_LAYER = "兵庫県 指定緊急避難場所・指定避難所（統合）"


def file_server(root: Path) -> Flask:
    """A city web site publishing files: whatever is in `root` now, at /files/<name>."""
    app = Flask("city_files")

    @app.route("/files/<name>")
    def files(name):
        path = root / name
        if not path.is_file():
            abort(404)
        return send_file(path, conditional=True, etag=True)

    return app


def harvest(data_dir: Path, config: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "harvest", "--config", str(config), "--timeout", "10"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **env})


def files_config(path: Path, url: str, files: list[tuple[str, str, str, str]]) -> Path:
    """A `files` source; files are (id, title, file name, organization)."""
    lines = ["sources:", "  - name: cities", "    type: files", "    retries: 1", "    allow_private_networks: true",
             "    files:"]
    for fid, title, name, org in files:
        lines += [f"      - id: {fid}", f"        title: {title}",
                  f"        url: {url}/files/{name}", f"        organization: {org}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def last_job(store: Store) -> HarvestJob:
    with store.session() as s:
        job = s.query(HarvestJob).order_by(HarvestJob.id.desc()).first()
        job.errors  # loaded while the session is open
        return job


def job_page(data_dir: Path, job_id: int) -> str:
    with create_app(data_dir).test_client() as client:
        resp = client.get(f"/harvest/{job_id}", headers=sysadmin_headers(data_dir))
        assert resp.status_code == 200
        return resp.get_data(as_text=True)


def drop_features(path: Path, keep: int) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["features"] = doc["features"][:keep]
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def test_a_theme_layer_that_cannot_be_rebuilt_is_a_job_error_and_its_last_version_serves(
        data_dir, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for name in ("gsi_emergency_282227.json", "gsi_emergency_282103.json"):
        (site / name).write_bytes((DATA / "geojson" / name).read_bytes())
    aed = (DATA / "csv/yaizu_222127_aed.csv").read_bytes().splitlines(keepends=True)
    (site / "aed.csv").write_bytes(b"".join(aed[:41]))
    with live_server(file_server(site)) as url:
        config = files_config(tmp_path / "sources.yaml", url, [
            ("yabu", "養父市 指定緊急避難場所", "gsi_emergency_282227.json", "yabu-city"),
            ("kakogawa", "加古川市 指定緊急避難場所", "gsi_emergency_282103.json", "kakogawa-city"),
            ("aed", "AED設置箇所一覧", "aed.csv", "kakogawa-city")])
        first = harvest(data_dir, config)
        assert first.returncode == 0, first.stderr
        store = Store(data_dir)
        with store.session() as s:
            before = s.get(Collection, "theme-shelter")
            shelter_path, shelter_count = before.path, before.feature_count
            assert before.version == 1 and s.get(Collection, "theme-aed").version == 1
            member = s.get(Dataset, "cities--yabu").collections[0].path
        # A member's GeoPackage damaged on disk (a bad sector, a half-restored backup) ...
        published.damage(data_dir, member)
        # ... and two members that change, so both theme layers are due for a rebuild.
        drop_features(site / "gsi_emergency_282103.json", keep=40)
        (site / "aed.csv").write_bytes(b"".join(aed[:31]))
        # A real shrink, not a cut download: the collapse check (issue 11, item 9) is off.
        second = harvest(data_dir, config, RENKEI_MIN_ROW_SHARE="0")

    assert second.returncode == 1, second.stderr
    assert "error [theme-layers]" in second.stderr and SHELTER_LAYER in second.stderr
    assert "Traceback" not in second.stderr
    job = last_job(store)
    (err,) = [e for e in job.errors if e.stage == "theme-layers"]
    assert (err.dataset, err.resource) == (SHELTER_LAYER, "theme-shelter")
    assert "theme layer shelter not rebuilt" in err.message
    assert str(data_dir) not in err.message          # no server path in what staff read
    assert err.traceback.startswith("Traceback (most recent call last)")
    # Where it failed: reading the member (in batches, geo.theme_layers.merged_chunks).
    assert "store/theme_layers.py" in err.traceback and (
        "geo/theme_layers.py" in err.traceback            # the GeoPackage members' reader
        or "store/theme_layers_pg.py" in err.traceback)   # the PostGIS members' reader
    with store.session() as s:
        shelter = s.get(Collection, "theme-shelter")
        # The previous shelter layer still serves, whole; the AED layer was rebuilt.
        assert (shelter.version, shelter.path) == (1, shelter_path)
        assert s.get(Collection, "theme-aed").version == 2
        assert s.get(Collection, "theme-aed").feature_count == 30
    assert len(published.frame(data_dir, shelter_path)) == shelter_count
    with create_app(data_dir).test_client() as client:
        items = client.get("/ogcapi/collections/theme-shelter/items?f=json&limit=1000").get_json()
    assert items["numberMatched"] == shelter_count

    page = job_page(data_dir, job.id)
    assert "統合レイヤーの再構築" in page and "theme layer shelter not rebuilt" in page
    # Even for staff, tracebacks (server paths) stay in the job record, for the
    # operator's `renkei jobs --tracebacks`.
    reader = "merged_chunks" if "geo/theme_layers.py" in err.traceback else "read_member"
    assert "Traceback" not in page and str(data_dir) not in page and reader not in page
    jobs = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "jobs", "--tracebacks"], capture_output=True, text=True, timeout=120)
    assert jobs.returncode == 0, jobs.stderr
    assert "[theme-layers]" in jobs.stdout and "Traceback (most recent call last)" in jobs.stdout
    assert reader in jobs.stdout


def deflate_broken_zip(path: Path) -> None:
    """A zip whose member's compressed data is damaged while its directory is intact: the
    archive opens, the member does not inflate (zlib raises, not zipfile)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("shelters.geojson", (DATA / "geojson/gsi_emergency_282227.json").read_bytes())
    data = bytearray(buf.getvalue())
    start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
    data[start] = 0x07  # first deflate block: final, type 3 — a type that does not exist
    path.write_bytes(bytes(data))


def test_an_unexpected_exception_in_translation_is_a_translate_error_with_its_traceback(
        data_dir, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    deflate_broken_zip(site / "shelters.zip")
    (site / "emergency.json").write_bytes((DATA / "geojson/gsi_emergency_282201.json").read_bytes())
    with live_server(file_server(site)) as url:
        config = files_config(tmp_path / "sources.yaml", url, [
            ("broken", "養父市 避難場所（ZIP）", "shelters.zip", "yabu-city"),
            ("kasai", "加西市 指定緊急避難場所", "emergency.json", "kasai-city")])
        result = harvest(data_dir, config)

    assert result.returncode == 1, result.stderr
    assert "error [translate] cities / 養父市 避難場所（ZIP） / shelters.zip:" in result.stderr
    assert "Traceback" not in result.stderr
    store = Store(data_dir)
    job = last_job(store)
    (err,) = job.errors
    assert (err.stage, err.dataset, err.resource) == ("translate", "養父市 避難場所（ZIP）",
                                                      "shelters.zip")
    assert "decompressing" in err.message
    assert err.traceback.startswith("Traceback (most recent call last)")
    assert "geo/readers.py" in err.traceback      # where it really happened
    assert (job.status, job.added, job.failed) == ("done", 1, 1)   # the job went on
    with store.session() as s:
        assert s.get(Dataset, "cities--kasai").collections[0].feature_count == 20
        res = s.get(Dataset, "cities--broken").resources[0]
        assert res.state == "error" and "decompressing" in res.message
    page = job_page(data_dir, job.id)
    assert "［変換］" in page and "decompressing" in page
    assert "Traceback" not in page and "geo/readers.py" not in page


def test_a_record_in_an_unreadable_shape_is_an_enumerate_error_the_rest_is_published(
        fixture_files, data_dir, tmp_path):
    broken = package("broken-tags", "タグの形が違うデータ", [("kakogawa_bom.csv", "CSV")])
    broken["tags"] = ["避難所"]  # CKAN sends tag objects; this site sends bare strings
    site = FakeCKAN([package("evac", "加古川市 指定避難所",
                             [("gsi_evacuation_282103.json", "GeoJSON")]), broken],
                    fixture_files)
    config = tmp_path / "sources.yaml"
    with site.running() as url:
        config.write_text(f"sources:\n  - name: hyogo-ckan\n    type: ckan\n    url: {url}\n"
                          "    allow_private_networks: true\n",
                          encoding="utf-8")
        result = harvest(data_dir, config)
    assert result.returncode == 1, result.stderr
    assert "error [enumerate] hyogo-ckan / broken-tags: AttributeError" in result.stderr
    assert "Traceback" not in result.stderr
    job = last_job(Store(data_dir))
    (err,) = job.errors
    assert (err.stage, err.dataset) == ("enumerate", "broken-tags")
    assert "to_remote_dataset" in err.traceback
    assert job.added == 1
    assert "not enumerated completely: nothing withdrawn" in job.message


def test_download_limit_is_read_when_the_harvest_starts(data_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "emergency.json").write_bytes((DATA / "geojson/gsi_emergency_282201.json").read_bytes())
    # The harvesters (fetch, pipeline, runner) were imported with this module; a limit set
    # after that still applies.
    monkeypatch.setenv("RENKEI_MAX_DOWNLOAD", "1000")
    with live_server(file_server(site)) as url:
        (report,) = run_harvest(Store(data_dir), [source(
            "cities", "files", "", organization="kasai-city",
            files=[{"id": "kasai", "title": "加西市", "url": f"{url}/files/emergency.json"}])],
            {}, log=lambda _line: None)
    (err,) = report.errors
    assert err.stage == "fetch" and "over the limit of 1,000" in err.message

    config = tmp_path / "sources.yaml"
    config.write_text("sources:\n  - name: cities\n    type: files\n    files: []\n",
                      encoding="utf-8")
    bad = harvest(tmp_path / "fresh", config, RENKEI_STREAM_BYTES="200MB")
    assert bad.returncode == 2
    assert "RENKEI_STREAM_BYTES must be a whole number" in bad.stderr
    assert not (tmp_path / "fresh" / "catalogue.db").exists()   # nothing touched


def test_an_old_catalogue_gets_the_traceback_column(data_dir):
    from sqlalchemy import inspect, text
    with Store(data_dir).engine.begin() as db:   # as made before tracebacks (and Alembic)
        db.execute(text("ALTER TABLE harvest_error DROP COLUMN traceback"))
        db.execute(text("DROP TABLE alembic_version"))
    with Store(data_dir).engine.connect() as db:
        columns = {c["name"] for c in inspect(db).get_columns("harvest_error")}
    assert "traceback" in columns


def test_source_types_are_registered_by_their_modules():
    assert source_types() == ["ckan", "files", "ngsi-ld", "ngsi-v2", "ogcapi"]
    for kind in source_types():
        cls = harvester_class(kind)
        assert issubclass(cls, Harvester) and cls.source_type == kind
    with pytest.raises(TypeError, match="registered twice"):
        type("Another", (Harvester,), {}, source_type="ckan")


def test_an_unknown_type_names_the_registered_ones(tmp_path):
    config = tmp_path / "sources.yaml"
    config.write_text("sources:\n  - name: x\n    type: wfs\n    url: https://example.jp/\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown type 'wfs' .one of ckan, files, ngsi-ld"):
        load_config(config)
