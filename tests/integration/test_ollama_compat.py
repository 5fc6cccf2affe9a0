"""The Ollama-compatible endpoints, driven by the official `ollama` client: chat (one answer and
streamed), the stored conversation, options as the turn's params, the model list and details, the
version, and Ollama's errors."""

from __future__ import annotations

import base64
import json

import httpx
import ollama
import pytest

from tests.fakeupstream import Fault
from tests.servers import model_api as api
from tests.servers import ollama_client as client
from tests.turnkit import assert_settled, sent_messages

HELLO = "Hello from fake-large. You said: "
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(40))


def conversations(api: httpx.Client) -> list[dict]:
    r = api.get("/v1/conversations")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def path(api: httpx.Client, cid: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in api.get(f"/v1/conversations/{cid}/tree").json()["messages"]]


def test_a_chat_is_answered_in_ollamas_shape_and_stored_as_a_new_conversation(client, api, model_server, upstream):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "what is two plus two"},
    ]
    answer = client.chat(model="fake/fake-large", messages=history, stream=False)
    assert answer.message.role == "assistant" and answer.message.content == HELLO + "what is two plus two"
    assert answer.done is True and answer.done_reason == "stop" and answer.model == "fake-large"
    assert answer.prompt_eval_count > 0 and answer.eval_count > 0
    assert answer.total_duration > 0 and answer.load_duration == 0
    assert answer.prompt_eval_duration + answer.eval_duration == pytest.approx(answer.total_duration, abs=2)
    assert answer.created_at.endswith("Z")
    # Ollama's client keeps only Ollama's fields; the answer also says where the reply is stored.
    [conversation] = conversations(api)
    cid = conversation["id"]
    assert conversation["head_id"] == api.get(f"/v1/conversations/{cid}/tree").json()["messages"][-1]["id"]
    assert path(api, cid) == [
        *[(m["role"], m["content"]) for m in history],
        ("assistant", HELLO + "what is two plus two"),
    ]
    assert [(m["role"], m["content"]) for m in sent_messages(upstream)[0]] == [
        (m["role"], m["content"]) for m in history
    ]
    assert_settled(model_server.database_url, cid)
    raw = api.post("/api/chat", json={"model": "fake/fake-large", "messages": history, "stream": False}).json()
    # The same history again is the same thread (auto-threading is on for this door): all of it is
    # stored, so its last message is answered again, a sibling of the first reply.
    assert raw["provider"] == "fake" and raw["conversation_id"] == cid
    assert raw["message_id"] == api.get(f"/v1/conversations/{cid}").json()["head_id"]
    assert len(conversations(api)) == 1
    replies = [m for m in api.get(f"/v1/conversations/{cid}/tree").json()["messages"] if m["role"] == "assistant"]
    assert len(replies) == 3  # "hello", and two answers to the last question


def test_a_chat_streams_by_default_as_ndjson_ending_with_the_counts(client, api, model_server):
    parts = list(client.chat(model="fake-large", messages=[{"role": "user", "content": "stream this"}], stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == HELLO + "stream this"
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count > 0 and last.total_duration > 0
    [conversation] = conversations(api)
    assert path(api, conversation["id"])[-1] == ("assistant", HELLO + "stream this")
    assert_settled(model_server.database_url, conversation["id"])
    # Without `stream`, Ollama's default: NDJSON lines, each with where the reply is stored.
    raw = api.post("/api/chat", json={"model": "echo", "messages": [{"role": "user", "content": "lines"}]})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in raw.text.splitlines()]
    assert raw.text.endswith("\n") and [line["done"] for line in lines][-1] is True
    assert len({(line["conversation_id"], line["message_id"], line["provider"]) for line in lines}) == 1
    stored = api.get(f"/v1/conversations/{lines[0]['conversation_id']}/messages/{lines[0]['message_id']}").json()
    assert stored["content"] == "".join(line["message"]["content"] for line in lines) == "echo: lines"


def test_thinking_is_streamed_once_and_stored_as_reasoning(client, api, upstream):
    # `think` asks the model to reason (reasoning_effort upstream); its reasoning arrives in pieces
    # as `thinking`, and the last line does not say it again.
    parts = list(client.chat(model="fake-large", messages=[{"role": "user", "content": "why"}], stream=True, think=True))
    assert "".join(p.message.thinking or "" for p in parts) == "Thinking it over."
    assert "".join(p.message.content or "" for p in parts) == HELLO + "why"
    [conversation] = conversations(api)
    reply = api.get(f"/v1/conversations/{conversation['id']}").json()["head_id"]
    stored = api.get(f"/v1/conversations/{conversation['id']}/messages/{reply}").json()
    assert stored["reasoning_content"] == "Thinking it over."
    whole = client.chat(model="fake-large", messages=[{"role": "user", "content": "how"}], stream=False, think=True)
    assert whole.message.thinking == "Thinking it over."


def test_options_are_the_turns_params(client, upstream):
    client.chat(
        model="fake-large",
        messages=[{"role": "user", "content": "hi"}],
        stream=False,
        options={"temperature": 0.5, "top_p": 0.9, "seed": 7, "num_predict": 20, "stop": ["x"], "num_ctx": 4096},
        keep_alive="5m",
        think=False,
    )
    body = upstream.requests[-1].body
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (0.5, 0.9, 7, ["x"])
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 20


def test_num_predict_cuts_the_reply_with_done_reason_length(client):
    answer = client.chat(
        model="echo", messages=[{"role": "user", "content": "one two three four"}], stream=False,
        options={"num_predict": 2},
    )  # fmt: skip
    assert answer.message.content == "echo: one" and answer.done_reason == "length"


def test_errors_are_ollamas_and_the_client_raises_them_with_the_message(client, model_server, upstream):
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="echo", messages=[{"role": "assistant", "content": "not the user's"}], stream=False)
    assert raised.value.status_code == 422
    assert raised.value.error == "The last message must be the user's, or a tool's result: it is the turn to answer."
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="echo", messages=[{"role": "robot", "content": "hi"}], stream=False)
    assert raised.value.status_code == 422 and "role 'robot'" in raised.value.error
    upstream.fail_next(Fault.status_code(500))
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="fake-large", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert raised.value.status_code == 502 and "fake" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        client.show("fake/no-such-model")
    assert raised.value.status_code == 404 and raised.value.error == "model 'fake/no-such-model' not found"
    with pytest.raises(ollama.ResponseError) as raised:
        orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_name": "f", "content": "x"}]
        client.chat(model="echo", messages=orphan, tools=[{"type": "function", "function": {"name": "f"}}])
    assert raised.value.status_code == 422 and raised.value.error == (
        "messages[1]: a tool message answers a tool call named 'f' of the assistant message before it, "
        "and there is none left to answer."
    )


def test_a_stream_that_fails_raises_in_the_client_after_the_text_so_far(client, upstream):
    upstream.fail_next(Fault.drop(after=2))
    received = []
    with pytest.raises(ollama.ResponseError, match="dropped the connection"):
        for part in client.chat(model="fake-large", messages=[{"role": "user", "content": "hi"}], stream=True):
            received.append(part.message.content or "")
    assert "".join(received) == "Hello from"


def test_the_api_key_is_required(model_server):
    for headers in ({}, {"Authorization": "Bearer ct_wrong"}):
        with ollama.Client(host=model_server.base_url, headers=headers) as anonymous:
            with pytest.raises(ollama.ResponseError) as raised:
                anonymous.chat(model="echo", messages=[{"role": "user", "content": "hi"}], stream=False)
            assert raised.value.status_code == 401 and raised.value.error
            with pytest.raises(ollama.ResponseError) as raised:
                anonymous.list()
            assert raised.value.status_code == 401


def test_every_error_under_api_is_ollamas_beside_the_problem(api):
    for r in (
        api.post("/api/chat", json={"messages": []}),  # no model
        api.post("/api/chat", content=b"{not json"),
        api.get("/api/ps"),  # a route convtree does not serve
    ):
        body = r.json()
        assert r.status_code in (400, 404, 422) and isinstance(body["error"], str) and body["error"], r.text
        assert body["type"].startswith("urn:convtree:problem:") and body["status"] == r.status_code


def test_tags_list_every_configured_providers_models_and_show_describes_one(client):
    names = {m.model for m in client.list().models}
    assert {"echo/echo", "fake/fake-large", "fake/fake-small", "fakeollama/fake-small"} <= names
    shown = client.show("fake/fake-large")
    assert shown.details.family == "fake" and shown.capabilities == ["completion"]
    assert shown.modelinfo["convtree.provider"] == "fake"
    assert client.show("echo").details.family == "echo"  # a bare name, resolved as a chat resolves it


def test_the_version_is_convtrees(api):
    import service

    r = api.get("/api/version")
    assert r.status_code == 200 and r.json() == {"version": service.__version__}


def test_without_messages_the_answer_is_ollamas_load_and_nothing_is_stored(client, api):
    loaded = client.chat(model="echo", messages=[], stream=False)
    assert loaded.done is True and loaded.done_reason == "load"
    assert conversations(api) == []


def test_images_are_stored_as_image_url_parts_with_a_data_url(client, api):
    image = base64.b64encode(PNG).decode()
    answer = client.chat(
        model="echo", messages=[{"role": "user", "content": "what is this", "images": [image]}], stream=False
    )
    [conversation] = conversations(api)
    cid = conversation["id"]
    user = api.get(f"/v1/conversations/{cid}/tree").json()["messages"][0]
    assert user["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}},
    ]


def test_a_resent_history_continues_one_conversation(client, api):
    messages = [{"role": "user", "content": "one"}]
    for said in ("two", "three"):
        answer = client.chat(model="echo", messages=messages, stream=False)
        messages += [answer.message, {"role": "user", "content": said}]
    client.chat(model="echo", messages=messages, stream=False)
    listed = conversations(api)
    assert len(listed) == 1
    assert path(api, listed[0]["id"]) == [
        ("user", "one"), ("assistant", "echo: one"),
        ("user", "two"), ("assistant", "echo: two"),
        ("user", "three"), ("assistant", "echo: three"),
    ]  # fmt: skip


def test_a_retry_with_the_same_idempotency_key_gets_the_stored_reply_without_calling_the_model(api, upstream):
    body = {"model": "fake-large", "messages": [{"role": "user", "content": "once"}], "stream": False}
    first = api.post("/api/chat", json=body, headers={"Idempotency-Key": "k1"})
    again = api.post("/api/chat", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["message"] == first.json()["message"]
    assert again.json()["eval_count"] == first.json()["eval_count"]
    streamed = api.post("/api/chat", json={**body, "stream": True}, headers={"Idempotency-Key": "k1"})
    assert streamed.status_code == 422  # another request under the same key
    fresh = api.post("/api/chat", json={**body, "stream": True}, headers={"Idempotency-Key": "k2"})
    lines = [json.loads(line) for line in fresh.text.splitlines()]
    replayed = api.post("/api/chat", json={**body, "stream": True}, headers={"Idempotency-Key": "k2"})
    assert replayed.headers["Idempotent-Replayed"] == "true"
    again_lines = [json.loads(line) for line in replayed.text.splitlines()]
    assert "".join(x["message"]["content"] for x in again_lines) == "".join(x["message"]["content"] for x in lines)
    assert again_lines[-1]["done"] is True and again_lines[-1]["message_id"] == lines[-1]["message_id"]
    assert len([r for r in upstream.requests if r.method == "POST"]) == 2
