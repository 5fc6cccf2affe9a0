"""A chat completion whose reply was generated but could not be recorded in time (the database busy)
answers 503 `reply-not-recorded`, and the official `openai` client retries it with the same history:
the retry gets that reply, whether it was recorded before the retry came or is still waiting to be,
and the model is called once. The database is made busy on purpose: the test holds, from a
connection of its own, the row the reply's record must lock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import openai

from tests.fakeupstream import FakeUpstream, Fault
from tests.postgres import Databases, run
from tests.servers import Server, fake_registry

MODEL = "fake-large"
QUESTION = "keep this one"
ANSWER = "Hello from fake-large. You said: " + QUESTION
AUTO_THREAD = {"Convtree-Auto-Thread": "on"}


def busy_server(databases: Databases, upstream: FakeUpstream) -> Server:
    # A record that waits on a held lock gives up after 0.3 s a try, and tells its client after 0.5 s.
    return Server(
        databases.migrated(),
        fake_registry(upstream),
        lock_timeout=0.3,
        reply_record_seconds=0.5,
    )


async def until(check: Callable[[], Awaitable[Any]]) -> Any:
    """What `check` returns once it returns something (the test's own timeout bounds the wait)."""
    while not (found := await check()):
        await asyncio.sleep(0.02)
    return found


class Retrying:
    """The official client with its retries, and what it saw: each answer's status and, for an
    error, its `code` (and its message in `messages`); `on_retry` runs as a retry is sent."""

    def __init__(self, srv: Server, key: str, on_retry: Callable[[], Awaitable[None]]) -> None:
        self.answers: list[tuple[int, str | None]] = []
        self.messages: list[str] = []

        async def request(request: httpx.Request) -> None:
            if request.headers.get("x-stainless-retry-count", "0") == "1":
                await on_retry()

        async def response(response: httpx.Response) -> None:
            await response.aread()
            code = response.json()["error"]["code"] if response.status_code >= 400 else None
            self.answers.append((response.status_code, code))
            if code is not None:
                self.messages.append(response.json()["error"]["message"])

        http = httpx.AsyncClient(event_hooks={"request": [request], "response": [response]}, timeout=60)
        self.client = openai.AsyncOpenAI(
            base_url=srv.base_url + "/v1",
            api_key=key,
            max_retries=3,
            http_client=http,
            default_headers=AUTO_THREAD,
        )

    async def ask(self) -> Any:
        return await self.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])


async def pending_reply(admin: asyncpg.Connection, tenant: str) -> asyncpg.Record:
    """The turn's reply once its turn is committed (the model is held meanwhile)."""
    return await until(
        lambda: admin.fetchrow(
            "SELECT conversation_id, reply_id FROM pending_replies WHERE tenant = $1",
            tenant,
        )
    )


def stored(srv: Server, key: str, conversation_id: str) -> tuple[list[tuple[str, str]], int]:
    with srv.client(key) as api:
        tree = api.get(f"/v1/conversations/{conversation_id}/tree").json()
        leaves = api.get(f"/v1/conversations/{conversation_id}").json()["leaf_count"]
    return [(m["role"], m["content"]) for m in tree["messages"]], leaves


def test_a_retry_after_the_reply_was_not_recorded_in_time_gets_it_once_it_is(databases, upstream):
    with busy_server(databases, upstream) as srv:
        tenant, key = srv.new_key()
        upstream.fail_next(Fault.hold(after=1))

        async def scenario() -> tuple[Any, asyncpg.Record, list[tuple[int, str | None]], list[str]]:
            admin = await asyncpg.connect(srv.database_url)
            held = admin.transaction()

            async def recorded_first() -> None:
                # The database is free again, and the kept reply recorded, before the retry arrives.
                await held.rollback()
                await until(
                    lambda: admin.fetchval(
                        "SELECT NOT EXISTS (SELECT 1 FROM pending_replies WHERE tenant = $1)",
                        tenant,
                    )
                )

            client = Retrying(srv, key, recorded_first)
            try:
                asked = asyncio.create_task(client.ask())
                turn = await pending_reply(admin, tenant)
                await held.start()
                await admin.execute(
                    "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE",
                    turn["conversation_id"],
                )
                upstream.release()
                return await asked, turn, client.answers, client.messages
            finally:
                await client.client.close()
                await admin.close()

        completion, turn, answers, messages = run(scenario())
        assert answers == [(503, "reply-not-recorded"), (200, None)]
        # The database was there, only busy: the client is told so, not that it cannot be reached.
        assert "too busy" in messages[0] and "cannot be reached" not in messages[0], messages
        assert completion.choices[0].message.content == ANSWER
        assert completion.model_extra["message_id"] == str(turn["reply_id"])
        assert stored(srv, key, str(turn["conversation_id"])) == (
            [("user", QUESTION), ("assistant", ANSWER)],
            1,
        )
        assert len(upstream.requests) == 1


def test_a_retry_while_the_reply_still_waits_to_be_recorded_waits_for_it(databases, upstream):
    with busy_server(databases, upstream) as srv:
        tenant, key = srv.new_key()
        upstream.fail_next(Fault.hold(after=1))

        async def scenario() -> tuple[Any, asyncpg.Record, list[tuple[int, str | None]]]:
            admin = await asyncpg.connect(srv.database_url)
            watch = await asyncpg.connect(srv.database_url)  # outside the transaction: its view is live
            held = admin.transaction()
            freed: list[asyncio.Task[None]] = []

            async def free() -> None:
                # Once the retry waits for the kept reply (or, as it did before, asks the model
                # again), the record may go on.
                await until(lambda: waits_or_asks_again(watch, upstream))
                await held.rollback()

            async def waiting_retry() -> None:
                freed.append(asyncio.create_task(free()))

            client = Retrying(srv, key, waiting_retry)
            try:
                asked = asyncio.create_task(client.ask())
                turn = await pending_reply(admin, tenant)
                # Its record cannot close the pending row: it waits, gives up, and tells the client.
                await held.start()
                await admin.execute(
                    "SELECT 1 FROM pending_replies WHERE reply_id = $1 FOR UPDATE",
                    turn["reply_id"],
                )
                upstream.release()
                completion = await asked
                await asyncio.gather(*freed)
                return completion, turn, client.answers
            finally:
                await client.client.close()
                await admin.close()
                await watch.close()

        completion, turn, answers = run(scenario())
        assert answers == [(503, "reply-not-recorded"), (200, None)]
        assert completion.choices[0].message.content == ANSWER
        assert completion.model_extra["message_id"] == str(turn["reply_id"])
        assert stored(srv, key, str(turn["conversation_id"])) == (
            [("user", QUESTION), ("assistant", ANSWER)],
            1,
        )
        assert len(upstream.requests) == 1


async def waits_or_asks_again(admin: asyncpg.Connection, upstream: FakeUpstream) -> bool:
    return len(upstream.requests) > 1 or await retry_waits(admin)


async def retry_waits(admin: asyncpg.Connection) -> bool:
    """Whether a session of the service polls whether a reply is still pending (opening._recorded)."""
    return bool(
        await admin.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'convtree'"
            " AND query LIKE '%SELECT EXISTS (SELECT 1 FROM pending_replies WHERE family_id%')"
        )
    )
