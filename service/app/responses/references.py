"""`item_reference` input items (the Responses API): an item named by its id (`msg_`, `rs_`,
`fc_…_i`, `fco_`: service/domain/items.py), read from the caller's tenant's messages as the
Conversations API lists it, so that it is sent again as that item."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from service.app.caller import Caller
from service.domain import items
from service.domain.tree import Scope
from service.store import responses as stored
from service.store.events import Store


async def referenced_items(
    store: Store,
    caller: Caller,
    item_ids: Sequence[str],
    previous_response_id: uuid.UUID | None,
    conversation_id: uuid.UUID | None,
) -> dict[str, items.Item]:
    """The items of `item_ids` the tenant has, by id; an id it has not (none such, another
    tenant's, or its message redacted, as a deleted response's are) is left out. They are looked
    for first in the family of the response or conversation the new response continues."""
    named = {i: ref for i in item_ids if (ref := items.parse_item_id(i)) is not None}
    if not named:
        return {}
    tenant = caller.tenant
    found: dict[str, items.Item] = {}
    async with store.reader() as tx:
        family = None
        if previous_response_id is not None:
            row = await stored.get(tx, tenant, previous_response_id)
            family = None if row is None else row.family_id
        elif conversation_id is not None:
            scoped = await tx.get_scoped(tenant, conversation_id)
            family = None if scoped is None else scoped[1].family_id
        message_ids = sorted({ref.message_id for ref in named.values()})
        written = await stored.referenced(tx, tenant, family, message_ids)
        scopes: dict[uuid.UUID, Scope | None] = {}
        read: dict[uuid.UUID, list[items.Item]] = {}
        for message_id, where in written.items():
            if where not in scopes:
                scoped = await tx.get_scoped(tenant, where)
                scopes[where] = None if scoped is None else scoped[1]
            scope = scopes[where]
            message = None if scope is None else await tx.get_message(scope, message_id)
            if message is not None and message.redacted is None:
                read[message_id] = items.messages_to_items([message])
    for item_id, ref in named.items():
        for item in read.get(ref.message_id, []):
            if item["id"] == item_id:
                found[item_id] = item
    return found
