"""The Ollama-compatible endpoint with tools and `format`, driven by the official `ollama` client
against a fake model server that asks for tools (in OpenAI's protocol, calls in fragments with ids;
in Ollama's, whole calls without ids): the calls answered in Ollama's shape, plain and streamed, the
tool results sent back with the whole history continuing one path, and `format` passed on."""

from __future__ import annotations


import httpx
import ollama
import pytest

from service.domain.ollama import call_id
from tests.servers import model_api as api
from tests.servers import ollama_client as client
from tests.turnkit import TIME, WEATHER, assert_settled, sent_messages

QUESTION = "weather in Oslo?"
ARGUMENTS = '{"said":"weather in Oslo?"}'  # as stored: the compact JSON an Ollama client sends back
# The fake model server's two protocols: OpenAI's (calls with ids, arguments as text in fragments)
# and Ollama's (whole calls, no ids, arguments an object).
MODELS = ["fake/fake-large", "fakeollama/fake-small"]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def bodies(upstream) -> list[dict]:
    return [r.body for r in upstream.requests if r.method == "POST"]


def conversations(api: httpx.Client) -> list[dict]:
    r = api.get("/v1/conversations")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def tree(api: httpx.Client, cid: str) -> list[dict]:
    return api.get(f"/v1/conversations/{cid}/tree").json()["messages"]


def path(api: httpx.Client, cid: str) -> list[dict]:
    """The messages on the path to the head, root first."""
    r = api.get(f"/v1/conversations/{cid}/context")
    assert r.status_code == 200, r.text
    return r.json()["messages"]


EXPECTED_CALLS = [
    {"id": call_id(i, name, ARGUMENTS), "type": "function", "function": {"name": name, "arguments": ARGUMENTS}}
    for i, name in enumerate(["weather", "time"])
]
ASK = [{"role": "user", "content": QUESTION}]


@pytest.mark.parametrize("model", MODELS)
def test_a_reply_that_asks_for_tools_is_answered_with_ollamas_tool_calls(client, api, upstream, model):
    answer = client.chat(model=model, messages=ASK, tools=[WEATHER, TIME], stream=False)
    assert answer.done is True and answer.done_reason == "stop"  # as Ollama ends a reply that asks for tools
    assert answer.message.role == "assistant" and not answer.message.content
    assert [(c.function.name, c.function.arguments) for c in answer.message.tool_calls] == [
        ("weather", {"said": QUESTION}),
        ("time", {"said": QUESTION}),
    ]
    [body] = bodies(upstream)
    assert body["tools"] == [WEATHER, TIME]  # the turn's tools, passed on
    # Stored as an Ollama client sends it back: the calls with derived ids and compact arguments.
    [conversation] = conversations(api)
    reply = tree(api, conversation["id"])[-1]
    assert reply["role"] == "assistant" and reply["tool_calls"] == EXPECTED_CALLS
    assert reply["generation"]["finish_reason"] == "tool_calls"
    raw = api.post(
        "/api/chat",
        json={"model": model, "messages": [{"role": "user", "content": "again"}], "tools": [WEATHER], "stream": False},
    ).json()
    assert raw["done_reason"] == "stop" and raw["message"]["content"] == ""
    said = '{"said":"again"}'
    assert raw["message"]["tool_calls"] == [
        {"function": {"name": "weather", "arguments": {"said": "again"}, "index": 0}, "id": call_id(0, "weather", said),
         "type": "function"},
    ]  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_reply_gives_its_calls_whole_in_the_last_line_and_no_line_for_their_fragments(
    client, api, model_server, upstream, model
):
    parts = list(client.chat(model=model, messages=ASK, tools=[WEATHER], stream=True))
    *before, last = parts
    assert last.done is True and last.done_reason == "stop"
    [call] = last.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("weather", {"said": QUESTION})
    # One line when the turn is stored (the reply's ids), then the last: the calls' fragments,
    # streamed in pieces by the OpenAI-protocol model, make no empty lines.
    assert len(before) == 1 and not before[0].message.content and not before[0].message.tool_calls
    [conversation] = conversations(api)
    assert tree(api, conversation["id"])[-1]["tool_calls"] == EXPECTED_CALLS[:1]
    assert_settled(model_server.database_url, conversation["id"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", MODELS)
def test_tool_results_sent_back_with_the_whole_history_continue_one_path(
    client, api, model_server, upstream, model, stream
):
    def chat(messages: list) -> ollama.Message:
        if not stream:
            return client.chat(model=model, messages=messages, tools=[WEATHER, TIME], stream=False).message
        parts = list(client.chat(model=model, messages=messages, tools=[WEATHER, TIME], stream=True))
        # As an Ollama client puts a streamed reply together: its text, and the calls of the last line.
        return ollama.Message(
            role="assistant",
            content="".join(p.message.content or "" for p in parts),
            tool_calls=parts[-1].message.tool_calls,
        )

    history: list = [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": QUESTION}]
    asked = chat(history)
    assert [c.function.name for c in asked.tool_calls] == ["weather", "time"]
    # Ollama's client keeps no call id: the results name their tool.
    history += [
        asked,
        {"role": "tool", "tool_name": "weather", "content": "sunny"},
        {"role": "tool", "tool_name": "time", "content": "noon"},
    ]
    answered = chat(history)
    assert answered.content == "Tool said: noon" and not answered.tool_calls
    [conversation] = conversations(api)
    cid = conversation["id"]
    stored = path(api, cid)
    assert [m["role"] for m in stored] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert len(tree(api, cid)) == 6  # only the results were appended: no copy of the reply that asked
    ids = [c["id"] for c in stored[2]["tool_calls"]]
    assert [(m["name"], m["tool_call_id"], m["content"]) for m in stored[3:5]] == [
        ("weather", ids[0], "sunny"),
        ("time", ids[1], "noon"),
    ]
    # The model is shown the calls and the results that answer them.
    follow_up = sent_messages(upstream)[-1]
    assert [m["role"] for m in follow_up] == ["system", "user", "assistant", "tool", "tool"]
    if model.startswith("fakeollama/"):
        assert [m["tool_name"] for m in follow_up[3:]] == ["weather", "time"]
    else:
        assert [c["id"] for c in follow_up[2]["tool_calls"]] == ids
        assert [m["tool_call_id"] for m in follow_up[3:]] == ids
    # And the conversation goes on as one path.
    history += [answered, {"role": "user", "content": "thanks"}]
    client.chat(model=model, messages=history, stream=False)
    assert len(conversations(api)) == 1
    assert [m["role"] for m in path(api, cid)] == [
        "system", "user", "assistant", "tool", "tool", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert len(tree(api, cid)) == 8
    assert_settled(model_server.database_url, cid)


@pytest.mark.parametrize(
    ("format", "response_format"),
    [
        ("json", {"type": "json_object"}),
        (SCHEMA, {"type": "json_schema", "json_schema": {"name": "format", "schema": SCHEMA}}),
    ],
    ids=["json", "schema"],
)
def test_format_is_the_turns_response_format(client, api, upstream, format, response_format):
    as_json = [{"role": "user", "content": "as json"}]
    client.chat(model="fake/fake-large", messages=as_json, format=format, stream=False)
    assert bodies(upstream)[-1]["response_format"] == response_format
    [conversation] = conversations(api)
    reply = tree(api, conversation["id"])[-1]
    assert reply["generation"]["params"]["response_format"] == response_format
    # An Ollama model server is sent it back as Ollama's `format`.
    client.chat(model="fakeollama/fake-small", messages=as_json, format=format, stream=False)
    assert bodies(upstream)[-1]["format"] == format


def test_a_format_that_is_neither_json_nor_a_schema_is_refused_naming_it(client, api, upstream):
    r = api.post("/api/chat", json={"model": "echo", "messages": [{"role": "user", "content": "x"}], "format": "yaml"})
    assert r.status_code == 422 and r.json()["error"] == "format is \"json\" or a JSON schema, not 'yaml'."
    assert r.json()["context"]["parameter"] == "format"
    # "" is Ollama's "no format": nothing is asked of the model.
    client.chat(model="fake/fake-large", messages=[{"role": "user", "content": "plain"}], format="", stream=False)
    assert "response_format" not in bodies(upstream)[-1]
    assert conversations(api)
