"""Auditing a conversation: re-deriving its hash chain and body digests from the stored log."""

from __future__ import annotations

import uuid

from service.app.caller import Caller
from service.domain.audit import AuditReport, ChainCheck, summary_differences
from service.domain.errors import ConversationNotFound
from service.store import history
from service.store.events import Store


async def audit(store: Store, caller: Caller, conversation_id: uuid.UUID) -> AuditReport:
    """Verify every event in order, a batch at a time, then the summary row against the log's
    fold, all in one snapshot (so a concurrent append cannot make the summary and the log disagree)."""
    async with store.snapshot() as tx:
        found = await tx.get_conversation(caller.tenant, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        check = ChainCheck(conversation_id)
        async for batch in history.audit_batches(tx, found[1], conversation_id):
            if not check.feed(batch):
                break
        stored, folded = await history.audit_summary(tx, caller.tenant, conversation_id)
    if stored is None:  # gone since it was found: nothing left to compare
        return check.report(None)
    # A Record reads like a mapping without being one: the domain compares plain dicts.
    differences = summary_differences(dict(stored.items()), None if folded is None else dict(folded.items()))
    return check.report(stored["last_hash"], differences)
