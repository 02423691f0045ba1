"""One snapshot of the search index as numpy arrays: facet counts, filters, sorting, ranking.

FTS5 answers "which documents contain these words" quickly, but counting five facets over
30,000 matches in SQL (GROUP BY over the facet rows) took 200–400 ms at 100k datasets. The
same counts over numpy arrays take a few milliseconds, and (issue 17) what a search costs is
kept proportional to what it matches, not to the catalogue:
- a filter value's documents are a posting list, intersected smallest first;
- facet counts gather only the matched documents' rows (one small matrix of value ids per
  document), or AND a large match set with one bitmap per common value (store.facet_bits),
  or subtract the unmatched ones from the counts of everything the caller may see, which are
  kept per access-label set and carried through publishes by difference;
- a page is selected (argpartition), not the whole match list sorted.
store/search_cache.py keeps a process's snapshot current and its term matches.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from store.facet_bits import FacetBits
from store.snapshot_buffers import buffer, grown, spare

SORTS = ("relevance", "modified", "title")
# Facet names are the CKAN / URL parameter names, so views pass request args straight through.
FACETS = ("organization", "tags", "res_format", "license_id", "theme")
# Single-valued fields: several values mean "any of them"; multi-valued: "all of them" (CKAN).
SINGLE_VALUED = {"organization", "license_id", "theme"}
# The access label of each document (store.access): a facet row that is kept as a per-position
# label (filtering by the caller's labels is one np.isin), never counted as a facet.
ACCESS_FIELD = "_access"
TITLE_WEIGHT = 9.0  # a term in the title counts ten times one in the tags or the description
DEMOTED = 1e6
# Facet values per document held in its row; a document with more keeps the rest aside.
ROW_WIDTH_MAX = 16
# Distinct scores walked through for a page's cut before partitioning (_kth_smallest).
KTH_LEVELS = 8
VISIBLE_SETS = 16  # access-label sets whose visible documents and counts a snapshot keeps
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class SearchResult:
    ids: list[str]
    total: int
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def _ids(value) -> np.ndarray:
    """Doc ids from a group_concat string or a list of ints."""
    if isinstance(value, str):
        # fromstring's text mode parses 30,000 ids in ~1 ms (str.split + array: ~4 ms).
        return (np.fromstring(value, dtype=np.int64, sep=",") if value
                else np.zeros(0, dtype=np.int64))
    return np.asarray(value, dtype=np.int64)


def _modified_cmp(a: tuple, b: tuple) -> int:
    """modified_order's comparison of two doc rows: dated first, newest first, then by id."""
    (ma, ia), (mb, ib) = (a[3], a[1]), (b[3], b[1])
    if bool(ma) != bool(mb):
        return -1 if ma else 1
    if ma and ma != mb:
        return -1 if ma > mb else 1
    return (ia > ib) - (ia < ib)


def _insertion_point(order, comes_before) -> int:
    """First index of ``order`` whose element does not come before the new key."""
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if comes_before(int(order[mid])):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _last_of_each(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys, each with the value given last for it."""
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    return keys[last], vals[last]


class _PosMap:
    """doc id -> position (-1: none), as an immutable base array and a small sorted overlay of
    the doc ids changed since: a publish copies the overlay, never the base (8 MB at 1M)."""

    def __init__(self, base: np.ndarray, keys=_EMPTY, vals=_EMPTY):
        self.base, self.keys, self.vals = base, keys, vals

    def __getitem__(self, doc_ids: np.ndarray) -> np.ndarray:
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        inside = (doc_ids >= 0) & (doc_ids < len(self.base))
        pos = np.full(len(doc_ids), -1, dtype=np.int64)
        pos[inside] = self.base[doc_ids[inside]]
        if len(self.keys) and len(doc_ids):
            j = np.minimum(np.searchsorted(self.keys, doc_ids), len(self.keys) - 1)
            hit = self.keys[j] == doc_ids
            pos[hit] = self.vals[j[hit]]
        return pos

    def updated(self, doc_ids: np.ndarray, positions: np.ndarray, limit: int) -> "_PosMap":
        keys, vals = _last_of_each(np.concatenate([self.keys, doc_ids]),
                                   np.concatenate([self.vals, positions]))
        if len(keys) <= limit:
            return _PosMap(self.base, keys, vals)
        # The overlay has grown as large as a publish may cost: fold it into a new base.
        base = np.full(max(len(self.base), int(keys[-1]) + 1), -1, dtype=np.int64)
        base[:len(self.base)] = self.base
        base[keys] = vals
        return _PosMap(base)


class _Order:
    """A total order of positions (newest first, or by title), as an immutable base (the order
    of positions < nb, and each one's rank in it) and a small sorted delta of the positions
    appended since: ``at[i]``, the base rank the i-th delta position goes before, and ``pos[i]``.
    A publish inserts into the delta only; the base is rebuilt when the delta grows past a
    limit. Ranks and slices of the merged order are computed for what a search asks."""

    def __init__(self, base: np.ndarray, base_rank=None, at=_EMPTY, pos=_EMPTY):
        self.base, self.nb = base, len(base)
        if base_rank is None:
            base_rank = np.empty(len(base), dtype=np.int64)
            base_rank[base] = np.arange(len(base))
        self.base_rank, self.at, self.pos = base_rank, at, pos
        self.merged_at = at + np.arange(len(at))  # each delta position's index in the order
        self.delta_index = np.empty(len(pos), dtype=np.int64)
        self.delta_index[pos - self.nb] = np.arange(len(pos))

    def __len__(self) -> int:
        return self.nb + len(self.pos)

    def rank(self, idx: np.ndarray) -> np.ndarray:
        """The index in the order of each of positions ``idx``."""
        if not len(self.pos):
            return self.base_rank[idx]
        out = np.empty(len(idx), dtype=np.int64)
        b = idx < self.nb
        r = self.base_rank[idx[b]]
        out[b] = r + np.searchsorted(self.at, r, side="right")
        out[~b] = self.merged_at[self.delta_index[idx[~b] - self.nb]]
        return out

    def slice(self, i: int, j: int) -> np.ndarray:
        """order[i:j]."""
        if not len(self.pos):
            return self.base[i:j]
        j = min(j, len(self))
        if i >= j:
            return _EMPTY
        lo, hi = np.searchsorted(self.merged_at, [i, j])
        out = np.empty(j - i, dtype=np.int64)
        slots = np.zeros(j - i, dtype=bool)
        slots[self.merged_at[lo:hi] - i] = True
        out[slots] = self.pos[lo:hi]
        out[~slots] = self.base[i - lo:j - hi]
        return out

    def _place(self, comes_before) -> tuple[int, int]:
        """(base rank, delta index) where a new key goes: before the first element that does
        not come before it."""
        a = _insertion_point(self.base, comes_before)
        lo, hi = np.searchsorted(self.at, [a, a + 1])  # delta items sitting before base a
        return a, int(lo) + _insertion_point(self.pos[lo:hi], comes_before)

    def inserted(self, places: list[tuple[int, int]], added: np.ndarray, limit: int) -> "_Order":
        """With ``added`` (already in their order among themselves) at their ``places``."""
        at = np.insert(self.at, [i for _, i in places], [a for a, _ in places])
        pos = np.insert(self.pos, [i for _, i in places], added)
        new = _Order(self.base, self.base_rank, at, pos)
        if len(pos) <= limit:
            return new
        return _Order(new.slice(0, len(new)))  # the delta is as large as a publish may cost


def _member(sorted_set: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Which of positions ``x`` are in ``sorted_set`` (both < n)."""
    if not len(sorted_set) or not len(x):
        return np.zeros(len(x), dtype=bool)
    if len(x) * 16 < len(sorted_set):  # few probes into a long list: binary search
        j = np.searchsorted(sorted_set, x)
        return sorted_set[np.minimum(j, len(sorted_set) - 1)] == x
    mask = np.zeros(n, dtype=bool)
    mask[sorted_set] = True
    return mask[x]


_NEVER = np.iinfo(np.int32).max  # the death version of a position still alive


@dataclass
class _Visible:
    """What one access-label set may see in one snapshot: which positions it may read (an
    append-only buffer shared along the lineage: a position's label never changes), how many
    alive ones, and their facet counts."""
    readable: np.ndarray
    count: int
    counts: np.ndarray
    # Readable and alive, per position: built by the first search of a snapshot that needs it
    # (a catalogue-sized pass, ~1 ms at 1M), never by the publish's apply.
    mask: np.ndarray | None = None


class Arrays:
    """One snapshot of the index as arrays indexed by position (0..n-1).

    A publish does not rebuild it, nor copy any array the size of the catalogue (issue 17: at
    1M datasets that was ~100 MB and 224 ms per publish): ``apply`` returns a new snapshot
    with the changed documents' old positions dead and their new versions appended.
    - Per-position arrays are append-only buffers shared along the lineage
      (store.snapshot_buffers): a snapshot never reads past its own ``n``. A position dies
      once: ``died[p]`` is the version of the snapshot that killed it, so p is alive in
      snapshot v while ``died[p] > v``.
    - The sort orders (_Order) and the doc id map (_PosMap) are an immutable base plus a small
      delta that each apply copies; the base is rebuilt when the delta reaches DELTA_LIMIT.
    - Posting lists are views of append-only buffers, one per value.
    Lists are shared the same way. Positions keep their meaning across applies (``lineage``),
    so cached term matches stay valid.

    Facets: ``rows[p]`` holds up to ``width`` value ids + 1 of position p (0 = none), the rest
    in ``over_pos``/``over_val``; ``postings[vid]`` the sorted positions holding a value.
    """

    @staticmethod
    def delta_limit(n: int) -> int:
        """Delta entries above which a sort order or the doc id map is rebuilt: a delta costs
        each apply a copy of its size, a rebuild the catalogue's size once."""
        return max(4096, 16 * int(math.isqrt(max(n, 1))))

    def __init__(self, docs: list[tuple], facet_rows: list[tuple] = (),
                 facet_groups: list[tuple] = ()):
        """``docs``: (doc_id, dataset_id, title, modified) rows; facets as (doc_id, field,
        value) rows and/or (field, value, doc ids) groups (a group_concat string or ints): at
        1M datasets, a few hundred groups load in a fraction of the time of 7M rows."""
        self.lineage = object()
        self.version = 0
        self.n = self.live = n = len(docs)
        self.died = buffer(np.full(n, _NEVER, dtype=np.int32), np.int32, _NEVER)
        doc_of = np.array([d[0] for d in docs], dtype=np.int64)
        self.doc_of = buffer(doc_of, np.int64)
        pos_of = np.full(int(doc_of.max()) + 1 if n else 1, -1, dtype=np.int64)
        pos_of[doc_of] = np.arange(n)
        self.pos_of = _PosMap(pos_of)
        self.dataset_ids = [d[1] for d in docs]
        self.titles = titles = [d[2] for d in docs]
        self.modified = [d[3] for d in docs]
        self.title_len = buffer(np.array([len(t) for t in titles], dtype=np.int64), np.int64)
        # Newest first, undated last; ties by id so pages never overlap.
        ids = self.dataset_ids
        dated = sorted((i for i in range(n) if docs[i][3]), key=ids.__getitem__)
        dated.sort(key=lambda i: docs[i][3], reverse=True)
        undated = sorted((i for i in range(n) if not docs[i][3]), key=ids.__getitem__)
        self.mod = _Order(np.array(dated + undated, dtype=np.int64))
        self.title = _Order(np.array(sorted(range(n), key=lambda i: (titles[i], ids[i])),
                                     dtype=np.int64))
        self.values: list[tuple[str, str]] = []
        self.value_id: dict[tuple[str, str], int] = {}
        # Access label per position, an index into access_names (shared, append-only like
        # values); a document without one (indexed before labels existed) is public.
        self.access_names: list[str] = ["public"]
        self.access_id: dict[str, int] = {"public": 0}
        self.access = buffer(np.zeros(n, dtype=np.int64), np.int64)
        pos, val = self._pairs(facet_rows)
        gpos, gval = self._group_pairs(facet_groups)
        pos, val = np.concatenate([pos, gpos]), np.concatenate([val, gval])
        self.nvalues = len(self.values)
        per_doc = np.bincount(pos, minlength=n)
        width = int(min(max(int(per_doc.max(initial=0)), 1), ROW_WIDTH_MAX))
        self.rows = np.zeros((spare(n), width), dtype=np.int32)
        self.over_pos, self.over_val = _EMPTY, _EMPTY
        self.postings: list[np.ndarray] = []
        self.posting_buf: list[np.ndarray | None] = []
        self._add_facets(0, pos, val)
        self.facet_bits = FacetBits(self.postings, n, len(self.rows))
        self._visible: dict = {}

    def delta_size(self) -> int:
        """The largest delta over the base arrays (compare with delta_limit)."""
        return max(len(self.mod.pos), len(self.title.pos), len(self.pos_of.keys))

    def compacted(self) -> "Arrays":
        """The same snapshot (same lineage and answers) with its deltas folded into new bases:
        a catalogue-sized copy, so it runs off the search path (SearchCache) and is swapped in
        only if no publish came first."""
        new = object.__new__(Arrays)
        new.__dict__.update(self.__dict__)
        new.mod, new.title = _Order(self.mod.slice(0, self.n)), _Order(self.title.slice(0, self.n))
        if len(self.pos_of.keys):
            new.pos_of = self.pos_of.updated(_EMPTY, _EMPTY, -1)
        # Values that became common since the last split get their bitmaps.
        new.facet_bits = FacetBits(self.postings, self.n, len(self.rows))
        new._visible = dict(self._visible)
        return new

    def _pairs(self, facet_rows) -> tuple[np.ndarray, np.ndarray]:
        """(positions, value ids) of facet rows; unseen values get new ids (append-only)."""
        pair_pos, pair_val = [], []
        at = self.pos_of[np.fromiter((r[0] for r in facet_rows), dtype=np.int64,
                                     count=len(facet_rows))].tolist()
        for (_, f, v), p in zip(facet_rows, at):
            if p < 0:
                continue
            if f == ACCESS_FIELD:
                self.access[p] = self._access(v)
                continue
            pair_pos.append(p)
            pair_val.append(self._value(f, v))
        return np.array(pair_pos, dtype=np.int64), np.array(pair_val, dtype=np.int64)

    def _value(self, f: str, v: str) -> int:
        vid = self.value_id.get((f, v))
        if vid is None:
            vid = self.value_id[(f, v)] = len(self.values)
            self.values.append((f, v))
        return vid

    def _access(self, label: str) -> int:
        aid = self.access_id.get(label)
        if aid is None:
            aid = self.access_id[label] = len(self.access_names)
            self.access_names.append(label)
        return aid

    def _group_pairs(self, groups) -> tuple[np.ndarray, np.ndarray]:
        """As _pairs, from (field, value, doc ids) groups."""
        pos_parts, val_parts = [_EMPTY], [_EMPTY]
        for f, v, ids in groups:
            p = self.pos_of[_ids(ids)]
            p = p[p >= 0]
            if f == ACCESS_FIELD:
                self.access[p] = self._access(v)
                continue
            pos_parts.append(p)
            val_parts.append(np.full(len(p), self._value(f, v), dtype=np.int64))
        return np.concatenate(pos_parts), np.concatenate(val_parts)

    def _add_facets(self, first: int, pos: np.ndarray, val: np.ndarray) -> None:
        """Enter the facet pairs of positions >= first (fresh rows) into rows and postings."""
        order = np.lexsort((val, pos))
        pos, val = pos[order], val[order]
        width = self.rows.shape[1]
        counts = np.bincount(pos - first, minlength=self.n - first)
        starts = np.cumsum(counts) - counts
        slot = np.arange(len(pos)) - starts[pos - first]
        fits = slot < width
        self.rows[pos[fits], slot[fits]] = (val[fits] + 1).astype(np.int32)
        if not fits.all():
            self.over_pos = np.concatenate([self.over_pos, pos[~fits]])
            self.over_val = np.concatenate([self.over_val, val[~fits]])
        postings = self.postings = list(self.postings)
        postings += [_EMPTY.astype(np.int32)] * (self.nvalues - len(postings))
        bufs = self.posting_buf  # shared: only items past a snapshot's own views are written
        bufs += [None] * (self.nvalues - len(bufs))
        by_val = np.argsort(val, kind="stable")  # positions stay ascending within a value
        vals, pos_by_val = val[by_val], pos[by_val].astype(np.int32)
        cut = np.flatnonzero(np.diff(vals)) + 1
        for group in np.split(np.arange(len(vals)), cut) if len(vals) else []:
            vid = int(vals[group[0]])
            have, add = len(postings[vid]), len(group)
            buf = bufs[vid]
            if buf is None or have + add > len(buf):
                buf = bufs[vid] = np.empty(spare(have + add), dtype=np.int32)
                buf[:have] = postings[vid]
            buf[have:have + add] = pos_by_val[group]
            postings[vid] = buf[:have + add]

    def _modified_before(self, p: int, modified: str | None, dataset_id: str) -> bool:
        """Whether position p sorts before (modified, dataset_id) in the date order."""
        m = self.modified[p]
        if bool(m) != bool(modified):
            return bool(m)  # dated before undated
        if m and m != modified:
            return m > modified  # newest first
        return self.dataset_ids[p] < dataset_id

    def alive_at(self, idx) -> np.ndarray:
        """Which of positions ``idx`` (< n; an array or a slice) are alive in this snapshot."""
        return self.died[idx] > self.version

    def apply(self, touched: list[int], docs: list[tuple], facet_rows: list[tuple]) -> "Arrays":
        """A new snapshot: every touched doc id's old position dead, ``docs`` (rows as for
        the constructor, doc ids among ``touched``) appended with their facet rows. Costs the
        size of the change (and of the deltas), never a copy of the catalogue's arrays."""
        new = object.__new__(Arrays)
        new.__dict__.update(self.__dict__)
        for shared in (self.dataset_ids, self.titles, self.modified):
            del shared[self.n:]  # left by an apply that failed half-way: nobody reads them
        touched_arr = np.asarray(touched, dtype=np.int64)
        old = self.pos_of[touched_arr]
        old = np.unique(old[old >= 0])
        old = old[self.alive_at(old)]
        k = len(docs)
        n = new.n = self.n + k
        new.version = self.version + 1
        new.died = grown(self.died, self.n, k)
        new.died[self.n:n] = _NEVER
        new.died[old] = new.version  # older snapshots (version < this) still see them alive
        new.live = self.live - len(old) + k
        added = np.arange(self.n, n, dtype=np.int64)
        limit = self.delta_limit(n)
        new.pos_of = self.pos_of.updated(
            np.concatenate([touched_arr, np.array([d[0] for d in docs], dtype=np.int64)]),
            np.concatenate([np.full(len(touched_arr), -1, dtype=np.int64), added]), limit)
        new.doc_of = grown(self.doc_of, self.n, k)
        new.doc_of[self.n:n] = [d[0] for d in docs]
        # Shared lists, appended to: positions < self.n are unchanged for older snapshots.
        new.dataset_ids.extend(d[1] for d in docs)
        new.titles.extend(d[2] for d in docs)
        new.modified.extend(d[3] for d in docs)
        new.title_len = grown(self.title_len, self.n, k)
        new.title_len[self.n:n] = [len(d[2]) for d in docs]
        mod_at = [self.mod._place(lambda p, d=d: new._modified_before(p, d[3], d[1]))
                  for d in docs]
        title_at = [self.title._place(
            lambda p, d=d: (new.titles[p], new.dataset_ids[p]) < (d[2], d[1])) for d in docs]
        # Several new docs at one place go in their own sort order.
        by_mod = sorted(range(k), key=functools.cmp_to_key(
            lambda i, j: (mod_at[i][1] - mod_at[j][1]) or (mod_at[i][0] - mod_at[j][0])
            or _modified_cmp(docs[i], docs[j])))
        by_title = sorted(range(k), key=lambda i: (title_at[i][1], title_at[i][0],
                                                   docs[i][2], docs[i][1]))
        new.mod = self.mod.inserted([mod_at[i] for i in by_mod], added[by_mod], limit)
        new.title = self.title.inserted([title_at[i] for i in by_title], added[by_title], limit)
        # value ids and access names are append-only and shared, like the lists.
        new.access = grown(self.access, self.n, k)
        new.access[self.n:n] = 0
        pos, val = new._pairs(facet_rows)
        new.nvalues = len(new.values)
        new.rows = grown(self.rows, self.n, k)
        new.rows[self.n:n] = 0
        new._add_facets(self.n, pos, val)
        new.facet_bits = self.facet_bits.added(pos, val, self.n, n)
        # What each cached label set sees, by difference: minus the dead, plus the new.
        new._visible = {}
        for key, vis in list(self._visible.items()):
            readable = grown(vis.readable, self.n, k)
            readable[self.n:n] = new._readable_mask(key, added)
            added_vis = added[readable[self.n:n]]
            gone = old[readable[old]]
            counts = np.zeros(new.nvalues, dtype=np.int64)
            counts[:len(vis.counts)] = vis.counts
            counts += new._count(added_vis) - new._count(gone)
            new._visible[key] = _Visible(readable, vis.count - len(gone) + len(added_vis), counts)
        return new

    def positions(self, ids) -> np.ndarray:
        """Sorted positions of doc ids (from a group_concat string or ints); unknown ids dropped."""
        pos = self.pos_of[_ids(ids)]
        pos = pos[(pos >= 0) & (pos < self.n)]
        if len(pos) > 1 and not (pos[1:] > pos[:-1]).all():
            pos = np.unique(pos)
        return pos

    def _readable_mask(self, readable, at: np.ndarray) -> np.ndarray:
        """Which positions ``at`` a caller with these labels may see (alive or not)."""
        if readable is None:
            return np.ones(len(at), dtype=bool)
        ids = [i for i, name in enumerate(self.access_names) if name in readable]
        return np.isin(self.access[at], ids)

    def _count(self, idx: np.ndarray) -> np.ndarray:
        """Facet value counts over positions idx (sorted, < n)."""
        v = self.nvalues
        if self.facet_bits.cheaper(len(idx), self.rows.shape[1], self.n):
            return self.facet_bits.count(idx, self.n, v)
        counts = np.bincount(self.rows[idx].ravel(), minlength=v + 1)[1:v + 1].astype(np.int64)
        if len(self.over_pos) and len(idx):
            hit = _member(idx, self.over_pos, max(self.n, 1))
            counts += np.bincount(self.over_val[hit], minlength=v)[:v]
        return counts

    def visible(self, readable) -> _Visible:
        """The alive documents a caller with these access labels may see (None: all)."""
        key = None if readable is None else frozenset(readable)
        vis = self._visible.get(key)
        if vis is None:
            readable = self._readable_mask(key, np.arange(self.n))
            mask = readable & self.alive_at(slice(0, self.n))
            idx = np.flatnonzero(mask)
            vis = _Visible(buffer(readable, bool), len(idx), self._count(idx), mask)
            if len(self._visible) >= VISIBLE_SETS:
                self._visible.pop(next(iter(self._visible), None), None)
            self._visible[key] = vis
        return vis

    def _mask(self, vis: _Visible) -> np.ndarray:
        """Per position: may the caller of ``vis`` see it in this snapshot."""
        if vis.mask is None:
            vis.mask = vis.readable[:self.n] & self.alive_at(slice(0, self.n))
        return vis.mask

    def _posting(self, key: str, value: str) -> np.ndarray:
        vid = self.value_id.get((key, value))
        return self.postings[vid] if vid is not None and vid < self.nvalues else _EMPTY

    def _top(self, cand, vis: _Visible, order: _Order, start: int, stop: int) -> np.ndarray:
        """Positions start..stop of the matches (``cand``, None = all visible) in ``order``."""
        total = vis.count if cand is None else len(cand)
        if start >= total:
            return _EMPTY
        if cand is None or len(cand) * 8 > self.n:
            # Most documents match: walk the order until the page is filled.
            if cand is None:
                seen = self._mask(vis)

                def keep(seg):
                    return seen[seg]
            else:
                mask = np.zeros(self.n, dtype=bool)
                mask[cand] = True

                def keep(seg):
                    return mask[seg]
            got, have, i, step = [], 0, 0, max(4 * stop, 1024)
            while have < stop and i < self.n:
                seg = order.slice(i, i + step)
                seg = seg[keep(seg)]
                got.append(seg)
                have += len(seg)
                i += step
                step *= 2
            return np.concatenate(got)[start:stop]
        r = order.rank(cand)
        if stop < len(cand):
            part = np.argpartition(r, stop - 1)[:stop]
            part = part[np.argsort(r[part])]
        else:
            part = np.argsort(r)
        return cand[part[start:stop]]

    def run(self, matches, filters: dict[str, list[str]], sort: str, page: int, per_page: int,
            demoted, start: int | None = None,
            readable: frozenset[str] | None = frozenset(("public",))) -> SearchResult:
        """`matches`: per query term, (positions matching it, positions with it in the title),
        sorted (SearchCache.match). `demoted`: doc ids ranked last. `readable`: the caller's
        access labels (store.access.labels); None = all."""
        vis = self.visible(readable)
        sets = [any_pos for any_pos, _ in matches]
        for key, values in filters.items():
            posts = [self._posting(key, v) for v in values]
            if key in SINGLE_VALUED:
                sets.append(posts[0] if len(posts) == 1 else np.unique(np.concatenate(posts)))
            else:
                sets.extend(posts)
        if sets:
            # Smallest first: every later test costs the size of what is left.
            sets.sort(key=len)
            cand = sets[0][self._mask(vis)[sets[0]]]
            for s in sets[1:]:
                if not len(cand):
                    break
                cand = cand[_member(s, cand, self.n)]
            total = len(cand)
            if total * 2 <= vis.count:
                counts = self._count(cand)
            else:  # fewer documents left out than matched: count those, subtract
                mask = np.zeros(self.n, dtype=bool)
                mask[cand] = True
                counts = vis.counts - self._count(np.flatnonzero(self._mask(vis) & ~mask))
        else:
            cand, total, counts = None, vis.count, vis.counts
        facets: dict[str, list[tuple[str, int]]] = {f: [] for f in FACETS}
        for vid in np.flatnonzero(counts):
            f, v = self.values[vid]
            facets.setdefault(f, []).append((v, int(counts[vid])))
        for f in facets:
            facets[f].sort(key=lambda vn: (-vn[1], vn[0]))

        if start is None:
            start = (page - 1) * per_page
        start = min(max(0, start), self.n)  # an offset past the end is an empty page
        stop = start + per_page
        if sort == "title":
            chosen = self._top(cand, vis, self.title, start, stop)
        elif sort == "modified" or not matches:
            chosen = self._top(cand, vis, self.mod, start, stop)
        else:
            chosen = self._by_relevance(cand, matches, demoted, start, stop)
        return SearchResult(ids=[self.dataset_ids[p] for p in chosen.tolist()], total=total,
                            facets=facets)

    def _by_relevance(self, idx, matches, demoted, start: int, stop: int) -> np.ndarray:
        if start >= len(idx):
            return _EMPTY
        s = np.zeros(len(idx))
        for any_pos, title_pos in matches:
            # BM25's idf with binary term frequency: rare terms weigh more; the title field
            # is boosted, so title matches come first (BM25F-style field weights).
            n = int(self.alive_at(any_pos).sum())
            idf = math.log(1 + (self.live - n + 0.5) / (n + 0.5))
            s += idf * (1 + TITLE_WEIGHT * _member(title_pos, idx, self.n))
        if demoted:
            s = s - DEMOTED * _member(self.positions(sorted(demoted)), idx, self.n)
        # Best score, then the shorter title (closer to an exact title), then newest: the
        # order is total (ranks are unique), so the page of the first `stop` is exact.
        sub = np.arange(len(idx))
        if stop * 4 < len(idx):
            neg = -s
            cut = _kth_smallest(neg, stop)
            ties = np.flatnonzero(neg == cut)
            need = stop - int((neg < cut).sum())
            if len(ties) > need:
                t = idx[ties]
                key = self.title_len[t] * (self.n + 1) + self.mod.rank(t)
                ties = ties[np.argpartition(key, need - 1)[:need]]
            sub = np.concatenate([np.flatnonzero(neg < cut), ties])
        p = idx[sub]
        order = np.lexsort((self.mod.rank(p), self.title_len[p], -s[sub]))
        return p[order[start:stop]]


def _kth_smallest(values: np.ndarray, k: int):
    """The k-th smallest of ``values`` (1 <= k <= len). Scores take few distinct values (a
    term is in the title or not, per term): counted level by level, each a pass over the
    array. np.partition took 13 ms for 100,000 scores of two values at 1M datasets (one level
    rare); it answers when the levels are many."""
    level = values.min()
    below = 0
    for _ in range(KTH_LEVELS):
        below += int(np.count_nonzero(values == level))
        if below >= k:
            return level
        level = values.min(where=values > level, initial=np.inf)
    return np.partition(values, k - 1)[k - 1]


def compact_positions(positions: np.ndarray) -> np.ndarray:
    """Positions as held in caches and postings: int32 halves their memory."""
    return positions.astype(np.int32, copy=False)
