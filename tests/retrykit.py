"""Helpers for the tests of a client's own retry after a 503 `reply-not-recorded`: a server whose
reply records give up fast, the official `openai` client with its retries (and what it saw), and
the scenario both OpenAI doors are tested with. The database is made busy on purpose: the test
holds, from a connection of its own, the row the reply's record must lock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import httpx
import openai

from tests.fakeupstream import FakeUpstream
from tests.postgres import Databases
from tests.servers import Server, fake_registry

# The rows a reply's record must lock, held by the test in turn:
# - `conversations`: the record gives up, and the row is free again (the kept reply recorded)
#   before the client's retry is sent;
# - `pending_replies`: the row stays held until the retry is seen waiting for the kept reply (or,
#   as it did before, asking the model again).
HELD = ["conversations", "pending_replies"]


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
    """The official client with its retries, at `path` of `srv`, and what it saw: each answer's
    status and, for an error, its `code` (`answers`) and message (`messages`), and the headers of
    each retry it sent (`retried`); `on_retry` runs as the first retry is sent."""

    def __init__(
        self,
        srv: Server,
        api_key: str,
        path: str,
        on_retry: Callable[[], Awaitable[None]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.answers: list[tuple[int, str | None]] = []
        self.messages: list[str] = []
        self.retried: list[httpx.Headers] = []

        async def request(request: httpx.Request) -> None:
            if request.headers.get("x-stainless-retry-count", "0") != "0":
                self.retried.append(request.headers)
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
            base_url=srv.base_url + path,
            api_key=api_key,
            max_retries=3,
            http_client=http,
            default_headers=dict(headers or {}),
        )


async def pending_reply(admin: asyncpg.Connection, tenant: str) -> asyncpg.Record:
    """The turn's reply once its turn is committed (the model is held meanwhile)."""
    return await until(
        lambda: admin.fetchrow(
            "SELECT conversation_id, reply_id FROM pending_replies WHERE tenant = $1",
            tenant,
        )
    )


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


async def retried_past_a_held_record(
    srv: Server,
    tenant: str,
    api_key: str,
    upstream: FakeUpstream,
    held: str,
    path: str,
    ask: Callable[[openai.AsyncOpenAI], Awaitable[Any]],
    headers: Mapping[str, str] | None = None,
) -> tuple[Any, asyncpg.Record, Retrying]:
    """`ask` a turn through the official client at `path` (Retrying), the model held until the turn
    is committed; then hold the `held` row (HELD) of its reply from a connection of the test's own,
    and let the model answer: the reply's record gives up, the client is answered 503 and retries.
    What `ask` came to, the turn's pending reply, and what the client saw (`api_key` is `tenant`'s)."""
    admin = await asyncpg.connect(srv.database_url)
    watch = await asyncpg.connect(srv.database_url)  # outside the transaction: its view is live
    lock = admin.transaction()
    freed: list[asyncio.Task[None]] = []

    async def free() -> None:
        if held == "pending_replies":  # once the retry waits (or asks the model again)
            await until(lambda: waits_or_asks_again(watch, upstream))
        await lock.rollback()
        if held == "conversations":  # the kept reply recorded before the retry is sent
            await until(
                lambda: watch.fetchval(
                    "SELECT NOT EXISTS (SELECT 1 FROM pending_replies WHERE tenant = $1)",
                    tenant,
                )
            )

    async def on_retry() -> None:
        task = asyncio.create_task(free())
        freed.append(task)
        if held == "conversations":
            await task

    client = Retrying(srv, api_key, path, on_retry, headers)
    try:
        asked = asyncio.create_task(ask(client.client))
        turn = await pending_reply(admin, tenant)
        await lock.start()
        if held == "conversations":
            await admin.execute(
                "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE",
                turn["conversation_id"],
            )
        else:
            await admin.execute(
                "SELECT 1 FROM pending_replies WHERE reply_id = $1 FOR UPDATE",
                turn["reply_id"],
            )
        upstream.release()
        answer = await asked
        await asyncio.gather(*freed)
        return answer, turn, client
    finally:
        await client.client.close()
        await admin.close()
        await watch.close()


def stored(srv: Server, api_key: str, conversation_id: object) -> tuple[list[tuple[str, str]], int]:
    """The conversation's messages (role, content), in the order written, and its leaf count."""
    with srv.client(api_key) as api:
        tree = api.get(f"/v1/conversations/{conversation_id}/tree").json()
        leaves = api.get(f"/v1/conversations/{conversation_id}").json()["leaf_count"]
    return [(m["role"], m["content"]) for m in tree["messages"]], leaves
