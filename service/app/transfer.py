"""Export and import: a conversation's log as JSON Lines, and re-creating one from such a file.

A fork's export holds its own events, opening with `conversation_forked`; the path it inherited
belongs to its source's export. Importing a fork therefore needs its source imported first (under
the same tenant, with the same ids, as import keeps them); the fork joins the source's family.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec

from service.app import idempotency, writes
from service.app.caller import Caller
from service.app.ids import new_id
from service.domain import views
from service.domain.errors import (
    ConversationIdConflict,
    ConversationNotFound,
    ForkSourceMissing,
)
from service.domain.history import export_line
from service.domain.transfer import check_inherited, parse_export, plan_import
from service.store import history
from service.store.events import Store, Tx

_encoder = msgspec.json.Encoder()
K = TypeVar("K")


async def export(store: Store, caller: Caller, conversation_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The conversation's events as JSON Lines, one event per line, in chain order. Checked before
    the first byte (a missing conversation is a 404, not a broken stream), then streamed a page at
    a time."""
    async with store.reader() as tx:
        found = await tx.get_conversation(caller.tenant, conversation_id)
    if found is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    return _lines(store, found[1], conversation_id)


async def _lines(store: Store, family_id: uuid.UUID, conversation_id: uuid.UUID) -> AsyncIterator[bytes]:
    # Each page is a short read of its own, so a slow download holds no connection or snapshot
    # open. The pages still join into one chain: a conversation's events become visible in `seq`
    # order, so every page continues exactly where the last one ended.
    after = 0
    while True:
        async with store.reader() as tx:
            page = await history.export_page(tx, family_id, conversation_id, after)
        if not page:
            return
        chunk = bytearray()
        for event, content, blobs in page:
            _encoder.encode_into(export_line(event, content, blobs), chunk, len(chunk))
            chunk += b"\n"
        yield bytes(chunk)
        after = page[-1][0].envelope.seq


async def import_conversation(
    store: Store, caller: Caller, raw: bytes, keyed: idempotency.Keyed | None = None
) -> views.Conversation | idempotency.Replayed:
    """Import, once per Idempotency-Key (a retry gets the stored answer)."""
    return await idempotency.run(
        store, caller, keyed, lambda tx: _import(tx, caller, raw), lambda c: idempotency.creation(True, c)
    )


async def _import(tx: Tx, caller: Caller, raw: bytes) -> views.Conversation:
    """Verify the whole file first; only then create the conversation, with its ids, under the
    caller's tenant. Its events are sealed again here and come out with the hashes they had."""
    plan = plan_import(parse_export(raw))
    # The time the lock reads is not used: imported events keep the times they were written at.
    w = await writes.lock_new(tx, caller, plan.conversation_id, len(plan.lines))
    if await tx.get_conversation(caller.tenant, plan.conversation_id) is not None:
        raise ConversationIdConflict(
            "A conversation with this id already exists.", conversation_id=str(plan.conversation_id)
        )
    family_id = new_id()
    if plan.fork is not None:
        source = await tx.get_conversation(caller.tenant, plan.fork.source_conversation_id)
        if source is None:
            raise ForkSourceMissing(source_conversation_id=str(plan.fork.source_conversation_id))
        family_id = source[1]
        path = await history.fork_base_path(
            tx, caller.tenant, family_id, plan.fork.source_conversation_id, plan.fork.source_message_id
        )
        if not path:
            raise ForkSourceMissing(
                "The source conversation does not show the message the fork was taken at.",
                source_conversation_id=str(plan.fork.source_conversation_id),
                source_message_id=str(plan.fork.source_message_id),
            )
        check_inherited(plan, path)
    await w.imported(plan, family_id)
    found = await tx.get_conversation(caller.tenant, plan.conversation_id)
    assert found is not None
    return found[0]


# --- a whole tenant, for the command line -------------------------------------------------


class _Opening(msgspec.Struct):
    conversation_id: uuid.UUID
    type: str
    payload: str


class _ForkedFrom(msgspec.Struct):
    source_conversation_id: uuid.UUID


def import_order(exports: list[tuple[K, bytes]]) -> list[K]:
    """The exports' keys in an order that imports every fork after its source (when the source is
    among them), otherwise as given. Reads each export's first line only: a file that does not
    parse keeps its place, and its import says what is wrong with it."""
    source_of: dict[K, uuid.UUID | None] = {}
    key_of: dict[uuid.UUID, K] = {}
    for key, raw in exports:
        source_of[key] = None
        try:
            opening = msgspec.json.decode(raw.split(b"\n", 1)[0], type=_Opening)
            if opening.type == "conversation_forked":
                source_of[key] = msgspec.json.decode(opening.payload, type=_ForkedFrom).source_conversation_id
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        key_of.setdefault(opening.conversation_id, key)
    ordered: list[K] = []
    placed: set[K] = set()

    def place(key: K, seen: frozenset[K]) -> None:
        if key in placed or key in seen:  # a cycle cannot verify anyway: keep the given order
            return
        source = source_of[key]
        if source is not None and source in key_of:
            place(key_of[source], seen | {key})
        placed.add(key)
        ordered.append(key)

    for key, _ in exports:
        place(key, frozenset())
    return ordered
