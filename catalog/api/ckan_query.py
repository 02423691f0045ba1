"""package_search for the CKAN-compatible API: Solr-style `fq`, `sort` and facets over the store.

Free text (`q`) goes through the catalogue's own Japanese search (store.search.SearchIndex,
with its NFKC folding and 表記ゆれ variants), so the API finds what the pages find. Filters,
dates, sorting and paging are SQL over the dataset table and the search index's facet table, so
the answer is exact at any `start` and `metadata_modified` is our Dataset.updated_at.

The fq grammar accepted is the part of Lucene syntax CKAN clients send:
``[+|-]field:value``, ``field:"quoted value"``, ``field:(a OR b)``, ``field:*`` and ranges
``field:[2025-01-01T00:00:00Z TO *]`` (``{…}`` excludes the ends; ``NOW-7DAYS`` works), with
clauses ANDed (whitespace, ``AND`` or ``&&`` between them). Anything else is a Search Query
Error rather than a silently ignored filter.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, false, func, not_, or_, select, true

from store.search import search_facet
from store.search_cache import SINGLE_VALUED
from store.db import Dataset, Organization, Resource

DEFAULT_SORT = "score desc, metadata_modified desc"
DEFAULT_FACET_LIMIT = 50
# CKAN field -> search_facet field
FACET_FIELDS = {"organization": "organization", "owner_org": "organization", "tags": "tags",
                "res_format": "res_format", "groups": "theme", "license_id": "license_id"}
DATE_FIELDS = {"metadata_modified": Dataset.updated_at, "metadata_created": Dataset.created_at}
# Fields every record here has one fixed value of (CKAN adds +dataset_type:dataset itself).
CONSTANT_FIELDS = {"dataset_type": "dataset", "type": "dataset", "state": "active"}
# CKAN's private flag and capacity label, from our access level (store.access).
ACCESS_FIELDS = {"private": {"true": Dataset.access_level == "organization",
                             "false": Dataset.access_level != "organization"},
                 "capacity": {"public": Dataset.access_level == "public",
                              "private": Dataset.access_level != "public"}}
SORT_COLUMNS = {"metadata_modified": Dataset.updated_at, "metadata_created": Dataset.created_at,
                "name": Dataset.id, "id": Dataset.id, "title_string": Dataset.title,
                "title": Dataset.title, "score": None}
_CLAUSE = re.compile(r'\s*(?:(?:AND|&&)\s+)?([+-]?)([A-Za-z_][\w.]*):'
                     r'("(?:[^"\\]|\\.)*"|[\[{][^\]}]*[\]}]|\([^)]*\)|(?:[^\s()\\]|\\.)+)\s*')
_GROUP = re.compile(r"\s*(?:(?:AND|&&)\s+)?([+-]?)\(")
_SPACE = re.compile(r"\s*")
_OR = re.compile(r"(?:OR|\|\|)\s+")
_NOW = re.compile(r"NOW(?:/DAY)?(?:([+-])(\d+)(DAY|DAYS|HOUR|HOURS|MINUTE|MINUTES))?")


class QueryError(ValueError):
    pass


@dataclass
class Clause:
    field: str
    negate: bool = False
    values: list[str] = field(default_factory=list)  # any of them; empty with `any_value`
    any_value: bool = False
    low: datetime | None = None
    high: datetime | None = None
    inclusive: tuple[bool, bool] = (True, True)
    alternatives: list | None = None    # `a:x OR b:y`: any of these clauses
    all_of: list | None = None          # `(a:x b:y)`: every one of these clauses


@dataclass
class SearchQuery:
    q: str
    clauses: list[Clause]
    rows: int
    start: int
    sort: list[tuple[str, bool]]  # (field, descending)
    sort_text: str
    facet_fields: list[str]
    facet_limit: int | None


@dataclass
class Found:
    count: int
    ids: list[str]
    facets: dict[str, list[tuple[str, int]]]


def parse_search(data: dict, *, natural, boolean, str_list, max_rows: int) -> SearchQuery:
    rows = min(natural(data, "rows", 10), max_rows)  # CKAN caps rows at ckan.search.rows_max
    start = natural(data, "start", 0)
    q, clauses = _split_q(str(data.get("q") or ""))
    for fq in [data.get("fq") or ""] + str_list(data, "fq_list"):
        clauses += parse_fq(str(fq))
    sort_text = str(data.get("sort") or DEFAULT_SORT)
    facet_fields = str_list(data, "facet.field") if boolean(data, "facet", True) else []
    limit = data.get("facet.limit")
    facet_limit = None if str(limit).strip() == "-1" else natural(data, "facet.limit",
                                                                   DEFAULT_FACET_LIMIT)
    return SearchQuery(q, clauses, rows, start, parse_sort(sort_text), sort_text,
                       list(dict.fromkeys(facet_fields)), facet_limit)


def parse_fq(text: str) -> list[Clause]:
    """Clauses ANDed; `a:x OR b:y` (Solr's OR between clauses, as CKAN passes fq to Solr) makes
    one clause that any of its parts satisfies. OR binds the clauses on either side."""
    clauses, pos, text = [], 0, text.strip()
    joined = False
    while pos < len(text):
        group = _GROUP.match(text, pos)
        if group:   # (a:x OR b:y): the clauses inside, as one
            inner, end = _parenthesised(text, group.end() - 1)
            parts = parse_fq(inner)
            clause = parts[0] if len(parts) == 1 else Clause("", all_of=parts)
            if group.group(1) == "-":
                clause = Clause("", negate=True, all_of=[clause])
            pos = end
            m = _SPACE.match(text, pos)
        else:
            m = _CLAUSE.match(text, pos)
            if not m:
                raise QueryError(f"cannot parse fq near {text[pos:pos + 40]!r}; "
                                 "use field:value clauses")
            clause = _clause(m.group(2), m.group(3), m.group(1) == "-")
        if joined:
            clauses[-1] = Clause("", alternatives=[*(clauses[-1].alternatives or
                                                     [clauses[-1]]), clause])
        else:
            clauses.append(clause)
        pos = m.end()
        o = _OR.match(text, pos)
        joined = bool(o) and bool(clauses)
        if o:
            pos = o.end()
            if pos >= len(text):
                raise QueryError("fq ends with OR")
    return clauses


def _parenthesised(text: str, start: int) -> tuple[str, int]:
    """The text inside the parenthesis at `start` (quotes respected) and the index after it."""
    depth, i, quoted = 0, start, False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    raise QueryError("unbalanced parentheses in fq")


def parse_sort(text: str) -> list[tuple[str, bool]]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, direction = part.partition(" ")
        direction = direction.strip().lower() or "asc"
        if name not in SORT_COLUMNS or direction not in ("asc", "desc"):
            raise QueryError(f"cannot sort by {part!r}; use e.g. 'metadata_modified desc'")
        out.append((name, direction == "desc"))
    return out


def _split_q(q: str) -> tuple[str, list[Clause]]:
    """Free text for the search index; `field:value` words of known fields become filters."""
    words, clauses = [], []
    for word in q.split():
        name = word.lstrip("+-").split(":", 1)[0]
        if word in ("*:*", "*"):
            continue
        if ":" in word and (name in FACET_FIELDS or name in DATE_FIELDS or name in
                            CONSTANT_FIELDS or name in ACCESS_FIELDS or name in ("name", "id")):
            clauses += parse_fq(word)
        else:
            words.append(word)
    return " ".join(words), clauses


def _clause(name: str, raw: str, negate: bool) -> Clause:
    known = (name in FACET_FIELDS or name in CONSTANT_FIELDS or name in ACCESS_FIELDS
             or name in ("name", "id"))
    if raw[0] in "[{":
        if name not in DATE_FIELDS:
            raise QueryError(f"ranges are supported on metadata_modified/metadata_created, "
                             f"not {name!r}")
        low, sep, high = raw[1:-1].partition(" TO ")
        if not sep:
            raise QueryError(f"a range needs 'TO': {raw!r}")
        return Clause(name, negate, low=_when(low.strip()), high=_when(high.strip()),
                      inclusive=(raw[0] == "[", raw[-1] == "]"))
    if not known:
        raise QueryError(f"unknown field {name!r} in fq")
    if raw == "*":
        return Clause(name, negate, any_value=True)
    if raw[0] == "(":
        parts = re.findall(r'"(?:[^"\\]|\\.)*"|[^\s()]+', raw[1:-1])
        values = [_unquote(p) for p in parts if p not in ("OR", "||")]
        if not values or any(p in ("AND", "&&", "NOT") for p in parts):
            raise QueryError(f"only (a OR b) groups are supported: {raw!r}")
        return Clause(name, negate, values=values)
    return Clause(name, negate, values=[_unquote(raw)])


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return re.sub(r"\\(.)", r"\1", value)


def _when(text: str) -> datetime | None:
    if text == "*":
        return None
    m = _NOW.fullmatch(text)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    if m:
        if text.startswith("NOW/DAY"):
            now = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if m.group(1):
            unit = {"D": "days", "H": "hours", "M": "minutes"}[m.group(3)[0]]
            try:
                delta = timedelta(**{unit: int(m.group(2))})
                now = now - delta if m.group(1) == "-" else now + delta
            except OverflowError:
                raise QueryError(f"date out of range: {text!r}") from None
        return now
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"not a date: {text!r} (use 2025-06-01T00:00:00Z, NOW-7DAYS or *)") \
            from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


# -- running --------------------------------------------------------------------------------------

def facet_value(name: str, value: str) -> str:
    """As store.search stores facet values: NFKC, formats upper-cased."""
    v = unicodedata.normalize("NFKC", str(value)).strip()
    return v.upper() if name == "res_format" else v


def _condition(c: Clause, session):
    if c.alternatives:
        return or_(*(_condition(a, session) for a in c.alternatives))
    if c.all_of:
        cond = and_(*(_condition(a, session) for a in c.all_of))
        return not_(cond) if c.negate else cond
    if c.field in DATE_FIELDS:
        col, conds = DATE_FIELDS[c.field], []
        if c.low is not None:
            conds.append(col >= c.low if c.inclusive[0] else col > c.low)
        if c.high is not None:
            conds.append(col <= c.high if c.inclusive[1] else col < c.high)
        cond = and_(true(), *conds)
    elif c.field in CONSTANT_FIELDS:
        cond = true() if c.any_value or CONSTANT_FIELDS[c.field] in [v.lower() for v in c.values] \
            else false()
    elif c.field in ACCESS_FIELDS:
        conds = [ACCESS_FIELDS[c.field].get(v.lower(), false()) for v in c.values]
        cond = true() if c.any_value else or_(*conds)
    elif c.field in ("name", "id"):
        from catalog.api.ckan_dicts import find_dataset
        found = [find_dataset(session, v) for v in c.values]
        ids = [d.id for d in found if d is not None]
        cond = true() if c.any_value else (Dataset.id.in_(ids) if ids else false())
    else:
        facet = FACET_FIELDS[c.field]
        sub = select(search_facet.c.dataset_id).where(search_facet.c.field == facet)
        if not c.any_value:
            sub = sub.where(search_facet.c.value.in_([facet_value(facet, v) for v in c.values]))
        cond = Dataset.id.in_(sub)
    return not_(cond) if c.negate else cond


def _text_matches(store, q: str, readable) -> list[str]:
    """Every dataset id the catalogue search finds for q, best first."""
    ids, page = [], 1
    while True:
        result = store.search.search(q, sort="relevance", page=page, per_page=1000,
                                     readable=readable)
        ids += result.ids
        if not result.ids or len(ids) >= result.total:
            return ids
        page += 1


def _in_ids(session, ids: list[str]):
    if session.get_bind().dialect.name == "sqlite":
        # One JSON parameter instead of one per id: a broad q can match 100,000 datasets.
        values = func.json_each(json.dumps(ids)).table_valued("value")
        return Dataset.id.in_(select(values.c.value))
    return Dataset.id.in_(ids)


def _index_filters(query: SearchQuery) -> dict[str, list[str]] | None:
    """The clauses as the search index's filters, or None when one cannot be said there
    (dates, negation, name/id, `field:*`, two clauses on one field, several tags at once)."""
    filters: dict[str, list[str]] = {}
    for c in query.clauses:
        if c.field in CONSTANT_FIELDS and not c.negate and (
                c.any_value or CONSTANT_FIELDS[c.field] in [v.lower() for v in c.values]):
            continue  # true of every record
        facet = FACET_FIELDS.get(c.field)
        if facet is None or c.negate or c.any_value or not c.values or facet in filters:
            return None
        if facet not in SINGLE_VALUED and len(c.values) != 1:
            return None  # the index ANDs tags; a clause's values are any-of
        filters[facet] = [facet_value(facet, v) for v in c.values]
    return filters


def _run_in_index(store, query: SearchQuery, filters: dict[str, list[str]], readable) -> Found:
    """q by relevance, paged by the search index itself: one page of ids, the total and the
    facet counts in one pass over its arrays (masked by the caller's access labels), never
    the list of every match."""
    result = store.search.search(query.q, filters, sort="relevance", per_page=max(1, query.rows),
                                 start=query.start, readable=readable)
    facets = {}
    for name in query.facet_fields:
        f = FACET_FIELDS.get(name)
        items = sorted(result.facets.get(f, []), key=lambda vn: (-vn[1], vn[0])) if f else []
        facets[name] = items if query.facet_limit is None else items[:query.facet_limit]
    return Found(result.total, result.ids if query.rows else [], facets)


def run(store, session, query: SearchQuery, *, where_readable, readable) -> Found:
    """`where_readable` (SQL) and `readable` (labels) are the caller's read rule
    (store.access.read_filter / labels): counts, facets and results see only what it allows."""
    filters = _index_filters(query) if query.q else None
    if filters is not None and query.sort and query.sort[0] == ("score", True):
        return _run_in_index(store, query, filters, readable)
    conds = [Dataset.status == "active", where_readable] + \
        [_condition(c, session) for c in query.clauses]
    rank = None
    if query.q:
        matches = _text_matches(store, query.q, readable)
        rank = {i: n for n, i in enumerate(matches)}
        conds.append(_in_ids(session, matches))
    where = and_(*conds)
    count = session.scalar(select(func.count()).select_from(Dataset).where(where)) or 0
    sort = [(name, desc) for name, desc in query.sort if name != "score" or rank is not None]
    end = query.start + query.rows
    if sort and sort[0][0] == "score":
        # Relevance comes from the search index, not SQL: order the matched ids by its rank.
        ids = list(session.scalars(select(Dataset.id).where(where)))
        ids = sorted(ids, key=lambda i: rank.get(i, len(rank)))[query.start:end]
    else:
        order = [SORT_COLUMNS[n].desc() if d else SORT_COLUMNS[n].asc() for n, d in sort]
        stmt = (select(Dataset.id).where(where).order_by(*order, Dataset.id)
                .offset(query.start).limit(query.rows))
        ids = list(session.scalars(stmt)) if query.rows else []
    facets = _facets(session, where, query) if query.facet_fields else {}
    return Found(count, ids, facets)


def _facets(session, where, query: SearchQuery) -> dict[str, list[tuple[str, int]]]:
    wanted = {name: FACET_FIELDS.get(name) for name in query.facet_fields}
    internal = sorted({f for f in wanted.values() if f})
    counts: dict[str, list[tuple[str, int]]] = {f: [] for f in internal}
    if internal:
        stmt = (select(search_facet.c.field, search_facet.c.value, func.count())
                .where(search_facet.c.field.in_(internal),
                       search_facet.c.dataset_id.in_(select(Dataset.id).where(where)))
                .group_by(search_facet.c.field, search_facet.c.value))
        for f, value, n in session.execute(stmt):
            counts[f].append((value, n))
    out = {}
    for name, f in wanted.items():
        items = sorted(counts.get(f, []), key=lambda vn: (-vn[1], vn[0])) if f else []
        out[name] = items if query.facet_limit is None else items[:query.facet_limit]
    return out


def format_spellings(session) -> dict[str, str]:
    """Upper-cased format (as the search index keeps it) → the spelling the package dicts'
    resources use: ours for the translated downloads, else the most common harvested one."""
    from catalog.api.ckan_dicts import DOWNLOADS, OGC_FORMAT
    seen: dict[str, dict[str, int]] = {}
    for fmt, n in session.execute(select(Resource.format, func.count())
                                  .where(Resource.format.is_not(None)).group_by(Resource.format)):
        key = facet_value("res_format", fmt)
        seen.setdefault(key, {})[fmt.strip()] = n
    out = {key: max(forms, key=lambda f: (forms[f], f)) for key, forms in seen.items()}
    for fmt in [d[0] for d in DOWNLOADS.values()] + [OGC_FORMAT]:
        out[facet_value("res_format", fmt)] = fmt
    return out


def facet_dicts(session, facets: dict[str, list[tuple[str, int]]]) -> tuple[dict, dict]:
    """CKAN's two shapes: `facets` {field: {value: n}} (the top values by count, as Solr gives
    them) and `search_facets`, whose items CKAN's package_search sorts by display name,
    descending. Formats are spelt as the resources spell them."""
    titles = {}
    if "organization" in facets or "owner_org" in facets:
        titles = {o.id: o.name_ja for o in session.scalars(select(Organization))}
    if "res_format" in facets:
        spelling = format_spellings(session)
        facets = {**facets, "res_format": [(spelling.get(v, v), n)
                                           for v, n in facets["res_format"]]}
    plain, rich = {}, {}
    for name, items in facets.items():
        plain[name] = {v: n for v, n in items}
        shown = [{"name": v, "display_name": titles.get(v, v)
                  if name in ("organization", "owner_org") else v, "count": n} for v, n in items]
        rich[name] = {"title": name, "items": sorted(shown, key=lambda i: i["display_name"],
                                                     reverse=True)}
    return plain, rich


def all_tags(session, where_readable) -> list[str]:
    active = select(Dataset.id).where(Dataset.status == "active", where_readable)
    stmt = (select(search_facet.c.value).distinct()
            .where(search_facet.c.field == "tags", search_facet.c.dataset_id.in_(active))
            .order_by(search_facet.c.value))
    return list(session.scalars(stmt))
