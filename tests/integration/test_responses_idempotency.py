"""An Idempotency-Key on POST /openai/v1/responses, sent by the official `openai` client
(`extra_headers`, which it repeats on its own retries): a retry with the same key and request is the
response the key created (same id), whole or streamed, and the model is called once; one arriving
while the reply is generated waits for it; a background response's retry is answered at once with
the same response; the same key with another request is refused (this door's 400, the chat door's
code); keys are per tenant.
And the retry the client sends by itself after a 503 `reply-not-recorded` (the database busy, made
so by the test holding the row the reply's record must lock) gets that response."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import openai
import pytest

from tests.fakeupstream import FakeUpstream, Fault
from tests.postgres import run
from tests.retrykit import (
    HELD,
    busy_server,
    pending_reply,
    retried_past_a_held_record,
    stored,
    until,
    waits_or_asks_again,
)

MODEL = "fake/fake-large"
QUESTION = "keep this one"
ANSWER = "Hello from fake-large. You said: " + QUESTION


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def calls(upstream: FakeUpstream) -> int:
    return sum(r.method == "POST" for r in upstream.requests)


def response_id(reply_id: uuid.UUID) -> str:
    return f"resp_{reply_id.hex}"


@pytest.fixture
def client(model_server, upstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=model_server.base_url + "/openai/v1",
        api_key=model_server.new_key()[1],
        max_retries=0,
    ) as c:
        yield c


def test_a_response_retried_with_its_key_is_the_same_response_and_the_model_is_called_once(client, upstream):
    headers = key()
    first = client.responses.create(model=MODEL, input=QUESTION, extra_headers=headers)
    raw = client.responses.with_raw_response.create(model=MODEL, input=QUESTION, extra_headers=headers)
    again = raw.parse()
    assert raw.headers["idempotent-replayed"] == "true"
    assert again.id == first.id and again.status == "completed" and again.output_text == ANSWER
    assert [item.id for item in again.output] == [item.id for item in first.output]
    assert calls(upstream) == 1
    # Without a key, the same request is another response.
    other = client.responses.create(model=MODEL, input=QUESTION)
    assert other.id != first.id and calls(upstream) == 2


def test_a_streamed_response_retried_with_its_key_is_replayed_as_a_stream_of_it(client, upstream):
    headers = key()

    def streamed() -> list[Any]:
        with client.responses.create(model=MODEL, input=QUESTION, stream=True, extra_headers=headers) as stream:
            return list(stream)

    first, again = streamed(), streamed()
    for events in (first, again):
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    assert again[-1].response.id == first[-1].response.id
    assert again[-1].response.output_text == ANSWER
    assert calls(upstream) == 1


def test_the_same_key_with_another_request_is_refused_with_openais_error(client, upstream):
    headers = key()
    client.responses.create(model=MODEL, input=QUESTION, extra_headers=headers)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="something else", extra_headers=headers)
    assert refused.value.code == "idempotency-key-reused" and refused.value.type == "invalid_request_error"
    assert "Idempotency-Key" in refused.value.message
    assert calls(upstream) == 1


def test_keys_are_per_tenant(model_server, client, upstream):
    headers = key()
    mine = client.responses.create(model=MODEL, input=QUESTION, extra_headers=headers)
    base = model_server.base_url + "/openai/v1"
    with openai.OpenAI(base_url=base, api_key=model_server.new_key()[1], max_retries=0) as theirs:
        other = theirs.responses.create(model=MODEL, input=QUESTION, extra_headers=headers)
    assert other.id != mine.id and calls(upstream) == 2


def test_a_retry_while_the_response_is_generated_waits_for_it(model_server, upstream):
    upstream.fail_next(Fault.hold(after=1))
    tenant, api_key = model_server.new_key()
    headers = key()

    async def scenario() -> tuple[Any, Any, asyncpg.Record]:
        watch = await asyncpg.connect(model_server.database_url)
        client = openai.AsyncOpenAI(
            base_url=model_server.base_url + "/openai/v1",
            api_key=api_key,
            max_retries=0,
        )
        try:
            first = asyncio.create_task(client.responses.create(model=MODEL, input=QUESTION, extra_headers=headers))
            turn = await pending_reply(watch, tenant)
            retry = asyncio.create_task(client.responses.create(model=MODEL, input=QUESTION, extra_headers=headers))
            await until(lambda: waits_or_asks_again(watch, upstream))
            upstream.release()
            return await first, await retry, turn
        finally:
            await client.close()
            await watch.close()

    first, retry, turn = run(scenario())
    assert first.id == retry.id == response_id(turn["reply_id"])
    assert retry.status == "completed" and retry.output_text == ANSWER
    assert calls(upstream) == 1


def test_a_background_response_retried_with_its_key_is_answered_at_once_with_the_same_response(client, upstream):
    upstream.fail_next(Fault.hold(after=1))
    headers = key()
    first = client.responses.create(model=MODEL, input=QUESTION, background=True, extra_headers=headers)
    again = client.responses.create(model=MODEL, input=QUESTION, background=True, extra_headers=headers)
    assert again.id == first.id and again.background is True and again.status == "in_progress"
    upstream.release()
    done = until_ended(client, first.id)
    assert done.status == "completed" and done.output_text == ANSWER
    ended = client.responses.create(model=MODEL, input=QUESTION, background=True, extra_headers=headers)
    assert ended.id == first.id and ended.status == "completed" and ended.output_text == ANSWER
    assert calls(upstream) == 1


def until_ended(client: openai.OpenAI, rid: str) -> Any:
    async def ended() -> Any:
        found = await asyncio.to_thread(client.responses.retrieve, rid)
        return found if found.status not in ("queued", "in_progress") else None

    return run(until(ended))


# --- The client's own retry after a 503 reply-not-recorded (tests/retrykit.py) ------------------


@pytest.mark.parametrize("held", HELD)
def test_the_clients_retry_after_reply_not_recorded_gets_the_response_once_it_is(databases, upstream, held):
    """`conversations`: the record waits on its conversation's row, and is done before the retry
    comes; `pending_replies`: on its pending row, and the retry comes while it still waits."""
    with busy_server(databases, upstream) as srv:
        tenant, api_key = srv.new_key()
        upstream.fail_next(Fault.hold(after=1))
        headers = key()

        async def ask(client: openai.AsyncOpenAI) -> Any:
            return await client.responses.create(model=MODEL, input=QUESTION, extra_headers=headers)

        response, turn, client = run(
            retried_past_a_held_record(srv, tenant, api_key, upstream, held, "/openai/v1", ask)
        )
        assert client.answers == [(503, "reply-not-recorded"), (200, None)]
        # The client's own retry carried the key.
        assert client.retried and all(h["idempotency-key"] == headers["Idempotency-Key"] for h in client.retried)
        assert response.id == response_id(turn["reply_id"])
        assert response.output_text == ANSWER
        assert stored(srv, api_key, turn["conversation_id"]) == (
            [("user", QUESTION), ("assistant", ANSWER)],
            1,
        )
        assert calls(upstream) == 1
