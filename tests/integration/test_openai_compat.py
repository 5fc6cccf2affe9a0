"""The OpenAI-compatible endpoint, driven by the official `openai` client: new conversations from
the messages sent, continuing and branching with conversation_id / parent_message_id, streaming,
model names, the model list, errors and auth."""

from __future__ import annotations


import httpx
import openai
import pytest

from tests.fakeupstream import Fault
from tests.helpers import create
from tests.servers import model_api as api
from tests.servers import openai_alias_client as client
from tests.turnkit import assert_settled, sent_messages, turn_failures

HELLO = "Hello from fake-large. You said: "


def chat(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def test_without_a_conversation_id_the_messages_become_a_new_conversation(client, api, model_server, upstream):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "what is two plus two"},
    ]
    completion = client.chat.completions.create(model="fake/fake-large", messages=history)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == HELLO + "what is two plus two"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "fake-large"
    assert completion.usage is not None and completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    extra = completion.model_extra or {}
    assert extra["provider"] == "fake"
    tree = api.get(f"/v1/conversations/{extra['conversation_id']}/tree").json()
    assert [(m["role"], m["content"]) for m in tree["messages"]] == [
        *[(m["role"], m["content"]) for m in history],
        ("assistant", HELLO + "what is two plus two"),
    ]
    assert tree["head_id"] == extra["message_id"] == tree["messages"][-1]["id"]
    assert chat(sent_messages(upstream)[0]) == [(m["role"], m["content"]) for m in history]
    assert_settled(model_server.database_url, extra["conversation_id"])


def test_with_a_conversation_id_only_the_new_message_is_sent_and_the_history_comes_from_the_head(client, upstream):
    first = client.chat.completions.create(model="fake-large", messages=[{"role": "user", "content": "one"}])
    cid = first.model_extra["conversation_id"]
    second = client.chat.completions.create(
        model="fake-large", messages=[{"role": "user", "content": "two"}], extra_body={"conversation_id": cid}
    )
    assert second.model_extra["conversation_id"] == cid
    assert chat(sent_messages(upstream)[-1]) == [("user", "one"), ("assistant", HELLO + "one"), ("user", "two")]


def test_a_parent_message_id_branches_from_that_message(client, api, upstream):
    first = client.chat.completions.create(
        model="fake-large", messages=[{"role": "system", "content": "rules"}, {"role": "user", "content": "one"}]
    )
    cid, reply_one = first.model_extra["conversation_id"], first.model_extra["message_id"]
    client.chat.completions.create(
        model="fake-large", messages=[{"role": "user", "content": "two"}], extra_body={"conversation_id": cid}
    )
    root = api.get(f"/v1/conversations/{cid}/tree").json()["messages"][0]
    branch = client.chat.completions.create(
        model="fake-large",
        messages=[{"role": "user", "content": "instead"}],
        extra_body={"conversation_id": cid, "parent_message_id": root["id"]},
    )
    assert chat(sent_messages(upstream)[-1]) == [("system", "rules"), ("user", "instead")]
    conversation = api.get(f"/v1/conversations/{cid}").json()
    assert conversation["head_id"] == branch.model_extra["message_id"] and conversation["leaf_count"] == 2
    # And continuing from an earlier reply of the first branch:
    client.chat.completions.create(
        model="fake-large",
        messages=[{"role": "user", "content": "back"}],
        extra_body={"conversation_id": cid, "parent_message_id": reply_one},
    )
    assert chat(sent_messages(upstream)[-1]) == [
        ("system", "rules"),
        ("user", "one"),
        ("assistant", HELLO + "one"),
        ("user", "back"),
    ]


def test_a_streamed_completion_has_the_ids_in_its_first_chunk_and_ends_with_usage(client, api, model_server):
    stream = client.chat.completions.create(
        model="fake/fake-large",
        messages=[{"role": "user", "content": "stream this"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first = chunks[0]
    assert first.object == "chat.completion.chunk" and first.choices[0].delta.role == "assistant"
    cid, mid = first.model_extra["conversation_id"], first.model_extra["message_id"]
    assert {c.id for c in chunks} == {first.id} and {c.model_extra["message_id"] for c in chunks} == {mid}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == HELLO + "stream this"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    stored = api.get(f"/v1/conversations/{cid}/messages/{mid}").json()
    assert stored["content"] == text and stored["generation"]["finish_reason"] == "stop"
    assert_settled(model_server.database_url, cid)


def test_model_names_resolve_to_a_provider(client):
    echo = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "bare name"}])
    assert echo.model_extra["provider"] == "echo" and echo.choices[0].message.content == "echo: bare name"
    ollama = client.chat.completions.create(model="fakeollama/fake-small", messages=[{"role": "user", "content": "hi"}])
    assert ollama.model_extra["provider"] == "fakeollama" and ollama.model == "fake-small"
    default = client.chat.completions.create(model="fake-small", messages=[{"role": "user", "content": "hi"}])
    assert default.model_extra["provider"] == "fake" and default.model == "fake-small"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="echo/other", messages=[{"role": "user", "content": "hi"}])


def test_the_model_list_names_every_configured_providers_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"echo/echo", "fake/fake-large", "fake/fake-small", "fakeollama/fake-large", "fakeollama/fake-small"} <= ids
    assert {m.owned_by for m in client.models.list()} == {"echo", "fake", "fakeollama", "impatient"}


def test_an_upstream_failure_is_an_error_and_the_turn_failure_is_recorded(client, model_server, upstream):
    upstream.fail_next(Fault.status_code(500))
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="fake-large", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    # The SDK's `body` is OpenAI's error object, which also says where the turn is stored.
    assert raised.value.body["type"] == "server_error" and raised.value.body["code"] == "upstream-unavailable"
    assert "injected failure" in str(raised.value)
    cid = raised.value.body["context"]["conversation_id"]
    assert [f["error"] for f in turn_failures(model_server.database_url, cid)] == ["upstream_unavailable"]
    assert_settled(model_server.database_url, cid)


def test_a_streamed_failure_raises_in_the_client(client, upstream):
    upstream.fail_next(Fault.drop(after=2))
    stream = client.chat.completions.create(
        model="fake-large", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="dropped the connection"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello from"


def test_requests_convtree_cannot_honour_are_refused(client, api):
    for bad, param in (
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f"}]}, "functions"),
        ({"messages": [{"role": "user", "content": "hi"}], "function_call": "auto"}, "function_call"),
        ({"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"]}, "modalities"),
        ({"messages": [{"role": "assistant", "content": "the last is not the user's"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}]}, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    ):
        r = api.post("/v1/chat/completions", json={"model": "echo", **bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["param"] == param, (bad, r.text)
    parts = [{"type": "text", "text": "two"}, {"type": "text", "text": "parts"}]
    done = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": parts}])
    assert done.choices[0].message.content == "echo: two parts"
    cid = create(api)["id"]
    orphan = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "parent_message_id": cid}
    assert api.post("/v1/chat/completions", json=orphan).status_code == 422  # needs its conversation_id
    ignored = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "some_new_field": {"x": 1}, "n": 1}
    assert api.post("/v1/chat/completions", json=ignored).status_code == 200


def test_n_above_one_is_refused_with_a_message_the_sdk_shows(client):
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], n=2)
    assert raised.value.param == "n" and raised.value.type == "invalid_request_error"
    assert "n: only one choice per completion is supported" in str(raised.value)


def test_each_kind_of_error_shows_its_message_in_the_sdk(client, model_server):
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.UnprocessableEntityError) as invalid:  # a field out of its range
        client.chat.completions.create(model="echo", messages=hi, temperature=5)
    assert invalid.value.param == "temperature" and "temperature" in str(invalid.value)
    assert "Expected `float` <= 2.0" in str(invalid.value)
    with pytest.raises(openai.UnprocessableEntityError) as role:  # a role OpenAI does not have
        client.chat.completions.create(model="echo", messages=[{"role": "robot", "content": "hi"}])
    assert "messages[0].role" in str(role.value)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="echo", messages=hi, extra_body={"conversation_id": "00000000-0000-4000-8000-000000000000"}
        )
    assert missing.value.code == "conversation-not-found" and str(missing.value) != "Error code: 404"
    with pytest.raises(openai.UnprocessableEntityError) as unknown:
        client.chat.completions.create(model="echo/other", messages=hi)
    assert "model 'other' is not offered by provider 'echo'" in str(unknown.value)
    with openai.OpenAI(base_url=model_server.base_url + "/v1", api_key="ct_wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as denied:
            wrong.chat.completions.create(model="echo", messages=hi)
    assert denied.value.type == "authentication_error" and str(denied.value) != "Error code: 401"
    with pytest.raises(openai.APIStatusError) as too_large:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x" * 17_000_000}])
    assert too_large.value.status_code == 413 and str(too_large.value) != "Error code: 413"


def test_the_api_key_is_required(model_server):
    with openai.OpenAI(base_url=model_server.base_url + "/v1", api_key="ct_wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()


def test_every_error_on_the_door_is_openais_error_object(api, model_server):
    invalid = api.post("/v1/chat/completions", json={"model": "echo", "messages": []})
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/json"
    assert set(invalid.json()) == {"error"}
    error = invalid.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid-request", "messages")
    assert "messages" in error["message"]
    refused = api.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "assistant", "content": "x"}]})
    assert refused.status_code == 422 and refused.json()["error"]["message"].startswith("The last message must be")
    with httpx.Client(base_url=model_server.base_url) as anonymous:
        denied = anonymous.get("/v1/models")
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    # The native API keeps its problems.
    native = api.post("/v1/conversations", json={"title": 5})
    assert native.headers["content-type"] == "application/problem+json" and "error" not in native.json()
