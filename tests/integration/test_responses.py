"""The Responses API (`/openai/v1/responses`), driven by the official `openai` client against the
fake model server: create, chain, branch, retrieve, delete, input items, streaming, a function-call
round trip, instructions, `conversation`, `store: false`, and OpenAI's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.turnkit import sse

MODEL = "fake/fake-large"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def key(model_server, upstream) -> str:
    return model_server.new_key()[1]


@pytest.fixture
def client(model_server, key) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=key, max_retries=0) as c:
        yield c


@pytest.fixture
def api(model_server, key) -> Iterator[httpx.Client]:
    with model_server.client(key) as c:
        yield c


def sent(upstream) -> list[list[dict]]:
    """The messages of every chat request the fake model server received, in order."""
    return [r.body["messages"] for r in upstream.requests if r.method == "POST"]


def said(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in messages]


def test_a_response_answers_its_input_with_the_full_response_object(client, upstream):
    response = client.responses.create(model=MODEL, input="hello there", metadata={"k": "v"})
    assert response.id.startswith("resp_") and len(response.id) == 37
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "Hello from fake-large. You said: hello there"
    [message] = response.output
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert response.usage is not None and response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.metadata == {"k": "v"} and response.store is True and response.previous_response_id is None
    body = response.model_dump(mode="json")
    for name in ("completed_at", "error", "incomplete_details", "instructions", "conversation", "truncation", "text",
                 "reasoning", "user", "max_output_tokens", "max_tool_calls", "background", "service_tier",
                 "safety_identifier", "prompt_cache_key", "presence_penalty", "frequency_penalty", "top_logprobs",
                 "temperature", "top_p", "tool_choice", "tools", "parallel_tool_calls", "next_response_ids"):  # fmt: skip
        assert name in body, name
    assert said(sent(upstream)[-1]) == [("user", "hello there")]


def test_a_chain_sends_the_path_and_two_responses_to_one_predecessor_are_branches(client, upstream):
    first = client.responses.create(model=MODEL, input="one")
    second = client.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    third = client.responses.create(model=MODEL, input="three", previous_response_id=second.id)
    assert said(sent(upstream)[-1]) == [
        ("user", "one"), ("assistant", first.output_text), ("user", "two"), ("assistant", second.output_text),
        ("user", "three"),
    ]  # fmt: skip
    # A second response to `first`: its own context, not the latest branch's.
    other = client.responses.create(model=MODEL, input="two again", previous_response_id=first.id)
    assert said(sent(upstream)[-1]) == [("user", "one"), ("assistant", first.output_text), ("user", "two again")]
    # And each branch goes on with its own history.
    client.responses.create(model=MODEL, input="four", previous_response_id=third.id)
    assert [c for _, c in said(sent(upstream)[-1])][-2:] == [third.output_text, "four"]
    assert "two again" not in [c for _, c in said(sent(upstream)[-1])]
    retrieved = client.responses.retrieve(first.id)
    assert retrieved.model_extra["next_response_ids"] == [second.id, other.id]
    assert retrieved.output_text == first.output_text


def test_instructions_are_sent_with_their_response_only(client, upstream):
    first = client.responses.create(model=MODEL, input="hi", instructions="Be brief.")
    assert first.instructions == "Be brief."
    assert said(sent(upstream)[-1]) == [("system", "Be brief."), ("user", "hi")]
    second = client.responses.create(model=MODEL, input="again", previous_response_id=first.id)
    assert second.instructions is None
    assert said(sent(upstream)[-1]) == [("user", "hi"), ("assistant", first.output_text), ("user", "again")]
    items = client.responses.input_items.list(first.id, order="asc")
    assert [i.type for i in items.data] == ["message"]  # instructions are not an item of the path


def test_retrieve_and_a_deleted_response_cannot_be_continued(client, api, model_server):
    first = client.responses.create(model=MODEL, input="secret")
    assert client.responses.retrieve(first.id).id == first.id
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="more", previous_response_id=first.id)
    assert raised.value.code == "previous_response_not_found"
    assert raised.value.body["param"] == "previous_response_id"
    # The log keeps its events: the conversation still verifies, with the content withheld.
    cid = _conversation_of(model_server, first.id)
    assert api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
    messages = api.get(f"/v1/conversations/{cid}/tree").json()["messages"]
    assert {m["content"] for m in messages} == {"[redacted]"}


def test_unknown_and_store_false_predecessors_are_not_found(client, upstream):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_" + "0" * 32)
    assert raised.value.code == "previous_response_not_found"
    unstored = client.responses.create(model=MODEL, input="x", store=False)
    assert unstored.store is False and unstored.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="y", previous_response_id=unstored.id)
    assert raised.value.code == "previous_response_not_found"


def test_previous_response_id_and_conversation_together_are_refused(client):
    first = client.responses.create(model=MODEL, input="x")
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="y", previous_response_id=first.id, conversation="conv_" + "0" * 32)
    assert raised.value.body["type"] == "invalid_request_error" and raised.value.body["param"] == "previous_response_id"


def test_input_items_list_the_whole_context_with_paging(client):
    first = client.responses.create(model=MODEL, input="one")
    second = client.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    listed = client.responses.input_items.list(second.id, order="asc")
    assert [(i.type, getattr(i, "role", None)) for i in listed.data] == [
        ("message", "user"), ("message", "assistant"), ("message", "user")
    ]  # fmt: skip
    assert listed.data[1].id == first.output[0].id
    newest = client.responses.input_items.list(second.id)  # desc by default
    assert [i.id for i in newest.data] == [i.id for i in reversed(listed.data)]
    page = client.responses.input_items.list(second.id, order="asc", limit=2)
    assert len(page.data) == 2 and page.has_more is True
    rest = client.responses.input_items.list(second.id, order="asc", limit=2, after=page.data[-1].id)
    assert [i.id for i in rest.data] == [listed.data[2].id] and rest.has_more is False
    assert [i.id for i in client.responses.input_items.list(second.id, order="asc", limit=1)] == [i.id for i in listed.data]


def test_a_function_call_round_trip(client, upstream):
    asked = client.responses.create(model=MODEL, input="weather in Oslo?", tools=[WEATHER])
    [call] = asked.output
    assert call.type == "function_call" and call.name == "weather" and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"said": "weather in Oslo?"}
    assert upstream.requests[-1].body["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    answered = client.responses.create(
        model=MODEL,
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert answered.output_text == "Tool said: sunny"
    last = sent(upstream)[-1]
    assert last[-2]["tool_calls"][0]["id"] == call.call_id and last[-1] == {
        "role": "tool", "tool_call_id": call.call_id, "content": "sunny"
    }  # fmt: skip


def test_other_tool_types_are_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    assert "web_search" in raised.value.message and raised.value.body["param"] == "tools[0].type"


def test_an_unstored_background_response_and_cancelling_a_foreground_one_are_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="x", background=True, store=False)
    assert raised.value.body["param"] == "background"
    done = client.responses.create(model=MODEL, input="x")
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.cancel(done.id)
    assert "background" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        list(client.responses.retrieve(done.id, stream=True))
    assert raised.value.body["param"] == "stream"


def test_conversation_appends_to_its_head(client, api, upstream):
    conv = client.conversations.create(items=[{"role": "user", "content": "zero"}])
    first = client.responses.create(model=MODEL, input="one", conversation=conv.id)
    assert first.conversation is not None and first.conversation.id == conv.id
    assert said(sent(upstream)[-1]) == [("user", "zero"), ("user", "one")]
    second = client.responses.create(model=MODEL, input="two", conversation={"id": conv.id})
    assert said(sent(upstream)[-1]) == [("user", "zero"), ("user", "one"), ("assistant", first.output_text), ("user", "two")]
    listed = client.conversations.items.list(conv.id, order="asc")
    assert listed.data[-1].id == second.output[0].id and listed.data[2].id == first.output[0].id
    assert [getattr(i, "role", None) for i in listed.data] == ["user", "user", "assistant", "user", "assistant"]
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="x", conversation="conv_" + "0" * 32)


def test_a_stream_sends_the_event_sequence_and_the_final_response(client, upstream):
    with client.responses.stream(model=MODEL, input="stream it") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text
    assert final.output_text == "Hello from fake-large. You said: stream it" and final.usage is not None
    assert events[2].item.id == final.output[0].id
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_a_streamed_call_sends_its_argument_deltas(model_server, key):
    body = {"model": MODEL, "input": "weather in Oslo?", "tools": [WEATHER], "stream": True}
    with model_server.client(key) as http, http.stream("POST", "/openai/v1/responses", json=body) as r:
        events = list(sse(r))
    assert events[-1] == ("message", "[DONE]")
    named = [(e, d) for e, d in events[:-1]]
    assert all(e == d["type"] for e, d in named)
    kinds = [e for e, _ in named]
    assert kinds[2] == "response.output_item.added" and named[2][1]["item"]["type"] == "function_call"
    deltas = [d["delta"] for e, d in named if e == "response.function_call_arguments.delta"]
    done = next(d for e, d in named if e == "response.function_call_arguments.done")
    assert "".join(deltas) == done["arguments"] == json.dumps({"said": "weather in Oslo?"})
    assert kinds[-1] == "response.completed" and named[-1][1]["response"]["output"][0]["call_id"] == "call_fake_0"


def _conversation_of(model_server, rid: str) -> str:
    from tests.postgres import fetch

    [row] = fetch(
        model_server.database_url,
        "SELECT conversation_id::text AS c FROM responses WHERE response_id = $1::uuid",
        rid.removeprefix("resp_"),
    )
    return row["c"]


def test_truncation_auto_drops_the_oldest_items_to_fit_and_disabled_refuses_instead(client, upstream):
    first = client.responses.create(model=MODEL, input="one " * 50)
    second = client.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    window = {"window": {"strategy": "tokens", "max_tokens": 60}}
    client.responses.create(
        model=MODEL, input="three", previous_response_id=second.id, truncation="auto", extra_body=window
    )
    assert said(sent(upstream)[-1]) == [("user", "two"), ("assistant", second.output_text), ("user", "three")]
    calls = len(sent(upstream))
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="three", previous_response_id=second.id, extra_body=window)
    assert raised.value.code == "context_length_exceeded" and raised.value.body["param"] == "input"
    assert len(sent(upstream)) == calls  # refused before the model was called
    client.responses.create(model=MODEL, input="three", previous_response_id=second.id)  # no window: no limit known
    assert said(sent(upstream)[-1])[0] == ("user", "one " * 50)


def test_reasoning_is_streamed_as_a_reasoning_item_before_the_message(client):
    with client.responses.stream(model=MODEL, input="think", reasoning={"effort": "low"}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert events[2].item.type == "reasoning" and events[2].item.id.startswith("rs_")
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert thought == "Thinking it over."
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert final.output[0].id == events[2].item.id and final.output[0].content[0].text == thought
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_failed_stream_ends_with_response_failed_and_the_response_reads_failed(model_server, key, upstream):
    from tests.fakeupstream import Fault

    upstream.fail_next(Fault.status_code(400, message="no such thing"))
    body = {"model": MODEL, "input": "fail please", "stream": True}
    with model_server.client(key) as http:
        with http.stream("POST", "/openai/v1/responses", json=body) as r:
            events = list(sse(r))
        assert [e for e, _ in events[:2]] == ["response.created", "response.in_progress"]
        kind, failed = events[-2]
        assert kind == "response.failed" and failed["response"]["status"] == "failed"
        assert failed["response"]["error"]["code"] == "server_error" and events[-1][1] == "[DONE]"
        rid = failed["response"]["id"]
        read = http.get(f"/openai/v1/responses/{rid}").json()
    assert read["status"] == "failed" and read["error"]["message"] and read["output"] == []


def test_a_created_response_is_the_response_read_back(model_server, key, client):
    """A create answers from what it wrote and the reply it recorded, not from a read of them: the
    Response it answers (whole, or the streamed one that ends it) is the one GET reads afterwards,
    key for key, whatever the response holds and wherever it goes."""
    conv = client.conversations.create(items=[{"role": "user", "content": "zero"}])
    with model_server.client(key) as http:

        def created(body: dict) -> dict:
            r = http.post("/openai/v1/responses", json=body)
            assert r.status_code == 200, r.text
            return r.json()

        def streamed(body: dict) -> dict:
            with http.stream("POST", "/openai/v1/responses", json={**body, "stream": True}) as r:
                events = list(sse(r))
            kind, last = events[-2]
            assert kind == "response.completed", kind
            return last["response"]

        first = created({
            "model": MODEL, "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "instructions": "answer", "metadata": {"k": "v"}, "temperature": 0.5, "top_p": 0.25, "user": "u",
            "max_output_tokens": 500, "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}},
        })  # fmt: skip
        answered = [
            first,
            created({"model": MODEL, "input": "weather in Oslo?", "tools": [WEATHER], "previous_response_id": first["id"]}),
            created({"model": MODEL, "input": "think", "reasoning": {"effort": "low"}, "conversation": conv.id}),
            streamed({"model": MODEL, "input": "stream it", "previous_response_id": first["id"]}),
            streamed({"model": MODEL, "input": "weather in Oslo?", "tools": [WEATHER]}),
        ]
        for response in answered:
            read = http.get(f"/openai/v1/responses/{response['id']}").json()
            if response["id"] == first["id"]:  # continued since by two responses
                assert len(read["next_response_ids"]) == 2
                read["next_response_ids"] = []
            assert response == read
    assert [r["status"] for r in answered] == ["completed"] * 5
    assert [i["type"] for i in answered[1]["output"]] == ["function_call"]
    assert [i["type"] for i in answered[2]["output"]] == ["reasoning", "message"]
    assert answered[2]["conversation"] == {"id": conv.id} and answered[3]["previous_response_id"] == first["id"]


def test_the_readme_responses_example_runs(server):
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("A chain and a branch of it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    example = "\n".join(line.removeprefix("  ") for line in block.splitlines())
    key = server.new_key()[1]
    program = f"KEY = {key!r}\n" + example.replace("http://127.0.0.1:8000", server.base_url)
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    promised = [line.split("  # ", 1)[1] for line in example.splitlines() if line.startswith("print(")]
    assert ran.stdout.splitlines() == promised


@pytest.mark.parametrize("text", ["nul \u0000 here", "lone \ud800 surrogate", "\u202e\ufeff"])
def test_hostile_text_in_every_string_field_is_never_a_server_error(api, text):
    body = {
        "model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        "instructions": text, "metadata": {"k": text}, "user": text, "prompt_cache_key": text,
    }  # fmt: skip
    r = api.post("/openai/v1/responses", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        got = api.get(f"/openai/v1/responses/{r.json()['id']}")
        assert got.status_code == 200 and got.json()["metadata"] == {"k": text}
        assert api.get(f"/openai/v1/responses/{r.json()['id']}/input_items").status_code == 200


def test_unset_sampling_tool_and_format_fields_read_as_the_values_in_effect(model_server, key):
    """The Open Responses schema requires `temperature` and `top_p` as numbers, and every key of a
    function tool and of a json_schema format, even when the request left them out: a response
    says OpenAI's defaults then (1, 1; null description/strict; strict false), in every form it is
    read in — created, streamed, retrieved."""
    tool = {"type": "function", "name": "weather", "parameters": WEATHER["parameters"]}
    fmt = {"type": "json_schema", "name": "answer", "schema": {"type": "object", "properties": {}}}
    body = {"model": MODEL, "input": "weather in Oslo?", "tools": [tool], "text": {"format": fmt}}
    with model_server.client(key) as http:
        created = http.post("/openai/v1/responses", json=body).json()
        with http.stream("POST", "/openai/v1/responses", json={**body, "stream": True}) as r:
            events = [d for _, d in sse(r) if d != "[DONE]"]
        read = http.get(f"/openai/v1/responses/{created['id']}").json()
        given = http.post("/openai/v1/responses", json={"model": MODEL, "input": "x", "temperature": 0.5, "top_p": 0.25}).json()
    for response in (created, read, *(e["response"] for e in events if "response" in e)):
        assert (response["temperature"], response["top_p"]) == (1.0, 1.0)
        assert response["tools"] == [{**tool, "description": None, "strict": None}]
        assert response["text"] == {"format": {**fmt, "description": None, "strict": False}}
    assert (given["temperature"], given["top_p"]) == (0.5, 0.25)


def test_item_reference_sends_the_stored_item_again(client, upstream):
    """An `item_reference` is the item of that id, read from the tenant's messages: a message, a
    function call and its output of one response, referenced from a new chain elsewhere."""
    asked = client.responses.create(model=MODEL, input="weather in Oslo?", tools=[WEATHER])
    [call] = asked.output
    answered = client.responses.create(
        model=MODEL, previous_response_id=asked.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )  # fmt: skip
    listed = client.responses.input_items.list(answered.id, order="asc").data
    question, output = listed[0], listed[-1]
    assert question.type == "message" and output.type == "function_call_output"
    fresh = client.responses.create(
        model=MODEL,
        input=[
            {"type": "item_reference", "id": question.id},
            {"type": "item_reference", "id": call.id},
            {"type": "item_reference", "id": output.id},
        ],
    )
    assert fresh.output_text == "Tool said: sunny"
    sent_last = sent(upstream)[-1]
    assert sent_last[0] == {"role": "user", "content": "weather in Oslo?"}
    assert sent_last[1]["tool_calls"][0]["id"] == call.call_id
    assert sent_last[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    # The new response's input items are new messages saying the same (ids of their own).
    copied = client.responses.input_items.list(fresh.id, order="asc").data
    assert [i.type for i in copied] == ["message", "function_call", "function_call_output"]
    assert copied[0].id != question.id and copied[0].content[0].text == "weather in Oslo?"


def test_item_reference_in_a_chain_and_an_output_of_another_response(client, upstream):
    first = client.responses.create(model=MODEL, input="hello")
    [said_first] = first.output
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id,
        input=[{"type": "item_reference", "id": said_first.id}, {"role": "user", "content": "say it again"}],
    )  # fmt: skip
    assert second.status == "completed"
    assert said(sent(upstream)[-1]) == [
        ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("assistant", "Hello from fake-large. You said: hello"), ("user", "say it again"),
    ]  # fmt: skip


def test_an_unknown_or_foreign_or_deleted_item_reference_is_a_400_naming_it(client, model_server, upstream):
    def refused(item_id: str, **extra) -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": item_id}], **extra)
        return caught.value

    unknown = "msg_" + "0" * 31 + "1"
    error = refused(unknown)
    assert error.body["param"] == "input[0].id" and unknown in error.body["message"]
    assert refused("not-an-item-id").body["param"] == "input[0].id"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=[{"type": "item_reference"}])
    assert caught.value.body["param"] == "input[0].id"

    # Another tenant's item is not this tenant's.
    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=model_server.new_key()[1], max_retries=0) as other:
        theirs = other.responses.create(model=MODEL, input="secret").output[0].id
    assert theirs in refused(theirs).body["message"]

    # A deleted response's items are gone; a chained reference to one is refused too.
    mine = client.responses.create(model=MODEL, input="hello")
    kept = client.responses.create(model=MODEL, input="other")
    client.responses.delete(mine.id)
    assert refused(mine.output[0].id).body["param"] == "input[0].id"
    assert mine.output[0].id in refused(mine.output[0].id, previous_response_id=kept.id).body["message"]
