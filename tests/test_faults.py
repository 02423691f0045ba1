"""Faults a harvest meets in the wild: the process killed mid-run, a truncated body, a 500,
a hang past the timeout, an empty page in the middle of paging. Each is reported, and what
was published keeps being served."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from catalog.app import create_app
from store.db import HarvestJob, Store
from harvesters.runner import summary
from tests.accounts import sysadmin_headers
from tests.ngsi_servers import FakeOrion, fiware_example, gsi_sites, run, source
from tests.servers import REPO, live_server

TYPES = ["PointOfInterest", "EvacuationSite"]


def entities(suffix: str = "") -> list[dict]:
    poi = fiware_example("sdm_PointOfInterest_example-normalized.json")
    poi["location"]["value"]["coordinates"] = [134.8414, 34.7569]
    sites = gsi_sites()
    for e in [poi, *sites]:
        e["name"]["value"] += suffix
    return [poi, *sites]


def served_names(base: str) -> dict[str, list[str]]:
    """Collection title → feature names, as a GIS client sees them through the OGC API."""
    out = {}
    cols = requests.get(base + "/ogcapi/collections?f=json", timeout=10).json()["collections"]
    for col in cols:
        if not col["id"].startswith("fw--"):
            continue
        items = requests.get(f"{base}/ogcapi/collections/{col['id']}/items",
                             params={"f": "json", "limit": 1000}, timeout=10).json()
        out[col["id"].split("--")[1]] = sorted(f["properties"]["name"] for f in items["features"])
    return out


def harvest_cmd(data_dir, config) -> list[str]:
    return [sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir), "harvest",
            "--config", str(config), "--timeout", "10"]


def test_sigkill_in_the_middle_of_a_run_keeps_serving_and_the_next_run_recovers(data_dir,
                                                                              tmp_path):
    orion = FakeOrion(entities(), max_limit=30)
    with live_server(orion.app) as url, live_server(create_app(data_dir)) as site:
        config = tmp_path / "sources.yaml"
        config.write_text(f"sources:\n  - name: fw\n    type: ngsi-v2\n    url: {url}\n"
                          f"    allow_private_networks: true\n    service: kakogawa\n    entity_types: [{', '.join(TYPES)}]\n"
                          f"    organization: kakogawa-city\n", encoding="utf-8")
        first = subprocess.run(harvest_cmd(data_dir, config), capture_output=True, text=True,
                               cwd=REPO, timeout=120)
        assert first.returncode == 0, first.stderr
        before = served_names(site)
        assert len(before["EvacuationSite"]) == 82

        orion.entities = entities("（改）")
        orion.faults.gate_offset = 30  # the second page of shelters waits for us
        proc = subprocess.Popen(harvest_cmd(data_dir, config), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert orion.faults.entered.wait(60), "the harvest never reached the gate"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            orion.faults.gate_offset = None
            orion.faults.release.set()
        assert proc.returncode == -signal.SIGKILL
        during = served_names(site)
        # The type published before the kill switched whole; the other one is untouched.
        assert during["PointOfInterest"] == ["Playa de a Concha（改）"]
        assert during["EvacuationSite"] == before["EvacuationSite"]
        with Store(data_dir).session() as s:
            assert [j.status for j in s.query(HarvestJob).order_by(HarvestJob.id)] == \
                ["done", "running"]
        assert "異常終了" in requests.get(site + "/harvest", timeout=10,
                                      headers=sysadmin_headers(data_dir)).text

        last = subprocess.run(harvest_cmd(data_dir, config), capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert last.returncode == 0, last.stderr
        after = served_names(site)  # the same server, no restart
    assert after["EvacuationSite"] == sorted(n + "（改）" for n in before["EvacuationSite"])
    with Store(data_dir).session() as s:
        jobs = s.query(HarvestJob).order_by(HarvestJob.id).all()
        assert [j.status for j in jobs] == ["done", "failed", "done"]
        assert "ended before the job finished" in jobs[1].message


@pytest.mark.parametrize("fault, expected", [
    ("truncated", "did not answer JSON"),
    ("500", "HTTP 500"),
    ("hang", "timed out after 0.5 s"),
    ("empty page", "empty page at offset 30 of 82"),
    ("count changes", "Fiware-Total-Count changed during paging (82 → 83)"),
])
def test_a_faulty_source_is_reported_and_nothing_served_is_lost(data_dir, fault, expected):
    orion = FakeOrion(entities(), max_limit=30)
    cfg = dict(service="kakogawa", entity_types=TYPES, retries=2)
    with live_server(orion.app) as url:
        (good,), _ = run(data_dir, source("fw", "ngsi-v2", url, **cfg))
        assert good.status == "done"
        store = Store(data_dir)
        version = store.publish_version()
        before = [(c.id, c.path, c.feature_count) for c in store.active_collections()]
        orion.entities = entities("（改）")  # the source changed: a clean run would republish
        f = orion.faults
        if fault == "truncated":
            f.truncate_offset = 30
        elif fault == "500":
            f.statuses = [500] * 10
        elif fault == "hang":
            f.hang, f.hang_offset = 2.0, 30
        elif fault == "empty page":
            f.empty_offset = 30
        else:
            f.count_shift_after_first = 1
        (bad,), _ = run(data_dir, source("fw", "ngsi-v2", url, **cfg), timeout=0.5)
        f.release.set()
    text = summary([bad])
    assert expected in text, text
    assert bad.counts["withdrawn"] == 0
    with store.session() as s:
        job = s.query(HarvestJob).order_by(HarvestJob.id.desc()).first()
        assert job.status in ("done", "failed") and job.errors
        assert any(expected in e.message for e in job.errors)
    after = [(c.id, c.path, c.feature_count) for c in store.active_collections()]
    shelters = [c for c in before if "--EvacuationSite--" in c[0]]
    assert set(shelters) <= set(after)  # the shelters layer is served as it was
    if fault == "500":  # the broker failed from the first request: nothing changed at all
        assert after == before and store.publish_version() == version
