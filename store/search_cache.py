"""The search arrays of one process (store/search_arrays.py), kept current, and its term matches.

When the generation (bumped by every index write) moves, the documents the writes touched are
applied to a new snapshot, inside the caller's read transaction, so the arrays describe the
same snapshot as the FTS answers. Each term's matches are kept as positions (SearchCache.match)
and, after a publish, matched again against the new documents only, so a repeated term never
re-runs its full MATCH (issue 17).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import text

# Re-exported: store.search and the CKAN API import these from here.
from store.search_arrays import (ACCESS_FIELD, FACETS, SINGLE_VALUED, SORTS,  # noqa: F401
                                 Arrays, SearchResult, compact_positions)


@dataclass
class _Match:
    """A term's matches in one lineage of snapshots, complete for positions < n."""
    lineage: object
    n: int
    any_pos: np.ndarray
    title_pos: np.ndarray


class SearchCache:
    """The arrays of one process, kept up to date from the index's change log.

    Every index write bumps the generation and logs the doc ids it touched under it
    (store.search). A search that sees a newer generation applies just those documents to a new
    snapshot (Arrays.apply): a publish costs the next search about a millisecond, not a reload
    of every document (2.25 s at 100k datasets). A full load happens on the first search, when
    the log no longer reaches back to this snapshot, or when more changed than a reload costs.
    ``full_loads`` and ``incremental_updates`` count both paths; while one thread applies, the
    others answer from the snapshot before it instead of waiting. When a snapshot's deltas pass
    half their limit (Arrays.delta_limit), a background thread folds them into new base arrays
    (``compactions``), so the catalogue-sized rebuild rarely falls on a search.

    Term matches are cached per lineage (``match``): ``term_hits``, ``term_extended`` (matched
    again against the documents published since) and ``term_misses`` count the three paths.
    """

    MAX_INCREMENTAL = 20_000  # touched docs above which (and above a quarter of all) we reload
    MAX_TERMS = 512
    MAX_TERM_POSITIONS = 8_000_000  # ~32 MB of cached positions per process, at least
    # The budget grows with the catalogue: at 1M datasets one cycle of common searches held
    # 8.3M positions, and an LRU smaller than what users cycle through misses every time
    # (a full FTS5 MATCH: 200 ms instead of 7). int32 positions: 64 bytes a document.
    TERM_POSITIONS_PER_DOC = 16
    EXTEND_LIMIT = 5_000  # new documents above which a cached term is matched again in full

    def __init__(self, index):
        self.index = index
        self._lock = threading.Lock()
        self._applying = False   # a thread holds _lock to apply changes (not to swap)
        self._state: tuple[Arrays | None, int] = (None, -1)
        self._terms: OrderedDict[tuple, _Match] = OrderedDict()
        self._term_positions = 0
        self.full_loads = 0
        self.incremental_updates = 0
        self.compactions = 0
        self._compactor: threading.Thread | None = None
        self.term_hits = self.term_extended = self.term_misses = 0

    @property
    def _arrays(self) -> Arrays | None:
        return self._state[0]

    def current(self, conn) -> Arrays:
        return self.snapshot(conn)[0]

    def snapshot(self, conn) -> tuple[Arrays, bool]:
        """(arrays, exact): exact when they are those of the generation ``conn`` reads, so
        what ``conn`` matches may be cached against them."""
        meta = dict(conn.execute(text("SELECT key, value FROM search_meta "
                                      "WHERE key IN ('generation', 'change_floor')")).all())
        gen, floor = int(meta.get("generation") or 0), int(meta.get("change_floor") or 0)
        arrays, have = self._state
        # A reader whose transaction began before the last write may see an older generation:
        # the newer arrays serve it (documents it cannot see in FTS simply do not match).
        if arrays is not None and have >= gen:
            return arrays, have == gen
        # Another thread is applying a change set: answer from the snapshot before it. The
        # compactor's swap also holds the lock, for an instant: that one is waited for, or a
        # search right after a publish would answer from before it with nobody applying.
        if not self._lock.acquire(blocking=arrays is None or not self._applying):
            return arrays, False
        self._applying = True
        try:
            arrays, have = self._state
            if arrays is not None and have >= gen:
                return arrays, have == gen
            updated = None
            if arrays is not None and have >= floor:
                updated = self._apply_changes(conn, arrays, have, gen)
            if updated is None:
                updated = self._load(conn)
                self.full_loads += 1
                self.clear_terms()
            else:
                self.incremental_updates += 1
            self._state = (updated, gen)
            if updated.delta_size() * 2 > Arrays.delta_limit(updated.n):
                self._compact_later(updated)
            return updated, True
        finally:
            self._applying = False
            self._lock.release()

    def _compact_later(self, arrays: Arrays) -> None:
        """Fold ``arrays``' deltas into new bases in a thread; swap the result in only if it is
        still the current snapshot (a publish applied meanwhile keeps its own deltas)."""
        if self._compactor is not None and self._compactor.is_alive():
            return

        def run():
            compacted = arrays.compacted()
            with self._lock:
                if self._state[0] is arrays:
                    self._state = (compacted, self._state[1])
                    self.compactions += 1

        self._compactor = threading.Thread(target=run, name="search-compaction", daemon=True)
        self._compactor.start()

    def wait_compacted(self, timeout: float = 30) -> None:
        """Until the background compaction (if any) is done: for tests and benchmarks."""
        if self._compactor is not None:
            self._compactor.join(timeout)

    def clear_terms(self) -> None:
        self._terms = OrderedDict()
        self._term_positions = 0

    def match(self, conn, arrays: Arrays, exact: bool, group: list[str],
              matcher) -> tuple[np.ndarray, np.ndarray]:
        """(positions matching any variant of ``group``, positions with one in the title),
        from the cache when it can say. ``matcher(conn, group, only=None)`` answers with doc
        ids; given ``only``, it must find those among them and may add others (ignored)."""
        key = tuple(group)
        entry = self._terms.get(key)
        if entry is not None and entry.lineage is arrays.lineage:
            if entry.n >= arrays.n:
                self.term_hits += 1
                return (entry.any_pos[:np.searchsorted(entry.any_pos, arrays.n)],
                        entry.title_pos[:np.searchsorted(entry.title_pos, arrays.n)])
            new_docs = arrays.doc_of[entry.n:arrays.n][arrays.alive_at(slice(entry.n, arrays.n))]
            if exact and len(new_docs) <= self.EXTEND_LIMIT:
                any_ids, title_ids = (matcher(conn, group, only=new_docs.tolist())
                                      if len(new_docs) else ("", ""))
                extra_any, extra_title = arrays.positions(any_ids), arrays.positions(title_ids)
                entry = _Match(arrays.lineage, arrays.n,
                               compact_positions(np.concatenate([entry.any_pos,
                                                      extra_any[extra_any >= entry.n]])),
                               compact_positions(np.concatenate([entry.title_pos,
                                                      extra_title[extra_title >= entry.n]])))
                self.term_extended += 1
                self._store(key, entry)
                return entry.any_pos, entry.title_pos
        self.term_misses += 1
        any_ids, title_ids = matcher(conn, group)
        any_pos = compact_positions(arrays.positions(any_ids))
        title_pos = compact_positions(arrays.positions(title_ids))
        if exact:
            self._store(key, _Match(arrays.lineage, arrays.n, any_pos, title_pos))
        return any_pos, title_pos

    def term_budget(self, n: int) -> int:
        return max(self.MAX_TERM_POSITIONS, self.TERM_POSITIONS_PER_DOC * n)

    def _store(self, key: tuple, entry: _Match) -> None:
        terms = self._terms
        size = len(entry.any_pos) + len(entry.title_pos)
        budget = self.term_budget(entry.n)
        if size > budget // 4:
            return
        old = terms.pop(key, None)
        if old is not None:
            self._term_positions -= len(old.any_pos) + len(old.title_pos)
        terms[key] = entry
        self._term_positions += size
        while terms and (len(terms) > self.MAX_TERMS
                         or self._term_positions > budget):
            _, gone = terms.popitem(last=False)
            self._term_positions -= len(gone.any_pos) + len(gone.title_pos)

    def _apply_changes(self, conn, arrays: Arrays, since: int, gen: int) -> Arrays | None:
        touched = [r[0] for r in conn.execute(
            text("SELECT DISTINCT doc_id FROM search_change WHERE gen > :a AND gen <= :b"),
            {"a": since, "b": gen})]
        if len(touched) > max(self.MAX_INCREMENTAL, arrays.live // 4):
            return None
        docs, facets = [], []
        for i in range(0, len(touched), 500):
            chunk = ",".join(str(int(d)) for d in touched[i:i + 500])
            docs += conn.execute(text("SELECT doc_id, dataset_id, title_n, modified FROM search_doc "
                                      f"WHERE doc_id IN ({chunk}) ORDER BY doc_id")).all()
            facets += conn.execute(text(
                "SELECT d.doc_id, f.field, f.value FROM search_facet f "
                f"JOIN search_doc d ON d.dataset_id = f.dataset_id WHERE d.doc_id IN ({chunk})")).all()
        return arrays.apply(touched, docs, facets)

    @staticmethod
    def _load(conn) -> Arrays:
        docs = conn.execute(text("SELECT doc_id, dataset_id, title_n, modified FROM search_doc "
                                 "ORDER BY doc_id")).all()
        # Grouped by value: a few hundred rows, not one per (document, value) (7M at 1M).
        ids = ("group_concat(d.doc_id)" if conn.dialect.name == "sqlite"
               else "string_agg(CAST(d.doc_id AS TEXT), ',')")
        groups = conn.execute(text(f"SELECT f.field, f.value, {ids} FROM search_facet f "
                                   "JOIN search_doc d ON d.dataset_id = f.dataset_id "
                                   "GROUP BY f.field, f.value")).all()
        return Arrays(docs, facet_groups=groups)
