"""A streamed turn's events carry their positions (`id:`), and a client that lost the stream
resumes it after a position (`Last-Event-ID`, or `after`) with GET …/turns/{reply_id}/events: the
same events, with the same positions, no gap and no repeat, while the reply is generated (from its
checkpoints, however little it has said yet) and once it is recorded."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx

from tests.fakeupstream import Fault, FakeUpstream
from tests.helpers import create, say
from tests.turnkit import positioned, wait_for

Event = tuple[str, int, Any]


def streamed(api: httpx.Client, cid: str, content: str) -> list[Event]:
    with api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": content, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        return list(positioned(r))


def resumed(api: httpx.Client, cid: str, reply_id: str, **how: Any) -> list[Event]:
    url = f"/v1/conversations/{cid}/turns/{reply_id}/events"
    headers = {"Last-Event-ID": str(how.pop("last_event_id"))} if "last_event_id" in how else {}
    with api.stream("GET", url, headers=headers, params=how) as r:
        assert r.status_code == 200, r.read()
        return list(positioned(r))


def text(events: list[Event]) -> str:
    return "".join(data["text"] for name, _, data in events if name == "delta")


def assert_numbered(events: list[Event], start: int = 0) -> None:
    """Each delta's position is the one before plus its text; the last event is one past the text."""
    at = start
    for name, position, data in events:
        if name == "turn":
            assert position == 0
        elif name == "delta":
            at += len(data["text"])
            assert position == at, events
        else:
            assert position == at + 1 and name in ("done", "error"), events


def assert_same_problem(resumed: dict[str, Any], original: dict[str, Any]) -> None:
    """The same problem, but for what belongs to the request that carried it (instance, request
    id) and what the provider said beyond the log's record (its status code, say): the resumed
    context is the original's, less those."""
    same = ("type", "title", "status", "detail", "message")
    assert {k: resumed.get(k) for k in same} == {k: original.get(k) for k in same}
    assert resumed["context"].items() <= original["context"].items()
    assert {"provider", "conversation_id", "user_message_id", "assistant_message_id", "stored"} <= set(resumed["context"])


def test_every_event_of_a_streamed_turn_carries_its_position(model_api, upstream):
    cid = create(model_api)["id"]
    events = streamed(model_api, cid, "number these")
    assert [e[0] for e in events][0] == "turn" and events[-1][0] == "done"
    assert_numbered(events)
    assert text(events) == events[-1][2]["content"] == "Hello from fake-large. You said: number these"
    assert events[-1][1] == len(events[-1][2]["content"]) + 1


def test_a_stream_resumed_right_after_its_turn_began_waits_for_the_reply(model_api, upstream):
    """No checkpoint yet (the model has said nothing): the reply is pending, so the resumed stream
    waits for it rather than answering that there is no such reply."""
    upstream.fail_next(Fault.hold(after=0))
    cid = create(model_api)["id"]
    got: dict[str, Any] = {}
    url = f"/v1/conversations/{cid}/turns"
    with model_api.stream("POST", url, json={"content": "wait for me", "stream": True}) as r:
        events = positioned(r)
        first = next(events)
        assert first[0] == "turn" and first[1] == 0
        reply_id = first[2]["assistant_message_id"]

        def follow() -> None:
            try:
                got["events"] = resumed(model_api, cid, reply_id, last_event_id=0)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                got["error"] = exc

        follower = threading.Thread(target=follow)
        follower.start()  # at once: before the model says anything
        wait_for(lambda: len(upstream.requests) == 1)
        upstream.release()
        original = [first, *events]
        follower.join(timeout=15)
    assert "error" not in got, got.get("error")
    rest = got["events"]
    assert_numbered(rest)
    # The same text at the same positions, and the same last event (the pieces may be batched
    # otherwise: the last ones come from the record, in one delta).
    assert text(rest) == text(original) == "Hello from fake-large. You said: wait for me"
    assert rest[-1] == original[-1] and rest[-1][0] == "done"
    assert {e[1] for e in rest} <= {e[1] for e in original}


def test_a_stream_resumed_while_the_reply_is_generated_goes_on_live_with_no_gap_and_no_repeat(model_api, upstream):
    upstream.fail_next(Fault.hold(after=3))
    cid = create(model_api)["id"]
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go on then", "stream": True}) as r:
        events = positioned(r)
        seen = [next(events) for _ in range(3)]  # turn and two deltas: the client loses the stream here
    assert [e[0] for e in seen] == ["turn", "delta", "delta"]
    reply_id, last = seen[0][2]["assistant_message_id"], seen[-1][1]
    got: dict[str, Any] = {}
    follower = threading.Thread(target=lambda: got.update(events=resumed(model_api, cid, reply_id, last_event_id=last)))
    follower.start()
    upstream.release()
    follower.join(timeout=15)
    whole = seen + got["events"]
    assert_numbered(whole)
    done = whole[-1]
    # The original stream's client left, which stops the model: the text it was shown is the reply.
    assert done[0] in ("done", "error")
    reply = done[2] if done[0] == "done" else done[2]["message"]
    assert text(whole) == reply["content"]


def test_a_recorded_reply_is_resumed_at_once_from_any_position(model_api, upstream):
    cid = create(model_api)["id"]
    original = streamed(model_api, cid, "again please")
    reply_id = original[0][2]["assistant_message_id"]
    whole = original[-1][2]["content"]
    # No position: the whole stream, its `turn` event first, with the same ids and the same end.
    everything = resumed(model_api, cid, reply_id)
    assert everything[0] == original[0] and everything[-1] == original[-1] and text(everything) == whole
    assert_numbered(everything)
    # After a position inside a piece: the rest of that piece, then the rest, then the same `done`.
    rest = resumed(model_api, cid, reply_id, after=7)
    assert text(rest) == whole[7:] and rest[-1] == original[-1]
    assert_numbered(rest, start=7)
    # Last-Event-ID wins over `after` (an EventSource reconnecting to the URL it was given).
    rest = resumed(model_api, cid, reply_id, after=3, last_event_id=original[-2][1])
    assert rest == [original[-1]]
    # After the last event: nothing left.
    r = model_api.get(f"/v1/conversations/{cid}/turns/{reply_id}/events", headers={"Last-Event-ID": str(len(whole) + 1)})
    assert r.status_code == 204 and r.content == b""


def test_a_failed_turn_resumes_to_the_same_error_event(model_api, upstream):
    upstream.fail_next(Fault.status_code(400, message="no such thing"))
    cid = create(model_api)["id"]
    original = streamed(model_api, cid, "fail me")
    assert [e[0] for e in original] == ["turn", "error"]
    reply_id = original[0][2]["assistant_message_id"]
    again = resumed(model_api, cid, reply_id, last_event_id=0)
    assert [(e[0], e[1]) for e in again] == [("error", 1)]
    assert_same_problem(again[0][2], original[-1][2])
    assert again[0][2]["context"]["stored"] is False


def test_an_interrupted_reply_resumes_to_the_same_error_event_with_the_text_stored(model_api, upstream):
    upstream.fail_next(Fault.drop(after=3))  # three pieces, then the connection is cut
    cid = create(model_api)["id"]
    original = streamed(model_api, cid, "cut me short")
    assert original[-1][0] == "error"
    reply_id = original[0][2]["assistant_message_id"]
    again = resumed(model_api, cid, reply_id, last_event_id=0)
    assert_numbered(again)
    assert text(again) == text(original) == original[-1][2]["message"]["content"]
    assert again[-1][1] == original[-1][1]
    assert_same_problem(again[-1][2], original[-1][2])


def test_resuming_what_is_no_reply_is_a_404_problem(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    user = say(model_api, cid, "just a message")
    for reply_id in (uuid.uuid4(), user["id"]):
        r = model_api.get(f"/v1/conversations/{cid}/turns/{reply_id}/events")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == "urn:convtree:problem:reply-not-found"
    reply_id = streamed(model_api, cid, "hello")[0][2]["assistant_message_id"]
    # Another conversation's reply, another tenant's conversation: not found either.
    other = create(model_api)["id"]
    assert model_api.get(f"/v1/conversations/{other}/turns/{reply_id}/events").status_code == 404
    with model_server.client(model_server.new_key()[1]) as stranger:
        r = stranger.get(f"/v1/conversations/{cid}/turns/{reply_id}/events")
        assert r.status_code == 404 and r.json()["type"] == "urn:convtree:problem:conversation-not-found"
    r = model_api.get(f"/v1/conversations/{cid}/turns/{reply_id}/events", headers={"Last-Event-ID": "soon"})
    assert r.status_code == 422 and r.json()["context"]["parameter"] == "Last-Event-ID"


def test_a_retried_turn_streamed_from_its_record_carries_positions_too(model_api, upstream: FakeUpstream):
    cid = create(model_api)["id"]
    url = f"/v1/conversations/{cid}/turns"
    body = {"content": "once", "stream": True}
    with model_api.stream("POST", url, json=body, headers={"Idempotency-Key": "k1"}) as r:
        first = list(positioned(r))
    with model_api.stream("POST", url, json=body, headers={"Idempotency-Key": "k1"}) as r:
        again = list(positioned(r))
    assert_numbered(again)
    assert [e[0] for e in again] == ["turn", "delta", "done"]
    assert text(again) == text(first) and again[-1][1] == first[-1][1]


def test_a_turn_asked_to_continue_is_generated_to_its_end_after_its_client_left_and_resumed_whole(model_api, upstream):
    upstream.fail_next(Fault.hold(after=3))
    cid = create(model_api)["id"]
    body = {"content": "finish this anyway", "stream": True, "on_disconnect": "continue"}
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
        events = positioned(r)
        seen = [next(events) for _ in range(3)]  # turn and two deltas: the client leaves here
    reply_id, last = seen[0][2]["assistant_message_id"], seen[-1][1]
    time.sleep(0.5)  # time for the server to see the client leave (which, asked to continue, it ignores)
    upstream.release()
    rest = resumed(model_api, cid, reply_id, last_event_id=last)
    whole = seen + rest
    assert_numbered(whole)
    done = whole[-1]
    assert done[0] == "done"
    # Not cut where the client left: the whole answer, recorded as the model finished it.
    assert text(whole) == done[2]["content"] == "Hello from fake-large. You said: finish this anyway"
    assert done[2]["generation"]["finish_reason"] == "stop" and done[2]["generation"]["interruption"] is None


def test_a_turn_that_stops_on_disconnect_by_default_records_what_was_said_as_interrupted(model_api, upstream):
    upstream.fail_next(Fault.hold(after=3))
    cid = create(model_api)["id"]
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "stop here", "stream": True}) as r:
        events = positioned(r)
        seen = [next(events) for _ in range(3)]
    reply_id, last = seen[0][2]["assistant_message_id"], seen[-1][1]
    # The model is held until the server has seen the client leave and recorded the reply.
    wait_for(lambda: model_api.get(f"/v1/conversations/{cid}/messages/{reply_id}").status_code == 200)
    upstream.release()
    rest = resumed(model_api, cid, reply_id, last_event_id=last)
    assert rest[-1][0] == "error"
    stored = rest[-1][2]["message"]
    assert stored["generation"]["interruption"]["kind"] == "client_disconnected"
    assert text(seen + rest) == stored["content"] != "Hello from fake-large. You said: stop here"


def test_on_disconnect_takes_stop_or_continue_only(model_api):
    cid = create(model_api)["id"]
    r = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "x", "on_disconnect": "linger"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "on_disconnect" in r.text
