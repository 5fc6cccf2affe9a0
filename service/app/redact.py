"""Redacting a message: withdrawing its content from every read and, on request, erasing its body."""

from __future__ import annotations

import uuid

import msgspec

from service.app import idempotency, writes
from service.app.caller import Caller
from service.domain import views
from service.domain.errors import InheritedMessage
from service.domain.events import said_beside_body
from service.domain.redaction import RedactMessage, decide_redact, scrub
from service.store import history
from service.store.events import Store, Tx


class Redacted(msgspec.Struct, frozen=True):
    message: views.Message
    created: bool  # False: the message was already redacted (and erased, if erasure was asked)


async def redact_message(
    store: Store, caller: Caller, conversation_id: uuid.UUID, cmd: RedactMessage, keyed: idempotency.Keyed | None = None
) -> Redacted | idempotency.Replayed:
    """Redact, once per Idempotency-Key (a retry gets the stored answer)."""
    return await idempotency.run(
        store,
        caller,
        keyed,
        lambda tx: redact(tx, caller, conversation_id, cmd),
        lambda r: idempotency.creation(r.created, r.message),
        conversation_id,
    )


async def redact(tx: Tx, caller: Caller, conversation_id: uuid.UUID, cmd: RedactMessage) -> Redacted:
    """Append `message_redacted` through the normal write path; with `erase`, delete the body in the
    same transaction (the bodies trigger allows it only now that the event exists)."""
    w = await writes.lock(tx, caller, conversation_id)
    state, now, scope = w.state, w.now, w.scope
    target = (await tx.find_nodes(scope, [cmd.message_id])).get(cmd.message_id)
    if target is not None and not target.visible:
        target = None  # another conversation's of the same family: not this one's to name
    # A message is redacted through the conversation that wrote it (its event joins that chain),
    # and the redaction shows in every conversation of its family that shows the message. Through
    # a fork it would change its source: refused, so that a fork's writes stay the fork's.
    if target is not None and target.conversation_id != conversation_id:
        raise InheritedMessage(
            "The message belongs to a conversation this one was forked from: redact it there; the "
            "redaction then shows in every conversation that shows the message.",
            message_id=str(cmd.message_id),
            conversation_id=str(target.conversation_id),
        )
    current = await history.find_redaction(tx, state.family_id, cmd.message_id)
    events = decide_redact(state, target, current, cmd)
    if events:
        content = await history.find_body(tx, state.family_id, cmd.message_id)
        if content is not None and target is not None and said_beside_body(payload=target.payload)["body"] == "json":
            content = None  # JSON: responses quote its fields, found by the message's id, not this text
        await w.write(events)
        if cmd.erase:
            await history.erase_body(tx, state.family_id, cmd.message_id)
        redaction = views.Redaction(at=now, by=caller.actor, reason=cmd.reason, erased=cmd.erase)
        await _scrub_stored_responses(tx, caller.tenant, cmd.message_id, content, redaction)
    message = await tx.get_message(scope, cmd.message_id)
    assert message is not None  # found visible above, under the same lock
    return Redacted(message, created=bool(events))


async def _scrub_stored_responses(
    tx: Tx, tenant: str, message_id: uuid.UUID, content: str | None, redaction: views.Redaction
) -> None:
    """Responses kept for Idempotency-Key replays may quote the message: rewrite them as a read
    would now answer, so a replay does not serve the content (and, once erased, no copy is left)."""
    content_text = None if content is None else msgspec.json.encode(content)[1:-1]  # as inside a JSON string
    quoting = await history.find_quoting_responses(tx, tenant, str(message_id).encode(), content_text)
    for key, response in quoting:
        try:
            document = msgspec.json.decode(response)
        except msgspec.DecodeError:
            continue  # not JSON: not a response this service wrote
        scrubbed = scrub(document, message_id, content, redaction)
        if scrubbed != document:
            await history.replace_response(tx, tenant, key, msgspec.json.encode(scrubbed))
