"""Japanese full-text search over the catalogue, behind a small interface.

Embedded backend: a plain content table `search_doc` (normalised text) + an external-content
FTS5 trigram table `search_fts` kept in step by triggers + `search_facet` (one row per
dataset/field/value). Measured on SQLite 3.40 (shared/reference/catalogue-ux-and-search.md §1):
trigram MATCH cannot answer terms under 3 characters, LIKE on the FTS table is broken for
non-ASCII, and a short term inside a multi-term MATCH gives false positives. So the query is
split here: terms of >= 3 characters become MATCH phrases, shorter ones LIKE on `search_doc`,
all ANDed in one statement. On a non-SQLite engine every term uses LIKE (portable, unranked).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint, text
from sqlalchemy.schema import CreateIndex, CreateTable

MIN_MATCH_CHARS = 3  # the trigram tokenizer's floor
MAX_TERMS = 16
MAX_VARIANTS = 8
SORTS = ("relevance", "modified", "title")
# Facet names are the CKAN / URL parameter names, so views pass request args straight through.
FACETS = ("organization", "tags", "res_format", "license_id", "theme")
# Single-valued fields: several values mean "any of them"; multi-valued: "all of them" (CKAN).
SINGLE_VALUED = {"organization", "license_id", "theme"}
FILTER_ALIASES = {"formats": "res_format", "license": "license_id"}

_KATAKANA = "[\u30a1-\u30fa\u30fc]"
_KATAKANA_DOT = re.compile(f"(?<={_KATAKANA})\u30fb(?={_KATAKANA})")
_SPACE = re.compile(r"\s+")


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


# 表記ゆれ: groups of spellings that mean the same thing (both ways), then one-way rewrites
# (やさしい日本語 ひなんじょ should find 避難所, but 避難所 need not pull in every ひなん text).
_VARIANT_GROUPS = [
    ("子ども", "こども", "子供"),
    ("aed", "自動体外式除細動器"),
]
# ハザード・マップ / ﾊｻﾞｰﾄﾞﾏｯﾌﾟ need no entry: normalize() already folds them to ハザードマップ.
_ONE_WAY = {"ひなんじょ": ("避難所",), "ひなんばしょ": ("避難場所",), "ひなん": ("避難",)}


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


@dataclass
class SearchResult:
    ids: list[str]
    total: int
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


_meta = MetaData()
search_doc = Table(
    "search_doc", _meta,
    Column("doc_id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(200), nullable=False, unique=True),
    Column("title", Text, nullable=False, default=""),
    Column("title_n", Text, nullable=False, default=""),
    Column("tags_n", Text, nullable=False, default=""),
    Column("body_n", Text, nullable=False, default=""),
    Column("organization", String(100)),
    Column("modified", String(40), index=True),
)
search_facet = Table(
    "search_facet", _meta,
    Column("dataset_id", String(200), nullable=False, index=True),
    Column("field", String(20), nullable=False),
    Column("value", Text, nullable=False),
    UniqueConstraint("dataset_id", "field", "value"),
    Index("ix_search_facet_field_value", "field", "value"),
)

_FTS_DDL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(title_n, tags_n, body_n, "
    "content='search_doc', content_rowid='doc_id', tokenize='trigram')",
    # External content: the triggers are the only writers, so the index cannot drift.
    "CREATE TRIGGER IF NOT EXISTS search_doc_ai AFTER INSERT ON search_doc BEGIN "
    "INSERT INTO search_fts(rowid, title_n, tags_n, body_n) "
    "VALUES (new.doc_id, new.title_n, new.tags_n, new.body_n); END",
    "CREATE TRIGGER IF NOT EXISTS search_doc_ad AFTER DELETE ON search_doc BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, title_n, tags_n, body_n) "
    "VALUES ('delete', old.doc_id, old.title_n, old.tags_n, old.body_n); END",
    "CREATE TRIGGER IF NOT EXISTS search_doc_au AFTER UPDATE ON search_doc BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, title_n, tags_n, body_n) "
    "VALUES ('delete', old.doc_id, old.title_n, old.tags_n, old.body_n); "
    "INSERT INTO search_fts(rowid, title_n, tags_n, body_n) "
    "VALUES (new.doc_id, new.title_n, new.tags_n, new.body_n); END",
]


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _facet_value(field_: str, value) -> str:
    """Facet values are displayed, so only NFKC (ＡＥＤ and AED are one tag), no casefold."""
    v = unicodedata.normalize("NFKC", str(value)).strip()
    return v.upper() if field_ == "res_format" else v


class SearchIndex:
    def __init__(self, engine):
        self.engine = engine
        self.fts = engine.dialect.name == "sqlite"
        # IF NOT EXISTS, not create_all's check-then-create: several web workers start at once
        # on the same database, and the loser of that race must not fail to boot.
        with engine.begin() as conn:
            for table in _meta.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(CreateIndex(index, if_not_exists=True))
            for ddl in _FTS_DDL if self.fts else []:
                conn.exec_driver_sql(ddl)

    # -- writing (in the caller's transaction) -------------------------------------------

    def upsert(self, conn, doc: dict) -> None:
        """Index one dataset. `conn` is the publisher's Connection: the record and its index
        entry switch together, or not at all."""
        dataset_id = doc["id"]
        self.delete(conn, dataset_id)
        tags = [t for t in (doc.get("tags") or []) if t]
        body = [doc.get("description") or "", doc.get("organization_title") or "",
                " ".join(doc.get("formats") or [])]
        conn.execute(search_doc.insert().values(
            dataset_id=dataset_id, title=doc.get("title") or "",
            title_n=normalize(doc.get("title") or ""), tags_n=normalize(" ".join(tags)),
            body_n=normalize("\n".join(body)), organization=doc.get("organization"),
            modified=doc.get("modified")))
        values = {
            "organization": [doc.get("organization")], "tags": tags,
            "res_format": doc.get("formats") or [], "license_id": [doc.get("license_id")],
            "theme": [doc.get("theme")],
        }
        rows = {(f, _facet_value(f, v)) for f, vs in values.items() for v in vs if v}
        rows = {(f, v) for f, v in rows if v}
        if rows:
            conn.execute(search_facet.insert(), [
                {"dataset_id": dataset_id, "field": f, "value": v} for f, v in sorted(rows)])

    def delete(self, conn, dataset_id: str) -> None:
        conn.execute(search_doc.delete().where(search_doc.c.dataset_id == dataset_id))
        conn.execute(search_facet.delete().where(search_facet.c.dataset_id == dataset_id))

    # -- reading ---------------------------------------------------------------------------

    def search(self, q: str = "", filters: dict[str, list[str]] | None = None,
               sort: str = "relevance", page: int = 1, per_page: int = 20) -> SearchResult:
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
        if page < 1 or not 1 <= per_page <= 1000:
            raise ValueError("page must be >= 1 and per_page between 1 and 1000")
        groups = split_query(q)
        params: dict[str, object] = {}
        where = self._term_conditions(groups, params) + self._filter_conditions(filters, params)
        where_sql = " AND ".join(where) or "1=1"
        matched = f"SELECT d.dataset_id FROM search_doc d WHERE {where_sql}"

        rank_join, order = "", self._order(groups, sort, params)
        long_terms = [v for g in groups for v in g if len(v) >= MIN_MATCH_CHARS]
        if self.fts and sort == "relevance" and long_terms:
            # bm25 over every long variant; rows found only through LIKE get NULL (ranked after).
            params["rank_q"] = " OR ".join(_phrase(v) for v in long_terms)
            rank_join = ("LEFT JOIN (SELECT rowid AS doc_id, bm25(search_fts, 10.0, 5.0, 1.0) "
                         "AS score FROM search_fts WHERE search_fts MATCH :rank_q) r "
                         "ON r.doc_id = d.doc_id")
        page_sql = (f"SELECT d.dataset_id FROM search_doc d {rank_join} WHERE {where_sql} "
                    f"ORDER BY {order} LIMIT :limit OFFSET :offset")
        facet_sql = (f"SELECT f.field, f.value, COUNT(*) AS n FROM search_facet f "
                     f"WHERE f.dataset_id IN ({matched}) GROUP BY f.field, f.value")
        with self.engine.connect() as conn:
            total = conn.execute(text(f"SELECT COUNT(*) FROM ({matched}) m"), params).scalar()
            ids = [r[0] for r in conn.execute(text(page_sql), {
                **params, "limit": per_page, "offset": (page - 1) * per_page})]
            facets: dict[str, list[tuple[str, int]]] = {f: [] for f in FACETS}
            for f, value, n in conn.execute(text(facet_sql), params):
                facets.setdefault(f, []).append((value, n))
        for f in facets:
            facets[f].sort(key=lambda vn: (-vn[1], vn[0]))
        return SearchResult(ids=ids, total=total or 0, facets=facets)

    def _term_conditions(self, groups: list[list[str]], params: dict) -> list[str]:
        conds = []
        for i, group in enumerate(groups):
            alts = []
            for j, v in enumerate(group):
                key = f"t{i}_{j}"
                if self.fts and len(v) >= MIN_MATCH_CHARS:
                    params[key] = _phrase(v)
                    alts.append(f"d.doc_id IN (SELECT rowid FROM search_fts "
                                f"WHERE search_fts MATCH :{key})")
                else:
                    params[key] = _like(v)
                    alts.append(" OR ".join(f"d.{c} LIKE :{key} ESCAPE '\\'"
                                            for c in ("title_n", "tags_n", "body_n")))
            conds.append("(" + " OR ".join(f"({a})" for a in alts) + ")")
        return conds

    def _filter_conditions(self, filters: dict | None, params: dict) -> list[str]:
        merged: dict[str, list[str]] = {}
        for raw_key, values in (filters or {}).items():
            key = FILTER_ALIASES.get(raw_key, raw_key)
            if key not in FACETS:
                raise ValueError(f"unknown filter {raw_key!r}; expected one of {', '.join(FACETS)}")
            merged.setdefault(key, []).extend(_facet_value(key, v) for v in (values or []) if v)
        conds = []
        for key, values in merged.items():
            values = list(dict.fromkeys(v for v in values if v))
            if not values:
                continue
            params[f"fk_{key}"] = key
            sets = [values] if key in SINGLE_VALUED else [[v] for v in values]
            for i, vals in enumerate(sets):
                names = [f"fv_{key}_{i}_{j}" for j in range(len(vals))]
                params.update(zip(names, vals))
                conds.append(f"d.dataset_id IN (SELECT dataset_id FROM search_facet WHERE "
                             f"field = :fk_{key} AND value IN ({', '.join(':' + n for n in names)}))")
        return conds

    def _order(self, groups: list[list[str]], sort: str, params: dict) -> str:
        newest = "d.modified IS NULL, d.modified DESC, d.dataset_id"
        if sort == "title":
            return "d.title_n, d.dataset_id"
        if sort == "modified" or not groups:
            return newest
        # Relevance: datasets whose title holds more of the terms first, then bm25, then newest.
        hits = []
        for i, group in enumerate(groups):
            likes = " OR ".join(f"d.title_n LIKE :t{i}_{j}l ESCAPE '\\'" for j in range(len(group)))
            for j, v in enumerate(group):
                params[f"t{i}_{j}l"] = _like(v)
            hits.append(f"(CASE WHEN {likes} THEN 1 ELSE 0 END)")
        score = "r.score IS NULL, r.score, " if self.fts and any(
            len(v) >= MIN_MATCH_CHARS for g in groups for v in g) else ""
        return f"({' + '.join(hits)}) DESC, {score}{newest}"

