"""The mail outbox: every message the platform sends is first a row here, added in the same
transaction as the decision it reports (an application received, accepted, an invitation, a
quota warning), so a crash between the two loses neither. catalog.mail delivers the rows
(SMTP, or the `.eml` folder of the embedded mode) and records the outcome on them.

A row is `queued` until a delivery claims it (`sending`); then `sent`, or `failed` with the
error and the attempt count, and a failed row stays for `renkei mail send` to retry. Claiming is
one conditional UPDATE, so two servers (or a server and the operator's `mail send`) never
deliver one row twice; a claim older than STALE_CLAIM (its process died mid-send) may be taken
again. Once delivered, a row keeps its envelope (recipient, subject, when, where) but not its
body: the links in it (status pages, invitations) are secrets the database otherwise keeps only
hashed. Delivered rows go when the operator purges them (`purge_sent`); a queued or failed row
is never purged, whatever its age: it is mail nobody has had yet.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (DateTime, Integer, LargeBinary, String, Text, delete, or_, select,
                        update)
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, utcnow

STALE_CLAIM = timedelta(minutes=10)
STATUSES = ("queued", "sending", "sent", "failed")


class MailMessage(Base):
    __tablename__ = "mail_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    recipient: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    message: Mapped[bytes | None] = mapped_column(LargeBinary)   # RFC 5322; None once delivered
    status: Mapped[str] = mapped_column(String(10), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    delivery: Mapped[str | None] = mapped_column(Text)    # smtp, or outbox/<file>.eml
    last_error: Mapped[str | None] = mapped_column(Text)  # for the operator's CLI only


def add(session, recipient: str, subject: str, message: bytes) -> MailMessage:
    row = MailMessage(recipient=recipient, subject=subject, message=message, status="queued",
                      attempts=0, created_at=utcnow())
    session.add(row)
    session.flush()   # its id, for the delivery after the commit
    return row


def claim(engine, message_id: int, *, retry_failed: bool = False) -> MailMessage | None:
    """Take one row for delivery; None if another process has it, or it is done."""
    now = utcnow()
    ready = [MailMessage.status == "queued",
             (MailMessage.status == "sending") & (MailMessage.claimed_at < now - STALE_CLAIM)]
    if retry_failed:
        ready.append(MailMessage.status == "failed")
    with engine.begin() as conn:
        taken = conn.execute(update(MailMessage).where(MailMessage.id == message_id, or_(*ready))
                             .values(status="sending", claimed_at=now,
                                     attempts=MailMessage.attempts + 1)).rowcount
        if not taken:
            return None
        row = conn.execute(select(MailMessage.__table__).where(MailMessage.id == message_id)
                           ).one()
    return MailMessage(**row._mapping)


def mark_sent(engine, message_id: int, delivery: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(MailMessage).where(MailMessage.id == message_id).values(
            status="sent", sent_at=utcnow(), delivery=delivery, message=None, last_error=None))


def mark_failed(engine, message_id: int, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(MailMessage).where(MailMessage.id == message_id).values(
            status="failed", last_error=error[:2000]))


def undelivered(session, *, retry_failed: bool = True, limit: int | None = None) -> list[int]:
    """Ids of the rows a delivery run should try, oldest first."""
    states = ["queued", "sending"] + (["failed"] if retry_failed else [])
    stmt = (select(MailMessage.id).where(MailMessage.status.in_(states))
            .order_by(MailMessage.id))
    if limit:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def listing(session, status: str | None = None, limit: int = 50) -> list[MailMessage]:
    stmt = select(MailMessage).order_by(MailMessage.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(MailMessage.status == status)
    return list(session.scalars(stmt))


def purge_sent(engine, older_than: timedelta) -> int:
    """Delete the rows delivered longer ago than `older_than`; how many went."""
    with engine.begin() as conn:
        return conn.execute(delete(MailMessage).where(
            MailMessage.status == "sent",
            MailMessage.sent_at < utcnow() - older_than)).rowcount
