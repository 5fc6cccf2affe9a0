"""Replay runs as durable work: a server restart mid-run (and mid agent turn), a run whose process
died, and the bound on runs per tenant."""

from __future__ import annotations

import time
import uuid

from tests.postgres import fetch
from tests.servers import Server, fake_registry
from tests.fakeupstream import Fault
from tests.integration.test_replays import TARGET, conversation, path, replay, wait_run
from tests.integration.test_replays_tools import TOOLS, agent_conversation, posted


def new_turns(api, run) -> list[dict]:
    return [m for m in path(api, run["target_conversation_id"]) if (m.get("generation") or {}).get("replay_of")]


def test_a_run_interrupted_by_a_server_restart_resumes_and_finishes_without_duplicates(databases, upstream):
    url = databases.migrated()
    first = Server(url, fake_registry(upstream), replay_poll_seconds=0.1)
    first.start()
    tenant, key = first.new_key()
    try:
        with first.client(key) as api:
            cid, turns = conversation(api)
            upstream.fail_next(*[Fault.reply(f"early {i}") for i in range(3)], Fault.hold(after=1))
            started = replay(api, cid)
            wait_run(api, cid, started["id"], until=lambda run: run["turns_done"] == 3)
            time.sleep(0.2)  # the fourth turn's model call is under way, held
    finally:
        first.stop()  # shutdown interrupts the call: that turn is not written, the run is left for another process
    [row] = fetch(url, "SELECT status, turns_done, owner FROM replay_runs WHERE run_id = $1", uuid.UUID(started["id"]))
    assert (row["status"], row["turns_done"], row["owner"]) == ("running", 3, None)
    upstream.release()
    second = Server(url, fake_registry(upstream), replay_poll_seconds=0.1)
    second.start()
    try:
        with second.client(key) as api:
            run = wait_run(api, cid, started["id"])
            assert (run["status"], run["turns_done"]) == ("finished", 10)
            new = path(api, run["target_conversation_id"])
            assert len(new) == 1 + 2 * 10 and len({m["id"] for m in new}) == len(new)
            assert [m["content"] for m in new[2:8:2]] == ["early 0", "early 1", "early 2"]
            assert [m["generation"]["replay_of"] for m in new[2::2]] == [t["assistant_message_id"] for t in turns]
            fork = api.get(f"/v1/conversations/{run['target_conversation_id']}").json()
            assert (fork["message_count"], fork["leaf_count"]) == (21, 1)
            assert api.get(f"/v1/conversations/{fork['id']}/audit").json()["valid"]
    finally:
        second.stop()


def test_a_run_whose_process_died_is_claimed_again_once_its_lease_runs_out(databases, upstream):
    url = databases.migrated()
    idle = Server(url, fake_registry(upstream), replay_workers=0)  # takes requests, runs no replay
    idle.start()
    try:
        _, key = idle.new_key()
        with idle.client(key) as api:
            cid, _ = conversation(api, turns=3)
            started = replay(api, cid)
    finally:
        idle.stop()
    # What a process that died mid-run leaves: its run, under a lease nobody renews any more.
    fetch(
        url,
        "UPDATE replay_runs SET status = 'running', owner = $2, lease_until = now() + interval '1 second'"
        " WHERE run_id = $1",
        uuid.UUID(started["id"]),
        uuid.uuid4(),
    )
    srv = Server(url, fake_registry(upstream), replay_poll_seconds=0.1)
    srv.start()
    try:
        with srv.client(key) as api:
            assert api.get(f"/v1/conversations/{cid}/replays/{started['id']}").json()["turns_done"] == 0
            run = wait_run(api, cid, started["id"])
            assert (run["status"], run["turns_done"]) == ("finished", 3)
            assert len(new_turns(api, run)) == 3
    finally:
        srv.stop()


def test_a_tenant_runs_at_most_its_bound_of_runs_at_once(databases, upstream):
    url = databases.migrated()
    srv = Server(url, fake_registry(upstream), replay_poll_seconds=0.1, replay_runs_per_tenant=1)
    srv.start()
    try:
        _, key = srv.new_key()
        _, other_key = srv.new_key()
        with srv.client(key) as api, srv.client(other_key) as other:
            one, _ = conversation(api, turns=2)
            two, _ = conversation(api, turns=2)
            three, _ = conversation(other, turns=2)
            upstream.fail_next(Fault.hold(after=1))
            held = replay(api, one)
            wait_run(api, one, held["id"], until=lambda run: run["status"] == "running")
            waiting = replay(api, two)
            elsewhere = replay(other, three)
            assert wait_run(other, three, elsewhere["id"])["status"] == "finished"  # another tenant is not held up
            assert api.get(f"/v1/conversations/{two}/replays/{waiting['id']}").json()["status"] == "queued"
            upstream.release()
            assert wait_run(api, one, held["id"])["status"] == "finished"
            assert wait_run(api, two, waiting["id"])["status"] == "finished"
    finally:
        srv.stop()


def test_a_run_of_agent_turns_interrupted_mid_turn_resumes_that_turn_from_its_first_step(databases, upstream):
    url = databases.migrated()
    first = Server(url, fake_registry(upstream), replay_poll_seconds=0.1)
    first.start()
    tenant, key = first.new_key()
    try:
        with first.client(key) as api:
            cid, recorded = agent_conversation(api, turns=3)
            upstream.reset()
            # Turn 0: its two steps. Turn 1: its first step, then the answer after the result is held.
            upstream.fail_next(Fault.answer(), Fault.answer(), Fault.answer(), Fault.hold(after=1))
            started = replay(api, cid, target=TOOLS)
            wait_run(api, cid, started["id"], until=lambda run: run["turns_done"] == 1)
            deadline = time.monotonic() + 10
            while len(posted(upstream)) < 4:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.2)  # turn 1's second step is under way, held
    finally:
        first.stop()  # the turn whose step was cut is not written, not even its first step
    [row] = fetch(url, "SELECT status, turns_done, owner FROM replay_runs WHERE run_id = $1", uuid.UUID(started["id"]))
    assert (row["status"], row["turns_done"], row["owner"]) == ("running", 1, None)
    upstream.release()
    second = Server(url, fake_registry(upstream), replay_poll_seconds=0.1)
    second.start()
    try:
        with second.client(key) as api:
            run = wait_run(api, cid, started["id"])
            assert (run["status"], run["turns_done"]) == ("finished", 3)
            new = path(api, run["target_conversation_id"])
            assert [m["role"] for m in new] == ["system"] + ["user", "assistant", "tool", "assistant"] * 3
            assert len({m["id"] for m in new}) == len(new)
            assert [m["content"] for m in new[3::4]] == ["result 0", "result 1", "result 2"]
            assert [m["generation"]["replay_of"] for m in new[2::4]] == [t["asked"]["id"] for t in recorded]
            assert [m["generation"]["replay_of"] for m in new[4::4]] == [t["reply"]["id"] for t in recorded]
            # Turn 1 was asked again from its first step; nothing of it was written twice.
            asked_turn_1 = [b for b in posted(upstream) if b["messages"][-1] == {"role": "user", "content": "question 1"}]
            assert len(asked_turn_1) == 2
            fork = api.get(f"/v1/conversations/{run['target_conversation_id']}").json()
            assert (fork["message_count"], fork["leaf_count"]) == (13, 1)
            assert api.get(f"/v1/conversations/{fork['id']}/audit").json()["valid"]
            steps = [t["steps"] for t in api.get(f"/v1/conversations/{cid}/replays/{run['id']}/diff").json()["turns"]]
            assert [[s["resolution"] for s in turn] for turn in steps] == [["reused"]] * 3
    finally:
        second.stop()
