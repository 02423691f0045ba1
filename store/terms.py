"""The 要綱: versioned terms of use with their fee rule and default limits.

The operator publishes a version with `renkei terms add FILE` (one YAML document, checked by
`parse`): it is stored in the catalogue database (`terms_version`), so in PostgreSQL mode every
stateless web server sees the same terms without a data dir. The embedded mode also reads one
YAML file per version under `<data dir>/terms/` (how a town has always added them); PostgreSQL
mode does not, so no server's disk can make it differ from the others. A published version is
never edited. Without any version the one shipped in `store/default_terms/` applies, so the demo
and a fresh catalogue have terms. The version in force on a day is the one with the latest
`effective` date not after it. Applications and API tokens record the version their holder
accepted (`TokenTerms` here; applications in their own table).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import yaml
from sqlalchemy import Date, DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, utcnow

DEFAULT_DIR = Path(__file__).resolve().parent / "default_terms"
RATE = re.compile(r"\d+\s*/\s*(second|minute|hour|day|month|year)")


class TermsError(ValueError):
    """A terms file the platform cannot use; the message names the file and the field."""


@dataclass(frozen=True)
class FeeRule:
    currency: str = "JPY"
    fixed_per_member: float = 0.0
    fixed_kinds: tuple[str, ...] = ("prefecture", "municipality", "partner")
    population_pool: float = 0.0
    population_exponent: float = 0.585
    per_1000_requests: float = 0.0
    per_gib_transferred: float = 0.0
    per_gib_stored: float = 0.0
    per_dataset: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__, fixed_kinds=list(self.fixed_kinds))


@dataclass(frozen=True)
class Terms:
    version: str
    effective: date
    title: dict[str, str]
    text: dict[str, str]
    fees: FeeRule
    rate_limit: str | None = None
    monthly_requests: int | None = None
    file: str = field(default="", compare=False)

    def localized(self, what: str, lang: str) -> str:
        values = getattr(self, what)
        return values.get(lang) or values.get("ja") or ""


class TermsVersion(Base):
    """A version the operator published with `renkei terms add`: its YAML, as given."""
    __tablename__ = "terms_version"
    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    effective: Mapped[date] = mapped_column(Date)
    file: Mapped[str] = mapped_column(String(200))   # the name it was added from (for messages)
    source: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TokenTerms(Base):
    """The terms version a token's holder accepted when it was issued."""
    __tablename__ = "token_terms"
    token_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    terms_version: Mapped[str] = mapped_column(String(40))
    recorded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def _number(raw: dict, key: str, name: str, default: float = 0.0) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise TermsError(f"{name}: {key} must be a number ≥ 0")
    return float(value)


def parse(text: str, name: str) -> Terms:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TermsError(f"{name}: not YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise TermsError(f"{name}: expected a mapping")
    version = str(raw.get("version") or "").strip()
    if not re.fullmatch(r"[0-9A-Za-z._-]{1,40}", version):
        raise TermsError(f"{name}: version must be 1-40 letters, digits, . _ -")
    effective = raw.get("effective")
    if isinstance(effective, str):
        try:
            effective = date.fromisoformat(effective)
        except ValueError:
            effective = None
    if not isinstance(effective, date):
        raise TermsError(f"{name}: effective must be a date (YYYY-MM-DD)")
    title, text_ = raw.get("title") or {}, raw.get("text") or {}
    if not isinstance(title, dict) or not isinstance(text_, dict) or not title.get("ja") \
            or not text_.get("ja"):
        raise TermsError(f"{name}: title and text need at least a Japanese (ja) version")
    fees = raw.get("fees") or {}
    pop = fees.get("population") or {}
    usage = fees.get("usage") or {}
    if not all(isinstance(x, dict) for x in (fees, pop, usage)):
        raise TermsError(f"{name}: fees, fees.population and fees.usage are mappings")
    kinds = fees.get("fixed_kinds", list(FeeRule.fixed_kinds))
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise TermsError(f"{name}: fees.fixed_kinds is a list of organization kinds")
    rule = FeeRule(
        currency=str(fees.get("currency") or "JPY"),
        fixed_per_member=_number(fees, "fixed_per_member", name),
        fixed_kinds=tuple(kinds),
        population_pool=_number(pop, "pool", name),
        population_exponent=_number(pop, "exponent", name, 0.585),
        per_1000_requests=_number(usage, "per_1000_requests", name),
        per_gib_transferred=_number(usage, "per_gib_transferred", name),
        per_gib_stored=_number(usage, "per_gib_stored", name),
        per_dataset=_number(usage, "per_dataset", name))
    limits = raw.get("limits") or {}
    rate = limits.get("rate")
    if rate is not None and not (isinstance(rate, str) and RATE.fullmatch(rate.strip())):
        raise TermsError(f"{name}: limits.rate looks like 1000/hour")
    monthly = limits.get("monthly_requests")
    if monthly is not None and (isinstance(monthly, bool) or not isinstance(monthly, int)
                                or monthly <= 0):
        raise TermsError(f"{name}: limits.monthly_requests is a whole number > 0")
    return Terms(version=version, effective=effective,
                 title={k: str(v) for k, v in title.items()},
                 text={k: str(v) for k, v in text_.items()}, fees=rule,
                 rate_limit=rate.strip() if rate else None, monthly_requests=monthly, file=name)


def terms_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "terms"


def _published(store) -> list[Terms]:
    """The versions the operator published: the database's, and the embedded mode's files."""
    with store.session() as s:
        rows = [(r.source, r.file) for r in s.scalars(select(TermsVersion))]
    versions = [parse(source, name) for source, name in rows]
    folder = terms_dir(store.data_dir)
    if not store.postgresql and folder.is_dir():
        versions += [parse(f.read_text(encoding="utf-8"), f.name)
                     for f in sorted(folder.glob("*.yaml"))]
    return versions


def load_all(store) -> list[Terms]:
    """Every version, oldest first; the shipped default when none is published."""
    versions = _published(store) or [parse(f.read_text(encoding="utf-8"), f.name)
                                     for f in sorted(DEFAULT_DIR.glob("*.yaml"))]
    seen: set[str] = set()
    for t in versions:
        if t.version in seen:
            raise TermsError(f"{t.file}: version {t.version} appears in two files")
        seen.add(t.version)
    return sorted(versions, key=lambda t: (t.effective, t.version))


def in_force(versions: list[Terms], on: date | None = None) -> Terms:
    on = on or utcnow().date()
    effective = [t for t in versions if t.effective <= on]
    return (effective or versions)[-1]


def current(store, on: date | None = None) -> Terms:
    return in_force(load_all(store), on)


def for_month(store, month: str) -> Terms:
    """The version in force on the first day of a month (YYYY-MM) — the fee rule of that month."""
    return current(store, date.fromisoformat(month + "-01"))


def by_version(store, version: str) -> Terms | None:
    return next((t for t in load_all(store) if t.version == version), None)


def add(store, text: str, name: str) -> Terms:
    """Publish one version (`renkei terms add`): the checks of a terms file, and a version
    published before (in the database or, embedded, as a file) is refused, never replaced."""
    from sqlalchemy.exc import IntegrityError
    terms = parse(text, name)
    clash = next((t for t in _published(store) if t.version == terms.version), None)
    if clash is not None:
        raise TermsError(f"{name}: version {terms.version} is already published (from "
                         f"{clash.file}); a published version is never edited: give the new "
                         "one a version of its own")
    try:
        with store.session() as s, s.begin():
            s.add(TermsVersion(version=terms.version, effective=terms.effective, file=name,
                               source=text, added_at=utcnow()))
    except IntegrityError:   # published by another operator a moment ago
        raise TermsError(f"{name}: version {terms.version} is already published") from None
    return terms


def record_token(session, token_id: int, version: str) -> None:
    session.merge(TokenTerms(token_id=token_id, terms_version=version))
