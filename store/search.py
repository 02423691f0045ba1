"""Japanese full-text search over the catalogue, behind a small interface (SearchIndex).

Measured in shared/reference/catalogue-ux-and-search.md §1 and bench/search_bench.py:
- Text is NFKC + casefolded, ハザード・マップ loses its dot, at index and at query time.
- The index is an FTS5 table over CJK bigrams we compute (Lucene CJKAnalyzer style): every run
  of letters/digits becomes overlapping 2-character tokens, ASCII words stay words, and the last
  character of each run goes to a `tail` column. A 2-character query is then one token lookup, a
  longer one a phrase of bigrams (exact substring), a 1-character one a prefix query. The
  trigram tokenizer it replaces could not answer 1–2 characters without a LIKE scan, which
  made facet counts for 2-character queries 300 ms at 100k datasets.
- FTS5 only says which documents match. Facet counts, filters, sorting and ranking run on
  arrays held per process (store/search_cache.py), brought up to date from the change log
  (search_change) when the index generation moves: a publish is applied, never reloaded.
- 表記ゆれ: each term is expanded to its spelling variants (OR), terms are ANDed.
PostgreSQL (no FTS5): the same tokens, plus a prefix gram (">" + the first 1–3 characters)
for each, in a `grams text[]` column with a GIN index. A term asks `grams @>` its tokens
(the last as a prefix gram where FTS5 would take a prefix), then a LIKE on the space-joined
token column rechecks that they are consecutive, i.e. FTS5's phrase: the same answers as
SQLite for every query, 1–2-character Japanese included (measured in
shared/reference/scale-and-tiles.md §A6: 0.27 ms where pg_trgm needed a scan).
The schema (FTS5 table and triggers, or the grams column and index) is Alembic's
(store/migrations); this module only recomputes tokens when TOKENIZER_VERSION moves.
"""
from __future__ import annotations

import re
import unicodedata

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from store.search_cache import (ACCESS_FIELD, FACETS, SORTS, SearchCache,  # noqa: F401
                                SearchResult)

MAX_TERMS = 16
MAX_VARIANTS = 8
TOKENIZER_VERSION = "bigram-1"  # bump when tokens() changes: the index is rebuilt at start-up
FILTER_ALIASES = {"formats": "res_format", "license": "license_id"}
PUBLIC_ONLY = frozenset(("public",))

_KATAKANA = "[\u30a1-\u30fa\u30fc]"
_KATAKANA_DOT = re.compile(f"(?<={_KATAKANA})\u30fb(?={_KATAKANA})")
_SPACE = re.compile(r"\s+")
_RUN = re.compile(r"[^\W_]+")
_PART = re.compile(r"[a-z]+|[^a-z]+")


def normalize(text_: str) -> str:
    """NFKC + casefold, ハザード・マップ -> ハザードマップ, whitespace collapsed.

    NFKC first: it turns ＡＥＤ into AED, ６ into 6, ﾊｻﾞｰﾄﾞ into ハザード and the half-width
    ･ into ・, so the katakana rule below sees one form.
    """
    if not text_:
        return ""
    s = unicodedata.normalize("NFKC", text_).casefold()
    s = _KATAKANA_DOT.sub("", s)
    return _SPACE.sub(" ", s).strip()


def _parts(s: str):
    """Runs of word characters, split where ASCII letters meet anything else."""
    for run in _RUN.findall(s):
        yield from _PART.findall(run)


def tokens(s: str) -> tuple[list[str], list[str]]:
    """(tokens in order, the last character of each multi-character non-ASCII part)."""
    out, tails = [], []
    for part in _parts(s):
        if len(part) == 1 or (part.isascii() and part.isalpha()):
            out.append(part)
        else:
            out += [part[i:i + 2] for i in range(len(part) - 1)]
            tails.append(part[-1])
    return out, tails


def fts_expr(term: str) -> str | None:
    """The FTS5 query for one normalised term; None when it has no word characters."""
    toks, _ = tokens(term)
    if not toks:
        return None
    last = toks[-1]
    # A trailing ASCII word or single character may continue in the document (aed -> aed設置,
    # 川 -> 川市), so the last token is a prefix; bigrams are whole tokens.
    prefix = "*" if (len(last) == 1 or (last.isascii() and last.isalpha())) else ""
    return '"' + " ".join(toks) + '"' + prefix


# 表記ゆれ: groups of spellings that mean the same thing (both ways), then one-way rewrites.
# ひなんじょ/避難所 is two-way: a search for 避難所 should also find the やさしい日本語 lists.
_VARIANT_GROUPS = [
    ("子ども", "こども", "子供"),
    ("aed", "自動体外式除細動器"),
    ("避難所", "ひなんじょ"),
    ("避難場所", "ひなんばしょ"),
]
# ハザード・マップ / ﾊｻﾞｰﾄﾞﾏｯﾌﾟ need no entry: normalize() already folds them to ハザードマップ.
_ONE_WAY = {"ひなん": ("避難",)}
# Place names that contain a shorter one: a 京都 hit that is only 東京都 ranks below true hits.
_CONTAINED_IN = {"京都": ("東京都",), "大阪": (), "神戸": ()}


def expand(term: str) -> list[str]:
    """The normalised term and its spelling variants (the term itself first)."""
    out = [term]
    for group in _VARIANT_GROUPS:
        for member in group:
            # Inside a longer term (子ども食堂) only for Japanese: "aed" in "caedmon" is no AED.
            if term == member or (not member.isascii() and member in term):
                out += [term.replace(member, o) for o in group if o != member]
    # One-way rewrites only for the whole term: ひなん inside ひなんじょ must not give 避難じょ.
    out += list(_ONE_WAY.get(term, ()))
    return list(dict.fromkeys(out))[:MAX_VARIANTS]


def split_query(q: str) -> list[list[str]]:
    """Terms (space or full-width space separated), each as its OR group of variants."""
    words = [w for w in unicodedata.normalize("NFKC", q or "").split() if w != "AND"]
    groups = [expand(normalize(w)) for w in words[:MAX_TERMS]]
    return [g for g in groups if g and g[0]]


_meta = MetaData()


def _doc_table(metadata: MetaData, *extra) -> Table:
    return Table(
        "search_doc", metadata,
        Column("doc_id", Integer, primary_key=True, autoincrement=True),
        Column("dataset_id", String(200), nullable=False, unique=True),
        Column("title", Text, nullable=False, default=""),
        Column("title_n", Text, nullable=False, default=""),
        Column("tags_n", Text, nullable=False, default=""),
        Column("body_n", Text, nullable=False, default=""),
        Column("organization", String(100)),
        Column("modified", String(40), index=True),
        # The token strings the FTS table indexes (external content: deletes need them back);
        # in PostgreSQL the LIKE recheck of a phrase reads them.
        Column("title_t", Text, nullable=False, default=""),
        Column("tags_t", Text, nullable=False, default=""),
        Column("body_t", Text, nullable=False, default=""),
        Column("tail_t", Text, nullable=False, default=""),
        *extra)


search_doc = _doc_table(_meta)
# PostgreSQL's search_doc: the same, plus the GIN-indexed grams (store/migrations).
_meta_pg = MetaData()
search_doc_pg = _doc_table(_meta_pg, Column("grams", ARRAY(Text), nullable=False,
                                            server_default="{}"),
                           Index("ix_search_doc_grams", "grams", postgresql_using="gin"))
search_facet = Table(
    "search_facet", _meta,
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("field", String(20), nullable=False),
    Column("value", Text, nullable=False),
    UniqueConstraint("dataset_id", "field", "value"),
    Index("ix_search_facet_field_value", "field", "value"),
)
# Which documents each generation touched (old and new doc ids of every write): what a web
# worker applies to its arrays instead of reloading them (store.search_cache).
search_change = Table(
    "search_change", _meta,
    Column("gen", Integer, nullable=False, index=True),
    Column("doc_id", Integer, nullable=False),
)
CHANGE_LOG_GENERATIONS = 1000  # kept; a worker further behind reloads in full
search_meta = Table(
    "search_meta", _meta,
    Column("key", String(40), primary_key=True),
    Column("value", Text, nullable=False),
)

def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _int_list(ids) -> str:
    """Doc ids inlined in SQL (ints only: nothing from a request gets here)."""
    return ",".join(str(int(i)) for i in ids) or "NULL"


def _facet_value(field_: str, value) -> str:
    """Facet values are displayed, so only NFKC (ＡＥＤ and AED are one tag), no casefold."""
    v = unicodedata.normalize("NFKC", str(value)).strip()
    return v.upper() if field_ == "res_format" else v


def _token_columns(title_n: str, tags_n: str, body_n: str, grams: bool = False) -> dict:
    cols, tails, every = {}, [], set()
    for name, value in (("title_t", title_n), ("tags_t", tags_n), ("body_t", body_n)):
        toks, t = tokens(value)
        cols[name] = " ".join(toks)
        tails += t
        every.update(toks)
    cols["tail_t"] = " ".join(dict.fromkeys(tails))
    if grams:
        cols["grams"] = _grams(every | set(tails))
    return cols


def _prefix_gram(token: str) -> str:
    return ">" + token[:3]


def _grams(toks: set[str]) -> list[str]:
    """Every token, and the prefix grams a query may ask for: FTS5 takes a trailing single
    character or ASCII word as a prefix (川 -> 川市, aed -> aedの), so ">" + its first 1-3
    characters (">" never starts a token: tokens are word characters)."""
    out = set(toks)
    for t in toks:
        out.update(">" + t[:k] for k in range(1, min(3, len(t)) + 1))
    return sorted(out)


def _pg_match(term: str, columns, n: int) -> tuple[str, dict] | None:
    """PostgreSQL's equivalent of fts_expr(term) over `columns`: (SQL, params), named by n."""
    toks, _ = tokens(term)
    if not toks:
        return None
    last = toks[-1]
    prefix = len(last) == 1 or (last.isascii() and last.isalpha())
    need = toks[:-1] + [_prefix_gram(last) if prefix else last]
    # Tokens are space-separated word characters: " a b c " holds " a b " exactly when the
    # tokens a, b are consecutive (FTS5's phrase); no LIKE wildcard can occur in a token.
    phrase = "% " + " ".join(toks) + ("%" if prefix else " %")
    recheck = " OR ".join(f"(' ' || {c} || ' ') LIKE :p{n}" for c in columns)
    return (f"(grams @> CAST(:g{n} AS text[]) AND ({recheck}))",
            {f"g{n}": sorted(set(need)), f"p{n}": phrase})


_ANY_COLUMNS = ("title_t", "tags_t", "body_t", "tail_t")


class SearchIndex:
    def __init__(self, engine, read_engine=None):
        self.engine = engine
        # Where searches read (a replica during GET requests, store.db.Store.reading).
        self.read_engine = read_engine or (lambda: engine)
        self.fts = engine.dialect.name == "sqlite"
        self.doc = search_doc if self.fts else search_doc_pg
        self.cache = SearchCache(self)
        try:
            version = self._tokenizer_version()
        except DBAPIError:  # an engine no Store has opened yet (a benchmark): make the schema
            from store.migrate import ensure_schema
            ensure_schema(engine)
            version = self._tokenizer_version()
        if version != TOKENIZER_VERSION:
            with engine.begin() as conn:
                self._retokenize(conn)

    def _tokenizer_version(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT value FROM search_meta WHERE key='tokenizer'")).scalar()

    def _retokenize(self, conn) -> None:
        """Tokens from another tokenizer version (or none yet, after an upgrade): recompute."""
        if not self.fts:  # workers starting together: one recomputes, the others find it done
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('renkei-search ' "
                              "|| current_schema()))"))
            if conn.execute(text("SELECT value FROM search_meta WHERE key='tokenizer'")
                            ).scalar() == TOKENIZER_VERSION:
                return
        rows = conn.execute(text("SELECT doc_id, title_n, tags_n, body_n FROM search_doc")).all()
        for doc_id, t, g, b in rows:
            conn.execute(self.doc.update().where(self.doc.c.doc_id == doc_id)
                         .values(**_token_columns(t, g, b, grams=not self.fts)))
        if self.fts:
            conn.exec_driver_sql("INSERT INTO search_bigram(search_bigram) VALUES ('rebuild')")
        self._set_meta(conn, "tokenizer", TOKENIZER_VERSION)

    @staticmethod
    def _set_meta(conn, key: str, value: str) -> None:
        updated = conn.execute(text("UPDATE search_meta SET value=:v WHERE key=:k"),
                               {"k": key, "v": value}).rowcount
        if not updated:
            conn.execute(search_meta.insert().values(key=key, value=value))

    def _bump(self, conn, doc_ids) -> None:
        """Move the generation and log the doc ids this write touched under it. The UPDATE
        holds the generation row until commit, so on PostgreSQL too generations become
        visible in order and a worker that has applied generation g has missed nothing <= g."""
        updated = conn.execute(text("UPDATE search_meta SET value = CAST(CAST(value AS INTEGER) "
                                    "+ 1 AS TEXT) WHERE key = 'generation'")).rowcount
        if not updated:
            conn.execute(search_meta.insert().values(key="generation", value="1"))
        gen = int(conn.execute(text("SELECT value FROM search_meta WHERE key = 'generation'"))
                  .scalar())
        rows = [{"gen": gen, "doc_id": d} for d in dict.fromkeys(doc_ids)]
        if rows:
            conn.execute(search_change.insert(), rows)
        if gen % 100 == 0 and gen > CHANGE_LOG_GENERATIONS:
            floor = gen - CHANGE_LOG_GENERATIONS
            conn.execute(search_change.delete().where(search_change.c.gen <= floor))
            self._set_meta(conn, "change_floor", str(floor))

    def _doc_ids(self, conn, dataset_ids) -> list[int]:
        out = []
        for i in range(0, len(dataset_ids), 500):
            out += [r[0] for r in conn.execute(
                self.doc.select().with_only_columns(self.doc.c.doc_id)
                .where(self.doc.c.dataset_id.in_(dataset_ids[i:i + 500])))]
        return out

    # -- writing (in the caller's transaction) -------------------------------------------

    def upsert(self, conn, doc: dict) -> None:
        """Index one dataset. `conn` is the publisher's Connection: the record and its index
        entry switch together, or not at all."""
        self.upsert_many(conn, [doc])

    def upsert_many(self, conn, docs) -> None:
        docs = list(docs)
        ids = [d["id"] for d in docs]
        touched = self._doc_ids(conn, ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            conn.execute(self.doc.delete().where(self.doc.c.dataset_id.in_(chunk)))
            conn.execute(search_facet.delete().where(search_facet.c.dataset_id.in_(chunk)))
        rows, facets = [], []
        for doc in docs:
            tags = [t for t in (doc.get("tags") or []) if t]
            body = [doc.get("description") or "", doc.get("organization_title") or "",
                    " ".join(doc.get("formats") or [])]
            title_n, tags_n = normalize(doc.get("title") or ""), normalize(" ".join(tags))
            body_n = normalize("\n".join(body))
            rows.append({"dataset_id": doc["id"], "title": doc.get("title") or "",
                         "title_n": title_n, "tags_n": tags_n, "body_n": body_n,
                         "organization": doc.get("organization"), "modified": doc.get("modified"),
                         **_token_columns(title_n, tags_n, body_n, grams=not self.fts)})
            values = {
                "organization": [doc.get("organization")], "tags": tags,
                "res_format": doc.get("formats") or [], "license_id": [doc.get("license_id")],
                "theme": [doc.get("theme")],
            }
            pairs = {(f, _facet_value(f, v)) for f, vs in values.items() for v in vs if v}
            # Who may find it (store.access labels); the arrays filter on it, never shown.
            pairs.add((ACCESS_FIELD, doc.get("access") or "public"))
            facets += [{"dataset_id": doc["id"], "field": f, "value": v}
                       for f, v in sorted(pairs) if v]
        if rows:
            conn.execute(self.doc.insert(), rows)
        if facets:
            conn.execute(search_facet.insert(), facets)
        self._bump(conn, touched + self._doc_ids(conn, ids))

    def delete(self, conn, dataset_id: str) -> None:
        touched = self._doc_ids(conn, [dataset_id])
        conn.execute(self.doc.delete().where(self.doc.c.dataset_id == dataset_id))
        conn.execute(search_facet.delete().where(search_facet.c.dataset_id == dataset_id))
        self._bump(conn, touched)

    # -- reading ---------------------------------------------------------------------------

    def search(self, q: str = "", filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", page: int = 1, per_page: int = 20, *,
               start: int | None = None,
               readable: frozenset[str] | None = PUBLIC_ONLY) -> SearchResult:
        """One page of results (`start` instead of `page`: the first result's position, for
        APIs that page by offset), with the total and the facet counts of all matches.
        `readable`: the access labels of the caller (store.access.labels); None = all."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
        if page < 1 or not 1 <= per_page <= 1000:
            raise ValueError("page must be >= 1 and per_page between 1 and 1000")
        merged = self._filters(filters)
        groups = split_query(q)
        # One read transaction: the arrays and the FTS answers come from the same snapshot
        # (in PostgreSQL that takes REPEATABLE READ: READ COMMITTED snapshots each statement).
        engine = self.read_engine()
        if not self.fts:
            engine = engine.execution_options(isolation_level="REPEATABLE READ")
        with engine.connect() as conn, conn.begin():
            arrays, exact = self.cache.snapshot(conn)
            matches = [self.cache.match(conn, arrays, exact, g, self._match_group) for g in groups]
            demoted = self._contained_only(conn, groups) if groups else set()
            return arrays.run(matches, merged, sort, page, per_page, demoted, start=start,
                              readable=readable)

    def _filters(self, filters: dict | None) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = {}
        for raw_key, values in (filters or {}).items():
            key = FILTER_ALIASES.get(raw_key, raw_key)
            if key not in FACETS:
                raise ValueError(f"unknown filter {raw_key!r}; expected one of {', '.join(FACETS)}")
            merged.setdefault(key, []).extend(_facet_value(key, v) for v in (values or []) if v)
        return {k: list(dict.fromkeys(v for v in vs if v)) for k, vs in merged.items() if vs}

    def _match_group(self, conn, group: list[str],
                     only: list[int] | None = None) -> tuple[list[int], list[int]]:
        """(doc ids matching any variant, doc ids with a variant in the title); when ``only``
        is given (the documents published since a term was cached), those among them, plus
        possibly other doc ids the caller drops."""
        exprs = [fts_expr(v) for v in group]
        if self.fts and all(exprs):
            any_q = " OR ".join(exprs)
            return (self._fts_ids(conn, any_q, only),
                    self._fts_ids(conn, "{title_t} : (" + any_q + ")", only))
        if all(exprs):
            return (self._grams_ids(conn, group, _ANY_COLUMNS, only),
                    self._grams_ids(conn, group, ("title_t",), only))
        # No word characters (%, ＿ …): a substring scan on the normalised text.
        params = {f"v{i}": _like(v) for i, v in enumerate(group)}
        anyc = " OR ".join(f"{c} LIKE :v{i} ESCAPE '\\'" for i in range(len(group))
                           for c in ("title_n", "tags_n", "body_n"))
        titlec = " OR ".join(f"title_n LIKE :v{i} ESCAPE '\\'" for i in range(len(group)))
        among = "" if only is None else f" AND doc_id IN ({_int_list(only)})"
        return ([r[0] for r in conn.execute(
                    text(f"SELECT doc_id FROM search_doc WHERE ({anyc}){among}"), params)],
                [r[0] for r in conn.execute(
                    text(f"SELECT doc_id FROM search_doc WHERE ({titlec}){among}"), params)])

    @staticmethod
    def _fts_ids(conn, expr: str, only: list[int] | None = None) -> list[int] | str:
        # group_concat: one string instead of 30,000 row tuples is 3x faster to bring over.
        # A rowid range, not IN (…): FTS5 seeks a range in the term's doclists (0.1 ms for a
        # publish's new documents), but answers IN with more than one value by a full MATCH.
        # Other doc ids in the range are ones the caller already has (it keeps the new ones).
        among = "" if only is None else \
            f" AND rowid BETWEEN {int(min(only, default=0))} AND {int(max(only, default=-1))}"
        s = conn.execute(text("SELECT group_concat(rowid) FROM search_bigram "
                              f"WHERE search_bigram MATCH :q{among}"), {"q": expr}).scalar()
        return s or ""

    @staticmethod
    def _grams_ids(conn, group: list[str], columns, only: list[int] | None = None) -> str:
        """PostgreSQL: the doc ids (comma-separated, as _fts_ids) matching any variant; with
        `only`, among those doc ids (a publish's new documents)."""
        clauses, params = [], {}
        for n, term in enumerate(group):
            sql, p = _pg_match(term, columns, n)
            clauses.append(sql)
            params.update(p)
        among = "" if only is None else f" AND doc_id IN ({_int_list(only)})"
        s = conn.execute(text("SELECT string_agg(CAST(doc_id AS TEXT), ',') FROM search_doc "
                              "WHERE (" + " OR ".join(clauses) + ")" + among), params).scalar()
        return s or ""

    def _contained_only(self, conn, groups: list[list[str]]) -> set[int]:
        """Docs whose every hit of a term sits inside a longer place name (京都 in 東京都)."""
        out: set[int] = set()
        for group in groups:
            for term in group:
                for longer in _CONTAINED_IN.get(term, ()):
                    if self.fts:
                        where = ("doc_id IN (SELECT rowid FROM search_bigram "
                                 "WHERE search_bigram MATCH :l)")
                        params = {"l": fts_expr(longer)}
                    else:
                        where, params = _pg_match(longer, _ANY_COLUMNS, 0)
                    rows = conn.execute(text("SELECT doc_id, title_n, tags_n, body_n "
                                             f"FROM search_doc WHERE {where}"), params)
                    out |= {doc_id for doc_id, *texts in rows
                            if not any(term in t.replace(longer, "") for t in texts)}
        return out
