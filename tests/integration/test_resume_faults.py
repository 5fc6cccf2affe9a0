"""Fault tests of resumed streams: server processes sharing one database are killed (SIGKILL: no
shutdown, nothing recorded by them) while they generate, and their clients resume on another.
Every reply ends (completed, failed, cancelled, or incomplete with what its dead owner had
checkpointed); the text a client was shown is never lost nor doubled; a resumed stream goes on
after the position it names, with no gap and no repeat."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai

from tests.fakeupstream import Fault, FakeUpstream
from tests.helpers import create
from tests.postgres import Databases, fetch
from tests.servers import ServeProcess, fake_serve_process
from tests.turnkit import positioned

# A dead owner's replies are closed out by a live process once their lease runs out (renewed, and
# swept, every quarter of it); checkpoints are written at most this often.
FAST = {
    "CONVTREE_REPLY_LEASE_SECONDS": "3",
    "CONVTREE_REPLY_CHECKPOINT_SECONDS": "0.1",
    "CONVTREE_POOL_MAX_SIZE": "10",
}


def serving(url: str, upstream: FakeUpstream) -> ServeProcess:
    return fake_serve_process(url, upstream, **FAST)


def kill(process: ServeProcess) -> None:
    assert process.process is not None
    process.process.kill()  # SIGKILL
    process.process.wait()


def test_a_streamed_turn_resumes_on_another_process_after_its_server_is_killed(databases: Databases, upstream):
    url = databases.migrated()
    first, second = serving(url, upstream), serving(url, upstream)
    try:
        start_all(first, second)
        _, key = first.new_key("resume-kill", "t")
        upstream.fail_next(Fault.endless())
        with first.client(key) as one:
            cid = create(one)["id"]
            with one.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go", "stream": True}) as r:
                events = positioned(r)
                seen = [next(events) for _ in range(11)]  # the turn and ten deltas
                kill(first)
        reply_id = seen[0][2]["assistant_message_id"]
        last = seen[-1][1]
        with second.client(key) as two:
            path = f"/v1/conversations/{cid}/turns/{reply_id}/events"
            with two.stream("GET", path, headers={"Last-Event-ID": str(last)}) as r:
                assert r.status_code == 200
                rest = list(positioned(r))
            whole = seen + rest
            at = 0
            for name, position, data in whole[1:-1]:
                assert name == "delta"
                at += len(data["text"])
                assert position == at  # no gap, no repeat, across the two processes
            name, position, problem = whole[-1]
            assert name == "error" and position == at + 1
            assert problem["type"] == "urn:convtree:problem:reply-interrupted"
            assert problem["context"]["stored"] is True
            stored = problem["message"]
            shown = "".join(data["text"] for name, _, data in whole if name == "delta")
            assert shown == stored["content"] and set(shown.split()) == {"tick"}  # nothing lost, nothing doubled
            assert stored["generation"]["interruption"]["kind"] == "owner_lost"
            assert two.get(f"/v1/conversations/{cid}/messages/{reply_id}").json()["content"] == shown
            # Resumed again after its end: nothing left.
            assert two.get(path, headers={"Last-Event-ID": str(position)}).status_code == 204
    finally:
        first.stop()
        second.stop()
    assert fetch(url, "SELECT count(*) AS n FROM pending_replies")[0]["n"] == 0


# The plan of the fifty responses, by index modulo 5: what the model does, and how each ends.
PLAN = {0: "completed", 1: "failed", 2: "cancelled", 3: "killed", 4: "killed"}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
# The event a response's stream ends with, by the status it ended in.
LAST_EVENT = {
    "completed": "response.completed",
    "failed": "response.failed",
    "cancelled": "response.incomplete",
    "incomplete": "response.incomplete",
}


def fault(i: int) -> Fault:
    kind = PLAN[i % 5]
    if kind == "completed":
        return Fault.reply("all ", "done ", f"for {i}")
    if kind == "failed":
        return Fault.status_code(400, message="refused")
    return Fault.endless(every=0.1)


class Follower(threading.Thread):
    """A client following one background response's stream; when the process it reads from dies,
    it resumes on the one alive now (`alive[0]`), after the last event it read."""

    def __init__(self, rid: str, home: ServeProcess, alive: list[ServeProcess], key: str) -> None:
        super().__init__(daemon=True)
        self.rid, self.home, self.alive, self.key = rid, home, alive, key
        self.events: list[Any] = []
        self.resumed = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        process = self.home
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            after = self.events[-1].sequence_number if self.events else -1
            try:
                with sdk(process, self.key) as client:
                    with client.responses.retrieve(self.rid, stream=True, starting_after=after) as stream:
                        for event in stream:
                            self.events.append(event)
                            if event.type in TERMINAL:
                                return
            except (openai.APIConnectionError, httpx.HTTPError):
                pass  # the process died under the stream (or before it answered)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.failure = exc
                return
            while self.alive[0] is process and process.process is not None and process.process.poll() is not None:
                time.sleep(0.05)  # the next process is not up yet
            process = self.alive[0]
            self.resumed += 1


def start_all(*processes: ServeProcess) -> None:
    """Start the processes side by side (each takes a while to import and connect)."""
    starting = [threading.Thread(target=p.start) for p in processes]
    for t in starting:
        t.start()
    for t in starting:
        t.join()
    for p in processes:
        assert p.process is not None and p.process.poll() is None


def sdk(process: ServeProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=process.base_url + "/openai/v1", api_key=key, max_retries=0)


def test_fifty_background_responses_survive_two_of_their_servers_killed_mid_generation(
    databases: Databases, upstream: FakeUpstream
):
    """Fifty background responses, half generated by a first process, half by a second, each
    followed by a client streaming from the process that generates it. The first is killed: its
    clients resume on the second, which closes its replies out. The second is killed while a third
    runs: its clients resume on the third, which closes the second's replies out."""
    url = databases.migrated()
    a, b, c = serving(url, upstream), serving(url, upstream), serving(url, upstream)
    try:
        start_all(a, b, c)
        _, key = a.new_key("fifty", "t")
        ids: list[str] = []
        homes: list[ServeProcess] = []
        with sdk(a, key) as on_a, sdk(b, key) as on_b:
            for i in range(50):
                home, client = (a, on_a) if i < 25 else (b, on_b)
                upstream.fail_when(f"go {i}", fault(i))
                ids.append(client.responses.create(model="fake-large", input=f"go {i}", background=True).id)
                homes.append(home)
            alive = [b]
            followers = [Follower(rid, home, alive, key) for rid, home in zip(ids, homes, strict=True)]
            for f in followers:
                f.start()
            time.sleep(0.5)  # every endless reply has streamed some ticks
            # Cancels, each asked of the process that does not generate the reply (its notification
            # reaches the owner), side by side.
            cancelled: dict[int, Any] = {}

            def cancel(i: int) -> None:
                cancelled[i] = (on_b if homes[i] is a else on_a).responses.cancel(ids[i])

            cancels = [threading.Thread(target=cancel, args=(i,)) for i in range(50) if PLAN[i % 5] == "cancelled"]
            for t in cancels:
                t.start()
            for t in cancels:
                t.join()
        # A cancel stops its reply (unless the model call had failed before it: see below).
        assert {r.status for r in cancelled.values()} <= {"cancelled", "failed"}
        kill(a)  # the first kill: its replies' clients resume on b, whose sweep (or c's) closes them out
        time.sleep(0.5)  # b's replies go on meanwhile
        alive[0] = c
        kill(b)  # the second: b's own replies mid-generation, and every stream b served, resume on c
        for f in followers:
            f.join(timeout=40)
        ended: dict[str, list[int]] = {}
        with sdk(c, key) as on_c:
            for i, (rid, f) in enumerate(zip(ids, followers, strict=True)):
                assert f.failure is None, (i, f.failure)
                assert not f.is_alive(), f"the stream of response {i} never ended"
                events = f.events
                assert [e.sequence_number for e in events] == list(range(len(events))), i  # no gap, no repeat
                final = on_c.responses.retrieve(rid)
                shown = "".join(e.delta for e in events if e.type == "response.output_text.delta")
                assert final.output_text == shown, i  # what was shown is what is stored, once
                assert events[-1].type == LAST_EVENT[final.status], (i, final.status, events[-1].type)
                kind = PLAN[i % 5]
                ended.setdefault(f"{kind}: {final.status}", []).append(i)
                if final.status == "failed":
                    # Planned, or the model call failed before it said anything (the fake model
                    # server, in this busy test process, out of reach): nothing was shown.
                    assert shown == "", (i, final.error)
                elif kind == "completed":
                    assert final.status == "completed" and shown == f"all done for {i}"
                elif kind == "cancelled":
                    assert final.status == "cancelled" and set(shown.split()) == {"tick"}
                else:
                    assert final.status == "incomplete" and set(shown.split()) == {"tick"}, (i, final.status)
                    assert final.incomplete_details is not None and final.incomplete_details.reason == "owner_lost"
                    assert f.resumed >= 1, i  # its stream was cut by its owner's death and resumed elsewhere
        # Whatever the load, the plan was met by most: each kill cut replies mid-generation.
        killed = ended.get("killed: incomplete", [])
        assert any(i < 25 for i in killed) and any(i >= 25 for i in killed), ended
        assert len(ended.get("failed: failed", [])) == 10 and len(ended.get("completed: completed", [])) >= 5, ended
        assert fetch(url, "SELECT count(*) AS n FROM pending_replies")[0]["n"] == 0
    finally:
        for process in (a, b, c):
            process.stop()
