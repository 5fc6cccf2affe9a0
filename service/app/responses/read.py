"""Reading and deleting responses (the Responses API): a response's record and what the log says
of it (its reply, or why there is none), the context it was given, and its deletion, a redaction
of its messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from service.app.caller import Caller
from service.app.redact import redact
from service.domain import views
from service.domain.errors import ReplyInProgress, ResponseNotFound
from service.domain.redaction import RedactMessage
from service.domain.tree import Scope
from service.store import pending
from service.store import progress as checkpoints
from service.store import responses as stored
from service.store.events import Store, Tx

Status = Literal["in_progress", "completed", "failed", "incomplete", "cancelled"]

DELETED_REASON = "The response was deleted (DELETE /openai/v1/responses/{id})."


@dataclass(frozen=True)
class Found:
    """A stored response: its record, and what the log says of it. `reply`: the output (None while it
    is being generated, or when the turn failed: `failure`, its kind and detail)."""

    record: stored.ResponseRow
    status: Status
    reply: views.Message | None
    failure: tuple[str, str] | None = None


def status_of(reply: views.Message) -> Status:
    """A recorded reply is `completed`, or `incomplete` when it was cut short (by the token limit,
    a content filter, or an interruption), or `cancelled` (POST …/cancel)."""
    g = reply.generation
    if g is not None and g.interruption is not None and g.interruption.kind == "cancelled":
        return "cancelled"
    if g is None or g.finish_reason in ("length", "content_filter", "interrupted") or g.truncated is True:
        return "incomplete"
    return "completed"


def recorded(record: stored.ResponseRow, reply: views.Message) -> Found:
    """A response just created, once its reply is recorded: made from its record as written and
    the reply as recorded, as found_after would read them back (a response this new has no
    `next_response_ids`: nothing could continue it before its reply was recorded)."""
    return Found(record, status_of(reply), reply)


async def get_response(store: Store, caller: Caller, response_id: uuid.UUID) -> Found:
    async with store.reader() as tx:
        record, scope = await _found(tx, caller, response_id)
        return await _read(tx, caller, record, scope)


async def found_after(store: Store, caller: Caller, response_id: uuid.UUID) -> Found:
    """A response just created (its record may be `store: false`, which get_response hides)."""
    async with store.reader() as tx:
        record, scope = await _found(tx, caller, response_id, hidden=True)
        return await _read(tx, caller, record, scope)


async def input_items(store: Store, caller: Caller, response_id: uuid.UUID) -> list[views.PathMessage]:
    """The context the response was given, root first: the path to its last input message (the
    outputs of the responses it continues included; its instructions are not a message)."""
    async with store.reader() as tx:
        record, scope = await _found(tx, caller, response_id)
        return await tx.message_path(scope, record.input_ids[-1])


async def delete_response(store: Store, caller: Caller, response_id: uuid.UUID) -> None:
    """Redact the response's messages (input and output: the log keeps its events, so every chain
    still verifies) and mark it deleted: it is neither retrieved nor continued any more."""
    async with store.transaction() as tx:
        record, _ = await _found(tx, caller, response_id)
        if await pending.is_pending(tx, record.family_id, record.response_id):
            raise ReplyInProgress(
                "The response is still being generated: delete it once it has ended.", reply_id=str(response_id)
            )
        # The scope read after the pending check: a reply recorded in between is seen, and redacted.
        reply = await tx.get_message(await _scope(tx, caller, record), record.response_id)
        ids = [*record.input_ids, *([] if reply is None else [record.response_id])]
        for message_id in ids:
            await redact(tx, caller, record.conversation_id, RedactMessage(message_id=message_id, reason=DELETED_REASON))
        await stored.delete(tx, caller.tenant, response_id)
        await checkpoints.drop(tx, record.family_id, record.response_id)  # a background response's


async def _found(
    tx: Tx, caller: Caller, response_id: uuid.UUID, *, hidden: bool = False
) -> tuple[stored.ResponseRow, Scope]:
    record = await stored.get(tx, caller.tenant, response_id)
    if record is None or (not hidden and (not record.store or record.deleted_at is not None)):
        raise ResponseNotFound(f"Response with id 'resp_{response_id.hex}' not found.", response_id=f"resp_{response_id.hex}")
    return record, await _scope(tx, caller, record)


async def _scope(tx: Tx, caller: Caller, record: stored.ResponseRow) -> Scope:
    """Which messages the response's conversation shows now."""
    found = await tx.get_scoped(caller.tenant, record.conversation_id)
    assert found is not None, "a response's conversation is never removed"
    return found[1]


async def _read(tx: Tx, caller: Caller, record: stored.ResponseRow, scope: Scope) -> Found:
    reply = await tx.get_message(scope, record.response_id)
    if reply is not None:
        return Found(record, status_of(reply), reply)
    if await pending.is_pending(tx, record.family_id, record.response_id):
        return Found(record, "in_progress", None)
    # No longer pending: its reply (or its failure) was committed before that read, perhaps after
    # the scope's, which would not show the reply (each read here is a statement of its own).
    reply = await tx.get_message(await _scope(tx, caller, record), record.response_id)
    if reply is not None:
        return Found(record, status_of(reply), reply)
    failure = await stored.turn_failure(tx, record.conversation_id, record.response_id)
    if failure is not None and failure[0] == "cancelled":
        return Found(record, "cancelled", None)
    return Found(record, "failed", None, failure or ("failed", "The response has no output."))
