"""Search benchmark: the catalogue's SearchIndex over the seeded corpus from
bench/gen_search_corpus.py (default 100,000 datasets), timing the full results page
(total + first page + every facet's counts, i.e. what /datasets renders) and checking recall
against the corpus's planted spelling variants.

    python bench/search_bench.py [--n 100000] [--db PATH] [--runs 3]
                                 [--publish-every 2] [--publish-seconds 30]

Then the same queries again (one untimed round first: a worker that has answered them before),
round and round for --publish-seconds, while another process publishes (upserts) a dataset
every --publish-every seconds, as a harvest does: the slowest search during continuous
publishing, and how each publish reached this process's arrays (applied incrementally or
reloaded). Issue 17 targets: p50 <= 2 ms, p95 <= 10 ms at 100k; p50 <= 10 ms at
1M; slowest search during publishing < 50 ms.

Each query: one warm-up, then --runs timed runs; p50/p95 are over all timed runs of a kind.
Targets (issue 5): p50 <= 15 ms and p95 <= 50 ms; recall 100% for NFKC, >= 95% for 表記ゆれ.
Prints figures only; nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, event, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from store.search import SearchIndex  # noqa: E402

GEN = REPO / "bench" / "gen_search_corpus.py"

QUERIES = {
    "3+ chars": ["避難所", "浸水想定", "土砂災害", "設置場所", "ハザードマップ", "公共施設", "図書館",
                 "令和6年度", "洪水浸水想定区域", "観光入込客数", "子育て支援", "医療機関", "津波浸水",
                 "消防水利", "指定緊急避難場所", "加古川市", "夢前川", "気象観測", "aed", "シェープファイル"],
    "2 chars": ["避難", "浸水", "人口", "加古", "夢前", "公園", "統計", "医療", "津波", "洪水",
                "土砂", "防災", "観光", "病院", "姫路", "神戸", "子育", "財政", "地価", "水道"],
    "multi-word": ["避難所 姫路市", "AED 神戸市", "洪水 加古川", "公共施設 尼崎市", "ハザードマップ 津波",
                   "令和6年度 統計", "子ども 食堂", "浸水 揖保川", "図書館 西宮市", "避難 福祉",
                   "土砂災害 警戒区域 豊岡市", "観光 たつの市", "医療 明石市", "ごみ 収集", "人口 統計",
                   "公園 一覧", "病院 一覧 三田市", "津波 避難ビル", "気象 データ", "体育館 姫路市"],
    # Browsing by facets only (no words): counts over large sets, the home page's case.
    "facet counts": [("", {}), ("", {"organization": ["兵庫県"]}), ("", {"organization": ["姫路市"]}),
                     ("", {"res_format": ["CSV"]}), ("", {"res_format": ["PDF", ]}),
                     ("", {"tags": ["防災"]}), ("", {"tags": ["公共施設"]}),
                     ("", {"license_id": ["CC BY 4.0"]}), ("", {"license_id": ["CC0"]}),
                     ("", {"organization": ["神戸市"], "res_format": ["GEOJSON"]}),
                     ("", {"tags": ["統計"], "organization": ["尼崎市"]}),
                     ("", {"tags": ["避難所"]}), ("", {"res_format": ["XLSX"], "tags": ["統計"]}),
                     ("", {"organization": ["加古川市", "高砂市"]}), ("", {"tags": ["医療"]}),
                     ("", {"res_format": ["SHAPEFILE"]}), ("", {"organization": ["佐用町"]}),
                     ("", {"license_id": ["公共データ利用規約（第1.0版）"]}),
                     ("", {"tags": ["防災", "洪水"]}), ("", {"res_format": ["KML", "ZIP"]})],
}


def load_corpus(n: int) -> list[dict]:
    spec = importlib.util.spec_from_file_location("gen_search_corpus", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_corpus(n)


def to_doc(r: dict) -> dict:
    return {"id": str(r["id"]), "title": r["title"], "description": r["description"],
            "tags": r["tags"].split(), "organization": r["org"], "organization_title": r["org"],
            "formats": r["formats"].split(), "license_id": r["license"], "theme": None,
            "modified": r["updated"]}


def build(index: SearchIndex, corpus: list[dict]) -> float:
    t0 = time.perf_counter()
    with index.engine.begin() as conn:
        index.upsert_many(conn, [to_doc(r) for r in corpus])
    return time.perf_counter() - t0


def time_kind(index: SearchIndex, queries, runs: int) -> tuple[list[float], ...]:
    """(timed runs after a warm-up, their CPU time, first runs with no term cached, their CPU
    time). The CPU time (this thread's) is what a search costs on a box shared with others."""
    samples, cpu, cold, cold_cpu = [], [], [], []
    for q in queries:
        q, filters = q if isinstance(q, tuple) else (q, {})
        _forget_terms(index)
        t0, c0 = time.perf_counter(), time.thread_time()
        index.search(q, filters, per_page=20)  # also the warm-up
        cold.append((time.perf_counter() - t0) * 1000)
        cold_cpu.append((time.thread_time() - c0) * 1000)
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.thread_time()
            index.search(q, filters, per_page=20)
            samples.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.thread_time() - c0) * 1000)
    return samples, cpu, cold, cold_cpu


def _forget_terms(index: SearchIndex) -> None:
    """Empty the per-process term cache (a query nobody asked before); older trees have none."""
    clear = getattr(index.cache, "clear_terms", None)
    if clear is not None:
        clear()


def sqlite_engine(db: Path, **kw):
    """As store.db.Store opens the catalogue: WAL, so searches read while a harvest writes."""
    engine = create_engine(f"sqlite:///{db}", **kw)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
    return engine


def _row(kind: str, s: list[float], c: list[float], f: list[float], fc: list[float]) -> None:
    print(f"{kind:14} {statistics.median(s):7.1f} {pct(s, 95):7.1f} {max(s):7.1f} "
          f"{statistics.median(c):8.1f} {pct(c, 95):8.1f}   {statistics.median(f):9.1f} "
          f"{pct(f, 95):7.1f} {max(f):7.1f} {statistics.median(fc):8.1f} {pct(fc, 95):8.1f}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def recall_probes(index: SearchIndex, corpus: list[dict]) -> list[tuple]:
    """(query, kind, truth, found of truth, extra) — extra = hits outside the truth set."""
    def truth(pred):
        return {str(r["id"]) for r in corpus if pred(r)}

    import unicodedata
    text_of = {str(r["id"]): unicodedata.normalize("NFKC", r["title"] + r["description"] + r["tags"]
                                                   + r["org"]) for r in corpus}
    probes = [
        ("AED", "NFKC", truth(lambda r: r["aed"])),
        ("ＡＥＤ", "NFKC", truth(lambda r: r["aed"])),
        # r6 flags the year; only shelter and statistics titles print it.
        ("令和6年度", "NFKC", truth(lambda r: r["r6"] and "令和6年度" in text_of[str(r["id"])])),
        ("令和６年度", "NFKC", truth(lambda r: r["r6"] and "令和6年度" in text_of[str(r["id"])])),
        ("ハザードマップ", "variants", truth(lambda r: r["hazard"])),
        ("ハザード・マップ", "variants", truth(lambda r: r["hazard"])),
        ("ﾊｻﾞｰﾄﾞﾏｯﾌﾟ", "variants", truth(lambda r: r["hazard"])),
        ("子ども", "variants", truth(lambda r: r["kids"])),
        ("こども", "variants", truth(lambda r: r["kids"])),
        ("子供", "variants", truth(lambda r: r["kids"])),
        ("ひなんじょ", "variants", truth(lambda r: r["kana_hinan"] or "避難所" in text_of[str(r["id"])])),
        ("避難所", "variants", truth(lambda r: r["kana_hinan"] or "避難所" in text_of[str(r["id"])])),
        ("京都", "bait", truth(lambda r: "京都" in text_of[str(r["id"])].replace("東京都", ""))),
        ("加古", "substring", truth(lambda r: "加古" in text_of[str(r["id"])])),
        ("川", "substring", truth(lambda r: "川" in text_of[str(r["id"])])),
    ]
    out = []
    for q, kind, want in probes:
        got = _all_ids(index, q)
        out.append((q, kind, len(want), len(got & want), len(got - want)))
    return out


def _all_ids(index: SearchIndex, q: str) -> set[str]:
    res = index.search(q, per_page=1000)
    ids, page = set(res.ids), 1
    while len(ids) < res.total:
        page += 1
        ids |= set(index.search(q, per_page=1000, page=page).ids)
    return ids


def kyoto_check(index: SearchIndex) -> str:
    """A real 京都 dataset must outrank the 東京都 mentions (京都 ⊂ 東京都)."""
    with index.engine.begin() as conn:
        index.upsert(conn, {"id": "kyoto-bait-check", "title": "京都府との広域連携データ",
                            "description": "京都府と兵庫県の境界付近の施設一覧です。", "tags": [],
                            "organization": "兵庫県", "formats": ["CSV"], "license_id": "CC0",
                            "modified": "2000-01-01"})
    try:
        res = index.search("京都", per_page=5)
        return f"京都: {res.total} hits, first = {res.ids[0]!r} (expected 'kyoto-bait-check')"
    finally:
        with index.engine.begin() as conn:
            index.delete(conn, "kyoto-bait-check")


def _publisher(db: str, every: float, seconds: float, corpus_n: int) -> None:
    """Another process (a harvest): one dataset re-published, one new, every `every` s."""
    del corpus_n
    index = SearchIndex(sqlite_engine(Path(db), connect_args={"timeout": 60}))
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        time.sleep(every)
        i += 1
        with index.engine.begin() as conn:
            index.upsert_many(conn, [
                # A new version of an earlier published one (never a corpus record: the recall
                # figures of a later run on the same --db stay true), and a new dataset.
                {"id": f"published-{(i + 1) // 2}-v", "title": f"避難所一覧（第{i}版）",
                 "description": "姫路市内の避難所", "tags": ["防災", "避難所"],
                 "organization": "姫路市", "organization_title": "姫路市", "formats": ["CSV"],
                 "license_id": "CC BY 4.0", "theme": None, "modified": f"2030-01-01T00:00:{i % 60:02d}"},
                {"id": f"published-{i}", "title": f"公園一覧 {i}", "description": "新しい公園",
                 "tags": ["公園"], "organization": "神戸市", "organization_title": "神戸市",
                 "formats": ["GEOJSON"], "license_id": "CC0", "theme": None,
                 "modified": None}])


def during_publishing(index: SearchIndex, db: Path, every: float, seconds: float,
                      corpus_n: int) -> None:
    import multiprocessing
    flat = [q if isinstance(q, tuple) else (q, {}) for qs in QUERIES.values() for q in qs]
    # A worker that has answered these queries before (time_kind empties the term cache before
    # each query, to time its first run): what a publish costs a search is measured apart from
    # what a term nobody asked for costs (the "first" columns above).
    for q, filters in flat:
        index.search(q, filters, per_page=20)
    loads0, incr0 = index.cache.full_loads, index.cache.incremental_updates
    misses0 = index.cache.term_misses
    proc = multiprocessing.get_context("spawn").Process(
        target=_publisher, args=(str(db), every, seconds, corpus_n))
    proc.start()
    samples, cpu, after_publish, after_wall, i = [], [], [], [], 0
    slowest = []   # (ms, query, filters, took a publish in, terms matched anew)
    seen = index.cache.incremental_updates + index.cache.full_loads
    while proc.is_alive():
        q, filters = flat[i % len(flat)]
        i += 1
        misses = index.cache.term_misses
        t0, c0 = time.perf_counter(), time.thread_time()
        index.search(q, filters, per_page=20)
        ms = (time.perf_counter() - t0) * 1000
        samples.append(ms)
        cpu.append((time.thread_time() - c0) * 1000)
        now = index.cache.incremental_updates + index.cache.full_loads
        slowest = sorted(slowest + [(ms, q, filters, now != seen,
                                     index.cache.term_misses - misses)], reverse=True)[:3]
        if now != seen:  # this search took a publish in
            after_publish.append(cpu[-1])
            after_wall.append(ms)
            seen = now
    proc.join()
    print(f"\nduring continuous publishing (2 datasets every {every} s, {seconds:.0f} s, "
          f"{len(samples):,} searches):")
    print(f"  p50 {statistics.median(samples):.1f} ms, p95 {pct(samples, 95):.1f} ms, "
          f"slowest {max(samples):.1f} ms (CPU: p50 {statistics.median(cpu):.1f}, "
          f"p95 {pct(cpu, 95):.1f}, max {max(cpu):.1f} ms)")
    if after_publish:
        print(f"  first search after each publish: median {statistics.median(after_wall):.1f} ms, "
              f"slowest {max(after_wall):.1f} ms (CPU: median {statistics.median(after_publish):.1f}, "
              f"max {max(after_publish):.1f} ms; {len(after_publish)} publishes seen)")
    print(f"  publishes applied incrementally: {index.cache.incremental_updates - incr0}, "
          f"full reloads: {index.cache.full_loads - loads0}; terms matched anew: "
          f"{index.cache.term_misses - misses0}")
    for ms, q, filters, published, missed in slowest:
        print(f"  slow: {ms:.1f} ms {q!r} {filters or ''} "
              f"{'took a publish in; ' if published else ''}{missed} term(s) matched anew")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--db", type=Path, help="reuse/keep the index here (default: a temp dir)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--publish-every", type=float, default=2.0)
    ap.add_argument("--publish-seconds", type=float, default=30.0)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "bench.db"
    engine = sqlite_engine(db)
    index = SearchIndex(engine)
    t0 = time.perf_counter()
    corpus = load_corpus(args.n)
    print(f"corpus: {len(corpus):,} records generated in {time.perf_counter() - t0:.1f} s")
    with engine.connect() as conn:
        have = conn.execute(text("SELECT COUNT(*) FROM search_doc")).scalar()
    if have < len(corpus):  # (more: datasets published by an earlier run's publishing phase)
        print(f"index built in {build(index, corpus):.1f} s ({db.stat().st_size / 1e6:.0f} MB)")
    else:
        print(f"index reused: {db}")
    t0 = time.perf_counter()
    index.search("", per_page=1)
    print(f"first search of this worker (loads the arrays): {(time.perf_counter() - t0):.1f} s")
    print("\nms per search (total + page of 20 + 5 facets); cpu = this thread's CPU time; "
          "first = the first run of each query, no term cached")
    print(f"{'kind':14} {'p50':>7} {'p95':>7} {'max':>7} {'cpu p50':>8} {'cpu p95':>8}   "
          f"{'first p50':>9} {'p95':>7} {'max':>7} {'cpu p50':>8} {'cpu p95':>8}")
    every: list[list[float]] = [[], [], [], []]
    for kind, queries in QUERIES.items():
        figures = time_kind(index, queries, args.runs)
        for acc, new in zip(every, figures):
            acc += new
        _row(kind, *figures)
    _row("all", *every)
    print(f"\n{'query':12} {'kind':10} {'truth':>7} {'found':>7} {'recall':>8} {'extra':>7}")
    for q, kind, want, found, extra in recall_probes(index, corpus):
        print(f"{q:12} {kind:10} {want:7} {found:7} {found / max(want, 1):8.1%} {extra:7}")
    print("\n" + kyoto_check(index))
    with engine.connect() as conn:
        t0 = time.perf_counter()
        index.cache._load(conn)
    print(f"full array load (first search of a worker; before issue 17, after every publish): "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    if args.publish_seconds > 0:
        during_publishing(index, db, args.publish_every, args.publish_seconds, len(corpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
