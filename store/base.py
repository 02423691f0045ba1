"""The declarative base every catalogue table shares (store.db, store.accounts) and the clock
they stamp rows with: its own module so those two can both use it without importing each other."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass
