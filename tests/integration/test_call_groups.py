"""Tool-call groups over HTTP: a tool message answers a call of the assistant message it follows,
once, on every door that appends one; a context says which calls wait for their results, and a
model is never shown a call without its result."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import create, problem, say

NDJSON = {"content-type": "application/x-ndjson"}


def post(api: httpx.Client, cid: str, **body: Any) -> httpx.Response:
    return api.post(f"/v1/conversations/{cid}/messages", json=body)


def asks(api: httpx.Client, cid: str, *ids: str, **body: Any) -> dict[str, Any]:
    calls = [{"id": i, "type": "function", "function": {"name": "lookup", "arguments": f'{{"q":"{i}"}}'}} for i in ids]
    r = post(api, cid, role="assistant", content=None, tool_calls=calls, **body)
    assert r.status_code == 201, r.text
    return r.json()


def answer(api: httpx.Client, cid: str, call_id: str, **body: Any) -> httpx.Response:
    return post(api, cid, role="tool", content=f"result of {call_id}", tool_call_id=call_id, **body)


def context(api: httpx.Client, cid: str, **params: Any) -> dict[str, Any]:
    r = api.get(f"/v1/conversations/{cid}/context", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_tool_message_without_a_call_id_is_refused_as_an_invalid_message(api):
    cid = create(api)["id"]
    say(api, cid, "hi")
    body = problem(post(api, cid, role="tool", content="42"), 422, "invalid-message")
    assert body["context"] == {"field": "tool_call_id"}
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1


def test_a_result_under_a_message_that_asked_for_no_call_is_refused_naming_the_id(api):
    cid = create(api)["id"]
    say(api, cid, "hi")
    body = problem(answer(api, cid, "call_1"), 422, "tool-result-without-call")
    assert body["context"] == {"tool_call_id": "call_1"}
    assert "call_1" in body["detail"]


def test_results_of_parallel_calls_are_appended_in_any_order_and_once(api):
    cid = create(api)["id"]
    say(api, cid, "weather in Paris and Rome?")
    a = asks(api, cid, "c1", "c2", "c3")
    # To the head, one after the other (the grouped path, on the group remembered with the head).
    t3 = answer(api, cid, "c3")
    assert t3.status_code == 201, t3.text
    assert t3.json()["parent_message_id"] == a["id"]
    problem(answer(api, cid, "c3"), 422, "duplicate-tool-result")
    problem(answer(api, cid, "c9"), 422, "tool-result-without-call")
    t1 = answer(api, cid, "c1", parent_message_id=t3.json()["id"])
    assert t1.status_code == 201, t1.text
    # As a branch under an earlier result (the locked path, reading the group off the path): c1
    # is not answered on that path, c3 is.
    branch = answer(api, cid, "c1", parent_message_id=t3.json()["id"])
    assert branch.status_code == 201, branch.text
    body = problem(answer(api, cid, "c3", parent_message_id=t3.json()["id"]), 422, "duplicate-tool-result")
    assert body["context"] == {"tool_call_id": "c3"}
    t2 = answer(api, cid, "c2", parent_message_id=t1.json()["id"])
    assert t2.status_code == 201, t2.text


def test_a_result_after_the_group_was_left_is_refused(api):
    cid = create(api)["id"]
    say(api, cid, "q")
    asks(api, cid, "c1", "c2")
    assert answer(api, cid, "c1").status_code == 201
    say(api, cid, "never mind")
    problem(answer(api, cid, "c2"), 422, "tool-result-without-call")


def test_the_context_names_the_calls_still_without_results(api):
    cid = create(api)["id"]
    say(api, cid, "q")
    asks(api, cid, "c1", "c2")
    assert context(api, cid)["pending_tool_calls"] == ["c1", "c2"]
    assert answer(api, cid, "c2").status_code == 201
    ctx = context(api, cid)
    assert ctx["pending_tool_calls"] == ["c1"]
    assert ctx["messages"][1]["tool_calls"][0]["id"] == "c1"
    assert answer(api, cid, "c1").status_code == 201
    done = context(api, cid)
    assert "pending_tool_calls" not in done
    # A window of the last message still starts at the call, never at a result.
    assert [m["role"] for m in context(api, cid, last=1)["messages"]] == ["assistant", "tool", "tool"]


def test_a_turn_whose_context_holds_a_call_without_its_result_is_refused(model_api, upstream):
    cid = create(model_api)["id"]
    say(model_api, cid, "q")
    asks(model_api, cid, "c1", "c2")
    assert answer(model_api, cid, "c1").status_code == 201
    before = model_api.get(f"/v1/conversations/{cid}").json()
    body = problem(model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "and?"}), 409, "incomplete-tool-calls")
    assert body["context"] == {"tool_call_ids": ["c2"]}
    after = model_api.get(f"/v1/conversations/{cid}").json()
    assert after["last_seq"] == before["last_seq"]  # nothing written, no model called
    assert answer(model_api, cid, "c2").status_code == 201
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "and?"})
    assert r.status_code == 201, r.text


def test_an_export_with_call_groups_imports_again(server, api):
    cid = create(api, system="rules")["id"]
    say(api, cid, "q")
    asks(api, cid, "c1", "c2")
    assert answer(api, cid, "c2").status_code == 201
    assert answer(api, cid, "c1").status_code == 201
    say(api, cid, "thanks", role="assistant")
    export = api.get(f"/v1/conversations/{cid}/export").content
    _, key = server.new_key()
    with server.client(key) as other:
        r = other.post("/v1/conversations/import", content=export, headers=NDJSON)
        assert r.status_code == 201, r.text
        # Everything but `seq`, the event's place in this database's log.
        unplaced = lambda messages: [{k: v for k, v in m.items() if k != "seq"} for m in messages]  # noqa: E731
        assert unplaced(context(other, cid)["messages"]) == unplaced(context(api, cid)["messages"])
        asks(other, cid, "c3")
        assert answer(other, cid, "c3").status_code == 201
