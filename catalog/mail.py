"""Outgoing mail, through the outbox table (store.outbox): a message is queued in the caller's
transaction (`queue`), then delivered once that has committed (`deliver`):

- with RENKEI_SMTP_URL (smtp://[user:pass@]host[:port], smtps://, smtp+starttls://): by SMTP;
- else in the embedded mode: one RFC 5322 `.eml` file per message under `<data dir>/outbox/`
  (the demo and a town read them there);
- else (PostgreSQL mode, no SMTP): it stays queued in the database, where every stateless
  server puts it, until the operator reads it (`renkei mail outbox`, `mail show`) or delivers
  it (`renkei mail send`, once SMTP is configured).

A failed delivery is recorded on the row (status `failed`, the error, the attempt count) and
logged; `renkei mail send` retries it. The request that queued it still succeeds: its decision
is committed and its mail is safe in the outbox. Messages are built with the standard library's
`email` package.
"""
from __future__ import annotations

import logging
import os
import smtplib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from store import outbox

SENDER = "renkei <noreply@renkei.invalid>"
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    id: int
    status: str            # sent | failed | queued (no way to deliver it here) | skipped
    error: str | None = None


def build(to: str, subject: str, body: str, sender: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender or os.environ.get("RENKEI_MAIL_FROM") or SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="renkei.invalid")
    msg.set_content(body, charset="utf-8")
    return msg


def queue(session, to: str, subject: str, body: str) -> int:
    """Add a message to the outbox inside the caller's transaction; its id, for `deliver`."""
    return outbox.add(session, to, subject, bytes(build(to, subject, body))).id


def queue_notices(session, notices) -> list[int]:
    return [queue(session, n.to, n.subject, n.body) for n in notices]


def transport(store) -> str | None:
    """How this process delivers: 'smtp', 'folder' (embedded mode), or None (it stays queued)."""
    if os.environ.get("RENKEI_SMTP_URL"):
        return "smtp"
    return None if store.postgresql else "folder"


def deliver(store, ids, *, retry_failed: bool = False) -> list[Outcome]:
    """Deliver these outbox rows (after the transaction that queued them has committed). Never
    raises for a failed delivery: the failure is on the row, logged, and in the outcome."""
    how = transport(store)
    if how is None:
        return [Outcome(i, "queued") for i in ids]
    outcomes = []
    for message_id in ids:
        row = outbox.claim(store.engine, message_id, retry_failed=retry_failed)
        if row is None:   # another process has it, or it is done
            outcomes.append(Outcome(message_id, "skipped"))
            continue
        try:
            where = _smtp(os.environ["RENKEI_SMTP_URL"], row.message) if how == "smtp" \
                else _to_folder(store.data_dir, row.message)
        except Exception as exc:   # noqa: BLE001 (any failure is recorded, none swallowed)
            error = f"{exc.__class__.__name__}: {exc}"
            outbox.mark_failed(store.engine, message_id, error)
            LOGGER.error("mail %s not delivered (attempt %s): %s; it stays in the outbox for "
                         "`renkei mail send`", message_id, row.attempts, exc.__class__.__name__)
            outcomes.append(Outcome(message_id, "failed", error))
        else:
            outbox.mark_sent(store.engine, message_id, where)
            outcomes.append(Outcome(message_id, "sent"))
    return outcomes


def send(store, to: str, subject: str, body: str) -> list[Outcome]:
    """Queue one message in a transaction of its own, then deliver it."""
    with store.session() as s, s.begin():
        message_id = queue(s, to, subject, body)
    return deliver(store, [message_id])


def _stamp() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")


def _to_folder(data_dir: Path | str, message: bytes) -> str:
    folder = Path(data_dir) / "outbox"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{_stamp()}-{uuid.uuid4().hex[:12]}.eml"
    tmp = folder / (name + ".part")
    tmp.write_bytes(message)
    tmp.rename(folder / name)   # readers never see half a message
    return f"outbox/{name}"


def _smtp(url: str, message: bytes) -> str:
    import email
    from email import policy
    msg = email.message_from_bytes(message, policy=policy.SMTP)
    parts = urlsplit(url)
    cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    with cls(parts.hostname or "127.0.0.1", parts.port or (465 if cls is smtplib.SMTP_SSL
                                                            else 25), timeout=30) as smtp:
        if parts.scheme == "smtp+starttls":
            smtp.starttls()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        refused = smtp.send_message(msg)
    if refused:   # some recipients refused: not delivered to them
        raise smtplib.SMTPRecipientsRefused(refused)
    return "smtp"


def summary(outcomes: list[Outcome]) -> str:
    """`2 mail(s) sent`, or what happened to each that was not (for the CLI)."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    words = {"sent": "sent", "queued": "queued in the outbox (no RENKEI_SMTP_URL here; "
             "see `renkei mail outbox`)", "failed": "FAILED (kept in the outbox; see "
             "`renkei mail outbox --status failed`)", "skipped": "taken by another process"}
    return "; ".join(f"{n} mail(s) {words[s]}" for s, n in counts.items()) or "no mail"
