"""Recording a reply when the database goes away as the model finishes: retried through a short
outage, kept in memory and stored as interrupted (with the text the client was shown) once the
database is back; a lease kept alive only by the task that owns its reply."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.fakeupstream import Fault, FakeUpstream
from tests.helpers import create, problem, say
from tests.pgproxy import PgProxy
from tests.postgres import Databases, fetch
from tests.servers import Server, fake_registry
from tests.turnkit import assert_settled, sse, turn, turn_failures, wait_for



@pytest.fixture
def proxied(databases: Databases, upstream: FakeUpstream) -> Iterator[tuple[Server, PgProxy, str]]:
    """A model server whose database is reached through a proxy the test can cut; and the direct URL."""
    url = databases.migrated()
    with PgProxy(url) as proxy:
        srv = Server(proxy.url, fake_registry(upstream), reply_record_seconds=0.5, reply_lease_seconds=2.0)
        srv.start()
        try:
            yield srv, proxy, url
        finally:
            proxy.restore()
            srv.stop()


def test_a_reply_that_cannot_be_recorded_is_stored_as_interrupted_with_the_text_shown_once_the_database_is_back(
    proxied, upstream
):
    srv, proxy, url = proxied
    _, key = srv.new_key()
    with srv.client(key) as api:
        cid = create(api)["id"]
        upstream.fail_next(Fault.hold(after=2))
        with api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "hi", "stream": True}) as r:
            events = sse(r)
            started = next(events)[1]
            shown = [next(events)[1]["text"] for _ in range(2)]
            proxy.cut()  # the database goes away just before the model finishes
            upstream.release()
            rest = list(events)
        shown += [data["text"] for name, data in rest if name == "delta"]
        name, error = rest[-1]
        assert name == "error"
        assert error["status"] == 503 and error["type"] == "urn:convtree:problem:reply-not-recorded"
        assert error["context"]["assistant_message_id"] == started["assistant_message_id"]
        assert "the database cannot be reached" in error["detail"] and "as soon as the database takes it" in error["detail"]
        proxy.restore()
        reply_url = f"/v1/conversations/{cid}/messages/{started['assistant_message_id']}"
        reply = wait_for(lambda: api.get(reply_url).json() if api.get(reply_url).status_code == 200 else None)
        assert reply["content"] == "".join(shown) == "Hello from fake-large. You said: hi"
        g = reply["generation"]
        assert g["finish_reason"] == "interrupted" and g["interruption"]["kind"] == "record_delayed"
        assert api.get(f"/v1/conversations/{cid}").json()["head_id"] == reply["id"]
        # The conversation takes turns again, under the reply.
        assert turn(api, cid, "again")["user_message"]["parent_message_id"] == reply["id"]
    assert turn_failures(url, cid) == []
    assert_settled(url, cid)


def test_a_short_outage_as_the_reply_ends_is_retried_through_and_the_reply_is_recorded_whole(proxied, upstream):
    srv, proxy, url = proxied
    _, key = srv.new_key()
    with srv.client(key) as api:
        cid = create(api)["id"]
        upstream.fail_next(Fault.hold(after=2))
        with api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "hi", "stream": True}) as r:
            events = sse(r)
            next(events)
            proxy.cut()
            threading.Timer(0.2, proxy.restore).start()  # back well within the 0.5 s of retries
            upstream.release()
            rest = list(events)
        name, done = rest[-1]
        assert name == "done", done
        assert done["content"] == "Hello from fake-large. You said: hi"
        assert done["generation"]["finish_reason"] == "stop"
    assert_settled(url, cid)


def test_a_plain_turn_whose_reply_cannot_be_recorded_gets_a_503_with_retry_after_and_its_retry_the_reply(
    proxied, upstream
):
    srv, proxy, url = proxied
    _, key = srv.new_key()
    with srv.client(key) as api:
        cid = create(api)["id"]
        upstream.fail_next(Fault.hold(after=2))
        user_id = str(uuid.uuid4())
        result: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: result.update(
                r=api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "id": user_id})
            )
        )
        thread.start()
        wait_for(lambda: fetch(url, "SELECT 1 FROM pending_replies WHERE conversation_id = $1", uuid.UUID(cid)))
        proxy.cut()
        upstream.release()
        thread.join(timeout=20)
        r = result["r"]
        body = problem(r, 503, "reply-not-recorded")  # type: ignore[arg-type]
        assert int(r.headers["retry-after"]) >= 1  # type: ignore[union-attr]
        proxy.restore()
        # The retry of the turn finds the reply, once it is stored.
        retry = wait_for(
            lambda: (
                x := api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi", "id": user_id})
            ).status_code
            == 200
            and x
        )
        reply = retry.json()["assistant_message"]
        assert reply["id"] == body["context"]["assistant_message_id"]
        assert reply["content"] == "Hello from fake-large. You said: hi"
    assert_settled(url, cid)


def test_a_pending_reply_no_live_task_owns_runs_out_while_its_process_runs_other_turns(databases, upstream):
    url = databases.migrated()
    srv = Server(url, fake_registry(upstream), reply_lease_seconds=1.0)
    srv.start()
    try:
        _, key = srv.new_key()
        with srv.client(key) as api:
            busy, stuck = create(api)["id"], create(api)["id"]
            user = say(api, stuck, "are you there?")
            upstream.fail_next(Fault.endless())
            with api.stream("POST", f"/v1/conversations/{busy}/turns", json={"content": "go", "stream": True}) as r:
                events = sse(r)  # kept open: the process has a live generation all along
                next(events)
                [owner] = fetch(url, "SELECT owner FROM pending_replies WHERE conversation_id = $1", uuid.UUID(busy))
                # What a reply whose record failed leaves: a pending row of this process that no task owns.
                fetch(
                    url,
                    "INSERT INTO pending_replies (family_id, reply_id, tenant, conversation_id, user_message_id,"
                    " provider, model, actor, request_id, owner, expires_at)"
                    " SELECT family_id, $1, tenant, conversation_id, $2, 'fake', 'fake-large', 'test', NULL, $3,"
                    "        now() + interval '1 second'"
                    "   FROM conversations WHERE conversation_id = $4",
                    uuid.uuid4(),
                    uuid.UUID(user["id"]),
                    owner["owner"],
                    uuid.UUID(stuck),
                )
                problem(api.post(f"/v1/conversations/{stuck}/turns", json={"content": "hello?"}), 409,
                        "parent-still-generating")  # fmt: skip
                [failure] = wait_for(lambda: turn_failures(url, stuck))
                assert failure["error"] == "abandoned"
                assert turn(api, stuck, "hello?")["user_message"]["parent_message_id"] == user["id"]
                assert next(events)[0] == "delta"  # the other turn still runs, and its lease with it
                assert fetch(url, "SELECT 1 FROM pending_replies WHERE conversation_id = $1", uuid.UUID(busy))
        assert_settled(url, stuck)
    finally:
        srv.stop()
