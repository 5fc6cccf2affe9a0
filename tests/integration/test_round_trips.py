"""Round trips per append, counted statement by statement on the pool's connections: a statement
added to the append paths fails here before it shows in the benchmark (BENCHMARKS.md, *Keyed
appends are grouped*)."""

import uuid

import asyncpg
import msgspec
import pytest

from service.app import conversations as conversations_app
from service.app import idempotency
from service.app import messages as messages_app
from service.app.caller import Caller
from service.domain.errors import IdempotencyKeyReused
from service.store.events import Store
from tests.postgres import fetch, run


def _keyed() -> idempotency.Keyed:
    return idempotency.Keyed(str(uuid.uuid4()), bytes(32))


async def _keep(connection: asyncpg.Connection) -> None:
    """As the service's pool: no reset statement between requests (services._keep_session)."""


def test_round_trips_per_append(databases):
    url = databases.migrated()
    sent: list[str] = []

    async def go():
        async def init(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(lambda q: sent.append(q.query))

        pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=init, reset=_keep)
        try:
            store = Store(pool)
            caller = Caller(tenant="t", actor="test")
            group = messages_app.AppendGroup(store)
            async with store.transaction() as tx:
                cid = (await conversations_app.create(tx, caller, conversations_app.NewConversation())).conversation.id

            history: list[str] = []

            async def count(new: messages_app.NewMessage, keyed: idempotency.Keyed | None) -> int:
                sent.clear()
                await messages_app.append_message(group, caller, cid, new, keyed)
                history.extend(sent)
                return len(sent)

            first = messages_app.NewMessage(role="user", content="first")
            # Unknown head (a restart, say): read the conversation without a lock, then the
            # grouped statement, which claims the key and stores the answer with the message.
            assert await count(first, _keyed()) == 2
            second = await group.append(caller, cid, messages_app.NewMessage(role="user", content="second"))
            assert isinstance(second, messages_app.Appended)
            # A remembered head: one statement, shared with every append queued beside it.
            assert await count(messages_app.NewMessage(role="user", content="keyed"), _keyed()) == 1
            assert await count(messages_app.NewMessage(role="user", content="plain"), None) == 1
            # A branch: read its parent, then the grouped statement.
            under_first = second.message.parent_message_id
            branch = messages_app.NewMessage(role="user", content="branch", parent_message_id=under_first)
            assert await count(branch, None) == 2
            assert await count(messages_app.NewMessage(role="user", content="edit", parent_message_id=under_first), _keyed()) == 2
            # Another process wrote last: the remembered head's statement writes nothing; read, and again.
            other = messages_app.AppendGroup(store)
            await other.append(caller, cid, messages_app.NewMessage(role="user", content="elsewhere"))
            assert await count(messages_app.NewMessage(role="user", content="after"), None) == 3
            # None of these took the conversation's lock (nor sent a NOTIFY of its own transaction).
            assert not any("FROM begin_write(" in q or q.strip().upper().startswith("BEGIN") for q in history)
            # What only the lock decides: a retry of a client's id. BEGIN, begin_append, get_message, COMMIT.
            last = group.heads.get("t", cid)
            assert last is not None
            again = messages_app.NewMessage(role="user", content="after", id=last.head.message_id)
            assert await count(again, None) == 4
            # A keyed retry: the statement misses for the key, and the locked way replays the answer
            # (BEGIN, claim, find the key, COMMIT), with no read and second statement in between.
            keyed = _keyed()
            assert await count(messages_app.NewMessage(role="user", content="once"), keyed) == 1
            assert await count(messages_app.NewMessage(role="user", content="once"), keyed) == 5
        finally:
            await pool.close()

    run(go())


def test_a_grouped_keyed_append_stores_its_answer_and_a_retry_replays_it(databases):
    url = databases.migrated()

    async def go():
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            store = Store(pool)
            caller = Caller(tenant="t", actor="test")
            group = messages_app.AppendGroup(store)
            async with store.transaction() as tx:
                cid = (await conversations_app.create(tx, caller, conversations_app.NewConversation())).conversation.id
            await group.append(caller, cid, messages_app.NewMessage(role="user", content="one"))
            keyed = _keyed()
            new = messages_app.NewMessage(role="user", content='two "seq":1, {"seq": -1}')
            appended = await messages_app.append_message(group, caller, cid, new, keyed)
            assert isinstance(appended, messages_app.Appended) and appended.created
            known = group.heads.get("t", cid)
            assert known is not None and known.head.message_id == appended.message.id
            again = await messages_app.append_message(group, caller, cid, new, keyed)
            assert isinstance(again, idempotency.Replayed)
            assert again.status == 201
            assert again.body == msgspec.json.encode(appended.message)
            reused = idempotency.Keyed(keyed.key, b"\1" * 32)
            with pytest.raises(IdempotencyKeyReused):
                await messages_app.append_message(group, caller, cid, new, reused)
        finally:
            await pool.close()

    run(go())
    rows = fetch(url, "SELECT count(*) AS n FROM events WHERE type = 'message_appended'")
    assert rows[0]["n"] == 2  # "one", and the keyed message once
