"""Replay: a conversation as it stands now, or as it stood after any event of the log."""

from __future__ import annotations

import uuid
from datetime import datetime

from service.app.caller import Caller
from service.domain import views
from service.domain.errors import ConversationNotFound
from service.domain.tree import Scope
from service.store.events import Tx

# An event's global sequence number, or an instant (the newest of the conversation's events stamped
# at or before it). None: now.
AsOf = int | datetime


async def summary(
    tx: Tx, caller: Caller, conversation_id: uuid.UUID, as_of: AsOf | None
) -> tuple[views.Conversation, Scope]:
    """The conversation's summary and which messages it shows, now or as of a past event.

    Now, from the derived `conversations` row; as of a past event, folded from the log itself (the
    events up to it), so a past state never depends on a derived table. Either way the scope reads
    messages only up to the summary's `last_seq`, so the tree, leaves and context read next agree
    with the summary even while new messages are being appended.
    """
    if as_of is None:
        found = await tx.get_scoped(caller.tenant, conversation_id)
    else:
        found = await tx.conversation_as_of(caller.tenant, conversation_id, as_of)
    if found is None:
        raise ConversationNotFound(conversation_id=str(conversation_id))
    return found
