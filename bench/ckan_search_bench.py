"""CKAN package_search with free text (issue 11, item 13): the search index pages the answer
(after) against collecting every match and paging in SQL (before), in the same run, on the
same catalogue of --n synthetic datasets (bench/gen_search_corpus.py), through the real Flask
app. The /datasets page for the same words is the reference.

    python bench/ckan_search_bench.py [--n 30000] [--runs 5]

"before" is the code path main used for every q: still reachable for filters the index cannot
express (dates, negation), and forced here by making the fast path decline. Prints figures only.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUERIES = ["データ 避難所 一覧", "避難所", "防災", "公共施設", "加古川市"]


def seed(data_dir: Path, n: int) -> None:
    from store.db import Dataset, Store
    spec = importlib.util.spec_from_file_location("gen", REPO / "bench" / "gen_search_corpus.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    corpus = gen.make_corpus(n)
    store = Store(data_dir)
    with store.session() as s:
        s.execute(insert(Dataset), [
            {"id": f"b--{r['id']}", "source_name": "bench", "remote_id": str(r["id"]),
             "name": f"b-{r['id']}", "title": r["title"], "description": r["description"],
             "tags": r["tags"].split(), "organization_id": r["org"], "license_id": r["license"],
             "status": "active", "raw": {}} for r in corpus])
        s.commit()
    with store.engine.begin() as conn:
        store.search.upsert_many(conn, [
            {"id": f"b--{r['id']}", "title": r["title"], "description": r["description"],
             "tags": r["tags"].split(), "organization": r["org"], "organization_title": r["org"],
             "formats": r["formats"].split(), "license_id": r["license"],
             "modified": r["updated"]} for r in corpus])


def timed(client, path: str, params: dict, runs: int) -> tuple[float, int]:
    client.get(path, query_string=params)  # warm-up (arrays loaded, caches filled)
    out, count = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(path, query_string=params)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.get_data(as_text=True)[:200]
        if path.startswith("/api/"):
            count = r.get_json()["result"]["count"]
    return statistics.median(out), count


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from catalog.api import ckan_query
    from catalog.app import create_app
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        seed(Path(tmp), args.n)
        print(f"seeded {args.n} datasets in {time.perf_counter() - t0:.1f} s")
        client = create_app(Path(tmp)).test_client()
        fast = ckan_query._index_filters
        print(f"{'q':<22} {'matches':>8} {'before ms':>10} {'after ms':>9} {'ratio':>6} "
              f"{'/datasets ms':>12}")
        ratios = []
        for q in QUERIES:
            params = {"q": q, "rows": 1}
            ckan_query._index_filters = lambda query: None  # main's path: every match in SQL
            before, n_before = timed(client, "/api/3/action/package_search", params, args.runs)
            ckan_query._index_filters = fast
            after, n_after = timed(client, "/api/3/action/package_search", params, args.runs)
            page, _ = timed(client, "/datasets", {"q": q}, args.runs)
            assert n_before == n_after, (q, n_before, n_after)
            ratios.append(before / after)
            print(f"{q:<22} {n_after:>8} {before:>10.1f} {after:>9.1f} {before / after:>5.1f}x "
                  f"{page:>12.1f}")
        print(f"median speed-up {statistics.median(ratios):.1f}x (p50 of {args.runs} runs each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
