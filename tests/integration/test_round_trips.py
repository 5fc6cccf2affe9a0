"""Round trips per append and per turn, counted statement by statement on the pool's connections:
a statement added to the append paths or to a turn's fails here before it shows in the benchmark
(BENCHMARKS.md, *Keyed appends are grouped*, *Responses API (issue 12)*)."""

import uuid

import asyncpg
import msgspec
import pytest

from service.app import conversations as conversations_app
from service.app import forks as forks_app
from service.app import idempotency
from service.app import messages as messages_app
from service.app import responses as responses_app
from service.app import turn as turns_app
from service.app.caller import Caller
from service.app.turn import Plan, Replies, ReplyInFlight
from service.domain import views
from service.domain.errors import IdempotencyKeyReused
from service.domain.message import Utterance
from service.store.events import Store
from service.store.pool import keep_session
from service.store.queries import Q
from service.upstream import ProviderConfig, Registry, RegistryConfig
from tests.postgres import fetch, run


def _keyed() -> idempotency.Keyed:
    return idempotency.Keyed(str(uuid.uuid4()), bytes(32))


def test_round_trips_per_append(databases):
    url = databases.migrated()
    sent: list[str] = []

    async def go():
        async def init(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(lambda q: sent.append(q.query))

        pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=init, reset=keep_session)
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


def test_round_trips_per_fork_and_its_first_appends(databases):
    """A fork remembers the state it made (BENCHMARKS.md, *Forks*): its first append is grouped."""
    url = databases.migrated()
    sent: list[str] = []

    async def go():
        async def init(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(lambda q: sent.append(q.query))

        pool = await asyncpg.create_pool(url, min_size=1, max_size=2, init=init, reset=keep_session)
        try:
            store = Store(pool)
            caller = Caller(tenant="t", actor="test")
            group = messages_app.AppendGroup(store)
            async with store.transaction() as tx:
                new = conversations_app.NewConversation(system="be brief")
                source = (await conversations_app.create(tx, caller, new)).conversation
            assert source.head_id is not None

            async def fork(keyed: idempotency.Keyed | None) -> tuple[int, uuid.UUID]:
                sent.clear()
                made = await forks_app.fork_conversation(
                    store, caller, source.id, source.head_id, forks_app.NewFork(), keyed, group.heads
                )
                assert isinstance(made, conversations_app.Created)
                return len(sent), made.conversation.id

            async def count(fid: uuid.UUID, new: messages_app.NewMessage, keyed: idempotency.Keyed | None) -> int:
                sent.clear()
                await messages_app.append_message(group, caller, fid, new, keyed)
                return len(sent)

            # BEGIN, begin_create, the source's summary, find_nodes, insert_conversation, COMMIT.
            sent_by_fork, fid = await fork(None)
            assert sent_by_fork == 6
            # Its first appends, keyed or not: one shared statement each.
            assert await count(fid, messages_app.NewMessage(role="user", content="first"), None) == 1
            assert await count(fid, messages_app.NewMessage(role="user", content="second"), _keyed()) == 1
            # A keyed fork: its key claimed and answered in the same transaction (2 more).
            sent_by_fork, fid = await fork(_keyed())
            assert sent_by_fork == 8
            assert await count(fid, messages_app.NewMessage(role="user", content="first"), _keyed()) == 1
        finally:
            await pool.close()

    run(go())
    rows = fetch(url, "SELECT count(*) AS n FROM events WHERE type = 'message_appended'")
    assert rows[0]["n"] == 4  # the system message, and the forks' three


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


def _registry() -> Registry:
    echo = ProviderConfig(name="echo", kind="echo", default_model="echo", models=("echo",))
    return Registry.from_config(RegistryConfig(providers={"echo": echo}, default_provider="echo"))


def test_round_trips_per_turn_of_the_openai_doors_and_a_response_answers_as_it_reads_back(databases):
    """A chat completion's turn and a response's take the same statements: the response's record
    rides on the turn's write. A response is answered from its record and reply as recorded
    (responses.recorded), which is what reading it back finds."""
    url = databases.migrated()
    sent: list[str] = []
    names = {q.sql: name for name, q in Q.items()}
    checkpoints = {Q["checkpoint_reply"].sql, Q["add_reply_chunk"].sql}  # as fast as the model: not counted

    async def go():
        async def init(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(lambda q: sent.append(q.query))

        # One connection, warmed by a first round of the same turns (asyncpg reads the types of a
        # statement's parameters on a connection's first use of them).
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=init, reset=keep_session)
        store = Store(pool)
        registry = _registry()
        generations = Replies(store, lease_seconds=60.0)
        caller = Caller(tenant="t", actor="test")

        def launch(plan: Plan) -> ReplyInFlight:
            return generations.start(caller, plan, relay=False)

        def statements() -> list[str]:
            said = [names.get(q, q.split()[0].rstrip(";")) for q in sent if q not in checkpoints]
            sent.clear()
            return said

        async def respond(new: responses_app.NewResponse) -> tuple[responses_app.Begun[ReplyInFlight], views.Message]:
            begun = await responses_app.begin_response(store, registry, caller, generations.lease, new, launch)
            assert isinstance(begun, responses_app.Begun)
            settled = await begun.reply.settled
            assert settled.reply is not None
            return begun, settled.reply

        try:
            chat = turns_app.Chat(messages=[Utterance(role="user", content="hi")], model="echo")
            await (await turns_app.begin_chat(store, registry, caller, generations.lease, chat, launch)).settled  # type: ignore[union-attr]
            warm, _ = await respond(responses_app.NewResponse(model="echo", input=[Utterance(role="user", content="a")]))
            then = [Utterance(role="user", content="b")]
            await respond(responses_app.NewResponse(model="echo", input=then, previous_response_id=warm.record.response_id))
            sent.clear()
            began = await turns_app.begin_chat(store, registry, caller, generations.lease, chat, launch)
            assert isinstance(began, ReplyInFlight) and (await began.settled).reply is not None
            # The turn, then its record: the conversation made and the reply registered in one statement.
            recorded = ["BEGIN", "begin_append", "finish_pending_reply", "append_events", "COMMIT"]
            assert statements() == ["BEGIN", "begin_create", "create_turn", "COMMIT", *recorded]

            first = responses_app.NewResponse(model="echo", input=[Utterance(role="user", content="hello")])
            begun, reply = await respond(first)
            assert statements() == ["BEGIN", "begin_create", "create_turn", "COMMIT", *recorded]
            made = responses_app.recorded(begun.record, reply)
            assert made == await responses_app.found_after(store, caller, begun.record.response_id)
            assert made.status == "completed"

            again = responses_app.NewResponse(
                model="echo", input=[Utterance(role="user", content="and then?")],
                previous_response_id=begun.record.response_id, store=False, echo=b'{"instructions": "x"}',
            )  # fmt: skip
            statements()
            begun, reply = await respond(again)
            # The previous response (read before the lock), then the turn: lock, context, write.
            turn = ["get_response", "BEGIN", "begin_append", "message_path", "append_turn", "COMMIT"]
            assert statements() == [*turn, *recorded]
            made = responses_app.recorded(begun.record, reply)
            assert made == await responses_app.found_after(store, caller, begun.record.response_id)
        finally:
            await generations.close()
            await registry.aclose()
            await pool.close()

    run(go())
