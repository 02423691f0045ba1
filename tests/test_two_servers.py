"""Two `renkei serve` processes with different, empty data dirs and one PostgreSQL database,
harvests from a third process: both serve the same catalogue (search, CKAN API, pages, the
collection list) and the same withdrawals, without restart (issue 14). The features
themselves (OGC API items) are checked with the PostGIS feature storage."""
from __future__ import annotations

import time

import pytest
import requests

from tests.pg_mode import url_for
from tests.servers import FakeCKAN, renkei_serve
from tests.test_harvest_ckan import GOOD, harvest, write_config

pytestmark = pytest.mark.pg_only(reason="one database shared by several machines")


def _view(base: str) -> dict:
    """What a visitor of one server sees of the catalogue."""
    search = requests.get(f"{base}/api/3/action/package_search",
                          params={"rows": 100, "sort": "name asc"}, timeout=60).json()["result"]
    hits = requests.get(f"{base}/api/3/action/package_search", params={"q": "避難", "rows": 100},
                        timeout=60).json()["result"]
    collections = requests.get(f"{base}/ogcapi/collections?f=json", timeout=60).json()
    return {"ids": sorted(p["id"] for p in search["results"]),
            "避難": sorted(p["id"] for p in hits["results"]),
            "collections": sorted(c["id"] for c in collections["collections"])}


def _until_equal(bases, want, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        views = [_view(b) for b in bases]
        if all(v == want for v in views) or time.monotonic() > deadline:
            return views
        time.sleep(0.5)


def test_two_servers_one_database_follow_a_third_process(fixture_files, tmp_path, monkeypatch):
    import os
    shared = url_for(os.environ["RENKEI_TEST_RUN_DATABASE"], tmp_path / "shared")
    monkeypatch.setenv("RENKEI_DATABASE_URL", shared)
    packages = list(GOOD)
    site = FakeCKAN(packages, fixture_files, max_rows=4)
    with site.running() as site_url, \
            renkei_serve(tmp_path / "web1", workers=1) as (one, _), \
            renkei_serve(tmp_path / "web2", workers=1) as (two, _):
        empty = _view(one)
        assert empty["ids"] == [] and _view(two) == empty
        config = write_config(tmp_path / "s.yaml", site_url)
        result = harvest(tmp_path / "harvester", config)
        assert result.returncode == 0, result.stderr
        first = _view(one)
        assert len(first["ids"]) >= len(GOOD) and first["避難"] and first["collections"]
        assert _until_equal([two], first) == [first]
        gone = "hyogo-ckan--population"
        assert gone in first["ids"]
        for base in (one, two):
            assert requests.get(f"{base}/datasets/{gone}", timeout=30).status_code == 200

        packages[:] = [p for p in packages if p["name"] != "population"]  # removed upstream
        result = harvest(tmp_path / "harvester", config)
        assert result.returncode == 0, result.stderr
        second = _view(two)
        assert gone not in second["ids"] and len(second["ids"]) == len(first["ids"]) - 1
        assert _until_equal([one], second) == [second]
        for base in (one, two):  # withdrawn: its page says so, on both
            assert requests.get(f"{base}/datasets/{gone}", timeout=30).status_code == 410
    # Neither web server wrote a catalogue of its own.
    assert not (tmp_path / "web1" / "catalogue.db").exists()
    assert not (tmp_path / "web2" / "catalogue.db").exists()
