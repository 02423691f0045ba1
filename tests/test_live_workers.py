"""Live collections across gunicorn workers: `renkei serve --workers 3` while `renkei harvest`
runs in another process. Every worker must see a new collection on its next request (and the
OpenAPI document with it), and a re-harvest that replaces a collection's file must never show a
torn read (a count from one version with features from the other)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.servers import REPO, TEST_DATA, FakeCKAN, package, renkei_serve
from tests.test_harvest_ckan import write_config

TITLE = "加古川市 指定避難所"
FULL = 72


def harvest_async(data_dir, config):
    return subprocess.Popen([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                             "harvest", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def served3(data_dir):
    with renkei_serve(data_dir, workers=3) as served:
        yield served


def workers(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children") as fh:
        return [int(p) for p in fh.read().split()]


def open_gpkgs(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".gpkg"):
            out.add(target)
    return out


def titles(base: str) -> dict[str, str]:
    # A new connection per request, so the three workers share the requests.
    doc = requests.get(base + "/ogcapi/collections?f=json", timeout=10,
                       headers={"Connection": "close"}).json()
    return {c["title"]: c["id"] for c in doc["collections"]}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
@pytest.mark.embedded_only(reason="proves each worker serves the new version by the GeoPackage it "
                           "holds open; PostgreSQL mode: tests/test_two_servers.py and "
                           "tests/test_stateless_servers.py")
def test_every_worker_follows_publish_and_replace(tmp_path, data_dir, served3):
    base, master = served3
    src = json.loads((TEST_DATA / "geojson/gsi_evacuation_282103.json").read_text("utf-8"))
    served_file = tmp_path / "evac.json"
    served_file.write_text(json.dumps(src, ensure_ascii=False), encoding="utf-8")
    pkg = package("evac-282103", TITLE, [("evac.json", "GeoJSON")], tags=["避難所"])
    site = FakeCKAN([pkg], {"evac.json": served_file}, max_rows=10)
    pids = workers(master)
    assert len(pids) == 3
    for _ in range(9):  # every worker has built its (empty) OGC API before the harvest
        assert titles(base) == {}

    with site.running() as url:
        config = write_config(tmp_path / "sources.yaml", url)
        # 72 → 30 features below is a real change here, not a cut download (issue 11, item 9)
        config.write_text(config.read_text() + "    min_row_share: 0\n", encoding="utf-8")
        first = harvest_async(data_dir, config)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err

        # Each worker, on its next request, lists the collection and serves its features:
        # keep asking until every worker holds the new GeoPackage open (proof it served it).
        cid = None
        deadline = time.monotonic() + 60
        while True:
            ids = titles(base)
            assert TITLE in ids, ids
            cid = ids[TITLE]
            doc = requests.get(f"{base}/ogcapi/collections/{cid}/items", timeout=10,
                               headers={"Connection": "close"}).json()
            assert doc["numberMatched"] == FULL
            oas = requests.get(f"{base}/ogcapi/openapi?f=json", timeout=30,
                               headers={"Connection": "close"}).json()
            assert f"/collections/{cid}/items" in oas["paths"]
            if all(any("/features/" in f for f in open_gpkgs(p)) for p in pids):
                break
            assert time.monotonic() < deadline, "some worker never served the collection"

        # Re-harvest a changed file (fewer features) while clients keep reading.
        src["features"] = src["features"][:30]
        served_file.write_text(json.dumps(src, ensure_ascii=False), encoding="utf-8")
        site.packages[0] = dict(pkg, metadata_modified="2030-01-01T00:00:00.000000",
                                resources=[dict(pkg["resources"][0],
                                                last_modified="2030-01-01T00:00:00")])
        # (monotonic time the read was sent, numberMatched) of every read, under `changed`.
        seen: list[tuple[float, int]] = []
        torn, stop, changed = [], threading.Event(), threading.Condition()

        def read():
            with requests.Session() as s:
                while not stop.is_set():
                    sent = time.monotonic()
                    r = s.get(f"{base}/ogcapi/collections/{cid}/items", timeout=30,
                              params={"limit": 1000}, headers={"Connection": "close"})
                    with changed:
                        if r.status_code != 200:
                            torn.append((r.status_code, r.text[:200]))
                        else:
                            d = r.json()
                            seen.append((sent, d["numberMatched"]))
                            if d["numberMatched"] != len(d["features"]) or \
                                    d["numberMatched"] not in (FULL, 30):
                                torn.append((d["numberMatched"], len(d["features"])))
                        changed.notify_all()

        def wait_until(condition, what):
            with changed:
                assert changed.wait_for(condition, timeout=60), what

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            # The readers are reading the first version before the re-harvest starts …
            wait_until(lambda: sum(n == FULL for _, n in seen) >= 3 or torn,
                       "the readers never read the first version")
            second = harvest_async(data_dir, config)
            _, err = second.communicate(timeout=300)
            assert second.returncode == 0, err
            switched = time.monotonic()
            # … and keep reading until several reads sent after the switch have answered.
            wait_until(lambda: sum(t > switched for t, _ in seen) >= 6 or torn,
                       "no reads answered after the switch")
        finally:
            stop.set()
            for t in readers:
                t.join(30)
    assert not torn, torn[:5]
    assert any(n == FULL for t, n in seen if t < switched)
    after = [n for t, n in seen if t > switched]
    assert len(after) >= 6 and set(after) == {30}, after  # nothing old once switched
    for _ in range(9):  # every worker now answers with the new version only
        ids = titles(base)
        assert ids[TITLE] == cid  # the id is stable across harvests
        doc = requests.get(f"{base}/ogcapi/collections/{cid}/items", timeout=10,
                           headers={"Connection": "close"}).json()
        assert doc["numberMatched"] == 30
