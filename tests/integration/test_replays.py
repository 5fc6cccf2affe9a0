"""Replay runs against the fake model server: into a fork and into branches, from any start, with a
replacement system message; progress, cancel, the diff, batches, Idempotency-Key, and every refusal."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.postgres import fetch
from tests.fakeupstream import Fault
from tests.helpers import create, problem, say
from tests.turnkit import sent_messages, turn

TARGET = {"provider": "fakeollama", "model": "fake-small"}
ENDED = ("finished", "failed", "stopped", "cancelled")


def conversation(api: httpx.Client, turns: int = 10, system: str | None = "Be brief.") -> tuple[str, list[dict[str, Any]]]:
    """A conversation of `turns` turns answered by fake-large; returns its id and its turns' results."""
    cid = create(api, **({"system": system} if system is not None else {}))["id"]
    return cid, [turn(api, cid, f"question {i}") for i in range(turns)]


def replay(api: httpx.Client, cid: str, status: int = 201, **body: Any) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/replays", json={"target": TARGET, **body})
    assert r.status_code == status, r.text
    return r.json()


def wait_run(api: httpx.Client, cid: str, run_id: str, until: Any = None, timeout: float = 20.0) -> dict[str, Any]:
    """Poll the run until `until(run)` (default: it has ended)."""
    until = until or (lambda run: run["status"] in ENDED)
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/v1/conversations/{cid}/replays/{run_id}").json()
        if until(run):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def path(api: httpx.Client, cid: str) -> list[dict[str, Any]]:
    return api.get(f"/v1/conversations/{cid}/context").json()["messages"]


def snapshot(api: httpx.Client, cid: str) -> tuple[Any, ...]:
    """What a conversation is: its summary, its events (with their hashes) and every message."""
    return (
        api.get(f"/v1/conversations/{cid}").json(),
        api.get(f"/v1/conversations/{cid}/events", params={"limit": 1000}).json()["items"],
        api.get(f"/v1/conversations/{cid}/tree").json(),
    )


def audit(api: httpx.Client, cid: str) -> dict[str, Any]:
    r = api.get(f"/v1/conversations/{cid}/audit")
    assert r.status_code == 200, r.text
    return r.json()


def test_a_ten_turn_conversation_replays_into_a_fork_and_the_source_is_unchanged(model_api, upstream):
    cid, turns = conversation(model_api)
    before = snapshot(model_api, cid)
    started = replay(model_api, cid)
    assert (started["status"], started["turns_total"], started["turns_done"]) == ("queued", 10, 0)
    assert (started["conversation_id"], started["into"], started["provider"], started["model"]) == (
        cid, "fork", "fakeollama", "fake-small")  # fmt: skip
    run = wait_run(model_api, cid, started["id"])
    assert (run["status"], run["turns_done"], run["error"]) == ("finished", 10, None)
    assert run["prompt_tokens"] > 0 and run["completion_tokens"] > 0
    fork_id = run["target_conversation_id"]
    fork = model_api.get(f"/v1/conversations/{fork_id}").json()
    system_id = turns[0]["user_message"]["parent_message_id"]
    assert fork["forked_from"] == {"conversation_id": cid, "message_id": system_id}
    new = path(model_api, fork_id)
    assert [m["role"] for m in new] == ["system"] + ["user", "assistant"] * 10
    for i, (user, reply) in enumerate(zip(new[1::2], new[2::2], strict=True)):
        assert user["content"] == f"question {i}"
        assert reply["content"] == f"Hello from fake-small. You said: question {i}"
        g = reply["generation"]
        assert g["replay_of"] == turns[i]["assistant_message_id"]
        assert (g["provider"], g["requested_model"], g["finish_reason"]) == ("fakeollama", "fake-small", "stop")
        assert g["context"] == [{"first_id": new[0]["id"], "last_id": new[2 * i + 1]["id"], "count": 2 * i + 2}]
    # Each turn was asked with the new replies before it, never the original ones.
    last = sent_messages(upstream)[-1]
    assert [m["content"] for m in last if m["role"] == "assistant"] == [
        f"Hello from fake-small. You said: question {i}" for i in range(9)
    ]
    assert snapshot(model_api, cid) == before
    assert audit(model_api, fork_id)["valid"] and audit(model_api, cid)["valid"]
    # The event feed carries each replayed reply as it is written, with its lineage.
    events = model_api.get(f"/v1/conversations/{fork_id}/events", params={"limit": 1000}).json()["items"]
    replayed = [e["payload"]["generation"]["replay_of"] for e in events if e["payload"].get("generation")]
    assert replayed == [t["assistant_message_id"] for t in turns]


def test_the_diff_lists_every_turn_beside_the_original(model_api, upstream):
    cid, turns = conversation(model_api)
    run = wait_run(model_api, cid, replay(model_api, cid)["id"])
    r = model_api.get(f"/v1/conversations/{cid}/replays/{run['id']}/diff")
    assert r.status_code == 200, r.text
    diff = r.json()
    assert diff["run"]["status"] == "finished" and len(diff["turns"]) == 10
    for i, t in enumerate(diff["turns"]):
        assert (t["index"], t["user_message_id"], t["user_content"]) == (i, turns[i]["user_message_id"], f"question {i}")
        original, new = t["original"], t["replayed"]
        assert original["id"] == turns[i]["assistant_message_id"] and original["model"] == "fake-large"
        assert new["model"] == "fake-small" and new["content"].endswith(f"question {i}")
        for side in (original, new):
            assert side["completion_tokens"] > 0 and side["prompt_tokens"] > 0
            assert side["latency_ms"] > 0 and side["finish_reason"] == "stop"
        assert 0 < t["similarity"] < 1


def test_a_ten_turn_conversation_replays_as_a_branch_of_the_source(model_api, upstream):
    cid, turns = conversation(model_api)
    originals = path(model_api, cid)
    run = wait_run(model_api, cid, replay(model_api, cid, into="branches")["id"])
    assert (run["status"], run["target_conversation_id"], run["turns_done"]) == ("finished", cid, 10)
    new = path(model_api, cid)  # the head follows the new turns, as after a regeneration
    assert new[0]["id"] == originals[0]["id"]
    assert new[1]["parent_message_id"] == originals[0]["id"] and new[1]["id"] != originals[1]["id"]
    assert new[1]["sibling_count"] == 2
    assert [m["generation"]["replay_of"] for m in new[2::2]] == [t["assistant_message_id"] for t in turns]
    leaves = model_api.get(f"/v1/conversations/{cid}/leaves").json()["leaves"]
    assert {leaf["message_id"] for leaf in leaves} == {turns[-1]["assistant_message_id"], new[-1]["id"]}
    for original in originals:  # the original turns are all still there, unchanged
        assert model_api.get(f"/v1/conversations/{cid}/messages/{original['id']}").json()["content"] == original["content"]
    assert audit(model_api, cid)["valid"]


def test_a_conversations_runs_are_listed_newest_first_a_page_at_a_time(model_api, model_server, upstream):
    cid, _ = conversation(model_api, turns=2)
    into_fork = wait_run(model_api, cid, replay(model_api, cid)["id"])
    into_branches = wait_run(model_api, cid, replay(model_api, cid, into="branches")["id"])
    fresh = wait_run(model_api, cid, replay(model_api, cid, target={**TARGET, "system": "Be long."})["id"])

    listed = model_api.get(f"/v1/conversations/{cid}/replays")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"items": [fresh, into_branches, into_fork], "next_cursor": None}

    # A page at a time: the cursor goes on where the last page stopped.
    seen, cursor = [], None
    while True:
        page = model_api.get(f"/v1/conversations/{cid}/replays", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [run["id"] for run in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [fresh["id"], into_branches["id"], into_fork["id"]]

    # The fork and the new conversation list the run that wrote them.
    for run in (into_fork, fresh):
        page = model_api.get(f"/v1/conversations/{run['target_conversation_id']}/replays").json()
        assert page == {"items": [run], "next_cursor": None}
    # A conversation never replayed lists none; an unknown one, or another tenant's, is a 404.
    other = create(model_api)["id"]
    assert model_api.get(f"/v1/conversations/{other}/replays").json() == {"items": [], "next_cursor": None}
    problem(model_api.get(f"/v1/conversations/{uuid.uuid4()}/replays"), 404, "conversation-not-found")
    _, key = model_server.new_key()
    with model_server.client(key) as stranger:
        problem(stranger.get(f"/v1/conversations/{cid}/replays"), 404, "conversation-not-found")
    for cursor in ("nonsense", "cjE6MjAyNi0wMS0wMXxub3QtYS11dWlk", "\u0000"):
        problem(model_api.get(f"/v1/conversations/{cid}/replays", params={"cursor": cursor}), 422, "invalid-request")


def test_a_replay_starts_at_any_message_of_the_path(model_api, upstream):
    cid, turns = conversation(model_api, turns=4)
    run = wait_run(model_api, cid, replay(model_api, cid, start_message_id=turns[2]["user_message_id"])["id"])
    assert (run["status"], run["turns_total"]) == ("finished", 2)
    fork = model_api.get(f"/v1/conversations/{run['target_conversation_id']}").json()
    assert fork["forked_from"]["message_id"] == turns[1]["assistant_message_id"]
    new = path(model_api, fork["id"])
    assert [m["id"] for m in new[:5]] == [m["id"] for m in path(model_api, cid)[:5]]  # shared, not copied
    assert [m["content"] for m in new[5:]] == [
        "question 2", "Hello from fake-small. You said: question 2",
        "question 3", "Hello from fake-small. You said: question 3",
    ]  # fmt: skip


def test_a_replacement_system_message_roots_a_new_conversation(model_api, upstream):
    cid, turns = conversation(model_api, turns=2)
    started = replay(model_api, cid, target={**TARGET, "system": "Answer in French."}, title="french")
    run = wait_run(model_api, cid, started["id"])
    assert run["status"] == "finished"
    target = model_api.get(f"/v1/conversations/{run['target_conversation_id']}").json()
    assert target["forked_from"] is None and target["title"] == "french"
    assert target["metadata"] == {"replay_run_id": run["id"]}
    new = path(model_api, target["id"])
    assert [(m["role"], m["content"]) for m in new[:2]] == [("system", "Answer in French."), ("user", "question 0")]
    assert sent_messages(upstream)[-1][0] == {"role": "system", "content": "Answer in French."}
    assert audit(model_api, target["id"])["valid"]


def test_a_conversation_without_a_system_message_replays_into_a_new_conversation(model_api, upstream):
    cid, turns = conversation(model_api, turns=2, system=None)
    run = wait_run(model_api, cid, replay(model_api, cid)["id"])
    new = path(model_api, run["target_conversation_id"])
    assert [m["role"] for m in new] == ["user", "assistant"] * 2 and new[0]["parent_message_id"] is None
    problem(model_api.post(f"/v1/conversations/{cid}/replays", json={"into": "branches"}), 422, "invalid-request")


def test_an_idempotency_key_starts_one_run(model_api, model_server, upstream):
    cid, _ = conversation(model_api, turns=2)
    headers = {"Idempotency-Key": "replay-once"}
    body = {"target": TARGET}
    first = model_api.post(f"/v1/conversations/{cid}/replays", json=body, headers=headers)
    again = model_api.post(f"/v1/conversations/{cid}/replays", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    rows = fetch(model_server.database_url, "SELECT run_id FROM replay_runs WHERE source_conversation_id = $1", uuid.UUID(cid))
    assert len(rows) == 1
    other = model_api.post(f"/v1/conversations/{cid}/replays", json={"target": {"model": "fake-large"}}, headers=headers)
    problem(other, 422, "idempotency-key-reused")
    wait_run(model_api, cid, first.json()["id"])


def test_a_cancelled_run_stops_at_its_next_turn_and_keeps_what_it_wrote(model_api, upstream):
    cid, _ = conversation(model_api, turns=5)
    upstream.fail_next(Fault.reply("one"), Fault.reply("two"), Fault.hold(after=1))
    started = replay(model_api, cid)
    wait_run(model_api, cid, started["id"], until=lambda run: run["turns_done"] == 2)
    time.sleep(0.2)  # the third turn's model call is under way, held
    r = model_api.post(f"/v1/conversations/{cid}/replays/{started['id']}/cancel")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["turns_done"]) == ("cancelled", 2)
    upstream.release()
    time.sleep(0.5)
    run = model_api.get(f"/v1/conversations/{cid}/replays/{started['id']}").json()
    assert (run["status"], run["turns_done"]) == ("cancelled", 2)
    new = path(model_api, run["target_conversation_id"])
    assert [m["content"] for m in new[1:]] == ["question 0", "one", "question 1", "two"]
    problem(model_api.post(f"/v1/conversations/{cid}/replays/{started['id']}/cancel"), 409, "replay-run-finished")
    diff = model_api.get(f"/v1/conversations/{cid}/replays/{started['id']}/diff").json()
    assert [t["replayed"] is not None for t in diff["turns"]] == [True, True, False, False, False]
    assert diff["turns"][4]["similarity"] is None


def test_a_turn_the_model_fails_ends_the_run_with_its_error(model_api, upstream):
    cid, _ = conversation(model_api, turns=3)
    upstream.fail_next(Fault.reply("fine"), Fault.status_code(400, message="no such thing"))
    run = wait_run(model_api, cid, replay(model_api, cid)["id"])
    assert (run["status"], run["turns_done"], run["error"]) == ("failed", 1, "upstream_rejected")
    assert run["detail"]
    assert len(path(model_api, run["target_conversation_id"])) == 3  # system, and the one turn written


def test_a_batch_replays_the_heads_of_listed_or_matching_conversations(model_api, upstream):
    listed = [conversation(model_api, turns=2)[0] for _ in range(3)]
    tagged = create(model_api, system="s", metadata={"suite": "nightly", "n": 1})["id"]
    turn(model_api, tagged, "hi")
    create(model_api, metadata={"suite": "other"})
    r = model_api.post("/v1/replays", json={"conversation_ids": listed, "target": TARGET})
    assert r.status_code == 201, r.text
    batch = r.json()
    assert (batch["conversations"], batch["turns_total"]) == (3, 6)
    assert [item["conversation_id"] for item in batch["items"]] == listed
    deadline = time.monotonic() + 20
    while (batch := model_api.get(f"/v1/replays/{batch['id']}").json())["status"] != "finished":
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
    assert batch["turns_done"] == 6 and {i["run"]["status"] for i in batch["items"]} == {"finished"}
    assert all(i["run"]["batch_id"] == batch["id"] for i in batch["items"])
    by_filter = model_api.post("/v1/replays", json={"metadata": {"suite": "nightly"}, "target": TARGET}).json()
    assert [item["conversation_id"] for item in by_filter["items"]] == [tagged]
    wait_run(model_api, tagged, by_filter["items"][0]["run"]["id"])


def test_every_bad_replay_request_is_a_problem(model_api, upstream):
    cid, turns = conversation(model_api, turns=2)
    missing = str(uuid.uuid4())
    base = f"/v1/conversations/{cid}/replays"
    problem(model_api.post(f"/v1/conversations/{missing}/replays", json={}), 404, "conversation-not-found")
    problem(model_api.post(base, json={"leaf_message_id": missing}), 404, "message-not-found")
    problem(model_api.post(base, json={"start_message_id": missing}), 422, "invalid-request")
    problem(model_api.post(base, json={"target": {"provider": "nope"}}), 422, "unknown-provider")
    problem(model_api.post(base, json={"target": {"system": "x"}, "into": "branches"}), 422, "invalid-request")
    problem(model_api.post(base, json={"start_message_id": turns[1]["user_message_id"], "target": {"system": "x"}}),
            422, "invalid-request")  # fmt: skip
    problem(model_api.post(base, json={"into": "sideways"}), 422, "invalid-request")
    problem(model_api.post(base, json={"surprise": 1}), 422, "invalid-request")
    problem(model_api.post(base, json={"target": {"params": {"temperature": 9}}}), 422, "invalid-request")
    problem(model_api.post(base, content=b"{", headers={"content-type": "application/json"}), 400, "malformed-request")
    empty = create(model_api)["id"]
    problem(model_api.post(f"/v1/conversations/{empty}/replays", json={}), 422, "invalid-request")
    system_only = create(model_api, system="s")["id"]
    problem(model_api.post(f"/v1/conversations/{system_only}/replays", json={}), 422, "invalid-request")
    problem(model_api.get(f"{base}/{missing}"), 404, "replay-run-not-found")
    problem(model_api.get(f"{base}/{missing}/diff"), 404, "replay-run-not-found")
    problem(model_api.post(f"{base}/{missing}/cancel"), 404, "replay-run-not-found")
    problem(model_api.post("/v1/replays", json={}), 422, "invalid-request")
    problem(model_api.post("/v1/replays", json={"conversation_ids": [cid], "metadata": {}}), 422, "invalid-request")
    problem(model_api.post("/v1/replays", json={"conversation_ids": []}), 422, "invalid-request")
    problem(model_api.post("/v1/replays", json={"conversation_ids": [cid, cid]}), 422, "invalid-request")
    bad = problem(model_api.post("/v1/replays", json={"conversation_ids": [cid, missing]}), 404, "conversation-not-found")
    assert bad["context"]["conversation_id"] == missing
    problem(model_api.post("/v1/replays", json={"metadata": {"no": "match"}}), 422, "invalid-request")
    problem(model_api.get(f"/v1/replays/{missing}"), 404, "replay-run-not-found")
    # Another tenant sees none of it.
    started = replay(model_api, cid)
    wait_run(model_api, cid, started["id"])
    assert model_api.get(f"/v1/conversations/{missing}/replays/{started['id']}").status_code == 404
