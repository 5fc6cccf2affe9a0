"""The marks the Conversations API leaves on a conversation (service/app/items.py): its metadata
set anew, its tombstone, the messages hidden from its item list."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from service.store.events import Tx


class Marks(msgspec.Struct, frozen=True):
    deleted: bool
    hidden: frozenset[uuid.UUID]


async def set_metadata(tx: Tx, tenant: str, conversation_id: uuid.UUID, metadata: dict[str, Any]) -> None:
    await tx.run(
        "set_conversation_metadata",
        tenant=tenant,
        conversation_id=conversation_id,
        metadata=msgspec.json.encode(metadata).decode(),
    )


async def marks(tx: Tx, tenant: str, conversation_id: uuid.UUID) -> Marks:
    found = await tx.rows("conversation_marks", tenant=tenant, conversation_id=conversation_id)
    return Marks(
        deleted=any(row["type"] == "conversation_deleted" for row in found),
        hidden=frozenset(row["message_id"] for row in found if row["type"] == "message_hidden"),
    )
