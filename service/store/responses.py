"""The Responses API's responses: the `responses` rows (schema.sql explains what they hold and why
the rest of a response is read from the log)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # Tx's writers (store/appends.py) write a response's row with its turn: for types only
    from service.store.events import Tx


class ResponseRow(msgspec.Struct, frozen=True, kw_only=True):
    """A response as stored: where its messages are, and what its request asked (`request`: JSON,
    which service/app/responses reads)."""

    response_id: uuid.UUID
    family_id: uuid.UUID
    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None
    input_ids: list[uuid.UUID]
    previous_response_id: uuid.UUID | None
    in_conversation: bool
    model: str
    request: bytes
    store: bool
    deleted_at: datetime | None = None
    created_at: datetime | None = None
    next_response_ids: list[uuid.UUID] = []


def written_with(
    row: ResponseRow | None, reply_id: uuid.UUID, family_id: uuid.UUID, conversation_id: uuid.UUID
) -> dict[str, Any]:
    """The parameters of queries.sql's part record_response: `row` written by the statement that
    writes its turn (whose reply, family and conversation are the response's), or none."""
    if row is None:
        return dict.fromkeys(_RESPONSE_PARAMS)
    turn = (reply_id, family_id, conversation_id)
    assert (row.response_id, row.family_id, row.conversation_id) == turn, "a response's ids are its turn's"
    return {
        "response_parent_id": row.parent_id,
        "response_input_ids": row.input_ids,
        "previous_response_id": row.previous_response_id,
        "in_conversation": row.in_conversation,
        "response_model": row.model,
        "response_request": row.request,
        "response_store": row.store,
    }


_RESPONSE_PARAMS = (
    "response_parent_id", "response_input_ids", "previous_response_id", "in_conversation",
    "response_model", "response_request", "response_store",
)  # fmt: skip


async def get(tx: Tx, tenant: str, response_id: uuid.UUID) -> ResponseRow | None:
    found = await tx.row("get_response", tenant=tenant, response_id=response_id)
    if found is None:
        return None
    return ResponseRow(**{**dict(found), "input_ids": list(found["input_ids"]), "next_response_ids": list(found["next_response_ids"])})


async def delete(tx: Tx, tenant: str, response_id: uuid.UUID) -> bool:
    return await tx.value_or_none("delete_response", uuid.UUID, tenant=tenant, response_id=response_id) is not None


async def turn_failure(tx: Tx, conversation_id: uuid.UUID, reply_id: uuid.UUID) -> tuple[str, str] | None:
    """(kind, detail) of the failure of the turn `reply_id` answers, if it failed."""
    found = await tx.row("find_turn_failure", conversation_id=conversation_id, reply_id=str(reply_id))
    return None if found is None else (found["error"] or "failed", found["detail"] or "")


async def referenced(
    tx: Tx, tenant: str, family_id: uuid.UUID | None, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """The conversation that wrote each of `message_ids` the tenant has (item_reference): looked
    for in `family_id` first (if given), then in the tenant's whole log."""
    found: dict[uuid.UUID, uuid.UUID] = {}
    if family_id is not None:
        rows = await tx.rows("find_referenced_in_family", tenant=tenant, family_id=family_id, message_ids=message_ids)
        found.update((row["message_id"], row["conversation_id"]) for row in rows)
    missing = [m for m in message_ids if m not in found]
    if missing:
        rows = await tx.rows("find_referenced_in_tenant", tenant=tenant, message_ids=missing)
        found.update((row["message_id"], row["conversation_id"]) for row in rows)
    return found
