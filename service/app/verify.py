"""Verifying a whole tenant: every conversation's audit, one after another."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from service.app import conversations
from service.app.audit import audit
from service.app.caller import Caller
from service.domain.audit import AuditReport
from service.store.events import Store

PAGE = 500


async def tenant_conversations(store: Store, caller: Caller) -> list[uuid.UUID]:
    """Every conversation of the caller's tenant, newest first."""
    ids: list[uuid.UUID] = []
    cursor: str | None = None
    while True:
        page = await conversations.list_page(store, caller, PAGE, cursor)
        ids.extend(c.id for c in page.items)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


async def verify_tenant(
    store: Store,
    caller: Caller,
    *,
    on_start: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[], None] = lambda: None,
) -> list[tuple[uuid.UUID, AuditReport]]:
    """The audit of each conversation of the tenant; `on_start` gets how many there are."""
    ids = await tenant_conversations(store, caller)
    on_start(len(ids))
    reports: list[tuple[uuid.UUID, AuditReport]] = []
    for conversation_id in ids:
        reports.append((conversation_id, await audit(store, caller, conversation_id)))
        on_progress()
    return reports
