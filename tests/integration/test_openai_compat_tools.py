"""The OpenAI-compatible endpoint with tools, driven by the official `openai` client against a fake
model server that asks for them: calls streamed in fragments and not, parallel calls, the tool
results sent back to continue the turn, content parts, reasoning, and the request fields passed on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai

from tests.servers import model_api as api
from tests.servers import openai_alias_client as client
from tests.turnkit import TIME, WEATHER, assert_settled, sent_messages

ASKED = json.dumps({"said": "weather in Oslo?"})


def sent_bodies(upstream) -> list[dict]:
    return [r.body for r in upstream.requests if r.method == "POST"]


def test_a_reply_that_asks_for_tools_answers_its_calls_and_is_stored_with_them(client, api, model_server, upstream):
    completion = client.chat.completions.create(
        model="fake/fake-large", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name, call.function.arguments) == (
        "call_fake_0", "function", "weather", ASKED
    )  # fmt: skip
    assert completion.usage is not None and completion.usage.completion_tokens == 1
    assert sent_bodies(upstream)[0]["tools"] == [WEATHER]
    extra = completion.model_extra
    stored = api.get(f"/v1/conversations/{extra['conversation_id']}/messages/{extra['message_id']}").json()
    assert stored["generation"]["finish_reason"] == "tool_calls"
    assert stored["generation"]["prompt_tokens"] == completion.usage.prompt_tokens
    assert_settled(model_server.database_url, extra["conversation_id"])


def test_a_streamed_reply_relays_the_call_fragments_by_index_as_they_come(client, upstream):
    stream = client.chat.completions.create(
        model="fake/fake-large",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER, TIME],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    fragments = [f for c in chunks if c.choices for f in c.choices[0].delta.tool_calls or []]
    # Relayed as the model streamed them: the first of each call with its id and name, then the
    # arguments in pieces (5 characters each in the fake).
    assert len(fragments) > 4 and [f.index for f in fragments] == sorted(f.index for f in fragments)
    assert (fragments[0].id, fragments[0].function.name, fragments[0].function.arguments) == ("call_fake_0", "weather", "")
    assert all(f.id is None for f in fragments if f.function.name is None)
    calls: dict[int, dict] = {}
    for f in fragments:
        call = calls.setdefault(f.index, {"id": f.id, "name": f.function.name, "arguments": ""})
        call["arguments"] += f.function.arguments or ""
    assert calls == {
        0: {"id": "call_fake_0", "name": "weather", "arguments": ASKED},
        1: {"id": "call_fake_1", "name": "time", "arguments": ASKED},
    }
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_the_sdks_stream_helper_assembles_the_calls(client):
    with client.chat.completions.stream(
        model="fake/fake-large", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER, TIME]
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_fake_0", "weather", ASKED),
        ("call_fake_1", "time", ASKED),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_parallel_calls_are_one_message_and_parallel_tool_calls_false_is_passed_on(client, upstream):
    both = client.chat.completions.create(
        model="fake-large", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER, TIME]
    )
    assert [c.id for c in both.choices[0].message.tool_calls] == ["call_fake_0", "call_fake_1"]
    one = client.chat.completions.create(
        model="fake-large",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER, TIME],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["weather"]
    sent = sent_bodies(upstream)[-1]
    assert (sent["parallel_tool_calls"], sent["tool_choice"]) == (False, "auto")


def test_the_tool_results_sent_back_continue_the_same_conversation(client, api, model_server, upstream):
    asked = client.chat.completions.create(
        model="fake-large", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER, TIME]
    )
    cid, call_message = asked.model_extra["conversation_id"], asked.model_extra["message_id"]
    results = [
        {"role": "tool", "tool_call_id": "call_fake_0", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_fake_1", "content": "noon"},
    ]
    answered = client.chat.completions.create(
        model="fake-large", messages=results, tools=[WEATHER, TIME], extra_body={"conversation_id": cid}
    )
    assert answered.model_extra["conversation_id"] == cid
    assert answered.choices[0].message.content == "Tool said: noon"
    assert answered.choices[0].finish_reason == "stop"
    # The model was shown the whole exchange, the assistant's calls as it made them.
    assert sent_messages(upstream)[-1] == [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_fake_0", "type": "function", "function": {"name": "weather", "arguments": ASKED}},
                {"id": "call_fake_1", "type": "function", "function": {"name": "time", "arguments": ASKED}},
            ],
        },
        *results,
    ]
    # In the tree: the results under the assistant's calls, one under the other, and the reply under them.
    path = api.get(f"/v1/conversations/{cid}/context").json()["messages"]
    assert [(m["role"], m.get("tool_call_id")) for m in path] == [
        ("user", None), ("assistant", None), ("tool", "call_fake_0"), ("tool", "call_fake_1"), ("assistant", None)
    ]  # fmt: skip
    assert path[1]["id"] == call_message and path[1]["tool_calls"][1]["id"] == "call_fake_1"
    assert path[-1]["id"] == answered.model_extra["message_id"]
    assert_settled(model_server.database_url, cid)


def test_a_whole_history_with_calls_and_results_starts_a_conversation(client, api, upstream):
    history = [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
    ]
    answered = client.chat.completions.create(model="fake-large", messages=history, tools=[WEATHER])
    assert answered.choices[0].message.content == "Tool said: rain"
    assert sent_messages(upstream)[-1] == history  # developer stays developer; null content is sent as null


def test_content_parts_are_passed_on_as_given(client, upstream):
    parts = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    completion = client.chat.completions.create(model="fake-large", messages=[{"role": "user", "content": parts}])
    assert completion.choices[0].message.content == "Hello from fake-large. You said: what is in this picture?"
    assert sent_messages(upstream)[-1] == [{"role": "user", "content": parts}]


def test_the_request_fields_are_passed_on_and_metadata_is_recorded_with_the_reply(client, api, upstream):
    completion = client.chat.completions.create(
        model="fake-large",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
        seed=7,
        stop=["\n\n"],
        max_completion_tokens=50,
        logprobs=True,
        top_logprobs=2,
        metadata={"run": "r1"},
        temperature=0.5,
    )
    sent = sent_bodies(upstream)[-1]
    assert {k: sent[k] for k in ("response_format", "seed", "stop", "max_completion_tokens", "logprobs")} == {
        "response_format": {"type": "json_object"}, "seed": 7, "stop": ["\n\n"], "max_completion_tokens": 50,
        "logprobs": True,
    }  # fmt: skip
    assert (sent["top_logprobs"], sent["metadata"], sent["temperature"]) == (2, {"run": "r1"}, 0.5)
    assert "max_tokens" not in sent  # sent under the name it was given
    extra = completion.model_extra
    stored = api.get(f"/v1/conversations/{extra['conversation_id']}/messages/{extra['message_id']}").json()
    assert stored["generation"]["params"]["metadata"] == {"run": "r1"}
    assert stored["generation"]["params"]["max_completion_tokens"] == 50


def test_reasoning_is_passed_through_streamed_and_not(client, upstream):
    whole = client.chat.completions.create(
        model="fake-large", messages=[{"role": "user", "content": "hi"}], reasoning_effort="low"
    )
    assert sent_bodies(upstream)[-1]["reasoning_effort"] == "low"
    assert whole.choices[0].message.model_extra["reasoning_content"] == "Thinking it over."
    assert whole.choices[0].message.content == "Hello from fake-large. You said: hi"
    chunks = list(
        client.chat.completions.create(
            model="fake-large", messages=[{"role": "user", "content": "hi"}], reasoning_effort="low", stream=True
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) == "Thinking it over."
    assert "".join(d.content or "" for d in deltas) == "Hello from fake-large. You said: hi"


def test_the_ollama_upstream_maps_calls_both_ways(client, upstream):
    completion = client.chat.completions.create(
        model="fakeollama/fake-small", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER]
    )
    choice = completion.choices[0]
    [call] = choice.message.tool_calls
    # Ollama gives no id: one is made; its arguments (an object there) are JSON text here.
    assert call.id.startswith("call_") and len(call.id) == 29
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", {"said": "weather in Oslo?"})
    assert choice.finish_reason == "tool_calls"
    assert sent_bodies(upstream)[-1]["tools"] == [WEATHER]
    cid = completion.model_extra["conversation_id"]
    answered = client.chat.completions.create(
        model="fakeollama/fake-small",
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
        extra_body={"conversation_id": cid},
    )
    assert answered.choices[0].message.content == "Tool said: sunny"
    assert sent_messages(upstream)[-1][1:] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"said": "weather in Oslo?"}}, "id": call.id}
        ]},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]  # fmt: skip


def test_echo_answers_tools_offline(client):
    asked = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "Oslo"}], tools=[WEATHER]
    )
    [call] = asked.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_echo_0", "weather", '{"text":"Oslo"}')
    answered = client.chat.completions.create(
        model="echo",
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
        extra_body={"conversation_id": asked.model_extra["conversation_id"]},
    )
    assert answered.choices[0].message.content == "echo: sunny"


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(after: str, language: str) -> str:
    return README.read_text().split(after, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_readme_tool_call_examples_work(server):
    key = server.new_key()[1]
    script = readme_block("A tool call and its result.", "sh")
    env = {**os.environ, "CT": server.base_url, "AUTH": f"Authorization: Bearer {key}"}
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    promised = [line.removeprefix("# ") for line in script.splitlines() if line.startswith("# ")]
    assert ran.stdout.splitlines() == promised
    example = readme_block("The same with OpenAI's Python SDK", "python")
    program = f"KEY = {key!r}\n" + example.replace("http://127.0.0.1:8000", server.base_url)
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    promised = [line.split("  # ", 1)[1] for line in example.splitlines() if line.startswith("print(")]
    assert ran.stdout.splitlines() == promised


def test_a_streamed_retry_by_key_replays_reasoning_and_every_call_whole(client, upstream):
    """A keyed retry of a streamed completion is a stream of the stored reply: its reasoning in one
    delta, and its calls, all of them, in one delta of their own, never a second model call."""
    headers = {"Idempotency-Key": f"calls-{os.urandom(8).hex()}"}

    def streamed() -> list:
        stream = client.chat.completions.create(
            model="fake-large", messages=[{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER, TIME],
            reasoning_effort="low", stream=True, extra_headers=headers,
        )  # fmt: skip
        return [c.choices[0].delta for c in stream if c.choices]

    streamed()
    asked = len(sent_bodies(upstream))
    deltas = streamed()
    assert len(sent_bodies(upstream)) == asked
    reasoning = [d for d in deltas if (d.model_extra or {}).get("reasoning_content")]
    assert [d.model_extra["reasoning_content"] for d in reasoning] == ["Thinking it over."]
    [calls] = [d.tool_calls for d in deltas if d.tool_calls]
    assert [(c.index, c.id, c.function.name) for c in calls] == [
        (0, "call_fake_0", "weather"),
        (1, "call_fake_1", "time"),
    ]
    assert json.loads(calls[0].function.arguments) == {"said": "weather in Oslo?"}
