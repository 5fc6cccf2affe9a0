"""Background responses (the Responses API's `background: true`): generated whatever happens to
the client that asked, followed from any process through the reply's checkpoints (resuming a
stream), and cancelled from any process through the cancel flag its owner reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

from service.app.caller import Caller
from service.app.responses.read import Found, get_response
from service.app.turn import progress
from service.store import progress as checkpoints
from service.store.events import Store
from service.upstream import Said

# How long a cancel waits for the owner to record the reply before it answers as things stand.
CANCEL_WAIT_SECONDS = 10.0


async def follow_response(
    store: Store, caller: Caller, response_id: uuid.UUID, poll: float
) -> AsyncIterator[list[Said] | Found]:
    """The response as it was when followed, then the reply's pieces as its checkpoints hold them,
    batch by batch, as they are written (read every `poll` seconds; an empty batch when there was
    nothing new), then the response as the log has it once it has ended. Any process can follow any
    reply: the pieces are the database's, not the owner's."""
    found = await get_response(store, caller, response_id)
    yield found
    record = found.record
    after = 0
    while True:
        async with store.reader() as tx:
            # The pending row first: once it is gone, the record's transaction had written every
            # checkpoint (a kept reply's last one with it), so the read below sees them all.
            still = await checkpoints.pending_state(tx, record.family_id, record.response_id)
            chunks = await checkpoints.chunks(tx, record.family_id, record.response_id, after)
        batch: list[Said] = []
        for chunk in chunks:
            if chunk.chunk != after:
                break  # never skip a checkpoint: a gap is read again on the next round
            batch.extend(progress.decode(chunk.pieces))
            after += 1
        yield batch
        if still is None:
            yield await get_response(store, caller, response_id)
            return
        await asyncio.sleep(poll)


async def cancel_response(
    store: Store, caller: Caller, response_id: uuid.UUID, stop_here: Callable[[uuid.UUID], bool], poll: float
) -> Found:
    """Ask the reply's owner to stop it (at once if this process owns it; else it reads the flag
    with its next checkpoint or renewal), wait until it is recorded, and answer the response."""
    found = await get_response(store, caller, response_id)
    record = found.record
    async with store.transaction() as tx:
        owner = await checkpoints.request_cancel(tx, record.family_id, record.response_id)
    if owner is None:
        return found  # it had already ended: a cancel changes nothing
    stop_here(record.response_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT_SECONDS
    while loop.time() < deadline:
        found = await get_response(store, caller, response_id)
        if found.status not in ("in_progress", "queued"):
            return found
        await asyncio.sleep(poll)
    return found
