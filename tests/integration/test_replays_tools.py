"""Replay runs of agent turns against the fake model server: each model step asked again, the
recorded tool results reused for the same calls, a call never recorded stopping the path, a text
answer where the original called tools, several steps in one turn, and the diff of every step."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fakeupstream import Fault
from tests.helpers import create, say
from tests.integration.test_replays import audit, path, replay, snapshot, wait_run
from tests.turnkit import sent_messages

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
TOOLS = {"provider": "fake", "model": "fake-small", "params": {"tools": [LOOKUP]}}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def step(api: httpx.Client, cid: str, calls: list[tuple[str, str, str]], results: list[str]) -> dict[str, Any]:
    """An assistant message asking for `calls` (id, name, arguments) and the results of the first
    len(results) of them; returns the assistant message."""
    asked = say(api, cid, None, role="assistant", tool_calls=[call(*c) for c in calls])  # type: ignore[arg-type]
    for (call_id, _, _), result in zip(calls, results, strict=False):
        say(api, cid, result, role="tool", tool_call_id=call_id)
    return asked


def agent_conversation(api: httpx.Client, turns: int = 2) -> tuple[str, list[dict[str, Any]]]:
    """Turns where the model looked the question up (the arguments as a model may space them: the
    fake asks `{"said": "<question>"}`), then answered; returns the id and each turn's messages."""
    cid = create(api, system="Use the tools.")["id"]
    recorded = []
    for i in range(turns):
        user = say(api, cid, f"question {i}")
        asked = step(api, cid, [(f"orig_{i}", "lookup", '{ "said" :  "question %d" }' % i)], [f"result {i}"])
        reply = say(api, cid, f"Answer {i}, from the tool.", role="assistant")
        recorded.append({"user": user, "asked": asked, "reply": reply})
    return cid, recorded


def posted(upstream: Any) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.method == "POST"]


def diff(api: httpx.Client, cid: str, run_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/conversations/{cid}/replays/{run_id}/diff")
    assert r.status_code == 200, r.text
    return r.json()


def test_a_tool_calling_path_replays_each_step_reusing_the_recorded_results(model_api, upstream):
    cid, recorded = agent_conversation(model_api)
    before = snapshot(model_api, cid)
    run = wait_run(model_api, cid, replay(model_api, cid, target=TOOLS)["id"])
    assert (run["status"], run["turns_done"], run["error"]) == ("finished", 2, None)
    new = path(model_api, run["target_conversation_id"])
    assert [m["role"] for m in new] == ["system"] + ["user", "assistant", "tool", "assistant"] * 2
    for i in range(2):
        user, asked, result, reply = new[1 + 4 * i : 5 + 4 * i]
        assert user["content"] == f"question {i}"
        [new_call] = asked["tool_calls"]
        assert new_call == call("call_fake_0", "lookup", json.dumps({"said": f"question {i}"}))
        # The recorded result, answering the new call's id: the call group is whole.
        assert (result["content"], result["tool_call_id"]) == (f"result {i}", "call_fake_0")
        assert "generation" not in result or result["generation"] is None
        assert reply["content"] == f"Tool said: result {i}"
        assert asked["generation"]["replay_of"] == recorded[i]["asked"]["id"]
        assert asked["generation"]["finish_reason"] == "tool_calls"
        assert reply["generation"]["replay_of"] == recorded[i]["reply"]["id"]
        assert reply["generation"]["context"] == [{"first_id": new[0]["id"], "last_id": new[3 + 4 * i]["id"], "count": 4 + 4 * i}]
    # Each step was asked with the new path so far: the second with the reused result.
    sent = sent_messages(upstream)[-4:]
    assert [len(s) for s in sent] == [2, 4, 6, 8]
    assert sent[1][-1] == {"role": "tool", "tool_call_id": "call_fake_0", "content": "result 0"}
    assert all(body["tools"] == [LOOKUP] for body in posted(upstream)[-4:])
    assert snapshot(model_api, cid) == before
    assert audit(model_api, run["target_conversation_id"])["valid"]

    turns = diff(model_api, cid, run["id"])["turns"]
    assert len(turns) == 2
    for i, t in enumerate(turns):
        assert (t["original"]["id"], t["replayed"]["content"]) == (recorded[i]["reply"]["id"], f"Tool said: result {i}")
        [s] = t["steps"]
        assert (s["index"], s["resolution"], s["unrecorded"]) == (0, "reused", [])
        assert s["original"]["id"] == recorded[i]["asked"]["id"]
        assert s["original"]["tool_calls"] == [
            {"id": f"orig_{i}", "name": "lookup", "arguments": '{ "said" :  "question %d" }' % i, "result": f"result {i}"}
        ]
        assert s["replayed"]["tool_calls"] == [
            {"id": "call_fake_0", "name": "lookup", "arguments": json.dumps({"said": f"question {i}"}), "result": f"result {i}"}
        ]
        assert s["replayed"]["model"] == "fake-small" and s["replayed"]["finish_reason"] == "tool_calls"


def test_a_call_the_path_never_recorded_stops_the_run_naming_the_tool_and_its_arguments(model_api, upstream):
    cid, recorded = agent_conversation(model_api)
    target = {**TOOLS, "params": {"tools": [LOOKUP, WEATHER]}}  # the fake calls both: weather was never recorded
    run = wait_run(model_api, cid, replay(model_api, cid, target=target)["id"])
    asked = json.dumps({"said": "question 0"})
    assert (run["status"], run["error"], run["turns_done"], run["turns_total"]) == ("stopped", "unrecorded_tool_call", 1, 2)
    assert "'weather'" in run["detail"] and asked in run["detail"] and "'lookup'" not in run["detail"]
    new = path(model_api, run["target_conversation_id"])
    # Written as far as it went: the step that asked, its calls unanswered (convtree runs no tool).
    assert [m["role"] for m in new] == ["system", "user", "assistant"]
    assert [c["function"]["name"] for c in new[2]["tool_calls"]] == ["lookup", "weather"]
    assert new[2]["generation"]["replay_of"] == recorded[0]["asked"]["id"]
    context = model_api.get(f"/v1/conversations/{run['target_conversation_id']}/context").json()
    assert context["pending_tool_calls"] == ["call_fake_0", "call_fake_1"]
    assert len(posted(upstream)) == 1  # no further step, no further turn
    assert audit(model_api, run["target_conversation_id"])["valid"]

    turns = diff(model_api, cid, run["id"])["turns"]
    [stopped] = turns[0]["steps"]
    assert (stopped["resolution"], stopped["unrecorded"]) == ("unrecorded", [{"name": "weather", "arguments": asked}])
    assert [c["result"] for c in stopped["replayed"]["tool_calls"]] == [None, None]
    assert turns[0]["replayed"] is None and turns[0]["similarity"] is None
    [later] = turns[1]["steps"]  # the second turn was never reached
    assert (later["resolution"], later["replayed"], later["original"]["id"]) == (None, None, recorded[1]["asked"]["id"])


def test_a_model_that_answers_text_where_the_original_called_tools_diverges_and_the_run_goes_on(model_api, upstream):
    cid, recorded = agent_conversation(model_api)
    run = wait_run(model_api, cid, replay(model_api, cid, target={"provider": "fake", "model": "fake-small"})["id"])
    assert (run["status"], run["turns_done"], run["error"]) == ("finished", 2, None)
    new = path(model_api, run["target_conversation_id"])
    assert [(m["role"], m["content"]) for m in new[1:]] == [
        ("user", "question 0"), ("assistant", "Hello from fake-small. You said: question 0"),
        ("user", "question 1"), ("assistant", "Hello from fake-small. You said: question 1"),
    ]  # fmt: skip
    assert [m["generation"]["replay_of"] for m in new[2::2]] == [t["reply"]["id"] for t in recorded]
    turns = diff(model_api, cid, run["id"])["turns"]
    for i, t in enumerate(turns):
        [s] = t["steps"]
        assert (s["resolution"], s["replayed"], s["original"]["id"]) == ("diverged", None, recorded[i]["asked"]["id"])
        assert t["replayed"]["content"] == f"Hello from fake-small. You said: question {i}"
        assert t["original"]["content"] == f"Answer {i}, from the tool."


def test_each_step_of_a_turn_is_matched_against_the_step_at_its_place(model_api, upstream):
    cid = create(model_api, system="s")["id"]
    say(model_api, cid, "plan a trip")
    first = step(model_api, cid, [("a", "lookup", '{"said": "plan a trip"}')], ["Oslo"])
    second = step(model_api, cid, [("b", "weather", '{"city": "Oslo"}'), ("c", "weather", '{"city": "Bergen"}')],
                  ["rain", "sun"])  # fmt: skip
    say(model_api, cid, "Go to Bergen.", role="assistant")
    upstream.fail_next(
        Fault.answer(),  # step 0: the fake calls lookup, as recorded
        Fault.tool_calls(("weather", '{"city":"Bergen"}'), ("weather", '{ "city": "Oslo" }')),  # step 1, reordered
    )
    run = wait_run(model_api, cid, replay(model_api, cid, target=TOOLS)["id"])
    assert (run["status"], run["turns_done"]) == ("finished", 1), run
    new = path(model_api, run["target_conversation_id"])
    assert [(m["role"], m["content"]) for m in new[-4:]] == [
        ("assistant", None), ("tool", "sun"), ("tool", "rain"), ("assistant", "Tool said: rain"),
    ]  # fmt: skip
    assert [m["tool_call_id"] for m in new[-3:-1]] == ["call_script_0", "call_script_1"]
    steps = diff(model_api, cid, run["id"])["turns"][0]["steps"]
    assert [(s["index"], s["resolution"]) for s in steps] == [(0, "reused"), (1, "reused")]
    assert [s["original"]["id"] for s in steps] == [first["id"], second["id"]]

    # A call recorded in another step of the turn is not this step's: step 1 asking for step 0's call stops.
    upstream.fail_next(Fault.answer(), Fault.tool_calls(("lookup", '{"said": "plan a trip"}')))
    run = wait_run(model_api, cid, replay(model_api, cid, target=TOOLS)["id"])
    assert (run["status"], run["error"]) == ("stopped", "unrecorded_tool_call")
    steps = diff(model_api, cid, run["id"])["turns"][0]["steps"]
    assert [s["resolution"] for s in steps] == ["reused", "unrecorded"]
    assert steps[1]["unrecorded"] == [{"name": "lookup", "arguments": '{"said": "plan a trip"}'}]


def test_an_unrecorded_call_whose_arguments_hold_a_nul_still_stops_the_run_with_its_status(model_api, upstream):
    cid, _ = agent_conversation(model_api, turns=1)
    upstream.fail_next(Fault.tool_calls(("lookup", '{"said": "\x00"}')))
    run = wait_run(model_api, cid, replay(model_api, cid, target=TOOLS)["id"])
    assert (run["status"], run["error"]) == ("stopped", "unrecorded_tool_call"), run
    assert "\ufffd" in run["detail"] and "\x00" not in run["detail"]
    [stopped] = diff(model_api, cid, run["id"])["turns"][0]["steps"]
    assert stopped["unrecorded"] == [{"name": "lookup", "arguments": '{"said": "\ufffd"}'}]  # stored as a plain append would take it
