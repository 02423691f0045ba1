"""Files members uploaded, kept as sent for their download route — in PostgreSQL mode, where
no web server has a data dir to keep them in (the embedded mode keeps them as files beside the
catalogue: harvesters.upload).

A file is a row of `upload_original` (its name and size) and its bytes in `upload_chunk`
rows of CHUNK bytes, written in one transaction: a replacement is whole or not at all, and the
previous file serves until it commits. A download reads inside one REPEATABLE READ
transaction, so a replacement committing mid-stream does not tear it (the old rows stay
visible to that snapshot); a byte range reads only the chunks it overlaps.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text, delete, insert, \
    select
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, utcnow

CHUNK = 1024 * 1024


class UploadOriginal(Base):
    __tablename__ = "upload_original"
    resource_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    filename: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    stored_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class UploadChunk(Base):
    __tablename__ = "upload_chunk"
    resource_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


def put(engine, resource_id: str, path: Path, filename: str) -> None:
    """Store (or replace) a resource's original from a staged file, read CHUNK at a time."""
    size = 0
    with engine.begin() as conn:
        _delete(conn, resource_id)
        with open(path, "rb") as fh:
            seq = 0
            while True:
                data = fh.read(CHUNK)
                if not data:
                    break
                conn.execute(insert(UploadChunk), {"resource_id": resource_id, "seq": seq,
                                                   "data": data})
                seq, size = seq + 1, size + len(data)
        conn.execute(insert(UploadOriginal), {"resource_id": resource_id, "filename": filename,
                                              "size": size, "stored_at": utcnow()})


def remove(engine, resource_id: str) -> None:
    with engine.begin() as conn:
        _delete(conn, resource_id)


def _delete(conn, resource_id: str) -> None:
    conn.execute(delete(UploadChunk).where(UploadChunk.resource_id == resource_id))
    conn.execute(delete(UploadOriginal).where(UploadOriginal.resource_id == resource_id))


class Original:
    """One stored file, opened for a download: `filename`, `size`, `stored_at`, then read as a
    binary file (`read`, `seek`, `tell`), so a byte range costs the chunks it overlaps and no
    others. `close()` ends the snapshot; the download's response calls it when it is done (or
    never sent)."""

    def __init__(self, engine, resource_id: str):
        self.resource_id = resource_id
        self._pos, self._seq, self._data = 0, None, b""   # the chunk read last, and its seq
        self._conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
        try:
            row = self._conn.execute(select(UploadOriginal.filename, UploadOriginal.size,
                                            UploadOriginal.stored_at)
                                     .where(UploadOriginal.resource_id == resource_id)).first()
            if row is None:
                raise LookupError(resource_id)
            self.filename, self.size, self.stored_at = row
        except BaseException:
            self.close()
            raise

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """At most `n` bytes from the position, and never past the end of its chunk (a short
        read, as a socket's: callers loop until b"")."""
        if self._pos >= self.size:
            return b""
        seq, at = divmod(self._pos, CHUNK)
        if seq != self._seq:
            data = self._conn.execute(select(UploadChunk.data).where(
                UploadChunk.resource_id == self.resource_id, UploadChunk.seq == seq)).scalar()
            self._seq, self._data = seq, bytes(data or b"")
        out = self._data[at:] if n is None or n < 0 else self._data[at:at + n]
        self._pos += len(out)
        return out

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            finally:
                self._conn.close()
                self._conn = None


def open_original(engine, resource_id: str) -> Original | None:
    try:
        return Original(engine, resource_id)
    except LookupError:
        return None
