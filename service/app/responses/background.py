"""Background responses (the Responses API's `background: true`): generated whatever happens to
the client that asked, followed from any process through the reply's checkpoints (resuming a
stream), and cancelled from any process through the cancel flag (its owner hears the cancel's
notification, and reads the flag with every checkpoint and lease renewal)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

from service.app.caller import Caller
from service.app.responses.read import Found, get_response
from service.app.turn.follow import checkpointed
from service.store import progress as checkpoints
from service.store.events import Store
from service.store.notify import Listener
from service.upstream import Said

# How long a cancel waits for the owner to record the reply before it answers as things stand.
CANCEL_WAIT_SECONDS = 10.0


async def follow_response(
    store: Store, listener: Listener, caller: Caller, response_id: uuid.UUID, fallback: float
) -> AsyncIterator[list[Said] | Found]:
    """The response as it was when followed, then the reply's pieces as its checkpoints hold them,
    batch by batch, as they are written (follow.checkpointed: woken by each checkpoint's
    notification, read every `fallback` seconds without one; an empty batch when there was nothing
    new), then the response as the log has it once it has ended."""
    found = await get_response(store, caller, response_id)
    yield found
    record = found.record
    async for batch in checkpointed(store, listener, record.family_id, record.response_id, fallback):
        yield batch
    yield await get_response(store, caller, response_id)


async def cancel_response(
    store: Store,
    listener: Listener,
    caller: Caller,
    response_id: uuid.UUID,
    stop_here: Callable[[uuid.UUID], bool],
    fallback: float,
) -> Found:
    """Ask the reply's owner to stop it (at once if this process owns it; another hears the cancel's
    notification, or reads the flag with its next checkpoint or renewal), wait until it is recorded
    (woken by the record's notification, or reading every `fallback` seconds), and answer the response."""
    found = await get_response(store, caller, response_id)
    record = found.record
    with listener.subscribe_reply(record.response_id) as signal:
        async with store.transaction() as tx:
            owner = await checkpoints.request_cancel(tx, record.family_id, record.response_id)
        if owner is None:
            return found  # it had already ended: a cancel changes nothing
        stop_here(record.response_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_WAIT_SECONDS
        while (left := deadline - loop.time()) > 0:
            signal.clear()
            found = await get_response(store, caller, response_id)
            if found.status not in ("in_progress", "queued"):
                return found
            await signal.wait(min(fallback, left))
    return found
