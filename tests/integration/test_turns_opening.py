"""The reply a turn launches before its transaction commits: counted only if the turn is recorded,
and nothing of it relayed before.

Over HTTP a turn's transaction fails after the launch only in races (a concurrent writer taking the
same message id) or at its COMMIT, so the use case is driven directly first; then, over HTTP, a
server whose database is made to fail (or take its time) at the COMMIT of chosen messages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from service.app import conversations as conversations_app
from service.app.turn import opening
from service.app.turn.plan import ContextItem, Plan, ReplySpec
from service.app.caller import Caller
from service.app.turn.relay import Replies
from service.store.events import Store
from service.upstream import EchoProvider
from tests.fakeupstream import Fault, FakeUpstream
from tests.helpers import create, problem
from tests.postgres import Databases, fetch, run
from tests.servers import Server, fake_registry
from tests.turnkit import assert_settled, sse, turn_failures



class Refused(Exception):
    """The turn's transaction failed after its reply was launched."""


def test_a_reply_launched_by_a_turn_that_does_not_commit_is_stopped_and_never_recorded(databases):
    url = databases.migrated()

    async def go() -> None:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        assert pool is not None
        store = Store(pool)
        generations = Replies(store, lease_seconds=60.0)
        caller = Caller(tenant="t", actor="test")
        try:
            async with store.transaction() as tx:
                created = await conversations_app.create(tx, caller, conversations_app.NewConversation(system="rules"))
            cid = created.conversation.id
            launched = []

            async def work(o: opening.Opening) -> None:
                conversation, scope = await o.tx.get_scoped(caller.tenant, cid)
                root = await o.tx.get_message(scope, conversation.head_id)
                items = [ContextItem(id=root.id, role=root.role, content=root.content)]
                provider = EchoProvider(delay=0.2)  # slow enough to be still talking when the transaction fails
                await o.register(scope.family_id, cid, root.id, provider, "echo", None)
                await o.reply(cid, scope.family_id, root, items, provider, "echo", ReplySpec())
                raise Refused()

            def launch(plan: Plan):
                launched.append(generations.start(caller, plan, relay=True))
                return launched[-1]

            with pytest.raises(Refused):
                await opening.opened(store, caller, generations.lease, launch, work)
            [generation] = launched
            settled = await generation.settled
            assert settled.reply is None and isinstance(settled.error, Refused)
            assert [piece async for batch in generation.deltas() for piece in batch] == []  # relay ended
            async with store.reader() as tx:
                assert await tx.conn.fetch("SELECT 1 FROM pending_replies") == []
                types = await tx.conn.fetch(
                    "SELECT type, role FROM events WHERE conversation_id = $1 ORDER BY seq", cid
                )
            # Only the conversation and its system prompt: no reply, and no failure either (no turn was recorded).
            assert [(t["type"], t["role"]) for t in types] == [
                ("conversation_created", None),
                ("message_appended", "system"),
            ]
        finally:
            await generations.close()
            await pool.close()

    run(go())


# Deferred to the COMMIT of the transaction that writes the body: a user message "slow commit ..."
# makes that COMMIT take a second; one "refused at commit ..." makes it fail after 0.3 s.
AT_COMMIT = """
CREATE FUNCTION test_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content LIKE 'slow commit%' THEN
        PERFORM pg_sleep(1.0);
    ELSIF NEW.content LIKE 'refused at commit%' THEN
        PERFORM pg_sleep(0.3);
        RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER bodies_at_commit AFTER INSERT ON bodies
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_at_commit();
"""


@pytest.fixture(scope="module")
def committing(databases: Databases, upstream_server: FakeUpstream) -> Iterator[Server]:
    url = databases.migrated()

    async def install() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(AT_COMMIT)  # two statements: the simple protocol takes them at once
        finally:
            await conn.close()

    run(install())
    with Server(url, fake_registry(upstream_server)) as srv:
        yield srv


@pytest.fixture
def committing_api(committing: Server, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    _, key = committing.new_key()
    with committing.client(key) as client:
        yield client


def user_messages(database_url: str, cid: str) -> list[str]:
    rows = fetch(
        database_url,
        "SELECT b.content FROM events e JOIN bodies b USING (family_id, message_id)"
        " WHERE e.conversation_id = $1 AND e.role = 'user' ORDER BY e.seq",
        uuid.UUID(cid),
    )
    return [r["content"] for r in rows]


@pytest.mark.parametrize("stream", [True, False])
def test_a_commit_failing_while_the_model_talks_stops_it_and_the_client_gets_the_error_and_nothing_else(
    committing, committing_api, upstream, stream
):
    cid = create(committing_api, system="rules")["id"]
    upstream.fail_next(Fault.endless())  # talking (every 20 ms) all the while the COMMIT takes
    body = {"content": "refused at commit, please", "stream": stream}
    started = time.monotonic()
    if stream:
        with committing_api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
            assert r.status_code == 200
            events = list(sse(r))
        # No ids and no text of a turn that does not exist: only the error.
        [(name, error)] = events
        assert name == "error" and error["status"] == 500 and error["type"].endswith(":internal-error")
        assert error.get("message") is None  # and no reply stored
    else:
        problem(committing_api.post(f"/v1/conversations/{cid}/turns", json=body), 500, "internal-error")
    assert time.monotonic() - started < 5  # the endless reply was not waited for
    assert upstream.wait_for_disconnect(5) is not None  # the model was stopped
    assert [r.body["messages"][-1]["content"] for r in upstream.requests] == ["refused at commit, please"]
    # Nothing of the turn was recorded: no user message, no reply, no failure, nothing pending.
    assert user_messages(committing.database_url, cid) == []
    assert turn_failures(committing.database_url, cid) == []
    assert committing_api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1
    assert_settled(committing.database_url, cid)


def test_the_model_is_called_while_the_turn_commits_and_nothing_reaches_the_client_before_the_commit(
    committing, committing_api, upstream
):
    cid = create(committing_api, system="rules")["id"]
    upstream.fail_next(Fault.slow_first_byte(1.0))  # as long as the COMMIT takes
    body = {"content": "slow commit, please", "stream": True}
    started = time.monotonic()
    with committing_api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
        events = sse(r)
        name, ids = next(events)
        first = time.monotonic() - started
        # When the first event arrives, the user message is already durable.
        assert name == "turn"
        assert user_messages(committing.database_url, cid) == ["slow commit, please"]
        rest = list(events)
    assert rest[0][0] == "delta" and rest[-1][0] == "done"
    assert rest[-1][1]["content"] == "".join(data["text"] for n, data in rest if n == "delta")
    # The model's second and the COMMIT's second overlapped: one after the other would take two.
    assert 1.0 <= first < 1.8, first
    assert rest[-1][1]["id"] == ids["assistant_message_id"]
    assert_settled(committing.database_url, cid)


def test_a_streamed_chat_completion_whose_commit_fails_ends_with_only_the_error(committing, committing_api, upstream):
    upstream.fail_next(Fault.endless())
    message = {"role": "user", "content": "refused at commit, please"}
    body = {"model": "fake-large", "messages": [message], "stream": True}
    with committing_api.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        [(_, chunk)] = list(sse(r))  # no chunk with ids, no text: the conversation was never made
    assert chunk["error"]["code"] == "internal-error" and chunk["error"]["type"] == "server_error"
    assert chunk["problem"]["type"].endswith(":internal-error")
    assert upstream.wait_for_disconnect(5) is not None
    assert committing_api.get("/v1/conversations").json()["items"] == []


def test_a_streamed_response_whose_commit_fails_ends_with_an_error_event_both_specs_read(
    committing, committing_api, upstream
):
    """OpenAI's `error` event is flat (`code`, `message`, `param`); Open Responses' carries the same
    in an `error` object with its `type`. The event says it both ways, so either client reads it."""
    upstream.fail_next(Fault.endless())
    body = {"model": "fake/fake-large", "input": "refused at commit, please", "stream": True}
    with committing_api.stream("POST", "/openai/v1/responses", json=body) as r:
        assert r.status_code == 200
        [(name, event), (_, done)] = list(sse(r))  # no response.created: the response never existed
    assert name == "error" == event["type"] and event["sequence_number"] == 0 and done == "[DONE]"
    assert event["code"] == "internal-error" and event["message"] and "param" in event
    assert event["error"] == {"type": "server_error", "code": event["code"], "message": event["message"], "param": None}
    assert upstream.wait_for_disconnect(5) is not None
