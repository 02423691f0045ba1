"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, and can refuse
recipients: what `RENKEI_SMTP_URL` points at in the tests."""
from __future__ import annotations

import email
from contextlib import contextmanager
from email import policy

from aiosmtpd.controller import Controller

from tests.servers import free_port


class Inbox:
    def __init__(self, refuse: tuple[str, ...] = ()):
        self.refuse = set(refuse)
        self.received: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), email.message_from_bytes(
            envelope.original_content or envelope.content, policy=policy.default)))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for rcpts, m in self.received if address in rcpts]


@contextmanager
def smtp_server(refuse: tuple[str, ...] = ()):
    """Yields (smtp:// URL, Inbox)."""
    inbox = Inbox(refuse)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()
