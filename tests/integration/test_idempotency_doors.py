"""Idempotency-Key on every POST that creates something: the same key and request get the stored
outcome (status and body), whether the work is one transaction or a model's reply, streamed or
not; the same key with another request is a 422; concurrent duplicates have one effect; and a
retry that arrives while the reply is still being generated waits for it instead of calling the
model again. OpenAI's own client, retrying by itself, gets one completion."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.fakeupstream import Fault
from tests.helpers import create, problem, say
from tests.postgres import fetch
from tests.servers import Server, fake_registry
from tests.servers import openai_alias_client as client
from tests.turnkit import assert_settled, sent_messages, sse, turn


HELLO = "Hello from fake-large. You said: "


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4()}"}


def conversations(database_url: str, tenant: str) -> int:
    return fetch(database_url, "SELECT count(*) FROM conversations WHERE tenant = $1", tenant)[0][0]


def replies(database_url: str, cid: str) -> int:
    rows = fetch(
        database_url,
        "SELECT count(*) FROM events WHERE conversation_id = $1 AND type = 'message_appended' AND role = 'assistant'",
        uuid.UUID(cid),
    )
    return rows[0][0]


def twice(api: httpx.Client, url: str, body: Any, headers: dict[str, str], **kwargs: Any) -> tuple[Any, Any]:
    send = {"content": body} if isinstance(body, bytes) else {"json": body}
    first = api.post(url, headers={**headers, **kwargs.get("extra", {})}, **send)
    again = api.post(url, headers={**headers, **kwargs.get("extra", {})}, **send)
    assert first.status_code in (200, 201), first.text
    assert again.status_code == first.status_code and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    return first, again


# --- Writes done in one transaction -----------------------------------------------------------


def test_every_plain_post_replays_its_stored_response_and_refuses_another_request(server, api):
    conv = create(api, system="rules")
    cid = conv["id"]
    m = say(api, cid, "hello")
    posts: list[tuple[str, Any, Any]] = [
        ("/v1/conversations", {"title": "t"}, {"title": "u"}),
        (f"/v1/conversations/{cid}/messages", {"role": "user", "content": "a"}, {"role": "user", "content": "b"}),
        (f"/v1/conversations/{cid}/messages/{m['id']}/fork", {"title": "f"}, {"title": "g"}),
        (f"/v1/conversations/{cid}/messages/{m['id']}/redact", {"reason": "r"}, {"reason": "s"}),
    ]
    for url, body, other in posts:
        headers = key()
        twice(api, url, body, headers)
        problem(api.post(url, json=other, headers=headers), 422, "idempotency-key-reused")
    # The same key on another route is another request too.
    headers = key()
    twice(api, "/v1/conversations", {}, headers)
    problem(api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"}, headers=headers),
            422, "idempotency-key-reused")  # fmt: skip


def test_an_import_replays_its_stored_response(server, api):
    cid = create(api, system="rules")["id"]
    say(api, cid, "hello")
    exported = api.get(f"/v1/conversations/{cid}/export").content
    tenant, other_key = server.new_key()
    headers = {**key(), "Content-Type": "application/x-ndjson"}
    with server.client(other_key) as other:
        twice(other, "/v1/conversations/import", exported, headers)
        problem(other.post("/v1/conversations/import", content=exported + b"\n", headers=headers),
                422, "idempotency-key-reused")  # fmt: skip
    assert conversations(server.database_url, tenant) == 1


# --- Turns: turn, regenerate ------------------------------------------------------------------


def test_a_regeneration_retried_with_its_key_gets_the_stored_reply_without_calling_the_model(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    first = turn(model_api, cid, "question")
    url = f"/v1/conversations/{cid}/messages/{first['assistant_message_id']}/regenerate"
    headers = key()
    one, _ = twice(model_api, url, {}, headers)
    assert one.status_code == 201
    assert len(sent_messages(upstream)) == 2  # the turn and one regeneration
    db = model_server.database_url
    assert replies(db, cid) == 2
    problem(model_api.post(url, json={"provider": "echo"}, headers=headers), 422, "idempotency-key-reused")
    # Streamed: the stored outcome as a stream, the whole text in one delta.
    with model_api.stream("POST", url, json={"stream": True}, headers=(streamed := key())) as r:
        original = list(sse(r))
    with model_api.stream("POST", url, json={"stream": True}, headers=streamed) as r:
        assert r.headers["idempotent-replayed"] == "true"
        replayed = list(sse(r))
    done = original[-1]
    assert done[0] == "done" and replayed == [original[0], ("delta", {"text": done[1]["content"]}), done]
    assert len(sent_messages(upstream)) == 3 and replies(db, cid) == 3
    assert_settled(db, cid)


def test_a_regeneration_that_failed_is_tried_again_by_its_retry_and_then_replayed(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    first = turn(model_api, cid, "question")
    url = f"/v1/conversations/{cid}/messages/{first['assistant_message_id']}/regenerate"
    headers = key()
    upstream.fail_next(Fault.status_code(500))
    problem(model_api.post(url, json={}, headers=headers), 502, "upstream-unavailable")
    retried = model_api.post(url, json={}, headers=headers)
    assert retried.status_code == 201, retried.text
    again = model_api.post(url, json={}, headers=headers)
    assert again.status_code == 201 and again.json() == retried.json()
    assert replies(model_server.database_url, cid) == 2
    assert_settled(model_server.database_url, cid)


async def _concurrently(base_url: str, auth: str, url: str, body: dict[str, Any], headers: dict[str, str], n: int):
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": auth}, timeout=30) as client:
        return await asyncio.gather(*[client.post(url, json=body, headers=headers) for _ in range(n)])


@pytest.mark.slow
@pytest.mark.parametrize("door", ["turns", "regenerate", "chat"])
def test_concurrent_duplicates_of_a_keyed_turn_call_the_model_once(door, model_api, model_server, upstream):
    cid = create(model_api)["id"]
    first = turn(model_api, cid, "question")
    upstream.reset()
    upstream.fail_next(Fault.slow_first_byte(0.5))  # the duplicates arrive while it is being generated
    url, body = {
        "turns": (f"/v1/conversations/{cid}/turns", {"content": "again"}),
        "regenerate": (f"/v1/conversations/{cid}/messages/{first['assistant_message_id']}/regenerate", {}),
        "chat": ("/v1/chat/completions", {"model": "fake-large", "conversation_id": cid,
                                          "messages": [{"role": "user", "content": "again"}]}),
    }[door]  # fmt: skip
    responses = asyncio.run(
        _concurrently(model_server.base_url, model_api.headers["authorization"], url, body, key(), 8)
    )
    assert {r.status_code for r in responses} == {200 if door == "chat" else 201}, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7
    assert len(sent_messages(upstream)) == 1
    assert replies(model_server.database_url, cid) == 2
    assert_settled(model_server.database_url, cid)


# --- The OpenAI-compatible door ---------------------------------------------------------------


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_a_chat_completion_retried_with_its_key_is_the_stored_one(client, model_server, model_key, upstream):
    headers = key()
    first = client.chat.completions.create(model="fake-large", messages=MESSAGES, extra_headers=headers)
    raw = client.chat.completions.with_raw_response.create(model="fake-large", messages=MESSAGES, extra_headers=headers)
    assert raw.headers["idempotent-replayed"] == "true"
    assert raw.parse().model_dump() == first.model_dump()
    assert first.choices[0].message.content == HELLO + "hi"
    assert len(sent_messages(upstream)) == 1
    assert conversations(model_server.database_url, model_key[0]) == 1
    # The same key with another request: 422, with OpenAI's error object.
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="fake-large", messages=MESSAGES[1:], extra_headers=headers)
    assert refused.value.code == "idempotency-key-reused" and refused.value.type == "invalid_request_error"
    assert "Idempotency-Key" in refused.value.message
    assert len(sent_messages(upstream)) == 1


def test_a_streamed_chat_completion_retried_with_its_key_is_replayed_as_a_stream(
    client, model_server, model_key, upstream
):
    headers = key()

    def streamed() -> tuple[str, list[Any]]:
        stream = client.chat.completions.create(
            model="fake-large", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_headers=headers,
        )  # fmt: skip
        chunks = list(stream)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks

    text, chunks = streamed()
    again, replayed = streamed()
    assert text == again == HELLO + "hi"
    assert replayed[-1].usage == chunks[-1].usage and replayed[-1].usage is not None
    assert {c.id for c in replayed} == {c.id for c in chunks}
    assert [c.choices[0].finish_reason for c in replayed if c.choices][-1] == "stop"
    assert len(sent_messages(upstream)) == 1
    assert conversations(model_server.database_url, model_key[0]) == 1


def test_a_retry_while_the_original_stream_runs_waits_for_it_and_never_calls_the_model_again(
    model_server, model_key, upstream
):
    upstream.fail_next(Fault.slow_first_byte(1.0))
    headers = {**key(), "Authorization": f"Bearer {model_key[1]}"}
    body = {"model": "fake-large", "messages": MESSAGES, "stream": True}
    with httpx.Client(base_url=model_server.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as original:
            lines = original.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
            # The turn is committed and its reply is being generated: a retry now waits for it.
            retry: dict[str, httpx.Response] = {}
            thread = threading.Thread(
                target=lambda: retry.setdefault("r", http.post("/v1/chat/completions", json=body, headers=headers))
            )
            thread.start()
            rest = [line for line in lines if line.startswith("data:")]
        thread.join(30)
    assert rest[-1] == "data: [DONE]"
    replayed = retry["r"]
    assert replayed.status_code == 200 and replayed.headers["idempotent-replayed"] == "true"
    chunks = [json.loads(line[5:]) for line in replayed.text.splitlines() if line.startswith("data:") and "[DONE]" not in line]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == HELLO + "hi"
    assert {c["message_id"] for c in chunks} == {first["message_id"]}
    assert len(sent_messages(upstream)) == 1
    assert conversations(model_server.database_url, model_key[0]) == 1


class _LoseFirstResponse(httpx.BaseTransport):
    """Sends every request on; the first response is read whole and then lost on its way back, as
    when a connection drops after the server answered."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.attempts: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append(request.headers.get("idempotency-key"))
        response = self._inner.handle_request(request)
        response.read()
        if len(self.attempts) == 1:
            response.close()
            raise httpx.ReadError("connection lost after the server answered", request=request)
        return response


def test_the_openai_client_retrying_a_lost_response_by_itself_gets_the_one_completion(
    model_server, model_key, upstream
):
    transport = _LoseFirstResponse()
    headers = key()
    with openai.OpenAI(
        base_url=model_server.base_url + "/v1", api_key=model_key[1], max_retries=2,
        http_client=httpx.Client(transport=transport),
    ) as client:  # fmt: skip
        completion = client.chat.completions.create(model="fake-large", messages=MESSAGES, extra_headers=headers)
    assert transport.attempts == [headers["Idempotency-Key"]] * 2  # the client retried, with the same key
    assert completion.choices[0].message.content == HELLO + "hi"
    assert len(sent_messages(upstream)) == 1
    assert conversations(model_server.database_url, model_key[0]) == 1
    extra = completion.model_extra or {}
    assert_settled(model_server.database_url, extra["conversation_id"])


def test_a_replayed_completion_withholds_what_was_redacted_since(client, model_server, model_key, upstream):
    headers = key()
    first = client.chat.completions.create(model="fake-large", messages=MESSAGES, extra_headers=headers)
    extra = first.model_extra or {}
    with model_server.client(model_key[1]) as api:
        r = api.post(
            f"/v1/conversations/{extra['conversation_id']}/messages/{extra['message_id']}/redact",
            json={"reason": "personal data", "erase": True},
        )
        assert r.status_code == 201, r.text
    again = client.chat.completions.create(model="fake-large", messages=MESSAGES, extra_headers=headers)
    assert again.id == first.id and again.choices[0].message.content == "[redacted]"
    assert len(sent_messages(upstream)) == 1


def test_a_retry_on_another_server_waits_for_the_reply_the_first_is_generating(databases, upstream):
    url = databases.migrated()
    first, second = Server(url, fake_registry(upstream)), Server(url, fake_registry(upstream))
    first.start()
    second.start()
    try:
        tenant, secret = first.new_key()
        auth = {"Authorization": f"Bearer {secret}", **key()}
        upstream.fail_next(Fault.slow_first_byte(1.0))
        body = {"model": "fake-large", "messages": MESSAGES}

        async def go() -> list[httpx.Response]:
            conn = await asyncpg.connect(url)
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    completions = "/v1/chat/completions"
                    original = asyncio.create_task(http.post(first.base_url + completions, json=body, headers=auth))
                    while not await conn.fetchval("SELECT count(*) FROM pending_replies"):
                        await asyncio.sleep(0.02)  # the original's turn is committed: its reply is being generated
                    retry = await http.post(second.base_url + completions, json=body, headers=auth)
                    return [await original, retry]
            finally:
                await conn.close()

        original, retry = asyncio.run(go())
        assert original.status_code == retry.status_code == 200, retry.text
        assert retry.json() == original.json() and retry.headers["idempotent-replayed"] == "true"
        assert len(sent_messages(upstream)) == 1
        assert conversations(url, tenant) == 1
    finally:
        first.stop()
        second.stop()
