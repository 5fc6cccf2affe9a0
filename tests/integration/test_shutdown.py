"""SIGTERM: `convtree serve` answers its open long-polls, ends its streams with a last event, and
exits within a couple of seconds when nothing else is running."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.postgres import Databases, fetch, run
from tests.servers import ServeProcess

EXIT_SECONDS = 2.0


@pytest.fixture
def served(databases: Databases) -> Iterator[ServeProcess]:
    with ServeProcess(databases.migrated()) as process:
        _, process.key = process.new_key("shutdown", "t")
        yield process


def test_an_idle_process_exits_within_two_seconds_of_sigterm(served):
    with served.client() as api:
        assert api.post("/v1/conversations", json={"title": "t"}).status_code == 201
    assert served.terminate() < EXIT_SECONDS


def test_sigterm_answers_long_polls_and_ends_streams_cleanly_then_exits(served):
    with served.client() as api:
        cid = api.post("/v1/conversations", json={"title": "t"}).json()["id"]
        after = api.get("/v1/events").json()["next_after"]
    results: dict[str, Any] = {}
    stream_open = threading.Event()

    def long_poll() -> None:
        with served.client(timeout=60) as api:
            try:
                results["poll"] = api.get("/v1/events", params={"after": after, "wait": 50})
            except httpx.HTTPError as exc:
                results["poll"] = exc

    def follow() -> None:
        lines: list[str] = []
        results["stream"] = lines
        with served.client(timeout=60) as api:
            try:
                with api.stream("GET", "/v1/events", params={"after": after}, headers={"Accept": "text/event-stream"}) as r:
                    results["stream_status"] = r.status_code
                    stream_open.set()
                    lines.extend(r.iter_lines())
                results["stream_closed"] = True
            except httpx.HTTPError as exc:
                results["stream_error"] = exc
            finally:
                stream_open.set()

    threads = [threading.Thread(target=long_poll), threading.Thread(target=follow)]
    for t in threads:
        t.start()
    assert stream_open.wait(10)
    time.sleep(0.5)  # the long-poll is waiting by now
    took = served.terminate()
    for t in threads:
        t.join(timeout=10)

    poll = results["poll"]
    assert isinstance(poll, httpx.Response) and poll.status_code == 200, poll
    assert poll.json() == {"items": [], "next_after": after}
    assert results["stream_status"] == 200 and "stream_error" not in results, results
    assert results.get("stream_closed"), results
    lines = results["stream"]
    assert "event: shutdown" in lines, lines
    assert any(line.startswith("data:") and f'"next_after":{after}' in line for line in lines), lines
    assert took < EXIT_SECONDS, took
    assert cid


def test_an_append_in_flight_at_sigterm_finishes(served):
    with served.client(timeout=30) as api:
        cid = api.post("/v1/conversations", json={"title": "t"}).json()["id"]

        async def scenario() -> tuple[httpx.Response, float]:
            admin = await asyncpg.connect(served.database_url)
            try:
                async with admin.transaction():
                    # The append waits for this lock: it is in flight when SIGTERM arrives.
                    await admin.execute(
                        "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", uuid.UUID(cid)
                    )
                    append = asyncio.create_task(
                        asyncio.to_thread(
                            api.post,
                            f"/v1/conversations/{cid}/messages",
                            json={"role": "user", "content": "in flight"},
                            headers={"Idempotency-Key": "in-flight"},
                        )
                    )
                    await asyncio.sleep(0.5)
                    terminated = asyncio.create_task(asyncio.to_thread(served.terminate))
                    await asyncio.sleep(0.5)
                return await append, await terminated
            finally:
                await admin.close()

        response, took = run(scenario())
    assert response.status_code == 201, response.text
    assert took < EXIT_SECONDS + 1, took
    assert response.json()["content"] == "in flight"
    stored = fetch(served.database_url, "SELECT message_count FROM conversations WHERE conversation_id = $1", uuid.UUID(cid))
    assert stored[0]["message_count"] == 1
