"""PostgreSQL away, or one conversation held locked: 503 with Retry-After instead of a 500 or a hang,
full service again within seconds of the database's return, and the rest of the service unharmed
by one locked conversation."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import create, problem, say
from tests.pgproxy import PgProxy
from tests.postgres import Databases, fetch, run
from tests.servers import Server


RECOVERY_SECONDS = 5.0


@pytest.fixture
def outage(databases: Databases) -> Iterator[tuple[PgProxy, Server, Server]]:
    """A server whose database is behind a proxy the test can cut, and a second server on the same
    database that the cut does not reach (another process writing meanwhile)."""
    url = databases.migrated()
    with PgProxy(url) as proxy:
        # Keys are cached for the whole test, so that requests during the outage reach the
        # operation itself, not only the key lookup (which answers 503 as well).
        srv = Server(proxy.url, key_cache_seconds=600.0, lock_timeout=2.0, pool_acquire_timeout=2.0)
        direct = Server(url)
        srv.start()
        direct.start()
        try:
            yield proxy, srv, direct
        finally:
            proxy.restore()  # the server closes its pool on the way out
            srv.stop()
            direct.stop()


def unavailable(response: httpx.Response) -> dict[str, Any]:
    body = problem(response, 503, "database-unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    return body


class Follower:
    """An SSE follower of the tenant's feed, read in a thread: its events' ids, as they come."""

    def __init__(self, srv: Server, key: str, after: int = 0) -> None:
        self.ids: queue.Queue[int] = queue.Queue()
        self.opened = threading.Event()
        self.error: BaseException | None = None
        self._client = httpx.Client(
            base_url=srv.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(30, read=60)
        )
        self._after = after
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10)

    def _read(self) -> None:
        headers = {"Accept": "text/event-stream"}
        try:
            with self._client.stream("GET", "/v1/events", params={"after": self._after}, headers=headers) as r:
                assert r.status_code == 200
                self.opened.set()
                for line in r.iter_lines():
                    if line.startswith("id:"):
                        self.ids.put(int(line[3:]))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc
            self.opened.set()

    def next_id(self, timeout: float) -> int:
        return self.ids.get(timeout=timeout)

    def close(self) -> None:
        self._client.close()


def test_with_the_database_away_every_kind_of_request_gets_503_with_retry_after(outage):
    proxy, srv, _ = outage
    _, key = srv.new_key()
    with srv.client(key) as api:
        cid = create(api, title="before")["id"]
        mid = say(api, cid, "hello")["id"]
        assert api.get("/readyz").status_code == 200
        proxy.cut()

        started = time.monotonic()
        r = api.get("/readyz")
        assert r.status_code == 503 and time.monotonic() - started < 1.5
        unavailable(api.get(f"/v1/conversations/{cid}"))
        unavailable(api.get(f"/v1/conversations/{cid}/context"))
        unavailable(api.get(f"/v1/conversations/{cid}/tree"))
        unavailable(api.get("/v1/conversations"))
        unavailable(api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"}))
        unavailable(
            api.post(
                f"/v1/conversations/{cid}/messages",
                json={"role": "user", "content": "x"},
                headers={"Idempotency-Key": "k1"},
            )
        )
        unavailable(api.post("/v1/conversations", json={"title": "new"}))
        unavailable(api.put(f"/v1/conversations/{cid}/head", json={"message_id": mid}))
        unavailable(api.post(f"/v1/conversations/{cid}/messages/{mid}/fork", json={}))
        unavailable(api.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "r"}))
        unavailable(api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "provider": "echo"}))
        unavailable(
            api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "provider": "echo", "stream": True})
        )
        unavailable(api.get("/v1/events"))
        unavailable(api.get("/v1/events", params={"wait": 5}))
        unavailable(api.get("/v1/events", headers={"Accept": "text/event-stream"}))
        unavailable(api.get(f"/v1/conversations/{cid}/events"))
        unavailable(api.get(f"/v1/conversations/{cid}/audit"))
        unavailable(api.get(f"/v1/conversations/{cid}/export"))
        r = api.post("/v1/chat/completions", json={"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]})
        # The OpenAI door says so as OpenAI does.
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
        assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("server_error", "database-unavailable")
        # The outage shows in the metrics, which need no database.
        metrics = api.get("/metrics").text
        counted = [line for line in metrics.splitlines() if line.startswith('convtree_database_errors_total{error="DatabaseUnavailable"}')]
        assert counted and float(counted[0].split()[-1]) >= 10, metrics


def test_after_the_database_returns_the_service_is_whole_again_within_seconds(outage):
    proxy, srv, direct = outage
    tenant, key = srv.new_key()
    _, direct_key = direct.new_key(tenant)
    with srv.client(key) as api, direct.client(direct_key) as other:
        cid = create(api, title="t")["id"]
        last = say(api, cid, "before")["seq"]
        follower = Follower(srv, key, after=last)
        try:
            proxy.cut()
            unavailable(api.get(f"/v1/conversations/{cid}"))
            # Another server writes while this one cannot reach the database.
            during = say(other, cid, "during the outage")
            since = fetch(direct.database_url, "SELECT now() AS t")[0]["t"]
            proxy.restore()
            restored = time.monotonic()
            while True:
                statuses = {
                    api.get("/readyz").status_code,
                    api.get(f"/v1/conversations/{cid}").status_code,
                    api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "after"}).status_code,
                    api.get("/v1/events", params={"after": last}).status_code,
                    api.post(f"/v1/conversations/{cid}/turns", json={"content": "t", "provider": "echo"}).status_code,
                }
                if statuses == {200, 201}:
                    break
                assert time.monotonic() - restored < RECOVERY_SECONDS, statuses
                time.sleep(0.1)
            # The follower went on from where it was: it gets what was written meanwhile, and after.
            assert follower.next_id(RECOVERY_SECONDS) == during["seq"]
            assert follower.next_id(RECOVERY_SECONDS) > during["seq"]
            # The feed's listener is back on its own connection, and a new event wakes a long-poll.
            while not fetch(
                direct.database_url,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'convtree-listener' AND backend_start > $1 AND client_port IS NOT NULL",
                since,
            ):
                assert time.monotonic() - restored < RECOVERY_SECONDS, "the feed's listener did not reconnect"
                time.sleep(0.1)
            after = api.get("/v1/events", params={"after": 0, "limit": 1000}).json()["next_after"]
            got: dict[str, Any] = {}
            poll = threading.Thread(
                target=lambda: got.update(api.get("/v1/events", params={"after": after, "wait": 20}).json())
            )
            poll.start()
            time.sleep(0.3)
            written = say(other, cid, "wakes the poll")
            poll.join(timeout=RECOVERY_SECONDS)
            assert [e["seq"] for e in got["items"]] == [written["seq"]]
        finally:
            follower.close()


def test_a_held_conversation_lock_leaves_the_rest_of_the_service_alone(databases):
    url = databases.migrated()
    srv = Server(url, lock_timeout=2.0, pool_max_size=20)
    srv.start()
    try:
        _, key = srv.new_key()
        with srv.client(key) as api:
            held = create(api, title="held")["id"]
            free = create(api, title="free")["id"]

            async def scenario() -> tuple[list[httpx.Response], float, list[float]]:
                admin = await asyncpg.connect(url)
                headers = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=srv.base_url, headers=headers, timeout=30) as client:
                    tx = admin.transaction()
                    await tx.start()
                    await admin.execute(
                        "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", uuid.UUID(held)
                    )
                    started = time.monotonic()
                    keyed = [
                        asyncio.create_task(
                            client.post(
                                f"/v1/conversations/{held}/messages",
                                json={"role": "user", "content": f"keyed {i}"},
                                headers={"Idempotency-Key": f"key-{i}"},
                            )
                        )
                        for i in range(20)
                    ]
                    await asyncio.sleep(0.5)  # every keyed append is in flight
                    probes = []
                    for _ in range(3):
                        t = time.monotonic()
                        ready = await client.get("/readyz")
                        assert ready.status_code == 200, ready.text
                        probes.append(time.monotonic() - t)
                        t = time.monotonic()
                        r = await client.post(f"/v1/conversations/{free}/messages", json={"role": "user", "content": "x"})
                        assert r.status_code == 201, r.text
                        probes.append(time.monotonic() - t)
                    answered = await asyncio.gather(*keyed)
                    took = time.monotonic() - started
                    await tx.rollback()
                    await admin.close()
                return answered, took, probes

            answered, took, probes = run(scenario())
            assert max(probes) < 1.0, probes
            for r in answered:
                problem(r, 503, "database-busy")
                assert int(r.headers["Retry-After"]) >= 1
            assert took < 10, took  # bounded by the lock timeout, not by the lock's holder
            # Once the lock is gone, a retry with the same key goes through.
            r = api.post(
                f"/v1/conversations/{held}/messages",
                json={"role": "user", "content": "keyed 0"},
                headers={"Idempotency-Key": "key-0"},
            )
            assert r.status_code == 201, r.text
    finally:
        srv.stop()


def test_a_statement_that_outlasts_the_statement_timeout_answers_503(databases):
    url = databases.migrated()
    srv = Server(url, lock_timeout=30.0, statement_timeout=0.5)
    srv.start()
    try:
        _, key = srv.new_key()
        with srv.client(key) as api:
            cid = create(api, title="t")["id"]

            async def hold() -> httpx.Response:
                admin = await asyncpg.connect(url)
                try:
                    async with admin.transaction():
                        await admin.execute(
                            "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", uuid.UUID(cid)
                        )
                        return await asyncio.to_thread(
                            api.put, f"/v1/conversations/{cid}/head", json={"message_id": str(uuid.uuid4())}
                        )
                finally:
                    await admin.close()

            r = run(hold())
            problem(r, 503, "database-busy")
            assert r.headers["Retry-After"]
    finally:
        srv.stop()


def test_turns_waiting_for_a_held_conversation_leave_the_pool_to_others(databases):
    url = databases.migrated()
    srv = Server(url, lock_timeout=2.0, pool_max_size=4)
    srv.start()
    try:
        _, key = srv.new_key()
        with srv.client(key) as api:
            held = create(api, title="held")["id"]
            free = create(api, title="free")["id"]

            async def scenario() -> tuple[list[httpx.Response], list[float]]:
                admin = await asyncpg.connect(url)
                headers = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=srv.base_url, headers=headers, timeout=30) as client:
                    async with admin.transaction():
                        await admin.execute(
                            "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE", uuid.UUID(held)
                        )
                        turns = [
                            asyncio.create_task(
                                client.post(f"/v1/conversations/{held}/turns", json={"content": f"t{i}", "provider": "echo"})
                            )
                            for i in range(10)
                        ]
                        await asyncio.sleep(0.5)  # every turn is in flight
                        probes = []
                        for _ in range(3):
                            t = time.monotonic()
                            assert (await client.get("/readyz")).status_code == 200
                            r = await client.post(f"/v1/conversations/{free}/messages", json={"role": "user", "content": "x"})
                            assert r.status_code == 201, r.text
                            probes.append(time.monotonic() - t)
                        answered = await asyncio.gather(*turns)
                await admin.close()
                return answered, probes

            answered, probes = run(scenario())
            assert max(probes) < 1.0, probes
            for r in answered:
                problem(r, 503, "database-busy")
    finally:
        srv.stop()
