"""Outgoing mail: SMTP when RENKEI_SMTP_URL is set (smtp://[user:pass@]host[:port], or smtps://),
else one RFC 5322 `.eml` file per message under `<data dir>/outbox/` (the demo and the tests
read them there). Messages are built with the standard library's `email` package."""
from __future__ import annotations

import os
import smtplib
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

SENDER = "renkei <noreply@renkei.invalid>"


def build(to: str, subject: str, body: str, sender: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender or os.environ.get("RENKEI_MAIL_FROM") or SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain="renkei.invalid")
    msg.set_content(body, charset="utf-8")
    return msg


def send(data_dir: Path | str, to: str, subject: str, body: str) -> None:
    msg = build(to, subject, body)
    url = os.environ.get("RENKEI_SMTP_URL")
    if url:
        _smtp(url, msg)
        return
    outbox = Path(data_dir) / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    name = f"{_stamp()}-{uuid.uuid4().hex[:12]}.eml"
    tmp = outbox / (name + ".part")
    tmp.write_bytes(bytes(msg))
    tmp.rename(outbox / name)   # readers never see half a message


def send_notices(data_dir: Path | str, notices) -> None:
    for n in notices:
        send(data_dir, n.to, n.subject, n.body)


def _stamp() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")


def _smtp(url: str, msg: EmailMessage) -> None:
    parts = urlsplit(url)
    cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    with cls(parts.hostname or "127.0.0.1", parts.port or (465 if cls is smtplib.SMTP_SSL
                                                            else 25), timeout=30) as smtp:
        if parts.scheme == "smtp+starttls":
            smtp.starttls()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(msg)
