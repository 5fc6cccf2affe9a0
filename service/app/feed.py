"""Following events: a conversation's events, and a tenant's whole feed, paged, long-polled or streamed.

A conversation's events are final in sequence order as they become visible (its writers hold its
row while they draw numbers), so its page is a plain read. A tenant's feed spans conversations
whose writers run side by side: a number drawn earlier may commit later. The feed therefore hands
out events only up to the tenant's *frontier*, the greatest number no running transaction can still
fill in (feed_frontier in schema.sql), so a follower never skips one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import msgspec

from service.app.caller import Caller
from service.domain.errors import ConversationNotFound, Unavailable
from service.domain.history import EventView, view
from service.store import history
from service.store.events import Store
from service.store.notify import Listener

MAX_WAIT_SECONDS = 60  # the longest a long-poll may hold
LOCK_TIMEOUT_MS = 500  # the longest a frontier read may hold up the tenant's writers queued behind it
COOLDOWN_SECONDS = 1.0  # after a frontier read gave up, the tenant's writers get this long in peace
KEEPALIVE_SECONDS = 15.0  # an idle stream sends a comment this often (and learns if the client left)
STREAM_BATCH = 200
OUTAGE_RETRY_SECONDS = 1.0  # how often a stream tries again while the database is away


class Page(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EventView]
    next_after: int  # pass as `after` to continue


async def conversation_page(
    store: Store, caller: Caller, conversation_id: uuid.UUID, after: int, limit: int
) -> Page:
    async with store.reader() as tx:
        found = await tx.get_conversation(caller.tenant, conversation_id)
        if found is None:
            raise ConversationNotFound(conversation_id=str(conversation_id))
        events = await history.conversation_events(tx, found[1], conversation_id, after, limit)
    return Page(items=[view(e) for e in events], next_after=events[-1].envelope.seq if events else after)


class Feed:
    """A tenant's feed: frontiers shared between the readers of this process, and their waits."""

    def __init__(self, store: Store, listener: Listener, lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> None:
        self._store = store
        self._listener = listener
        self._lock_timeout_ms = lock_timeout_ms
        self._known: dict[str, int] = {}  # tenant -> greatest frontier learned; a frontier stays true
        self._calm_until: dict[str, float] = {}
        self._next: dict[str, asyncio.Future[tuple[int, bool]]] = {}
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    def close(self) -> None:
        """Shutdown has begun: long-polls answer with what they have, streams end."""
        self.closing = True
        self._listener.wake_all()

    @property
    def followers(self) -> int:
        """Readers waiting for the feed to move: streams and long-polled pages."""
        return self._listener.subscribers

    async def page(self, caller: Caller, after: int, limit: int, wait: float = 0) -> Page:
        """Events after `after`; with `wait`, hold until there is one or `wait` seconds passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WAIT_SECONDS)
        # Subscribed before the first read: a commit between a read and the wait still wakes it.
        with self._listener.subscribe(caller.tenant) as signal:
            while True:
                signal.clear()
                page, settled = await self._read(caller.tenant, after, limit)
                remaining = deadline - loop.time()
                if page.items or remaining <= 0 or self.closing:
                    return page
                # An unsettled frontier (a slow writer was in flight) is asked again soon, even if
                # the commit that settles it was heard meanwhile.
                await signal.wait(remaining if settled else min(remaining, COOLDOWN_SECONDS))

    async def follow(self, caller: Caller, after: int) -> AsyncIterator[list[EventView]]:
        """Batches of events as they become final, until the service shuts down; an empty batch
        after each idle spell. While the database is away it reads again every second, from
        where it was: nothing is skipped across the outage."""
        with self._listener.subscribe(caller.tenant) as signal:
            while not self.closing:
                signal.clear()
                try:
                    page, settled = await self._read(caller.tenant, after, STREAM_BATCH)
                except Unavailable:
                    await signal.wait(OUTAGE_RETRY_SECONDS)
                    yield []
                    continue
                after = page.next_after
                if page.items:
                    yield page.items
                    if len(page.items) == STREAM_BATCH:
                        continue
                if not await signal.wait(KEEPALIVE_SECONDS if settled else COOLDOWN_SECONDS) and settled:
                    yield []

    async def _read(self, tenant: str, after: int, limit: int) -> tuple[Page, bool]:
        frontier, settled = await self.frontier(tenant)
        if frontier <= after:
            return Page(items=[], next_after=after), settled
        async with self._store.reader() as tx:
            events = await history.tenant_events(tx, tenant, after, frontier, limit)
        page = Page(items=[view(e) for e in events], next_after=events[-1].envelope.seq if events else after)
        return page, settled

    async def frontier(self, tenant: str) -> tuple[int, bool]:
        """A frontier learned after this call began (so it covers every commit before it), and
        whether it is settled: False when in-flight writers made it fall back to an older one.

        Concurrent callers share one: a caller joins the read that will start next, never one
        already under way (that one may have begun before the caller's commits landed).
        """
        pending = self._next.get(tenant)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            pending.add_done_callback(_observe)
            self._next[tenant] = pending
            if tenant not in self._running:
                self._launch(tenant)
        return await asyncio.shield(pending)

    def _launch(self, tenant: str) -> None:
        pending = self._next.pop(tenant)
        self._running.add(tenant)
        task = asyncio.create_task(self._learn(tenant, pending))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._landed(tenant, t))

    def _landed(self, tenant: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._running.discard(tenant)
        if tenant in self._next:
            self._launch(tenant)

    async def _learn(self, tenant: str, pending: asyncio.Future[tuple[int, bool]]) -> None:
        try:
            known = self._known.get(tenant, 0)
            settled = False
            loop = asyncio.get_running_loop()
            if loop.time() >= self._calm_until.get(tenant, 0.0):
                async with self._store.reader() as tx:
                    learned = await history.feed_frontier(tx, tenant, self._lock_timeout_ms)
                if learned is None:
                    # A slow writer is in flight: serve what is known to be final, and leave the
                    # writers queued behind the lock alone for a while before asking again.
                    self._calm_until[tenant] = loop.time() + COOLDOWN_SECONDS
                else:
                    settled = True
                    self._calm_until.pop(tenant, None)
                    if learned > known:
                        if len(self._known) > 100_000:
                            self._known.clear()  # a forgotten tenant only reads 0 while unsettled
                        self._known[tenant] = known = learned
            pending.set_result((known, settled))
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as exc:  # hand the failure to every caller waiting on this read
            pending.set_exception(exc)


def _observe(future: asyncio.Future[tuple[int, bool]]) -> None:
    """Mark a failure as seen even if every caller has gone (no 'exception never retrieved')."""
    if not future.cancelled():
        future.exception()
