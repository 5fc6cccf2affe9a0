"""Checking a database for what convtree no longer accepts but an older version may have stored."""

from __future__ import annotations

import uuid

import msgspec

from service.store import history
from service.store.events import Store


class UnreadableEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event whose payload holds a `\\u0000` or a lone surrogate escape. It stays, hash and all;
    the database reads such an escape as its text, so the conversation works, but its summary
    (title, metadata) shows the escape spelled out where its event holds the character."""

    seq: int
    tenant: str
    conversation_id: uuid.UUID
    type: str


async def unreadable_events(store: Store) -> list[UnreadableEvent]:
    async with store.reader() as tx:
        rows = await history.unreadable_payloads(tx)
    return [
        UnreadableEvent(seq=r["seq"], tenant=r["tenant"], conversation_id=r["conversation_id"], type=r["type"])
        for r in rows
    ]
