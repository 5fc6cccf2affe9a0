"""Replies in flight: the `pending_replies` rows every server process sees (schema.sql explains why)."""

from __future__ import annotations

import uuid

import msgspec

from service.store.events import Store, Tx
from service.store.queries import Q


class PendingReply(msgspec.Struct, frozen=True, kw_only=True):
    family_id: uuid.UUID
    reply_id: uuid.UUID
    tenant: str
    conversation_id: uuid.UUID
    user_message_id: uuid.UUID
    provider: str
    model: str
    actor: str
    request_id: str | None


async def register(
    tx: Tx, reply: PendingReply, owner: uuid.UUID, lease_seconds: float, around: uuid.UUID | None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Register `reply` as pending; return (reply id, user message id) of the replies that were
    already pending and are `around` or answer it."""
    rows = await tx.conn.fetch(
        Q["register_pending_reply"],
        reply.family_id,
        reply.reply_id,
        reply.tenant,
        reply.conversation_id,
        reply.user_message_id,
        reply.provider,
        reply.model,
        reply.actor,
        reply.request_id,
        owner,
        lease_seconds,
        around,
    )
    return [(r["reply_id"], r["user_message_id"]) for r in rows]


async def is_pending(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> bool:
    """Whether `reply_id` names a reply that is still being generated."""
    return bool(await tx.conn.fetchval(Q["is_pending_reply"], family_id, reply_id))


async def finish(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID, owner: uuid.UUID) -> bool:
    """Remove the owner's row; False if it was already closed out by a sweep."""
    return await tx.conn.fetchval(Q["finish_pending_reply"], family_id, reply_id, owner) is not None


async def expire(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> bool:
    """Remove a row whose lease ran out; False if its owner finished it (or another sweep took it)."""
    return await tx.conn.fetchval(Q["expire_pending_reply"], family_id, reply_id) is not None


async def renew(store: Store, owner: uuid.UUID, lease_seconds: float, reply_ids: list[uuid.UUID]) -> int:
    """Extend the leases of `reply_ids`, the replies `owner` is still working on."""
    async with store.reader() as tx:
        status = await tx.conn.execute(Q["renew_pending_leases"], owner, lease_seconds, reply_ids)
    return int(status.split()[-1])


async def expired(store: Store, limit: int) -> list[PendingReply]:
    async with store.reader() as tx:
        rows = await tx.conn.fetch(Q["expired_pending_replies"], limit)
    return [
        PendingReply(
            family_id=r["family_id"],
            reply_id=r["reply_id"],
            tenant=r["tenant"],
            conversation_id=r["conversation_id"],
            user_message_id=r["user_message_id"],
            provider=r["provider"],
            model=r["model"],
            actor=r["actor"],
            request_id=r["request_id"],
        )
        for r in rows
    ]
