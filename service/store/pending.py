"""Replies in flight: the `pending_replies` rows every server process sees (schema.sql explains why)."""

from __future__ import annotations

import uuid

import msgspec

from service.store.events import Store, Tx


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
    found = await tx.rows(
        "register_pending_reply", **msgspec.structs.asdict(reply), owner=owner, lease_seconds=lease_seconds, around=around
    )
    return [(row["reply_id"], row["user_message_id"]) for row in found]


async def find(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> PendingReply | None:
    """The reply `reply_id`, if it is still being generated."""
    found = await tx.row("find_pending_reply", family_id=family_id, reply_id=reply_id)
    return None if found is None else PendingReply(**found)


class FailedTurn(msgspec.Struct, frozen=True, kw_only=True):
    """A turn that ended without a reply: its `turn_failed` event (why, and what it answered)."""

    kind: str
    detail: str
    user_message_id: uuid.UUID
    provider: str | None
    model: str | None


async def failed(tx: Tx, conversation_id: uuid.UUID, reply_id: uuid.UUID) -> FailedTurn | None:
    """The failure of the turn whose reply was to be `reply_id`, if it failed."""
    found = await tx.row("find_turn_failure", conversation_id=conversation_id, reply_id=str(reply_id))
    if found is None:
        return None
    return FailedTurn(
        kind=found["error"] or "failed", detail=found["detail"] or "",
        user_message_id=uuid.UUID(found["user_message_id"]), provider=found["provider"], model=found["model"],
    )  # fmt: skip


async def is_pending(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> bool:
    """Whether `reply_id` names a reply that is still being generated."""
    return bool(await tx.value("is_pending_reply", bool, family_id=family_id, reply_id=reply_id))


async def finish(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID, owner: uuid.UUID) -> bool:
    """Remove the owner's row; False if it was already closed out by a sweep."""
    return await tx.value_or_none("finish_pending_reply", uuid.UUID, family_id=family_id, reply_id=reply_id, owner=owner) is not None


async def expire(tx: Tx, family_id: uuid.UUID, reply_id: uuid.UUID) -> bool:
    """Remove a row whose lease ran out; False if its owner finished it (or another sweep took it)."""
    return await tx.value_or_none("expire_pending_reply", uuid.UUID, family_id=family_id, reply_id=reply_id) is not None


async def renew(store: Store, owner: uuid.UUID, lease_seconds: float, reply_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Extend the leases of `reply_ids`, the replies `owner` is still working on; returns those of
    them someone asked to cancel."""
    async with store.reader() as tx:
        found = await tx.rows("renew_pending_leases", owner=owner, lease_seconds=lease_seconds, reply_ids=reply_ids)
    return [row["reply_id"] for row in found if row["cancel_requested"]]


async def expired(store: Store, limit: int) -> list[PendingReply]:
    async with store.reader() as tx:
        found = await tx.rows("expired_pending_replies", limit=limit)
    return [PendingReply(**row) for row in found]  # by column name: the rows are pending_replies' own
