"""Keyed appends in the grouped statement (service.app.messages.AppendGroup) never hold up the
other appends of their group: a key already in flight in this process takes the locked way, and a
statement that fails on one append's key sends each of its appends the locked way on its own."""

import asyncio
import uuid

import asyncpg

from service.app import conversations as conversations_app
from service.app import idempotency
from service.app import messages as messages_app
from service.app.caller import Caller
from service.domain.errors import DatabaseBusy, IdempotencyKeyReused
from service.store.events import Store
from service.store.pool import Limits
from tests.postgres import fetch, run

LOCK_TIMEOUT = 8.0  # long beside a grouped statement: an append held up by a key shows


async def _setup(url: str, conversations: int) -> tuple[asyncpg.Pool, Store, messages_app.AppendGroup, list[uuid.UUID]]:
    limits = Limits(lock_timeout=LOCK_TIMEOUT)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=10, server_settings=limits.session_settings())
    store = Store(pool, limits)
    group = messages_app.AppendGroup(store)
    caller = Caller(tenant="t", actor="test")
    cids = []
    for _ in range(conversations):
        async with store.transaction() as tx:
            cid = (await conversations_app.create(tx, caller, conversations_app.NewConversation())).conversation.id
        await group.append(caller, cid, messages_app.NewMessage(role="user", content="first"))  # remembered
        cids.append(cid)
    return pool, store, group, cids


def _say(content: str, **where: object) -> messages_app.NewMessage:
    return messages_app.NewMessage(role="user", content=content, **where)  # type: ignore[arg-type]


def test_a_key_in_flight_on_the_locked_path_does_not_hold_up_the_group(databases):
    """A keyed append waits, under the lock, for a conversation another writer holds; the same key
    sent to another conversation meanwhile goes the locked way too (where it waits for the first),
    and the other clients' appends beside it are written at once."""
    url = databases.migrated()
    caller = Caller(tenant="t", actor="test")

    async def go():
        pool, store, group, cids = await _setup(url, 5)
        holder = await asyncpg.connect(url)
        try:
            held = holder.transaction()
            await held.start()
            await holder.execute("SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", cids[0])
            keyed = idempotency.Keyed("retried", bytes(32))
            first = asyncio.ensure_future(group.append(caller, cids[0], _say("first's"), keyed))
            await asyncio.sleep(0.5)  # the first has claimed its key and waits for the conversation
            reused = idempotency.Keyed("retried", b"\1" * 32)
            again = asyncio.ensure_future(group.append(caller, cids[1], _say("reused"), reused))
            others = [asyncio.ensure_future(group.append(caller, cid, _say("other"))) for cid in cids[2:]]
            done, _ = await asyncio.wait(others, timeout=LOCK_TIMEOUT / 2)
            still_held = not first.done()
            await held.rollback()
            assert still_held and len(done) == len(others), "the other appends waited for the key's holder"
            assert all(isinstance(o.result(), messages_app.Appended) for o in others)
            outcomes = await asyncio.gather(first, again, return_exceptions=True)
            assert isinstance(outcomes[0], messages_app.Appended)  # the conversation was let go in time
            assert isinstance(outcomes[1], IdempotencyKeyReused)
        finally:
            await holder.close()
            await pool.close()

    run(go())


def test_one_key_sent_twice_at_once_is_claimed_once(databases):
    """The same key to two conversations in one turn of the loop: one of the two claims it (which one
    is a race between the grouped statement and the locked path, as between any two clients), the
    other is refused as another request, only one of them is written, and the append beside them
    is written."""
    url = databases.migrated()
    caller = Caller(tenant="t", actor="test")

    async def go():
        pool, store, group, cids = await _setup(url, 3)
        try:
            a = idempotency.Keyed("twice", bytes(32))
            b = idempotency.Keyed("twice", b"\1" * 32)
            outcomes = await asyncio.gather(
                group.append(caller, cids[0], _say("a"), a),
                group.append(caller, cids[1], _say("b"), b),
                group.append(caller, cids[2], _say("plain")),
                return_exceptions=True,
            )
            claimed = [o for o in outcomes[:2] if isinstance(o, messages_app.Appended)]
            refused = [o for o in outcomes[:2] if isinstance(o, IdempotencyKeyReused)]
            assert (len(claimed), len(refused)) == (1, 1), outcomes
            assert isinstance(outcomes[2], messages_app.Appended)
        finally:
            await pool.close()

    run(go())
    rows = fetch(url, "SELECT count(*) AS n FROM events WHERE type = 'message_appended'")
    assert rows[0]["n"] == 3 + 2  # each conversation's first, the one that claimed the key, and "plain"


def test_a_key_held_by_another_process_fails_no_other_append(databases):
    """Another process holds a key uncommitted; its retry here is grouped with other clients'
    appends. The statement may wait for that key and give up, but it fails nobody else: each of
    its appends is then made the locked way on its own, and the retry waits for the key there."""
    url = databases.migrated()
    caller = Caller(tenant="t", actor="test")

    async def go():
        limits = Limits(lock_timeout=1.0)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=10, server_settings=limits.session_settings())
        store = Store(pool, limits)
        group = messages_app.AppendGroup(store)
        cids = []
        for _ in range(4):
            async with store.transaction() as tx:
                cid = (await conversations_app.create(tx, caller, conversations_app.NewConversation())).conversation.id
            await group.append(caller, cid, _say("first"))
            cids.append(cid)
        holder = await asyncpg.connect(url)
        try:
            held = holder.transaction()
            await held.start()
            keyed = idempotency.Keyed("elsewhere", bytes(32))
            await holder.execute(
                "INSERT INTO idempotency_keys (tenant, key, fingerprint) VALUES ('t', $1, $2)", keyed.key, keyed.fingerprint
            )
            outcomes = await asyncio.gather(
                group.append(caller, cids[0], _say("retry"), keyed),
                *(group.append(caller, cid, _say("other")) for cid in cids[1:]),
                return_exceptions=True,
            )
            await held.rollback()
            assert isinstance(outcomes[0], DatabaseBusy)  # its own key stayed held: 503, retry later
            assert all(isinstance(o, messages_app.Appended) for o in outcomes[1:]), outcomes
        finally:
            await holder.close()
            await pool.close()

    run(go())
