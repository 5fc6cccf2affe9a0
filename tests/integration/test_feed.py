"""The event feeds: a conversation's events, the tenant's feed paged, long-polled and streamed, and
the frontier that keeps a follower from skipping an event that commits late."""

import asyncio
import hashlib
import json
import threading
import time
import uuid

import asyncpg
import httpx
import pytest

from service.app import messages as messages_app
from service.app.caller import Caller
from service.store.events import Tx
from tests.helpers import create, problem, say
from tests.postgres import fetch



def events(client, after=0, **params):
    r = client.get("/v1/events", params={"after": after, **params})
    assert r.status_code == 200, r.text
    return r.json()


def drain(client, after=0):
    """Every event after `after`, paging through; returns (items, next_after)."""
    items = []
    while True:
        page = events(client, after, limit=1000)
        items += page["items"]
        if not page["items"]:
            return items, page["next_after"]
        after = page["next_after"]


def test_a_conversations_events_come_in_order_with_a_typed_view_and_no_content(api):
    conv = create(api, title="t", system="be brief")
    cid = conv["id"]
    u = api.post(
        f"/v1/conversations/{cid}/messages",
        json={"role": "user", "content": "secret words", "metadata": {"lang": "en"}},
        headers={"X-Request-Id": "req-42"},
    ).json()
    say(api, cid, "reply", role="assistant")
    api.put(f"/v1/conversations/{cid}/head", json={"message_id": u["id"]})
    page = api.get(f"/v1/conversations/{cid}/events").json()
    items = page["items"]
    assert [e["type"] for e in items] == [
        "conversation_created", "message_appended", "message_appended", "message_appended", "head_moved",
    ]
    seqs = [e["seq"] for e in items]
    assert seqs == sorted(set(seqs)) and page["next_after"] == seqs[-1]
    assert all(e["conversation_id"] == cid and len(e["hash"]) == 64 and e["actor"] == "test" for e in items)
    assert items[0]["payload"] == {"title": "t", "metadata": {}}
    message = items[2]
    assert message["request_id"] == "req-42"
    assert message["payload"] == {
        "message_id": u["id"],
        "parent_message_id": conv["head_id"],
        "role": "user",
        "depth": 1,
        "body_sha256": message["payload"]["body_sha256"],
        "metadata": {"lang": "en"},
    }
    # Keyed with the message's own key: the digest does not confirm a guess of the content.
    assert len(message["payload"]["body_sha256"]) == 64
    assert message["payload"]["body_sha256"] != hashlib.sha256(b"secret words").hexdigest()
    assert "secret words" not in api.get(f"/v1/conversations/{cid}/events").text
    assert items[4]["payload"]["message_id"] == u["id"]


def test_a_conversations_events_page_with_after_and_limit(api):
    cid = create(api)["id"]
    for i in range(5):
        say(api, cid, f"m{i}")
    all_items = api.get(f"/v1/conversations/{cid}/events").json()["items"]
    pages, after = [], 0
    while True:
        page = api.get(f"/v1/conversations/{cid}/events", params={"after": after, "limit": 2}).json()
        if not page["items"]:
            assert page["next_after"] == after
            break
        assert len(page["items"]) <= 2
        pages.append(page["items"])
        after = page["next_after"]
    assert [e for p in pages for e in p] == all_items and len(pages) == 3


def test_the_tenant_feed_spans_conversations_in_seq_order(api):
    a, b = create(api)["id"], create(api)["id"]
    say(api, a, "a1")
    say(api, b, "b1")
    say(api, a, "a2")
    items, _ = drain(api)
    assert [(e["conversation_id"], e["type"]) for e in items] == [
        (a, "conversation_created"), (b, "conversation_created"),
        (a, "message_appended"), (b, "message_appended"), (a, "message_appended"),
    ]
    assert [e["seq"] for e in items] == sorted(e["seq"] for e in items)
    # Paging by one visits the same events.
    after, one_by_one = 0, []
    while page := events(api, after, limit=1)["items"]:
        one_by_one += page
        after = page[-1]["seq"]
    assert one_by_one == items


def test_feeds_are_isolated_between_tenants(server, api):
    cid = create(api, system="mine")["id"]
    _, other_key = server.new_key()
    with server.client(other_key) as other:
        assert drain(other) == ([], 0)
        problem(other.get(f"/v1/conversations/{cid}/events"), 404, "conversation-not-found")
        theirs = create(other)["id"]
    assert {e["conversation_id"] for e in drain(api)[0]} == {cid}
    assert theirs not in api.get("/v1/events").text


def test_bad_feed_parameters_are_problems(api):
    problem(api.get("/v1/events", params={"wait": 61}), 422, "invalid-request")
    problem(api.get("/v1/events", params={"after": -1}), 422, "invalid-request")
    problem(api.get("/v1/events", params={"limit": 0}), 422, "invalid-request")
    problem(api.get("/v1/events", headers={"Last-Event-ID": "abc"}), 422, "invalid-request")
    problem(api.get("/v1/conversations/not-a-uuid/events"), 422, "invalid-request")


def test_a_long_poll_returns_empty_when_nothing_happens(api):
    cid = create(api)["id"]
    _, after = drain(api)
    page = events(api, after, wait=1)
    assert page == {"items": [], "next_after": after}
    assert cid  # the conversation's creation was drained before the poll


def test_a_long_poll_wakes_on_a_new_event(api):
    cid = create(api)["id"]
    _, after = drain(api)
    result = {}
    poller = threading.Thread(target=lambda: result.update(events(api, after, wait=30)))
    poller.start()
    time.sleep(0.3)  # let the poll settle into its wait (the event would be found either way)
    m = say(api, cid, "wake up")
    poller.join(timeout=15)
    assert not poller.is_alive(), "the long poll did not wake on the commit"
    assert [e["payload"]["message_id"] for e in result["items"]] == [m["id"]]


def _sse_events(lines, count):
    """Read `count` events from an SSE stream's lines: [(id, data)], skipping comments and retry hints."""
    out, current = [], {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = line[6:]
        elif line == "" and "data" in current:
            out.append((current["id"], json.loads(current["data"])))
            current = {}
            if len(out) == count:
                return out
    raise AssertionError("the stream ended early")


def test_sse_streams_events_live_and_resumes_from_last_event_id(server, api):
    cid = create(api)["id"]
    m1 = say(api, cid, "one")
    headers = {"Accept": "text/event-stream", "Authorization": api.headers["Authorization"]}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        with client.stream("GET", "/v1/events", headers=headers) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            first = _sse_events(lines, 2)
            assert [d["type"] for _, d in first] == ["conversation_created", "message_appended"]
            assert [i for i, _ in first] == [d["seq"] for _, d in first]
            m2 = say(api, cid, "two")  # delivered live on the open stream
            ((live_id, live),) = _sse_events(lines, 1)
            assert live["payload"]["message_id"] == m2["id"] and live_id == m2["seq"]
        # A reconnecting client sends the last id it saw and gets only what came after it.
        with client.stream("GET", "/v1/events", headers={**headers, "Last-Event-ID": str(m1["seq"])}) as r:
            ((resumed_id, resumed),) = _sse_events(r.iter_lines(), 1)
            assert resumed_id == m2["seq"] and resumed["payload"]["message_id"] == m2["id"]


class HeldWrite:
    """An append through the real write path (begin_write, seal, insert), left uncommitted."""

    def __init__(self, url, tenant, conversation_id, content):
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(url))
        self.tr = self.conn.transaction()
        self.loop.run_until_complete(self.tr.start())
        new = messages_app.NewMessage(role="user", content=content)
        appended = self.loop.run_until_complete(
            messages_app.append(Tx(self.conn), Caller(tenant=tenant, actor="held"), uuid.UUID(conversation_id), new)
        )
        self.seq = appended.message.seq

    def commit(self):
        self.loop.run_until_complete(self.tr.commit())
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def test_the_feed_holds_back_later_events_until_an_earlier_transaction_commits(server):
    tenant, key = server.new_key()
    with server.client(key) as api:
        a, b = create(api)["id"], create(api)["id"]
        _, start = drain(api)
        held = HeldWrite(server.database_url, tenant, a, "slow")  # draws its seq, does not commit
        fast = say(api, b, "fast")  # commits after it, with a greater seq
        assert fast["seq"] > held.seq
        # The later event is committed and visible, yet not final: the feed must not hand it out.
        assert events(api, start)["items"] == []
        assert events(api, start, wait=1)["items"] == []
        result = {}
        poller = threading.Thread(target=lambda: result.update(events(api, start, wait=30)))
        poller.start()
        time.sleep(0.3)
        held.commit()
        poller.join(timeout=15)
        assert not poller.is_alive()
        # Released together, in order: the earlier one is not skipped.
        assert [e["seq"] for e in result["items"]] == [held.seq, fast["seq"]]


@pytest.mark.slow
def test_a_follower_sees_every_event_exactly_once_while_writers_race(server):
    tenant, key = server.new_key()
    with server.client(key) as api:
        conversations = [create(api)["id"] for _ in range(4)]
        _, start = drain(api)
        seen, done = [], threading.Event()

        def follow():
            after = start
            with server.client(key) as client:
                while True:
                    finished = done.is_set()  # read before the poll: every write had committed
                    page = events(client, after, wait=1)
                    seen.extend(page["items"])
                    after = page["next_after"]
                    if finished and not page["items"]:
                        return

        def write(cid):
            with server.client(key) as client:
                for i in range(15):
                    say(client, cid, f"{cid[:4]}-{i}")

        def slow_writes(cid):
            for _ in range(3):
                held = HeldWrite(server.database_url, tenant, cid, "held back")
                time.sleep(0.4)  # others commit greater seqs meanwhile
                held.commit()

        follower = threading.Thread(target=follow)
        follower.start()
        writers = [threading.Thread(target=write, args=(c,)) for c in conversations[:3]]
        writers.append(threading.Thread(target=slow_writes, args=(conversations[3],)))
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        done.set()
        follower.join(timeout=60)
        assert not follower.is_alive()
    stored = [r["seq"] for r in fetch(
        server.database_url, "SELECT seq FROM events WHERE tenant = $1 AND seq > $2 ORDER BY seq", tenant, start
    )]
    assert len(stored) == 3 * 15 + 3
    assert [e["seq"] for e in seen] == stored  # every event, once, in order


def _listener_pids(url):
    return [r["pid"] for r in fetch(
        url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'convtree-listener' AND datname = current_database()",
    )]


def test_the_feed_recovers_when_its_listening_connection_is_killed(server, api):
    cid = create(api)["id"]
    _, after = drain(api)
    (old,) = _listener_pids(server.database_url)
    fetch(server.database_url, "SELECT pg_terminate_backend($1)", old)
    result = {}
    poller = threading.Thread(target=lambda: result.update(events(api, after, wait=30)))
    poller.start()
    m = say(api, cid, "heard anyway")
    poller.join(timeout=15)
    assert not poller.is_alive()
    assert [e["payload"]["message_id"] for e in result["items"]] == [m["id"]]
    deadline = time.monotonic() + 10
    while not (pids := _listener_pids(server.database_url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids) == 1 and pids[0] != old  # listening again, on a new connection
