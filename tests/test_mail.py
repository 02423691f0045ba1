"""Outgoing mail through the outbox (catalog.mail, store.outbox), in both modes, against a real
SMTP server on 127.0.0.1: a message is queued with the decision it reports and delivered after
the commit; a delivery that fails is recorded on its row and logged, never lost, and `renkei
mail send` delivers it later; without SMTP the embedded mode writes `.eml` files and
PostgreSQL mode keeps the message in the database for the operator (`mail outbox`, `show`)."""
from __future__ import annotations

import logging

import pytest
import requests
from sqlalchemy import select

from catalog import mail
from store import outbox
from store.db import Store
from store.outbox import MailMessage
from tests.platform_world import cli, csrf, link_in, outbox as sent_mail
from tests.servers import free_port, live_server
from tests.smtp_server import smtp_server

SUBJECT = "【renkei】参加申請を受け付けました / application to join received"


def _rows(store) -> list[MailMessage]:
    with store.session() as s:
        return list(s.scalars(select(MailMessage).order_by(MailMessage.id)))


def _apply(base: str, email_: str = "joho@town.taka.example") -> requests.Response:
    s = requests.Session()
    form = {"name_ja": "テスト協会", "slug": "test-kyokai", "kind": "partner",
            "name": "多可 太郎", "email": email_, "accept_terms": "y",
            "csrf_token": csrf(s, base + "/join/organization")}
    return s.post(base + "/join/organization", data=form, timeout=30)


def test_smtp_delivery_keeps_the_envelope_not_the_body(tmp_path, monkeypatch):
    store = Store(tmp_path)
    with smtp_server() as (url, inbox):
        monkeypatch.setenv("RENKEI_SMTP_URL", url)
        (outcome,) = mail.send(store, "taro@example.jp", "件名です", "本文です。\nリンク: x")
    assert outcome.status == "sent"
    (got,) = inbox.to("taro@example.jp")
    assert got["Subject"] == "件名です" and "本文です。" in got.get_body(("plain",)).get_content()
    (row,) = _rows(store)
    assert (row.status, row.delivery, row.attempts, row.message) == ("sent", "smtp", 1, None)
    assert row.recipient == "taro@example.jp" and row.sent_at is not None
    assert not (tmp_path / "outbox").exists()   # SMTP configured: no files in either mode


def test_a_failed_delivery_is_recorded_and_sent_later(tmp_path, monkeypatch, caplog):
    """The applicant's request succeeds (the application and its mail are committed); the SMTP
    failure is on the row and in the log; `renkei mail send` delivers it once SMTP is back."""
    from catalog.app import create_app
    store = Store(tmp_path)
    down = f"smtp://127.0.0.1:{free_port()}"   # nothing listens there
    monkeypatch.setenv("RENKEI_SMTP_URL", down)
    with live_server(create_app(tmp_path)) as base, caplog.at_level(logging.ERROR):
        r = _apply(base)
    assert r.status_code == 200 and "受け付けました" in r.text
    assert any("not delivered" in rec.getMessage() and "outbox" in rec.getMessage()
               for rec in caplog.records)
    (row,) = _rows(store)
    assert (row.status, row.attempts, row.recipient) == ("failed", 1, "joho@town.taka.example")
    assert row.last_error.startswith("ConnectionRefusedError") and row.message

    listed = cli(tmp_path, "mail", "outbox", "--status", "failed")
    assert listed.returncode == 0
    assert f"{row.id:>6} failed" in listed.stdout and "ConnectionRefusedError" in listed.stdout
    again = cli(tmp_path, "mail", "send")   # still down: still failed, the attempt counted
    assert again.returncode == 1 and f"mail {row.id}: failed: ConnectionRefusedError" \
        in again.stdout
    assert _rows(store)[0].attempts == 2

    with smtp_server() as (url, inbox):
        monkeypatch.setenv("RENKEI_SMTP_URL", url)
        done = cli(tmp_path, "mail", "send")
        assert done.returncode == 0 and f"mail {row.id}: sent" in done.stdout
        assert cli(tmp_path, "mail", "send").stdout == ""   # nothing left: sent once
    (got,) = inbox.to("joho@town.taka.example")
    assert got["Subject"] == SUBJECT
    status = link_in(got, "status")   # the private link in it works
    assert create_app(tmp_path).test_client().get(status).status_code == 200
    row = _rows(store)[0]
    assert (row.status, row.attempts, row.last_error, row.message) == ("sent", 3, None, None)


def test_a_refused_recipient_is_a_failure(tmp_path, monkeypatch):
    store = Store(tmp_path)
    with smtp_server(refuse=("nobody@example.jp",)) as (url, inbox):
        monkeypatch.setenv("RENKEI_SMTP_URL", url)
        (outcome,) = mail.send(store, "nobody@example.jp", "件名", "本文")
    assert outcome.status == "failed" and "SMTPRecipientsRefused" in outcome.error
    assert inbox.received == [] and _rows(store)[0].status == "failed"


def test_one_message_is_claimed_once(tmp_path):
    """Two servers (or a server and `mail send`) delivering the same row: one gets it."""
    store = Store(tmp_path)
    with store.session() as s, s.begin():
        message_id = mail.queue(s, "a@example.jp", "件名", "本文")
    first = outbox.claim(store.engine, message_id)
    assert first is not None and first.attempts == 1 and b"a@example.jp" in first.message
    assert outbox.claim(store.engine, message_id) is None
    assert outbox.claim(store.engine, message_id, retry_failed=True) is None


def test_a_message_is_queued_with_its_transaction_or_not_at_all(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.session() as s, s.begin():
            mail.queue(s, "a@example.jp", "件名", "本文")
            raise RuntimeError("the decision failed")
    assert _rows(store) == []


@pytest.mark.embedded_only(reason="the data dir's outbox/ folder is the embedded mode's")
def test_without_smtp_the_embedded_mode_writes_eml_files(tmp_path):
    store = Store(tmp_path)
    (outcome,) = mail.send(store, "a@example.jp", "件名です", "本文です。")
    assert outcome.status == "sent"
    (row,) = _rows(store)
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    assert row.delivery == f"outbox/{eml.name}" and row.message is None
    (msg,) = sent_mail(tmp_path)
    assert msg["Subject"] == "件名です" and msg["To"] == "a@example.jp"
    assert cli(tmp_path, "mail", "send").returncode == 0   # nothing left to deliver


@pytest.mark.pg_only(reason="without SMTP, PostgreSQL mode keeps the mail in the database")
def test_without_smtp_postgresql_mode_keeps_mail_for_the_operator(tmp_path):
    store = Store(tmp_path)
    (outcome,) = mail.send(store, "a@example.jp", "件名です", "本文です。\n二行目")
    assert outcome.status == "queued"
    (row,) = _rows(store)
    assert (row.status, row.attempts) == ("queued", 0) and not (tmp_path / "outbox").exists()
    listed = cli(tmp_path, "mail", "outbox")
    assert f"{row.id:>6} queued" in listed.stdout and "件名です" in listed.stdout
    shown = cli(tmp_path, "mail", "show", str(row.id))
    assert shown.returncode == 0 and "To: a@example.jp" in shown.stdout
    assert shown.stdout.rstrip().endswith("本文です。\n二行目")
    refused = cli(tmp_path, "mail", "send")
    assert refused.returncode == 2 and "RENKEI_SMTP_URL is not set" in refused.stderr
    assert _rows(store)[0].status == "queued"
    assert cli(tmp_path, "mail", "show", "999").returncode == 2



def test_purge_deletes_only_delivered_mail_older_than_asked(tmp_path, monkeypatch):
    """`renkei mail purge`: the outbox does not grow forever, and mail nobody has had yet
    (queued, failed) stays whatever its age."""
    from datetime import timedelta

    from sqlalchemy import update

    from store.base import utcnow
    store = Store(tmp_path)
    with smtp_server() as (url, _inbox):
        monkeypatch.setenv("RENKEI_SMTP_URL", url)
        for to in ("old@example.jp", "recent@example.jp", "fresh@example.jp"):
            assert mail.send(store, to, "件名", "本文")[0].status == "sent"
    monkeypatch.setenv("RENKEI_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")   # down
    assert mail.send(store, "failed@example.jp", "件名", "本文")[0].status == "failed"
    with store.session() as s, s.begin():
        queued = mail.queue(s, "queued@example.jp", "件名", "本文")
    ids = {r.recipient: r.id for r in _rows(store)}
    long_ago = utcnow() - timedelta(days=400)
    with store.engine.begin() as conn:   # what a year of use leaves: old rows in every state
        for who, age in (("old", 400), ("recent", 40), ("failed", 400), ("queued", 400)):
            conn.execute(update(MailMessage).where(MailMessage.id == ids[f"{who}@example.jp"])
                         .values(created_at=long_ago,
                                 sent_at=utcnow() - timedelta(days=age)
                                 if who in ("old", "recent") else None))
    done = cli(tmp_path, "mail", "purge")                     # 90 days by default
    assert done.returncode == 0 and done.stdout.strip().endswith(": 1"), done
    assert {r.recipient for r in _rows(store)} == {
        "recent@example.jp", "fresh@example.jp", "failed@example.jp", "queued@example.jp"}
    assert cli(tmp_path, "mail", "purge", "--older-than", "30").stdout.strip().endswith(": 1")
    assert cli(tmp_path, "mail", "purge", "--older-than", "0").stdout.strip().endswith(": 1")
    left = {r.recipient: r.status for r in _rows(store)}
    assert left == {"failed@example.jp": "failed", "queued@example.jp": "queued"}
    assert ids["queued@example.jp"] == queued
    assert cli(tmp_path, "mail", "purge", "--older-than", "-1").returncode == 2
    # `db sweep` is about feature tables: it leaves the outbox alone.
    assert cli(tmp_path, "db", "sweep").returncode == 0 and len(_rows(store)) == 2
