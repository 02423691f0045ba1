"""Requests racing a republish (issue 14): while harvests from another process publish new
versions of a collection, readers page through its items, fetch items by id and stream its
download. Every answer is a whole, consistent version, old or new; none is a 5xx. In PostgreSQL
mode the superseded table must outlive the requests that already chose it."""
from __future__ import annotations

import io
import threading
import time
from csv import DictReader

import requests

from tests.servers import renkei_serve
from tests.test_security_serve import harvest

DATASET = "race-files--points"
ROWS = 60


def _sources(folder, round_: int):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["地点,緯度,経度,版"] + [f"競合地点{i},{34.70 + i * 0.001:.6f},{134.80 + i * 0.001:.6f},"
                                        f"第{round_}版" for i in range(ROWS)]
    (folder / "points.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = folder / "sources.yaml"
    config.write_text("sources:\n  - name: race-files\n    type: files\n"
                      "    organization: kakogawa-city\n    files:\n      - id: points\n"
                      "        title: 競合地点\n        url: points.csv\n"
                      "        license: cc-by-4.0\n", encoding="utf-8")
    return config


def test_reads_racing_republishes_never_fail(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("RENKEI_DROP_GRACE", "300")   # production's (the test mode drops at once)
    # Four readers as fast as the server answers: past 1000 items pages an hour from one address
    # once the item path got faster (issue 17), and a 429 is not what this test is about.
    monkeypatch.setenv("RENKEI_RATE_LIMIT", "1000000/hour")
    src = tmp_path / "src"
    assert harvest(data_dir, _sources(src, 0)).returncode == 0
    with renkei_serve(data_dir, workers=2) as (base, _):
        (col,) = requests.get(f"{base}/ogcapi/collections?f=json",
                              timeout=30).json()["collections"]
        cid = col["id"]
        stop, bad, seen = threading.Event(), [], []

        def read(n: int):
            s = requests.Session()
            i = n
            while not stop.is_set():
                i += 1
                offset = (i * 7) % (ROWS - 10)
                page = s.get(f"{base}/ogcapi/collections/{cid}/items",
                             params={"f": "json", "limit": 10, "offset": offset}, timeout=60)
                one = s.get(f"{base}/ogcapi/collections/{cid}/items/{offset + 1}?f=json",
                            timeout=60)
                csv = s.get(f"{base}/datasets/{DATASET}/collections/{cid}.csv", timeout=60)
                for r in (page, one, csv):
                    if r.status_code != 200:
                        bad.append((r.url, r.status_code, r.text[:300]))
                if page.status_code == 200:
                    feats = page.json()["features"]
                    editions = {f["properties"]["版"] for f in feats}
                    if [f["id"] for f in feats] != list(range(offset + 1, offset + 11)) \
                            or len(editions) != 1:
                        bad.append((page.url, "torn page", editions))
                if csv.status_code == 200:
                    rows = list(DictReader(io.StringIO(csv.content.decode("utf-8-sig"))))
                    editions = {row["版"] for row in rows}
                    if len(rows) != ROWS or len(editions) != 1:
                        bad.append((csv.url, "torn download", editions))
                    seen.append(editions.pop() if editions else None)

        readers = [threading.Thread(target=read, args=(n,)) for n in range(4)]
        for t in readers:
            t.start()
        try:
            for round_ in (1, 2):
                time.sleep(0.5)
                assert harvest(data_dir, _sources(src, round_)).returncode == 0
            time.sleep(1)
        finally:
            stop.set()
            for t in readers:
                t.join(60)
        assert not bad, bad[:5]
        assert "第2版" in seen   # the readers did follow the republishes
