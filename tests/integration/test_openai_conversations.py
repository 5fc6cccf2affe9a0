"""OpenAI's Conversations API under /openai/v1, driven by the official `openai` client over HTTP:
conversations created, retrieved, updated and deleted; items added, listed page by page, retrieved
and deleted; the same conversations and messages seen through the native API and Chat Completions."""

from __future__ import annotations

import uuid

import openai
import pytest

from tests.servers import model_api as api
from tests.servers import openai_client as client

HELLO = "Hello from fake-large. You said: "


def native(conversation_id: str) -> str:
    return str(uuid.UUID(hex=conversation_id.removeprefix("conv_")))


STEP = [
    {"type": "message", "role": "user", "content": "weather in Paris and Rome?"},
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "two cities"}]},
    {"type": "function_call", "call_id": "call_p", "name": "weather", "arguments": '{"city":"Paris"}'},
    {"type": "function_call", "call_id": "call_r", "name": "weather", "arguments": '{"city":"Rome"}'},
    {"type": "function_call_output", "call_id": "call_p", "output": "sunny"},
    {"type": "function_call_output", "call_id": "call_r", "output": "rain"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sun, then rain."}]},
]


def test_a_conversation_is_created_retrieved_updated_and_deleted(client, api):
    created = client.conversations.create(metadata={"topic": "demo"})
    assert created.object == "conversation" and created.id.startswith("conv_") and len(created.id) == 37
    assert created.metadata == {"topic": "demo"} and isinstance(created.created_at, int)
    assert client.conversations.retrieve(created.id) == created
    updated = client.conversations.update(created.id, metadata={"topic": "changed", "user": "u1"})
    assert updated.metadata == {"topic": "changed", "user": "u1"} and updated.created_at == created.created_at
    assert client.conversations.retrieve(created.id).metadata == {"topic": "changed", "user": "u1"}
    assert api.get(f"/v1/conversations/{native(created.id)}").json()["metadata"] == {"topic": "changed", "user": "u1"}

    deleted = client.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError) as missing:
        client.conversations.retrieve(created.id)
    assert missing.value.body["code"] == "conversation-not-found"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(created.id)
    # The tombstone is an event: the log, and the native API, keep the conversation.
    events = api.get(f"/v1/conversations/{native(created.id)}/events").json()
    assert [e["type"] for e in events["items"]] == ["conversation_created", "conversation_updated", "conversation_deleted"]
    assert api.get(f"/v1/conversations/{native(created.id)}/audit").json()["valid"] is True


def test_metadata_beyond_openai_s_limits_is_refused_with_openai_s_error(client):
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.conversations.create(metadata=metadata)
        assert refused.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.UnprocessableEntityError):
        client.conversations.create(items=[{"role": "user", "content": str(i)} for i in range(21)])


def test_unknown_conversations_and_items_are_not_found(client):
    for cid in ("conv_" + "0" * 32, "conv_nothex", str(uuid.uuid4())):
        with pytest.raises(openai.NotFoundError):
            client.conversations.retrieve(cid)
    cid = client.conversations.create(items=[{"role": "user", "content": "hi"}]).id
    for item_id in ("msg_" + "0" * 32, "nothing"):
        with pytest.raises(openai.NotFoundError) as missing:
            client.conversations.items.retrieve(item_id, conversation_id=cid)
        assert missing.value.body["code"] == "item-not-found"


def test_items_of_a_step_with_parallel_calls_read_back_as_sent_with_convtree_ids(client, api):
    cid = client.conversations.create(items=STEP).id
    listed = client.conversations.items.list(cid, order="asc")
    got = [item.model_dump(exclude_none=True) for item in listed.data]
    assert [{k: v for k, v in item.items() if k not in ("id", "status")} for item in got] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather in Paris and Rome?"}]},
        STEP[1], STEP[2], STEP[3], STEP[4], STEP[5],
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Sun, then rain.", "annotations": []}]},
    ]
    assert all(item["status"] == "completed" for item in got)
    assert [item["id"][: item["id"].index("_")] for item in got] == ["msg", "rs", "fc", "fc", "fco", "fco", "msg"]
    # Natively: one assistant message carries the reasoning and both calls; each result follows it.
    path = api.get(f"/v1/conversations/{native(cid)}/context").json()["messages"]
    assert [m["role"] for m in path] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["id"] for c in path[1]["tool_calls"]] == ["call_p", "call_r"]
    assert got[1]["id"] == "rs_" + uuid.UUID(path[1]["id"]).hex
    assert got[2]["id"] == f"fc_{uuid.UUID(path[1]['id']).hex}_0"
    one = client.conversations.items.retrieve(got[3]["id"], conversation_id=cid)
    assert one.model_dump(exclude_none=True) == got[3]


def test_items_are_paged_newest_first_by_default_with_after(client):
    cid = client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(7)]).id
    first = client.conversations.items.list(cid, limit=3)
    assert [i.content[0].text for i in first.data] == ["m6", "m5", "m4"]
    assert first.has_more is True and first.first_id == first.data[0].id and first.last_id == first.data[-1].id
    texts = [i.content[0].text for i in client.conversations.items.list(cid, limit=3)]  # auto-paging
    assert texts == [f"m{i}" for i in reversed(range(7))]
    ascending = [i.content[0].text for i in client.conversations.items.list(cid, limit=2, order="asc")]
    assert ascending == [f"m{i}" for i in range(7)]
    last = client.conversations.items.list(cid, limit=3, after=first.data[-1].id)
    assert [i.content[0].text for i in last.data] == ["m3", "m2", "m1"] and last.has_more is True
    end = client.conversations.items.list(cid, limit=3, after=last.data[-1].id)
    assert [i.content[0].text for i in end.data] == ["m0"] and end.has_more is False


def test_an_empty_conversation_lists_an_empty_page_that_ends(client, api):
    cid = client.conversations.create().id
    page = api.get(f"/openai/v1/conversations/{cid}/items").json()
    assert page == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert list(client.conversations.items.list(cid)) == []


def test_items_are_appended_under_the_head_and_answered_with_their_ids(client, api):
    cid = client.conversations.create(items=[{"role": "user", "content": "hi"}]).id
    added = client.conversations.items.create(
        cid,
        items=[
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                         {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"}]},
        ],
    )
    assert [i.type for i in added.data] == ["message", "message"] and added.has_more is False
    assert added.first_id == added.data[0].id and added.last_id == added.data[1].id
    listed = [i.id for i in client.conversations.items.list(cid, order="asc")]
    assert listed[1:] == [added.first_id, added.last_id]
    # Stored as Chat Completions parts: the native API, and a chat client, read them.
    head = api.get(f"/v1/conversations/{native(cid)}/context").json()["messages"][-1]
    assert head["content"] == [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}}
    ]


def test_a_tool_output_without_its_call_is_refused_and_nothing_is_appended(client):
    cid = client.conversations.create(items=[{"role": "user", "content": "hi"}]).id
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.conversations.items.create(
            cid,
            items=[{"role": "user", "content": "more"}, {"type": "function_call_output", "call_id": "nope", "output": "x"}],
        )
    assert refused.value.body["code"] == "tool-result-without-call"
    assert len(client.conversations.items.list(cid).data) == 1


def test_deleting_the_head_item_moves_the_head_to_its_parent_and_keeps_the_branch(client, api):
    cid = client.conversations.create(items=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]).id
    last = client.conversations.items.list(cid, limit=1).data[0]
    conversation = client.conversations.items.delete(last.id, conversation_id=cid)
    assert conversation.id == cid and conversation.object == "conversation"
    assert [i.content[0].text for i in client.conversations.items.list(cid)] == ["one"]
    tree = api.get(f"/v1/conversations/{native(cid)}/tree").json()
    assert [m["content"] for m in tree["messages"]] == ["one", "two"]  # the popped one stays, off the path
    client.conversations.items.create(cid, items=[{"role": "user", "content": "three"}])
    assert [i.content[0].text for i in client.conversations.items.list(cid, order="asc")] == ["one", "three"]


def test_deleting_one_call_of_the_head_step_keeps_the_rest_of_the_step(client, api):
    step = [{"role": "user", "content": "go"}, *STEP[1:4]]
    cid = client.conversations.create(items=step).id
    before = client.conversations.items.list(cid, order="asc").data
    client.conversations.items.delete(before[-1].id, conversation_id=cid)
    after = [i.model_dump(exclude_none=True) for i in client.conversations.items.list(cid, order="asc")]
    assert [(i["type"], i.get("call_id")) for i in after] == [
        ("message", None), ("reasoning", None), ("function_call", "call_p")
    ]
    assert after[1]["id"] != before[1].id  # the step without the call is a new message, beside the old
    assert len(api.get(f"/v1/conversations/{native(cid)}/tree").json()["messages"]) == 3


def test_deleting_an_inner_item_hides_its_message_and_the_log_keeps_it(client, api):
    cid = client.conversations.create(items=[{"role": "user", "content": t} for t in ("a", "b", "c")]).id
    middle = client.conversations.items.list(cid, order="asc").data[1]
    client.conversations.items.delete(middle.id, conversation_id=cid)
    assert [i.content[0].text for i in client.conversations.items.list(cid, order="asc")] == ["a", "c"]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(middle.id, conversation_id=cid)
    context = api.get(f"/v1/conversations/{native(cid)}/context").json()["messages"]
    assert [m["content"] for m in context] == ["a", "b", "c"]
    assert api.get(f"/v1/conversations/{native(cid)}/audit").json()["valid"] is True


def test_a_conversation_made_through_chat_completions_lists_as_items_and_continues_there(client, api, model_server, model_key):
    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=model_key[1], max_retries=0) as chat:
        completion = chat.chat.completions.create(model="fake-large", messages=[{"role": "user", "content": "hi"}])
    cid = "conv_" + uuid.UUID(completion.model_extra["conversation_id"]).hex
    items = client.conversations.items.list(cid, order="asc").data
    assert [(i.role, i.content[0].type, i.content[0].text) for i in items] == [
        ("user", "input_text", "hi"), ("assistant", "output_text", HELLO + "hi")
    ]
    assert items[1].id == "msg_" + uuid.UUID(completion.model_extra["message_id"]).hex
    client.conversations.items.create(cid, items=[{"role": "user", "content": "again"}])
    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=model_key[1], max_retries=0) as chat:
        reply = chat.chat.completions.create(
            model="fake-large",
            messages=[{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}][1:],
            extra_body={"conversation_id": native(cid)},
        )
    assert reply.choices[0].message.content == HELLO + "more"
    texts = [i.content[0].text for i in client.conversations.items.list(cid, order="asc")]
    assert texts == ["hi", HELLO + "hi", "again", "more", HELLO + "more"]


def test_a_native_conversation_is_a_conversations_conversation(client, api):
    created = api.post("/v1/conversations", json={"metadata": {"a": "b"}, "system": "Be brief."}).json()
    cid = "conv_" + uuid.UUID(created["id"]).hex
    assert client.conversations.retrieve(cid).metadata == {"a": "b"}
    [system] = client.conversations.items.list(cid).data
    assert (system.role, system.content[0].text) == ("system", "Be brief.")


def test_the_openai_base_path_serves_chat_completions_and_models_with_openai_errors(client, api):
    assert any(m.id == "fake/fake-large" for m in client.models.list())
    assert api.get("/v1/models").json() == api.get("/openai/v1/models").json()
    refused = api.post("/openai/v1/chat/completions", json={"model": "fake-large", "messages": []})
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "invalid_request_error"
    unknown = api.get("/openai/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not-found"
