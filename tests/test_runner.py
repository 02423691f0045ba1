"""Runner semantics a municipal cron can trust: locks, heartbeats, time limits, incremental
CKAN, withdrawals (capped, reversible), retries, and the staff status pages."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import requests

from catalog.app import create_app
from store import features_pg
from store.db import Dataset, HarvestJob, Store, utcnow
from harvesters.runner import source_lock, summary
from tests import pg_mode
from tests.accounts import sysadmin_headers
from tests.ngsi_servers import FakeOrion, gsi_sites, run, source
from tests.servers import REPO, FakeCKAN, live_server, package

PKGS = [package(f"shelters-{i}", f"避難所 その{i}", [("kakogawa_bom.csv", "CSV")])
        for i in range(10)]


def ckan(url, **kw):
    return source("hyogo-ckan", "ckan", url, organization=None, rows=100, **kw)


def test_second_harvest_of_a_locked_source_exits_at_once_with_a_clear_message(data_dir,
                                                                             tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("sources:\n  - name: kakogawa-fiware\n    type: ngsi-v2\n"
                      "    url: http://127.0.0.1:9/\n", encoding="utf-8")
    with source_lock(Store(data_dir), "kakogawa-fiware"):  # as a running harvest holds it
        result = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir",
                                 str(data_dir), "harvest", "--config", str(config)],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 1
    assert "source 'kakogawa-fiware' is being harvested by another process" in result.stderr
    assert "pid" in result.stderr and "locked" in result.stderr


def test_the_heartbeat_moves_on_after_every_dataset_while_the_job_runs(fixture_files, data_dir):
    """Staff tell a live job from a dead one by its last sign of life: it must move on while the
    job runs, not only be set when the job starts and when it ends."""
    store = Store(data_dir)
    marks: list[tuple[datetime, datetime]] = []  # (a dataset's download starts, heartbeat then)

    def look(name):
        with store.session() as s:
            (job,) = s.query(HarvestJob).filter_by(status="running").all()
            marks.append((utcnow(), job.heartbeat_at))

    site = FakeCKAN(PKGS[:4], fixture_files, max_rows=10)
    site.on_file = look
    with site.running() as url:
        (report,), _ = run(data_dir, ckan(url))
    assert report.status == "done" and report.counts["added"] == 4, summary([report])
    assert len(marks) == 4
    # When dataset k is fetched, the heartbeat is later than the start of dataset k-1.
    for (previous_start, _), (_, heartbeat) in zip(marks, marks[1:]):
        assert heartbeat > previous_start, marks
    with store.session() as s:
        (job,) = s.query(HarvestJob).all()
        assert job.heartbeat_at >= marks[-1][0] and job.finished_at is not None


def test_a_time_limit_closes_a_hanging_job(data_dir):
    orion = FakeOrion(gsi_sites(), max_limit=30)
    with live_server(orion.app) as url:
        cfg = dict(service="kakogawa", entity_types=["EvacuationSite"])
        (first,), _ = run(data_dir, source("fw", "ngsi-v2", url, **cfg))
        before = [(c.id, c.path) for c in Store(data_dir).active_collections()]
        orion.faults.hang, orion.faults.hang_offset = 3.0, 30  # page 2 hangs
        (late,), _ = run(data_dir, source("fw", "ngsi-v2", url, time_limit=1, **cfg),
                         timeout=10)
        orion.faults.hang = 0
    assert first.status == "done"
    assert late.status == "failed"
    assert "time limit of 1 s exceeded" in summary([late])
    store = Store(data_dir)
    assert [(c.id, c.path) for c in store.active_collections()] == before
    with store.session() as s:
        jobs = s.query(HarvestJob).order_by(HarvestJob.id).all()
        assert [j.status for j in jobs] == ["done", "failed"]
        assert all(j.heartbeat_at and j.finished_at and j.heartbeat_at >= j.started_at
                   for j in jobs)
        # a stopped job withdraws nothing
        assert s.query(Dataset).filter_by(source_name="fw").one().status == "active"


def test_a_job_left_running_by_a_dead_process_is_closed_as_failed(data_dir):
    store = Store(data_dir)
    with store.session() as s, s.begin():
        s.add(HarvestJob(source_name="fw", status="running", heartbeat_at=utcnow()))
    with create_app(data_dir).test_client() as client:
        page = client.get("/harvest", headers=sysadmin_headers(data_dir)).get_data(as_text=True)
    assert "異常終了" in page  # the lock is free: staff see it is dead before the next run
    orion = FakeOrion(gsi_sites())
    with live_server(orion.app) as url:
        run(data_dir, source("fw", "ngsi-v2", url, service="kakogawa",
                             entity_types=["EvacuationSite"]))
    with store.session() as s:
        dead, new = s.query(HarvestJob).order_by(HarvestJob.id).all()
        assert dead.status == "failed" and "ended before the job finished" in dead.message
        assert new.status == "done"


def test_incremental_ckan_asks_only_for_changes_and_still_sees_deletions(fixture_files,
                                                                       data_dir):
    pkgs = [dict(p) for p in PKGS]
    site = FakeCKAN(pkgs, fixture_files, max_rows=4)
    with site.running() as url:
        (first,), _ = run(data_dir, ckan(url, incremental=True))
        assert first.counts["added"] == 10 and not first.errors, summary([first])
        ids7 = [c.id for c in Store(data_dir).active_collections()
                if c.dataset_id == "hyogo-ckan--shelters-7"]
        downloads = sum(site.downloads.values())
        # At the source: one changed, one deleted, one new (with an old modification date).
        now = (datetime.utcnow() + timedelta(minutes=1)).isoformat()
        pkgs[3] = dict(pkgs[3], title="避難所 その3（改訂）", metadata_modified=now)
        del pkgs[7]
        pkgs.append(package("late", "遅れて公開された避難所", [("kakogawa_bom.csv", "CSV")]))
        site.calls.clear()
        (second,), log = run(data_dir, ckan(url, incremental=True))
    assert (second.counts["added"], second.counts["updated"], second.counts["unchanged"],
            second.counts["withdrawn"]) == (1, 1, 8, 1), summary([second])
    # rows=0: the count that package_list's names are checked against (issue 11, item 10)
    searches = [p for action, p in site.calls if action == "package_search"
                and int(p.get("rows", 1)) > 0]
    assert searches and all("metadata_modified:[" in p["fq"] for p in searches)
    assert [p["id"] for action, p in site.calls if action == "package_show"] == ["late"]
    assert any(action == "package_list" for action, _ in site.calls)
    assert sum(site.downloads.values()) - downloads <= 2  # only the changed and the new one
    store = Store(data_dir)
    with store.session() as s:
        gone = s.get(Dataset, "hyogo-ckan--shelters-7")
        assert gone.status == "withdrawn"
        assert s.get(Dataset, "hyogo-ckan--shelters-3").title == "避難所 その3（改訂）"
    assert "hyogo-ckan--shelters-7" not in store.search.search("避難所", per_page=50).ids
    assert not [c for c in store.active_collections() if c.dataset_id == gone.id]
    with create_app(data_dir).test_client() as client:
        assert client.get("/datasets/hyogo-ckan--shelters-7").status_code == 410
    if pg_mode.active():   # its record stays; its PostGIS version tables are dropped
        with features_pg.engine_for(data_dir).connect() as conn:
            assert ids7 and not [t for c in ids7 for t in features_pg.version_tables(conn, c)]
    else:
        assert any(path.exists()
                   for path in (data_dir / "features").glob("hyogo-ckan--shelters-7*/*"))


def test_withdrawal_is_capped_and_a_dataset_that_comes_back_is_reactivated(fixture_files,
                                                                          data_dir):
    pkgs = [dict(p) for p in PKGS]
    site = FakeCKAN(pkgs, fixture_files, max_rows=100)
    with site.running() as url:
        run(data_dir, ckan(url))
        site.packages = pkgs[:7]  # 3 of 10 gone: more than 20%
        (capped,), _ = run(data_dir, ckan(url))
        site.packages = pkgs[:9]
        (one,), _ = run(data_dir, ckan(url))
        site.packages = pkgs
        (back,), _ = run(data_dir, ckan(url))
    assert capped.counts["withdrawn"] == 0
    assert any("3 of 10 datasets are no longer offered" in w and "nothing withdrawn" in w
               for w in capped.warnings)
    assert one.counts["withdrawn"] == 1
    assert back.counts["updated"] == 1 and back.counts["withdrawn"] == 0
    store = Store(data_dir)
    with store.session() as s:
        assert {d.status for d in s.query(Dataset).filter_by(source_name="hyogo-ckan")} == \
            {"active"}
    assert "hyogo-ckan--shelters-9" in store.search.search("避難所", per_page=50).ids
    back_collections = [c for c in store.active_collections()
                        if c.dataset_id == "hyogo-ckan--shelters-9"]
    assert back_collections
    with create_app(data_dir).test_client() as client:   # served again, in both modes
        for c in back_collections:
            r = client.get(f"/ogcapi/collections/{c.id}/items?f=json")
            assert r.status_code == 200 and r.get_json()["features"], r.text[:300]


def test_an_empty_page_in_the_middle_of_ckan_paging_withdraws_nothing(fixture_files, data_dir):
    site = FakeCKAN([dict(p) for p in PKGS], fixture_files, max_rows=4)
    with site.running() as url:
        run(data_dir, ckan(url))
        site.empty_at_start = 4
        (report,), _ = run(data_dir, ckan(url))
    assert report.counts["withdrawn"] == 0
    assert any("empty page at start=4 of 10" in w for w in report.warnings)
    assert any("nothing withdrawn" in w for w in report.warnings)
    with Store(data_dir).session() as s:
        assert {d.status for d in s.query(Dataset).filter_by(source_name="hyogo-ckan")} == \
            {"active"}


def test_retries_5xx_but_not_4xx_and_a_dead_source_does_not_stop_the_others(data_dir):
    orion = FakeOrion(gsi_sites())
    cfg = dict(service="kakogawa", entity_types=["EvacuationSite"], retries=3)
    with live_server(orion.app) as url:
        orion.faults.statuses = [500, 503]
        (healed,), _ = run(data_dir, source("fw", "ngsi-v2", url, **cfg))
        assert healed.status == "done" and not healed.errors
        assert orion.hits[("EvacuationSite", 0)] == 3
        orion.hits.clear()
        orion.faults.statuses = [404]
        (missing,), _ = run(data_dir, source("fw", "ngsi-v2", url, **cfg))
        assert orion.hits[("EvacuationSite", 0)] == 1 and "HTTP 404" in summary([missing])
        dead = source("dead", "ngsi-v2", "http://127.0.0.1:9", **cfg)
        reports, _ = run(data_dir, dead, source("fw2", "ngsi-v2", url, **cfg))
    assert [r.status for r in reports] == ["failed", "done"]
    assert "connection failed" in summary(reports)
    assert reports[1].counts["added"] == 1


def test_status_pages_show_counts_grouped_errors_and_provenance(fixture_files, data_dir):
    bad = [package(f"broken-{i}", f"リンク切れ {i}", [("missing.csv", "CSV")]) for i in range(3)]
    site = FakeCKAN([PKGS[0], *bad], fixture_files)
    with site.running() as url:
        (report,), _ = run(data_dir, ckan(url))
    text = summary([report])
    # One message, three places: grouped, every dataset named, nothing dropped.
    assert text.count("HTTP 404") == 1 and "(3 times, 3 places)" in text
    assert all(f"hyogo-ckan / リンク切れ {i} / missing.csv" in text for i in range(3))
    store = Store(data_dir)
    with store.session() as s:
        job_id = s.query(HarvestJob).one().id
    staff = sysadmin_headers(data_dir)
    with live_server(create_app(data_dir)) as base:
        listing = requests.get(base + "/harvest", timeout=10, headers=staff).text
        page = requests.get(f"{base}/harvest/{job_id}", timeout=10, headers=staff).text
        missing = requests.get(base + "/harvest/999", timeout=10, headers=staff)
    assert "hyogo-ckan" in listing and f"/harvest/{job_id}" in listing and "最後の失敗" in listing
    assert "エラー（3件、1種類）" in page and "ダウンロード" in page
    assert all(f"リンク切れ {i}" in page for i in range(3))
    assert "元データ（提供元のメタデータ）" in page and "uuid-shelters-0" in page  # raw
    assert "変換後の登録内容" in page and "hyogo-ckan--shelters-0" in page         # record
    assert missing.status_code == 404
    jobs = subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           "jobs", "--source", "hyogo-ckan"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert jobs.returncode == 0 and jobs.stdout.count("HTTP 404") == 3
