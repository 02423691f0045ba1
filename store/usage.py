"""Usage of the open APIs: one event per response, monthly roll-ups, quota notices.

Events are appended in batches (catalog.metering collects them off the request path);
`rollup(month)` recomputes that month's totals per owner organization, consumer organization,
dataset and interface from the events, so it can be rerun at any time and agrees with them.
An empty string stands for "none" in the roll-up keys (anonymous consumer, no dataset), so the
key columns stay NOT NULL on both SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (BigInteger, DateTime, Float, Integer, String, delete, func, insert,
                        select)
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, utcnow

INTERFACES = ("ogcapi", "tiles", "ckan", "download", "dcat", "hazards")


class UsageEvent(Base):
    __tablename__ = "usage_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    token_id: Mapped[int | None] = mapped_column(Integer, index=True)   # None: no token
    user_id: Mapped[int | None] = mapped_column(Integer)
    consumer_org: Mapped[str | None] = mapped_column(String(100))
    dataset_id: Mapped[str | None] = mapped_column(String(200))
    owner_org: Mapped[str | None] = mapped_column(String(100))
    interface: Mapped[str] = mapped_column(String(20))
    status: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    features: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)


class UsageMonthly(Base):
    __tablename__ = "usage_monthly"
    month: Mapped[str] = mapped_column(String(7), primary_key=True)          # YYYY-MM
    owner_org: Mapped[str] = mapped_column(String(100), primary_key=True)
    consumer_org: Mapped[str] = mapped_column(String(100), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    interface: Mapped[str] = mapped_column(String(20), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    features: Mapped[int] = mapped_column(Integer, default=0)


class QuotaNotice(Base):
    """A warning already sent (token, month, level %), so each is mailed once."""
    __tablename__ = "quota_notice"
    token_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# Fees, quotas and the days of the usage chart follow the Japanese calendar: a month or a day
# starts at midnight in Japan (UTC+9, no daylight saving). Events are stored in UTC.
JST = timedelta(hours=9)


def current_month() -> str:
    """YYYY-MM of the month in progress in Japan."""
    return (utcnow() + JST).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The month's first and next month's first instants (midnight in Japan), as stored: UTC."""
    start = datetime.strptime(month + "-01", "%Y-%m-%d")
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else \
        start.replace(month=start.month + 1)
    return start - JST, end - JST


def write_events(engine, events: list[dict]) -> None:
    """One multi-row INSERT in one transaction for a whole batch."""
    if events:
        with engine.begin() as conn:
            conn.execute(insert(UsageEvent), events)


def rollup(session, month: str) -> int:
    """Recompute the month's roll-up rows from its events; returns how many rows."""
    start, end = month_bounds(month)
    session.execute(delete(UsageMonthly).where(UsageMonthly.month == month))
    key = (func.coalesce(UsageEvent.owner_org, ""), func.coalesce(UsageEvent.consumer_org, ""),
           func.coalesce(UsageEvent.dataset_id, ""), UsageEvent.interface)
    rows = session.execute(
        select(*key, func.count(), func.sum((UsageEvent.status >= 400).cast(Integer)),
               func.coalesce(func.sum(UsageEvent.bytes), 0),
               func.coalesce(func.sum(UsageEvent.features), 0))
        .where(UsageEvent.at >= start, UsageEvent.at < end).group_by(*key)).all()
    for owner, consumer, dataset, interface, n, errors, nbytes, features in rows:
        session.add(UsageMonthly(month=month, owner_org=owner, consumer_org=consumer,
                                 dataset_id=dataset, interface=interface, requests=n,
                                 errors=errors or 0, bytes=int(nbytes), features=int(features)))
    return len(rows)


def monthly_rows(session, month: str) -> list[UsageMonthly]:
    return list(session.scalars(select(UsageMonthly).where(UsageMonthly.month == month)
                                .order_by(UsageMonthly.owner_org, UsageMonthly.dataset_id,
                                          UsageMonthly.consumer_org, UsageMonthly.interface)))


def daily(session, month: str, organization_id: str | None) -> list[tuple[str, int, int, int]]:
    """(day, requests, bytes, features) of the month for data owned by or used by an
    organization (None: all)."""
    start, end = month_bounds(month)
    # Grouped by UTC hour in SQL (text prefix, any database), then hours folded into Japanese
    # days here: at most 24 × 31 groups cross the wire.
    hour = func.substr(func.cast(UsageEvent.at, String), 1, 13)
    stmt = (select(hour, func.count(), func.coalesce(func.sum(UsageEvent.bytes), 0),
                   func.coalesce(func.sum(UsageEvent.features), 0))
            .where(UsageEvent.at >= start, UsageEvent.at < end).group_by(hour))
    if organization_id is not None:
        stmt = stmt.where((UsageEvent.owner_org == organization_id)
                          | (UsageEvent.consumer_org == organization_id))
    days: dict[str, list[int]] = {}
    for h, n, b, f in session.execute(stmt):
        day = (datetime.strptime(h[:13].replace("T", " "), "%Y-%m-%d %H") + JST).date().isoformat()
        sums = days.setdefault(day, [0, 0, 0])
        sums[0] += n
        sums[1] += int(b)
        sums[2] += int(f)
    return [(d, *days[d]) for d in sorted(days)]


def token_requests(session, token_id: int, month: str) -> int:
    start, end = month_bounds(month)
    return session.scalar(select(func.count()).where(
        UsageEvent.token_id == token_id, UsageEvent.at >= start, UsageEvent.at < end)) or 0


def claim_notice(session, token_id: int, month: str, level: int) -> bool:
    """True once per (token, month, level), also across processes (primary key)."""
    from sqlalchemy.exc import IntegrityError
    try:
        with session.begin_nested():
            session.add(QuotaNotice(token_id=token_id, month=month, level=level))
        return True
    except IntegrityError:
        return False
