"""Replies' progress while they are generated: the checkpoints of `reply_chunks` (schema.sql
explains why) and the cancel flag of `pending_replies`."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from service.store.events import Store, Tx


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """One checkpoint: the pieces it added (JSON, service/app/turn/progress.py reads it), and, on
    the first, what the reply's record needs beside them (`started`, JSON)."""

    chunk: int
    pieces: bytes
    started: bytes | None
    written_at: datetime


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    started_at: datetime
    expires_at: datetime
    cancel_requested: bool


async def checkpoint(
    store: Store,
    family_id: uuid.UUID,
    reply_id: uuid.UUID,
    owner: uuid.UUID,
    lease_seconds: float,
    chunk: int,
    pieces: bytes,
    started: bytes | None,
) -> bool | None:
    """Write checkpoint `chunk` and renew the lease, if `owner` still holds the reply (None if it
    does not); whether a cancel was asked."""
    async with store.reader() as tx:
        return await tx.value_or_none(
            "checkpoint_reply", bool, family_id=family_id, reply_id=reply_id, owner=owner,
            lease_seconds=lease_seconds, chunk=chunk, pieces=pieces, started=started,
        )  # fmt: skip


async def add(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID, chunk: int, pieces: bytes, started: bytes | None) -> None:
    await tx.run("add_reply_chunk", family_id=family_id, reply_id=reply_id, chunk=chunk, pieces=pieces, started=started)


async def chunks(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID, after_chunk: int = 0) -> list[Chunk]:
    found = await tx.rows("reply_chunks", family_id=family_id, reply_id=reply_id, after_chunk=after_chunk)
    return [Chunk(**dict(row)) for row in found]


async def drop(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> None:
    await tx.run("drop_reply_chunks", family_id=family_id, reply_id=reply_id)


async def request_cancel(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> uuid.UUID | None:
    """Ask the reply's owner to stop it; its owner, or None if it is no longer pending."""
    return await tx.value_or_none("request_reply_cancel", uuid.UUID, family_id=family_id, reply_id=reply_id)


async def pending_state(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> Pending | None:
    found = await tx.row("pending_reply_state", family_id=family_id, reply_id=reply_id)
    return None if found is None else Pending(**dict(found))
